package controllers

import (
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"slices"
	"strings"

	kubevirtv1 "kubevirt.io/api/core/v1"

	"github.com/kubevirt-imds/kubevirt-imds/api/payload"
	imdsv1alpha1 "github.com/kubevirt-imds/kubevirt-imds/api/v1alpha1"
	"github.com/kubevirt-imds/kubevirt-imds/controllers/netconfig"
)

// defaultServiceAccount is the ServiceAccount of a VMI without a
// serviceAccount volume, as for any Pod.
const defaultServiceAccount = "default"

// renderPayload builds the payload document of vmi as served by mds. It is
// pure: the same inputs give the same document and hash (RSA PKCS #1 v1.5
// signatures are deterministic).
func renderPayload(mds *imdsv1alpha1.MetadataService, src *resolvedSources, vmi *kubevirtv1.VirtualMachineInstance, ec2 ec2Inputs) *payload.Document {
	auto := netconfig.FromVMI(vmi)
	doc := &payload.Document{
		Instance: payload.Instance{
			ID:                 instanceID(vmi),
			UID:                string(vmi.UID),
			Name:               vmi.Name,
			Namespace:          vmi.Namespace,
			Hostname:           hostname(mds, vmi),
			ServiceAccountName: serviceAccountName(vmi),
			SSHAuthorizedKeys:  src.SSHKeys,
		},
		UserData:   src.UserData,
		VendorData: src.VendorData,
		Dialects:   dialects(mds),
		Serve:      serveOn(mds, auto),
		Source:     payload.Source{MetadataService: mds.Name},
	}
	doc.EC2 = renderEC2(mds, vmi, auto, doc.Dialects, ec2)
	if md := mds.Spec.Metadata; md != nil {
		doc.Instance.Tags = md.Tags
		doc.Instance.Labels = pick(vmi.Labels, md.ExposeLabels)
		doc.Instance.Annotations = pick(vmi.Annotations, md.ExposeAnnotations)
	}
	switch networkMode(mds) {
	case imdsv1alpha1.NetworkDataAuto:
		doc.Network = auto
	case imdsv1alpha1.NetworkDataInline:
		doc.Network = src.InlineNetwork
	}
	if id := mds.Spec.Identity; id != nil {
		for _, t := range id.ServiceAccountTokens {
			doc.Tokens = append(doc.Tokens, payload.Token{
				Audience:          t.Audience,
				ExpirationSeconds: t.ExpirationSeconds,
				Path:              payload.TokenPath(t.Audience),
			})
		}
	}
	return doc
}

// instanceID is the VMI's firmware UUID when it has one, else its UID.
// KubeVirt gives every VMI started from a VirtualMachine a firmware UUID that
// stays the same across restarts of that VM (and is what KubeVirt's own
// NoCloud disk uses as instance-id); the VMI UID changes on every start, which
// would make cloud-init treat each restart as a new instance (new SSH host
// keys, per-instance modules run again).
func instanceID(vmi *kubevirtv1.VirtualMachineInstance) string {
	if fw := vmi.Spec.Domain.Firmware; fw != nil && fw.UUID != "" {
		return string(fw.UUID)
	}
	return string(vmi.UID)
}

func hostname(mds *imdsv1alpha1.MetadataService, vmi *kubevirtv1.VirtualMachineInstance) string {
	if h := mds.Spec.Hostname; h != "" {
		return strings.NewReplacer("{name}", vmi.Name, "{namespace}", vmi.Namespace).Replace(h)
	}
	if vmi.Spec.Hostname != "" {
		return vmi.Spec.Hostname
	}
	return vmi.Name
}

// serviceAccountName is the VMI's identity: the ServiceAccount of its
// serviceAccount volume, which KubeVirt also makes the Pod's ServiceAccount.
func serviceAccountName(vmi *kubevirtv1.VirtualMachineInstance) string {
	for _, v := range vmi.Spec.Volumes {
		if v.ServiceAccount != nil && v.ServiceAccount.ServiceAccountName != "" {
			return v.ServiceAccount.ServiceAccountName
		}
	}
	return defaultServiceAccount
}

func dialects(mds *imdsv1alpha1.MetadataService) []payload.Dialect {
	if len(mds.Spec.Dialects) == 0 {
		return slices.Clone(payload.AllDialects)
	}
	var out []payload.Dialect
	for _, d := range payload.AllDialects {
		if slices.Contains(mds.Spec.Dialects, imdsv1alpha1.Dialect(d)) {
			out = append(out, d)
		}
	}
	return out
}

func networkMode(mds *imdsv1alpha1.MetadataService) imdsv1alpha1.NetworkDataMode {
	if nd := mds.Spec.NetworkData; nd != nil && nd.Mode != "" {
		return nd.Mode
	}
	return imdsv1alpha1.NetworkDataAuto
}

// serveOn picks the NIC whose guest the sidecar serves: the one the spec
// names, else the NIC on the pod network, else the first.
func serveOn(mds *imdsv1alpha1.MetadataService, auto *payload.Network) payload.Serve {
	want := ""
	if nd := mds.Spec.NetworkData; nd != nil {
		want = nd.ServeInterface
	}
	var chosen *payload.Interface
	for i := range auto.Interfaces {
		nic := &auto.Interfaces[i]
		if want != "" && nic.Name == want {
			chosen = nic
			break
		}
		if want == "" && nic.Primary && chosen == nil {
			chosen = nic
		}
	}
	if chosen == nil && len(auto.Interfaces) > 0 && want == "" {
		chosen = &auto.Interfaces[0]
	}
	if chosen == nil {
		return payload.Serve{Interface: want}
	}
	return payload.Serve{Interface: chosen.Name, Bridge: chosen.Bridge}
}

func pick(from map[string]string, keys []string) map[string]string {
	var out map[string]string
	for _, k := range keys {
		if v, ok := from[k]; ok {
			if out == nil {
				out = map[string]string{}
			}
			out[k] = v
		}
	}
	return out
}

// sourcesKey identifies everything a payload of mds depends on besides its
// VMI: the service (UID and spec generation) and its resolved sources.
func sourcesKey(mds *imdsv1alpha1.MetadataService, src *resolvedSources) string {
	h := sha256.New()
	// The encoding of plain byte slices, strings and the parsed network
	// cannot fail.
	_ = json.NewEncoder(h).Encode(src)
	return fmt.Sprintf("%s/%d/%x", mds.UID, mds.Generation, h.Sum(nil))
}

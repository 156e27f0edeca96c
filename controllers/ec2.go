package controllers

import (
	"context"
	"net/netip"
	"slices"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	kubevirtv1 "kubevirt.io/api/core/v1"
	"sigs.k8s.io/controller-runtime/pkg/log"

	"github.com/kubevirt-imds/kubevirt-imds/api/payload"
	imdsv1alpha1 "github.com/kubevirt-imds/kubevirt-imds/api/v1alpha1"
	"github.com/kubevirt-imds/kubevirt-imds/controllers/instanceidentity"
	"github.com/kubevirt-imds/kubevirt-imds/controllers/netconfig"
)

// masqueradeCIDR is KubeVirt's default masquerade network: the guest gets
// its .2 from the in-Pod DHCP server.
const masqueradeCIDR = "10.0.2.0/24"

// ec2Inputs are what a VMI's EC2 data depends on besides the VMI and the
// service: where it runs and the key signing its identity document.
type ec2Inputs struct {
	// Region and Zone are the topology labels of the VMI's Node; empty
	// before it is scheduled or when the Node has none.
	Region, Zone string
	// Key signs the identity document; nil leaves the document out.
	Key *instanceidentity.Key
	// Signatures caches signed documents; nil signs every time.
	Signatures *instanceidentity.Cache
}

// cacheKey names the inputs in the reconciler's record of current payloads.
func (in ec2Inputs) cacheKey() string {
	fp := ""
	if in.Key != nil {
		fp = instanceidentity.Fingerprint(in.Key.Cert)
	}
	return in.Region + "/" + in.Zone + "/" + fp
}

// nodeTopology reads the region and zone labels of the Node vmi runs on.
// A Node that is gone or unreadable gives none (logged): placement then
// says "kubevirt", and the VMI's next event re-renders. A payload never
// waits on it.
func (r *MetadataServiceReconciler) nodeTopology(ctx context.Context, vmi *kubevirtv1.VirtualMachineInstance) (region, zone string) {
	if vmi.Status.NodeName == "" {
		return "", ""
	}
	// Metadata only, as the Node watch caches it.
	node := &metav1.PartialObjectMetadata{}
	node.SetGroupVersionKind(corev1.SchemeGroupVersion.WithKind("Node"))
	if err := r.Get(ctx, types.NamespacedName{Name: vmi.Status.NodeName}, node, readOnlyGet); err != nil {
		if !apierrors.IsNotFound(err) {
			log.FromContext(ctx).Error(err, "reading the topology labels of the VMI's Node", "vmi", vmi.Name, "node", vmi.Status.NodeName)
		}
		return "", ""
	}
	return node.Labels[corev1.LabelTopologyRegion], node.Labels[corev1.LabelTopologyZone]
}

// instanceType is the name of the VM's instancetype, which KubeVirt records
// on the VMIs it starts from a VirtualMachine.
func instanceType(vmi *kubevirtv1.VirtualMachineInstance) string {
	if n := vmi.Annotations[kubevirtv1.InstancetypeAnnotation]; n != "" {
		return n
	}
	return vmi.Annotations[kubevirtv1.ClusterInstancetypeAnnotation]
}

// httpTokens is the service's IMDSv2 mode, defaulted as the CRD defaults it.
func httpTokens(mds *imdsv1alpha1.MetadataService) string {
	if e := mds.Spec.EC2; e != nil && e.HTTPTokens == imdsv1alpha1.HTTPTokensRequired {
		return payload.HTTPTokensRequired
	}
	return payload.HTTPTokensOptional
}

func hopLimitOf(mds *imdsv1alpha1.MetadataService) int {
	if e := mds.Spec.EC2; e != nil && e.HTTPPutResponseHopLimit > 0 {
		return int(e.HTTPPutResponseHopLimit)
	}
	return 1
}

// renderEC2 builds the document's EC2 member. auto is the VMI's network as
// derived from the VMI, whatever the networkData mode: the EC2 tree
// describes the NICs the VM has.
func renderEC2(mds *imdsv1alpha1.MetadataService, vmi *kubevirtv1.VirtualMachineInstance, auto *payload.Network,
	dialects []payload.Dialect, in ec2Inputs) *payload.EC2 {
	if !slices.Contains(dialects, payload.DialectEC2) && !slices.Contains(dialects, payload.DialectOpenStack) {
		return nil
	}
	out := &payload.EC2{
		HTTPTokens:       httpTokens(mds),
		HopLimit:         hopLimitOf(mds),
		Region:           in.Region,
		AvailabilityZone: in.Zone,
		InstanceType:     instanceType(vmi),
	}
	privateIP := ""
	nics := slices.Clone(auto.Interfaces)
	slices.SortStableFunc(nics, func(a, b payload.Interface) int { return payload.PrimaryFirst(a.Primary, b.Primary) })
	for i, nic := range nics {
		if nic.MACAddress == "" {
			continue
		}
		e := payload.EC2Interface{MACAddress: nic.MACAddress, DeviceNumber: i}
		if a := guestIPv4(vmi, nic); a != "" {
			e.IPv4 = []string{a}
		}
		if i == 0 {
			privateIP = podIPv4(vmi, nic.Name)
			if privateIP == "" && len(e.IPv4) > 0 {
				privateIP, _, _ = strings.Cut(e.IPv4[0], "/")
			}
		}
		out.Interfaces = append(out.Interfaces, e)
	}
	region := in.Region
	if region == "" {
		region = "kubevirt"
	}
	zone := in.Zone
	if zone == "" {
		zone = "kubevirt"
	}
	doc := &instanceidentity.Document{
		Architecture:     architecture(vmi),
		AvailabilityZone: zone,
		InstanceID:       instanceID(vmi),
		InstanceType:     out.InstanceType,
		PrivateIP:        privateIP,
		Region:           region,
		Version:          instanceidentity.Version,
		Namespace:        vmi.Namespace,
		Name:             vmi.Name,
		UID:              string(vmi.UID),
	}
	if !vmi.CreationTimestamp.IsZero() {
		doc.PendingTime = vmi.CreationTimestamp.UTC().Format(time.RFC3339)
	}
	if in.Key != nil && slices.Contains(dialects, payload.DialectEC2) {
		// Signing a marshalled struct of strings cannot fail but for the
		// key; the document is then served unsigned.
		sign := in.Key.Sign
		if in.Signatures != nil {
			sign = func(d *instanceidentity.Document) (*payload.IdentityDocument, error) {
				return in.Signatures.Sign(in.Key, d)
			}
		}
		if id, err := sign(doc); err == nil {
			out.Identity = id
		}
	}
	if out.Identity == nil {
		// Wherever the EC2 tree is served, signed or not, a guest that
		// cloud-init takes for an AWS one must find its document.
		if id, err := instanceidentity.Unsigned(doc); err == nil {
			out.Identity = id
		}
	}
	return out
}

// guestIPv4 is the address the guest itself has on nic, in CIDR notation:
// 10.0.2.2 of the masquerade network, the Pod's IP for bridge binding on the
// pod network (the in-Pod DHCP hands it on; its prefix is not known, so
// /32), else none.
func guestIPv4(vmi *kubevirtv1.VirtualMachineInstance, nic payload.Interface) string {
	switch {
	case nic.Primary && nic.Binding == netconfig.BindingMasquerade:
		cidr := masqueradeCIDR
		for _, n := range vmi.Spec.Networks {
			if n.Name == nic.Network && n.Pod != nil && n.Pod.VMNetworkCIDR != "" {
				cidr = n.Pod.VMNetworkCIDR
			}
		}
		p, err := netip.ParsePrefix(cidr)
		if err != nil || !p.Addr().Is4() {
			return ""
		}
		a := p.Masked().Addr().Next().Next()
		return netip.PrefixFrom(a, p.Bits()).String()
	case nic.Primary && nic.Binding == netconfig.BindingBridge:
		if ip := podIPv4(vmi, nic.Name); ip != "" {
			return ip + "/32"
		}
	}
	return ""
}

// podIPv4 is the IPv4 address KubeVirt reports for the interface: the Pod's
// address, which is what other workloads see the VM's traffic come from.
func podIPv4(vmi *kubevirtv1.VirtualMachineInstance, name string) string {
	for _, st := range vmi.Status.Interfaces {
		if st.Name != name {
			continue
		}
		for _, s := range append([]string{st.IP}, st.IPs...) {
			if a, err := netip.ParseAddr(s); err == nil && a.Is4() {
				return a.String()
			}
		}
	}
	return ""
}

// architecture names the VMI's architecture as EC2 does.
func architecture(vmi *kubevirtv1.VirtualMachineInstance) string {
	switch vmi.Spec.Architecture {
	case "", "amd64":
		return "x86_64"
	default:
		return vmi.Spec.Architecture
	}
}

// identityKeyring is the signing keyring: ensured (created, rotated,
// published) by the reconcile, read as it is by the Pod webhook. nil without
// an Identity.
func (r *MetadataServiceReconciler) identityKeyring(ctx context.Context, ensure bool) (*keyring, error) {
	if r.Identity == nil {
		return nil, nil
	}
	if ensure {
		return r.Identity.Ensure(ctx)
	}
	return r.Identity.Current(ctx)
}

// ec2Inputs gathers vmi's EC2 inputs for the Pod webhook's render, which
// reads the signing key as it is and renders without it when it cannot.
func (r *MetadataServiceReconciler) ec2Inputs(ctx context.Context, vmi *kubevirtv1.VirtualMachineInstance) ec2Inputs {
	ring, err := r.identityKeyring(ctx, false)
	if err != nil {
		log.FromContext(ctx).Error(err, "reading the identity signing key")
	}
	return r.ec2InputsWith(ctx, vmi, ring)
}

func (r *MetadataServiceReconciler) ec2InputsWith(ctx context.Context, vmi *kubevirtv1.VirtualMachineInstance, ring *keyring) ec2Inputs {
	in := ec2Inputs{Signatures: &r.signatures}
	if ring != nil {
		in.Key = ring.current
	}
	in.Region, in.Zone = r.nodeTopology(ctx, vmi)
	return in
}

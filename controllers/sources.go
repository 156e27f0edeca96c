package controllers

import (
	"context"
	"fmt"
	"regexp"
	"strings"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/types"

	"github.com/kubevirt-imds/kubevirt-imds/api/payload"
	imdsv1alpha1 "github.com/kubevirt-imds/kubevirt-imds/api/v1alpha1"
	"github.com/kubevirt-imds/kubevirt-imds/controllers/netconfig"
	"github.com/kubevirt-imds/kubevirt-imds/controllers/userdata"
)

// resolvedSources is a MetadataService's spec with every reference read and
// checked: what all of its payloads share.
type resolvedSources struct {
	UserData, VendorData []byte
	SSHKeys              []string
	// InlineNetwork is the parsed networkData.config (mode Inline).
	InlineNetwork *payload.Network
}

// sshKeyPattern matches an OpenSSH public key line: type, base64 blob, comment.
var sshKeyPattern = regexp.MustCompile(`^(ssh-|ecdsa-|sk-)[-a-z0-9@.]+ [A-Za-z0-9+/=]+( .*)?$`)

// resolveSources reads every Secret and ConfigMap the spec references. A
// missing, oversized or invalid source is a *problem naming the field; other
// errors (API failures) are returned as errors to retry.
func (r *MetadataServiceReconciler) resolveSources(ctx context.Context, mds *imdsv1alpha1.MetadataService) (*resolvedSources, error) {
	var out resolvedSources
	var err error
	if out.UserData, err = r.resolveData(ctx, mds.Namespace, "spec.userData", mds.Spec.UserData); err != nil {
		return nil, err
	}
	if out.VendorData, err = r.resolveData(ctx, mds.Namespace, "spec.vendorData", mds.Spec.VendorData); err != nil {
		return nil, err
	}
	if out.SSHKeys, err = r.resolveSSHKeys(ctx, mds.Namespace, mds.Spec.SSHAuthorizedKeys); err != nil {
		return nil, err
	}
	if nd := mds.Spec.NetworkData; nd != nil && nd.Mode == imdsv1alpha1.NetworkDataInline && nd.Config != nil {
		if out.InlineNetwork, err = netconfig.FromNetplanV2(*nd.Config); err != nil {
			return nil, &problem{Reason: imdsv1alpha1.ReasonInvalidNetworkData, Message: "spec.networkData.config: " + err.Error()}
		}
	}
	return &out, nil
}

func (r *MetadataServiceReconciler) resolveData(ctx context.Context, namespace, field string, src *imdsv1alpha1.DataSource) ([]byte, error) {
	if src == nil {
		return nil, nil
	}
	var data []byte
	switch {
	case src.Inline != nil:
		data = []byte(*src.Inline)
	case src.SecretRef != nil:
		d, err := r.readSecretKey(ctx, namespace, field+".secretRef", *src.SecretRef)
		if err != nil {
			return nil, err
		}
		data = d
	case src.ConfigMapRef != nil:
		d, err := r.readConfigMapKey(ctx, namespace, field+".configMapRef", *src.ConfigMapRef)
		if err != nil {
			return nil, err
		}
		data = d
	}
	if len(data) > imdsv1alpha1.MaxDataBytes {
		return nil, &problem{Reason: imdsv1alpha1.ReasonSourceTooLarge,
			Message: fmt.Sprintf("%s: %d bytes, more than the %d allowed", field, len(data), imdsv1alpha1.MaxDataBytes)}
	}
	if _, err := userdata.Classify(data); err != nil {
		return nil, &problem{Reason: imdsv1alpha1.ReasonInvalidUserData, Message: fmt.Sprintf("%s: %v", field, err)}
	}
	return data, nil
}

func (r *MetadataServiceReconciler) resolveSSHKeys(ctx context.Context, namespace string, src *imdsv1alpha1.SSHKeysSource) ([]string, error) {
	if src == nil {
		return nil, nil
	}
	field := "spec.sshAuthorizedKeys.inline"
	lines := src.Inline
	if src.SecretRef != nil {
		field = "spec.sshAuthorizedKeys.secretRef"
		data, err := r.readSecretKey(ctx, namespace, field, *src.SecretRef)
		if err != nil {
			return nil, err
		}
		lines = strings.Split(string(data), "\n")
	}
	var keys []string
	for i, l := range lines {
		l = strings.TrimSpace(l)
		if l == "" || strings.HasPrefix(l, "#") {
			continue
		}
		if !sshKeyPattern.MatchString(l) {
			return nil, &problem{Reason: imdsv1alpha1.ReasonInvalidSSHKeys,
				Message: fmt.Sprintf("%s: entry %d is not an OpenSSH public key", field, i)}
		}
		keys = append(keys, l)
	}
	return keys, nil
}

func (r *MetadataServiceReconciler) readSecretKey(ctx context.Context, namespace, field string, ref imdsv1alpha1.KeyReference) ([]byte, error) {
	s, err := r.sourceReader().Secret(ctx, types.NamespacedName{Namespace: namespace, Name: ref.Name})
	if err != nil {
		return nil, notFoundProblem(err, field, "Secret", ref.Name)
	}
	data, ok := s.Data[ref.Key]
	if !ok {
		return nil, &problem{Reason: imdsv1alpha1.ReasonSourceNotFound,
			Message: fmt.Sprintf("%s: Secret %q has no key %q", field, ref.Name, ref.Key)}
	}
	return data, nil
}

func (r *MetadataServiceReconciler) readConfigMapKey(ctx context.Context, namespace, field string, ref imdsv1alpha1.KeyReference) ([]byte, error) {
	cm, err := r.sourceReader().ConfigMap(ctx, types.NamespacedName{Namespace: namespace, Name: ref.Name})
	if err != nil {
		return nil, notFoundProblem(err, field, "ConfigMap", ref.Name)
	}
	if d, ok := cm.Data[ref.Key]; ok {
		return []byte(d), nil
	}
	if d, ok := cm.BinaryData[ref.Key]; ok {
		return d, nil
	}
	return nil, &problem{Reason: imdsv1alpha1.ReasonSourceNotFound,
		Message: fmt.Sprintf("%s: ConfigMap %q has no key %q", field, ref.Name, ref.Key)}
}

// sourceReader is r.Sources, or reads through r.Client.
func (r *MetadataServiceReconciler) sourceReader() *SourceReader {
	if r.Sources != nil {
		return r.Sources
	}
	return &SourceReader{Live: r.Client}
}

func notFoundProblem(err error, field, kind, name string) error {
	if apierrors.IsNotFound(err) {
		return &problem{Reason: imdsv1alpha1.ReasonSourceNotFound, Message: fmt.Sprintf("%s: %s %q not found", field, kind, name)}
	}
	return fmt.Errorf("reading %s %s for %s: %w", kind, name, field, err)
}

// sourceRefs lists the objects a MetadataService reads, as index keys
// "Secret/<name>" and "ConfigMap/<name>", so a change to one re-renders only
// the services that use it.
func sourceRefs(mds *imdsv1alpha1.MetadataService) []string {
	var refs []string
	for _, ds := range []*imdsv1alpha1.DataSource{mds.Spec.UserData, mds.Spec.VendorData} {
		if ds == nil {
			continue
		}
		if ds.SecretRef != nil {
			refs = append(refs, sourceRefKey("Secret", ds.SecretRef.Name))
		}
		if ds.ConfigMapRef != nil {
			refs = append(refs, sourceRefKey("ConfigMap", ds.ConfigMapRef.Name))
		}
	}
	if k := mds.Spec.SSHAuthorizedKeys; k != nil && k.SecretRef != nil {
		refs = append(refs, sourceRefKey("Secret", k.SecretRef.Name))
	}
	return refs
}

func sourceRefKey(kind, name string) string { return kind + "/" + name }

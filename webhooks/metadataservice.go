package webhooks

import (
	"context"
	"encoding/base64"
	"encoding/binary"
	"fmt"
	"slices"
	"strings"
	"unicode"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1validation "k8s.io/apimachinery/pkg/apis/meta/v1/validation"
	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/apimachinery/pkg/util/validation/field"
	"sigs.k8s.io/controller-runtime/pkg/webhook/admission"

	imdsv1alpha1 "github.com/kubevirt-imds/kubevirt-imds/api/v1alpha1"
	"github.com/kubevirt-imds/kubevirt-imds/controllers"
	"github.com/kubevirt-imds/kubevirt-imds/controllers/netconfig"
	"github.com/kubevirt-imds/kubevirt-imds/controllers/userdata"
)

// MetadataServiceValidator rejects what the CRD schema cannot express: data
// no guest could use, selectors the API machinery would not parse, keys that
// are not label keys, SSH keys whose blob does not match their type, and
// guest discovery modes pointing at a dialect that is not served. The
// controller checks what it resolves from Secrets and ConfigMaps itself.
type MetadataServiceValidator struct{}

// ValidateCreate validates a new MetadataService.
func (MetadataServiceValidator) ValidateCreate(_ context.Context, mds *imdsv1alpha1.MetadataService) (admission.Warnings, error) {
	return validateMetadataService(mds)
}

// ValidateUpdate validates a changed MetadataService.
func (MetadataServiceValidator) ValidateUpdate(_ context.Context, _, mds *imdsv1alpha1.MetadataService) (admission.Warnings, error) {
	return validateMetadataService(mds)
}

// ValidateDelete allows every deletion.
func (MetadataServiceValidator) ValidateDelete(context.Context, *imdsv1alpha1.MetadataService) (admission.Warnings, error) {
	return nil, nil
}

func validateMetadataService(mds *imdsv1alpha1.MetadataService) (admission.Warnings, error) {
	spec, p := &mds.Spec, field.NewPath("spec")
	var errs field.ErrorList
	var warnings admission.Warnings

	errs = append(errs, metav1validation.ValidateLabelSelector(&spec.Selector,
		metav1validation.LabelSelectorValidationOptions{}, p.Child("selector"))...)
	errs = append(errs, validateData(spec.UserData, p.Child("userData"))...)
	errs = append(errs, validateData(spec.VendorData, p.Child("vendorData"))...)
	if nd := spec.NetworkData; nd != nil && nd.Config != nil {
		if _, err := netconfig.FromNetplanV2(*nd.Config); err != nil {
			errs = append(errs, field.Invalid(p.Child("networkData", "config"), "(document)", err.Error()))
		}
	}
	if h := spec.Hostname; h != "" && !strings.Contains(h, "{name}") {
		warnings = append(warnings, fmt.Sprintf("spec.hostname %q has no {name}: every instance served gets the same host name", h))
	}
	if md := spec.Metadata; md != nil {
		errs = append(errs, validateKeys(md.ExposeLabels, p.Child("metadata", "exposeLabels"))...)
		errs = append(errs, validateKeys(md.ExposeAnnotations, p.Child("metadata", "exposeAnnotations"))...)
		for k := range md.Tags {
			// Tags become path segments (EC2 tags/instance/<key>, /v1).
			if k == "" || k == "." || k == ".." || strings.ContainsAny(k, "/") || strings.IndexFunc(k, unicode.IsControl) >= 0 {
				errs = append(errs, field.Invalid(p.Child("metadata", "tags").Key(k), k,
					"a tag key must be non-empty, not . or .., and contain no / or control characters"))
			}
		}
	}
	if keys := spec.SSHAuthorizedKeys; keys != nil {
		for i, line := range keys.Inline {
			if err := checkSSHKey(line); err != nil {
				errs = append(errs, field.Invalid(p.Child("sshAuthorizedKeys", "inline").Index(i), line, err.Error()))
			}
		}
	}
	if id := spec.Identity; id != nil {
		for i, t := range id.ServiceAccountTokens {
			if strings.IndexFunc(t.Audience, func(r rune) bool { return unicode.IsSpace(r) || unicode.IsControl(r) }) >= 0 {
				errs = append(errs, field.Invalid(p.Child("identity", "serviceAccountTokens").Index(i).Child("audience"),
					t.Audience, "an audience must not contain white space or control characters"))
			}
		}
	}
	errs = append(errs, validateDiscovery(mds, p)...)

	if len(errs) > 0 {
		return warnings, apierrors.NewInvalid(imdsv1alpha1.GroupVersion.WithKind("MetadataService").GroupKind(), mds.Name, errs)
	}
	return warnings, nil
}

// validateData checks inline user-data or vendor-data as the controller does.
func validateData(src *imdsv1alpha1.DataSource, p *field.Path) field.ErrorList {
	if src == nil || src.Inline == nil {
		return nil
	}
	p = p.Child("inline")
	data := []byte(*src.Inline)
	if len(data) > imdsv1alpha1.MaxDataBytes {
		return field.ErrorList{field.TooLong(p, "", imdsv1alpha1.MaxDataBytes)}
	}
	if _, err := userdata.Classify(data); err != nil {
		// The content may be confidential: name its size, not its text.
		return field.ErrorList{field.Invalid(p, fmt.Sprintf("(%d bytes)", len(data)), err.Error())}
	}
	return nil
}

// validateKeys checks label or annotation keys (prefix/name).
func validateKeys(keys []string, p *field.Path) field.ErrorList {
	var errs field.ErrorList
	for i, k := range keys {
		if msgs := validation.IsQualifiedName(k); len(msgs) > 0 {
			errs = append(errs, field.Invalid(p.Index(i), k, strings.Join(msgs, "; ")))
		}
	}
	return errs
}

// checkSSHKey checks that an OpenSSH public key line's blob is base64 whose
// embedded key type is the declared one, as sshd does when reading
// authorized_keys; the CRD pattern only checks the line's shape.
func checkSSHKey(line string) error {
	fields := strings.Fields(line)
	if len(fields) < 2 {
		return fmt.Errorf("not \"<type> <base64 key> [comment]\"")
	}
	blob, err := base64.StdEncoding.DecodeString(fields[1])
	if err != nil {
		return fmt.Errorf("the key is not valid base64: %w", err)
	}
	if len(blob) < 4 {
		return fmt.Errorf("the key is truncated")
	}
	n := binary.BigEndian.Uint32(blob)
	if uint64(n) > uint64(len(blob)-4) {
		return fmt.Errorf("the key is truncated")
	}
	if inner := string(blob[4 : 4+n]); inner != fields[0] {
		return fmt.Errorf("the key says it is %q, not %q", inner, fields[0])
	}
	return nil
}

// validateDiscovery rejects a guest discovery mode whose dialect is not
// served: the guest would be sent to an API that answers 404.
func validateDiscovery(mds *imdsv1alpha1.MetadataService, p *field.Path) field.ErrorList {
	if len(mds.Spec.Dialects) == 0 {
		return nil // defaulted to all
	}
	need := map[imdsv1alpha1.GuestDiscovery]imdsv1alpha1.Dialect{
		imdsv1alpha1.GuestDiscoveryNoCloud:   "nocloud",
		imdsv1alpha1.GuestDiscoveryOpenStack: "openstack",
		imdsv1alpha1.GuestDiscoveryEC2:       "ec2",
	}
	var errs field.ErrorList
	mode := controllers.GuestDiscoveryOf(mds)
	if d, ok := need[mode]; ok && !slices.Contains(mds.Spec.Dialects, d) {
		errs = append(errs, field.Invalid(p.Child("guestDiscovery"), mode,
			fmt.Sprintf("guest discovery %s needs the %s dialect in spec.dialects", mode, d)))
	}
	// Tokens are required only where the ec2 dialect is served: without
	// it the setting would silently do nothing.
	if e := mds.Spec.EC2; e != nil && e.HTTPTokens == imdsv1alpha1.HTTPTokensRequired && !slices.Contains(mds.Spec.Dialects, "ec2") {
		errs = append(errs, field.Invalid(p.Child("ec2", "httpTokens"), e.HTTPTokens,
			"httpTokens required needs the ec2 dialect in spec.dialects"))
	}
	return errs
}

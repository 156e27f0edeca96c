package webhooks

import (
	"context"

	"gomodules.xyz/jsonpatch/v2"
	admissionv1 "k8s.io/api/admission/v1"
	corev1 "k8s.io/api/core/v1"
	utiljson "k8s.io/apimachinery/pkg/util/json"
	kubevirtv1 "kubevirt.io/api/core/v1"
	logf "sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/webhook/admission"

	"github.com/kubevirt-imds/kubevirt-imds/controllers"
)

// The Pod and VMI webhooks answer with a JSON patch of exactly what Default
// added, built from what it added, rather than controller-runtime's
// defaulter, which copies the object, marshals it whole and diffs the two
// documents (jsonpatch.CreatePatch). In a boot storm that diff and the
// copies were most of the manager's CPU per admission, and every
// millisecond of it is taken from the API server on the same machine. What
// Default may change is small and fixed: InjectSidecar sets
// spec.serviceAccountName and appends to spec.volumes and
// spec.initContainers; DiscoveryDefaulter sets one SMBIOS field.
//
// Neither webhook ever denies: an object it cannot decode is admitted as it
// is, and logged.

// Handle admits a virt-launcher Pod (admission.Handler): Default, answered
// with a patch of what it added.
func (p *PodInjector) Handle(ctx context.Context, req admission.Request) admission.Response {
	var pod corev1.Pod
	if ok, resp := decodeAdmitted(ctx, req, &pod); !ok {
		return resp
	}
	before := pod.Spec
	had := controllers.HasSidecar(&pod)
	// Default never fails (it logs and leaves the Pod alone instead).
	var outcome string
	_ = p.Default(withOutcome(admission.NewContextWithRequest(ctx, req), &outcome), &pod)
	switch {
	case had:
		sidecarInjections.WithLabelValues(OutcomeAlreadyInjected).Inc()
	case outcome != "":
		// Pods that are not virt-launcher Pods note nothing.
		sidecarInjections.WithLabelValues(outcome).Inc()
	}
	var ops []jsonpatch.JsonPatchOperation
	if pod.Spec.ServiceAccountName != before.ServiceAccountName {
		ops = append(ops, jsonpatch.NewOperation("add", "/spec/serviceAccountName", pod.Spec.ServiceAccountName))
	}
	ops = appendedOps(ops, "/spec/volumes", len(before.Volumes), pod.Spec.Volumes)
	ops = appendedOps(ops, "/spec/initContainers", len(before.InitContainers), pod.Spec.InitContainers)
	return patchResponse(ops)
}

// Handle admits a VMI (admission.Handler): Default, answered with a patch of
// the SMBIOS value it set.
func (d *DiscoveryDefaulter) Handle(ctx context.Context, req admission.Request) admission.Response {
	var vmi kubevirtv1.VirtualMachineInstance
	if ok, resp := decodeAdmitted(ctx, req, &vmi); !ok {
		return resp
	}
	firmware, chassis := vmi.Spec.Domain.Firmware, vmi.Spec.Domain.Chassis
	serial, uuid, asset := "", "", ""
	if firmware != nil {
		serial, uuid = firmware.Serial, string(firmware.UUID)
	}
	if chassis != nil {
		asset = chassis.Asset
	}
	// Default never fails (it logs and leaves the VMI alone instead).
	_ = d.Default(admission.NewContextWithRequest(ctx, req), &vmi)
	var ops []jsonpatch.JsonPatchOperation
	if fw := vmi.Spec.Domain.Firmware; fw != nil && (fw.Serial != serial || string(fw.UUID) != uuid) {
		// The serial (NoCloud, EC2) and, with EC2, the UUID.
		if firmware == nil {
			ops = append(ops, jsonpatch.NewOperation("add", "/spec/domain/firmware", &kubevirtv1.Firmware{Serial: fw.Serial, UUID: fw.UUID}))
		} else {
			if fw.Serial != serial {
				ops = setFieldOps(ops, "/spec/domain/firmware", false, "serial", fw.Serial, nil)
			}
			if string(fw.UUID) != uuid {
				ops = setFieldOps(ops, "/spec/domain/firmware", false, "uuid", string(fw.UUID), nil)
			}
		}
	}
	if ch := vmi.Spec.Domain.Chassis; ch != nil && ch.Asset != asset {
		ops = setFieldOps(ops, "/spec/domain/chassis", chassis == nil, "asset", ch.Asset, &kubevirtv1.Chassis{Asset: ch.Asset})
	}
	return patchResponse(ops)
}

// decodeAdmitted decodes the object of a CREATE into obj. Anything else —
// another operation, an object that does not decode — is admitted
// unchanged (resp), as Default would leave it.
func decodeAdmitted(ctx context.Context, req admission.Request, obj any) (ok bool, resp admission.Response) {
	if req.Operation != admissionv1.Create {
		return false, admission.Allowed("")
	}
	if err := utiljson.Unmarshal(req.Object.Raw, obj); err != nil {
		logf.FromContext(ctx).Error(err, "admitting an object that does not decode unchanged", "kind", req.Kind.Kind)
		return false, admission.Allowed("")
	}
	return true, admission.Response{}
}

// appendedOps adds the operations that append the elements of items past
// the first had to the array at path; an absent or empty array is added
// whole (a JSON patch cannot append to an array that is not there).
func appendedOps[T any](ops []jsonpatch.JsonPatchOperation, path string, had int, items []T) []jsonpatch.JsonPatchOperation {
	switch {
	case len(items) <= had:
		return ops
	case had == 0:
		return append(ops, jsonpatch.NewOperation("add", path, items))
	}
	for _, item := range items[had:] {
		ops = append(ops, jsonpatch.NewOperation("add", path+"/-", item))
	}
	return ops
}

// setFieldOps sets field of the object at path to value, adding the object
// (whole) when it was absent.
func setFieldOps(ops []jsonpatch.JsonPatchOperation, path string, absent bool, field, value string, whole any) []jsonpatch.JsonPatchOperation {
	if absent {
		return append(ops, jsonpatch.NewOperation("add", path, whole))
	}
	return append(ops, jsonpatch.NewOperation("add", path+"/"+field, value))
}

// patchResponse admits with ops, or unchanged when there are none.
func patchResponse(ops []jsonpatch.JsonPatchOperation) admission.Response {
	if len(ops) == 0 {
		return admission.Allowed("")
	}
	pt := admissionv1.PatchTypeJSONPatch
	return admission.Response{Patches: ops, AdmissionResponse: admissionv1.AdmissionResponse{Allowed: true, PatchType: &pt}}
}

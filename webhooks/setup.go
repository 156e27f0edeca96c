// Package webhooks holds kubevirt-imds' admission webhooks: the Pod webhook
// that injects the metadata sidecar into virt-launcher Pods, the VMI webhook
// that sets the SMBIOS data by which guests find the service, and the
// MetadataService validating webhook. docs/webhooks.md explains the choices.
package webhooks

import (
	"context"
	"time"

	corev1 "k8s.io/api/core/v1"
	kubevirtv1 "kubevirt.io/api/core/v1"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/webhook/admission"

	imdsv1alpha1 "github.com/kubevirt-imds/kubevirt-imds/api/v1alpha1"
)

// Webhook paths, as in the markers below.
const (
	PodPath             = "/mutate-v1-pod"
	VMIPath             = "/mutate-kubevirt-io-v1-virtualmachineinstance"
	MetadataServicePath = "/validate-imds-kubevirt-io-v1alpha1-metadataservice"
)

// The Pod and VMI webhooks fail open (failurePolicy Ignore) and never deny:
// a VM must start even when the operator is down; the controller reports what
// was missed. Their objectSelector and namespaceSelector are added by
// config/webhook/selectors_patch.yaml (controller-gen has no marker for them).
// The MetadataService webhook also fails open: the controller applies the
// same checks when it reconciles, so the webhook gives early feedback but
// guards nothing on its own.
//
// +kubebuilder:webhook:path=/mutate-v1-pod,mutating=true,failurePolicy=ignore,sideEffects=None,groups="",resources=pods,verbs=create,versions=v1,name=pods.imds.kubevirt.io,admissionReviewVersions=v1,reinvocationPolicy=IfNeeded,timeoutSeconds=5
// +kubebuilder:webhook:path=/mutate-kubevirt-io-v1-virtualmachineinstance,mutating=true,failurePolicy=ignore,sideEffects=None,groups=kubevirt.io,resources=virtualmachineinstances,verbs=create,versions=v1,name=virtualmachineinstances.imds.kubevirt.io,admissionReviewVersions=v1,reinvocationPolicy=IfNeeded,timeoutSeconds=5
// +kubebuilder:webhook:path=/validate-imds-kubevirt-io-v1alpha1-metadataservice,mutating=false,failurePolicy=ignore,sideEffects=None,groups=imds.kubevirt.io,resources=metadataservices,verbs=create;update,versions=v1alpha1,name=metadataservices.imds.kubevirt.io,admissionReviewVersions=v1,timeoutSeconds=5

// Options configure the webhooks.
type Options struct {
	// Sidecar configures the injected sidecar.
	Sidecar SidecarOptions
	// PayloadWait bounds the Pod webhook's wait for the payload Secret;
	// zero takes DefaultPayloadWait.
	PayloadWait time.Duration
}

// SetupWithManager registers the webhooks with mgr's webhook server. Every
// replica serves them, leader or not.
func SetupWithManager(mgr ctrl.Manager, o Options) error {
	// Admission reads live, not from the manager's cache: the MetadataService,
	// the VMI and the payload Secret are created moments before the object
	// admitted (kubectl apply of a service with its VMs; virt-controller
	// creating the Pod on the VMI's event), and a cache lagging by
	// milliseconds would leave a VM without its sidecar or discovery data.
	live := mgr.GetAPIReader()
	if o.PayloadWait == 0 {
		o.PayloadWait = DefaultPayloadWait
	}
	if err := ctrl.NewWebhookManagedBy(mgr, &corev1.Pod{}).
		WithDefaulter(&PodInjector{Reader: live, Sidecar: o.Sidecar, PayloadWait: o.PayloadWait}).
		WithDefaulterCustomPath(PodPath).
		Complete(); err != nil {
		return err
	}
	if err := ctrl.NewWebhookManagedBy(mgr, &kubevirtv1.VirtualMachineInstance{}).
		WithDefaulter(&DiscoveryDefaulter{Reader: live}).
		WithDefaulterCustomPath(VMIPath).
		Complete(); err != nil {
		return err
	}
	return ctrl.NewWebhookManagedBy(mgr, &imdsv1alpha1.MetadataService{}).
		WithValidator(MetadataServiceValidator{}).
		WithValidatorCustomPath(MetadataServicePath).
		Complete()
}

// admittedNamespace is the namespace of the object being admitted: at CREATE
// the object may not carry its namespace yet, the admission request does.
func admittedNamespace(ctx context.Context, obj client.Object) string {
	if req, err := admission.RequestFromContext(ctx); err == nil && req.Namespace != "" {
		return req.Namespace
	}
	return obj.GetNamespace()
}

// Package webhooks holds kubevirt-imds' admission webhooks: the Pod webhook
// that injects the metadata sidecar into virt-launcher Pods, the VMI webhook
// that sets the SMBIOS data by which guests find the service, and the
// MetadataService validating webhook. docs/webhooks.md explains the choices.
package webhooks

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"time"

	corev1 "k8s.io/api/core/v1"
	kubevirtv1 "kubevirt.io/api/core/v1"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/healthz"
	logf "sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/webhook/admission"

	imdsv1alpha1 "github.com/kubevirt-imds/kubevirt-imds/api/v1alpha1"
	"github.com/kubevirt-imds/kubevirt-imds/controllers"
)

// Webhook paths, as in the markers below.
const (
	PodPath             = "/mutate-v1-pod"
	VMIPath             = "/mutate-kubevirt-io-v1-virtualmachineinstance"
	MetadataServicePath = "/validate-imds-kubevirt-io-v1alpha1-metadataservice"
)

// The Pod and VMI webhooks fail open (failurePolicy Ignore) and never deny:
// a VM must start even when the operator is down; the controller reports what
// was missed. Their timeouts are short, so that an operator that hangs
// rather than refuses costs a VM's creation at most that: the VMI webhook
// answers from the cache, the Pod webhook within PayloadWait and a margin
// (2.5 s), with 1.5 s to spare for a machine so loaded that the request waits
// for a CPU (the boot storm benchmark saw 3.2 s at worst).
// Their objectSelector and namespaceSelector are added by
// config/webhook/selectors_patch.yaml (controller-gen has no marker for them).
// The MetadataService webhook also fails open: the controller applies the
// same checks when it reconciles, so the webhook gives early feedback but
// guards nothing on its own.
//
// +kubebuilder:webhook:path=/mutate-v1-pod,mutating=true,failurePolicy=ignore,sideEffects=NoneOnDryRun,groups="",resources=pods,verbs=create,versions=v1,name=pods.imds.kubevirt.io,admissionReviewVersions=v1,reinvocationPolicy=IfNeeded,timeoutSeconds=4
// +kubebuilder:webhook:path=/mutate-kubevirt-io-v1-virtualmachineinstance,mutating=true,failurePolicy=ignore,sideEffects=None,groups=kubevirt.io,resources=virtualmachineinstances,verbs=create,versions=v1,name=virtualmachineinstances.imds.kubevirt.io,admissionReviewVersions=v1,reinvocationPolicy=IfNeeded,timeoutSeconds=2
// +kubebuilder:webhook:path=/validate-imds-kubevirt-io-v1alpha1-metadataservice,mutating=false,failurePolicy=ignore,sideEffects=None,groups=imds.kubevirt.io,resources=metadataservices,verbs=create;update,versions=v1alpha1,name=metadataservices.imds.kubevirt.io,admissionReviewVersions=v1,timeoutSeconds=5

// Options configure the webhooks.
type Options struct {
	// Sidecar configures the injected sidecar.
	Sidecar SidecarOptions
	// PayloadWait bounds the Pod webhook's wait for the payload Secret;
	// zero takes DefaultPayloadWait. Keep it below the Pod webhook's
	// timeoutSeconds.
	PayloadWait time.Duration
	// Payload renders and writes, at admission, the payload Secrets the
	// cache does not have yet. The manager passes its controller's
	// reconciler, so that the controller knows which writes the webhook has
	// in flight and does not repeat them; nil takes a reconciler of its own.
	Payload PayloadWriter
}

// SetupWithManager registers the webhooks with mgr's webhook server. Every
// replica serves them, leader or not. They read through mgr's cache
// (reads.go says why); its informers for VMIs, MetadataServices and Secrets
// (and Namespaces, for the "sidecar" network setup) are registered here so
// that every replica fills them at start: only the leader runs the
// controller, whose watches would otherwise start them, and a first
// admission on a follower would wait for a cold informer.
func SetupWithManager(mgr ctrl.Manager, o Options) error {
	ctx := context.Background()
	informed := []client.Object{&kubevirtv1.VirtualMachineInstance{}, &imdsv1alpha1.MetadataService{}}
	if o.Sidecar.networkSetup() == NetworkSetupSidecar {
		informed = append(informed, &corev1.Namespace{})
	}
	for _, obj := range informed {
		if _, err := mgr.GetCache().GetInformer(ctx, obj); err != nil {
			return fmt.Errorf("starting the %T informer: %w", obj, err)
		}
	}
	secrets, err := mgr.GetCache().GetInformer(ctx, &corev1.Secret{})
	if err != nil {
		return fmt.Errorf("starting the Secret informer: %w", err)
	}
	payloads, err := NewCacheEvents(secrets, isPayloadSecret)
	if err != nil {
		return err
	}
	vmis, err := mgr.GetCache().GetInformer(ctx, &kubevirtv1.VirtualMachineInstance{})
	if err != nil {
		return fmt.Errorf("starting the VirtualMachineInstance informer: %w", err)
	}
	instances, err := NewCacheEvents(vmis, nil)
	if err != nil {
		return err
	}
	if o.PayloadWait == 0 {
		o.PayloadWait = DefaultPayloadWait
	}
	cached, live := mgr.GetCache(), mgr.GetAPIReader()
	writer := o.Payload
	if writer == nil {
		writer = &controllers.MetadataServiceReconciler{Client: mgr.GetClient(), Sources: &controllers.SourceReader{Live: live}}
	}
	// The Pod and VMI webhooks answer with patches they build themselves
	// (patch.go says why), so they are registered as plain handlers.
	server := mgr.GetWebhookServer()
	server.Register(PodPath, mutating(&PodInjector{Reader: cached, Live: live, Payloads: payloads, Instances: instances,
		Sidecar: o.Sidecar, PayloadWait: o.PayloadWait, Payload: writer}))
	server.Register(VMIPath, mutating(&DiscoveryDefaulter{Reader: cached, Live: live, Sidecar: o.Sidecar}))
	return ctrl.NewWebhookManagedBy(mgr, &imdsv1alpha1.MetadataService{}).
		WithValidator(MetadataServiceValidator{}).
		WithValidatorCustomPath(MetadataServicePath).
		Complete()
}

// mutating serves h as a mutating webhook that never denies: a panic in h
// admits the object unchanged, and is logged. (controller-runtime's own
// recovery answers a panic with an error response, which the API server
// takes as a denial: failurePolicy covers only calls that fail.)
func mutating(h admission.Handler) *admission.Webhook {
	return &admission.Webhook{Handler: admission.HandlerFunc(func(ctx context.Context, req admission.Request) (resp admission.Response) {
		defer func() {
			if r := recover(); r != nil {
				logf.FromContext(ctx).Error(fmt.Errorf("panic: %v", r), "admitting the object unchanged", "kind", req.Kind.Kind)
				resp = admission.Allowed("")
			}
		}()
		return h.Handle(ctx, req)
	})}
}

// CacheSynced is a readiness check that passes once mgr's cache has synced,
// so that a replica takes admission traffic only when it can answer from its
// cache rather than from the API server.
func CacheSynced(mgr ctrl.Manager) healthz.Checker {
	return func(req *http.Request) error {
		ctx, cancel := context.WithTimeout(req.Context(), time.Second)
		defer cancel()
		if !mgr.GetCache().WaitForCacheSync(ctx) {
			return errors.New("the cache has not synced yet")
		}
		return nil
	}
}

// admittedNamespace is the namespace of the object being admitted: at CREATE
// the object may not carry its namespace yet, the admission request does.
func admittedNamespace(ctx context.Context, obj client.Object) string {
	if req, err := admission.RequestFromContext(ctx); err == nil && req.Namespace != "" {
		return req.Namespace
	}
	return obj.GetNamespace()
}

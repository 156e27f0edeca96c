package webhooks

import (
	"context"
	"fmt"
	"slices"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	"k8s.io/apimachinery/pkg/types"
	kubevirtv1 "kubevirt.io/api/core/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
	logf "sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/webhook/admission"

	"github.com/kubevirt-imds/kubevirt-imds/api/payload"
	imdsv1alpha1 "github.com/kubevirt-imds/kubevirt-imds/api/v1alpha1"
	"github.com/kubevirt-imds/kubevirt-imds/controllers"
)

// Paths and names inside a virt-launcher Pod.
const (
	// PayloadVolumeName is the volume of the payload Secret.
	PayloadVolumeName = "imds-payload"
	// PayloadDir is where the sidecar reads the payload Secret.
	PayloadDir = "/var/run/kubevirt-imds/payload"
	// TokenDir holds one directory per projected token volume, so that
	// <TokenDir>/<payload.TokenPath(audience)> is the token file.
	TokenDir = "/var/run/kubevirt-imds/tokens"
	// AdminAddress is the sidecar's loopback admin endpoint. Not 127.0.0.1:
	// KubeVirt's masquerade binding DNATs every connection the Pod makes to
	// 127.0.0.1 into the guest (nat output "ip daddr 127.0.0.1 dnat to
	// 10.0.2.2", so that probes on localhost reach the VM), and the
	// liveness probe then asked the guest, failed, and had the kubelet kill
	// the sidecar every 30 s. The rest of 127.0.0.0/8 is the Pod's own.
	AdminAddress = "127.0.0.2:8081"
	// SidecarBinaryPath is the sidecar's own binary in the image: a small
	// program that links nothing of the operator, since one runs per VM.
	SidecarBinaryPath = "/kubevirt-imds-sidecar"
	// ListenPort is the unprivileged port the sidecar serves on in the
	// "node" network setup; the node agent redirects 169.254.169.254:80 to
	// it, so the sidecar needs no capability to bind.
	ListenPort = 8775
	// SidecarUser is the user (and group) the "node"-mode sidecar runs as
	// when the Pod names none: KubeVirt's qemu user, as its own containers.
	SidecarUser = int64(107)
	// defaultTokenExpiration is the CRD's default for expirationSeconds.
	defaultTokenExpiration = 3600
)

// NetworkSetup says who plumbs 169.254.169.254 into a launcher Pod.
type NetworkSetup string

const (
	// NetworkSetupNode: the node agent (a privileged DaemonSet, as KubeVirt's
	// virt-handler) plumbs the Pod's network namespace, and the injected
	// sidecar is fully unprivileged. It passes every Pod Security level.
	NetworkSetupNode NetworkSetup = "node"
	// NetworkSetupSidecar: the sidecar plumbs the namespace itself, as root
	// with NET_ADMIN and NET_RAW. Only the Pod Security level "privileged"
	// admits it, so it is injected only in namespaces at that level.
	NetworkSetupSidecar NetworkSetup = "sidecar"
)

// Pod Security levels, as the namespace label and the API server's
// AdmissionConfiguration spell them.
const (
	// PodSecurityEnforceLabel is the namespace label holding the enforced level.
	PodSecurityEnforceLabel = controllers.PodSecurityEnforceLabel
	// PodSecurityPrivileged is the level that enforces nothing.
	PodSecurityPrivileged = controllers.PodSecurityPrivileged
)

// SidecarOptions configure the injected sidecar.
type SidecarOptions struct {
	// Image is the kubevirt-imds image.
	Image string
	// ImagePullPolicy of the sidecar; empty leaves the API server's default.
	ImagePullPolicy corev1.PullPolicy
	// Resources of the sidecar; zero takes DefaultSidecarResources. In a Pod
	// whose own containers are all Guaranteed the requests are raised to the
	// limits (sidecarResources).
	Resources corev1.ResourceRequirements
	// NetworkSetup chooses who plumbs the Pod's network; empty is
	// NetworkSetupNode.
	NetworkSetup NetworkSetup
	// PodSecurityDefaultLevel is the Pod Security level enforced in
	// namespaces without the enforce label, as the API server's
	// AdmissionConfiguration sets it; empty is "privileged" (the API
	// server's own default). Only NetworkSetupSidecar consults it.
	PodSecurityDefaultLevel string
}

// networkSetup is o.NetworkSetup, defaulted.
func (o SidecarOptions) networkSetup() NetworkSetup {
	if o.NetworkSetup == "" {
		return NetworkSetupNode
	}
	return o.NetworkSetup
}

// DefaultSidecarResources suit one guest's metadata traffic. The memory
// request follows BenchmarkSidecarLoad (test/bench), for the default network
// setup: 8.4 MiB resident idle a minute after the start (6.5 of it the
// executable's pages, shared by every sidecar of a node) and 13.2–13.3 MiB
// after 60,000 requests (mode "sidecar": 11.1 MiB idle); the limit leaves
// room for the connection budgets (sidecar/server). Requests are below the limits; in
// a Guaranteed Pod sidecarResources raises them to the limits.
func DefaultSidecarResources() corev1.ResourceRequirements {
	return corev1.ResourceRequirements{
		Requests: corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("10m"), corev1.ResourceMemory: resource.MustParse("16Mi")},
		Limits:   corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("200m"), corev1.ResourceMemory: resource.MustParse("64Mi")},
	}
}

// PodInjector adds the metadata sidecar to the virt-launcher Pods of VMIs a
// MetadataService serves. It never fails a Pod's creation: whatever goes
// wrong, it leaves the Pod alone and the controller reports the VMI as
// running without its sidecar.
type PodInjector struct {
	// Reader reads VMIs, MetadataServices, Secrets and Namespaces: the
	// manager's cache (SetupWithManager says why).
	Reader client.Reader
	// Live, when set, is asked on a cache miss: an object created moments
	// before the Pod may not have reached the cache yet.
	Live client.Reader
	// Payloads, when set, wakes the wait for a payload Secret as soon as the
	// cache sees it; without it the wait is a single look.
	Payloads *CacheEvents
	// Instances, when set, wakes the wait for a VMI the cache has not seen
	// yet (instanceWait); without it a miss is asked of Live at once.
	Instances *CacheEvents
	// Payload, when set, renders and writes a payload Secret the cache does
	// not have yet, instead of waiting for the controller to: in a boot
	// storm the controller's reconciles lag VM creation by seconds.
	Payload PayloadWriter
	Sidecar SidecarOptions
	// PayloadWait is how long admission may wait for the payload Secret to
	// appear. The controller renders it on the same VMI event
	// on which virt-controller creates the Pod, so it usually lags by
	// milliseconds; the wait is bounded so that a slow or absent operator
	// delays a VM's start by at most this, and never stops it.
	PayloadWait time.Duration

	services liveServices
}

// PayloadWriter renders and writes a VMI's payload Secret (controllers'
// MetadataServiceReconciler).
type PayloadWriter interface {
	RenderPayload(ctx context.Context, mds *imdsv1alpha1.MetadataService, vmi *kubevirtv1.VirtualMachineInstance) (*payload.Document, error)
	// ClaimPayload claims the write of vmi's payload, before the admission
	// returns; false when the controller is writing it already.
	ClaimPayload(vmi *kubevirtv1.VirtualMachineInstance) bool
	WritePayload(ctx context.Context, mds *imdsv1alpha1.MetadataService, vmi *kubevirtv1.VirtualMachineInstance, doc *payload.Document) error
}

// payloadWriteTimeout bounds the write of a payload Secret the webhook
// rendered; the controller writes it anyway if this one fails.
const payloadWriteTimeout = 30 * time.Second

// A launcher Pod is created right after its VMI (virt-controller creates it
// on the VMI's event), so its admission may find the VMI missing from the
// cache. It then waits for the cache's event, which costs the API server
// nothing, and only if that takes longer than instanceLiveDelay also asks
// the API server, taking whichever answers first. In a 10-creator boot
// storm the cache was always in time; with 200 creators on two cores both
// the cache and the API server lagged by up to seconds. Without a live
// reader the wait ends after instanceWait.
const (
	instanceLiveDelay = 100 * time.Millisecond
	instanceWait      = time.Second
)

// DefaultPayloadWait is PodInjector.PayloadWait as the manager sets it:
// with admissionMargin well inside the Pod webhook's timeoutSeconds (4, in
// setup.go's marker), so that the API server does not give up on the
// webhook before it has answered.
const DefaultPayloadWait = 2 * time.Second

// admissionMargin is what a Pod admission may take beyond PayloadWait: the
// final live look for the payload.
const admissionMargin = 500 * time.Millisecond

// Default mutates a virt-launcher Pod on CREATE.
func (p *PodInjector) Default(ctx context.Context, pod *corev1.Pod) error {
	if pod.Labels[kubevirtv1.AppLabel] != controllers.LauncherAppValue {
		return nil
	}
	// Everything, live reads included, fits in the webhook's timeoutSeconds:
	// the payload wait ends PayloadWait after the request came in.
	deadline := time.Now().Add(p.PayloadWait)
	ctx, cancel := context.WithTimeout(ctx, p.PayloadWait+admissionMargin)
	defer cancel()
	namespace := admittedNamespace(ctx, pod)
	log := logf.FromContext(ctx).WithValues("namespace", namespace, "vmi", pod.Annotations[kubevirtv1.DomainAnnotation])
	if job := pod.Labels[kubevirtv1.MigrationJobLabel]; job != "" {
		// The target Pod of a live migration is rendered afresh from the
		// VMI: it needs the sidecar again, with the same payload.
		log = log.WithValues("migrationJobUID", job)
	}
	vmi, mds, err := p.servedInstance(ctx, namespace, pod, deadline)
	if err != nil {
		// Denying would stop the VM; the controller reports the missing sidecar.
		log.Error(err, "not injecting the metadata sidecar")
		noteOutcome(ctx, OutcomeError)
		return nil
	}
	if mds == nil {
		noteOutcome(ctx, OutcomeNotSelected)
		return nil
	}
	if reason, message := controllers.Unservable(mds, vmi); reason != "" {
		// A sidecar waiting for a bridge that never comes would restart for
		// ever; the controller reports the reason on the MetadataService.
		log.Info("not injecting the metadata sidecar", "reason", reason, "message", message)
		noteOutcome(ctx, OutcomeUnservable)
		return nil
	}
	if forbidden, err := sidecarForbidden(ctx, p.Reader, p.Live, namespace, p.Sidecar); err != nil || forbidden != "" {
		// PodSecurity admission runs after the webhooks and would reject the
		// whole Pod for the sidecar's capabilities, and with it the VM; the
		// controller reports the reason on the MetadataService.
		if err != nil {
			log.Error(err, "not injecting the metadata sidecar")
			noteOutcome(ctx, OutcomeError)
		} else {
			log.Info("not injecting the metadata sidecar", "reason", imdsv1alpha1.ReasonPodSecurityForbidsSidecar, "message", forbidden)
			noteOutcome(ctx, OutcomePodSecurityForbidden)
		}
		return nil
	}
	serve, why, err := p.payload(ctx, namespace, vmi, mds, deadline)
	if err != nil {
		log.Error(err, "not injecting the metadata sidecar")
		noteOutcome(ctx, OutcomeError)
		return nil
	}
	if serve == nil {
		log.Info("not injecting the metadata sidecar", "reason", why)
		noteOutcome(ctx, OutcomePayloadNotReady)
		return nil
	}
	InjectSidecar(pod, vmi, mds, *serve, p.Sidecar)
	noteOutcome(ctx, OutcomeInjected)
	return nil
}

// servedInstance finds the Pod's VMI, by KubeVirt's domain annotation and
// checked against the created-by UID label, and the MetadataService serving
// it; mds is nil when none does or the Pod is not a VMI's. A migration's
// target Pod carries the same created-by UID as its source, so it finds the
// same VMI.
func (p *PodInjector) servedInstance(ctx context.Context, namespace string, pod *corev1.Pod, deadline time.Time) (*kubevirtv1.VirtualMachineInstance, *imdsv1alpha1.MetadataService, error) {
	name, uid := pod.Annotations[kubevirtv1.DomainAnnotation], pod.Labels[kubevirtv1.CreatedByLabel]
	if name == "" || uid == "" {
		return nil, nil, nil
	}
	vmi, err := p.instance(ctx, types.NamespacedName{Namespace: namespace, Name: name}, types.UID(uid), deadline)
	if vmi == nil || err != nil {
		return nil, nil, err
	}
	mds, err := servingService(ctx, p.Reader, &p.services, p.Live, namespace, vmi.Labels)
	return vmi, mds, err
}

// instance reads the VMI key with the given UID from the cache and, when
// the cache has not seen it yet, waits for the cache; if the cache still
// lacks it after instanceLiveDelay, it asks the API server too
// (virt-controller may have seen the VMI long before this cache) and takes
// whichever answers first. nil when neither has it.
func (p *PodInjector) instance(ctx context.Context, key types.NamespacedName, uid types.UID, deadline time.Time) (*kubevirtv1.VirtualMachineInstance, error) {
	var changed <-chan struct{}
	if p.Instances != nil {
		// Subscribed before the first look, so that no event is lost between.
		var cancel func()
		changed, cancel = p.Instances.subscribe(key)
		defer cancel()
	}
	vmi, err := instanceIn(ctx, p.Reader, key, uid)
	if vmi != nil || err != nil {
		return vmi, err
	}
	if changed == nil {
		if p.Live == nil {
			return nil, nil
		}
		return instanceIn(ctx, p.Live, key, uid)
	}
	type answer struct {
		vmi *kubevirtv1.VirtualMachineInstance
		err error
	}
	live := make(chan answer, 1)
	askLive := time.NewTimer(min(instanceLiveDelay, time.Until(deadline)))
	defer askLive.Stop()
	giveUp := time.NewTimer(min(instanceWait, time.Until(deadline)))
	defer giveUp.Stop()
	asked := false
	for {
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("waiting for VirtualMachineInstance %s: %w", key.Name, ctx.Err())
		case <-giveUp.C:
			switch {
			case p.Live == nil:
				return nil, nil
			case !asked:
				return instanceIn(ctx, p.Live, key, uid)
			}
			// The live read is under way: its answer is the last word.
			a := <-live
			return a.vmi, a.err
		case <-askLive.C:
			if p.Live != nil {
				asked = true
				go func() {
					vmi, err := instanceIn(ctx, p.Live, key, uid)
					live <- answer{vmi, err}
				}()
			}
		case a := <-live:
			return a.vmi, a.err
		case <-changed:
			if vmi, err := instanceIn(ctx, p.Reader, key, uid); vmi != nil || err != nil {
				return vmi, err
			}
		}
	}
}

// instanceIn reads the VMI key from r; nil when r has none with that UID:
// absent, or a VMI of the same name that is not the one the Pod was made
// for (or not yet the new one, in a stale cache).
func instanceIn(ctx context.Context, r client.Reader, key types.NamespacedName, uid types.UID) (*kubevirtv1.VirtualMachineInstance, error) {
	var vmi kubevirtv1.VirtualMachineInstance
	err := r.Get(ctx, key, &vmi)
	switch {
	case err == nil && vmi.UID == uid:
		return &vmi, nil
	case err != nil && !apierrors.IsNotFound(err):
		return nil, fmt.Errorf("reading VirtualMachineInstance %s: %w", key.Name, err)
	}
	return nil, nil
}

// sidecarForbidden says why the sidecar o describes cannot go into a Pod of
// namespace (controllers.PrivilegedSidecarForbidden), or "": only the
// privileged sidecar of the "sidecar" network setup can be forbidden.
func sidecarForbidden(ctx context.Context, cached, live client.Reader, namespace string, o SidecarOptions) (string, error) {
	if o.networkSetup() != NetworkSetupSidecar {
		return "", nil
	}
	var ns corev1.Namespace
	err := cached.Get(ctx, types.NamespacedName{Name: namespace}, &ns)
	if apierrors.IsNotFound(err) && live != nil {
		err = live.Get(ctx, types.NamespacedName{Name: namespace}, &ns)
	}
	if err != nil {
		return "", fmt.Errorf("reading Namespace %s for its Pod Security level: %w", namespace, err)
	}
	return controllers.PrivilegedSidecarForbidden(namespace, ns.Labels, o.PodSecurityDefaultLevel), nil
}

// payload returns where the VMI's payload places the sidecar: as the cached
// Secret says, else as the document rendered here from the cache, whose
// Secret is written after the admission returns (not on a dry run: that write
// is the webhook's side effect), else as the Secret the controller writes
// within PayloadWait says.
//
// Rendering here takes the controller's rendering latency — seconds in a
// boot storm — out of the Pod's admission. The Secret is mounted
// non-optionally, so the kubelet holds the Pod until it exists: it is written
// right away, in the background, and the controller writes the same
// document anyway. A payload that cannot be rendered (a missing source) is
// not injected this way, so a Pod is never held for a Secret nobody writes.
func (p *PodInjector) payload(ctx context.Context, namespace string, vmi *kubevirtv1.VirtualMachineInstance,
	mds *imdsv1alpha1.MetadataService, deadline time.Time) (*payload.Serve, string, error) {
	key := types.NamespacedName{Namespace: namespace, Name: imdsv1alpha1.PayloadSecretName(vmi.Name)}
	if serve, _, err := payloadReady(ctx, p.Reader, p.Live, key, vmi); serve != nil || err != nil {
		return serve, "", err
	}
	if p.Payload != nil {
		doc, err := p.Payload.RenderPayload(ctx, mds, vmi)
		if err == nil {
			if req, rerr := admission.RequestFromContext(ctx); rerr != nil || req.DryRun == nil || !*req.DryRun {
				p.writeLater(ctx, mds, vmi, doc)
			}
			return &doc.Serve, "", nil
		}
		// A missing source, say: the controller reports it; wait as before.
		logf.FromContext(ctx).Info("cannot render the payload at admission; waiting for the controller", "error", err.Error())
	}
	return p.waitPayload(ctx, namespace, vmi, deadline)
}

// writeLater writes doc into vmi's payload Secret once the admission has
// returned, so that the Pod's creation does not wait for the write. The
// write is claimed before: the controller must not find the Secret missing
// in between and create it too, nor this write repeat one of the
// controller's that the cache has not seen yet.
func (p *PodInjector) writeLater(ctx context.Context, mds *imdsv1alpha1.MetadataService, vmi *kubevirtv1.VirtualMachineInstance, doc *payload.Document) {
	log := logf.FromContext(ctx)
	if !p.Payload.ClaimPayload(vmi) {
		log.V(1).Info("the controller is writing the payload")
		return
	}
	go func() {
		wctx, cancel := context.WithTimeout(context.Background(), payloadWriteTimeout)
		defer cancel()
		if err := p.Payload.WritePayload(wctx, mds, vmi, doc); err != nil {
			log.Error(err, "writing the payload rendered at admission; the controller writes it")
		}
	}()
}

// waitPayload returns where the VMI's payload serves once its Secret is ready,
// waiting up to PayloadWait for the cache to see it: woken by the cache's
// own events, so the wait costs the API server nothing. One live read at the
// end covers a cache that lags. serve is nil, and why says why, when there
// is none.
func (p *PodInjector) waitPayload(ctx context.Context, namespace string, vmi *kubevirtv1.VirtualMachineInstance, deadline time.Time) (*payload.Serve, string, error) {
	key := types.NamespacedName{Namespace: namespace, Name: imdsv1alpha1.PayloadSecretName(vmi.Name)}
	var changed <-chan struct{}
	if p.Payloads != nil && p.PayloadWait > 0 {
		// Subscribed before the first look, so that no event is lost between.
		var cancel func()
		changed, cancel = p.Payloads.subscribe(key)
		defer cancel()
	}
	serve, why, err := payloadReady(ctx, p.Reader, p.Live, key, vmi)
	if serve != nil || err != nil {
		return serve, why, err
	}
	if changed == nil {
		// Nothing to wait on: one look at the API server, as on any miss.
		if p.Live != nil {
			return payloadReady(ctx, p.Live, nil, key, vmi)
		}
		return serve, why, err
	}
	timer := time.NewTimer(time.Until(deadline))
	defer timer.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil, why + " (the admission request ended)", nil
		case <-timer.C:
			if p.Live != nil {
				if serve, _, err := payloadReady(ctx, p.Live, nil, key, vmi); serve != nil || err != nil {
					return serve, "", err
				}
			}
			return nil, why + fmt.Sprintf(" (waited %s)", p.PayloadWait), nil
		case <-changed:
		}
		if serve, why, err = payloadReady(ctx, p.Reader, p.Live, key, vmi); serve != nil || err != nil {
			return serve, why, err
		}
	}
}

// payloadReady returns where the payload in the Secret key places the
// sidecar if the Secret was rendered for this very VMI. Only then is the
// sidecar injected: it mounts the Secret non-optionally, so the kubelet would
// hold the Pod (and the VM) until the Secret exists, and a Secret left over
// from a former VMI of the same name would tell the guest another instance's
// identity. The manager's cache holds payload Secrets without their data: one
// it cannot tell that from is read from live, when there is one.
func payloadReady(ctx context.Context, r, live client.Reader, key types.NamespacedName, vmi *kubevirtv1.VirtualMachineInstance) (*payload.Serve, string, error) {
	var s corev1.Secret
	if err := r.Get(ctx, key, &s); err != nil {
		if apierrors.IsNotFound(err) {
			return nil, "the payload Secret does not exist yet", nil
		}
		return nil, "", fmt.Errorf("reading the payload Secret %s: %w", key.Name, err)
	}
	switch {
	case s.Type != controllers.PayloadSecretType:
		return nil, fmt.Sprintf("Secret %s is not a payload Secret (type %q)", s.Name, s.Type), nil
	case s.Labels[imdsv1alpha1.LabelInstanceUID] != string(vmi.UID):
		return nil, "the payload Secret was rendered for another instance of the same name", nil
	}
	serve, why, known := controllers.PayloadServe(&s)
	switch {
	case !known && live != nil:
		return payloadReady(ctx, live, nil, key, vmi)
	case !known:
		return nil, "the payload Secret does not say where the sidecar serves", nil
	case why != "":
		return nil, why, nil
	}
	return &serve, "", nil
}

// InjectSidecar adds the sidecar, the payload volume and one token volume per
// audience of mds to pod; serve is where the payload places the sidecar. It
// works by name and keeps what is already there, so a second pass changes
// nothing, even after the API server has defaulted the fields of the first.
func InjectSidecar(pod *corev1.Pod, vmi *kubevirtv1.VirtualMachineInstance, mds *imdsv1alpha1.MetadataService, serve payload.Serve, o SidecarOptions) {
	volumes := []corev1.Volume{{
		Name: PayloadVolumeName,
		// One directory for the instance's document and its service's
		// shared one: the kubelet swaps a projected volume's files together.
		VolumeSource: corev1.VolumeSource{Projected: &corev1.ProjectedVolumeSource{
			Sources: []corev1.VolumeProjection{{
				Secret: &corev1.SecretProjection{
					LocalObjectReference: corev1.LocalObjectReference{Name: imdsv1alpha1.PayloadSecretName(vmi.Name)},
					// Not optional: the kubelet waits for the Secret rather
					// than start a sidecar that would serve nothing.
					Optional: new(false),
				},
			}, {
				Secret: &corev1.SecretProjection{
					LocalObjectReference: corev1.LocalObjectReference{Name: imdsv1alpha1.SharedPayloadSecretName(mds.Name)},
					// Optional: a document refers to it only once it is
					// stored, and holds its own copy until then.
					Optional: new(true),
				},
			}},
		}},
	}}
	mounts := []corev1.VolumeMount{{Name: PayloadVolumeName, MountPath: PayloadDir, ReadOnly: true}}
	if id := mds.Spec.Identity; id != nil {
		if len(id.ServiceAccountTokens) > 0 && pod.Spec.ServiceAccountName == "" {
			// Token projections need a named ServiceAccount; "default" is what
			// the ServiceAccount admission plugin would set, and what the
			// controller renders into the payload (serviceAccountName).
			pod.Spec.ServiceAccountName = "default"
		}
		for _, t := range id.ServiceAccountTokens {
			exp := t.ExpirationSeconds
			if exp == 0 {
				exp = defaultTokenExpiration
			}
			name := payload.TokenVolumeName(t.Audience)
			volumes = append(volumes, corev1.Volume{
				Name: name,
				VolumeSource: corev1.VolumeSource{Projected: &corev1.ProjectedVolumeSource{
					Sources: []corev1.VolumeProjection{{ServiceAccountToken: &corev1.ServiceAccountTokenProjection{
						Audience: t.Audience, ExpirationSeconds: new(exp), Path: payload.TokenFileName,
					}}},
				}},
			})
			mounts = append(mounts, corev1.VolumeMount{Name: name, MountPath: TokenDir + "/" + name, ReadOnly: true})
		}
	}
	for _, v := range volumes {
		pod.Spec.Volumes = addMissing(pod.Spec.Volumes, v, func(v corev1.Volume) string { return v.Name })
	}
	pod.Spec.InitContainers = addMissing(pod.Spec.InitContainers, sidecarContainer(pod, vmi, serve, o, mounts),
		func(c corev1.Container) string { return c.Name })
}

// sidecarContainer is the sidecar, run as a native sidecar (an init container
// that keeps running) so that it is up before the compute container starts
// the VM, and stops after it.
func sidecarContainer(pod *corev1.Pod, vmi *kubevirtv1.VirtualMachineInstance, serve payload.Serve, o SidecarOptions, mounts []corev1.VolumeMount) corev1.Container {
	args := []string{"serve",
		"--payload-dir=" + PayloadDir,
		"--token-dir=" + TokenDir,
		"--admin-address=" + AdminAddress,
	}
	var security *corev1.SecurityContext
	switch o.networkSetup() {
	case NetworkSetupSidecar:
		security = privilegedSecurityContext()
	default:
		args = append(args, "--network-setup=node", fmt.Sprintf("--listen-port=%d", ListenPort))
		if serve.Bridge != "" {
			args = append(args, "--bridge="+serve.Bridge)
		}
		// The VMI's UID, not the Pod's: a migration's target Pod then
		// derives the same MAC as its source.
		args = append(args, "--mac-seed="+string(vmi.UID),
			// For the node agent, which labels this sidecar's metrics
			// with it (it cannot read the payload).
			"--instance="+vmi.Namespace+"/"+vmi.Name)
		security = unprivilegedSecurityContext(pod)
	}
	return corev1.Container{
		Name:            controllers.SidecarContainerName,
		Image:           o.Image,
		ImagePullPolicy: o.ImagePullPolicy,
		Command:         []string{SidecarBinaryPath},
		Args:            args,
		// The Go runtime sizes itself from the container's limits, which the
		// downward API passes in.
		Env: []corev1.EnvVar{
			{Name: "GOMEMLIMIT", ValueFrom: &corev1.EnvVarSource{ResourceFieldRef: &corev1.ResourceFieldSelector{
				Resource: "limits.memory", Divisor: resource.MustParse("1")}}},
			{Name: "GOMAXPROCS", ValueFrom: &corev1.EnvVarSource{ResourceFieldRef: &corev1.ResourceFieldSelector{
				Resource: "limits.cpu", Divisor: resource.MustParse("1")}}},
		},
		RestartPolicy: new(corev1.ContainerRestartPolicyAlways),
		Resources:     sidecarResources(pod, o),
		VolumeMounts:  mounts,
		// No probe at all (docs/webhooks.md). No startupProbe and no
		// readinessProbe: the sidecar becomes ready only once KubeVirt has
		// plumbed the VM's bridge, which happens after the Pod runs; either
		// probe would then hold the Pod back. No livenessProbe: the kubelet's
		// httpGet and tcpSocket probes dial the Pod IP, which KubeVirt hands
		// to the guest, and an exec probe forks a process in the Pod every
		// period; the sidecar checks its own admin endpoint instead and
		// exits, to be restarted, when it stops answering.
		SecurityContext:          security,
		TerminationMessagePolicy: corev1.TerminationMessageFallbackToLogsOnError,
	}
}

// unprivilegedSecurityContext is the "node"-mode sidecar's: what the Pod
// Security level "restricted" asks of a container, so that the sidecar never
// changes whether a launcher Pod is admitted.
func unprivilegedSecurityContext(pod *corev1.Pod) *corev1.SecurityContext {
	sc := &corev1.SecurityContext{
		RunAsNonRoot:             new(true),
		Privileged:               new(false),
		AllowPrivilegeEscalation: new(false),
		ReadOnlyRootFilesystem:   new(true),
		Capabilities:             &corev1.Capabilities{Drop: []corev1.Capability{"ALL"}},
		SeccompProfile:           &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeRuntimeDefault},
	}
	// The Pod's own user where it names one (KubeVirt: 107, which also owns
	// the fsGroup the token files are readable by); root launcher Pods
	// (KubeVirt's Root feature gate) name 0, which runAsNonRoot forbids.
	if psc := pod.Spec.SecurityContext; psc == nil || psc.RunAsUser == nil || *psc.RunAsUser == 0 {
		sc.RunAsUser = new(SidecarUser)
	}
	if psc := pod.Spec.SecurityContext; psc == nil || psc.RunAsGroup == nil {
		sc.RunAsGroup = new(SidecarUser)
	}
	return sc
}

// privilegedSecurityContext is the "sidecar"-mode sidecar's: root, but only
// with the capabilities below; they take effect for UID 0 only (there are no
// ambient capabilities), and no_new_privs rules out file capabilities.
func privilegedSecurityContext() *corev1.SecurityContext {
	return &corev1.SecurityContext{
		RunAsUser:                new(int64(0)),
		RunAsNonRoot:             new(false),
		Privileged:               new(false),
		AllowPrivilegeEscalation: new(false),
		ReadOnlyRootFilesystem:   new(true),
		Capabilities: &corev1.Capabilities{
			Drop: []corev1.Capability{"ALL"},
			Add:  []corev1.Capability{"NET_ADMIN", "NET_RAW", "NET_BIND_SERVICE"},
		},
		SeccompProfile: &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeRuntimeDefault},
	}
}

// sidecarResources are o's resources, with requests raised to the limits
// when every container KubeVirt put in the Pod has its CPU and memory
// requests equal to its limits: that Pod is Guaranteed (a dedicated-CPU VMI),
// one container short of it would make it Burstable, and virt-controller
// then fails the VMI ("failed to guarantee pod resources").
func sidecarResources(pod *corev1.Pod, o SidecarOptions) corev1.ResourceRequirements {
	res := o.Resources
	if len(res.Requests) == 0 && len(res.Limits) == 0 {
		res = DefaultSidecarResources()
	}
	res = *res.DeepCopy()
	if !guaranteed(pod) {
		return res
	}
	res.Requests = corev1.ResourceList{}
	for _, name := range []corev1.ResourceName{corev1.ResourceCPU, corev1.ResourceMemory} {
		if l, ok := res.Limits[name]; ok {
			res.Requests[name] = l.DeepCopy()
		}
	}
	return res
}

// guaranteed reports whether pod's QoS class is Guaranteed, as the API
// server computes it (GetPodQOS, pkg/apis/core/helper/qos): every container,
// init containers included, has CPU and memory limits, and requests, where
// set, equal to them.
func guaranteed(pod *corev1.Pod) bool {
	containers := slices.Concat(pod.Spec.InitContainers, pod.Spec.Containers)
	if len(containers) == 0 {
		return false
	}
	for _, c := range containers {
		for _, name := range []corev1.ResourceName{corev1.ResourceCPU, corev1.ResourceMemory} {
			l, ok := c.Resources.Limits[name]
			if !ok || l.IsZero() {
				return false
			}
			if r, ok := c.Resources.Requests[name]; ok && r.Cmp(l) != 0 {
				return false
			}
		}
	}
	return true
}

// addMissing appends item unless list has an element with its key.
func addMissing[T any](list []T, item T, key func(T) string) []T {
	if slices.ContainsFunc(list, func(e T) bool { return key(e) == key(item) }) {
		return list
	}
	return append(list, item)
}

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
	// AdminAddress is the sidecar's loopback admin endpoint.
	AdminAddress = "127.0.0.1:8081"
	// BinaryPath is the kubevirt-imds binary in the image.
	BinaryPath = "/kubevirt-imds"
	// defaultTokenExpiration is the CRD's default for expirationSeconds.
	defaultTokenExpiration = 3600
)

// SidecarOptions configure the injected sidecar.
type SidecarOptions struct {
	// Image is the kubevirt-imds image.
	Image string
	// ImagePullPolicy of the sidecar; empty leaves the API server's default.
	ImagePullPolicy corev1.PullPolicy
	// Resources of the sidecar; zero takes DefaultSidecarResources.
	Resources corev1.ResourceRequirements
}

// DefaultSidecarResources suit one guest's metadata traffic: the sidecar
// idles at a few MiB and is rate-limited per guest. Requests equal limits for
// memory so that the sidecar does not change the Pod's QoS class reasoning
// beyond what KubeVirt computes for its own containers.
func DefaultSidecarResources() corev1.ResourceRequirements {
	return corev1.ResourceRequirements{
		Requests: corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("10m"), corev1.ResourceMemory: resource.MustParse("32Mi")},
		Limits:   corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("200m"), corev1.ResourceMemory: resource.MustParse("64Mi")},
	}
}

// PodInjector adds the metadata sidecar to the virt-launcher Pods of VMIs a
// MetadataService serves. It never fails a Pod's creation: whatever goes
// wrong, it leaves the Pod alone and the controller reports the VMI as
// running without its sidecar.
type PodInjector struct {
	// Reader reads VMIs, MetadataServices and Secrets: the API server
	// itself (SetupWithManager says why).
	Reader  client.Reader
	Sidecar SidecarOptions
	// PayloadWait is how long admission may wait for the payload Secret to
	// appear. The controller renders it on the same VMI event
	// on which virt-controller creates the Pod, so it usually lags by
	// milliseconds; the wait is bounded so that a slow or absent operator
	// delays a VM's start by at most this, and never stops it.
	PayloadWait time.Duration
}

// DefaultPayloadWait is PodInjector.PayloadWait as the manager sets it: well
// inside the webhook's 5 s timeout.
const DefaultPayloadWait = 2 * time.Second

// payloadPoll is how often the API server is asked for the payload Secret.
const payloadPoll = 50 * time.Millisecond

// Default mutates a virt-launcher Pod on CREATE.
func (p *PodInjector) Default(ctx context.Context, pod *corev1.Pod) error {
	if pod.Labels[kubevirtv1.AppLabel] != controllers.LauncherAppValue {
		return nil
	}
	namespace := admittedNamespace(ctx, pod)
	log := logf.FromContext(ctx).WithValues("namespace", namespace, "vmi", pod.Annotations[kubevirtv1.DomainAnnotation])
	vmi, mds, err := p.servedInstance(ctx, namespace, pod)
	if err != nil {
		// Denying would stop the VM; the controller reports the missing sidecar.
		log.Error(err, "not injecting the metadata sidecar")
		return nil
	}
	if mds == nil {
		return nil
	}
	ready, why, err := p.waitPayload(ctx, namespace, vmi)
	if err != nil {
		log.Error(err, "not injecting the metadata sidecar")
		return nil
	}
	if !ready {
		log.Info("not injecting the metadata sidecar", "reason", why)
		return nil
	}
	InjectSidecar(pod, vmi, mds, p.Sidecar)
	return nil
}

// servedInstance finds the Pod's VMI, by KubeVirt's domain annotation and
// checked against the created-by UID label, and the MetadataService serving
// it; mds is nil when none does or the Pod is not a VMI's.
func (p *PodInjector) servedInstance(ctx context.Context, namespace string, pod *corev1.Pod) (*kubevirtv1.VirtualMachineInstance, *imdsv1alpha1.MetadataService, error) {
	name, uid := pod.Annotations[kubevirtv1.DomainAnnotation], pod.Labels[kubevirtv1.CreatedByLabel]
	if name == "" || uid == "" {
		return nil, nil, nil
	}
	var vmi kubevirtv1.VirtualMachineInstance
	if err := p.Reader.Get(ctx, types.NamespacedName{Namespace: namespace, Name: name}, &vmi); err != nil {
		if apierrors.IsNotFound(err) {
			return nil, nil, nil
		}
		return nil, nil, fmt.Errorf("reading VirtualMachineInstance %s: %w", name, err)
	}
	if string(vmi.UID) != uid {
		// A VMI of the same name, not the one this Pod was made for.
		return nil, nil, nil
	}
	var services imdsv1alpha1.MetadataServiceList
	if err := p.Reader.List(ctx, &services, client.InNamespace(namespace)); err != nil {
		return nil, nil, fmt.Errorf("listing MetadataServices: %w", err)
	}
	return &vmi, controllers.ServingMetadataService(services.Items, vmi.Labels), nil
}

// waitPayload polls payloadReady for up to PayloadWait.
func (p *PodInjector) waitPayload(ctx context.Context, namespace string, vmi *kubevirtv1.VirtualMachineInstance) (bool, string, error) {
	ready, why, err := p.payloadReady(ctx, namespace, vmi)
	if ready || err != nil || p.PayloadWait <= 0 {
		return ready, why, err
	}
	ctx, cancel := context.WithTimeout(ctx, p.PayloadWait)
	defer cancel()
	tick := time.NewTicker(payloadPoll)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return false, why + fmt.Sprintf(" (waited %s)", p.PayloadWait), nil
		case <-tick.C:
		}
		if ready, why, err = p.payloadReady(ctx, namespace, vmi); ready || err != nil {
			return ready, why, err
		}
	}
}

// payloadReady reports whether the VMI's payload Secret exists and was
// rendered for this very VMI. Only then is the sidecar injected: it mounts
// the Secret non-optionally, so the kubelet would hold the Pod (and the VM)
// until the Secret exists, and a Secret left over from a former VMI of the
// same name would tell the guest another instance's identity.
func (p *PodInjector) payloadReady(ctx context.Context, namespace string, vmi *kubevirtv1.VirtualMachineInstance) (bool, string, error) {
	var s corev1.Secret
	key := types.NamespacedName{Namespace: namespace, Name: imdsv1alpha1.PayloadSecretName(vmi.Name)}
	if err := p.Reader.Get(ctx, key, &s); err != nil {
		if apierrors.IsNotFound(err) {
			return false, "the payload Secret does not exist yet", nil
		}
		return false, "", fmt.Errorf("reading the payload Secret %s: %w", key.Name, err)
	}
	switch {
	case s.Type != controllers.PayloadSecretType:
		return false, fmt.Sprintf("Secret %s is not a payload Secret (type %q)", s.Name, s.Type), nil
	case s.Labels[imdsv1alpha1.LabelInstanceUID] != string(vmi.UID):
		return false, "the payload Secret was rendered for another instance of the same name", nil
	case len(s.Data[payload.SecretKey]) == 0:
		return false, "the payload Secret holds no payload", nil
	}
	return true, "", nil
}

// InjectSidecar adds the sidecar, the payload volume and one token volume per
// audience of mds to pod. It works by name and keeps what is already there,
// so a second pass changes nothing, even after the API server has defaulted
// the fields of the first.
func InjectSidecar(pod *corev1.Pod, vmi *kubevirtv1.VirtualMachineInstance, mds *imdsv1alpha1.MetadataService, o SidecarOptions) {
	volumes := []corev1.Volume{{
		Name: PayloadVolumeName,
		VolumeSource: corev1.VolumeSource{Secret: &corev1.SecretVolumeSource{
			SecretName: imdsv1alpha1.PayloadSecretName(vmi.Name),
			// Not optional: the kubelet waits for the Secret rather than
			// start a sidecar that would serve nothing.
			Optional: new(false),
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
	pod.Spec.InitContainers = addMissing(pod.Spec.InitContainers, sidecarContainer(o, mounts),
		func(c corev1.Container) string { return c.Name })
}

// sidecarContainer is the sidecar, run as a native sidecar (an init container
// that keeps running) so that it is up before the compute container starts
// the VM, and stops after it.
func sidecarContainer(o SidecarOptions, mounts []corev1.VolumeMount) corev1.Container {
	res := o.Resources
	if len(res.Requests) == 0 && len(res.Limits) == 0 {
		res = DefaultSidecarResources()
	}
	probe := []string{BinaryPath, "probe", "http://" + AdminAddress + "/healthz"}
	return corev1.Container{
		Name:            controllers.SidecarContainerName,
		Image:           o.Image,
		ImagePullPolicy: o.ImagePullPolicy,
		Command:         []string{BinaryPath},
		Args: []string{"sidecar",
			"--payload-dir=" + PayloadDir,
			"--token-dir=" + TokenDir,
			"--admin-address=" + AdminAddress,
		},
		// The Go runtime sizes itself from the container's limits, which the
		// downward API passes in.
		Env: []corev1.EnvVar{
			{Name: "GOMEMLIMIT", ValueFrom: &corev1.EnvVarSource{ResourceFieldRef: &corev1.ResourceFieldSelector{
				Resource: "limits.memory", Divisor: resource.MustParse("1")}}},
			{Name: "GOMAXPROCS", ValueFrom: &corev1.EnvVarSource{ResourceFieldRef: &corev1.ResourceFieldSelector{
				Resource: "limits.cpu", Divisor: resource.MustParse("1")}}},
		},
		RestartPolicy: new(corev1.ContainerRestartPolicyAlways),
		Resources:     res,
		VolumeMounts:  mounts,
		// No startupProbe and no readinessProbe: the sidecar becomes ready
		// only once KubeVirt has plumbed the VM's bridge, which happens after
		// the Pod runs; either probe would then hold the Pod back
		// (docs/webhooks.md). Liveness only asks whether the process answers.
		LivenessProbe: &corev1.Probe{
			ProbeHandler:     corev1.ProbeHandler{Exec: &corev1.ExecAction{Command: probe}},
			PeriodSeconds:    10,
			TimeoutSeconds:   3,
			FailureThreshold: 3,
		},
		SecurityContext: &corev1.SecurityContext{
			// Root, but only with the capabilities below: they take effect
			// for UID 0 only, and no_new_privs rules out file capabilities.
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
		},
		TerminationMessagePolicy: corev1.TerminationMessageFallbackToLogsOnError,
	}
}

// addMissing appends item unless list has an element with its key.
func addMissing[T any](list []T, item T, key func(T) string) []T {
	if slices.ContainsFunc(list, func(e T) bool { return key(e) == key(item) }) {
		return list
	}
	return append(list, item)
}

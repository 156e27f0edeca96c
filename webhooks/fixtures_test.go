package webhooks_test

import (
	"context"

	. "github.com/onsi/gomega"

	corev1 "k8s.io/api/core/v1"
	eventsv1 "k8s.io/api/events/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	kubevirtv1 "kubevirt.io/api/core/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	imdsv1alpha1 "github.com/kubevirt-imds/kubevirt-imds/api/v1alpha1"
	"github.com/kubevirt-imds/kubevirt-imds/test/fixtures"
)

// newVMI and newMDS keep the specs short.
var (
	newVMI = fixtures.VMI
	newMDS = fixtures.MetadataService
)

// launcherPod is the virt-launcher Pod of vmi as virt-controller builds it
// (kubevirt v1.8.0 pkg/virt-controller/services/template.go: podLabels,
// generatePodAnnotations, renderLaunchManifest), for a container-disk VM.
func launcherPod(vmi *kubevirtv1.VirtualMachineInstance) *corev1.Pod {
	labels := map[string]string{}
	for k, v := range vmi.Labels {
		labels[k] = v
	}
	labels[kubevirtv1.AppLabel] = "virt-launcher"
	labels[kubevirtv1.CreatedByLabel] = string(vmi.UID)
	labels[kubevirtv1.DeprecatedVirtualMachineNameLabel] = vmi.Name
	labels[kubevirtv1.VirtualMachineInstanceIDLabel] = vmi.Name
	emptyDir := func(name string) corev1.Volume {
		return corev1.Volume{Name: name, VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}}
	}
	user := int64(107)
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{
			GenerateName: "virt-launcher-" + vmi.Name + "-",
			Namespace:    vmi.Namespace,
			Labels:       labels,
			Annotations: map[string]string{
				kubevirtv1.DomainAnnotation:                          vmi.Name,
				"kubectl.kubernetes.io/default-container":            "compute",
				"descheduler.alpha.kubernetes.io/request-evict-only": "",
			},
			OwnerReferences: []metav1.OwnerReference{*metav1.NewControllerRef(vmi, kubevirtv1.VirtualMachineInstanceGroupVersionKind)},
		},
		Spec: corev1.PodSpec{
			Hostname:                      vmi.Name,
			RestartPolicy:                 corev1.RestartPolicyNever,
			TerminationGracePeriodSeconds: ptr(int64(210)),
			AutomountServiceAccountToken:  ptr(false),
			EnableServiceLinks:            ptr(false),
			ReadinessGates:                []corev1.PodReadinessGate{{ConditionType: kubevirtv1.VirtualMachineUnpaused}},
			SecurityContext: &corev1.PodSecurityContext{
				RunAsUser: &user, RunAsGroup: &user, FSGroup: &user, RunAsNonRoot: ptr(true),
			},
			InitContainers: []corev1.Container{{
				Name:         "container-disk-binary",
				Image:        "quay.io/kubevirt/virt-launcher:v1.8.0",
				Command:      []string{"/usr/bin/cp", "--preserve=all", "/usr/bin/container-disk", "/init/usr/bin/container-disk"},
				VolumeMounts: []corev1.VolumeMount{{Name: "virt-bin-share-dir", MountPath: "/init/usr/bin"}},
			}},
			Containers: []corev1.Container{{
				Name:    "compute",
				Image:   "quay.io/kubevirt/virt-launcher:v1.8.0",
				Command: []string{"/usr/bin/virt-launcher-monitor", "--qemu-timeout", "321s", "--name", vmi.Name, "--uid", string(vmi.UID), "--namespace", vmi.Namespace},
				SecurityContext: &corev1.SecurityContext{
					RunAsUser: &user, RunAsNonRoot: ptr(true), AllowPrivilegeEscalation: ptr(false),
					Capabilities: &corev1.Capabilities{Add: []corev1.Capability{"NET_BIND_SERVICE"}, Drop: []corev1.Capability{"ALL"}},
				},
				Resources: corev1.ResourceRequirements{Requests: corev1.ResourceList{
					corev1.ResourceCPU: resource.MustParse("100m"), corev1.ResourceMemory: resource.MustParse("400Mi")}},
				VolumeMounts: []corev1.VolumeMount{
					{Name: "private", MountPath: "/var/run/kubevirt-private"},
					{Name: "public", MountPath: "/var/run/kubevirt"},
					{Name: "ephemeral-disks", MountPath: "/var/run/kubevirt-ephemeral-disks"},
					{Name: "container-disks", MountPath: "/var/run/kubevirt/container-disks"},
					{Name: "libvirt-runtime", MountPath: "/var/run/libvirt"},
					{Name: "sockets", MountPath: "/var/run/kubevirt/sockets"},
				},
			}},
			Volumes: []corev1.Volume{
				emptyDir("private"), emptyDir("public"), emptyDir("sockets"), emptyDir("virt-bin-share-dir"),
				emptyDir("libvirt-runtime"), emptyDir("ephemeral-disks"), emptyDir("container-disks"),
			},
		},
	}
}

func create(ctx context.Context, objs ...client.Object) {
	for _, o := range objs {
		ExpectWithOffset(1, k8sClient.Create(ctx, o)).To(Succeed())
	}
}

// waitReconciled waits until the controller has reconciled mds's current
// generation: the manager's cache then holds it, which the webhooks read.
func waitReconciled(ctx context.Context, mds *imdsv1alpha1.MetadataService) {
	EventuallyWithOffset(1, func(g Gomega) {
		var m imdsv1alpha1.MetadataService
		g.Expect(k8sClient.Get(ctx, client.ObjectKeyFromObject(mds), &m)).To(Succeed())
		g.Expect(m.Status.ObservedGeneration).To(Equal(m.Generation))
	}).Should(Succeed())
}

// waitPayload waits for the payload Secret of vmi.
func waitPayload(ctx context.Context, vmi *kubevirtv1.VirtualMachineInstance) {
	EventuallyWithOffset(1, func() error {
		return k8sClient.Get(ctx, types.NamespacedName{Namespace: vmi.Namespace, Name: imdsv1alpha1.PayloadSecretName(vmi.Name)}, &corev1.Secret{})
	}).Should(Succeed())
}

// condition returns a condition of a MetadataService, or nil.
func condition(ctx context.Context, namespace, name, t string) *metav1.Condition {
	var m imdsv1alpha1.MetadataService
	ExpectWithOffset(1, k8sClient.Get(ctx, types.NamespacedName{Namespace: namespace, Name: name}, &m)).To(Succeed())
	return meta.FindStatusCondition(m.Status.Conditions, t)
}

// eventsFor lists the events.k8s.io Events regarding an object by name.
func eventsFor(ctx context.Context, namespace, name string) []eventsv1.Event {
	var list eventsv1.EventList
	ExpectWithOffset(1, k8sClient.List(ctx, &list, client.InNamespace(namespace))).To(Succeed())
	var out []eventsv1.Event
	for _, e := range list.Items {
		if e.Regarding.Name == name {
			out = append(out, e)
		}
	}
	return out
}

func reasons(events []eventsv1.Event) []string {
	out := make([]string, 0, len(events))
	for _, e := range events {
		out = append(out, e.Reason)
	}
	return out
}

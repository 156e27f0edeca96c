package controllers

import (
	"context"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	. "github.com/onsi/gomega/gstruct"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	kubevirtv1 "kubevirt.io/api/core/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/kubevirt-imds/kubevirt-imds/api/payload"
	imdsv1alpha1 "github.com/kubevirt-imds/kubevirt-imds/api/v1alpha1"
	"github.com/kubevirt-imds/kubevirt-imds/test/fixtures"
)

var _ = Describe("The instances a MetadataService serves", func() {
	var (
		ctx context.Context
		ns  string
	)
	BeforeEach(func() {
		ctx = context.Background()
		ns = newNamespace(ctx)
	})

	It("reports a VMI it cannot serve in status and with an Event, never as SidecarMissing", func() {
		hpc := newVMI(ns, "hpc", nil)
		hpc.Spec.Domain.Devices.AutoattachPodInterface = ptr(false)
		hpc.Spec.Domain.Devices.Interfaces = []kubevirtv1.Interface{{
			Name: "fast", InterfaceBindingMethod: kubevirtv1.InterfaceBindingMethod{SRIOV: &kubevirtv1.InterfaceSRIOV{}}}}
		hpc.Spec.Networks = []kubevirtv1.Network{{
			Name: "fast", NetworkSource: kubevirtv1.NetworkSource{Multus: &kubevirtv1.MultusNetwork{NetworkName: "sriov-net"}}}}
		web := newVMI(ns, "web", nil)
		create(ctx, hpc, web)
		create(ctx, newMDS(ns, "mds", imdsv1alpha1.MetadataServiceSpec{GuestDiscovery: imdsv1alpha1.GuestDiscoveryNone}))
		// Both launcher Pods as the Pod webhook leaves them: web's injected,
		// hpc's untouched.
		create(ctx, withSidecar(fixtures.LauncherPod(web), "mds"), fixtures.LauncherPod(hpc))

		Eventually(func(g Gomega) {
			m := getMDS(ctx, ns, "mds")
			g.Expect(m.Status.UnservableInstances).To(ConsistOf(MatchFields(IgnoreExtras, Fields{
				"Name":    Equal("hpc"),
				"Reason":  Equal(imdsv1alpha1.ReasonNoPodNetwork),
				"Message": ContainSubstring(`"fast" uses the sriov binding`),
			})))
			c := condition(m, imdsv1alpha1.ConditionInstancesConfigured)
			g.Expect(c.Status).To(Equal(metav1.ConditionFalse))
			g.Expect(c.Reason).To(Equal(imdsv1alpha1.ReasonNoPodNetwork))
			g.Expect(c.Message).To(ContainSubstring("hpc (NoServableInterface)"))
			g.Expect(c.Message).NotTo(ContainSubstring("without the metadata sidecar (restart"))
			g.Expect(condition(m, imdsv1alpha1.ConditionReady).Status).To(Equal(metav1.ConditionTrue))
			g.Expect(m.Status.SelectedInstances).To(BeEquivalentTo(2))
		}).Should(Succeed())
		Eventually(func() []corev1.Event { return eventsAbout(ctx, ns, "hpc") }).Should(ContainElement(MatchFields(IgnoreExtras, Fields{
			"Type":    Equal(corev1.EventTypeWarning),
			"Reason":  Equal(imdsv1alpha1.ReasonNoPodNetwork),
			"Message": SatisfyAll(ContainSubstring("VirtualMachineInstance hpc"), ContainSubstring("gets no metadata sidecar")),
		})))
		Expect(warningEvents(ctx, ns)).NotTo(ContainElement(imdsv1alpha1.ReasonSidecarMissing))

		By("its payload is written all the same, for a launcher Pod that does get the sidecar")
		doc, err := payloadOf(ctx, ns, "hpc")
		Expect(err).NotTo(HaveOccurred())
		Expect(doc.Serve).To(Equal(payload.Serve{Interface: "fast"}))

		By("a servable VMI no longer listed once the unservable one goes")
		Expect(k8sClient.Delete(ctx, hpc)).To(Succeed())
		Eventually(func(g Gomega) {
			m := getMDS(ctx, ns, "mds")
			g.Expect(m.Status.UnservableInstances).To(BeEmpty())
			g.Expect(condition(m, imdsv1alpha1.ConditionInstancesConfigured).Status).To(Equal(metav1.ConditionTrue))
		}).Should(Succeed())
	})

	It("judges each of the two launcher Pods of a live migration, and serves the same payload from either", func() {
		vmi := newVMI(ns, "vm", nil)
		vmi.Spec.Domain.Firmware = &kubevirtv1.Firmware{UUID: "5c0a5e2f-7d6b-4a77-9d3f-2f8e8a1d6b01"}
		// KubeVirt's VMI CRD has no status subresource: the status is
		// stored as written, as virt-handler writes it.
		vmi.Status.Interfaces = []kubevirtv1.VirtualMachineInstanceNetworkInterface{{Name: "default", MAC: "02:6a:00:00:00:01"}}
		create(ctx, vmi)
		create(ctx, newMDS(ns, "mds", imdsv1alpha1.MetadataServiceSpec{GuestDiscovery: imdsv1alpha1.GuestDiscoveryNone}))

		var secret corev1.Secret
		key := types.NamespacedName{Namespace: ns, Name: imdsv1alpha1.PayloadSecretName(vmi.Name)}
		Eventually(func() error { return k8sClient.Get(ctx, key, &secret) }).Should(Succeed())
		written := secret.Data[payload.SecretKey]
		doc, err := payload.Parse(written)
		Expect(err).NotTo(HaveOccurred())
		Expect(doc.Instance.ID).To(Equal("5c0a5e2f-7d6b-4a77-9d3f-2f8e8a1d6b01"))
		Expect(doc.Instance.UID).To(Equal(string(vmi.UID)), "the sidecar's MAC seed")
		Expect(doc.Network.Interfaces[0].MACAddress).To(Equal("02:6a:00:00:00:01"))
		// unchanged checks that the payload, and so the served instance-id,
		// MAC and MAC seed, does not depend on which launcher Pods exist.
		unchanged := func() {
			GinkgoHelper()
			var now corev1.Secret
			Expect(k8sClient.Get(ctx, key, &now)).To(Succeed())
			Expect(now.Data[payload.SecretKey]).To(Equal(written))
			Expect(now.ResourceVersion).To(Equal(secret.ResourceVersion), "the payload Secret was rewritten")
		}
		configured := func(status metav1.ConditionStatus, reason string) {
			GinkgoHelper()
			Eventually(func(g Gomega) {
				c := condition(getMDS(ctx, ns, "mds"), imdsv1alpha1.ConditionInstancesConfigured)
				g.Expect(c.Status).To(Equal(status))
				g.Expect(c.Reason).To(Equal(reason))
			}).Should(Succeed())
		}

		By("the VM started before its service: the source Pod lacks the sidecar")
		source := fixtures.LauncherPod(vmi)
		create(ctx, source)
		configured(metav1.ConditionFalse, imdsv1alpha1.ReasonSidecarMissing)
		Eventually(func() []corev1.Event { return eventsAbout(ctx, ns, vmi.Name) }).Should(ContainElement(MatchFields(IgnoreExtras, Fields{
			"Reason":  Equal(imdsv1alpha1.ReasonSidecarMissing),
			"Message": SatisfyAll(ContainSubstring(source.Name), ContainSubstring("restart or live-migrate")),
		})))

		By("a live migration's target Pod gets the sidecar; the source still runs the VM")
		target := withSidecar(fixtures.LauncherPod(vmi, fixtures.MigrationTarget("job-1")), "mds")
		create(ctx, target)
		Expect(target.Labels).To(HaveKeyWithValue(kubevirtv1.CreatedByLabel, string(vmi.UID)))
		Expect(source.Labels).To(HaveKeyWithValue(kubevirtv1.CreatedByLabel, string(vmi.UID)))
		configured(metav1.ConditionFalse, imdsv1alpha1.ReasonSidecarMissing)

		By("the migration completes and the source Pod ends")
		source.Status.Phase = corev1.PodSucceeded
		Expect(k8sClient.Status().Update(ctx, source)).To(Succeed())
		configured(metav1.ConditionTrue, imdsv1alpha1.ReasonInstancesConfigured)
		unchanged()

		By("a second migration whose target Pod missed the sidecar is reported for that Pod")
		setMigrationState(ctx, vmi, &kubevirtv1.VirtualMachineInstanceMigrationState{
			MigrationUID: "job-1", SourcePod: source.Name, TargetPod: target.Name, Completed: true})
		second := fixtures.LauncherPod(vmi, fixtures.MigrationTarget("job-2"))
		create(ctx, second)
		configured(metav1.ConditionFalse, imdsv1alpha1.ReasonSidecarMissing)
		Eventually(func() []corev1.Event { return eventsAbout(ctx, ns, vmi.Name) }).Should(ContainElement(MatchFields(IgnoreExtras, Fields{
			"Reason": Equal(imdsv1alpha1.ReasonSidecarMissing),
			"Message": SatisfyAll(ContainSubstring(second.Name), ContainSubstring("the target of live migration job-2"),
				ContainSubstring("once the migration completes")),
		})))

		By("that migration fails and its target Pod ends: the VM runs on, served")
		second.Status.Phase = corev1.PodFailed
		Expect(k8sClient.Status().Update(ctx, second)).To(Succeed())
		configured(metav1.ConditionTrue, imdsv1alpha1.ReasonInstancesConfigured)
		unchanged()
	})
})

// withSidecar adds the metadata sidecar to a launcher Pod as the Pod webhook
// does (only its name matters to the controller).
func withSidecar(pod *corev1.Pod, service string) *corev1.Pod {
	pod.Spec.InitContainers = append(pod.Spec.InitContainers, corev1.Container{
		Name: SidecarContainerName, Image: "kubevirt-imds:dev", RestartPolicy: ptr(corev1.ContainerRestartPolicyAlways)})
	// The payload volume as the Pod webhook mounts it: the instance's
	// Secret and its service's shared one.
	pod.Spec.Volumes = append(pod.Spec.Volumes, corev1.Volume{Name: "imds-payload", VolumeSource: corev1.VolumeSource{
		Projected: &corev1.ProjectedVolumeSource{Sources: []corev1.VolumeProjection{
			{Secret: &corev1.SecretProjection{LocalObjectReference: corev1.LocalObjectReference{
				Name: imdsv1alpha1.PayloadSecretName(pod.Labels[kubevirtv1.DeprecatedVirtualMachineNameLabel])}}},
			{Secret: &corev1.SecretProjection{LocalObjectReference: corev1.LocalObjectReference{
				Name: imdsv1alpha1.SharedPayloadSecretName(service)}, Optional: ptr(true)}},
		}},
	}})
	return pod
}

// setMigrationState writes the VMI's migration state as virt-controller does.
func setMigrationState(ctx context.Context, vmi *kubevirtv1.VirtualMachineInstance, ms *kubevirtv1.VirtualMachineInstanceMigrationState) {
	ExpectWithOffset(1, k8sClient.Get(ctx, client.ObjectKeyFromObject(vmi), vmi)).To(Succeed())
	vmi.Status.MigrationState = ms
	ExpectWithOffset(1, k8sClient.Update(ctx, vmi)).To(Succeed())
}

// eventsAbout lists the Events regarding the object name in namespace.
func eventsAbout(ctx context.Context, namespace, name string) []corev1.Event {
	var list corev1.EventList
	if err := k8sClient.List(ctx, &list, client.InNamespace(namespace)); err != nil {
		return nil
	}
	var out []corev1.Event
	for _, e := range list.Items {
		if e.InvolvedObject.Name == name {
			out = append(out, e)
		}
	}
	return out
}

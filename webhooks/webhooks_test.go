package webhooks_test

import (
	"context"
	"encoding/json"
	"strings"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"

	admissionv1 "k8s.io/api/admission/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/webhook/admission"

	kubevirtv1 "kubevirt.io/api/core/v1"

	"github.com/kubevirt-imds/kubevirt-imds/api/payload"
	imdsv1alpha1 "github.com/kubevirt-imds/kubevirt-imds/api/v1alpha1"
	"github.com/kubevirt-imds/kubevirt-imds/controllers"
	"github.com/kubevirt-imds/kubevirt-imds/webhooks"
)

// sidecarOf returns the injected sidecar, or nil.
func sidecarOf(pod *corev1.Pod) *corev1.Container {
	for i := range pod.Spec.InitContainers {
		if pod.Spec.InitContainers[i].Name == controllers.SidecarContainerName {
			return &pod.Spec.InitContainers[i]
		}
	}
	return nil
}

func volumeOf(pod *corev1.Pod, name string) *corev1.Volume {
	for i := range pod.Spec.Volumes {
		if pod.Spec.Volumes[i].Name == name {
			return &pod.Spec.Volumes[i]
		}
	}
	return nil
}

var _ = Describe("Pod webhook", func() {
	var (
		ctx context.Context
		ns  string
	)
	BeforeEach(func() {
		ctx = context.Background()
		ns = newNamespace(ctx)
	})

	It("injects the sidecar into the virt-launcher Pod of a served VMI, once", func() {
		serve(ctx, ns, imdsv1alpha1.MetadataServiceSpec{
			Selector: metav1.LabelSelector{MatchLabels: map[string]string{"app": "web"}},
			Identity: &imdsv1alpha1.IdentitySpec{ServiceAccountTokens: []imdsv1alpha1.ServiceAccountTokenSpec{
				{Audience: "vault", ExpirationSeconds: 7200}, {Audience: "sts.example.com"},
			}},
		})
		vmi := newVMI(ns, "vm1", map[string]string{"app": "web"})
		create(ctx, vmi)
		waitPayload(ctx, vmi)

		pod := launcherPod(vmi)
		before := pod.DeepCopy()
		create(ctx, pod)

		By("the sidecar container, after KubeVirt's own init containers")
		c := sidecarOf(pod)
		Expect(c).NotTo(BeNil())
		Expect(containerNames(pod.Spec.InitContainers)).To(Equal(append(containerNames(before.Spec.InitContainers), controllers.SidecarContainerName)),
			"KubeVirt's init containers keep their order")
		Expect(pod.Spec.InitContainers[0].Name).To(Equal("guest-console-log"))
		Expect(c.Image).To(Equal(sidecarImage))
		Expect(c.Command).To(Equal([]string{"/kubevirt-imds-sidecar"}))
		Expect(c.Args).To(Equal([]string{"serve", "--payload-dir=" + webhooks.PayloadDir, "--token-dir=" + webhooks.TokenDir, "--admin-address=127.0.0.2:8081",
			"--network-setup=node", "--listen-port=8775", "--bridge=k6t-eth0", "--mac-seed=" + string(vmi.UID), "--instance=" + vmi.Namespace + "/" + vmi.Name}))
		Expect(c.RestartPolicy).To(HaveValue(Equal(corev1.ContainerRestartPolicyAlways)), "a native sidecar")
		Expect(c.StartupProbe).To(BeNil())
		Expect(c.ReadinessProbe).To(BeNil())
		Expect(c.LivenessProbe).To(BeNil(), "the sidecar checks its own liveness: no exec every ten seconds")
		By("requests below limits in a Burstable Pod")
		Expect(c.Resources.Requests.Cpu().Cmp(resource.MustParse("10m"))).To(Equal(0))
		Expect(c.Resources.Requests.Memory().Cmp(resource.MustParse("16Mi"))).To(Equal(0))
		Expect(c.Resources.Limits.Cpu().Cmp(resource.MustParse("200m"))).To(Equal(0))
		Expect(c.Resources.Limits.Memory().Cmp(resource.MustParse("64Mi"))).To(Equal(0))
		Expect(pod.Status.QOSClass).To(Equal(corev1.PodQOSBurstable))
		Expect(c.Env).To(HaveLen(2))
		Expect(c.Env[0].ValueFrom.ResourceFieldRef.Resource).To(Equal("limits.memory"))

		By("its security context: unprivileged, as the Pod's own user")
		sc := c.SecurityContext
		Expect(sc.Privileged).To(HaveValue(BeFalse()))
		Expect(sc.AllowPrivilegeEscalation).To(HaveValue(BeFalse()))
		Expect(sc.ReadOnlyRootFilesystem).To(HaveValue(BeTrue()))
		Expect(sc.RunAsNonRoot).To(HaveValue(BeTrue()))
		Expect(sc.RunAsUser).To(BeNil(), "the Pod's runAsUser (107) applies")
		Expect(sc.RunAsGroup).To(BeNil(), "the Pod's runAsGroup (107) applies")
		Expect(sc.Capabilities.Drop).To(Equal([]corev1.Capability{"ALL"}))
		Expect(sc.Capabilities.Add).To(BeEmpty())
		Expect(sc.SeccompProfile.Type).To(Equal(corev1.SeccompProfileTypeRuntimeDefault))

		By("the payload volume, mounted read-only: the instance's Secret not optional, its service's shared one optional")
		v := volumeOf(pod, webhooks.PayloadVolumeName)
		Expect(v).NotTo(BeNil())
		Expect(v.Projected.Sources).To(HaveLen(2))
		Expect(v.Projected.Sources[0].Secret.Name).To(Equal(imdsv1alpha1.PayloadSecretName("vm1")))
		Expect(v.Projected.Sources[0].Secret.Optional).To(HaveValue(BeFalse()))
		Expect(v.Projected.Sources[1].Secret.Name).To(Equal(imdsv1alpha1.SharedPayloadSecretName("web")))
		Expect(v.Projected.Sources[1].Secret.Optional).To(HaveValue(BeTrue()))
		Expect(c.VolumeMounts).To(ContainElement(corev1.VolumeMount{Name: webhooks.PayloadVolumeName, MountPath: webhooks.PayloadDir, ReadOnly: true}))

		By("one projected token volume per audience, at <tokenDir>/<TokenPath>")
		for aud, exp := range map[string]int64{"vault": 7200, "sts.example.com": 3600} {
			name := payload.TokenVolumeName(aud)
			v := volumeOf(pod, name)
			Expect(v).NotTo(BeNil(), aud)
			Expect(v.Projected.Sources).To(HaveLen(1))
			t := v.Projected.Sources[0].ServiceAccountToken
			Expect(t.Audience).To(Equal(aud))
			Expect(t.ExpirationSeconds).To(HaveValue(Equal(exp)))
			Expect(t.Path).To(Equal(payload.TokenFileName))
			Expect(c.VolumeMounts).To(ContainElement(corev1.VolumeMount{Name: name, MountPath: webhooks.TokenDir + "/" + name, ReadOnly: true}))
			Expect(webhooks.TokenDir + "/" + name + "/" + payload.TokenFileName).To(Equal(webhooks.TokenDir + "/" + payload.TokenPath(aud)))
		}
		Expect(pod.Spec.Volumes).To(HaveLen(len(before.Spec.Volumes) + 3))

		By("the rest of the Pod as virt-controller made it")
		Expect(containerNames(pod.Spec.Containers)).To(Equal([]string{"compute", "volumerootdisk"}))
		Expect(pod.Spec.Containers[0].Command).To(Equal(before.Spec.Containers[0].Command))
		Expect(pod.Labels).To(Equal(before.Labels))
		Expect(pod.Spec.ReadinessGates).To(Equal(before.Spec.ReadinessGates))

		By("a second admission pass changes nothing")
		resp := admitPod(ctx, pod)
		Expect(resp.Allowed).To(BeTrue())
		Expect(resp.Patches).To(BeEmpty())
		Expect(resp.PatchType).To(BeNil())

		By("the controller sees the sidecar")
		Eventually(func() string {
			return condition(ctx, ns, "web", imdsv1alpha1.ConditionInstancesConfigured).Reason
		}).Should(Equal(imdsv1alpha1.ReasonInstancesConfigured))
	})

	It("serves a Pod that arrives before the controller has rendered its payload", func() {
		serve(ctx, ns, imdsv1alpha1.MetadataServiceSpec{})
		// As virt-controller does: the Pod follows the VMI at once, racing
		// the controller's rendering of the payload.
		vmi := newVMI(ns, "vm1", nil)
		create(ctx, vmi)
		pod := launcherPod(vmi)
		create(ctx, pod)
		Expect(sidecarOf(pod)).NotTo(BeNil())
		Expect(volumeOf(pod, webhooks.PayloadVolumeName)).NotTo(BeNil())
	})

	It("refers the instances it admits ahead of the controller to their service's shared document, which it stores", func() {
		// A service and its VMs applied together: the Pods are admitted
		// before the controller has reconciled the service at all.
		stopManager()
		startWebhooksAlone()
		DeferCleanup(func() {
			stopManager()
			startManager()
		})
		const userData = "#cloud-config\nhostname: shared\n"
		mds := newMDS(ns, "web", imdsv1alpha1.MetadataServiceSpec{UserData: &imdsv1alpha1.DataSource{Inline: ptr(userData)}})
		create(ctx, mds)
		for _, name := range []string{"vm1", "vm2", "vm3"} {
			vmi := newVMI(ns, name, nil)
			create(ctx, vmi)
			pod := launcherPod(vmi)
			create(ctx, pod)
			Expect(sidecarOf(pod)).NotTo(BeNil(), name)
		}
		for _, name := range []string{"vm1", "vm2", "vm3"} {
			// Written once the admission has returned.
			Eventually(func(g Gomega) {
				var s corev1.Secret
				g.Expect(k8sClient.Get(ctx, client.ObjectKey{Namespace: ns, Name: imdsv1alpha1.PayloadSecretName(name)}, &s)).To(Succeed())
				doc, err := payload.Parse(s.Data[payload.SecretKey])
				g.Expect(err).NotTo(HaveOccurred())
				g.Expect(doc.Shared).To(Equal(&payload.SharedRef{MetadataService: "web"}), "%s refers to the shared document", name)
				g.Expect(doc.UserData).To(BeEmpty(), "%s holds no copy", name)
			}).Should(Succeed())
		}

		By("the shared document holds the user-data")
		var shared corev1.Secret
		Expect(k8sClient.Get(ctx, client.ObjectKey{Namespace: ns, Name: imdsv1alpha1.SharedPayloadSecretName("web")}, &shared)).To(Succeed())
		doc, err := payload.ParseShared(shared.Data[payload.SharedKey])
		Expect(err).NotTo(HaveOccurred())
		Expect(string(doc.UserData)).To(Equal(userData))
	})

	It("leaves the Pod of an unselected VMI alone", func() {
		serve(ctx, ns, imdsv1alpha1.MetadataServiceSpec{
			Selector: metav1.LabelSelector{MatchLabels: map[string]string{"app": "web"}},
		})
		vmi := newVMI(ns, "db", map[string]string{"app": "db"})
		create(ctx, vmi)
		pod := launcherPod(vmi)
		want := pod.DeepCopy()
		create(ctx, pod)
		Expect(sidecarOf(pod)).To(BeNil())
		Expect(pod.Spec.InitContainers).To(HaveLen(len(want.Spec.InitContainers)))
		Expect(pod.Spec.Volumes).To(HaveLen(len(want.Spec.Volumes)))
	})

	It("leaves the Pod alone when the payload Secret does not exist, and the controller reports it", func() {
		// A source that cannot be resolved keeps the controller from
		// rendering a payload: there is none when the Pod arrives.
		serve(ctx, ns, imdsv1alpha1.MetadataServiceSpec{
			UserData: &imdsv1alpha1.DataSource{SecretRef: &imdsv1alpha1.KeyReference{Name: "absent", Key: "user-data"}},
		})
		vmi := newVMI(ns, "vm1", nil)
		create(ctx, vmi)
		pod := launcherPod(vmi)
		create(ctx, pod)
		Expect(sidecarOf(pod)).To(BeNil())
		Expect(volumeOf(pod, webhooks.PayloadVolumeName)).To(BeNil())

		Eventually(func(g Gomega) {
			c := condition(ctx, ns, "web", imdsv1alpha1.ConditionInstancesConfigured)
			g.Expect(c).NotTo(BeNil())
			g.Expect(c.Status).To(Equal(metav1.ConditionFalse))
			g.Expect(c.Reason).To(Equal(imdsv1alpha1.ReasonSidecarMissing))
			g.Expect(c.Message).To(ContainSubstring("vm1"))
		}).Should(Succeed())
		Eventually(func() []string { return reasons(eventsFor(ctx, ns, "vm1")) }).Should(ContainElement(imdsv1alpha1.ReasonSidecarMissing))
	})

	It("never blocks Pods when the webhook server is down, and the controller reports them when back", func() {
		serve(ctx, ns, imdsv1alpha1.MetadataServiceSpec{})
		vmi := newVMI(ns, "vm1", nil)
		create(ctx, vmi)
		waitPayload(ctx, vmi)

		stopManager()
		DeferCleanup(func() {
			if stopManagerFunc == nil {
				startManager()
			}
		})
		pod := launcherPod(vmi)
		Expect(k8sClient.Create(ctx, pod)).To(Succeed(), "failurePolicy Ignore")
		Expect(sidecarOf(pod)).To(BeNil())

		startManager()
		Eventually(func(g Gomega) {
			c := condition(ctx, ns, "web", imdsv1alpha1.ConditionInstancesConfigured)
			g.Expect(c).NotTo(BeNil())
			g.Expect(c.Reason).To(Equal(imdsv1alpha1.ReasonSidecarMissing))
			g.Expect(c.Message).To(ContainSubstring("vm1"))
		}).Should(Succeed())
		Eventually(func() []string { return reasons(eventsFor(ctx, ns, "vm1")) }).Should(ContainElement(imdsv1alpha1.ReasonSidecarMissing))

		By("a Pod that has ended is no longer reported")
		pod.Status.Phase = corev1.PodFailed
		Expect(k8sClient.Status().Update(ctx, pod)).To(Succeed())
		Eventually(func() string {
			return condition(ctx, ns, "web", imdsv1alpha1.ConditionInstancesConfigured).Reason
		}).Should(Equal(imdsv1alpha1.ReasonInstancesConfigured))
	})
})

func containerNames(cs []corev1.Container) []string {
	out := make([]string, 0, len(cs))
	for _, c := range cs {
		out = append(out, c.Name)
	}
	return out
}

// admitPod runs the Pod webhook's handler directly on pod, as the API server
// would on a reinvocation.
func admitPod(ctx context.Context, pod *corev1.Pod) admission.Response {
	raw, err := json.Marshal(pod)
	Expect(err).NotTo(HaveOccurred())
	h := &webhooks.PodInjector{Reader: k8sClient, Sidecar: webhooks.SidecarOptions{Image: sidecarImage}}
	return h.Handle(ctx, admission.Request{AdmissionRequest: admissionv1.AdmissionRequest{
		Operation: admissionv1.Create,
		Namespace: pod.Namespace,
		Kind:      metav1.GroupVersionKind{Version: "v1", Kind: "Pod"},
		Object:    runtime.RawExtension{Raw: raw},
	}})
}

var _ = Describe("VMI webhook", func() {
	var (
		ctx context.Context
		ns  string
	)
	BeforeEach(func() {
		ctx = context.Background()
		ns = newNamespace(ctx)
	})

	It("sets the NoCloud serial", func() {
		serve(ctx, ns, imdsv1alpha1.MetadataServiceSpec{})
		vmi := newVMI(ns, "vm1", nil)
		create(ctx, vmi)
		Expect(vmi.Spec.Domain.Firmware).NotTo(BeNil())
		Expect(vmi.Spec.Domain.Firmware.Serial).To(Equal("ds=nocloud;s=http://169.254.169.254/nocloud/;dsmode=net"))
		Expect(vmi.Spec.Domain.Chassis).To(BeNil())
		Eventually(func() string {
			return condition(ctx, ns, "web", imdsv1alpha1.ConditionInstancesConfigured).Reason
		}).Should(Equal(imdsv1alpha1.ReasonInstancesConfigured))
	})

	It("sets the OpenStack asset tag", func() {
		serve(ctx, ns, imdsv1alpha1.MetadataServiceSpec{GuestDiscovery: imdsv1alpha1.GuestDiscoveryOpenStack})
		vmi := newVMI(ns, "vm1", nil)
		create(ctx, vmi)
		Expect(vmi.Spec.Domain.Chassis).NotTo(BeNil())
		Expect(vmi.Spec.Domain.Chassis.Asset).To(Equal("OpenStack Nova"))
		Expect(vmi.Spec.Domain.Firmware).To(BeNil())
	})

	It("gives guest discovery EC2 a firmware UUID starting with ec2, and the same serial", func() {
		serve(ctx, ns, imdsv1alpha1.MetadataServiceSpec{GuestDiscovery: imdsv1alpha1.GuestDiscoveryEC2})
		// As KubeVirt starts a VirtualMachine's VMI: its UUID, and the
		// random serial virt-api generated for the VM.
		vmi := newVMI(ns, "vm1", nil)
		vmi.Spec.Domain.Firmware = &kubevirtv1.Firmware{UUID: "5a1f2c3e-0b1d-4e5f-9a8b-7c6d5e4f3a2b", Serial: "fba26cb3-6f80-47dd-b25e-5ac474c02ae2"}
		vmi.OwnerReferences = []metav1.OwnerReference{{APIVersion: "kubevirt.io/v1", Kind: "VirtualMachine",
			Name: "vm1", UID: "5a0d1a5e-39d5-4bb7-9a51-e3c3d5e86f2f", Controller: new(true), BlockOwnerDeletion: new(true)}}
		create(ctx, vmi)
		Expect(vmi.Spec.Domain.Firmware.UUID).To(BeEquivalentTo("ec2f2c3e-0b1d-4e5f-9a8b-7c6d5e4f3a2b"))
		Expect(vmi.Spec.Domain.Firmware.Serial).To(Equal("ec2f2c3e-0b1d-4e5f-9a8b-7c6d5e4f3a2b"))
		Eventually(func() string {
			return condition(ctx, ns, "web", imdsv1alpha1.ConditionInstancesConfigured).Reason
		}).Should(Equal(imdsv1alpha1.ReasonInstancesConfigured))
	})

	It("changes nothing with guest discovery None, or for unselected VMIs", func() {
		serve(ctx, ns, imdsv1alpha1.MetadataServiceSpec{GuestDiscovery: imdsv1alpha1.GuestDiscoveryNone,
			Selector: metav1.LabelSelector{MatchLabels: map[string]string{"app": "web"}}})
		for _, vmi := range []*kubevirtv1.VirtualMachineInstance{newVMI(ns, "served", map[string]string{"app": "web"}), newVMI(ns, "other", nil)} {
			create(ctx, vmi)
			Expect(vmi.Spec.Domain.Firmware).To(BeNil(), vmi.Name)
			Expect(vmi.Spec.Domain.Chassis).To(BeNil(), vmi.Name)
		}
	})

	It("replaces the serial KubeVirt's VirtualMachine mutator generates, and keeps a UUID serial on a VMI of its own", func() {
		// virt-api gives every VirtualMachine without one a random UUID serial
		// (setFirmwareDefaultsIfEmpty), which its VMIs then carry.
		serve(ctx, ns, imdsv1alpha1.MetadataServiceSpec{})
		const generated = "fba26cb3-6f80-47dd-b25e-5ac474c02ae2"
		fromVM := newVMI(ns, "from-vm", nil)
		fromVM.Spec.Domain.Firmware = &kubevirtv1.Firmware{Serial: generated}
		fromVM.OwnerReferences = []metav1.OwnerReference{{APIVersion: "kubevirt.io/v1", Kind: "VirtualMachine",
			Name: "from-vm", UID: "5a0d1a5e-39d5-4bb7-9a51-e3c3d5e86f2f", Controller: new(true), BlockOwnerDeletion: new(true)}}
		create(ctx, fromVM)
		Expect(fromVM.Spec.Domain.Firmware.Serial).To(Equal(controllers.NoCloudSerial))

		bare := newVMI(ns, "bare", nil)
		bare.Spec.Domain.Firmware = &kubevirtv1.Firmware{Serial: generated}
		create(ctx, bare)
		Expect(bare.Spec.Domain.Firmware.Serial).To(Equal(generated))
	})

	It("keeps a serial the user set, and says so", func() {
		serve(ctx, ns, imdsv1alpha1.MetadataServiceSpec{})
		vmi := newVMI(ns, "vm1", nil)
		vmi.Spec.Domain.Firmware = &kubevirtv1.Firmware{Serial: "ABC-123"}
		create(ctx, vmi)
		Expect(vmi.Spec.Domain.Firmware.Serial).To(Equal("ABC-123"))
		Eventually(func(g Gomega) {
			c := condition(ctx, ns, "web", imdsv1alpha1.ConditionInstancesConfigured)
			g.Expect(c).NotTo(BeNil())
			g.Expect(c.Reason).To(Equal(imdsv1alpha1.ReasonGuestDiscoveryNotApplied))
			g.Expect(c.Message).To(ContainSubstring("vm1"))
		}).Should(Succeed())
		Eventually(func(g Gomega) {
			ev := eventsFor(ctx, ns, "vm1")
			g.Expect(reasons(ev)).To(ContainElement(imdsv1alpha1.ReasonGuestDiscoveryNotApplied))
			for _, e := range ev {
				if e.Reason == imdsv1alpha1.ReasonGuestDiscoveryNotApplied {
					g.Expect(e.Note).To(ContainSubstring("ABC-123"))
					g.Expect(e.Type).To(Equal(corev1.EventTypeWarning))
				}
			}
		}).Should(Succeed())
	})
})

var _ = Describe("MetadataService webhook", func() {
	var (
		ctx context.Context
		ns  string
	)
	BeforeEach(func() {
		ctx = context.Background()
		ns = newNamespace(ctx)
	})

	const goodKey = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl user@host"
	// rsaBlobAsEd25519 declares ed25519 but carries an ssh-rsa blob.
	const rsaBlobAsEd25519 = "ssh-ed25519 AAAAB3NzaC1yc2EAAAADAQABAAAAgQC7 user@host"

	DescribeTable("rejects what the schema cannot",
		func(spec imdsv1alpha1.MetadataServiceSpec, path string) {
			err := k8sClient.Create(ctx, newMDS(ns, "bad", spec))
			Expect(apierrors.IsInvalid(err)).To(BeTrue(), "%v", err)
			var fields []string
			for _, c := range err.(apierrors.APIStatus).Status().Details.Causes {
				fields = append(fields, c.Field)
			}
			Expect(fields).To(ContainElement(path), err.Error())
		},
		Entry("user-data of no known format", imdsv1alpha1.MetadataServiceSpec{
			UserData: &imdsv1alpha1.DataSource{Inline: ptr("hello world")}}, "spec.userData.inline"),
		Entry("#cloud-config that is not a YAML mapping", imdsv1alpha1.MetadataServiceSpec{
			UserData: &imdsv1alpha1.DataSource{Inline: ptr("#cloud-config\n- a\n- b\n")}}, "spec.userData.inline"),
		Entry("vendor-data of no known format", imdsv1alpha1.MetadataServiceSpec{
			VendorData: &imdsv1alpha1.DataSource{Inline: ptr("just text")}}, "spec.vendorData.inline"),
		Entry("user-data over 64 KiB in bytes (under 65536 characters)", imdsv1alpha1.MetadataServiceSpec{
			UserData: &imdsv1alpha1.DataSource{Inline: ptr("#!/bin/sh\n# " + strings.Repeat("é", 40000))}}, "spec.userData.inline"),
		Entry("network config that is not version 2", imdsv1alpha1.MetadataServiceSpec{
			NetworkData: &imdsv1alpha1.NetworkDataSpec{Mode: imdsv1alpha1.NetworkDataInline, Config: ptr("network:\n  version: 1\n  config: []\n")}},
			"spec.networkData.config"),
		Entry("network config with an unknown key", imdsv1alpha1.MetadataServiceSpec{
			NetworkData: &imdsv1alpha1.NetworkDataSpec{Mode: imdsv1alpha1.NetworkDataInline, Config: ptr("version: 2\nethernets:\n  eth0:\n    dhcp: true\n")}},
			"spec.networkData.config"),
		Entry("an exposed label key that is not a label key", imdsv1alpha1.MetadataServiceSpec{
			Metadata: &imdsv1alpha1.MetadataSpec{ExposeLabels: []string{"app", "bad key!"}}}, "spec.metadata.exposeLabels[1]"),
		Entry("an exposed annotation key with an invalid prefix", imdsv1alpha1.MetadataServiceSpec{
			Metadata: &imdsv1alpha1.MetadataSpec{ExposeAnnotations: []string{"-bad.example/x"}}}, "spec.metadata.exposeAnnotations[0]"),
		Entry("a tag key with a slash", imdsv1alpha1.MetadataServiceSpec{
			Metadata: &imdsv1alpha1.MetadataSpec{Tags: map[string]string{"team/owner": "x"}}}, "spec.metadata.tags[team/owner]"),
		Entry("an SSH key whose blob is another type", imdsv1alpha1.MetadataServiceSpec{
			SSHAuthorizedKeys: &imdsv1alpha1.SSHKeysSource{Inline: []string{goodKey, rsaBlobAsEd25519}}}, "spec.sshAuthorizedKeys.inline[1]"),
		Entry("an SSH key whose blob is truncated", imdsv1alpha1.MetadataServiceSpec{
			SSHAuthorizedKeys: &imdsv1alpha1.SSHKeysSource{Inline: []string{"ssh-ed25519 AAAA"}}}, "spec.sshAuthorizedKeys.inline[0]"),
		Entry("a selector value that is not a label value", imdsv1alpha1.MetadataServiceSpec{
			Selector: metav1.LabelSelector{MatchLabels: map[string]string{"app": "not a value"}}}, "spec.selector.matchLabels"),
		Entry("a selector In without values", imdsv1alpha1.MetadataServiceSpec{
			Selector: metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{{Key: "app", Operator: metav1.LabelSelectorOpIn}}}},
			"spec.selector.matchExpressions[0].values"),
		Entry("an audience with white space", imdsv1alpha1.MetadataServiceSpec{
			Identity: &imdsv1alpha1.IdentitySpec{ServiceAccountTokens: []imdsv1alpha1.ServiceAccountTokenSpec{{Audience: "my audience"}}}},
			"spec.identity.serviceAccountTokens[0].audience"),
		Entry("NoCloud discovery without the nocloud dialect", imdsv1alpha1.MetadataServiceSpec{
			Dialects: []imdsv1alpha1.Dialect{"v1", "openstack"}}, "spec.guestDiscovery"),
		Entry("OpenStack discovery without the openstack dialect", imdsv1alpha1.MetadataServiceSpec{
			GuestDiscovery: imdsv1alpha1.GuestDiscoveryOpenStack, Dialects: []imdsv1alpha1.Dialect{"nocloud"}}, "spec.guestDiscovery"),
		Entry("EC2 discovery without the ec2 dialect", imdsv1alpha1.MetadataServiceSpec{
			GuestDiscovery: imdsv1alpha1.GuestDiscoveryEC2, Dialects: []imdsv1alpha1.Dialect{"openstack"}}, "spec.guestDiscovery"),
		Entry("required tokens without the ec2 dialect", imdsv1alpha1.MetadataServiceSpec{GuestDiscovery: imdsv1alpha1.GuestDiscoveryNone,
			EC2: &imdsv1alpha1.EC2Spec{HTTPTokens: imdsv1alpha1.HTTPTokensRequired}, Dialects: []imdsv1alpha1.Dialect{"openstack"}}, "spec.ec2.httpTokens"),
	)

	It("names every invalid field at once", func() {
		err := k8sClient.Create(ctx, newMDS(ns, "bad", imdsv1alpha1.MetadataServiceSpec{
			UserData:   &imdsv1alpha1.DataSource{Inline: ptr("hello")},
			VendorData: &imdsv1alpha1.DataSource{Inline: ptr("hello")},
		}))
		Expect(apierrors.IsInvalid(err)).To(BeTrue())
		Expect(err.(apierrors.APIStatus).Status().Details.Causes).To(HaveLen(2))
	})

	It("accepts a valid MetadataService and warns about a fixed host name", func() {
		mds := newMDS(ns, "good", imdsv1alpha1.MetadataServiceSpec{
			UserData:          &imdsv1alpha1.DataSource{Inline: ptr("#cloud-config\npackages: [curl]\n")},
			SSHAuthorizedKeys: &imdsv1alpha1.SSHKeysSource{Inline: []string{goodKey}},
			Metadata:          &imdsv1alpha1.MetadataSpec{ExposeLabels: []string{"app", "example.com/tier"}, Tags: map[string]string{"team": "a"}},
			Hostname:          "web",
			NetworkData:       &imdsv1alpha1.NetworkDataSpec{Mode: imdsv1alpha1.NetworkDataInline, Config: ptr("version: 2\nethernets:\n  eth0:\n    dhcp4: true\n")},
		})
		Expect(k8sClient.Create(ctx, mds)).To(Succeed())
		warned := validateWarnings(mds)
		Expect(warned).To(ContainElement(ContainSubstring("spec.hostname")))
	})
})

// validateWarnings runs the validator directly and returns its warnings.
func validateWarnings(mds *imdsv1alpha1.MetadataService) []string {
	w, err := webhooks.MetadataServiceValidator{}.ValidateCreate(context.Background(), mds)
	Expect(err).NotTo(HaveOccurred())
	return w
}

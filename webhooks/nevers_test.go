package webhooks_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/rest"
	kubevirtv1 "kubevirt.io/api/core/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"

	imdsv1alpha1 "github.com/kubevirt-imds/kubevirt-imds/api/v1alpha1"
	"github.com/kubevirt-imds/kubevirt-imds/controllers"
	"github.com/kubevirt-imds/kubevirt-imds/test/controlplane"
	"github.com/kubevirt-imds/kubevirt-imds/test/fixtures"
	"github.com/kubevirt-imds/kubevirt-imds/webhooks"
)

// Installing the product must never keep a VM from starting: these specs
// create launcher Pods shaped as virt-controller v1.8.0 renders them
// (fixtures.LauncherPod) through the real API server, whose PodSecurity
// admission runs after the webhooks and computes status.qosClass.

// newLabelledNamespace creates a namespace with labels for one spec.
func newLabelledNamespace(ctx context.Context, c client.Client, labels map[string]string) string {
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{GenerateName: "wh-", Labels: labels}}
	ExpectWithOffset(1, c.Create(ctx, ns)).To(Succeed())
	return ns.Name
}

func resourceQ(s string) resource.Quantity { return resource.MustParse(s) }

// restartManagerWith runs the suite's manager with o for the rest of the
// spec, and with the defaults again after it.
func restartManagerWith(o webhooks.Options) {
	stopManager()
	DeferCleanup(func() {
		stopManager()
		startManager()
	})
	startManagerWith(o)
}

func enforcing(level string) map[string]string {
	return map[string]string{webhooks.PodSecurityEnforceLabel: level}
}

var _ = Describe("Launcher Pods stay admissible", func() {
	var ctx context.Context
	BeforeEach(func() { ctx = context.Background() })

	// servedVMI creates a served VMI in ns and waits for its payload.
	servedVMI := func(ns string, vmi *kubevirtv1.VirtualMachineInstance) {
		serve(ctx, ns, imdsv1alpha1.MetadataServiceSpec{})
		create(ctx, vmi)
		waitPayload(ctx, vmi)
	}

	It("starts from launcher Pods the API server judges as the real ones (no product involved)", func() {
		ns := newLabelledNamespace(ctx, k8sClient, enforcing("baseline"))
		pinned := fixtures.DedicatedCPUs(newVMI(ns, "pinned", nil), 2)
		plain := newVMI(ns, "plain", nil)
		create(ctx, pinned, plain)
		p := launcherPod(pinned)
		create(ctx, p)
		Expect(p.Status.QOSClass).To(Equal(corev1.PodQOSGuaranteed))
		q := launcherPod(plain)
		create(ctx, q)
		Expect(q.Status.QOSClass).To(Equal(corev1.PodQOSBurstable))
		Expect(containerNames(q.Spec.InitContainers)).To(Equal([]string{"guest-console-log", "container-disk-binary", "volumerootdisk-init"}))
		Expect(containerNames(q.Spec.Containers)).To(Equal([]string{"compute", "volumerootdisk"}))
	})

	It("keeps a dedicated-CPU VM's launcher Pod Guaranteed", func() {
		ns := newNamespace(ctx)
		vmi := fixtures.DedicatedCPUs(newVMI(ns, "pinned", nil), 2)
		servedVMI(ns, vmi)
		pod := launcherPod(vmi)
		create(ctx, pod)
		c := sidecarOf(pod)
		Expect(c).NotTo(BeNil())
		Expect(pod.Status.QOSClass).To(Equal(corev1.PodQOSGuaranteed), "the API server's QoS class after injection")
		Expect(c.Resources.Requests.Cpu().Cmp(*c.Resources.Limits.Cpu())).To(Equal(0))
		Expect(c.Resources.Requests.Memory().Cmp(*c.Resources.Limits.Memory())).To(Equal(0))
	})

	It("honours the configured sidecar resources", func() {
		ns := newNamespace(ctx)
		vmi := fixtures.DedicatedCPUs(newVMI(ns, "pinned", nil), 1)
		servedVMI(ns, vmi)
		o := defaultOptions()
		o.Sidecar.Resources = corev1.ResourceRequirements{
			Requests: corev1.ResourceList{corev1.ResourceCPU: resourceQ("5m"), corev1.ResourceMemory: resourceQ("16Mi")},
			Limits:   corev1.ResourceList{corev1.ResourceCPU: resourceQ("50m"), corev1.ResourceMemory: resourceQ("48Mi")},
		}
		restartManagerWith(o)
		pod := launcherPod(vmi)
		create(ctx, pod)
		c := sidecarOf(pod)
		Expect(c).NotTo(BeNil())
		Expect(pod.Status.QOSClass).To(Equal(corev1.PodQOSGuaranteed))
		Expect(c.Resources.Requests.Cpu().String()).To(Equal("50m"))
		Expect(c.Resources.Requests.Memory().String()).To(Equal("48Mi"))
	})

	It("is admitted with the sidecar where Pod Security enforces baseline", func() {
		ns := newLabelledNamespace(ctx, k8sClient, enforcing("baseline"))
		vmi := newVMI(ns, "vm1", nil)
		servedVMI(ns, vmi)
		pod := launcherPod(vmi)
		Expect(k8sClient.Create(ctx, pod)).To(Succeed())
		Expect(sidecarOf(pod)).NotTo(BeNil())
	})

	It("is admitted with the sidecar where Pod Security enforces restricted", func() {
		ns := newLabelledNamespace(ctx, k8sClient, enforcing("restricted"))
		vmi := newVMI(ns, "vm1", nil)
		servedVMI(ns, vmi)

		By("KubeVirt's own Pod needs its seccomp configuration under restricted, sidecar or not")
		err := k8sClient.Create(ctx, launcherPod(vmi))
		Expect(apierrors.IsForbidden(err)).To(BeTrue(), "PodSecurity admission is active: %v", err)
		Expect(err.Error()).To(ContainSubstring("seccompProfile"))
		Expect(err.Error()).NotTo(ContainSubstring(controllers.SidecarContainerName), "nothing is said about the sidecar")

		By("with seccompConfiguration's RuntimeDefault profile")
		pod := launcherPod(vmi, fixtures.SeccompRuntimeDefault())
		Expect(k8sClient.Create(ctx, pod)).To(Succeed())
		Expect(sidecarOf(pod)).NotTo(BeNil())
	})

	Context("with --sidecar-network-setup=sidecar", func() {
		BeforeEach(func() {
			o := defaultOptions()
			o.Sidecar.NetworkSetup = webhooks.NetworkSetupSidecar
			restartManagerWith(o)
		})

		It("injects the privileged sidecar where Pod Security enforces nothing", func() {
			ns := newNamespace(ctx)
			vmi := newVMI(ns, "vm1", nil)
			servedVMI(ns, vmi)
			pod := launcherPod(vmi)
			create(ctx, pod)
			c := sidecarOf(pod)
			Expect(c).NotTo(BeNil())
			Expect(c.Args).NotTo(ContainElement(HavePrefix("--network-setup")))
			Expect(c.SecurityContext.RunAsUser).To(HaveValue(BeZero()))
			Expect(c.SecurityContext.Capabilities.Add).To(ConsistOf(corev1.Capability("NET_ADMIN"), corev1.Capability("NET_RAW"), corev1.Capability("NET_BIND_SERVICE")))
			Expect(vmi.Spec.Domain.Firmware).NotTo(BeNil())
			Expect(vmi.Spec.Domain.Firmware.Serial).To(Equal(controllers.NoCloudSerial), "the guest is told where to look")
		})

		It("leaves the sidecar out, and the Pod admitted, where Pod Security enforces baseline; the guest is not sent looking for it", func() {
			ns := newLabelledNamespace(ctx, k8sClient, enforcing("baseline"))
			vmi := newVMI(ns, "vm1", nil)
			servedVMI(ns, vmi)
			if fw := vmi.Spec.Domain.Firmware; fw != nil {
				Expect(fw.Serial).To(BeEmpty(), "no NoCloud serial: cloud-init would wait for an address nobody answers")
			}
			pod := launcherPod(vmi)
			Expect(k8sClient.Create(ctx, pod)).To(Succeed())
			Expect(sidecarOf(pod)).To(BeNil())
			Expect(volumeOf(pod, webhooks.PayloadVolumeName)).To(BeNil())
		})
	})

	DescribeTable("injects no sidecar into a VM it cannot serve, nor tells its guest to look for one",
		func(mutate func(*kubevirtv1.VirtualMachineInstance)) {
			ns := newNamespace(ctx)
			serve(ctx, ns, imdsv1alpha1.MetadataServiceSpec{})
			vmi := newVMI(ns, "vm1", nil)
			mutate(vmi)
			create(ctx, vmi)
			if fw := vmi.Spec.Domain.Firmware; fw != nil {
				Expect(fw.Serial).To(BeEmpty(), "no NoCloud serial: cloud-init would wait for an address nobody answers")
			}
			pod := launcherPod(vmi)
			want := pod.DeepCopy()
			create(ctx, pod)
			Expect(sidecarOf(pod)).To(BeNil())
			Expect(containerNames(pod.Spec.InitContainers)).To(Equal(containerNames(want.Spec.InitContainers)))
			Expect(pod.Spec.Volumes).To(HaveLen(len(want.Spec.Volumes)))
		},
		Entry("SR-IOV only", func(vmi *kubevirtv1.VirtualMachineInstance) {
			vmi.Spec.Domain.Devices.Interfaces = []kubevirtv1.Interface{{Name: "vf",
				InterfaceBindingMethod: kubevirtv1.InterfaceBindingMethod{SRIOV: &kubevirtv1.InterfaceSRIOV{}}}}
			vmi.Spec.Networks = []kubevirtv1.Network{{Name: "vf",
				NetworkSource: kubevirtv1.NetworkSource{Multus: &kubevirtv1.MultusNetwork{NetworkName: "sriov-net"}}}}
		}),
		Entry("passt (network binding plugin)", func(vmi *kubevirtv1.VirtualMachineInstance) {
			vmi.Spec.Domain.Devices.Interfaces = []kubevirtv1.Interface{{Name: "default", Binding: &kubevirtv1.PluginBinding{Name: "passt"}}}
		}),
		Entry("no pod network", func(vmi *kubevirtv1.VirtualMachineInstance) {
			vmi.Spec.Domain.Devices.Interfaces = nil
			vmi.Spec.Domain.Devices.AutoattachPodInterface = ptr(false)
			vmi.Spec.Networks = nil
		}),
	)

	It("injects a live migration's target Pod as its source", func() {
		ns := newNamespace(ctx)
		vmi := newVMI(ns, "vm1", nil)
		servedVMI(ns, vmi)
		source := launcherPod(vmi)
		create(ctx, source)
		Expect(sidecarOf(source)).NotTo(BeNil())

		target := launcherPod(vmi, fixtures.MigrationTarget(types.UID("6f1c3f9e-5d0b-4a55-9a43-2f5f0e4b8c11")))
		create(ctx, target)
		c := sidecarOf(target)
		Expect(c).NotTo(BeNil())
		Expect(target.Labels[kubevirtv1.CreatedByLabel]).To(Equal(source.Labels[kubevirtv1.CreatedByLabel]))
		By("the same payload and MAC seed, so the guest keeps its instance-id and MAC")
		Expect(c.Args).To(Equal(sidecarOf(source).Args))
		Expect(c.Args).To(ContainElement("--mac-seed=" + string(vmi.UID)))
		Expect(volumeOf(target, webhooks.PayloadVolumeName).Projected.Sources[0].Secret.Name).To(Equal(imdsv1alpha1.PayloadSecretName(vmi.Name)))
	})

	It("selects VMs created together with their MetadataService", func() {
		// kubectl apply -k of a service with its VMs: the VMIs' admission
		// follows the service's creation by a few milliseconds, possibly
		// before the manager's cache has it (on one machine it rarely lags;
		// TestStaleCacheFallsBackToTheAPIServer pins the fallback).
		for i := range 10 {
			ns := newNamespace(ctx)
			create(ctx, newMDS(ns, "web", imdsv1alpha1.MetadataServiceSpec{}))
			vmi := newVMI(ns, fmt.Sprintf("vm%d", i), nil)
			create(ctx, vmi)
			Expect(vmi.Spec.Domain.Firmware).NotTo(BeNil(), "attempt %d", i)
			Expect(vmi.Spec.Domain.Firmware.Serial).To(Equal("ds=nocloud;s=http://169.254.169.254/nocloud/;dsmode=net"))
			pod := launcherPod(vmi)
			create(ctx, pod)
			Expect(sidecarOf(pod)).NotTo(BeNil(), "attempt %d", i)
		}
	})
})

var _ = Describe("A cluster-wide Pod Security default", Ordered, func() {
	var (
		ctx  context.Context
		c    client.Client
		env  *envtest.Environment
		stop func() error
	)
	BeforeAll(func() {
		ctx = context.Background()
		// The API server's own default, as a hardened cluster sets it; the
		// webhooks' namespace selectors need no exemption.
		dir := GinkgoT().TempDir()
		admission := filepath.Join(dir, "admission.yaml")
		Expect(os.WriteFile(admission, []byte(`apiVersion: apiserver.config.k8s.io/v1
kind: AdmissionConfiguration
plugins:
- name: PodSecurity
  configuration:
    apiVersion: pod-security.admission.config.k8s.io/v1
    kind: PodSecurityConfiguration
    defaults:
      enforce: restricted
      enforce-version: latest
`), 0o644)).To(Succeed())
		var (
			restCfg *rest.Config
			err     error
		)
		env, restCfg, err = controlplane.Start(controlplane.Options{
			Webhooks:            envtest.WebhookInstallOptions{Paths: []string{renderWebhookConfig()}, LocalServingHostExternalName: "localhost"},
			AdmissionConfigFile: admission,
		})
		if errors.Is(err, controlplane.ErrNoAssets) {
			Skip(err.Error())
		}
		Expect(err).NotTo(HaveOccurred())
		DeferCleanup(func() { Expect(env.Stop()).To(Succeed()) })
		c, err = client.New(restCfg, client.Options{Scheme: scheme})
		Expect(err).NotTo(HaveOccurred())
		stop = startStackManager(env, restCfg, defaultOptions())
		DeferCleanup(func() { Expect(stop()).To(Succeed()) })
	})

	It("admits the launcher Pod with the sidecar in a namespace without a label", func() {
		ns := newLabelledNamespace(ctx, c, nil)
		mds := newMDS(ns, "web", imdsv1alpha1.MetadataServiceSpec{})
		Expect(c.Create(ctx, mds)).To(Succeed())
		vmi := newVMI(ns, "vm1", nil)
		Expect(c.Create(ctx, vmi)).To(Succeed())

		By("the default is in force: KubeVirt's Pod without its seccomp profile is rejected")
		err := c.Create(ctx, launcherPod(vmi))
		Expect(apierrors.IsForbidden(err)).To(BeTrue(), "%v", err)

		pod := launcherPod(vmi, fixtures.SeccompRuntimeDefault())
		Expect(c.Create(ctx, pod)).To(Succeed())
		Expect(sidecarOf(pod)).NotTo(BeNil())
	})
})

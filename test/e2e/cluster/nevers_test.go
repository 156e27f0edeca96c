//go:build e2e

package cluster_test

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	kubevirtv1 "kubevirt.io/api/core/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"

	imdsv1alpha1 "github.com/kubevirt-imds/kubevirt-imds/api/v1alpha1"
	"github.com/kubevirt-imds/kubevirt-imds/controllers"
	"github.com/kubevirt-imds/kubevirt-imds/test/controlplane"
	"github.com/kubevirt-imds/kubevirt-imds/test/e2e/guestspecs"
	"github.com/kubevirt-imds/kubevirt-imds/test/fixtures"
)

// operatorDeployment is the manager's Deployment, in operatorNamespace.
const operatorDeployment = "kubevirt-imds-controller-manager"

// operatorNamespace is where the manager runs: config/'s namespace, or OLM's
// namespace for operators of all namespaces (installThroughOLM).
var operatorNamespace = "kubevirt-imds-system"

// debianVM is the project's Debian VM (testdata/vm-web-debian.yaml) named
// name in ns, its VMIs labelled app: web, which the sample MetadataService
// selects.
func debianVM(ns, name string) *kubevirtv1.VirtualMachine {
	GinkgoHelper()
	raw, err := os.ReadFile(filepath.Join(controlplane.RepoRoot(), "test", "e2e", "cluster", "testdata", "vm-web-debian.yaml"))
	Expect(err).NotTo(HaveOccurred())
	vm := &kubevirtv1.VirtualMachine{}
	Expect(yaml.UnmarshalStrict(raw, vm)).To(Succeed())
	vm.Name, vm.Namespace = name, ns
	return vm
}

// startVM creates vm; at cleanup it deletes it and waits until its
// virt-launcher Pods are gone, so that the next VM gets the CPU and memory.
func startVM(ctx context.Context, vm *kubevirtv1.VirtualMachine) {
	GinkgoHelper()
	Expect(k8sClient.Create(ctx, vm)).To(Succeed())
	DeferCleanup(deleteVM, vm, NodeTimeout(5*time.Minute))
}

// deleteVM deletes vm and waits until its virt-launcher Pods are gone.
func deleteVM(ctx context.Context, vm *kubevirtv1.VirtualMachine) {
	GinkgoHelper()
	Expect(client.IgnoreNotFound(k8sClient.Delete(ctx, vm))).To(Succeed())
	Eventually(func(g Gomega) {
		var pods corev1.PodList
		g.Expect(k8sClient.List(ctx, &pods, client.InNamespace(vm.Namespace),
			client.MatchingLabels{kubevirtv1.AppLabel: "virt-launcher"})).To(Succeed())
		for _, p := range pods.Items {
			g.Expect(p.Annotations).NotTo(HaveKeyWithValue(kubevirtv1.DomainAnnotation, vm.Name), "launcher Pod %s still there", p.Name)
		}
	}).WithContext(ctx).Should(Succeed())
}

// newNamespace creates a namespace with labels and the sample
// MetadataService in it, and deletes it at cleanup.
func newNamespace(ctx context.Context, name string, labels map[string]string) {
	GinkgoHelper()
	Expect(k8sClient.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: labels}})).To(Succeed())
	DeferCleanup(func(ctx SpecContext) {
		kctl(ctx, "delete", "namespace", name, "--ignore-not-found", "--wait=true", "--timeout=5m")
	}, NodeTimeout(6*time.Minute))
	applySampleService(ctx, name)
}

// expectServedGuest checks that cloud-init in g finished from the metadata
// service, with vmi's instance-id and the sample's user-data.
func expectServedGuest(ctx context.Context, g guestspecs.Guest, vmi *kubevirtv1.VirtualMachineInstance) {
	GinkgoHelper()
	f := g.Boot()
	Expect(f.Status).To(Equal("status: done"), "cloud-init's status")
	Expect(f.Datasource).To(And(ContainSubstring("NoCloudNet"), ContainSubstring("169.254.169.254")), "the datasource")
	Expect(f.InstanceID).To(Equal(string(vmi.Spec.Domain.Firmware.UUID)), "the instance-id")
	Expect(f.Hostname).To(Equal(vmi.Name))
	Expect(g.ReadFile(ctx, guestspecs.MotdFile)).To(Equal(guestspecs.MotdContent), "the file user-data writes")
	GinkgoWriter.Printf("%s/%s: cloud-init done %s after the VMI was created\n", vmi.Namespace, vmi.Name, f.Duration.Round(time.Second))
}

// expectStandInMatches compares the virt-launcher Pod the real
// virt-controller created for vmi, less what the product's webhook added,
// with the stand-in the faster suites create (fixtures.LauncherPod), as
// fixtures.ShapeOf sees them.
func expectStandInMatches(vmi *kubevirtv1.VirtualMachineInstance, pod *corev1.Pod) {
	GinkgoHelper()
	real := pod.DeepCopy()
	real.Spec.InitContainers = slices.DeleteFunc(real.Spec.InitContainers, func(c corev1.Container) bool {
		return c.Name == controllers.SidecarContainerName
	})
	real.Spec.Volumes = slices.DeleteFunc(real.Spec.Volumes, func(v corev1.Volume) bool {
		return strings.HasPrefix(v.Name, "imds-")
	})
	standIn := fixtures.LauncherPod(vmi, fixtures.SeccompRuntimeDefault())
	Expect(fixtures.ShapeOf(standIn)).To(Equal(fixtures.ShapeOf(real)), "test/fixtures.LauncherPod differs from the Pod virt-controller created")
}

// scaleOperator sets the manager Deployment's replicas and waits until that
// many manager Pods exist and are Ready, and (replicas > 0) the API server
// reaches their webhooks.
func scaleOperator(ctx context.Context, replicas int) {
	GinkgoHelper()
	kctl(ctx, "-n", operatorNamespace, "scale", "deployment", operatorDeployment, "--replicas="+strconv.Itoa(replicas))
	Eventually(func(g Gomega) {
		var pods corev1.PodList
		g.Expect(k8sClient.List(ctx, &pods, client.InNamespace(operatorNamespace),
			client.MatchingLabels{"control-plane": "controller-manager"})).To(Succeed())
		g.Expect(pods.Items).To(HaveLen(replicas))
		for _, p := range pods.Items {
			g.Expect(p.Status.Conditions).To(ContainElement(And(
				HaveField("Type", corev1.PodReady), HaveField("Status", corev1.ConditionTrue))), "manager Pod %s Ready", p.Name)
		}
	}).WithContext(ctx).Should(Succeed())
	if replicas > 0 {
		waitWebhooksReachable(ctx)
	}
}

var _ = Describe("never keeping a VM from starting, on real KubeVirt", func() {
	It("keeps a dedicated-CPU VM's launcher Pod Guaranteed, and the VM starts and is served", Label("bundle"), func(ctx SpecContext) {
		vm := debianVM(namespace, "dedicated-debian")
		vm.Spec.Template.Spec.Domain.CPU.DedicatedCPUPlacement = true
		startVM(ctx, vm)
		vmi, pod := readyVMI(ctx, namespace, vm.Name, "")
		// virt-controller fails a dedicated-CPU VMI whose Pod is not
		// Guaranteed; Ready says it was not, and the class says why.
		Expect(pod.Status.QOSClass).To(Equal(corev1.PodQOSGuaranteed), "the launcher Pod's QoS class with the sidecar in it")
		expectStandInMatches(vmi, pod)
		for _, c := range pod.Spec.InitContainers {
			if c.Name == controllers.SidecarContainerName {
				Expect(c.Resources.Requests).To(Equal(c.Resources.Limits), "the sidecar's requests equal its limits in a Guaranteed Pod")
			}
		}
		g := bootedGuest(ctx, namespace, vm.Name, vmi.CreationTimestamp.Time)
		expectServedGuest(ctx, g, vmi)
	}, SpecTimeout(20*time.Minute))

	// Label bridge-binding: KubeVirt puts the Pod's address on a dummy link
	// for this binding, and hack/cluster/e2e.sh leaves the spec out where
	// the node's kernel has none.
	It("serves a VM whose pod network uses bridge binding", Label("bridge-binding"), func(ctx SpecContext) {
		// The guest takes the Pod's own IP (KubeVirt's DHCP) and sends to
		// 169.254.169.254 through the Pod network's gateway: the sidecar
		// must catch that on KubeVirt's bridge before eth0 carries it off
		// the node.
		vm := debianVM(namespace, "bridge-debian")
		vm.Spec.Template.Spec.Domain.Devices.Interfaces[0].InterfaceBindingMethod = kubevirtv1.InterfaceBindingMethod{
			Bridge: &kubevirtv1.InterfaceBridge{},
		}
		startVM(ctx, vm)
		vmi, pod := readyVMI(ctx, namespace, vm.Name, "")
		GinkgoWriter.Printf("bridge-bound guest on Pod IP %s\n", pod.Status.PodIP)
		g := bootedGuest(ctx, namespace, vm.Name, vmi.CreationTimestamp.Time)
		expectServedGuest(ctx, g, vmi)
	}, SpecTimeout(20*time.Minute))

	DescribeTable("starts and serves a VM in a namespace enforcing Pod Security",
		func(ctx SpecContext, level string) {
			// KubeVirt's own launcher Pod passes restricted only with its
			// seccomp configuration, which the local cluster's KubeVirt CR
			// sets (hack/cluster/kubevirt-config.yaml).
			ns := "imds-e2e-" + level
			newNamespace(ctx, ns, map[string]string{
				controllers.PodSecurityEnforceLabel:              level,
				controllers.PodSecurityEnforceLabel + "-version": "latest",
			})
			vm := debianVM(ns, "web-debian")
			startVM(ctx, vm)
			vmi, pod := readyVMI(ctx, ns, vm.Name, "")
			GinkgoWriter.Printf("launcher Pod %s admitted under %s\n", pod.Name, level)
			g := bootedGuest(ctx, ns, vm.Name, vmi.CreationTimestamp.Time)
			expectServedGuest(ctx, g, vmi)
		},
		Entry("baseline", "baseline", SpecTimeout(20*time.Minute)),
		Entry("restricted", "restricted", SpecTimeout(20*time.Minute)),
	)

	It("starts a VM while the operator is scaled to zero, and says so when the operator returns", func(ctx SpecContext) {
		const ns = "imds-e2e-operator-down"
		newNamespace(ctx, ns, nil)
		var dep appsv1.Deployment
		Expect(k8sClient.Get(ctx, client.ObjectKey{Namespace: operatorNamespace, Name: operatorDeployment}, &dep)).To(Succeed())
		replicas := int(*dep.Spec.Replicas)
		scaleOperator(ctx, 0)
		// Whatever fails below, the operator comes back for the specs after.
		DeferCleanup(scaleOperator, replicas, NodeTimeout(5*time.Minute))

		By("starting a VM with no webhook to call")
		vm := debianVM(ns, "web-debian")
		created := time.Now()
		startVM(ctx, vm)
		vmi, pod := runningVMI(ctx, ns, vm.Name, "")
		GinkgoWriter.Printf("with the operator at zero replicas the VMI was Ready %s after the VirtualMachine was created\n", time.Since(created).Round(time.Second))
		Expect(pod.Spec.InitContainers).NotTo(ContainElement(HaveField("Name", controllers.SidecarContainerName)),
			"no webhook ran: the VM starts as it would without the product")
		By("the faster suites' stand-in matching this Pod, which no webhook touched")
		expectStandInMatches(vmi, pod)

		By("the operator, back, reporting the VM it could not serve")
		scaleOperator(ctx, replicas)
		Eventually(func(g Gomega) {
			var mds imdsv1alpha1.MetadataService
			g.Expect(k8sClient.Get(ctx, client.ObjectKey{Namespace: ns, Name: "web"}, &mds)).To(Succeed())
			c := meta.FindStatusCondition(mds.Status.Conditions, imdsv1alpha1.ConditionInstancesConfigured)
			g.Expect(c).NotTo(BeNil())
			g.Expect(c.Status).To(Equal(metav1.ConditionFalse))
			g.Expect(c.Reason).To(Equal(imdsv1alpha1.ReasonSidecarMissing))
			g.Expect(c.Message).To(ContainSubstring(vmi.Name))
		}).WithContext(ctx).Should(Succeed())
		Eventually(func(g Gomega) {
			var events corev1.EventList
			g.Expect(k8sClient.List(ctx, &events, client.InNamespace(ns))).To(Succeed())
			g.Expect(events.Items).To(ContainElement(And(
				HaveField("InvolvedObject.Kind", "VirtualMachineInstance"),
				HaveField("InvolvedObject.Name", vmi.Name),
				HaveField("Type", corev1.EventTypeWarning),
				HaveField("Reason", imdsv1alpha1.ReasonSidecarMissing),
				HaveField("Message", ContainSubstring(pod.Name)))))
		}).WithContext(ctx).Should(Succeed())

		By("a restart, as the status advises, serving the VM")
		Expect(k8sClient.Delete(ctx, vmi)).To(Succeed())
		readyVMI(ctx, ns, vm.Name, vmi.UID)
		Eventually(func(g Gomega) {
			var mds imdsv1alpha1.MetadataService
			g.Expect(k8sClient.Get(ctx, client.ObjectKey{Namespace: ns, Name: "web"}, &mds)).To(Succeed())
			c := meta.FindStatusCondition(mds.Status.Conditions, imdsv1alpha1.ConditionInstancesConfigured)
			g.Expect(c).NotTo(BeNil())
			g.Expect(c.Status).To(Equal(metav1.ConditionTrue), "%s: %s", c.Reason, c.Message)
		}).WithContext(ctx).Should(Succeed())
	}, SpecTimeout(30*time.Minute))
})

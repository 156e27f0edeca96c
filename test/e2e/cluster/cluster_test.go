//go:build e2e

package cluster_test

import (
	"context"
	"net/http"
	"path/filepath"
	"strings"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	kubevirtv1 "kubevirt.io/api/core/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/kubevirt-imds/kubevirt-imds/controllers"
	"github.com/kubevirt-imds/kubevirt-imds/test/controlplane"
	"github.com/kubevirt-imds/kubevirt-imds/test/e2e/cluster"
	"github.com/kubevirt-imds/kubevirt-imds/test/e2e/guestspecs"
)

const metadataURL = "http://169.254.169.254"

// debianGuest names the guest in reports.
const debianGuest = "Debian trixie (the project's VM image, as a containerDisk)"

// readyVMI waits until the VMI name in ns, other than the one with
// UID previous, is Ready and returns it with its virt-launcher Pod, which
// must carry the sidecar that the real webhook injected into what the real
// virt-controller created.
func readyVMI(ctx context.Context, ns, name string, previous types.UID) (*kubevirtv1.VirtualMachineInstance, *corev1.Pod) {
	GinkgoHelper()
	vmi, pod := runningVMI(ctx, ns, name, previous)
	Expect(pod.Spec.InitContainers).To(ContainElement(HaveField("Name", controllers.SidecarContainerName)), "no sidecar in %s", pod.Name)
	Expect(vmi.Spec.Domain.Firmware).NotTo(BeNil())
	Expect(vmi.Spec.Domain.Firmware.Serial).To(Equal(controllers.NoCloudSerial), "the VMI webhook's discovery serial")
	return vmi, pod
}

// runningVMI waits until the VMI name in ns, other than the one with
// UID previous, is Running and Ready and returns it with its virt-launcher Pod.
func runningVMI(ctx context.Context, ns, name string, previous types.UID) (*kubevirtv1.VirtualMachineInstance, *corev1.Pod) {
	GinkgoHelper()
	var vmi kubevirtv1.VirtualMachineInstance
	Eventually(func(g Gomega) {
		g.Expect(k8sClient.Get(ctx, client.ObjectKey{Namespace: ns, Name: name}, &vmi)).To(Succeed())
		g.Expect(vmi.UID).NotTo(Equal(previous))
		g.Expect(vmi.Status.Phase).To(Equal(kubevirtv1.Running))
		g.Expect(vmi.Status.Conditions).To(ContainElement(And(
			HaveField("Type", kubevirtv1.VirtualMachineInstanceReady),
			HaveField("Status", corev1.ConditionTrue))))
	}).WithContext(ctx).Should(Succeed(), "VMI %s/%s Ready", ns, name)
	var pods corev1.PodList
	Expect(k8sClient.List(ctx, &pods, client.InNamespace(ns), client.MatchingLabels{kubevirtv1.CreatedByLabel: string(vmi.UID)})).To(Succeed())
	Expect(pods.Items).To(HaveLen(1))
	return &vmi, &pods.Items[0]
}

// rootConsole opens the serial console of the VMI name in ns at its
// root shell.
func rootConsole(ctx context.Context, ns, name string) *cluster.Console {
	GinkgoHelper()
	c, err := cluster.DialConsole(ctx, cfg, ns, name)
	Expect(err).NotTo(HaveOccurred())
	DeferCleanup(func() {
		if CurrentSpecReport().Failed() {
			GinkgoWriter.Printf("console of %s:\n%s\n", name, c.Output())
		}
		_ = c.Close()
	})
	Expect(c.RootShell(ctx)).To(Succeed())
	return c
}

// bootedGuest waits for cloud-init in the VM name in ns to finish
// and returns the guest.
func bootedGuest(ctx context.Context, ns, name string, booted time.Time) *cluster.ConsoleGuest {
	GinkgoHelper()
	g := &cluster.ConsoleGuest{Console: rootConsole(ctx, ns, name), Name: debianGuest}
	Expect(g.WaitCloudInit(ctx, booted)).To(Succeed())
	return g
}

// Label bundle: the specs that hold for the OLM bundle's configuration too
// (the sidecar does its own network setup; no node agent), which
// hack/cluster/e2e.sh runs again with the operator installed through OLM.
var _ = Describe("on a real cluster with KubeVirt", Ordered, func() {
	var firstID string
	BeforeAll(func(ctx SpecContext) {
		// The webhook injects the sidecar only for selected VMs: the
		// MetadataService (BeforeSuite) comes first.
		kctl(ctx, "apply", "--server-side", "-f", filepath.Join(controlplane.RepoRoot(), "test", "e2e", "cluster", "testdata", "vm-web-debian.yaml"))
	})
	// Under software emulation an idle guest still costs CPU: the VMs of
	// the other specs boot faster without it.
	AfterAll(func(ctx SpecContext) {
		deleteVM(ctx, &kubevirtv1.VirtualMachine{ObjectMeta: metav1.ObjectMeta{Namespace: namespace, Name: "web-debian"}})
	}, NodeTimeout(5*time.Minute))

	It("gives a VM that KubeVirt starts what the sample promises, and live updates", Label("bundle"), func(ctx SpecContext) {
		vmi, pod := readyVMI(ctx, namespace, "web-debian", "")
		g := bootedGuest(ctx, namespace, "web-debian", vmi.CreationTimestamp.Time)
		// KubeVirt gives every VirtualMachine a firmware UUID, which the
		// service serves as the instance-id.
		Expect(vmi.Spec.Domain.Firmware.UUID).NotTo(BeEmpty())
		firstID = string(vmi.Spec.Domain.Firmware.UUID)
		guestspecs.ExpectSampleGuest(ctx, g, guestspecs.Sample{
			InstanceID:     firstID,
			Hostname:       vmi.Name,
			ServiceAccount: namespace + ":default",
			PodName:        pod.Name,
			Address:        "10.0.2.2/24",
		}, reviewer{})

		By("an edit of the MetadataService reaching the guest's long poll")
		// The payload Secret reaches the sidecar through the kubelet's Secret
		// volume, which a real kubelet refreshes on its sync period (about a
		// minute, plus its cache's TTL): the guest keeps long-polling, as a
		// guest agent would, until the new value arrives.
		answered := make(chan string, 1)
		go func() {
			defer GinkgoRecover()
			for ctx.Err() == nil {
				// Without last_etag a poll starts from what it finds: if the
				// edit lands first, the timeout answers with the new value.
				code, body, err := g.Get(ctx, metadataURL+"/v1/metadata?wait_for_change=true&timeout_sec=60", "Metadata: true")
				Expect(err).NotTo(HaveOccurred())
				Expect(code).To(Equal(http.StatusOK))
				if strings.Contains(body, `"environment":"production"`) {
					answered <- body
					return
				}
			}
		}()
		edited := time.Now()
		kctl(ctx, "-n", namespace, "patch", "mds", "web", "--type=merge", "-p", `{"spec":{"metadata":{"tags":{"environment":"production"}}}}`)
		Eventually(answered).WithContext(ctx).WithTimeout(5 * time.Minute).Should(Receive())
		GinkgoWriter.Printf("the edit reached the guest's long poll %s after kubectl patch\n", time.Since(edited).Round(time.Second))

		By("the sidecar never restarting (its liveness check must not reach the guest through KubeVirt's loopback DNAT)")
		Expect(k8sClient.Get(ctx, client.ObjectKeyFromObject(pod), pod)).To(Succeed())
		Expect(pod.Status.InitContainerStatuses).To(ContainElement(And(
			HaveField("Name", controllers.SidecarContainerName),
			HaveField("RestartCount", BeZero()))))
	}, SpecTimeout(20*time.Minute))

	It("exposes the sidecar's metrics across the fleet through the node agent, to a metrics reader only", func(ctx SpecContext) {
		expectFleetMetrics(ctx, "web-debian")
	}, SpecTimeout(5*time.Minute))

	It("keeps the instance-id and what the guest is served when the VirtualMachine restarts", Label("bundle"), func(ctx SpecContext) {
		Expect(firstID).NotTo(BeEmpty(), "the first spec ran")
		var old kubevirtv1.VirtualMachineInstance
		Expect(k8sClient.Get(ctx, client.ObjectKey{Namespace: namespace, Name: "web-debian"}, &old)).To(Succeed())
		// What `virtctl restart` does: the VM controller starts a new VMI.
		Expect(k8sClient.Delete(ctx, &old)).To(Succeed())
		vmi, _ := readyVMI(ctx, namespace, "web-debian", old.UID)
		g := bootedGuest(ctx, namespace, "web-debian", vmi.CreationTimestamp.Time)
		f := g.Boot()
		Expect(f.Status).To(Equal("status: done"))
		Expect(f.Datasource).To(ContainSubstring("NoCloud"))
		Expect(f.InstanceID).To(Equal(firstID))
		Expect(g.ReadFile(ctx, guestspecs.MotdFile)).To(Equal(guestspecs.MotdContent))
		guestspecs.ExpectSampleSSHKey(ctx, g)
		code, body, err := g.Get(ctx, metadataURL+"/v1/metadata", "Metadata: true")
		Expect(err).NotTo(HaveOccurred())
		Expect(code).To(Equal(http.StatusOK))
		Expect(strings.Contains(body, `"environment":"production"`)).To(BeTrue(), "the edit outlives the restart: %s", body)
	}, SpecTimeout(20*time.Minute))
})

//go:build e2e

package kind_test

import (
	"context"
	"encoding/json"
	"net/http"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"

	corev1 "k8s.io/api/core/v1"
	kubevirtv1 "kubevirt.io/api/core/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/kubevirt-imds/kubevirt-imds/controllers"
	"github.com/kubevirt-imds/kubevirt-imds/test/e2e/guestspecs"
	"github.com/kubevirt-imds/kubevirt-imds/test/e2e/kind"
)

const metadataURL = "http://169.254.169.254"

// cirros's console credentials, printed on its console.
const cirrosUser, cirrosPassword = "cirros", "gocubsgo"

// runningVMI waits until the VMI name runs and returns it with its
// virt-launcher Pod, which must carry the sidecar.
func runningVMI(ctx context.Context, name string) (*kubevirtv1.VirtualMachineInstance, *corev1.Pod) {
	GinkgoHelper()
	var vmi kubevirtv1.VirtualMachineInstance
	Eventually(func(g Gomega) {
		g.Expect(k8sClient.Get(ctx, client.ObjectKey{Namespace: namespace, Name: name}, &vmi)).To(Succeed())
		g.Expect(vmi.Status.Phase).To(Equal(kubevirtv1.Running))
	}).WithContext(ctx).Should(Succeed())
	var pods corev1.PodList
	Expect(k8sClient.List(ctx, &pods, client.InNamespace(namespace), client.MatchingLabels{kubevirtv1.CreatedByLabel: string(vmi.UID)})).To(Succeed())
	Expect(pods.Items).To(HaveLen(1))
	pod := &pods.Items[0]
	Expect(pod.Spec.InitContainers).To(ContainElement(HaveField("Name", controllers.SidecarContainerName)), "no sidecar in %s", pod.Name)
	return &vmi, pod
}

// login opens vmi's serial console and logs in.
func login(ctx context.Context, name, user, password string) *kind.Console {
	GinkgoHelper()
	c, err := kind.DialConsole(ctx, cfg, namespace, name)
	Expect(err).NotTo(HaveOccurred())
	DeferCleanup(func() {
		if CurrentSpecReport().Failed() {
			GinkgoWriter.Printf("console of %s:\n%s\n", name, c.Output())
		}
		_ = c.Close()
	})
	Expect(c.Login(ctx, user, password)).To(Succeed())
	return c
}

// identityName fetches /v1/identity from inside the guest and returns its name.
func identityName(ctx context.Context, c *kind.Console) string {
	GinkgoHelper()
	var name string
	Eventually(func(g Gomega) {
		code, body, err := guestspecs.CurlGet(ctx, c, metadataURL+"/v1/identity", "Metadata: true")
		g.Expect(err).NotTo(HaveOccurred())
		g.Expect(code).To(Equal(http.StatusOK), body)
		var id struct{ Name string }
		g.Expect(json.Unmarshal([]byte(body), &id)).To(Succeed())
		name = id.Name
	}).WithContext(ctx).WithTimeout(2 * time.Minute).Should(Succeed())
	return name
}

var _ = Describe("on a kind cluster with KubeVirt", func() {
	It("gives an Ubuntu VM (cloud-init, netplan v2) what the sample promises, and live updates", func(ctx SpecContext) {
		vmi, pod := runningVMI(ctx, "web-ubuntu")
		booted := time.Now()
		c := login(ctx, "web-ubuntu", "ubuntu", consolePassword)
		g := &kind.ConsoleGuest{Console: c, Name: "Ubuntu 24.04 (quay.io/containerdisks/ubuntu:24.04)"}
		Expect(g.WaitCloudInit(ctx, booted)).To(Succeed())
		wantID := string(vmi.UID)
		if fw := vmi.Spec.Domain.Firmware; fw != nil && fw.UUID != "" {
			wantID = string(fw.UUID)
		}
		guestspecs.ExpectSampleGuest(ctx, g, guestspecs.Sample{
			InstanceID:     wantID,
			Hostname:       vmi.Name,
			ServiceAccount: namespace + ":default",
			PodName:        pod.Name,
			Address:        "10.0.2.2/24",
		}, reviewer{})
		Expect(g.Boot().NetworkConfig).To(HaveKeyWithValue("/etc/netplan/50-cloud-init.yaml", ContainSubstring("dhcp4: true")))

		By("an edit of the MetadataService reaching the guest's long poll")
		answered := make(chan string, 1)
		go func() {
			defer GinkgoRecover()
			// Without last_etag the poll starts from what it finds: if the
			// edit lands first, the timeout answers with the new value.
			code, body, err := g.Get(ctx, metadataURL+"/v1/metadata?wait_for_change=true&timeout_sec=60", "Metadata: true")
			Expect(err).NotTo(HaveOccurred())
			Expect(code).To(Equal(http.StatusOK))
			answered <- body
		}()
		kctl(ctx, "-n", namespace, "patch", "mds", "web", "--type=merge", "-p", `{"spec":{"metadata":{"tags":{"environment":"production"}}}}`)
		var body string
		Eventually(answered).WithContext(ctx).WithTimeout(3 * time.Minute).Should(Receive(&body))
		Expect(body).To(ContainSubstring(`"environment":"production"`))
	})

	It("serves a cirros VM behind masquerade, and only its own identity", func(ctx SpecContext) {
		runningVMI(ctx, "reach-masquerade")
		c := login(ctx, "reach-masquerade", cirrosUser, cirrosPassword)
		Expect(identityName(ctx, c)).To(Equal("reach-masquerade"))
	})

	It("serves a link-local-only guest with bridge binding, which finds 169.254.169.254 by ARP", func(ctx SpecContext) {
		runningVMI(ctx, "reach-bridge")
		c := login(ctx, "reach-bridge", cirrosUser, cirrosPassword)
		out, code, err := c.Run(ctx, "sudo ip addr flush dev eth0 && sudo ip route flush dev eth0 && sudo ip addr add 169.254.7.9/16 dev eth0 && ip -4 addr show dev eth0")
		Expect(err).NotTo(HaveOccurred())
		Expect(code).To(Equal(0), out)
		Expect(out).To(ContainSubstring("169.254.7.9/16"))
		Expect(identityName(ctx, c)).To(Equal("reach-bridge"))
		out, _, err = c.Run(ctx, "ip neigh show 169.254.169.254")
		Expect(err).NotTo(HaveOccurred())
		Expect(out).To(ContainSubstring("lladdr"), "answered by ARP")
	})
})

package hermetic_test

import (
	"context"
	"encoding/json"
	"net/http"
	"net/netip"
	"os/exec"
	"sync"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	kubevirtv1 "kubevirt.io/api/core/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	imdsv1alpha1 "github.com/kubevirt-imds/kubevirt-imds/api/v1alpha1"
	"github.com/kubevirt-imds/kubevirt-imds/test/controlplane"
	"github.com/kubevirt-imds/kubevirt-imds/test/e2e/guestspecs"
	"github.com/kubevirt-imds/kubevirt-imds/test/e2e/singlenode"
	"github.com/kubevirt-imds/kubevirt-imds/test/fixtures"
	"github.com/kubevirt-imds/kubevirt-imds/test/podnet"
	"github.com/kubevirt-imds/kubevirt-imds/test/vm"
)

const (
	metadataURL = "http://169.254.169.254"
	// The sample MetadataService and VMI (config/samples).
	sampleService = "web"
	sampleVMI     = "web-1"
)

// podnetIMDS is the metadata address, for ARP.
var podnetIMDS = netip.MustParseAddr("169.254.169.254")

// labelSelector selects key=value.
func labelSelector(key, value string) metav1.LabelSelector {
	return metav1.LabelSelector{MatchLabels: map[string]string{key: value}}
}

// masqueradeDHCP is a booting VM's NIC behind KubeVirt's masquerade binding.
func masqueradeDHCP(tb podnet.TB, p *podnet.Pod) { p.PlumbMasqueradeDHCP(tb) }

// masqueradeStatic is the masquerade binding with a guest already addressed,
// for specs that talk from the guest's namespace without booting cloud-init.
func masqueradeStatic(tb podnet.TB, p *podnet.Pod) { p.Plumb(tb, podnet.Masquerade) }

// bootFunc boots a guest of a launcher.
type bootFunc func(ctx context.Context, l *singlenode.Launcher) (guestspecs.Guest, error)

// expectWholePath applies config/samples, launches the sample VMI with
// plumb, boots a guest with boot and checks what a user of the sample would
// check inside it.
func expectWholePath(ctx context.Context, plumb singlenode.PlumbFunc, boot bootFunc) {
	GinkgoHelper()
	ns := newNamespace(ctx)
	By("applying config/samples")
	_, err := node.ApplyKustomization(ctx, samples(), ns)
	Expect(err).NotTo(HaveOccurred())

	By("creating the virt-launcher Pod and playing kubelet for it")
	l := node.Launch(GinkgoT(), ctx, ns, sampleVMI, plumb)
	dumpOnFailure(l)
	Expect(l.HasSidecar()).To(BeTrue(), "the Pod webhook injected no sidecar")

	By("booting the guest with the SMBIOS the VMI webhook set")
	Expect(l.VMI.Spec.Domain.Firmware).NotTo(BeNil())
	Expect(l.VMI.Spec.Domain.Firmware.Serial).To(Equal("ds=nocloud;s=http://169.254.169.254/nocloud/;dsmode=net"))
	g, err := boot(ctx, l)
	Expect(err).NotTo(HaveOccurred())
	DeferCleanup(g.Close)
	wantID := string(l.VMI.UID)
	if uuid := l.VMI.Spec.Domain.Firmware.UUID; uuid != "" {
		wantID = string(uuid)
	}
	guestspecs.ExpectSampleGuest(ctx, g, guestspecs.Sample{
		InstanceID:     wantID,
		Hostname:       sampleVMI,
		ServiceAccount: ns + ":default",
		PodName:        l.Pod.Name,
		Address:        "10.0.2.2/24",
	}, node)

	By("the network configuration the sidecar served, rendered by cloud-init")
	Expect(g.Boot().NetworkConfig).To(HaveKeyWithValue("/etc/netplan/50-cloud-init.yaml", And(
		ContainSubstring(l.Net.GuestMAC.String()), ContainSubstring("dhcp4: true"))))

	By("an edit of the MetadataService answering the guest's long poll")
	res, err := l.LongPollDuring(ctx, g, metadataURL+"/v1/metadata?wait_for_change=true&timeout_sec=120", func(ctx context.Context) error {
		var mds imdsv1alpha1.MetadataService
		if err := node.Client.Get(ctx, types.NamespacedName{Namespace: ns, Name: sampleService}, &mds); err != nil {
			return err
		}
		patch := client.MergeFrom(mds.DeepCopy())
		mds.Spec.Metadata.Tags["environment"] = "production"
		return node.Client.Patch(ctx, &mds, patch)
	})
	Expect(err).NotTo(HaveOccurred())
	Expect(res.Code).To(Equal(http.StatusOK), res.Body)
	var md struct{ Tags map[string]string }
	Expect(json.Unmarshal([]byte(res.Body), &md)).To(Succeed())
	Expect(md.Tags).To(HaveKeyWithValue("environment", "production"))
	GinkgoWriter.Printf("long poll answered %s after the edit\n", res.AfterEdit)
}

var _ = Describe("the whole path", func() {
	It("gives real cloud-init in a namespace its identity, user-data, network configuration and live updates", func(ctx SpecContext) {
		expectWholePath(ctx, masqueradeDHCP, func(ctx context.Context, l *singlenode.Launcher) (guestspecs.Guest, error) {
			return l.BootNamespaceGuest(ctx, trixie, GinkgoWriter)
		})
	}, SpecTimeout(10*time.Minute))

	It("gives a real VM under qemu its identity, user-data, network configuration and live updates", func(ctx SpecContext) {
		for _, tool := range []string{"qemu-system-x86_64", "qemu-img"} {
			if _, err := exec.LookPath(tool); err != nil {
				controlplane.Unavailable(tool + " is not installed (hack/install-test-deps.sh installs it)")
			}
		}
		image, err := vm.EnsureImage(ctx, GinkgoWriter)
		Expect(err).NotTo(HaveOccurred())
		expectWholePath(ctx, singlenode.PlumbVM, func(ctx context.Context, l *singlenode.Launcher) (guestspecs.Guest, error) {
			return l.BootVM(ctx, image, GinkgoWriter)
		})
	}, SpecTimeout(30*time.Minute))
})

// selectedVMI creates a MetadataService selecting app=<name> with user-data
// from a Secret, and a VMI <name>-vm it selects, whose pod-network NIC has
// the binding iface, and waits for its payload.
func selectedVMI(ctx context.Context, ns, name string, iface kubevirtv1.InterfaceBindingMethod) {
	GinkgoHelper()
	Expect(node.Client.Create(ctx, &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name + "-cloud-config"},
		StringData: map[string]string{"user-data": "#cloud-config\nhostname: first\n"},
	})).To(Succeed())
	Expect(node.Client.Create(ctx, fixtures.MetadataService(ns, name, imdsv1alpha1.MetadataServiceSpec{
		Selector: labelSelector("app", name),
		UserData: &imdsv1alpha1.DataSource{SecretRef: &imdsv1alpha1.KeyReference{Name: name + "-cloud-config", Key: "user-data"}},
	}))).To(Succeed())
	vmi := fixtures.VMI(ns, name+"-vm", map[string]string{"app": name})
	vmi.Spec.Domain.Devices.Interfaces[0].InterfaceBindingMethod = iface
	Expect(node.Client.Create(ctx, vmi)).To(Succeed())
	Eventually(func() error {
		return node.Client.Get(ctx, types.NamespacedName{Namespace: ns, Name: imdsv1alpha1.PayloadSecretName(vmi.Name)}, &corev1.Secret{})
	}).WithContext(ctx).Should(Succeed())
}

// guestCode GETs url from the launcher's guest namespace and returns the status code.
func guestCode(ctx context.Context, l *singlenode.Launcher, url string) int {
	GinkgoHelper()
	code, _ := guestGet(ctx, l, url)
	return code
}

// guestGet GETs url from the launcher's guest namespace.
func guestGet(ctx context.Context, l *singlenode.Launcher, url string) (int, string) {
	GinkgoHelper()
	code, body, err := l.Net.GuestGet(ctx, url)
	Expect(err).NotTo(HaveOccurred())
	return code, body
}

var _ = Describe("isolation and resilience", func() {
	It("gives a foreign host on the bridge-binding L2 no ARP and no TCP answer, while the guest is served", func(ctx SpecContext) {
		ns := newNamespace(ctx)
		selectedVMI(ctx, ns, "bridged", kubevirtv1.InterfaceBindingMethod{Bridge: &kubevirtv1.InterfaceBridge{}})
		l := node.Launch(GinkgoT(), ctx, ns, "bridged-vm", func(tb podnet.TB, p *podnet.Pod) { p.Plumb(tb, podnet.BridgeBinding) })
		dumpOnFailure(l)
		Expect(l.HasSidecar()).To(BeTrue())
		Expect(guestCode(ctx, l, metadataURL+"/nocloud/user-data")).To(Equal(http.StatusOK))

		foreign := l.Net.Uplink
		By("an ARP request from the foreign host getting no reply")
		replies, err := foreign.ARPRequest("eth0", podnetIMDS, 800*time.Millisecond)
		Expect(err).NotTo(HaveOccurred())
		Expect(replies).To(BeEmpty())

		By("a connection to veth-imds's MAC, learned out of band, getting no answer")
		mac, err := l.Net.MAC("veth-imds")
		Expect(err).NotTo(HaveOccurred())
		foreign.MustIP(GinkgoT(), "route", "replace", "169.254.169.254/32", "dev", "eth0")
		foreign.MustIP(GinkgoT(), "neigh", "replace", "169.254.169.254", "lladdr", mac.String(), "dev", "eth0", "nud", "permanent")
		Expect(foreign.NoTCPAnswer(ctx, "169.254.169.254:80")).To(Succeed())

		By("the guest still being served")
		Expect(guestCode(ctx, l, metadataURL+"/nocloud/meta-data")).To(Equal(http.StatusOK))
	})

	It("loses no request beyond a sidecar restart's window and changes nothing the guest sees", func(ctx SpecContext) {
		ns := newNamespace(ctx)
		selectedVMI(ctx, ns, "restart", kubevirtv1.InterfaceBindingMethod{Masquerade: &kubevirtv1.InterfaceMasquerade{}})
		l := node.Launch(GinkgoT(), ctx, ns, "restart-vm", masqueradeStatic)
		dumpOnFailure(l)
		paths := []string{"/nocloud/meta-data", "/nocloud/user-data", "/nocloud/network-config", "/openstack/latest/meta_data.json", "/latest/meta-data/instance-id"}
		// The payload first written carries no MAC: the VMI reports its NIC
		// once running, and the controller renders it in (within its
		// throttle). What the restart must not change is that settled view.
		Eventually(func(g Gomega) {
			code, body, err := l.Net.GuestGet(ctx, metadataURL+"/nocloud/network-config")
			g.Expect(err).NotTo(HaveOccurred())
			g.Expect(code).To(Equal(http.StatusOK))
			g.Expect(body).To(ContainSubstring(l.Net.GuestMAC.String()))
		}).WithContext(ctx).Should(Succeed())
		before := map[string]string{}
		for _, p := range paths {
			code, body := guestGet(ctx, l, metadataURL+p)
			Expect(code).To(Equal(http.StatusOK), p)
			before[p] = body
		}
		macBefore, err := l.Net.MAC("veth-imds")
		Expect(err).NotTo(HaveOccurred())

		By("a guest polling at 4 requests per second, under the sidecar's 5/s limit")
		type attempt struct {
			at   time.Time
			code int
			err  error
		}
		var (
			mu       sync.Mutex
			attempts []attempt
		)
		pctx, stopPolling := context.WithCancel(ctx)
		polled := make(chan struct{})
		go func() {
			defer close(polled)
			tick := time.NewTicker(250 * time.Millisecond)
			defer tick.Stop()
			for {
				select {
				case <-pctx.Done():
					return
				case <-tick.C:
				}
				at := time.Now()
				code, _, err := l.Net.GuestGet(pctx, metadataURL+"/nocloud/meta-data")
				if pctx.Err() != nil {
					return
				}
				mu.Lock()
				attempts = append(attempts, attempt{at, code, err})
				mu.Unlock()
			}
		}()
		count := func() int { mu.Lock(); defer mu.Unlock(); return len(attempts) }
		Eventually(count).WithContext(ctx).Should(BeNumerically(">=", 4))

		By("restarting the sidecar as kubelet restarts a native sidecar")
		stopAt := time.Now()
		l.StopSidecar(GinkgoT())
		l.StartSidecar(GinkgoT(), ctx)
		readyAt := time.Now()
		n := count()
		Eventually(count).WithContext(ctx).Should(BeNumerically(">=", n+4))
		stopPolling()
		<-polled

		mu.Lock()
		defer mu.Unlock()
		failed := 0
		for _, a := range attempts {
			if a.err == nil && a.code == http.StatusOK {
				continue
			}
			failed++
			Expect(a.at).To(BeTemporally(">=", stopAt), "a request before the restart failed: %d %v", a.code, a.err)
			Expect(a.at).To(BeTemporally("<=", readyAt), "a request after the sidecar was ready failed: %d %v", a.code, a.err)
		}
		GinkgoWriter.Printf("restart window %s: %d of %d requests failed inside it\n", readyAt.Sub(stopAt), failed, len(attempts))

		By("the guest seeing the same bytes and the same veth-imds MAC")
		for _, p := range paths {
			code, body := guestGet(ctx, l, metadataURL+p)
			Expect(code).To(Equal(http.StatusOK), p)
			Expect(body).To(Equal(before[p]), p)
		}
		Expect(l.Net.MAC("veth-imds")).To(Equal(macBefore))
	})

	It("reaches the guest with an edit of the Secret a MetadataService reads", func(ctx SpecContext) {
		ns := newNamespace(ctx)
		selectedVMI(ctx, ns, "secret", kubevirtv1.InterfaceBindingMethod{Masquerade: &kubevirtv1.InterfaceMasquerade{}})
		l := node.Launch(GinkgoT(), ctx, ns, "secret-vm", masqueradeStatic)
		dumpOnFailure(l)
		Expect(guestCode(ctx, l, metadataURL+"/nocloud/user-data")).To(Equal(http.StatusOK))

		var s corev1.Secret
		Expect(node.Client.Get(ctx, types.NamespacedName{Namespace: ns, Name: "secret-cloud-config"}, &s)).To(Succeed())
		s.Data["user-data"] = []byte("#cloud-config\nhostname: second\n")
		Expect(node.Client.Update(ctx, &s)).To(Succeed())
		Eventually(func(g Gomega) {
			code, body, err := l.Net.GuestGet(ctx, metadataURL+"/nocloud/user-data")
			g.Expect(err).NotTo(HaveOccurred())
			g.Expect(code).To(Equal(http.StatusOK))
			g.Expect(body).To(Equal("#cloud-config\nhostname: second\n"))
		}).WithContext(ctx).Should(Succeed())
	})
})

var _ = Describe("with the operator stopped", Serial, func() {
	It("still creates the VM's Pod, and reports the missing sidecar when the operator returns", func(ctx SpecContext) {
		ns := newNamespace(ctx)
		Expect(node.Client.Create(ctx, fixtures.MetadataService(ns, "late", imdsv1alpha1.MetadataServiceSpec{
			Selector: labelSelector("app", "late"),
		}))).To(Succeed())
		Eventually(func(g Gomega) {
			var m imdsv1alpha1.MetadataService
			g.Expect(node.Client.Get(ctx, types.NamespacedName{Namespace: ns, Name: "late"}, &m)).To(Succeed())
			g.Expect(m.Status.ObservedGeneration).To(Equal(m.Generation))
		}).WithContext(ctx).Should(Succeed())

		By("stopping the manager, as when its Deployment is down")
		node.StopManager(GinkgoT())
		DeferCleanup(func() {
			if !node.ManagerRunning() {
				node.StartManager(GinkgoT())
			}
		})

		By("creating a selected VMI and its launcher Pod: the webhooks fail open")
		Expect(node.Client.Create(ctx, fixtures.VMI(ns, "late-vm", map[string]string{"app": "late"}))).To(Succeed())
		l := node.Launch(GinkgoT(), ctx, ns, "late-vm", masqueradeStatic)
		Expect(l.HasSidecar()).To(BeFalse())
		Expect(node.Client.Get(ctx, client.ObjectKeyFromObject(l.Pod), &corev1.Pod{})).To(Succeed())

		By("starting the manager again")
		node.StartManager(GinkgoT())
		Eventually(func(g Gomega) {
			var m imdsv1alpha1.MetadataService
			g.Expect(node.Client.Get(ctx, types.NamespacedName{Namespace: ns, Name: "late"}, &m)).To(Succeed())
			c := meta.FindStatusCondition(m.Status.Conditions, imdsv1alpha1.ConditionInstancesConfigured)
			g.Expect(c).NotTo(BeNil())
			g.Expect(c.Reason).To(Equal(imdsv1alpha1.ReasonSidecarMissing))
			g.Expect(c.Message).To(ContainSubstring("late-vm"))
		}).WithContext(ctx).Should(Succeed())
		// The payload is there for the VM's next start.
		Expect(node.Client.Get(ctx, types.NamespacedName{Namespace: ns, Name: imdsv1alpha1.PayloadSecretName("late-vm")}, &corev1.Secret{})).To(Succeed())
	})
})

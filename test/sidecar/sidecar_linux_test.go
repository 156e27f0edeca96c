package sidecar_test

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"os/exec"
	"slices"
	"strings"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"

	"github.com/kubevirt-imds/kubevirt-imds/api/payload"
	"github.com/kubevirt-imds/kubevirt-imds/sidecar/network"
	"github.com/kubevirt-imds/kubevirt-imds/sidecar/store/storetest"
	"github.com/kubevirt-imds/kubevirt-imds/test/podnet"
)

const (
	metaURL  = "http://169.254.169.254/nocloud/meta-data"
	readyURL = "http://127.0.0.2:8081/readyz"
)

var imds = netip.MustParseAddr("169.254.169.254")

// expectServed waits until the guest gets its meta-data over HTTP.
func expectServed(ctx context.Context, pod *podnet.Pod) {
	GinkgoHelper()
	Eventually(func(g Gomega) {
		code, body, err := pod.GuestGet(ctx, metaURL)
		g.Expect(err).NotTo(HaveOccurred())
		g.Expect(code).To(Equal(http.StatusOK))
		g.Expect(body).To(ContainSubstring("instance-id: " + storetest.Document().Instance.ID))
	}).WithContext(ctx).WithTimeout(15 * time.Second).WithPolling(20 * time.Millisecond).Should(Succeed())
}

// expectReady waits until /readyz answers 200.
func expectReady(ctx context.Context, pod *podnet.Pod) {
	GinkgoHelper()
	Eventually(func(g Gomega) {
		code, body, err := pod.AdminGet(ctx, readyURL)
		g.Expect(err).NotTo(HaveOccurred())
		g.Expect(code).To(Equal(http.StatusOK), body)
	}).WithContext(ctx).WithTimeout(15 * time.Second).WithPolling(10 * time.Millisecond).Should(Succeed())
}

// expectDial connects from ns to addr and closes the connection.
func expectDial(ctx context.Context, ns podnet.NS, addr string) {
	GinkgoHelper()
	dctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	c, err := ns.Dial(dctx, "tcp4", addr)
	Expect(err).NotTo(HaveOccurred(), "from %s to %s", ns.Name, addr)
	Expect(c.Close()).To(Succeed())
}

// expectNoTCPAnswer dials from ns and expects silence: a timeout, not a
// reset or an ICMP error.
func expectNoTCPAnswer(ctx context.Context, ns podnet.NS, addr string) {
	GinkgoHelper()
	Expect(ns.NoTCPAnswer(ctx, addr)).To(Succeed())
}

func routeGet(pod *podnet.Pod, dst string) string {
	out, err := pod.IP("route", "get", dst)
	if err != nil {
		return "error: " + err.Error()
	}
	return out
}

var _ = Describe("the sidecar in a virt-launcher-like Pod", func() {
	DescribeTable("serves the guest whatever rp_filter is",
		func(ctx SpecContext, topo podnet.Topology, rpFilter string) {
			pod := podnet.NewPod(GinkgoT())
			// Before plumbing, so the new devices inherit it too.
			for _, k := range []string{"all", "default"} {
				pod.Sysctl(GinkgoT(), "net.ipv4.conf."+k+".rp_filter", rpFilter)
			}
			pod.Plumb(GinkgoT(), topo)
			nodeLocalDNS := routeGet(pod, "169.254.20.10")
			bridgeMAC, err := pod.MAC("k6t-eth0")
			Expect(err).NotTo(HaveOccurred())

			p := startSidecar(pod, writePayload())
			expectServed(ctx, pod)
			expectReady(ctx, pod)

			By("converging: every reconciliation after the first finds nothing to do")
			Expect(strings.Count(p.logs.String(), `"msg":"applying network plan"`)).To(Equal(1), p.logs.String())

			By("leaving the Pod's other link-local traffic alone (NodeLocal DNSCache)")
			Expect(routeGet(pod, "169.254.20.10")).To(Equal(nodeLocalDNS))
			By("keeping the kernel from answering ARP on veth-imds, set over netlink")
			Expect(pod.ReadSysctl("net/ipv4/conf/veth-imds/arp_ignore")).To(Equal("8"))
			Expect(pod.ReadSysctl("net/ipv4/conf/k6t-eth0/arp_ignore")).To(Equal("1"))
			By("redirecting the guest's packets with nftables only where its gateway may lie beyond the Pod")
			tables, err := pod.NFTBridgeTables()
			Expect(err).NotTo(HaveOccurred())
			if topo == podnet.BridgeBinding || topo == podnet.BridgeBindingRouted {
				Expect(tables).To(ConsistOf(network.RedirectTable))
			} else {
				Expect(tables).To(BeEmpty())
			}
			By("leaving the bridge's MAC, the masquerade guest's gateway, unchanged")
			Expect(pod.MAC("k6t-eth0")).To(Equal(bridgeMAC))
			By("using the MAC derived from the instance's UID")
			mac, err := pod.MAC(network.LinkName)
			Expect(err).NotTo(HaveOccurred())
			Expect(mac.String()).To(Equal(network.DeriveMAC(storetest.Document().Instance.UID, "k6t-eth0").String()))
		},
		Entry("masquerade, rp_filter 0", podnet.Masquerade, "0"),
		Entry("masquerade, rp_filter 1", podnet.Masquerade, "1"),
		Entry("masquerade, rp_filter 2", podnet.Masquerade, "2"),
		Entry("link-local guest, rp_filter 0", podnet.LinkLocal, "0"),
		Entry("link-local guest, rp_filter 1", podnet.LinkLocal, "1"),
		Entry("link-local guest, rp_filter 2", podnet.LinkLocal, "2"),
		Entry("bridge binding, rp_filter 0", podnet.BridgeBinding, "0"),
		Entry("bridge binding, rp_filter 1", podnet.BridgeBinding, "1"),
		Entry("bridge binding, rp_filter 2", podnet.BridgeBinding, "2"),
		Entry("bridge binding, routed guest, rp_filter 0", podnet.BridgeBindingRouted, "0"),
		Entry("bridge binding, routed guest, rp_filter 1", podnet.BridgeBindingRouted, "1"),
		Entry("bridge binding, routed guest, rp_filter 2", podnet.BridgeBindingRouted, "2"),
	)

	It("steers a routed bridge-binding guest's packets for 169.254.169.254 to the sidecar, never to the node", func(ctx SpecContext) {
		pod := podnet.NewPod(GinkgoT())
		pod.Plumb(GinkgoT(), podnet.BridgeBindingRouted)
		node, gw := pod.Uplink, podnet.UplinkIP.Addr()

		By("giving the node, the guest's gateway, a metadata service of its own, as a cloud node has")
		node.MustIP(GinkgoT(), "addr", "add", imds.String()+"/32", "dev", "lo")
		nodeIMDS := node.Accept(GinkgoT(), "169.254.169.254:80")
		nodeService := node.Accept(GinkgoT(), net.JoinHostPort(gw.String(), "8080"))

		By("showing the leak while no sidecar runs: the guest's packets for 169.254.169.254 reach the node")
		expectDial(ctx, pod.Guest, "169.254.169.254:80")
		Eventually(nodeIMDS.Accepted).WithContext(ctx).WithTimeout(5 * time.Second).Should(Equal(1))

		p := startSidecar(pod, writePayload())
		expectReady(ctx, pod)
		seen := node.Capture(GinkgoT(), "eth0")
		expectServed(ctx, pod)
		Expect(p.logs.String()).To(ContainSubstring(`"action":"replace redirect iifname tap0 ip daddr 169.254.169.254`))

		expectNoLeak := func(wantGatewayConns int) {
			GinkgoHelper()
			By("keeping the guest's ordinary traffic to its gateway on the uplink")
			expectDial(ctx, pod.Guest, net.JoinHostPort(gw.String(), "8080"))
			Eventually(nodeService.Accepted).WithContext(ctx).WithTimeout(5 * time.Second).Should(Equal(wantGatewayConns))
			// The guest sent that connection's SYN after all its packets for
			// 169.254.169.254, on the same path: once the node has seen it,
			// it has seen any of them that leaked.
			Eventually(func() []podnet.Frame { return seen.Frames(podnet.ToIPv4(gw)) }).
				WithContext(ctx).WithTimeout(5 * time.Second).ShouldNot(BeEmpty())
			Expect(seen.Err()).NotTo(HaveOccurred())
			Expect(seen.Frames(podnet.ToIPv4(imds))).To(BeEmpty(), "the node received packets for 169.254.169.254")
			Expect(seen.Frames(podnet.ARPFrom(imds))).To(BeEmpty(), "veth-imds's ARP crossed into the uplink")
			Expect(nodeIMDS.Accepted()).To(Equal(1), "the node's own service was reached again")
		}
		expectNoLeak(1)

		By("replying through veth-imds: the Pod resolved the guest's MAC there, across the isolated port")
		Expect(pod.IP("route", "get", pod.GuestIP.Addr().String(), "from", imds.String())).To(ContainSubstring("dev " + network.LinkName))
		neigh, err := pod.Neighbour(network.LinkName, pod.GuestIP.Addr())
		Expect(err).NotTo(HaveOccurred())
		Expect(neigh).To(ContainSubstring("lladdr " + pod.GuestMAC.String()))

		By("adopting the redirect after a restart")
		Expect(p.stop()).To(Succeed())
		second := startSidecar(pod, writePayload())
		expectServed(ctx, pod)
		Expect(second.logs.String()).NotTo(ContainSubstring(`"msg":"applying network plan"`), "adopting changes nothing")
		expectNoLeak(2)

		By("failing closed: without veth-imds's FDB entry the bridge floods the redirected frames, and still none reaches the uplink")
		mac, err := pod.MAC(network.LinkName)
		Expect(err).NotTo(HaveOccurred())
		out, err := exec.Command("bridge", "-n", pod.Name, "fdb", "del", mac.String(), "dev", network.PeerName, "master").CombinedOutput()
		Expect(err).NotTo(HaveOccurred(), "%s", out)
		expectServed(ctx, pod)
		expectNoLeak(3)
	})

	It("answers a link-local guest's ARP for 169.254.169.254, and only that", func(ctx SpecContext) {
		pod := podnet.NewPod(GinkgoT())
		pod.Plumb(GinkgoT(), podnet.LinkLocal)
		startSidecar(pod, writePayload())
		expectReady(ctx, pod)
		mac, err := pod.MAC(network.LinkName)
		Expect(err).NotTo(HaveOccurred())

		replies, err := pod.Guest.ARPRequest("eth0", imds, 500*time.Millisecond)
		Expect(err).NotTo(HaveOccurred())
		Expect(replies).To(ConsistOf(podnet.ARPReply{SenderMAC: mac, SenderIP: imds}),
			"exactly one answer, from veth-imds: not from the bridge, not from the kernel")

		By("never answering for the gateway (no ARP flux)")
		gw := netip.MustParseAddr("10.0.2.1")
		replies, err = pod.Guest.ARPRequest("eth0", gw, 500*time.Millisecond)
		Expect(err).NotTo(HaveOccurred())
		for _, r := range replies {
			Expect(r.SenderMAC.String()).NotTo(Equal(mac.String()), "veth-imds answered for %s", gw)
		}
		expectServed(ctx, pod)
	})

	DescribeTable("gives a foreign host on the Pod's L2 (bridge binding) no ARP and no TCP answer", func(ctx SpecContext, topo podnet.Topology) {
		pod := podnet.NewPod(GinkgoT())
		pod.Plumb(GinkgoT(), topo)
		startSidecar(pod, writePayload())
		expectServed(ctx, pod)
		foreign := pod.Uplink

		By("sending a real ARP request from the foreign host")
		replies, err := foreign.ARPRequest("eth0", imds, 800*time.Millisecond)
		Expect(err).NotTo(HaveOccurred())
		Expect(replies).To(BeEmpty())

		By("addressing veth-imds's MAC directly, learned out of band")
		mac, err := pod.MAC(network.LinkName)
		Expect(err).NotTo(HaveOccurred())
		foreign.MustIP(GinkgoT(), "route", "replace", "169.254.169.254/32", "dev", "eth0")
		foreign.MustIP(GinkgoT(), "neigh", "replace", "169.254.169.254", "lladdr", mac.String(), "dev", "eth0", "nud", "permanent")
		expectNoTCPAnswer(ctx, foreign, "169.254.169.254:80")

		By("addressing the bridge's own MAC, so the Pod would route it locally")
		bmac, err := pod.MAC("k6t-eth0")
		Expect(err).NotTo(HaveOccurred())
		foreign.MustIP(GinkgoT(), "neigh", "replace", "169.254.169.254", "lladdr", bmac.String(), "dev", "eth0", "nud", "permanent")
		expectNoTCPAnswer(ctx, foreign, "169.254.169.254:80")

		By("still serving the guest")
		expectServed(ctx, pod)
	},
		Entry("guest on-link to 169.254.169.254", podnet.BridgeBinding),
		// The redirect applies to the guest's port only.
		Entry("guest routing through the node", podnet.BridgeBindingRouted),
	)

	It("gives packets for 169.254.169.254 from the Pod's uplink (masquerade) no answer", func(ctx SpecContext) {
		pod := podnet.NewPod(GinkgoT())
		pod.Plumb(GinkgoT(), podnet.Masquerade)
		startSidecar(pod, writePayload())
		expectServed(ctx, pod)
		// KubeVirt's nat table sends everything arriving on the Pod's eth0
		// to the guest, whatever its destination: a connection from the
		// node to 169.254.169.254:80 reaches the guest's port 80, never
		// the metadata service.
		var guestListener net.Listener
		Expect(pod.Guest.Do(func() (err error) {
			guestListener, err = net.Listen("tcp4", ":80")
			return err
		})).To(Succeed())
		DeferCleanup(guestListener.Close)
		accepted := make(chan net.Addr, 1)
		go func() {
			if c, err := guestListener.Accept(); err == nil {
				accepted <- c.LocalAddr()
				_ = c.Close()
			}
		}()
		pod.Uplink.MustIP(GinkgoT(), "route", "add", "169.254.169.254/32", "via", podnet.PodIP.Addr().String())
		c, err := pod.Uplink.Dial(ctx, "tcp4", "169.254.169.254:80")
		Expect(err).NotTo(HaveOccurred(), "the guest's listener, through KubeVirt's DNAT")
		_ = c.Close()
		Eventually(accepted).WithContext(ctx).Should(Receive(Equal(net.Addr(&net.TCPAddr{IP: net.ParseIP(podnet.MasqueradeGuestAddr).To4(), Port: 80}))),
			"the connection went to the guest")

		By("keeping the admin endpoint out of the guest's reach")
		for _, addr := range []string{"10.0.2.1:8081", "169.254.169.254:8081"} {
			dctx, cancel := context.WithTimeout(ctx, time.Second)
			c, err := pod.Guest.Dial(dctx, "tcp4", addr)
			cancel()
			if c != nil {
				c.Close()
			}
			Expect(err).To(HaveOccurred(), "the guest reached %s", addr)
		}
	})

	It("serves on the bridge the payload names (a Multus secondary), and only there", func(ctx SpecContext) {
		pod := podnet.NewPod(GinkgoT())
		pod.Plumb(GinkgoT(), podnet.Masquerade)
		primary := pod.Guest
		pod.PlumbOn(GinkgoT(), podnet.Secondary, "k6t-a1b2c3d4e5f", "tapa1b2c3d4e5f")
		doc := storetest.Document()
		doc.Serve = payload.Serve{Interface: "storage", Bridge: "k6t-a1b2c3d4e5f"}
		startSidecar(pod, writeDocument(doc))
		expectServed(ctx, pod)

		mac, err := pod.MAC(network.LinkName)
		Expect(err).NotTo(HaveOccurred())
		Expect(mac.String()).To(Equal(network.DeriveMAC(doc.Instance.UID, "k6t-a1b2c3d4e5f").String()))
		Expect(pod.MustIP(GinkgoT(), "link", "show", network.PeerName)).To(ContainSubstring("master k6t-a1b2c3d4e5f"))
		By("giving the primary interface's guest, routed through k6t-eth0, no answer")
		expectNoTCPAnswer(ctx, primary, "169.254.169.254:80")
	})

	It("runs as nobody with NET_ADMIN, NET_RAW and NET_BIND_SERVICE only, and /proc/sys read-only", func(ctx SpecContext) {
		pod := podnet.NewPod(GinkgoT())
		pod.Plumb(GinkgoT(), podnet.LinkLocal)
		p := startSidecar(pod, writePayload())
		expectServed(ctx, pod)
		Expect(p.status("Uid")).To(HavePrefix("65534\t"))
		// CAP_NET_BIND_SERVICE (10), CAP_NET_ADMIN (12), CAP_NET_RAW (13).
		Expect(p.status("CapEff")).To(Equal("0000000000003400"))
		Expect(p.status("CapBnd")).To(Equal("0000000000003400"))
		Expect(p.logs.String()).NotTo(ContainSubstring("read-only file system"))
	})

	It("keeps veth-imds, its MAC and the guest's neighbour entry across a restart", func(ctx SpecContext) {
		pod := podnet.NewPod(GinkgoT())
		pod.Plumb(GinkgoT(), podnet.LinkLocal)
		payload := writePayload()
		first := startSidecar(pod, payload)
		expectServed(ctx, pod)
		mac, err := pod.MAC(network.LinkName)
		Expect(err).NotTo(HaveOccurred())
		neigh, err := pod.Guest.Neighbour("eth0", imds)
		Expect(err).NotTo(HaveOccurred())
		Expect(neigh).To(ContainSubstring("lladdr " + mac.String()))

		Expect(first.stop()).To(Succeed(), "graceful exit on SIGTERM")
		after, err := pod.MAC(network.LinkName)
		Expect(err).NotTo(HaveOccurred(), "veth-imds must survive the sidecar")
		Expect(after.String()).To(Equal(mac.String()))

		second := startSidecar(pod, payload)
		expectServed(ctx, pod)
		Expect(second.logs.String()).NotTo(ContainSubstring(`"msg":"applying network plan"`), "adopting changes nothing")
		after, err = pod.MAC(network.LinkName)
		Expect(err).NotTo(HaveOccurred())
		Expect(after.String()).To(Equal(mac.String()), "adopted, not recreated")
		neigh, err = pod.Guest.Neighbour("eth0", imds)
		Expect(err).NotTo(HaveOccurred())
		Expect(neigh).To(ContainSubstring("lladdr " + mac.String()))
		Expect(neigh).NotTo(ContainSubstring("FAILED"))
	})

	It("repairs veth-imds when it is removed under it, with the same MAC", func(ctx SpecContext) {
		pod := podnet.NewPod(GinkgoT())
		pod.Plumb(GinkgoT(), podnet.LinkLocal)
		startSidecar(pod, writePayload())
		expectServed(ctx, pod)
		mac, err := pod.MAC(network.LinkName)
		Expect(err).NotTo(HaveOccurred())

		pod.MustIP(GinkgoT(), "link", "del", network.LinkName)
		Eventually(func() (string, error) {
			m, err := pod.MAC(network.LinkName)
			return m.String(), err
		}).WithContext(ctx).WithTimeout(10 * time.Second).WithPolling(5 * time.Millisecond).Should(Equal(mac.String()))
		expectServed(ctx, pod)
		Expect(pod.MustIP(GinkgoT(), "-d", "link", "show", network.PeerName)).To(ContainSubstring("isolated on"))
	})

	It("waits for the bridge and the tap, saying why, and becomes ready when they appear", func(ctx SpecContext) {
		pod := podnet.NewPod(GinkgoT())
		startSidecar(pod, writePayload())
		Eventually(func(g Gomega) {
			code, body, err := pod.AdminGet(ctx, readyURL)
			g.Expect(err).NotTo(HaveOccurred())
			g.Expect(code).To(Equal(http.StatusServiceUnavailable))
			g.Expect(body).To(ContainSubstring("bridge k6t-eth0 does not exist yet"))
		}).WithContext(ctx).WithTimeout(10 * time.Second).WithPolling(10 * time.Millisecond).Should(Succeed())

		pod.MustIP(GinkgoT(), "link", "add", "k6t-eth0", "type", "bridge")
		Eventually(func(g Gomega) {
			_, body, err := pod.AdminGet(ctx, readyURL)
			g.Expect(err).NotTo(HaveOccurred())
			g.Expect(body).To(ContainSubstring("guest port tap0 does not exist yet on k6t-eth0"))
		}).WithContext(ctx).WithTimeout(10 * time.Second).WithPolling(5 * time.Millisecond).Should(Succeed())
		pod.MustIP(GinkgoT(), "link", "del", "k6t-eth0")

		pod.Plumb(GinkgoT(), podnet.Masquerade)
		expectReady(ctx, pod)
		expectServed(ctx, pod)
	})

	It("serves within a few milliseconds of the bridge appearing (measured, not asserted)", func(ctx SpecContext) {
		const samples = 5
		var ready, served []time.Duration
		for range samples {
			pod := podnet.NewPod(GinkgoT())
			startSidecar(pod, writePayload())
			Eventually(func(g Gomega) {
				code, _, err := pod.AdminGet(ctx, readyURL)
				g.Expect(err).NotTo(HaveOccurred())
				g.Expect(code).To(Equal(http.StatusServiceUnavailable))
			}).WithContext(ctx).WithTimeout(10 * time.Second).WithPolling(10 * time.Millisecond).Should(Succeed())

			pod.Plumb(GinkgoT(), podnet.Masquerade)
			Eventually(func(g Gomega) {
				code, _, err := pod.AdminGet(ctx, readyURL)
				g.Expect(err).NotTo(HaveOccurred())
				g.Expect(code).To(Equal(http.StatusOK))
			}).WithContext(ctx).WithTimeout(10 * time.Second).WithPolling(time.Millisecond).Should(Succeed())
			ready = append(ready, time.Since(pod.BridgeAt))
			expectServed(ctx, pod)
			served = append(served, time.Since(pod.BridgeAt))
		}
		slices.Sort(ready)
		slices.Sort(served)
		msg := fmt.Sprintf("bridge+tap created (one ip -batch) → /readyz 200: min %s median %s max %s; → first guest HTTP 200: min %s median %s max %s (n=%d)",
			ready[0], ready[samples/2], ready[samples-1], served[0], served[samples/2], served[samples-1], samples)
		AddReportEntry("bridge appearing → serving", msg)
		GinkgoWriter.Println("MEASURED " + msg)
	})

	It("fails with a clear message when the bridge never appears", func(ctx SpecContext) {
		pod := podnet.NewPod(GinkgoT())
		p := startSidecar(pod, writePayload(), "--network-timeout", "400ms")
		Eventually(p.done).WithTimeout(10 * time.Second).Should(BeClosed())
		Expect(p.err).To(HaveOccurred())
		Expect(p.logs.String()).To(ContainSubstring("the VM's network was not ready after 400ms: bridge k6t-eth0 does not exist yet"))
	})
})

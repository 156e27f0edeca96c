package sidecar_test

import (
	"errors"
	"net"
	"net/netip"
	"os"
	"sync/atomic"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	"golang.org/x/net/icmp"
	"golang.org/x/net/ipv4"

	"github.com/kubevirt-imds/kubevirt-imds/test/podnet"
)

// answerWindow bounds how long an ICMP or UDP probe waits for an answer
// that must not come; on these namespaces an answer takes well under a
// millisecond.
const answerWindow = time.Second

var echoSeq atomic.Int32

// echoReplied sends one ICMP echo request from ns to dst and reports
// whether dst replied within answerWindow.
func echoReplied(ns podnet.NS, dst netip.Addr) (bool, error) {
	var c *icmp.PacketConn
	if err := ns.Do(func() error {
		var err error
		c, err = icmp.ListenPacket("ip4:icmp", "0.0.0.0")
		return err
	}); err != nil {
		return false, err
	}
	defer c.Close()
	id, seq := os.Getpid()&0xffff, int(echoSeq.Add(1))
	req, err := (&icmp.Message{Type: ipv4.ICMPTypeEcho, Body: &icmp.Echo{ID: id, Seq: seq, Data: []byte("kubevirt-imds guard")}}).Marshal(nil)
	if err != nil {
		return false, err
	}
	if err := c.SetDeadline(time.Now().Add(answerWindow)); err != nil {
		return false, err
	}
	if _, err := c.WriteTo(req, &net.IPAddr{IP: dst.AsSlice()}); err != nil {
		return false, err
	}
	buf := make([]byte, 1500)
	for {
		n, peer, err := c.ReadFrom(buf)
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			return false, nil
		}
		if err != nil {
			return false, err
		}
		// A raw socket sees every ICMP message: only this echo's reply counts.
		m, err := icmp.ParseMessage(1, buf[:n])
		if err != nil || m.Type != ipv4.ICMPTypeEchoReply || peer.String() != dst.String() {
			continue
		}
		if e, ok := m.Body.(*icmp.Echo); ok && e.ID == id && e.Seq == seq {
			return true, nil
		}
	}
}

// udpListener is a UDP socket bound inside a namespace.
type udpListener struct {
	conn net.PacketConn
}

// listenUDP binds addr inside ns until the spec ends.
func listenUDP(ns podnet.NS, addr string) *udpListener {
	GinkgoHelper()
	var c net.PacketConn
	Expect(ns.Do(func() error {
		var err error
		c, err = net.ListenPacket("udp4", addr)
		return err
	})).To(Succeed())
	DeferCleanup(c.Close)
	return &udpListener{conn: c}
}

// received returns the next datagram's payload, or "" when none arrives
// within answerWindow.
func (u *udpListener) received() string {
	GinkgoHelper()
	Expect(u.conn.SetReadDeadline(time.Now().Add(answerWindow))).To(Succeed())
	buf := make([]byte, 1500)
	n, _, err := u.conn.ReadFrom(buf)
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return ""
	}
	Expect(err).NotTo(HaveOccurred())
	return string(buf[:n])
}

// sendUDP sends one datagram from inside ns.
func sendUDP(ns podnet.NS, addr, payload string) {
	GinkgoHelper()
	var c net.Conn
	Expect(ns.Do(func() error {
		var err error
		c, err = net.Dial("udp4", addr)
		return err
	})).To(Succeed())
	defer c.Close()
	_, err := c.Write([]byte(payload))
	Expect(err).NotTo(HaveOccurred())
}

var _ = Describe("the guard on 169.254.169.254", func() {
	// Any port but the metadata server's; the Pod's own services listen on
	// such ports, bound to every address.
	const other = "9999"

	DescribeTable("lets the guest reach the metadata server through 169.254.169.254, and nothing else in the Pod",
		func(ctx SpecContext, topo podnet.Topology, gateway netip.Addr) {
			pod := podnet.NewPod(GinkgoT())
			pod.Plumb(GinkgoT(), topo)
			startSidecar(pod, writePayload())
			expectServed(ctx, pod)

			By("running a TCP and a UDP service of the Pod on 0.0.0.0:" + other)
			tcpService := pod.Accept(GinkgoT(), "0.0.0.0:"+other)
			udpService := listenUDP(pod.NS, "0.0.0.0:"+other)
			imdsOther := net.JoinHostPort(imds.String(), other)

			By("showing the Pod itself reaches them at 169.254.169.254, over loopback")
			expectDial(ctx, pod.NS, imdsOther)
			Eventually(tcpService.Accepted).WithContext(ctx).WithTimeout(5 * time.Second).Should(Equal(1))
			sendUDP(pod.NS, imdsOther, "from the Pod")
			Expect(udpService.received()).To(Equal("from the Pod"))

			By("giving the guest's TCP connection to that port no answer, not even a reset")
			expectNoTCPAnswer(ctx, pod.Guest, imdsOther)
			Expect(tcpService.Accepted()).To(Equal(1), "the guest's connection reached the Pod's service")

			By("delivering none of the guest's UDP datagrams to the Pod's service")
			sendUDP(pod.Guest, imdsOther, "from the guest")
			Expect(udpService.received()).To(BeEmpty())

			By("answering the guest's ICMP echo at its gateway, but not at 169.254.169.254")
			Expect(echoReplied(pod.Guest, gateway)).To(BeTrue(), "no echo reply from the gateway %s: the probe itself is broken", gateway)
			Expect(echoReplied(pod.Guest, imds)).To(BeFalse(), "169.254.169.254 answered the guest's ping")

			By("still serving the guest over HTTP on port 80")
			expectServed(ctx, pod)
		},
		Entry("masquerade", podnet.Masquerade, netip.MustParseAddr(podnet.MasqueradeGatewayAddr)),
		Entry("bridge binding, guest on-link to 169.254.169.254", podnet.BridgeBinding, podnet.UplinkIP.Addr()),
		Entry("bridge binding, guest routing through the node", podnet.BridgeBindingRouted, podnet.UplinkIP.Addr()),
	)

	It("guards a link-local-only guest too", func(ctx SpecContext) {
		pod := podnet.NewPod(GinkgoT())
		pod.Plumb(GinkgoT(), podnet.LinkLocal)
		startSidecar(pod, writePayload())
		expectServed(ctx, pod)
		service := pod.Accept(GinkgoT(), "0.0.0.0:"+other)
		expectNoTCPAnswer(ctx, pod.Guest, net.JoinHostPort(imds.String(), other))
		Expect(service.Accepted()).To(BeZero())
		Expect(echoReplied(pod.Guest, imds)).To(BeFalse(), "169.254.169.254 answered the guest's ping")
		expectServed(ctx, pod)
	})
})

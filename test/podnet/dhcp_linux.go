package podnet

import (
	"bufio"
	"os/exec"
	"strings"
	"time"
)

// Masquerade addressing, as KubeVirt's in-Pod DHCP server hands it out.
const (
	MasqueradeGuestAddr   = "10.0.2.2"
	MasqueradeGatewayAddr = "10.0.2.1"
)

// dhcpStartTimeout bounds dnsmasq's start; it is ready in milliseconds.
const dhcpStartTimeout = 30 * time.Second

// ServeDHCP runs ServeMasqueradeDHCP on the Pod's bridge for its guest NIC.
func (p *Pod) ServeDHCP(tb TB) {
	tb.Helper()
	ServeMasqueradeDHCP(tb, p.Name, p.Bridge, p.GuestMAC.String())
}

// ServeMasqueradeDHCP runs dnsmasq on bridge in the network namespace ns the
// way KubeVirt's masquerade DHCP server answers: the guest NIC guestMAC
// always gets 10.0.2.2/24 with router 10.0.2.1, whatever client identifier
// it presents (cloud-init's ephemeral DHCP and the guest's own client use
// different ones). It takes names rather than a Pod so that networks built
// without this package can be served too. dnsmasq's log lines go to tb.Logf;
// it stops in tb's Cleanup.
func ServeMasqueradeDHCP(tb TB, ns, bridge, guestMAC string) {
	tb.Helper()
	cmd := exec.Command("ip", "netns", "exec", ns, "dnsmasq",
		"--keep-in-foreground", "--log-facility=-", "--log-dhcp", "--conf-file=/dev/null",
		"--port=0", "--no-hosts", "--no-resolv", "--leasefile-ro", "--pid-file=",
		"--interface="+bridge, "--bind-interfaces", "--dhcp-authoritative",
		"--dhcp-range=10.0.2.0,static,255.255.255.0,1h",
		"--dhcp-host="+guestMAC+",id:*,"+MasqueradeGuestAddr,
		"--dhcp-option=option:router,"+MasqueradeGatewayAddr)
	stderr, err := cmd.StderrPipe()
	if err != nil {
		tb.Fatalf("dnsmasq: %v", err)
	}
	if err := cmd.Start(); err != nil {
		tb.Fatalf("starting dnsmasq (package dnsmasq-base): %v", err)
	}
	exited := make(chan struct{})
	ready := make(chan struct{})
	go func() {
		sc := bufio.NewScanner(stderr)
		signalled := false
		for sc.Scan() {
			line := sc.Text()
			tb.Logf("dnsmasq: %s", line)
			if !signalled && strings.Contains(line, "DHCP, static leases only") {
				signalled = true
				close(ready)
			}
		}
		_ = cmd.Wait()
		close(exited)
	}()
	tb.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-exited
	})
	select {
	case <-ready:
	case <-exited:
		tb.Fatalf("dnsmasq exited before serving DHCP on %s", bridge)
	case <-time.After(dhcpStartTimeout):
		tb.Fatalf("dnsmasq did not start serving DHCP on %s within %s", bridge, dhcpStartTimeout)
	}
}

// PlumbMasqueradeDHCP is Plumb(Masquerade) for a guest that configures
// itself, as a booting VM does: its NIC is down and unaddressed, and
// ServeDHCP answers it.
func (p *Pod) PlumbMasqueradeDHCP(tb TB) {
	tb.Helper()
	p.Plumb(tb, Masquerade)
	p.Guest.MustIP(tb, "addr", "flush", "dev", "eth0")
	p.Guest.MustIP(tb, "link", "set", "eth0", "down")
	if out := p.Guest.MustIP(tb, "-4", "addr", "show", "dev", "eth0"); strings.Contains(out, "inet ") {
		tb.Fatalf("the guest NIC kept an address: %s", out)
	}
	p.ServeDHCP(tb)
}

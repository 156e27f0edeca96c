// Package podnet builds network namespaces shaped like a virt-launcher Pod
// for tests: the Pod's namespace with KubeVirt's bridge, the VM's NIC in a
// namespace of its own behind a veth whose bridge side is named like the tap,
// and, for bridge binding, a foreign host on the Pod's uplink. Everything is
// named uniquely per test and removed in Cleanup. It needs root (CAP_SYS_ADMIN
// for namespaces, CAP_NET_ADMIN for links); Available says whether it can run.
package podnet

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"sync/atomic"
	"time"

	"github.com/google/nftables"
	"github.com/mdlayher/arp"
	"github.com/vishvananda/netns"
)

// TB is the part of testing.TB, and of Ginkgo's GinkgoT(), the harness uses.
type TB interface {
	Helper()
	Cleanup(func())
	Fatalf(format string, args ...any)
	Logf(format string, args ...any)
}

// Available reports whether namespaces can be built here, or why not.
func Available() error {
	if os.Geteuid() != 0 {
		return errors.New("network namespace tests need root (run as root, e.g. sudo go test)")
	}
	if _, err := exec.LookPath("ip"); err != nil {
		return errors.New("network namespace tests need iproute2's ip")
	}
	if _, err := exec.LookPath("nft"); err != nil {
		return errors.New("network namespace tests need nftables' nft (KubeVirt's masquerade rules)")
	}
	return nil
}

var counter atomic.Int64

// NS is a named network namespace (ip netns).
type NS struct {
	Name string
}

// NewNS creates a namespace with loopback up, removed at cleanup.
func NewNS(tb TB, role string) NS {
	tb.Helper()
	n := NS{Name: fmt.Sprintf("imds%d-%d-%s", os.Getpid(), counter.Add(1), role)}
	mustRun(tb, "ip", "netns", "add", n.Name)
	tb.Cleanup(func() {
		if out, err := exec.Command("ip", "netns", "del", n.Name).CombinedOutput(); err != nil {
			tb.Logf("removing netns %s: %v: %s", n.Name, err, out)
		}
	})
	n.MustIP(tb, "link", "set", "lo", "up")
	return n
}

func mustRun(tb TB, name string, args ...string) string {
	tb.Helper()
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		tb.Fatalf("%s %s: %v: %s", name, strings.Join(args, " "), err, out)
	}
	return string(out)
}

// IP runs `ip -n NS args…`.
func (n NS) IP(args ...string) (string, error) {
	out, err := exec.Command("ip", append([]string{"-n", n.Name}, args...)...).CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("ip -n %s %s: %w: %s", n.Name, strings.Join(args, " "), err, out)
	}
	return string(out), nil
}

// MustIP is IP failing the test on error.
func (n NS) MustIP(tb TB, args ...string) string {
	tb.Helper()
	out, err := n.IP(args...)
	if err != nil {
		tb.Fatalf("%v", err)
	}
	return out
}

// Command returns a command that runs inside the namespace.
func (n NS) Command(ctx context.Context, name string, args ...string) *exec.Cmd {
	return exec.CommandContext(ctx, "ip", append([]string{"netns", "exec", n.Name, name}, args...)...)
}

// Sysctl writes a sysctl inside the namespace (tests may; the sidecar may not).
func (n NS) Sysctl(tb TB, key, value string) {
	tb.Helper()
	if out, err := n.Command(context.Background(), "sysctl", "-qw", key+"="+value).CombinedOutput(); err != nil {
		tb.Fatalf("sysctl %s=%s in %s: %v: %s", key, value, n.Name, err, out)
	}
}

// ReadSysctl reads /proc/sys/<path> as seen inside the namespace: the
// net subtree follows the opening thread's network namespace.
func (n NS) ReadSysctl(path string) (string, error) {
	var v []byte
	err := n.Do(func() error {
		var err error
		v, err = os.ReadFile("/proc/sys/" + path)
		return err
	})
	return strings.TrimSpace(string(v)), err
}

// Do runs f on an OS thread switched into the namespace. Sockets created in
// f stay in the namespace after it returns.
func (n NS) Do(f func() error) error {
	runtime.LockOSThread()
	orig, err := netns.Get()
	if err != nil {
		runtime.UnlockOSThread()
		return err
	}
	defer orig.Close()
	h, err := netns.GetFromName(n.Name)
	if err != nil {
		runtime.UnlockOSThread()
		return err
	}
	defer h.Close()
	if err := netns.Set(h); err != nil {
		runtime.UnlockOSThread()
		return err
	}
	ferr := f()
	if err := netns.Set(orig); err != nil {
		// Leave the thread locked: the runtime discards it when this
		// goroutine ends rather than reuse it in the wrong namespace.
		return errors.Join(ferr, err)
	}
	runtime.UnlockOSThread()
	return ferr
}

// Dial connects from inside the namespace.
func (n NS) Dial(ctx context.Context, network, addr string) (net.Conn, error) {
	var c net.Conn
	err := n.Do(func() error {
		var err error
		c, err = (&net.Dialer{}).DialContext(ctx, network, addr)
		return err
	})
	return c, err
}

// HTTPClient returns a client whose connections start inside the namespace.
func (n NS) HTTPClient(timeout time.Duration) *http.Client {
	return &http.Client{
		Timeout: timeout,
		Transport: &http.Transport{
			DialContext:       n.Dial,
			DisableKeepAlives: true,
			Proxy:             nil,
		},
	}
}

// MAC returns the hardware address of dev inside the namespace.
func (n NS) MAC(dev string) (net.HardwareAddr, error) {
	var mac net.HardwareAddr
	err := n.Do(func() error {
		ifi, err := net.InterfaceByName(dev)
		if err == nil {
			mac = ifi.HardwareAddr
		}
		return err
	})
	return mac, err
}

// ARPReply is one reply seen by ARPRequest.
type ARPReply struct {
	SenderMAC net.HardwareAddr
	SenderIP  netip.Addr
}

// ARPRequest broadcasts one ARP request for target from dev (which needs an
// IPv4 address) and collects every reply for target addressed to dev until
// wait elapses; gratuitous announcements (to broadcast) are not replies.
func (n NS) ARPRequest(dev string, target netip.Addr, wait time.Duration) ([]ARPReply, error) {
	var c *arp.Client
	var ifi *net.Interface
	err := n.Do(func() error {
		var err error
		if ifi, err = net.InterfaceByName(dev); err != nil {
			return err
		}
		c, err = arp.Dial(ifi)
		return err
	})
	if err != nil {
		return nil, err
	}
	defer c.Close()
	if err := c.SetReadDeadline(time.Now().Add(wait)); err != nil {
		return nil, err
	}
	if err := c.Request(target); err != nil {
		return nil, err
	}
	var replies []ARPReply
	for {
		p, _, err := c.Read()
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				return replies, nil
			}
			return replies, err
		}
		if p.Operation == arp.OperationReply && p.SenderIP == target && bytes.Equal(p.TargetHardwareAddr, ifi.HardwareAddr) {
			replies = append(replies, ARPReply{SenderMAC: p.SenderHardwareAddr, SenderIP: p.SenderIP})
		}
	}
}

// NFTBridgeTables lists the namespace's nftables tables of the bridge
// family, read over netlink (no nft binary needed).
func (n NS) NFTBridgeTables() ([]string, error) {
	var names []string
	err := n.Do(func() error {
		// Not a lasting connection: each request dials from this thread,
		// inside the namespace.
		c, err := nftables.New()
		if err != nil {
			return err
		}
		tables, err := c.ListTablesOfFamily(nftables.TableFamilyBridge)
		for _, t := range tables {
			names = append(names, t.Name)
		}
		return err
	})
	return names, err
}

// Neighbour returns the namespace's neighbour entry for ip on dev as
// `ip neigh` prints it ("" when none).
func (n NS) Neighbour(dev string, ip netip.Addr) (string, error) {
	out, err := n.IP("neigh", "show", ip.String(), "dev", dev)
	return strings.TrimSpace(out), err
}

// Pod is a virt-launcher Pod's network namespace and its neighbours.
type Pod struct {
	NS
	// Uplink is the other end of the Pod's eth0: the node (10.244.0.1/24).
	// In bridge binding it is the foreign host on the Pod's L2.
	Uplink NS
	// Bridge is KubeVirt's bridge once plumbed (k6t-eth0).
	Bridge string
	// Guest is the VM's namespace; its NIC is eth0.
	Guest NS
	// GuestIP is the guest's address on eth0.
	GuestIP netip.Prefix
	// GuestMAC is the guest's eth0 address.
	GuestMAC net.HardwareAddr
	// BridgeAt is when the last PlumbOn started creating the bridge.
	BridgeAt time.Time
}

// PodIP is the Pod's address from the CNI, on eth0 (the guest's in bridge
// binding); UplinkIP is the node's end.
var (
	PodIP    = netip.MustParsePrefix("10.244.0.5/24")
	UplinkIP = netip.MustParsePrefix("10.244.0.1/24")
)

// NewPod creates a Pod namespace as the CNI leaves it, before KubeVirt
// plumbs the VM's network: eth0 with PodIP and a default route through the
// uplink namespace.
func NewPod(tb TB) *Pod {
	tb.Helper()
	p := &Pod{NS: NewNS(tb, "pod"), Uplink: NewNS(tb, "node")}
	p.MustIP(tb, "link", "add", "eth0", "type", "veth", "peer", "name", "eth0", "netns", p.Uplink.Name)
	p.MustIP(tb, "addr", "add", PodIP.String(), "dev", "eth0")
	p.MustIP(tb, "link", "set", "eth0", "up")
	p.MustIP(tb, "route", "add", "default", "via", UplinkIP.Addr().String())
	p.Uplink.MustIP(tb, "addr", "add", UplinkIP.String(), "dev", "eth0")
	p.Uplink.MustIP(tb, "link", "set", "eth0", "up")
	return p
}

// Topology is a shape of the VM's network.
type Topology int

const (
	// Masquerade: k6t-eth0 10.0.2.1/24, guest 10.0.2.2/24 via 10.0.2.1,
	// and KubeVirt's nat table (masqueradeNAT).
	Masquerade Topology = iota
	// BridgeBinding: eth0 becomes eth0-nic, a port of k6t-eth0 (which
	// carries KubeVirt's 169.254.75.10/32), and the guest takes PodIP; the
	// uplink namespace is then a foreign host on the guest's L2. The guest
	// reaches 169.254.169.254 on-link.
	BridgeBinding
	// LinkLocal: masquerade's bridge, but a guest with only 169.254.7.9/16
	// and no gateway, which ARPs for 169.254.169.254 itself.
	LinkLocal
	// Secondary: a Multus secondary network's bridge without any address,
	// and a guest NIC with only 169.254.7.9/16.
	Secondary
	// BridgeBindingRouted is BridgeBinding with a stock guest, as in-pod
	// DHCP leaves cloud-init or Windows: PodIP and a default route via the
	// Pod's real gateway (UplinkIP, in the uplink namespace behind
	// eth0-nic), and no on-link route to 169.254.169.254. Its packets for
	// the address carry the gateway's MAC.
	BridgeBindingRouted
)

func (t Topology) String() string {
	return [...]string{"masquerade", "bridge binding", "link-local guest", "secondary", "bridge binding, routed guest"}[t]
}

// Plumb builds the primary interface's network in the Pod as virt-handler
// would: bridge k6t-eth0, the guest's tap0 enslaved last.
func (p *Pod) Plumb(tb TB, t Topology) {
	tb.Helper()
	p.PlumbOn(tb, t, "k6t-eth0", "tap0")
}

// PlumbOn is Plumb with KubeVirt's names for another interface, such as
// k6t-<hash> and tap<hash> for a Multus secondary. Guest, GuestIP and Bridge
// then describe this interface; a guest of an earlier call keeps its
// namespace.
//
// The guest side and the tap come first; the bridge then appears with the
// tap enslaved in one `ip -batch`, as close to atomically as iproute2 gets,
// and BridgeAt records the moment just before, for latency measurements.
func (p *Pod) PlumbOn(tb TB, t Topology, bridge, tap string) {
	tb.Helper()
	p.Bridge = bridge
	p.Guest = NewNS(tb, "guest")
	// MACs as KubeVirt and libvirt assign them: the guest's from QEMU's
	// 52:54:00 range, the tap's the same with fe as first octet, so the
	// bridge never takes the tap's address.
	sum := sha256.Sum256([]byte(bridge))
	p.GuestMAC = net.HardwareAddr{0x52, 0x54, 0x00, sum[0], sum[1], sum[2]}
	tapMAC := net.HardwareAddr{0xfe, 0x54, 0x00, sum[0], sum[1], sum[2]}
	p.MustIP(tb, "link", "add", tap, "address", tapMAC.String(), "type", "veth",
		"peer", "name", "eth0", "address", p.GuestMAC.String(), "netns", p.Guest.Name)
	p.Guest.MustIP(tb, "link", "set", "eth0", "up")
	switch t {
	case Masquerade:
		p.GuestIP = netip.MustParsePrefix("10.0.2.2/24")
		p.Guest.MustIP(tb, "addr", "add", p.GuestIP.String(), "dev", "eth0")
		p.Guest.MustIP(tb, "route", "add", "default", "via", "10.0.2.1")
	case BridgeBinding, BridgeBindingRouted:
		p.GuestIP = PodIP
		p.Guest.MustIP(tb, "addr", "add", p.GuestIP.String(), "dev", "eth0")
		p.Guest.MustIP(tb, "route", "add", "default", "via", UplinkIP.Addr().String())
		if t == BridgeBinding {
			p.Guest.MustIP(tb, "route", "add", "169.254.169.254/32", "dev", "eth0", "scope", "link")
		}
	case LinkLocal, Secondary:
		p.GuestIP = netip.MustParsePrefix("169.254.7.9/16")
		p.Guest.MustIP(tb, "addr", "add", p.GuestIP.String(), "dev", "eth0")
	}

	batch := []string{"link add " + bridge + " type bridge"}
	switch t {
	case Masquerade, LinkLocal:
		batch = append(batch, "addr add 10.0.2.1/24 dev "+bridge)
	case BridgeBinding, BridgeBindingRouted:
		batch = append(batch,
			"link set eth0 down",
			"addr flush dev eth0",
			"link set eth0 name eth0-nic",
			"addr add 169.254.75.10/32 dev "+bridge,
			"link set eth0-nic master "+bridge+" up")
	}
	p.raiseBridge(tb, batch, bridge, tap)
	if t == Masquerade {
		p.masqueradeNAT(tb, bridge)
	}
}

// masqueradeNAT adds the table virt-handler v1.8.0 adds for a masquerade
// NIC (pkg/network/setup/netpod/masquerade, no ports listed), as `nft list
// ruleset` shows it in a real launcher Pod: traffic to the Pod's eth0, and
// anything the Pod itself sends to 127.0.0.1, goes to the guest; the
// guest's own traffic leaves masqueraded.
func (p *Pod) masqueradeNAT(tb TB, bridge string) {
	tb.Helper()
	guest, gateway := MasqueradeGuestAddr, MasqueradeGatewayAddr
	ruleset := `table ip nat {
	chain KUBEVIRT_PREINBOUND {
		counter dnat to ` + guest + `
	}
	chain KUBEVIRT_POSTINBOUND {
		ip saddr 127.0.0.1 counter snat to ` + gateway + `
	}
	chain prerouting {
		type nat hook prerouting priority dstnat; policy accept;
		iifname "eth0" counter jump KUBEVIRT_PREINBOUND
	}
	chain input {
		type nat hook input priority 100; policy accept;
	}
	chain output {
		type nat hook output priority -100; policy accept;
		ip daddr 127.0.0.1 counter dnat to ` + guest + `
	}
	chain postrouting {
		type nat hook postrouting priority srcnat; policy accept;
		ip saddr ` + guest + ` counter masquerade
		oifname "` + bridge + `" counter jump KUBEVIRT_POSTINBOUND
	}
}
`
	// virt-handler turns on IPv4 forwarding in the Pod for masquerade (a new
	// namespace copies the node's value, which need not be 1).
	p.Sysctl(tb, "net.ipv4.ip_forward", "1")
	cmd := exec.Command("ip", "netns", "exec", p.Name, "nft", "-f", "-")
	cmd.Stdin = strings.NewReader(ruleset)
	if out, err := cmd.CombinedOutput(); err != nil {
		tb.Fatalf("KubeVirt's masquerade nat table in %s: %v: %s", p.Name, err, out)
	}
}

// GuestGet fetches url from inside the guest.
func (p *Pod) GuestGet(ctx context.Context, url string) (int, string, error) {
	return get(ctx, p.Guest, url)
}

// AdminGet fetches url from inside the Pod (the admin endpoint on loopback).
func (p *Pod) AdminGet(ctx context.Context, url string) (int, string, error) {
	return get(ctx, p.NS, url)
}

func get(ctx context.Context, n NS, url string) (int, string, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return 0, "", err
	}
	resp, err := n.HTTPClient(2 * time.Second).Do(req)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	var b bytes.Buffer
	_, err = b.ReadFrom(resp.Body)
	return resp.StatusCode, b.String(), err
}

// raiseBridge runs batch, which creates and addresses the bridge, then brings
// it up with tap enslaved, in one `ip -batch`; BridgeAt records the moment
// just before.
func (p *Pod) raiseBridge(tb TB, batch []string, bridge, tap string) {
	tb.Helper()
	batch = append(batch,
		"link set "+bridge+" up",
		"link set "+tap+" master "+bridge+" up")
	cmd := exec.Command("ip", "-n", p.Name, "-batch", "-")
	cmd.Stdin = strings.NewReader(strings.Join(batch, "\n") + "\n")
	p.BridgeAt = time.Now()
	if out, err := cmd.CombinedOutput(); err != nil {
		tb.Fatalf("plumbing %s with %s in %s: %v: %s", bridge, tap, p.Name, err, out)
	}
}

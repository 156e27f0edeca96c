package netapply

import (
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"testing"
	"time"

	"github.com/go-logr/logr"
	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"golang.org/x/sys/unix"

	"github.com/kubevirt-imds/kubevirt-imds/sidecar/network"
	"github.com/kubevirt-imds/kubevirt-imds/test/podnet"
)

var (
	direct   = network.Guard{ServicePort: 80, ListenPort: 80, Ingress: []string{network.LinkName, "k6t-eth0"}}
	redirect = network.Guard{ServicePort: 80, ListenPort: 8775, MAC: network.DeriveMAC("uid-1", "k6t-eth0"), Ingress: []string{network.LinkName}}
)

// guardView is what observeGuard would read back after ReplaceGuard(g).
func guardView(g network.Guard) ([]*nftables.Chain, map[string][]*nftables.Rule) {
	var chains []*nftables.Chain
	rules := map[string][]*nftables.Rule{}
	for _, ch := range guardSpec(g) {
		chains = append(chains, ch.chain)
		for _, e := range ch.rules {
			rules[ch.chain.Name] = append(rules[ch.chain.Name], &nftables.Rule{Table: guardTable, Chain: ch.chain, Exprs: e})
		}
	}
	return chains, rules
}

func TestGuardSpecEncodes(t *testing.T) {
	for _, g := range []network.Guard{direct, redirect} {
		for _, ch := range guardSpec(g) {
			for _, r := range ch.rules {
				for _, e := range r {
					if _, err := expr.Marshal(byte(nftables.TableFamilyIPv4), e); err != nil {
						t.Errorf("%s: %T: %v", g, e, err)
					}
				}
			}
		}
	}
	if got := len(guardSpec(direct)); got != 1 {
		t.Errorf("without a redirect: %d chains, want input only", got)
	}
}

func TestDecodeGuard(t *testing.T) {
	for _, g := range []network.Guard{
		direct, redirect,
		{ServicePort: 8080, ListenPort: 8080, Ingress: []string{network.LinkName}},
		{ServicePort: 80, ListenPort: 65535, MAC: mac(7), Ingress: []string{network.LinkName, "k6t-a1b2c3d4e5f"}},
	} {
		if got := decodeGuard(guardView(g)); got == nil || !got.Equal(g) {
			t.Errorf("round trip: %v, want %s", got, g)
		}
	}
	// An accept rule naming another interface is still a guard, but not the
	// one wanted: the plan replaces it.
	chains, rules := guardView(direct)
	rules[guardInput][0].Exprs[1] = &expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: ifname("eth0")}
	if got := decodeGuard(chains, rules); got == nil || !slices.Equal(got.Ingress, []string{"eth0", "k6t-eth0"}) || got.Equal(direct) {
		t.Errorf("with eth0 admitted: decoded %v", got)
	}

	type view = func([]*nftables.Chain, map[string][]*nftables.Rule) ([]*nftables.Chain, map[string][]*nftables.Rule)
	chain := func(c []*nftables.Chain, name string) *nftables.Chain {
		for _, ch := range c {
			if ch.Name == name {
				return ch
			}
		}
		t.Fatalf("no chain %s", name)
		return nil
	}
	tests := []struct {
		name   string
		guard  network.Guard
		mutate view
	}{
		{"a chain added by hand", direct, func(c []*nftables.Chain, r map[string][]*nftables.Rule) ([]*nftables.Chain, map[string][]*nftables.Rule) {
			return append(c, &nftables.Chain{Name: "mine", Table: guardTable}), r
		}},
		{"the drop rule removed", direct, func(c []*nftables.Chain, r map[string][]*nftables.Rule) ([]*nftables.Chain, map[string][]*nftables.Rule) {
			r[guardInput] = r[guardInput][:len(r[guardInput])-1]
			return c, r
		}},
		{"an accept rule without its interface", direct, func(c []*nftables.Chain, r map[string][]*nftables.Rule) ([]*nftables.Chain, map[string][]*nftables.Rule) {
			r[guardInput][0].Exprs = r[guardInput][0].Exprs[2:]
			return c, r
		}},
		{"a rule accepting more", direct, func(c []*nftables.Chain, r map[string][]*nftables.Rule) ([]*nftables.Chain, map[string][]*nftables.Rule) {
			r[guardInput] = append([]*nftables.Rule{{Exprs: []expr.Any{&expr.Verdict{Kind: expr.VerdictAccept}}}}, r[guardInput]...)
			return c, r
		}},
		{"the drop turned into accept", direct, func(c []*nftables.Chain, r map[string][]*nftables.Rule) ([]*nftables.Chain, map[string][]*nftables.Rule) {
			e := r[guardInput][len(r[guardInput])-1].Exprs
			e[len(e)-1] = &expr.Verdict{Kind: expr.VerdictAccept}
			return c, r
		}},
		{"loopback no longer exempt, another device instead", direct, func(c []*nftables.Chain, r map[string][]*nftables.Rule) ([]*nftables.Chain, map[string][]*nftables.Rule) {
			r[guardInput][len(r[guardInput])-1].Exprs[1] = &expr.Cmp{Op: expr.CmpOpNeq, Register: 1, Data: ifname("eth0")}
			return c, r
		}},
		{"the input chain at another hook", direct, func(c []*nftables.Chain, r map[string][]*nftables.Rule) ([]*nftables.Chain, map[string][]*nftables.Rule) {
			c[0].Hooknum = nftables.ChainHookRef(nftables.ChainHook(4))
			return c, r
		}},
		{"the nat chain gone", redirect, func(c []*nftables.Chain, r map[string][]*nftables.Rule) ([]*nftables.Chain, map[string][]*nftables.Rule) {
			delete(r, guardPrerouting)
			return append(c[:1], c[2:]...), r
		}},
		{"the nat chain as a filter chain", redirect, func(c []*nftables.Chain, r map[string][]*nftables.Rule) ([]*nftables.Chain, map[string][]*nftables.Rule) {
			chain(c, guardPrerouting).Type = nftables.ChainTypeFilter
			return c, r
		}},
		{"the raw chain after conntrack", redirect, func(c []*nftables.Chain, r map[string][]*nftables.Rule) ([]*nftables.Chain, map[string][]*nftables.Rule) {
			chain(c, guardRaw).Priority = nftables.ChainPriorityRef(-150)
			return c, r
		}},
		{"the two raw rules name different MACs", redirect, func(c []*nftables.Chain, r map[string][]*nftables.Rule) ([]*nftables.Chain, map[string][]*nftables.Rule) {
			r[guardRaw][1].Exprs[5] = &expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: mac(9)}
			return c, r
		}},
		{"DNAT to another address", redirect, func(c []*nftables.Chain, r map[string][]*nftables.Rule) ([]*nftables.Chain, map[string][]*nftables.Rule) {
			r[guardPrerouting][0].Exprs[8] = &expr.Immediate{Register: 1, Data: []byte{10, 0, 2, 1}}
			return c, r
		}},
		{"DNAT to a port the input chain does not accept", redirect, func(c []*nftables.Chain, r map[string][]*nftables.Rule) ([]*nftables.Chain, map[string][]*nftables.Rule) {
			r[guardPrerouting][0].Exprs[9] = &expr.Immediate{Register: 2, Data: be16(9999)}
			return c, r
		}},
		{"direct connections to the listen port accepted (no ct status check)", redirect, func(c []*nftables.Chain, r map[string][]*nftables.Rule) ([]*nftables.Chain, map[string][]*nftables.Rule) {
			e := r[guardInput][0].Exprs
			r[guardInput][0].Exprs = append(e[:8:8], e[len(e)-1])
			return c, r
		}},
		{"a truncated rule", redirect, func(c []*nftables.Chain, r map[string][]*nftables.Rule) ([]*nftables.Chain, map[string][]*nftables.Rule) {
			r[guardRaw][0].Exprs = r[guardRaw][0].Exprs[:3]
			return c, r
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := decodeGuard(tt.mutate(guardView(tt.guard)))
			if got == nil || !got.Equal(network.Guard{}) {
				t.Errorf("decoded %v, want the zero Guard (replace it)", got)
			}
		})
	}
}

// inNS runs f in a new network namespace on a locked OS thread, as the node
// agent runs the plumbing: every netlink and nftables socket f opens lives
// there.
func inNS(t *testing.T, ns podnet.NS, f func(k *Kernel) error) {
	t.Helper()
	err := ns.Do(func() error {
		k, err := NewKernel()
		if err != nil {
			return err
		}
		defer k.Close()
		return f(k)
	})
	if err != nil {
		t.Fatal(err)
	}
}

func needNamespaces(t *testing.T) {
	t.Helper()
	if err := podnet.Available(); err != nil {
		t.Skip(err)
	}
}

func TestKernelGuard(t *testing.T) {
	needNamespaces(t)
	ns := podnet.NewNS(t, "guard")
	observe := func() *network.Guard {
		t.Helper()
		var g *network.Guard
		inNS(t, ns, func(k *Kernel) error {
			obs, err := k.Observe("k6t-eth0")
			g = obs.Guard
			return err
		})
		return g
	}
	if g := observe(); g != nil {
		t.Fatalf("a new namespace has a guard: %s", g)
	}
	for _, want := range []network.Guard{direct, redirect, redirect, {ServicePort: 8080, ListenPort: 8080, Ingress: []string{network.LinkName}}} {
		inNS(t, ns, func(k *Kernel) error { return k.ReplaceGuard(want) })
		if got := observe(); got == nil || !got.Equal(want) {
			t.Fatalf("after ReplaceGuard(%s): observed %v", want, got)
		}
	}

	// A rule added by hand makes the table foreign, and the next replace
	// removes it.
	inNS(t, ns, func(*Kernel) error {
		c, err := nftables.New()
		if err != nil {
			return err
		}
		input := guardBaseChain(guardInput, unix.NF_INET_LOCAL_IN, 0, nftables.ChainTypeFilter)
		c.InsertRule(&nftables.Rule{Table: guardTable, Chain: input, Exprs: []expr.Any{&expr.Verdict{Kind: expr.VerdictAccept}}})
		return c.Flush()
	})
	if got := observe(); got == nil || !got.Equal(network.Guard{}) {
		t.Fatalf("with a rule added by hand: observed %v, want the zero Guard", got)
	}
	inNS(t, ns, func(k *Kernel) error { return k.ReplaceGuard(direct) })
	if got := observe(); got == nil || !got.Equal(direct) {
		t.Fatalf("after replacing: %v", got)
	}

	inNS(t, ns, func(k *Kernel) error {
		for _, g := range []network.Guard{
			{ServicePort: 80, ListenPort: 8775, Ingress: []string{network.LinkName}},
			{ServicePort: 80, ListenPort: 80},
			{ServicePort: 80, ListenPort: 80, Ingress: []string{"a-name-too-long-for-linux"}},
		} {
			if err := k.ReplaceGuard(g); err == nil {
				return fmt.Errorf("%s %v %q was accepted", g, g.MAC, g.Ingress)
			}
		}
		return nil
	})
}

// TestGuardTraffic applies whole plans with a port redirect (the node
// agent's mode, which the sidecar binary does not run) in namespaces shaped
// like virt-launcher Pods, and checks what the guest reaches: the server on
// ListenPort through port 80, and nothing else — with bridge netfilter on
// (br_netfilter's default once loaded, as on Kubernetes nodes) and off.
func TestGuardTraffic(t *testing.T) {
	needNamespaces(t)
	tests := []struct {
		topo         podnet.Topology
		bridgeNFCall string
	}{
		{podnet.Masquerade, "1"},
		{podnet.Masquerade, "0"},
		{podnet.BridgeBindingRouted, "1"},
		{podnet.BridgeBindingRouted, "0"},
		{podnet.LinkLocal, "1"},
	}
	for _, tt := range tests {
		t.Run(tt.topo.String()+", bridge-nf-call-iptables "+tt.bridgeNFCall, func(t *testing.T) {
			t.Parallel()
			pod := podnet.NewPod(t)
			pod.Plumb(t, tt.topo)
			if _, err := pod.ReadSysctl("net/bridge/bridge-nf-call-iptables"); err == nil {
				pod.Sysctl(t, "net.bridge.bridge-nf-call-iptables", tt.bridgeNFCall)
			} else if tt.bridgeNFCall == "1" {
				t.Skip("no bridge netfilter in this kernel")
			}
			in := network.Inputs{Bridge: "k6t-eth0", MACSeed: "uid-1", ServicePort: 80, ListenPort: 8775}
			inNS(t, pod.NS, func(k *Kernel) error {
				obs, err := k.Observe(in.Bridge)
				if err != nil {
					return err
				}
				p, err := network.Compute(obs, in)
				if err != nil {
					return err
				}
				return Apply(context.Background(), k, p, logr.Discard())
			})
			if tt.topo == podnet.LinkLocal {
				// The sidecar's ARP responder answers such a guest; a static
				// entry stands in for it here.
				mac, err := pod.MAC(network.LinkName)
				if err != nil {
					t.Fatal(err)
				}
				pod.Guest.MustIP(t, "neigh", "replace", "169.254.169.254", "lladdr", mac.String(), "dev", "eth0", "nud", "permanent")
			}
			server := pod.Accept(t, "169.254.169.254:8775")
			pod.Accept(t, "0.0.0.0:9999")

			// The server accepts and closes: EOF says the connection reached it.
			ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
			defer cancel()
			c, err := pod.Guest.Dial(ctx, "tcp4", "169.254.169.254:80")
			if err != nil {
				t.Fatalf("the guest cannot reach the server through port 80: %v", err)
			}
			defer c.Close()
			if err := c.SetReadDeadline(time.Now().Add(5 * time.Second)); err != nil {
				t.Fatal(err)
			}
			if _, err := c.Read(make([]byte, 1)); !errors.Is(err, io.EOF) {
				t.Fatalf("reading from the server: %v, want EOF", err)
			}
			if n := server.Accepted(); n != 1 {
				t.Fatalf("the server accepted %d connections, want 1", n)
			}
			for _, addr := range []string{"169.254.169.254:8775", "169.254.169.254:9999"} {
				if err := pod.Guest.NoTCPAnswer(t.Context(), addr); err != nil {
					t.Errorf("the guest reached past the guard: %v", err)
				}
			}

			// The listener here has no socket filter: the guard alone keeps
			// the Pod's uplink (the node; in bridge binding a foreign host
			// on the Pod's L2) away from port 80.
			node := pod.Uplink
			switch tt.topo {
			case podnet.BridgeBindingRouted:
				bridgeMAC, err := pod.MAC("k6t-eth0")
				if err != nil {
					t.Fatal(err)
				}
				node.MustIP(t, "route", "replace", "169.254.169.254/32", "dev", "eth0")
				node.MustIP(t, "neigh", "replace", "169.254.169.254", "lladdr", bridgeMAC.String(), "dev", "eth0", "nud", "permanent")
			default:
				node.MustIP(t, "route", "replace", "169.254.169.254/32", "via", podnet.PodIP.Addr().String())
			}
			if err := node.NoTCPAnswer(t.Context(), "169.254.169.254:80"); err != nil {
				t.Errorf("the Pod's uplink reached the server: %v", err)
			}
			if n := server.Accepted(); n != 1 {
				t.Errorf("the server accepted %d connections, want the guest's 1", n)
			}
		})
	}
}

package netapply

import (
	"context"
	"errors"
	"slices"
	"strings"
	"syscall"
	"testing"

	"github.com/go-logr/logr"
	"github.com/go-logr/logr/testr"
	"github.com/vishvananda/netlink"

	"github.com/kubevirt-imds/kubevirt-imds/sidecar/network"
)

func testLog(t *testing.T) logr.Logger { return testr.NewWithOptions(t, testr.Options{Verbosity: 1}) }

func TestApplyConverges(t *testing.T) {
	for name, links := range map[string][]network.Link{"masquerade": podLinks(), "bridge binding": bridgeBindingLinks()} {
		t.Run(name, func(t *testing.T) {
			f := newFake(links...)
			in := network.Inputs{Bridge: "k6t-eth0", MACSeed: "uid-1"}
			p, err := network.Compute(f.observe(), in)
			if err != nil {
				t.Fatal(err)
			}
			if err := Apply(t.Context(), f, p, testLog(t)); err != nil {
				t.Fatal(err)
			}
			obs := f.observe()
			again, err := network.Compute(obs, in)
			if err != nil {
				t.Fatal(err)
			}
			if len(again.Actions) != 0 {
				t.Errorf("second plan not empty: %q", actionStrings(again.Actions))
			}
			veth, peer := obs.Link(network.LinkName), obs.Link(network.PeerName)
			if veth.MAC.String() != network.DeriveMAC("uid-1", "k6t-eth0").String() || veth.ARPIgnore != network.ARPIgnoreNone || !veth.Up {
				t.Errorf("veth-imds = %+v", veth)
			}
			if peer.MasterIndex != 3 || !peer.Isolated || peer.MTU != 1450 {
				t.Errorf("peer = %+v", peer)
			}
			if obs.Link("tap0").Isolated {
				t.Error("the guest's port must stay non-isolated")
			}
			if l := obs.Link("eth0-nic"); l != nil && !l.Isolated {
				t.Error("eth0-nic not isolated")
			}
			if obs.Link("k6t-eth0").ARPIgnore != network.ARPIgnoreOwn {
				t.Error("bridge arp_ignore not set")
			}
			want := network.Guard{ServicePort: 80, ListenPort: 80, Ingress: []string{network.LinkName, "k6t-eth0"}}
			if name == "bridge binding" {
				// The bridge may carry a foreign host's packets: not an ingress.
				want.Ingress = []string{network.LinkName}
			}
			if obs.Guard == nil || !obs.Guard.Equal(want) {
				t.Errorf("guard = %v, want %s", obs.Guard, want)
			}
			switch name {
			case "masquerade":
				if obs.Redirect != nil {
					t.Errorf("masquerade got a redirect: %s", obs.Redirect)
				}
			case "bridge binding":
				if want := (network.Redirect{Port: "tap0", MAC: veth.MAC}); obs.Redirect == nil || !obs.Redirect.Equal(want) {
					t.Errorf("redirect = %v, want %s", obs.Redirect, want)
				}
			}
		})
	}
}

func TestApplyRedirectErrors(t *testing.T) {
	in := network.Inputs{Bridge: "k6t-eth0", MACSeed: "uid-1"}
	f := newFake(bridgeBindingLinks()...)
	p, err := network.Compute(f.observe(), in)
	if err != nil {
		t.Fatal(err)
	}
	// A kernel without nf_tables' bridge family refuses the table: a hard
	// error, surfaced with its errno, not a silently unreachable sidecar.
	f.fail = map[string]error{"ReplaceRedirect": syscall.EAFNOSUPPORT}
	if err := Apply(t.Context(), f, p, testLog(t)); !errors.Is(err, syscall.EAFNOSUPPORT) {
		t.Fatalf("err = %v, want EAFNOSUPPORT wrapped", err)
	}
	// The retry starts with the redirect; the routing after it follows.
	p, err = network.Compute(f.observe(), in)
	if err != nil {
		t.Fatal(err)
	}
	got := actionStrings(p.Actions)
	if len(got) != 4 || got[0] != "replace redirect iifname tap0 ip daddr 169.254.169.254 ether daddr set "+network.DeriveMAC("uid-1", "k6t-eth0").String() {
		t.Errorf("after the failure: %q", got)
	}
	if err := Apply(t.Context(), f, p, testLog(t)); err != nil {
		t.Fatal(err)
	}
	if f.redirect == nil {
		t.Fatal("no redirect after the retry")
	}

	// Removing it when the foreign port left tolerates a table already gone.
	f.links = slices.DeleteFunc(f.links, func(l *fakeLink) bool { return l.Name == "eth0-nic" })
	p, err = network.Compute(f.observe(), in)
	if err != nil {
		t.Fatal(err)
	}
	// The bridge carries only the guest's traffic now: the guard admits it.
	if got := actionStrings(p.Actions); !slices.Equal(got, []string{
		"replace guard ip daddr 169.254.169.254: accept only tcp dport 80 from veth-imds,k6t-eth0",
		"delete redirect table kubevirt-imds",
	}) {
		t.Fatalf("actions %q", got)
	}
	for range 2 {
		if err := Apply(t.Context(), f, p, testLog(t)); err != nil {
			t.Fatal(err)
		}
	}
	if f.redirect != nil {
		t.Errorf("redirect %s left behind", f.redirect)
	}
}

func TestApplyGuard(t *testing.T) {
	for name, tt := range map[string]struct {
		links   []network.Link
		ingress []string
	}{
		"masquerade":     {podLinks(), []string{network.LinkName, "k6t-eth0"}},
		"bridge binding": {bridgeBindingLinks(), []string{network.LinkName}},
	} {
		links := tt.links
		t.Run(name, func(t *testing.T) {
			// Node mode: the server listens on 8775, the guest uses 80.
			in := network.Inputs{Bridge: "k6t-eth0", MACSeed: "uid-1", ServicePort: 80, ListenPort: 8775}
			f := newFake(links...)
			p, err := network.Compute(f.observe(), in)
			if err != nil {
				t.Fatal(err)
			}
			// A kernel without nf_tables refuses the table. Nothing else is
			// done: 169.254.169.254 never becomes local unguarded.
			f.fail = map[string]error{"ReplaceGuard": syscall.EPROTONOSUPPORT}
			if err := Apply(t.Context(), f, p, testLog(t)); !errors.Is(err, syscall.EPROTONOSUPPORT) {
				t.Fatalf("err = %v, want EPROTONOSUPPORT wrapped", err)
			}
			if f.find(network.LinkName) != nil || f.guard != nil {
				t.Fatalf("applied past a failed guard: %s", f)
			}
			p, err = network.Compute(f.observe(), in)
			if err != nil {
				t.Fatal(err)
			}
			if err := Apply(t.Context(), f, p, testLog(t)); err != nil {
				t.Fatal(err)
			}
			want := network.Guard{ServicePort: 80, ListenPort: 8775, MAC: network.DeriveMAC("uid-1", "k6t-eth0"), Ingress: tt.ingress}
			if f.guard == nil || !f.guard.Equal(want) {
				t.Errorf("guard = %v, want %s", f.guard, want)
			}
			if again, err := network.Compute(f.observe(), in); err != nil || len(again.Actions) != 0 {
				t.Errorf("second plan: %q, %v", actionStrings(again.Actions), err)
			}

			// Back to serving port 80 directly: the whole table is replaced,
			// the redirect goes with it.
			in.ListenPort = 0
			p, err = network.Compute(f.observe(), in)
			if err != nil {
				t.Fatal(err)
			}
			if got := actionStrings(p.Actions); len(got) != 1 || !strings.HasPrefix(got[0], "replace guard ip daddr 169.254.169.254: accept only tcp dport 80 from ") {
				t.Fatalf("actions %q", got)
			}
			if err := Apply(t.Context(), f, p, testLog(t)); err != nil {
				t.Fatal(err)
			}
			if want := (network.Guard{ServicePort: 80, ListenPort: 80, Ingress: tt.ingress}); !f.guard.Equal(want) {
				t.Errorf("guard = %v, want %s", f.guard, want)
			}
		})
	}
	// A guard the kernel would refuse is refused by the fake too.
	f := newFake()
	for _, g := range []network.Guard{
		{ServicePort: 80, ListenPort: 8775, Ingress: []string{network.LinkName}},
		{ServicePort: 80, ListenPort: 80},
	} {
		err := Apply(t.Context(), f, network.Plan{Actions: []network.Action{network.ReplaceGuard{Guard: g}}}, testLog(t))
		if !errors.Is(err, syscall.EINVAL) {
			t.Errorf("%s: err = %v, want EINVAL", g, err)
		}
	}
}

func TestApplyTwiceTolerated(t *testing.T) {
	f := newFake(podLinks()...)
	p, err := network.Compute(f.observe(), network.Inputs{Bridge: "k6t-eth0"})
	if err != nil {
		t.Fatal(err)
	}
	for range 2 {
		// The second run meets EEXIST for the veth, the address and the rules:
		// a sidecar killed between apply and readiness re-runs a stale plan.
		if err := Apply(t.Context(), f, p, testLog(t)); err != nil {
			t.Fatalf("re-applying: %v", err)
		}
	}
	if n := len(f.rules); n != 2 {
		t.Errorf("%d rules, want 2", n)
	}
}

func TestApplyErrors(t *testing.T) {
	f := newFake(podLinks()...)
	p, err := network.Compute(f.observe(), network.Inputs{Bridge: "k6t-eth0"})
	if err != nil {
		t.Fatal(err)
	}
	f.fail = map[string]error{"RuleAdd": syscall.EPERM}
	err = Apply(t.Context(), f, p, testLog(t))
	if !errors.Is(err, syscall.EPERM) {
		t.Fatalf("err = %v, want EPERM wrapped", err)
	}
	// The retry picks up where the failure left off.
	p, err = network.Compute(f.observe(), network.Inputs{Bridge: "k6t-eth0"})
	if err != nil {
		t.Fatal(err)
	}
	if got := actionStrings(p.Actions); len(got) != 3 || !slices.Contains(got, "add rule 1690: from 169.254.169.254/32 lookup 254 suppress_prefixlength 0") {
		t.Errorf("after the failure: %q", got)
	}
	if err := Apply(t.Context(), f, p, testLog(t)); err != nil {
		t.Fatal(err)
	}

	// A link gone between plan and apply surfaces as the kernel's type.
	err = Apply(t.Context(), newFake(), network.Plan{Actions: []network.Action{network.SetUp{Link: "tap0"}}}, testLog(t))
	var nf netlink.LinkNotFoundError
	if !errors.As(err, &nf) {
		t.Errorf("err = %v, want LinkNotFoundError", err)
	}
	// Deleting what is already gone is fine.
	if err := Apply(t.Context(), newFake(), network.Plan{Actions: []network.Action{network.DeleteLink{Name: network.LinkName}}}, testLog(t)); err != nil {
		t.Errorf("delete of a missing link: %v", err)
	}
	// Cancellation stops between steps.
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	if err := Apply(ctx, newFake(podLinks()...), p, testLog(t)); !errors.Is(err, context.Canceled) {
		t.Errorf("cancelled apply: %v", err)
	}
}

func BenchmarkApply(b *testing.B) {
	obs := newFake(bridgeBindingLinks()...).observe()
	p, err := network.Compute(obs, network.Inputs{Bridge: "k6t-eth0"})
	if err != nil {
		b.Fatal(err)
	}
	for b.Loop() {
		if err := Apply(b.Context(), newFake(bridgeBindingLinks()...), p, logr.Discard()); err != nil {
			b.Fatal(err)
		}
	}
}

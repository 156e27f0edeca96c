package network

import (
	"context"
	"errors"
	"slices"
	"syscall"
	"testing"

	"github.com/go-logr/logr"
	"github.com/go-logr/logr/testr"
	"github.com/vishvananda/netlink"
)

func testLog(t *testing.T) logr.Logger { return testr.NewWithOptions(t, testr.Options{Verbosity: 1}) }

func TestApplyConverges(t *testing.T) {
	for name, links := range map[string][]Link{"masquerade": podLinks(), "bridge binding": bridgeBindingLinks()} {
		t.Run(name, func(t *testing.T) {
			f := newFake(links...)
			in := Inputs{Bridge: "k6t-eth0", MACSeed: "uid-1"}
			p, err := Compute(f.observe(), in)
			if err != nil {
				t.Fatal(err)
			}
			if err := Apply(t.Context(), f, p, testLog(t)); err != nil {
				t.Fatal(err)
			}
			obs := f.observe()
			again, err := Compute(obs, in)
			if err != nil {
				t.Fatal(err)
			}
			if len(again.Actions) != 0 {
				t.Errorf("second plan not empty: %q", actionStrings(again.Actions))
			}
			veth, peer := obs.link(LinkName), obs.link(PeerName)
			if veth.MAC.String() != DeriveMAC("uid-1", "k6t-eth0").String() || veth.ARPIgnore != ARPIgnoreNone || !veth.Up {
				t.Errorf("veth-imds = %+v", veth)
			}
			if peer.MasterIndex != 3 || !peer.Isolated || peer.MTU != 1450 {
				t.Errorf("peer = %+v", peer)
			}
			if obs.link("tap0").Isolated {
				t.Error("the guest's port must stay non-isolated")
			}
			if l := obs.link("eth0-nic"); l != nil && !l.Isolated {
				t.Error("eth0-nic not isolated")
			}
			if obs.link("k6t-eth0").ARPIgnore != ARPIgnoreOwn {
				t.Error("bridge arp_ignore not set")
			}
			switch name {
			case "masquerade":
				if obs.Redirect != nil {
					t.Errorf("masquerade got a redirect: %s", obs.Redirect)
				}
			case "bridge binding":
				if want := (Redirect{Port: "tap0", MAC: veth.MAC}); obs.Redirect == nil || !obs.Redirect.Equal(want) {
					t.Errorf("redirect = %v, want %s", obs.Redirect, want)
				}
			}
		})
	}
}

func TestApplyRedirectErrors(t *testing.T) {
	in := Inputs{Bridge: "k6t-eth0", MACSeed: "uid-1"}
	f := newFake(bridgeBindingLinks()...)
	p, err := Compute(f.observe(), in)
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
	p, err = Compute(f.observe(), in)
	if err != nil {
		t.Fatal(err)
	}
	got := actionStrings(p.Actions)
	if len(got) != 4 || got[0] != "replace redirect iifname tap0 ip daddr 169.254.169.254 ether daddr set "+DeriveMAC("uid-1", "k6t-eth0").String() {
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
	p, err = Compute(f.observe(), in)
	if err != nil {
		t.Fatal(err)
	}
	if got := actionStrings(p.Actions); !slices.Equal(got, []string{"delete redirect table kubevirt-imds"}) {
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

func TestApplyTwiceTolerated(t *testing.T) {
	f := newFake(podLinks()...)
	p, err := Compute(f.observe(), Inputs{Bridge: "k6t-eth0"})
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
	p, err := Compute(f.observe(), Inputs{Bridge: "k6t-eth0"})
	if err != nil {
		t.Fatal(err)
	}
	f.fail = map[string]error{"RuleAdd": syscall.EPERM}
	err = Apply(t.Context(), f, p, testLog(t))
	if !errors.Is(err, syscall.EPERM) {
		t.Fatalf("err = %v, want EPERM wrapped", err)
	}
	// The retry picks up where the failure left off.
	p, err = Compute(f.observe(), Inputs{Bridge: "k6t-eth0"})
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
	err = Apply(t.Context(), newFake(), Plan{Actions: []Action{SetUp{Link: "tap0"}}}, testLog(t))
	var nf netlink.LinkNotFoundError
	if !errors.As(err, &nf) {
		t.Errorf("err = %v, want LinkNotFoundError", err)
	}
	// Deleting what is already gone is fine.
	if err := Apply(t.Context(), newFake(), Plan{Actions: []Action{DeleteLink{Name: LinkName}}}, testLog(t)); err != nil {
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
	p, err := Compute(obs, Inputs{Bridge: "k6t-eth0"})
	if err != nil {
		b.Fatal(err)
	}
	for b.Loop() {
		if err := Apply(b.Context(), newFake(bridgeBindingLinks()...), p, logr.Discard()); err != nil {
			b.Fatal(err)
		}
	}
}

package network

import (
	"errors"
	"net"
	"net/netip"
	"slices"
	"testing"
)

func mac(b byte) net.HardwareAddr { return net.HardwareAddr{0x02, 0, 0, 0, 0, b} }

// podLinks is a virt-launcher Pod as KubeVirt leaves it for masquerade.
func podLinks(extra ...Link) []Link {
	links := []Link{
		{Name: "lo", Index: 1, Kind: "device", Up: true, ARPIgnore: -1},
		{Name: "eth0", Index: 2, Kind: "veth", MTU: 1450, Up: true, ARPIgnore: -1},
		{Name: "k6t-eth0", Index: 3, Kind: "bridge", MAC: mac(3), MTU: 1450, Up: true},
		{Name: "tap0", Index: 4, Kind: "tuntap", MasterIndex: 3, MAC: mac(4), MTU: 1450, Up: true, ARPIgnore: -1},
	}
	return append(links, extra...)
}

// bridgeBindingLinks is a virt-launcher Pod as KubeVirt leaves it for
// bridge binding: the Pod's eth0 renamed eth0-nic and enslaved.
func bridgeBindingLinks(extra ...Link) []Link {
	links := podLinks(extra...)
	links[1] = Link{Name: "eth0-nic", Index: 2, Kind: "veth", MasterIndex: 3, MTU: 1450, Up: true, ARPIgnore: -1}
	return links
}

func actionStrings(as []Action) []string {
	var s []string
	for _, a := range as {
		s = append(s, a.String())
	}
	return s
}

func TestComputeFresh(t *testing.T) {
	seedMAC := DeriveMAC("uid-1", "k6t-eth0")
	// The guard precedes everything, 169.254.169.254 above all; it admits
	// the bridge only where nothing but the guest sits on it.
	guardMasquerade := []Action{ReplaceGuard{Guard: Guard{ServicePort: 80, ListenPort: 80, Ingress: []string{LinkName, "k6t-eth0"}}}}
	guardBridgeBinding := []Action{ReplaceGuard{Guard: Guard{ServicePort: 80, ListenPort: 80, Ingress: []string{LinkName}}}}
	common := []Action{
		CreateVeth{Name: LinkName, Peer: PeerName, MAC: seedMAC, PeerMAC: PeerMAC(seedMAC), MTU: 1450},
		SetARPIgnore{Link: LinkName, Value: ARPIgnoreNone},
		SetARPIgnore{Link: "k6t-eth0", Value: ARPIgnoreOwn},
		SetMaster{Link: PeerName, Master: "k6t-eth0"},
		SetIsolated{Link: PeerName},
	}
	up := []Action{
		AddAddress{Link: LinkName, Prefix: Address},
		SetUp{Link: PeerName},
		SetUp{Link: LinkName},
		SetFDB{Link: PeerName, MAC: seedMAC},
	}
	// The redirect follows the FDB entry, so a rewritten frame is never
	// flooded for want of it.
	redirect := []Action{ReplaceRedirect{Redirect: Redirect{Port: "tap0", MAC: seedMAC}}}
	routing := []Action{
		AddRule{Rule: desiredRules()[0]},
		AddRule{Rule: desiredRules()[1]},
		ReplaceRoute{Route: Route{Table: RouteTable, Dst: mustPrefix("0.0.0.0/0"), Dev: LinkName}},
	}
	tests := []struct {
		name         string
		links        []Link
		wantActions  []Action
		wantIngress  []string
		wantRedirect bool
	}{{
		name:        "masquerade: only the guest's tap on the bridge, no redirect",
		links:       podLinks(),
		wantActions: slices.Concat(guardMasquerade, common, up, routing),
		wantIngress: []string{LinkName, "k6t-eth0"},
	}, {
		name:         "bridge binding: eth0-nic is isolated, the bridge is no ingress, the guest's packets are redirected",
		links:        bridgeBindingLinks(),
		wantActions:  slices.Concat(guardBridgeBinding, common, []Action{SetIsolated{Link: "eth0-nic"}}, up, redirect, routing),
		wantIngress:  []string{LinkName},
		wantRedirect: true,
	}, {
		name: "bridge binding with eth0-nic already isolated",
		links: func() []Link {
			l := bridgeBindingLinks()
			l[1].Isolated = true
			return l
		}(),
		wantActions:  slices.Concat(guardBridgeBinding, common, up, redirect, routing),
		wantIngress:  []string{LinkName},
		wantRedirect: true,
	}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, err := Compute(Observed{Links: tt.links}, Inputs{Bridge: "k6t-eth0", MACSeed: "uid-1"})
			if err != nil {
				t.Fatal(err)
			}
			if got, want := actionStrings(p.Actions), actionStrings(tt.wantActions); !slices.Equal(got, want) {
				t.Errorf("actions:\n got %q\nwant %q", got, want)
			}
			if got := p.Ingress(); !slices.Equal(got, tt.wantIngress) {
				t.Errorf("ingress = %v, want %v", got, tt.wantIngress)
			}
			if p.GuestPort != "tap0" || p.MAC.String() != seedMAC.String() {
				t.Errorf("guest port %s mac %s", p.GuestPort, p.MAC)
			}
			if got := p.Redirect != nil; got != tt.wantRedirect {
				t.Errorf("redirect = %v, want one: %v", p.Redirect, tt.wantRedirect)
			}
		})
	}
}

func mustPrefix(s string) netip.Prefix { return netip.MustParsePrefix(s) }

func TestComputeWaits(t *testing.T) {
	tests := []struct {
		name  string
		links []Link
		in    Inputs
		want  string
	}{
		{"no bridge yet", podLinks()[:2], Inputs{Bridge: "k6t-eth0"}, "bridge k6t-eth0 does not exist yet"},
		{"bridge without tap", podLinks()[:3], Inputs{Bridge: "k6t-eth0"}, "guest port tap0 does not exist yet on k6t-eth0"},
		{"tap not enslaved yet", func() []Link { l := podLinks(); l[3].MasterIndex = 0; return l }(), Inputs{Bridge: "k6t-eth0"}, "guest port tap0 is not a port of k6t-eth0 yet"},
		{"named bridge is not a bridge", podLinks(), Inputs{Bridge: "eth0"}, "eth0 is a veth link, not a bridge"},
		{"override names a missing port", podLinks(), Inputs{Bridge: "k6t-eth0", GuestPort: "vnet7"}, "guest port vnet7 does not exist yet on k6t-eth0"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Compute(Observed{Links: tt.links}, tt.in)
			var we *WaitError
			if !errors.As(err, &we) {
				t.Fatalf("err = %v, want a *WaitError", err)
			}
			if we.Reason != tt.want {
				t.Errorf("reason = %q, want %q", we.Reason, tt.want)
			}
		})
	}
	if _, err := Compute(Observed{}, Inputs{}); err == nil {
		t.Error("no bridge name: want an error")
	}
}

func TestComputeSecondaryAndOverride(t *testing.T) {
	links := []Link{
		{Name: "k6t-a1b2c3d4e5f", Index: 7, Kind: "bridge", MTU: 1500},
		{Name: "tapa1b2c3d4e5f", Index: 8, Kind: "tuntap", MasterIndex: 7},
		{Name: "a1b2c3d4e5f-nic", Index: 9, Kind: "veth", MasterIndex: 7},
		{Name: "vnet0", Index: 10, Kind: "veth", MasterIndex: 7},
	}
	p, err := Compute(Observed{Links: links}, Inputs{Bridge: "k6t-a1b2c3d4e5f"})
	if err != nil {
		t.Fatal(err)
	}
	if p.GuestPort != "tapa1b2c3d4e5f" || p.BridgeIngress {
		t.Errorf("guest port %s, bridge ingress %v", p.GuestPort, p.BridgeIngress)
	}
	// An explicit --guest-port wins, and the derived tap becomes foreign.
	p, err = Compute(Observed{Links: links}, Inputs{Bridge: "k6t-a1b2c3d4e5f", GuestPort: "vnet0"})
	if err != nil {
		t.Fatal(err)
	}
	if p.GuestPort != "vnet0" || !slices.ContainsFunc(p.Actions, func(a Action) bool { return a == SetIsolated{Link: "tapa1b2c3d4e5f"} }) {
		t.Errorf("guest port %s, actions %q", p.GuestPort, actionStrings(p.Actions))
	}
	// A lone tap with an unexpected name is still the guest's.
	links[1].Name = "tap-custom"
	if p, err = Compute(Observed{Links: links}, Inputs{Bridge: "k6t-a1b2c3d4e5f"}); err != nil || p.GuestPort != "tap-custom" {
		t.Errorf("lone tap: port %q, err %v", p.GuestPort, err)
	}
}

// adopted is the namespace after a successful apply for links.
func adopted(t *testing.T, links []Link) Observed {
	t.Helper()
	f := newFake(links...)
	p, err := Compute(f.observe(), Inputs{Bridge: "k6t-eth0", MACSeed: "uid-1"})
	if err != nil {
		t.Fatal(err)
	}
	if err := Apply(t.Context(), f, p, testLog(t)); err != nil {
		t.Fatal(err)
	}
	return f.observe()
}

func TestComputeAdopts(t *testing.T) {
	obs := adopted(t, podLinks())
	// A restarted sidecar with another seed keeps the existing MAC: the
	// guest's neighbour entry must stay valid.
	p, err := Compute(obs, Inputs{Bridge: "k6t-eth0", MACSeed: "something else"})
	if err != nil {
		t.Fatal(err)
	}
	if len(p.Actions) != 0 {
		t.Errorf("adopting: actions %q, want none", actionStrings(p.Actions))
	}
	if got, want := p.MAC.String(), DeriveMAC("uid-1", "k6t-eth0").String(); got != want {
		t.Errorf("mac = %s, want the adopted %s", got, want)
	}
}

func TestComputeRepairs(t *testing.T) {
	tests := []struct {
		name   string
		mutate func(*Observed)
		want   []string
	}{{
		name: "stale rule of ours at our priority",
		mutate: func(o *Observed) {
			o.Rules[1].Table = 99
		},
		want: []string{"delete rule 1691: from 169.254.169.254/32 lookup 99", "add rule 1691: from 169.254.169.254/32 lookup 43518"},
	}, {
		name: "someone downed veth-imds and removed the address",
		mutate: func(o *Observed) {
			l := o.link(LinkName)
			l.Up, l.Addrs = false, nil
		},
		want: []string{"add address 169.254.169.254/32 to veth-imds", "set veth-imds up"},
	}, {
		name: "the bridge grew jumbo frames",
		mutate: func(o *Observed) {
			o.link("k6t-eth0").MTU = 9000
		},
		want: []string{"set veth-imds mtu 9000", "set veth-imds-br mtu 9000"},
	}, {
		name: "a foreign port joined the bridge",
		mutate: func(o *Observed) {
			o.Links = append(o.Links, Link{Name: "eth0-nic", Index: 50, Kind: "veth", MasterIndex: 3})
		},
		// The guard stops admitting the bridge first: it may now carry a
		// foreign host's packets.
		want: []string{"replace guard ip daddr 169.254.169.254: accept only tcp dport 80 from veth-imds", "set eth0-nic isolated"},
	}, {
		name: "the kernel's arp_ignore was reset",
		mutate: func(o *Observed) {
			o.link(LinkName).ARPIgnore = 0
			o.link("k6t-eth0").ARPIgnore = 2 // stricter than needed: kept
		},
		want: []string{"set veth-imds arp_ignore 8"},
	}, {
		name: "a link named veth-imds that is not ours",
		mutate: func(o *Observed) {
			o.Links = slices.DeleteFunc(o.Links, func(l Link) bool { return l.Name == PeerName })
			o.link(LinkName).Kind = "device"
		},
		want: []string{"delete link veth-imds", "create veth veth-imds (" + DeriveMAC("uid-1", "k6t-eth0").String() + ") peer veth-imds-br (" + PeerMAC(DeriveMAC("uid-1", "k6t-eth0")).String() + ") mtu 1450"},
	}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			obs := adopted(t, podLinks())
			tt.mutate(&obs)
			p, err := Compute(obs, Inputs{Bridge: "k6t-eth0", MACSeed: "uid-1"})
			if err != nil {
				t.Fatal(err)
			}
			got := actionStrings(p.Actions)
			if len(got) > len(tt.want) {
				got = got[:len(tt.want)]
			}
			if !slices.Equal(got, tt.want) {
				t.Errorf("actions start %q, want %q (all: %q)", got, tt.want, actionStrings(p.Actions))
			}
		})
	}
}

func TestComputeRedirect(t *testing.T) {
	seedMAC := DeriveMAC("uid-1", "k6t-eth0")
	tests := []struct {
		name string
		// links is the namespace the adopted state is built for.
		links  []Link
		in     Inputs
		mutate func(*Observed)
		want   []string
		// wantRedirect is Plan.Redirect's port; "" for none.
		wantRedirect string
	}{{
		name:         "bridge binding, adopted: nothing to do",
		links:        bridgeBindingLinks(),
		want:         nil,
		wantRedirect: "tap0",
	}, {
		name:  "masquerade, adopted: no redirect, nothing to do",
		links: podLinks(),
		want:  nil,
	}, {
		name:  "masquerade with a redirect left over: removed",
		links: podLinks(),
		mutate: func(o *Observed) {
			o.Redirect = &Redirect{Port: "tap0", MAC: seedMAC}
		},
		want: []string{"delete redirect table kubevirt-imds"},
	}, {
		name:  "eth0-nic left the bridge: the gateway is local again, the redirect goes",
		links: bridgeBindingLinks(),
		mutate: func(o *Observed) {
			o.Links = slices.DeleteFunc(o.Links, func(l Link) bool { return l.Name == "eth0-nic" })
		},
		want: []string{"replace guard ip daddr 169.254.169.254: accept only tcp dport 80 from veth-imds,k6t-eth0", "delete redirect table kubevirt-imds"},
	}, {
		name:  "the table holds something else: replaced",
		links: bridgeBindingLinks(),
		mutate: func(o *Observed) {
			o.Redirect = &Redirect{}
		},
		want:         []string{"replace redirect iifname tap0 ip daddr 169.254.169.254 ether daddr set " + seedMAC.String()},
		wantRedirect: "tap0",
	}, {
		name:  "the table was removed: recreated",
		links: bridgeBindingLinks(),
		mutate: func(o *Observed) {
			o.Redirect = nil
		},
		want:         []string{"replace redirect iifname tap0 ip daddr 169.254.169.254 ether daddr set " + seedMAC.String()},
		wantRedirect: "tap0",
	}, {
		name:  "a redirect to another MAC: replaced with veth-imds's",
		links: bridgeBindingLinks(),
		mutate: func(o *Observed) {
			o.Redirect.MAC = mac(9)
		},
		want:         []string{"replace redirect iifname tap0 ip daddr 169.254.169.254 ether daddr set " + seedMAC.String()},
		wantRedirect: "tap0",
	}, {
		name:  "a redirect from another port: moved to the guest's",
		links: bridgeBindingLinks(),
		mutate: func(o *Observed) {
			o.Redirect.Port = "tap9"
		},
		want:         []string{"replace redirect iifname tap0 ip daddr 169.254.169.254 ether daddr set " + seedMAC.String()},
		wantRedirect: "tap0",
	}, {
		name:  "restarted with an explicit guest port: its frames are the ones redirected",
		links: bridgeBindingLinks(Link{Name: "vnet0", Index: 20, Kind: "tuntap", MasterIndex: 3}),
		in:    Inputs{GuestPort: "vnet0"},
		// tap0 is foreign now, and isolated like eth0-nic.
		want:         []string{"set tap0 isolated", "replace redirect iifname vnet0 ip daddr 169.254.169.254 ether daddr set " + seedMAC.String()},
		wantRedirect: "vnet0",
	}, {
		name:  "veth-imds recreated with the same MAC: the redirect still holds",
		links: bridgeBindingLinks(),
		mutate: func(o *Observed) {
			o.Links = slices.DeleteFunc(o.Links, func(l Link) bool { return l.Name == LinkName || l.Name == PeerName })
			o.FDB = nil
		},
		want: []string{
			"create veth veth-imds (" + seedMAC.String() + ") peer veth-imds-br (" + PeerMAC(seedMAC).String() + ") mtu 1450",
			"set veth-imds arp_ignore 8",
			"set veth-imds-br master k6t-eth0",
			"set veth-imds-br isolated",
			"add address 169.254.169.254/32 to veth-imds",
			"set veth-imds-br up",
			"set veth-imds up",
			"set fdb " + seedMAC.String() + " dev veth-imds-br master static",
			"replace route 0.0.0.0/0 dev veth-imds table 43518",
		},
		wantRedirect: "tap0",
	}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			// Adopted as planned with the default inputs, then planned again
			// with tt.in (a restart with other flags).
			obs := adopted(t, tt.links)
			in := tt.in
			in.Bridge, in.MACSeed = "k6t-eth0", "uid-1"
			if tt.mutate != nil {
				tt.mutate(&obs)
			}
			p, err := Compute(obs, in)
			if err != nil {
				t.Fatal(err)
			}
			if got := actionStrings(p.Actions); !slices.Equal(got, tt.want) {
				t.Errorf("actions:\n got %q\nwant %q", got, tt.want)
			}
			switch {
			case tt.wantRedirect == "" && p.Redirect != nil:
				t.Errorf("redirect %s, want none", p.Redirect)
			case tt.wantRedirect != "" && (p.Redirect == nil || p.Redirect.Port != tt.wantRedirect || p.Redirect.MAC.String() != seedMAC.String()):
				t.Errorf("redirect %v, want from %s to %s", p.Redirect, tt.wantRedirect, seedMAC)
			}
		})
	}
}

func TestComputeGuard(t *testing.T) {
	seedMAC := DeriveMAC("uid-1", "k6t-eth0")
	// Masquerade's ingress: only the guest's port and ours are on the bridge.
	masq := []string{LinkName, "k6t-eth0"}
	redirectMasq := "replace guard ip daddr 169.254.169.254: tcp dport 80 dnat to 8775 (frames of " + seedMAC.String() + " untracked on the bridge), accept only that from veth-imds,k6t-eth0"
	secondary := []Link{
		{Name: "k6t-eth0", Index: 7, Kind: "bridge", MTU: 1500},
		{Name: "tap0", Index: 8, Kind: "tuntap", MasterIndex: 7},
	}
	tests := []struct {
		name  string
		links []Link
		in    Inputs
		// adoptWith, if set, are the inputs the namespace was planned with
		// before: a restart with other inputs.
		adoptWith *Inputs
		mutate    func(*Observed)
		want      Guard
		// wantActions is the whole plan of an adopted namespace, or only the
		// first action of a fresh one.
		wantActions []string
	}{{
		name:        "zero ports: today's sidecar, port 80, no redirect",
		links:       podLinks(),
		want:        Guard{ServicePort: 80, ListenPort: 80, Ingress: masq},
		wantActions: []string{"replace guard ip daddr 169.254.169.254: accept only tcp dport 80 from veth-imds,k6t-eth0"},
	}, {
		name:        "the sidecar on another port, served directly",
		links:       podLinks(),
		in:          Inputs{ServicePort: 8080, ListenPort: 8080},
		want:        Guard{ServicePort: 8080, ListenPort: 8080, Ingress: masq},
		wantActions: []string{"replace guard ip daddr 169.254.169.254: accept only tcp dport 8080 from veth-imds,k6t-eth0"},
	}, {
		name:        "a listen port alone redirects from 80",
		links:       podLinks(),
		in:          Inputs{ListenPort: 8775},
		want:        Guard{ServicePort: 80, ListenPort: 8775, MAC: seedMAC, Ingress: masq},
		wantActions: []string{redirectMasq},
	}, {
		name:        "node mode, masquerade",
		links:       podLinks(),
		in:          Inputs{ServicePort: 80, ListenPort: 8775},
		want:        Guard{ServicePort: 80, ListenPort: 8775, MAC: seedMAC, Ingress: masq},
		wantActions: []string{redirectMasq},
	}, {
		name:        "node mode, bridge binding: only veth-imds is an ingress",
		links:       bridgeBindingLinks(),
		in:          Inputs{ServicePort: 80, ListenPort: 8775},
		want:        Guard{ServicePort: 80, ListenPort: 8775, MAC: seedMAC, Ingress: []string{LinkName}},
		wantActions: []string{"replace guard ip daddr 169.254.169.254: tcp dport 80 dnat to 8775 (frames of " + seedMAC.String() + " untracked on the bridge), accept only that from veth-imds"},
	}, {
		name:        "a Multus secondary's bridge without addresses is guarded the same",
		links:       secondary,
		want:        Guard{ServicePort: 80, ListenPort: 80, Ingress: masq},
		wantActions: []string{"replace guard ip daddr 169.254.169.254: accept only tcp dport 80 from veth-imds,k6t-eth0"},
	}, {
		name:      "adopted: nothing to do",
		links:     bridgeBindingLinks(),
		adoptWith: &Inputs{},
		want:      Guard{ServicePort: 80, ListenPort: 80, Ingress: []string{LinkName}},
	}, {
		name:      "adopted in node mode: nothing to do",
		links:     podLinks(),
		in:        Inputs{ListenPort: 8775},
		adoptWith: &Inputs{ListenPort: 8775},
		want:      Guard{ServicePort: 80, ListenPort: 8775, MAC: seedMAC, Ingress: masq},
	}, {
		name:      "adopted from a sidecar that had no guard (an upgrade): the guard alone is added",
		links:     bridgeBindingLinks(),
		adoptWith: &Inputs{},
		mutate:    func(o *Observed) { o.Guard = nil },
		want:      Guard{ServicePort: 80, ListenPort: 80, Ingress: []string{LinkName}},
		wantActions: []string{
			"replace guard ip daddr 169.254.169.254: accept only tcp dport 80 from veth-imds",
		},
	}, {
		name:        "the table holds something else: replaced",
		links:       podLinks(),
		adoptWith:   &Inputs{},
		mutate:      func(o *Observed) { o.Guard = &Guard{} },
		want:        Guard{ServicePort: 80, ListenPort: 80, Ingress: masq},
		wantActions: []string{"replace guard ip daddr 169.254.169.254: accept only tcp dport 80 from veth-imds,k6t-eth0"},
	}, {
		name:      "a foreign port joins the bridge: the bridge stops being an ingress",
		links:     podLinks(),
		adoptWith: &Inputs{},
		mutate: func(o *Observed) {
			o.Links = append(o.Links, Link{Name: "eth0-nic", Index: 50, Kind: "veth", MasterIndex: 3})
		},
		want: Guard{ServicePort: 80, ListenPort: 80, Ingress: []string{LinkName}},
		wantActions: []string{
			"replace guard ip daddr 169.254.169.254: accept only tcp dport 80 from veth-imds",
			"set eth0-nic isolated",
			"replace redirect iifname tap0 ip daddr 169.254.169.254 ether daddr set " + seedMAC.String(),
		},
	}, {
		name:        "restarted in node mode over a sidecar-mode namespace: the redirect is added",
		links:       podLinks(),
		in:          Inputs{ServicePort: 80, ListenPort: 8775},
		adoptWith:   &Inputs{},
		want:        Guard{ServicePort: 80, ListenPort: 8775, MAC: seedMAC, Ingress: masq},
		wantActions: []string{redirectMasq},
	}, {
		name:        "veth-imds adopted with another MAC: the guard follows it",
		links:       podLinks(),
		in:          Inputs{ListenPort: 8775},
		adoptWith:   &Inputs{ListenPort: 8775},
		mutate:      func(o *Observed) { o.link(LinkName).MAC = mac(9) },
		want:        Guard{ServicePort: 80, ListenPort: 8775, MAC: mac(9), Ingress: masq},
		wantActions: []string{"replace guard ip daddr 169.254.169.254: tcp dport 80 dnat to 8775 (frames of " + mac(9).String() + " untracked on the bridge), accept only that from veth-imds,k6t-eth0", "set fdb " + mac(9).String() + " dev veth-imds-br master static"},
	}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			in := tt.in
			in.Bridge, in.MACSeed = "k6t-eth0", "uid-1"
			obs := Observed{Links: tt.links}
			if tt.adoptWith != nil {
				before := *tt.adoptWith
				before.Bridge, before.MACSeed = in.Bridge, in.MACSeed
				f := newFake(tt.links...)
				p, err := Compute(f.observe(), before)
				if err != nil {
					t.Fatal(err)
				}
				if err := Apply(t.Context(), f, p, testLog(t)); err != nil {
					t.Fatal(err)
				}
				obs = f.observe()
			}
			if tt.mutate != nil {
				tt.mutate(&obs)
			}
			p, err := Compute(obs, in)
			if err != nil {
				t.Fatal(err)
			}
			if !p.Guard.Equal(tt.want) {
				t.Errorf("guard = %s %v, want %s %v", p.Guard, p.Guard.MAC, tt.want, tt.want.MAC)
			}
			got := actionStrings(p.Actions)
			if tt.adoptWith == nil && len(got) > 0 {
				got = got[:1]
			}
			if !slices.Equal(got, tt.wantActions) {
				t.Errorf("actions:\n got %q\nwant %q", got, tt.wantActions)
			}
		})
	}
}

func TestComputeGuardRejectsPorts(t *testing.T) {
	for _, in := range []Inputs{{ServicePort: -1}, {ServicePort: 65536}, {ListenPort: 70000}, {ServicePort: 80, ListenPort: -8}} {
		in.Bridge = "k6t-eth0"
		_, err := Compute(Observed{Links: podLinks()}, in)
		var we *WaitError
		if err == nil || errors.As(err, &we) {
			t.Errorf("%+v: err = %v, want a hard error (no wait can fix it)", in, err)
		}
	}
}

func TestGuestPortName(t *testing.T) {
	for bridge, want := range map[string]string{
		"k6t-eth0":        "tap0",
		"k6t-net1":        "tap1",
		"k6t-net12":       "tap12",
		"k6t-a1b2c3d4e5f": "tapa1b2c3d4e5f",
		"k6t-network":     "tapnetwork",
	} {
		if got := GuestPortName(bridge); got != want {
			t.Errorf("GuestPortName(%q) = %q, want %q", bridge, got, want)
		}
	}
}

func TestDeriveMAC(t *testing.T) {
	a := DeriveMAC("uid-1", "k6t-eth0")
	if a.String() != DeriveMAC("uid-1", "k6t-eth0").String() {
		t.Error("not deterministic")
	}
	if a[0]&0x01 != 0 || a[0]&0x02 == 0 {
		t.Errorf("%s is not a locally administered unicast address", a)
	}
	seen := map[string]bool{}
	for _, in := range [][2]string{{"uid-1", "k6t-eth0"}, {"uid-2", "k6t-eth0"}, {"uid-1", "k6t-net1"}, {"", "k6t-eth0"}} {
		m := DeriveMAC(in[0], in[1])
		if seen[m.String()] {
			t.Errorf("collision for %v", in)
		}
		seen[m.String()] = true
		if m[0]&0x03 != 0x02 {
			t.Errorf("%s: bad first octet", m)
		}
	}
}

func TestPeerMAC(t *testing.T) {
	m := DeriveMAC("uid-1", "k6t-eth0")
	p := PeerMAC(m)
	if p[0] != 0xfe || p[1] != 0xff || string(p[2:]) != string(m[2:]) {
		t.Errorf("PeerMAC(%s) = %s", m, p)
	}
	if m[0] == 0xfe {
		t.Skip("derived MAC happens to start with fe")
	}
	if p.String() == m.String() {
		t.Error("peer and link share a MAC")
	}
}

func BenchmarkPlan(b *testing.B) {
	obs := Observed{Links: bridgeBindingLinks()}
	in := Inputs{Bridge: "k6t-eth0", MACSeed: "uid-1"}
	for b.Loop() {
		if _, err := Compute(obs, in); err != nil {
			b.Fatal(err)
		}
	}
}

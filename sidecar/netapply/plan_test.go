package netapply

import (
	"errors"
	"net/netip"
	"slices"
	"testing"

	"github.com/kubevirt-imds/kubevirt-imds/sidecar/network"
)

func TestComputeFresh(t *testing.T) {
	seedMAC := network.DeriveMAC("uid-1", "k6t-eth0")
	// The guard precedes everything, 169.254.169.254 above all; it admits
	// the bridge only where nothing but the guest sits on it.
	guardMasquerade := []network.Action{network.ReplaceGuard{Guard: network.Guard{ServicePort: 80, ListenPort: 80, Ingress: []string{network.LinkName, "k6t-eth0"}}}}
	guardBridgeBinding := []network.Action{network.ReplaceGuard{Guard: network.Guard{ServicePort: 80, ListenPort: 80, Ingress: []string{network.LinkName}}}}
	common := []network.Action{
		network.CreateVeth{Name: network.LinkName, Peer: network.PeerName, MAC: seedMAC, PeerMAC: network.PeerMAC(seedMAC), MTU: 1450},
		network.SetARPIgnore{Link: network.LinkName, Value: network.ARPIgnoreNone},
		network.SetARPIgnore{Link: "k6t-eth0", Value: network.ARPIgnoreOwn},
		network.SetMaster{Link: network.PeerName, Master: "k6t-eth0"},
		network.SetIsolated{Link: network.PeerName},
	}
	up := []network.Action{
		network.AddAddress{Link: network.LinkName, Prefix: network.Address},
		network.SetUp{Link: network.PeerName},
		network.SetUp{Link: network.LinkName},
		network.SetFDB{Link: network.PeerName, MAC: seedMAC},
	}
	// The redirect follows the FDB entry, so a rewritten frame is never
	// flooded for want of it.
	redirect := []network.Action{network.ReplaceRedirect{Redirect: network.Redirect{Port: "tap0", MAC: seedMAC}}}
	routing := []network.Action{
		// 254: the kernel's main table.
		network.AddRule{Rule: network.Rule{Priority: network.RulePriorityMain, Src: network.Address, Table: 254, SuppressPrefixLen: 0}},
		network.AddRule{Rule: network.Rule{Priority: network.RulePriorityTable, Src: network.Address, Table: network.RouteTable, SuppressPrefixLen: -1}},
		network.ReplaceRoute{Route: network.Route{Table: network.RouteTable, Dst: mustPrefix("0.0.0.0/0"), Dev: network.LinkName}},
	}
	tests := []struct {
		name         string
		links        []network.Link
		wantActions  []network.Action
		wantIngress  []string
		wantRedirect bool
	}{{
		name:        "masquerade: only the guest's tap on the bridge, no redirect",
		links:       podLinks(),
		wantActions: slices.Concat(guardMasquerade, common, up, routing),
		wantIngress: []string{network.LinkName, "k6t-eth0"},
	}, {
		name:         "bridge binding: eth0-nic is isolated, the bridge is no ingress, the guest's packets are redirected",
		links:        bridgeBindingLinks(),
		wantActions:  slices.Concat(guardBridgeBinding, common, []network.Action{network.SetIsolated{Link: "eth0-nic"}}, up, redirect, routing),
		wantIngress:  []string{network.LinkName},
		wantRedirect: true,
	}, {
		name: "bridge binding with eth0-nic already isolated",
		links: func() []network.Link {
			l := bridgeBindingLinks()
			l[1].Isolated = true
			return l
		}(),
		wantActions:  slices.Concat(guardBridgeBinding, common, up, redirect, routing),
		wantIngress:  []string{network.LinkName},
		wantRedirect: true,
	}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, err := network.Compute(network.Observed{Links: tt.links}, network.Inputs{Bridge: "k6t-eth0", MACSeed: "uid-1"})
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
		links []network.Link
		in    network.Inputs
		want  string
	}{
		{"no bridge yet", podLinks()[:2], network.Inputs{Bridge: "k6t-eth0"}, "bridge k6t-eth0 does not exist yet"},
		{"bridge without tap", podLinks()[:3], network.Inputs{Bridge: "k6t-eth0"}, "guest port tap0 does not exist yet on k6t-eth0"},
		{"tap not enslaved yet", func() []network.Link { l := podLinks(); l[3].MasterIndex = 0; return l }(), network.Inputs{Bridge: "k6t-eth0"}, "guest port tap0 is not a port of k6t-eth0 yet"},
		{"named bridge is not a bridge", podLinks(), network.Inputs{Bridge: "eth0"}, "eth0 is a veth link, not a bridge"},
		{"override names a missing port", podLinks(), network.Inputs{Bridge: "k6t-eth0", GuestPort: "vnet7"}, "guest port vnet7 does not exist yet on k6t-eth0"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := network.Compute(network.Observed{Links: tt.links}, tt.in)
			var we *network.WaitError
			if !errors.As(err, &we) {
				t.Fatalf("err = %v, want a *WaitError", err)
			}
			if we.Reason != tt.want {
				t.Errorf("reason = %q, want %q", we.Reason, tt.want)
			}
		})
	}
	if _, err := network.Compute(network.Observed{}, network.Inputs{}); err == nil {
		t.Error("no bridge name: want an error")
	}
}

func TestComputeSecondaryAndOverride(t *testing.T) {
	links := []network.Link{
		{Name: "k6t-a1b2c3d4e5f", Index: 7, Kind: "bridge", MTU: 1500},
		{Name: "tapa1b2c3d4e5f", Index: 8, Kind: "tuntap", MasterIndex: 7},
		{Name: "a1b2c3d4e5f-nic", Index: 9, Kind: "veth", MasterIndex: 7},
		{Name: "vnet0", Index: 10, Kind: "veth", MasterIndex: 7},
	}
	p, err := network.Compute(network.Observed{Links: links}, network.Inputs{Bridge: "k6t-a1b2c3d4e5f"})
	if err != nil {
		t.Fatal(err)
	}
	if p.GuestPort != "tapa1b2c3d4e5f" || p.BridgeIngress {
		t.Errorf("guest port %s, bridge ingress %v", p.GuestPort, p.BridgeIngress)
	}
	// An explicit --guest-port wins, and the derived tap becomes foreign.
	p, err = network.Compute(network.Observed{Links: links}, network.Inputs{Bridge: "k6t-a1b2c3d4e5f", GuestPort: "vnet0"})
	if err != nil {
		t.Fatal(err)
	}
	if p.GuestPort != "vnet0" || !slices.ContainsFunc(p.Actions, func(a network.Action) bool { return a == network.SetIsolated{Link: "tapa1b2c3d4e5f"} }) {
		t.Errorf("guest port %s, actions %q", p.GuestPort, actionStrings(p.Actions))
	}
	// A lone tap with an unexpected name is still the guest's.
	links[1].Name = "tap-custom"
	if p, err = network.Compute(network.Observed{Links: links}, network.Inputs{Bridge: "k6t-a1b2c3d4e5f"}); err != nil || p.GuestPort != "tap-custom" {
		t.Errorf("lone tap: port %q, err %v", p.GuestPort, err)
	}
}

// adopted is the namespace after a successful apply for links.
func adopted(t *testing.T, links []network.Link) network.Observed {
	t.Helper()
	f := newFake(links...)
	p, err := network.Compute(f.observe(), network.Inputs{Bridge: "k6t-eth0", MACSeed: "uid-1"})
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
	p, err := network.Compute(obs, network.Inputs{Bridge: "k6t-eth0", MACSeed: "something else"})
	if err != nil {
		t.Fatal(err)
	}
	if len(p.Actions) != 0 {
		t.Errorf("adopting: actions %q, want none", actionStrings(p.Actions))
	}
	if got, want := p.MAC.String(), network.DeriveMAC("uid-1", "k6t-eth0").String(); got != want {
		t.Errorf("mac = %s, want the adopted %s", got, want)
	}
}

func TestComputeRepairs(t *testing.T) {
	tests := []struct {
		name   string
		mutate func(*network.Observed)
		want   []string
	}{{
		name: "stale rule of ours at our priority",
		mutate: func(o *network.Observed) {
			o.Rules[1].Table = 99
		},
		want: []string{"delete rule 1691: from 169.254.169.254/32 lookup 99", "add rule 1691: from 169.254.169.254/32 lookup 43518"},
	}, {
		name: "someone downed veth-imds and removed the address",
		mutate: func(o *network.Observed) {
			l := o.Link(network.LinkName)
			l.Up, l.Addrs = false, nil
		},
		want: []string{"add address 169.254.169.254/32 to veth-imds", "set veth-imds up"},
	}, {
		name: "the bridge grew jumbo frames",
		mutate: func(o *network.Observed) {
			o.Link("k6t-eth0").MTU = 9000
		},
		want: []string{"set veth-imds mtu 9000", "set veth-imds-br mtu 9000"},
	}, {
		name: "a foreign port joined the bridge",
		mutate: func(o *network.Observed) {
			o.Links = append(o.Links, network.Link{Name: "eth0-nic", Index: 50, Kind: "veth", MasterIndex: 3})
		},
		// The guard stops admitting the bridge first: it may now carry a
		// foreign host's packets.
		want: []string{"replace guard ip daddr 169.254.169.254: accept only tcp dport 80 from veth-imds", "set eth0-nic isolated"},
	}, {
		name: "the kernel's arp_ignore was reset",
		mutate: func(o *network.Observed) {
			o.Link(network.LinkName).ARPIgnore = 0
			o.Link("k6t-eth0").ARPIgnore = 2 // stricter than needed: kept
		},
		want: []string{"set veth-imds arp_ignore 8"},
	}, {
		name: "a link named veth-imds that is not ours",
		mutate: func(o *network.Observed) {
			o.Links = slices.DeleteFunc(o.Links, func(l network.Link) bool { return l.Name == network.PeerName })
			o.Link(network.LinkName).Kind = "device"
		},
		want: []string{"delete link veth-imds", "create veth veth-imds (" + network.DeriveMAC("uid-1", "k6t-eth0").String() + ") peer veth-imds-br (" + network.PeerMAC(network.DeriveMAC("uid-1", "k6t-eth0")).String() + ") mtu 1450"},
	}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			obs := adopted(t, podLinks())
			tt.mutate(&obs)
			p, err := network.Compute(obs, network.Inputs{Bridge: "k6t-eth0", MACSeed: "uid-1"})
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
	seedMAC := network.DeriveMAC("uid-1", "k6t-eth0")
	tests := []struct {
		name string
		// links is the namespace the adopted state is built for.
		links  []network.Link
		in     network.Inputs
		mutate func(*network.Observed)
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
		mutate: func(o *network.Observed) {
			o.Redirect = &network.Redirect{Port: "tap0", MAC: seedMAC}
		},
		want: []string{"delete redirect table kubevirt-imds"},
	}, {
		name:  "eth0-nic left the bridge: the gateway is local again, the redirect goes",
		links: bridgeBindingLinks(),
		mutate: func(o *network.Observed) {
			o.Links = slices.DeleteFunc(o.Links, func(l network.Link) bool { return l.Name == "eth0-nic" })
		},
		want: []string{"replace guard ip daddr 169.254.169.254: accept only tcp dport 80 from veth-imds,k6t-eth0", "delete redirect table kubevirt-imds"},
	}, {
		name:  "the table holds something else: replaced",
		links: bridgeBindingLinks(),
		mutate: func(o *network.Observed) {
			o.Redirect = &network.Redirect{}
		},
		want:         []string{"replace redirect iifname tap0 ip daddr 169.254.169.254 ether daddr set " + seedMAC.String()},
		wantRedirect: "tap0",
	}, {
		name:  "the table was removed: recreated",
		links: bridgeBindingLinks(),
		mutate: func(o *network.Observed) {
			o.Redirect = nil
		},
		want:         []string{"replace redirect iifname tap0 ip daddr 169.254.169.254 ether daddr set " + seedMAC.String()},
		wantRedirect: "tap0",
	}, {
		name:  "a redirect to another MAC: replaced with veth-imds's",
		links: bridgeBindingLinks(),
		mutate: func(o *network.Observed) {
			o.Redirect.MAC = mac(9)
		},
		want:         []string{"replace redirect iifname tap0 ip daddr 169.254.169.254 ether daddr set " + seedMAC.String()},
		wantRedirect: "tap0",
	}, {
		name:  "a redirect from another port: moved to the guest's",
		links: bridgeBindingLinks(),
		mutate: func(o *network.Observed) {
			o.Redirect.Port = "tap9"
		},
		want:         []string{"replace redirect iifname tap0 ip daddr 169.254.169.254 ether daddr set " + seedMAC.String()},
		wantRedirect: "tap0",
	}, {
		name:  "restarted with an explicit guest port: its frames are the ones redirected",
		links: bridgeBindingLinks(network.Link{Name: "vnet0", Index: 20, Kind: "tuntap", MasterIndex: 3}),
		in:    network.Inputs{GuestPort: "vnet0"},
		// tap0 is foreign now, and isolated like eth0-nic.
		want:         []string{"set tap0 isolated", "replace redirect iifname vnet0 ip daddr 169.254.169.254 ether daddr set " + seedMAC.String()},
		wantRedirect: "vnet0",
	}, {
		name:  "veth-imds recreated with the same MAC: the redirect still holds",
		links: bridgeBindingLinks(),
		mutate: func(o *network.Observed) {
			o.Links = slices.DeleteFunc(o.Links, func(l network.Link) bool { return l.Name == network.LinkName || l.Name == network.PeerName })
			o.FDB = nil
		},
		want: []string{
			"create veth veth-imds (" + seedMAC.String() + ") peer veth-imds-br (" + network.PeerMAC(seedMAC).String() + ") mtu 1450",
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
			p, err := network.Compute(obs, in)
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
	seedMAC := network.DeriveMAC("uid-1", "k6t-eth0")
	// Masquerade's ingress: only the guest's port and ours are on the bridge.
	masq := []string{network.LinkName, "k6t-eth0"}
	redirectMasq := "replace guard ip daddr 169.254.169.254: tcp dport 80 dnat to 8775 (frames of " + seedMAC.String() + " untracked on the bridge), accept only that from veth-imds,k6t-eth0"
	secondary := []network.Link{
		{Name: "k6t-eth0", Index: 7, Kind: "bridge", MTU: 1500},
		{Name: "tap0", Index: 8, Kind: "tuntap", MasterIndex: 7},
	}
	tests := []struct {
		name  string
		links []network.Link
		in    network.Inputs
		// adoptWith, if set, are the inputs the namespace was planned with
		// before: a restart with other inputs.
		adoptWith *network.Inputs
		mutate    func(*network.Observed)
		want      network.Guard
		// wantActions is the whole plan of an adopted namespace, or only the
		// first action of a fresh one.
		wantActions []string
	}{{
		name:        "zero ports: today's sidecar, port 80, no redirect",
		links:       podLinks(),
		want:        network.Guard{ServicePort: 80, ListenPort: 80, Ingress: masq},
		wantActions: []string{"replace guard ip daddr 169.254.169.254: accept only tcp dport 80 from veth-imds,k6t-eth0"},
	}, {
		name:        "the sidecar on another port, served directly",
		links:       podLinks(),
		in:          network.Inputs{ServicePort: 8080, ListenPort: 8080},
		want:        network.Guard{ServicePort: 8080, ListenPort: 8080, Ingress: masq},
		wantActions: []string{"replace guard ip daddr 169.254.169.254: accept only tcp dport 8080 from veth-imds,k6t-eth0"},
	}, {
		name:        "a listen port alone redirects from 80",
		links:       podLinks(),
		in:          network.Inputs{ListenPort: 8775},
		want:        network.Guard{ServicePort: 80, ListenPort: 8775, MAC: seedMAC, Ingress: masq},
		wantActions: []string{redirectMasq},
	}, {
		name:        "node mode, masquerade",
		links:       podLinks(),
		in:          network.Inputs{ServicePort: 80, ListenPort: 8775},
		want:        network.Guard{ServicePort: 80, ListenPort: 8775, MAC: seedMAC, Ingress: masq},
		wantActions: []string{redirectMasq},
	}, {
		name:        "node mode, bridge binding: only veth-imds is an ingress",
		links:       bridgeBindingLinks(),
		in:          network.Inputs{ServicePort: 80, ListenPort: 8775},
		want:        network.Guard{ServicePort: 80, ListenPort: 8775, MAC: seedMAC, Ingress: []string{network.LinkName}},
		wantActions: []string{"replace guard ip daddr 169.254.169.254: tcp dport 80 dnat to 8775 (frames of " + seedMAC.String() + " untracked on the bridge), accept only that from veth-imds"},
	}, {
		name:        "a Multus secondary's bridge without addresses is guarded the same",
		links:       secondary,
		want:        network.Guard{ServicePort: 80, ListenPort: 80, Ingress: masq},
		wantActions: []string{"replace guard ip daddr 169.254.169.254: accept only tcp dport 80 from veth-imds,k6t-eth0"},
	}, {
		name:      "adopted: nothing to do",
		links:     bridgeBindingLinks(),
		adoptWith: &network.Inputs{},
		want:      network.Guard{ServicePort: 80, ListenPort: 80, Ingress: []string{network.LinkName}},
	}, {
		name:      "adopted in node mode: nothing to do",
		links:     podLinks(),
		in:        network.Inputs{ListenPort: 8775},
		adoptWith: &network.Inputs{ListenPort: 8775},
		want:      network.Guard{ServicePort: 80, ListenPort: 8775, MAC: seedMAC, Ingress: masq},
	}, {
		name:      "adopted from a sidecar that had no guard (an upgrade): the guard alone is added",
		links:     bridgeBindingLinks(),
		adoptWith: &network.Inputs{},
		mutate:    func(o *network.Observed) { o.Guard = nil },
		want:      network.Guard{ServicePort: 80, ListenPort: 80, Ingress: []string{network.LinkName}},
		wantActions: []string{
			"replace guard ip daddr 169.254.169.254: accept only tcp dport 80 from veth-imds",
		},
	}, {
		name:        "the table holds something else: replaced",
		links:       podLinks(),
		adoptWith:   &network.Inputs{},
		mutate:      func(o *network.Observed) { o.Guard = &network.Guard{} },
		want:        network.Guard{ServicePort: 80, ListenPort: 80, Ingress: masq},
		wantActions: []string{"replace guard ip daddr 169.254.169.254: accept only tcp dport 80 from veth-imds,k6t-eth0"},
	}, {
		name:      "a foreign port joins the bridge: the bridge stops being an ingress",
		links:     podLinks(),
		adoptWith: &network.Inputs{},
		mutate: func(o *network.Observed) {
			o.Links = append(o.Links, network.Link{Name: "eth0-nic", Index: 50, Kind: "veth", MasterIndex: 3})
		},
		want: network.Guard{ServicePort: 80, ListenPort: 80, Ingress: []string{network.LinkName}},
		wantActions: []string{
			"replace guard ip daddr 169.254.169.254: accept only tcp dport 80 from veth-imds",
			"set eth0-nic isolated",
			"replace redirect iifname tap0 ip daddr 169.254.169.254 ether daddr set " + seedMAC.String(),
		},
	}, {
		name:        "restarted in node mode over a sidecar-mode namespace: the redirect is added",
		links:       podLinks(),
		in:          network.Inputs{ServicePort: 80, ListenPort: 8775},
		adoptWith:   &network.Inputs{},
		want:        network.Guard{ServicePort: 80, ListenPort: 8775, MAC: seedMAC, Ingress: masq},
		wantActions: []string{redirectMasq},
	}, {
		name:        "veth-imds adopted with another MAC: the guard follows it",
		links:       podLinks(),
		in:          network.Inputs{ListenPort: 8775},
		adoptWith:   &network.Inputs{ListenPort: 8775},
		mutate:      func(o *network.Observed) { o.Link(network.LinkName).MAC = mac(9) },
		want:        network.Guard{ServicePort: 80, ListenPort: 8775, MAC: mac(9), Ingress: masq},
		wantActions: []string{"replace guard ip daddr 169.254.169.254: tcp dport 80 dnat to 8775 (frames of " + mac(9).String() + " untracked on the bridge), accept only that from veth-imds,k6t-eth0", "set fdb " + mac(9).String() + " dev veth-imds-br master static"},
	}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			in := tt.in
			in.Bridge, in.MACSeed = "k6t-eth0", "uid-1"
			obs := network.Observed{Links: tt.links}
			if tt.adoptWith != nil {
				before := *tt.adoptWith
				before.Bridge, before.MACSeed = in.Bridge, in.MACSeed
				f := newFake(tt.links...)
				p, err := network.Compute(f.observe(), before)
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
			p, err := network.Compute(obs, in)
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
	for _, in := range []network.Inputs{{ServicePort: -1}, {ServicePort: 65536}, {ListenPort: 70000}, {ServicePort: 80, ListenPort: -8}} {
		in.Bridge = "k6t-eth0"
		_, err := network.Compute(network.Observed{Links: podLinks()}, in)
		var we *network.WaitError
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
		if got := network.GuestPortName(bridge); got != want {
			t.Errorf("GuestPortName(%q) = %q, want %q", bridge, got, want)
		}
	}
}

func TestDeriveMAC(t *testing.T) {
	a := network.DeriveMAC("uid-1", "k6t-eth0")
	if a.String() != network.DeriveMAC("uid-1", "k6t-eth0").String() {
		t.Error("not deterministic")
	}
	if a[0]&0x01 != 0 || a[0]&0x02 == 0 {
		t.Errorf("%s is not a locally administered unicast address", a)
	}
	seen := map[string]bool{}
	for _, in := range [][2]string{{"uid-1", "k6t-eth0"}, {"uid-2", "k6t-eth0"}, {"uid-1", "k6t-net1"}, {"", "k6t-eth0"}} {
		m := network.DeriveMAC(in[0], in[1])
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
	m := network.DeriveMAC("uid-1", "k6t-eth0")
	p := network.PeerMAC(m)
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
	obs := network.Observed{Links: bridgeBindingLinks()}
	in := network.Inputs{Bridge: "k6t-eth0", MACSeed: "uid-1"}
	for b.Loop() {
		if _, err := network.Compute(obs, in); err != nil {
			b.Fatal(err)
		}
	}
}

package netconfig

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"

	"sigs.k8s.io/yaml"

	"github.com/kubevirt-imds/kubevirt-imds/api/payload"
)

// netplanDoc is the subset of cloud-init network-config version 2 that the
// neutral model can carry. Unknown keys are rejected so that a typo is an
// error, not a silently ignored setting; the document itself is still served
// verbatim to the dialects that speak version 2.
type netplanDoc struct {
	Network *netplanNetwork `json:"network"`
}

type netplanNetwork struct {
	Version   int                        `json:"version"`
	Renderer  string                     `json:"renderer,omitempty"`
	Ethernets map[string]netplanEthernet `json:"ethernets,omitempty"`
}

type netplanEthernet struct {
	Match *struct {
		MACAddress string `json:"macaddress,omitempty"`
		Name       string `json:"name,omitempty"`
		Driver     string `json:"driver,omitempty"`
	} `json:"match,omitempty"`
	SetName     string   `json:"set-name,omitempty"`
	DHCP4       *bool    `json:"dhcp4,omitempty"`
	DHCP6       *bool    `json:"dhcp6,omitempty"`
	Addresses   []string `json:"addresses,omitempty"`
	Gateway4    string   `json:"gateway4,omitempty"`
	Gateway6    string   `json:"gateway6,omitempty"`
	MTU         int      `json:"mtu,omitempty"`
	Optional    bool     `json:"optional,omitempty"`
	AcceptRA    *bool    `json:"accept-ra,omitempty"`
	Nameservers *struct {
		Addresses []string `json:"addresses,omitempty"`
		Search    []string `json:"search,omitempty"`
	} `json:"nameservers,omitempty"`
	Routes []struct {
		To     string `json:"to"`
		Via    string `json:"via,omitempty"`
		Metric int    `json:"metric,omitempty"`
	} `json:"routes,omitempty"`
}

// FromNetplanV2 parses a cloud-init network-config version 2 document (with or
// without the top-level "network:" key) into the neutral model, keeping the
// document itself for verbatim serving. Errors name the offending path.
func FromNetplanV2(text string) (*payload.Network, error) {
	var doc netplanDoc
	if err := yaml.UnmarshalStrict([]byte(text), &doc); err != nil || doc.Network == nil {
		var bare netplanNetwork
		if bareErr := yaml.UnmarshalStrict([]byte(text), &bare); bareErr != nil {
			if err == nil {
				err = bareErr
			}
			return nil, fmt.Errorf("not a network-config version 2 document: %w", err)
		}
		doc.Network = &bare
	}
	n := doc.Network
	if n.Version != 2 {
		return nil, fmt.Errorf("network.version: must be 2, got %d", n.Version)
	}
	out := &payload.Network{NetplanV2: text, Interfaces: []payload.Interface{}}
	names := make([]string, 0, len(n.Ethernets))
	for name := range n.Ethernets {
		names = append(names, name)
	}
	slices.Sort(names)
	for _, name := range names {
		eth := n.Ethernets[name]
		path := "network.ethernets." + name
		nic := payload.Interface{
			Name:     name,
			DHCP4:    eth.DHCP4 != nil && *eth.DHCP4,
			DHCP6:    eth.DHCP6 != nil && *eth.DHCP6,
			MTU:      eth.MTU,
			Optional: eth.Optional,
			Gateway4: eth.Gateway4,
			Gateway6: eth.Gateway6,
		}
		if eth.SetName != "" {
			nic.Name = eth.SetName
		}
		if eth.Match != nil && eth.Match.MACAddress != "" {
			mac := strings.ToLower(eth.Match.MACAddress)
			if !validMAC(mac) {
				return nil, fmt.Errorf("%s.match.macaddress: %q is not a MAC address", path, eth.Match.MACAddress)
			}
			nic.MACAddress = mac
		}
		for i, a := range eth.Addresses {
			if _, err := netip.ParsePrefix(a); err != nil {
				return nil, fmt.Errorf("%s.addresses[%d]: %q is not an address with a prefix length", path, i, a)
			}
			nic.Addresses = append(nic.Addresses, a)
		}
		for field, gw := range map[string]string{"gateway4": eth.Gateway4, "gateway6": eth.Gateway6} {
			if gw == "" {
				continue
			}
			if _, err := netip.ParseAddr(gw); err != nil {
				return nil, fmt.Errorf("%s.%s: %q is not an IP address", path, field, gw)
			}
		}
		for i, r := range eth.Routes {
			to := r.To
			if to == "default" {
				to = "0.0.0.0/0"
				if a, err := netip.ParseAddr(r.Via); err == nil && a.Is6() {
					to = "::/0"
				}
			}
			if _, err := netip.ParsePrefix(to); err != nil {
				return nil, fmt.Errorf("%s.routes[%d].to: %q is not a network in CIDR notation", path, i, r.To)
			}
			if r.Via != "" {
				if _, err := netip.ParseAddr(r.Via); err != nil {
					return nil, fmt.Errorf("%s.routes[%d].via: %q is not an IP address", path, i, r.Via)
				}
			}
			nic.Routes = append(nic.Routes, payload.Route{To: to, Via: r.Via, Metric: r.Metric})
		}
		if ns := eth.Nameservers; ns != nil {
			for i, a := range ns.Addresses {
				if _, err := netip.ParseAddr(a); err != nil {
					return nil, fmt.Errorf("%s.nameservers.addresses[%d]: %q is not an IP address", path, i, a)
				}
			}
			nic.Nameservers = &payload.Nameservers{Addresses: ns.Addresses, Search: ns.Search}
		}
		out.Interfaces = append(out.Interfaces, nic)
	}
	return out, nil
}

func validMAC(s string) bool {
	parts := strings.Split(s, ":")
	if len(parts) != 6 {
		return false
	}
	for _, p := range parts {
		if len(p) != 2 || strings.Trim(p, "0123456789abcdef") != "" {
			return false
		}
	}
	return true
}

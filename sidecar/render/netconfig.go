package render

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/netip"

	"go.yaml.in/yaml/v2"

	"github.com/kubevirt-imds/kubevirt-imds/api/payload"
)

// NetworkConfigV2 renders cloud-init network-config version 2 (netplan) YAML.
// Each NIC is keyed eth<i> and matched by its MAC address; NICs whose MAC is
// not known yet are left out (matchable). A document carrying the user's own
// version 2 text (Network.NetplanV2) gets it back verbatim. It returns nil
// when the document has no network configuration, or no MAC for the primary
// NIC yet: the guest then keeps its own fallback.
func NetworkConfigV2(d *payload.Document) ([]byte, error) {
	if d == nil || d.Network == nil {
		return nil, nil
	}
	if d.Network.NetplanV2 != "" {
		return []byte(d.Network.NetplanV2), nil
	}
	all := matchable(nics(d.Network))
	if len(all) == 0 {
		return nil, nil
	}
	type nsV2 struct {
		Addresses []string `json:"addresses,omitempty"`
		Search    []string `json:"search,omitempty"`
	}
	type routeV2 struct {
		To     string `json:"to"`
		Via    string `json:"via,omitempty"`
		Metric int    `json:"metric,omitempty"`
	}
	type matchV2 struct {
		MACAddress string `json:"macaddress"`
	}
	type ethV2 struct {
		Match       *matchV2  `json:"match,omitempty"`
		MTU         int       `json:"mtu,omitempty"`
		DHCP4       bool      `json:"dhcp4"`
		DHCP6       bool      `json:"dhcp6"`
		Addresses   []string  `json:"addresses,omitempty"`
		Routes      []routeV2 `json:"routes,omitempty"`
		Nameservers *nsV2     `json:"nameservers,omitempty"`
	}
	type netV2 struct {
		Version   int              `json:"version"`
		Ethernets map[string]ethV2 `json:"ethernets"`
	}
	out := netV2{Version: 2, Ethernets: map[string]ethV2{}}
	global := globalDNS(d.Network)
	for _, c := range all {
		e := ethV2{MTU: c.mtu, DHCP4: c.dhcp4, DHCP6: c.dhcp6}
		// Match by MAC without set-name: a rename needs the NIC down, and
		// the NIC that fetched this file is up, so cloud-init's rename
		// would fail and leave a configuration for a name that does not
		// exist. netplan matches the MAC natively.
		e.Match = &matchV2{MACAddress: c.mac}
		if !c.dhcp4 {
			for _, p := range c.v4 {
				e.Addresses = append(e.Addresses, p.String())
			}
		}
		if !c.dhcp6 {
			for _, p := range c.v6 {
				e.Addresses = append(e.Addresses, p.String())
			}
		}
		// 0.0.0.0/0 rather than "default": every cloud-init and netplan
		// version understands it.
		if c.gw4.IsValid() {
			e.Routes = append(e.Routes, routeV2{To: "0.0.0.0/0", Via: c.gw4.String()})
		}
		if c.gw6.IsValid() {
			e.Routes = append(e.Routes, routeV2{To: "::/0", Via: c.gw6.String()})
		}
		for _, r := range c.routes {
			rv := routeV2{To: r.to.String(), Metric: r.metric}
			if r.via.IsValid() {
				rv.Via = r.via.String()
			}
			e.Routes = append(e.Routes, rv)
		}
		ns := c.dns
		if c.primary {
			// netplan has no global resolvers; the primary NIC carries them.
			ns = mergeDNS(global, c.dns)
		}
		if !ns.empty() {
			e.Nameservers = &nsV2{Addresses: ns.addrStrings(), Search: ns.search}
		}
		out.Ethernets[c.name] = e
	}
	return marshalYAML(map[string]any{"network": out})
}

// NetworkConfigV1 renders cloud-init network-config version 1 YAML, one
// physical entry per NIC whose MAC is known (matchable). It returns nil when
// the document has no network configuration, or no MAC for the primary NIC
// yet.
func NetworkConfigV1(d *payload.Document) ([]byte, error) {
	if d == nil || d.Network == nil {
		return nil, nil
	}
	all := matchable(nics(d.Network))
	if len(all) == 0 {
		return nil, nil
	}
	type routeV1 struct {
		Network string `json:"network"`
		Netmask string `json:"netmask,omitempty"`
		Prefix  int    `json:"prefix,omitempty"`
		Gateway string `json:"gateway,omitempty"`
		Metric  int    `json:"metric,omitempty"`
	}
	type subnetV1 struct {
		Type           string    `json:"type"`
		Address        string    `json:"address,omitempty"`
		Gateway        string    `json:"gateway,omitempty"`
		DNSNameservers []string  `json:"dns_nameservers,omitempty"`
		DNSSearch      []string  `json:"dns_search,omitempty"`
		Routes         []routeV1 `json:"routes,omitempty"`
	}
	type entryV1 struct {
		Type       string     `json:"type"`
		Name       string     `json:"name,omitempty"`
		MACAddress string     `json:"mac_address,omitempty"`
		MTU        int        `json:"mtu,omitempty"`
		Subnets    []subnetV1 `json:"subnets,omitempty"`
		Address    []string   `json:"address,omitempty"`
		Search     []string   `json:"search,omitempty"`
	}
	config := []entryV1{}
	for _, c := range all {
		e := entryV1{Type: "physical", Name: c.name, MACAddress: c.mac, MTU: c.mtu}
		var r4, r6 []routeV1
		for _, r := range c.routes {
			rv := routeV1{Network: r.to.Addr().String(), Metric: r.metric}
			if r.to.Addr().Is4() {
				rv.Netmask = netmask4(r.to.Bits())
			} else {
				rv.Prefix = r.to.Bits()
			}
			if r.via.IsValid() {
				rv.Gateway = r.via.String()
			}
			if r.to.Addr().Is4() {
				r4 = append(r4, rv)
			} else {
				r6 = append(r6, rv)
			}
		}
		dnsDone := false
		withDNS := func(s subnetV1) subnetV1 {
			if !dnsDone && !c.dns.empty() {
				s.DNSNameservers, s.DNSSearch = c.dns.addrStrings(), c.dns.search
				dnsDone = true
			}
			return s
		}
		// One family at a time: DHCP, or its static addresses with the
		// gateway and routes on the first.
		family := func(dhcp bool, dhcpType, staticType string, prefixes []netip.Prefix, gw netip.Addr, routes []routeV1) {
			if dhcp {
				e.Subnets = append(e.Subnets, withDNS(subnetV1{Type: dhcpType, Routes: routes}))
				return
			}
			for i, p := range prefixes {
				s := subnetV1{Type: staticType, Address: p.String()}
				if i == 0 {
					if gw.IsValid() {
						s.Gateway = gw.String()
					}
					s.Routes = routes
				}
				e.Subnets = append(e.Subnets, withDNS(s))
			}
		}
		family(c.dhcp4, "dhcp4", "static", c.v4, c.gw4, r4)
		family(c.dhcp6, "dhcp6", "static6", c.v6, c.gw6, r6)
		config = append(config, e)
	}
	if g := globalDNS(d.Network); !g.empty() {
		config = append(config, entryV1{Type: "nameserver", Address: g.addrStrings(), Search: g.search})
	}
	return marshalYAML(map[string]any{"network": map[string]any{"version": 1, "config": config}})
}

// marshalYAML encodes v as YAML with sorted keys. It goes through JSON, as
// sigs.k8s.io/yaml's JSONToYAML does, so the json tags name the keys; the
// JSON is read back with encoding/json (numbers kept exact, as the YAML
// parser JSONToYAML uses would type them) rather than parsed as YAML, which
// cost every sidecar a YAML parser and its garbage for nothing.
func marshalYAML(v any) ([]byte, error) {
	j, err := json.Marshal(v)
	if err != nil {
		return nil, fmt.Errorf("encoding YAML: %w", err)
	}
	dec := json.NewDecoder(bytes.NewReader(j))
	dec.UseNumber()
	var tree any
	if err := dec.Decode(&tree); err != nil {
		return nil, fmt.Errorf("encoding YAML: %w", err)
	}
	out, err := yaml.Marshal(yamlValue(tree))
	if err != nil {
		return nil, fmt.Errorf("encoding YAML: %w", err)
	}
	return out, nil
}

// yamlValue turns JSON's numbers in a decoded tree into the integers or
// floats the YAML encoder writes as numbers, in place.
func yamlValue(v any) any {
	switch v := v.(type) {
	case map[string]any:
		for k, e := range v {
			v[k] = yamlValue(e)
		}
	case []any:
		for i, e := range v {
			v[i] = yamlValue(e)
		}
	case json.Number:
		if i, err := v.Int64(); err == nil {
			return i
		}
		// json.Marshal writes no number a float64 cannot hold.
		f, _ := v.Float64()
		return f
	}
	return v
}

// matchable returns the NICs a configuration can name by MAC address: none
// until the primary NIC's MAC is known, then those whose MAC is. KubeVirt
// reports a MAC the VMI's spec leaves out only once the VM runs, and the
// first payload is rendered before that (at the launcher Pod's admission). A
// configuration keyed by a name instead (eth0) configures nothing on a guest
// that names its NICs otherwise (enp1s0, as most cloud images do), and one
// that names only other NICs turns cloud-init's fallback off: either leaves
// the primary NIC without a network, for good once cloud-init has written
// it. Without a configuration the guest keeps the fallback, DHCP on its first
// NIC, until the MAC is known; a secondary NIC left out stays as the guest
// has it (OpenStack's network_data.json leaves such NICs out too).
func matchable(all []nic) []nic {
	var out []nic
	for _, c := range all {
		switch {
		case c.mac != "":
			out = append(out, c)
		case c.primary:
			return nil
		}
	}
	return out
}

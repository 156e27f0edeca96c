package render

import (
	"net"
	"net/netip"
	"strconv"
	"strings"

	"github.com/kubevirt-imds/kubevirt-imds/api/payload"
)

// BindingMasquerade is KubeVirt's masquerade binding. KubeVirt serves DHCP to
// the guest inside the Pod for it, so such a NIC is always configured by DHCP.
const BindingMasquerade = "masquerade"

// nic is one payload.Interface after validation, in the shape every network
// renderer needs.
type nic struct {
	// name is the guest NIC name the renderers use: eth<index>.
	name    string
	index   int
	mac     string
	mtu     int
	primary bool
	dhcp4   bool
	dhcp6   bool
	v4      []netip.Prefix
	v6      []netip.Prefix
	gw4     netip.Addr
	gw6     netip.Addr
	routes  []route
	dns     dns
}

type route struct {
	to     netip.Prefix
	via    netip.Addr
	metric int
}

type dns struct {
	addrs  []netip.Addr
	search []string
}

func (d dns) empty() bool { return len(d.addrs) == 0 && len(d.search) == 0 }

func (d dns) addrStrings() []string {
	out := make([]string, 0, len(d.addrs))
	for _, a := range d.addrs {
		out = append(out, a.String())
	}
	return out
}

// GuestInterfaceName is the name the renderers give the i-th interface of the
// document (0-based).
func GuestInterfaceName(i int) string { return "eth" + strconv.Itoa(i) }

// nics validates n's interfaces. The first interface marked Primary carries the
// default gateways; when none is marked, the first interface does, which is
// what a single-NIC VM needs.
func nics(n *payload.Network) []nic {
	if n == nil {
		return nil
	}
	primary := -1
	for i, in := range n.Interfaces {
		if in.Primary {
			primary = i
			break
		}
	}
	if primary < 0 && len(n.Interfaces) > 0 {
		primary = 0
	}
	out := make([]nic, 0, len(n.Interfaces))
	for i, in := range n.Interfaces {
		c := nic{
			name:    GuestInterfaceName(i),
			index:   i,
			mac:     normalizeMAC(in.MACAddress),
			primary: i == primary,
			dhcp4:   in.DHCP4,
			dhcp6:   in.DHCP6,
			dns:     nameservers(in.Nameservers),
		}
		if in.MTU > 0 && in.MTU <= 65535 {
			c.mtu = in.MTU
		}
		masquerade := in.Binding == BindingMasquerade
		if masquerade {
			c.dhcp4 = true
		}
		for _, a := range in.Addresses {
			p, err := netip.ParsePrefix(strings.TrimSpace(a))
			if err != nil {
				continue
			}
			switch {
			case p.Addr().Is4():
				if !masquerade {
					c.v4 = append(c.v4, p)
				}
			case p.Addr().Is6() && !p.Addr().Is4In6():
				c.v6 = append(c.v6, p)
			}
		}
		if c.primary {
			if gw, err := netip.ParseAddr(strings.TrimSpace(in.Gateway4)); err == nil && gw.Is4() && !masquerade && len(c.v4) > 0 {
				c.gw4 = gw
			}
			if gw, err := netip.ParseAddr(strings.TrimSpace(in.Gateway6)); err == nil && gw.Is6() && !gw.Is4In6() && len(c.v6) > 0 {
				c.gw6 = gw.WithZone("")
			}
		}
		for _, r := range in.Routes {
			to, err := netip.ParsePrefix(strings.TrimSpace(r.To))
			if err != nil {
				continue
			}
			to = to.Masked()
			rt := route{to: to}
			if r.Via != "" {
				via, err := netip.ParseAddr(strings.TrimSpace(r.Via))
				if err != nil || via.Is4() != to.Addr().Is4() || via.Zone() != "" {
					continue
				}
				rt.via = via
			}
			if r.Metric > 0 {
				rt.metric = r.Metric
			}
			// A route needs an address family the NIC is configured for,
			// or the guest cannot install it.
			if to.Addr().Is4() && !c.dhcp4 && len(c.v4) == 0 {
				continue
			}
			if to.Addr().Is6() && !c.dhcp6 && len(c.v6) == 0 {
				continue
			}
			c.routes = append(c.routes, rt)
		}
		out = append(out, c)
	}
	return out
}

// globalDNS is the document-wide resolver configuration.
func globalDNS(n *payload.Network) dns {
	if n == nil {
		return dns{}
	}
	return nameservers(n.Nameservers)
}

func nameservers(ns *payload.Nameservers) dns {
	var d dns
	if ns == nil {
		return d
	}
	for _, a := range ns.Addresses {
		if ip, err := netip.ParseAddr(strings.TrimSpace(a)); err == nil && ip.Zone() == "" {
			d.addrs = append(d.addrs, ip.Unmap())
		}
	}
	for _, s := range ns.Search {
		if s = strings.TrimSpace(s); validDomain(s) {
			d.search = append(d.search, s)
		}
	}
	return d
}

// validDomain accepts DNS names made of letters, digits, '-', '_' and dots,
// which is all a search domain needs and keeps every format line-safe.
func validDomain(s string) bool {
	if s == "" || len(s) > 253 {
		return false
	}
	for _, r := range s {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9', r == '-', r == '_', r == '.':
		default:
			return false
		}
	}
	return true
}

// normalizeMAC returns an Ethernet MAC address in lower-case colon form, or ""
// when s is not one.
func normalizeMAC(s string) string {
	hw, err := net.ParseMAC(strings.TrimSpace(s))
	if err != nil || len(hw) != 6 {
		return ""
	}
	return hw.String()
}

// netmask4 is the dotted-quad netmask of an IPv4 prefix length.
func netmask4(bits int) string {
	return net.IP(net.CIDRMask(bits, 32)).String()
}

// netmask6 is the IPv6 netmask of a prefix length, in the colon form nova
// writes into network_data.json.
func netmask6(bits int) string {
	return net.IP(net.CIDRMask(bits, 128)).String()
}

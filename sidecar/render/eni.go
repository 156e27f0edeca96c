package render

import (
	"fmt"
	"net/netip"
	"strconv"
	"strings"

	"github.com/kubevirt-imds/kubevirt-imds/api/payload"
)

// ENI renders the network configuration as Debian /etc/network/interfaces
// text. cloud-init before 24.3 never fetches NoCloud's network-config over
// HTTP; it reads this text from the meta-data key network-interfaces instead,
// which is what configures static and link-local-only guests there. It returns
// "" when the document has no network configuration.
//
// The text is shaped for cloud-init's ENI converter, which is its only
// consumer: each interface name may appear in one iface stanza only, so
// further addresses use alias stanzas (eth0:1, eth0:2, …, as cloud-init's own
// ENI renderer writes them); the converter ignores the address family and
// reads "dhcp" as DHCPv4, so DHCPv6 is left out here (network-config and
// network_data.json carry it); IPv6 addresses are written with their prefix
// length. Extra routes are post-up "route add" lines as cloud-init writes them
// (they need net-tools, and the converter itself drops them).
func ENI(d *payload.Document) string {
	if d == nil || d.Network == nil {
		return ""
	}
	var b strings.Builder
	b.WriteString("auto lo\niface lo inet loopback\n")
	global := globalDNS(d.Network)
	for _, c := range nics(d.Network) {
		type stanza struct {
			family, method string
			addr           string
			netmask        string
			gateway        string
		}
		var stanzas []stanza
		if c.dhcp4 {
			stanzas = append(stanzas, stanza{family: "inet", method: "dhcp"})
		} else {
			for i, p := range c.v4 {
				st := stanza{family: "inet", method: "static", addr: p.Addr().String(), netmask: netmask4(p.Bits())}
				if i == 0 && c.gw4.IsValid() {
					st.gateway = c.gw4.String()
				}
				stanzas = append(stanzas, st)
			}
		}
		if !c.dhcp6 {
			for i, p := range c.v6 {
				st := stanza{family: "inet6", method: "static", addr: p.String()}
				if i == 0 && c.gw6.IsValid() {
					st.gateway = c.gw6.String()
				}
				stanzas = append(stanzas, st)
			}
		}
		if len(stanzas) == 0 {
			// Nothing cloud-init's converter can express: leave the NIC to
			// the guest.
			continue
		}
		ns := c.dns
		if c.primary {
			ns = mergeDNS(global, c.dns)
		}
		routed := map[string]bool{}
		for i, st := range stanzas {
			name := c.name
			if i > 0 {
				name += ":" + strconv.Itoa(i)
			}
			fmt.Fprintf(&b, "\nauto %s\niface %s %s %s\n", name, name, st.family, st.method)
			if i == 0 {
				// Link options go on the first stanza only.
				if c.mac != "" {
					fmt.Fprintf(&b, "    hwaddress %s\n", c.mac)
				}
				if c.mtu > 0 {
					fmt.Fprintf(&b, "    mtu %d\n", c.mtu)
				}
			}
			if st.addr != "" {
				fmt.Fprintf(&b, "    address %s\n", st.addr)
			}
			if st.netmask != "" {
				fmt.Fprintf(&b, "    netmask %s\n", st.netmask)
			}
			if st.gateway != "" {
				fmt.Fprintf(&b, "    gateway %s\n", st.gateway)
			}
			if i == 0 {
				if len(ns.addrs) > 0 {
					fmt.Fprintf(&b, "    dns-nameservers %s\n", strings.Join(ns.addrStrings(), " "))
				}
				if len(ns.search) > 0 {
					fmt.Fprintf(&b, "    dns-search %s\n", strings.Join(ns.search, " "))
				}
			}
			// Routes go with the first stanza of their family, once its
			// address is up.
			if !routed[st.family] {
				routed[st.family] = true
				for _, r := range c.routes {
					switch {
					case st.family == "inet" && r.to.Addr().Is4():
						writeRoute4(&b, r, name)
					case st.family == "inet6" && r.to.Addr().Is6():
						writeRoute6(&b, r, name)
					}
				}
			}
		}
	}
	return b.String()
}

// writeRoute4 and writeRoute6 write a stanza's post-up route lines; "|| true"
// keeps ifup going when the route already exists.
func writeRoute4(b *strings.Builder, r route, dev string) {
	writeRoute(b, fmt.Sprintf("route add -net %s netmask %s", r.to.Addr(), netmask4(r.to.Bits())), r, dev)
}

func writeRoute6(b *strings.Builder, r route, dev string) {
	writeRoute(b, fmt.Sprintf("route -A inet6 add %s", r.to), r, dev)
}

func writeRoute(b *strings.Builder, command string, r route, dev string) {
	fmt.Fprintf(b, "    post-up %s", command)
	if r.via.IsValid() {
		fmt.Fprintf(b, " gw %s", r.via)
	} else {
		fmt.Fprintf(b, " dev %s", strings.SplitN(dev, ":", 2)[0])
	}
	if r.metric > 0 {
		fmt.Fprintf(b, " metric %d", r.metric)
	}
	b.WriteString(" || true\n")
}

// mergeDNS appends b's entries to a's, dropping duplicates.
func mergeDNS(a, b dns) dns {
	var out dns
	seenA := map[netip.Addr]bool{}
	for _, x := range append(append([]netip.Addr{}, a.addrs...), b.addrs...) {
		if !seenA[x] {
			seenA[x] = true
			out.addrs = append(out.addrs, x)
		}
	}
	seenS := map[string]bool{}
	for _, s := range append(append([]string{}, a.search...), b.search...) {
		if !seenS[s] {
			seenS[s] = true
			out.search = append(out.search, s)
		}
	}
	return out
}

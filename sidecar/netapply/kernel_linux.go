package netapply

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"syscall"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netlink/nl"
	"golang.org/x/sys/unix"

	"github.com/kubevirt-imds/kubevirt-imds/sidecar/network"
)

// ipv4DevconfARPIgnore is IPV4_DEVCONF_ARP_IGNORE from linux/ip.h: the
// attribute type inside IFLA_INET_CONF, and one more than its index in the
// u32 array the kernel reports.
const ipv4DevconfARPIgnore = 19

// Kernel is the real Netlink, bound to the calling process's network
// namespace.
type Kernel struct {
	*netlink.Handle
}

var _ Netlink = (*Kernel)(nil)

// NewKernel opens a netlink handle in the current network namespace.
func NewKernel() (*Kernel, error) {
	h, err := netlink.NewHandle(unix.NETLINK_ROUTE)
	if err != nil {
		return nil, fmt.Errorf("opening netlink: %w", err)
	}
	return &Kernel{Handle: h}, nil
}

// Close releases the handle.
func (k *Kernel) Close() { k.Handle.Close() }

// SetARPIgnore implements Netlink with RTM_SETLINK carrying
// IFLA_AF_SPEC { AF_INET { IFLA_INET_CONF { ARP_IGNORE } } }: the netlink
// form of net.ipv4.conf.<dev>.arp_ignore, which needs CAP_NET_ADMIN but no
// writable /proc/sys.
func (k *Kernel) SetARPIgnore(link netlink.Link, value int) error {
	req := nl.NewNetlinkRequest(unix.RTM_SETLINK, unix.NLM_F_ACK)
	msg := nl.NewIfInfomsg(unix.AF_UNSPEC)
	msg.Index = int32(link.Attrs().Index)
	req.AddData(msg)
	spec := nl.NewRtAttr(unix.IFLA_AF_SPEC, nil)
	inet := spec.AddRtAttr(unix.AF_INET, nil)
	conf := inet.AddRtAttr(unix.IFLA_INET_CONF, nil)
	conf.AddRtAttr(ipv4DevconfARPIgnore, nl.Uint32Attr(uint32(value)))
	req.AddData(spec)
	_, err := req.Execute(unix.NETLINK_ROUTE, 0)
	return err
}

// ARPIgnore reads the device's arp_ignore from RTM_GETLINK's IFLA_INET_CONF.
func (k *Kernel) ARPIgnore(index int) (int, error) {
	req := nl.NewNetlinkRequest(unix.RTM_GETLINK, unix.NLM_F_ACK)
	msg := nl.NewIfInfomsg(unix.AF_UNSPEC)
	msg.Index = int32(index)
	req.AddData(msg)
	msgs, err := req.Execute(unix.NETLINK_ROUTE, unix.RTM_NEWLINK)
	if err != nil {
		return -1, err
	}
	for _, m := range msgs {
		if len(m) < unix.SizeofIfInfomsg {
			continue
		}
		attrs, err := nl.ParseRouteAttr(m[unix.SizeofIfInfomsg:])
		if err != nil {
			return -1, err
		}
		for _, a := range attrs {
			if a.Attr.Type&^unix.NLA_F_NESTED != unix.IFLA_AF_SPEC {
				continue
			}
			if v, ok := inetConf(a.Value, ipv4DevconfARPIgnore); ok {
				return v, nil
			}
		}
	}
	return -1, errors.New("no IPv4 configuration reported")
}

func inetConf(afSpec []byte, id int) (int, bool) {
	families, err := nl.ParseRouteAttr(afSpec)
	if err != nil {
		return 0, false
	}
	for _, f := range families {
		if f.Attr.Type&^unix.NLA_F_NESTED != unix.AF_INET {
			continue
		}
		attrs, err := nl.ParseRouteAttr(f.Value)
		if err != nil {
			return 0, false
		}
		for _, a := range attrs {
			off := (id - 1) * 4
			if a.Attr.Type&^unix.NLA_F_NESTED == unix.IFLA_INET_CONF && len(a.Value) >= off+4 {
				return int(binary.NativeEndian.Uint32(a.Value[off:])), true
			}
		}
	}
	return 0, false
}

// Observe reads what Compute needs for bridge: every link (with port flags
// for the bridge's ports), arp_ignore of the bridge and of LinkName, the
// addresses of LinkName, our rules, RouteTable, the FDB on PeerName and the
// nftables tables RedirectTable and GuardTable.
func (k *Kernel) Observe(bridge string) (network.Observed, error) {
	var obs network.Observed
	links, err := k.LinkList()
	if err != nil {
		return obs, fmt.Errorf("listing links: %w", err)
	}
	bridgeIndex := 0
	for _, l := range links {
		if l.Attrs().Name == bridge {
			bridgeIndex = l.Attrs().Index
		}
	}
	for _, l := range links {
		a := l.Attrs()
		ol := network.Link{
			Name:        a.Name,
			Index:       a.Index,
			Kind:        l.Type(),
			MasterIndex: a.MasterIndex,
			MAC:         a.HardwareAddr,
			MTU:         a.MTU,
			Up:          a.Flags&unix.IFF_UP != 0,
			ARPIgnore:   -1,
		}
		if l.Type() == "veth" {
			ol.PeerIndex = a.ParentIndex
		}
		if a.MasterIndex != 0 && a.MasterIndex == bridgeIndex {
			pi, err := k.LinkGetProtinfo(l)
			if err != nil && !gone(err) {
				return obs, fmt.Errorf("reading port flags of %s: %w", a.Name, err)
			}
			ol.Isolated = pi.Isolated
		}
		if a.Name == bridge || a.Name == network.LinkName {
			if ol.ARPIgnore, err = k.ARPIgnore(a.Index); err != nil && !gone(err) {
				return obs, fmt.Errorf("reading arp_ignore of %s: %w", a.Name, err)
			}
		}
		if a.Name == network.LinkName {
			addrs, err := k.AddrList(l, unix.AF_INET)
			if err != nil && !gone(err) {
				return obs, fmt.Errorf("listing addresses of %s: %w", a.Name, err)
			}
			for _, ad := range addrs {
				if p, ok := prefixOf(ad.IPNet.IP, ad.IPNet.Mask); ok {
					ol.Addrs = append(ol.Addrs, p)
				}
			}
		}
		if a.Name == network.PeerName {
			fdb, err := k.NeighList(a.Index, unix.AF_BRIDGE)
			if err != nil && !gone(err) {
				return obs, fmt.Errorf("listing FDB of %s: %w", a.Name, err)
			}
			for _, n := range fdb {
				if n.LinkIndex != a.Index {
					continue
				}
				obs.FDB = append(obs.FDB, network.FDBEntry{
					Dev:    a.Name,
					MAC:    n.HardwareAddr,
					Static: n.State&unix.NUD_NOARP != 0,
				})
			}
		}
		obs.Links = append(obs.Links, ol)
	}

	rules, err := k.RuleList(unix.AF_INET)
	if err != nil {
		return obs, fmt.Errorf("listing rules: %w", err)
	}
	for _, r := range rules {
		if r.Priority != network.RulePriorityMain && r.Priority != network.RulePriorityTable && r.Table != network.RouteTable {
			continue
		}
		or := network.Rule{Priority: r.Priority, Table: r.Table, SuppressPrefixLen: r.SuppressPrefixlen}
		if r.Src != nil {
			or.Src, _ = prefixOf(r.Src.IP, r.Src.Mask)
		}
		obs.Rules = append(obs.Rules, or)
	}

	routes, err := k.RouteListFiltered(unix.AF_INET, &netlink.Route{Table: network.RouteTable}, netlink.RT_FILTER_TABLE)
	if err != nil {
		return obs, fmt.Errorf("listing routes of table %d: %w", network.RouteTable, err)
	}
	for _, r := range routes {
		or := network.Route{Table: r.Table, Dst: netip.MustParsePrefix("0.0.0.0/0")}
		if r.Dst != nil {
			or.Dst, _ = prefixOf(r.Dst.IP, r.Dst.Mask)
		}
		for _, l := range obs.Links {
			if l.Index == r.LinkIndex {
				or.Dev = l.Name
			}
		}
		obs.Routes = append(obs.Routes, or)
	}
	if obs.Redirect, err = observeRedirect(); err != nil {
		return obs, err
	}
	if obs.Guard, err = observeGuard(); err != nil {
		return obs, err
	}
	return obs, nil
}

func prefixOf(ip []byte, mask []byte) (netip.Prefix, bool) {
	a, ok := netip.AddrFromSlice(ip)
	if !ok {
		return netip.Prefix{}, false
	}
	ones := 0
	for _, b := range mask {
		for ; b != 0; b <<= 1 {
			ones++
		}
	}
	return netip.PrefixFrom(a.Unmap(), ones), true
}

// gone reports a link that disappeared while being observed; the next link
// event triggers a new observation.
func gone(err error) bool {
	var nf netlink.LinkNotFoundError
	return errors.As(err, &nf) || errors.Is(err, syscall.ENODEV)
}

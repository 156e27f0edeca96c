package netapply

import (
	"bytes"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"syscall"

	"github.com/vishvananda/netlink"

	"github.com/kubevirt-imds/kubevirt-imds/sidecar/network"
)

// fakeLink is one link of fakeNetlink.
type fakeLink struct {
	network.Link
	peer string
}

// fakeNetlink is an in-memory network namespace answering like the kernel:
// netlink.LinkNotFoundError for a missing link, syscall.EEXIST for a
// duplicate, syscall.ENOENT for a missing rule.
type fakeNetlink struct {
	links  []*fakeLink
	rules  []network.Rule
	routes []network.Route
	fdb    []network.FDBEntry
	// redirect is the nftables table RedirectTable; nil when absent.
	redirect *network.Redirect
	// guard is the nftables table GuardTable; nil when absent.
	guard *network.Guard
	next  int
	calls []string
	// fail makes the named method fail once with the error.
	fail map[string]error
}

func newFake(links ...network.Link) *fakeNetlink {
	f := &fakeNetlink{next: 100}
	for _, l := range links {
		if l.ARPIgnore == 0 {
			l.ARPIgnore = 0
		}
		f.links = append(f.links, &fakeLink{Link: l})
	}
	return f
}

func (f *fakeNetlink) call(name string, args ...any) error {
	f.calls = append(f.calls, name)
	if err, ok := f.fail[name]; ok {
		delete(f.fail, name)
		return err
	}
	return nil
}

func (f *fakeNetlink) find(name string) *fakeLink {
	for _, l := range f.links {
		if l.Name == name {
			return l
		}
	}
	return nil
}

func (f *fakeNetlink) byIndex(i int) *fakeLink {
	for _, l := range f.links {
		if l.Index == i {
			return l
		}
	}
	return nil
}

func (f *fakeNetlink) LinkByName(name string) (netlink.Link, error) {
	if err := f.call("LinkByName"); err != nil {
		return nil, err
	}
	l := f.find(name)
	if l == nil {
		return nil, netlink.LinkNotFoundError{}
	}
	return &netlink.Device{LinkAttrs: netlink.LinkAttrs{Name: l.Name, Index: l.Index}}, nil
}

func (f *fakeNetlink) get(link netlink.Link) (*fakeLink, error) {
	l := f.byIndex(link.Attrs().Index)
	if l == nil {
		return nil, syscall.ENODEV
	}
	return l, nil
}

func (f *fakeNetlink) LinkAdd(link netlink.Link) error {
	if err := f.call("LinkAdd"); err != nil {
		return err
	}
	v, ok := link.(*netlink.Veth)
	if !ok {
		return syscall.EOPNOTSUPP
	}
	if f.find(v.Name) != nil || f.find(v.PeerName) != nil {
		return syscall.EEXIST
	}
	a, b := f.next, f.next+1
	f.next += 2
	f.links = append(f.links,
		&fakeLink{Link: network.Link{Name: v.Name, Index: a, Kind: "veth", PeerIndex: b, MAC: v.HardwareAddr, MTU: v.MTU}, peer: v.PeerName},
		&fakeLink{Link: network.Link{Name: v.PeerName, Index: b, Kind: "veth", PeerIndex: a, MAC: v.PeerHardwareAddr, MTU: int(v.PeerMTU)}, peer: v.Name})
	return nil
}

func (f *fakeNetlink) LinkDel(link netlink.Link) error {
	if err := f.call("LinkDel"); err != nil {
		return err
	}
	l, err := f.get(link)
	if err != nil {
		return err
	}
	f.links = slices.DeleteFunc(f.links, func(x *fakeLink) bool {
		return x == l || (l.Kind == "veth" && x.Name == l.peer)
	})
	f.routes = slices.DeleteFunc(f.routes, func(r network.Route) bool { return f.find(r.Dev) == nil })
	f.fdb = slices.DeleteFunc(f.fdb, func(e network.FDBEntry) bool { return f.find(e.Dev) == nil })
	return nil
}

func (f *fakeNetlink) LinkSetMaster(link, master netlink.Link) error {
	if err := f.call("LinkSetMaster"); err != nil {
		return err
	}
	l, err := f.get(link)
	if err != nil {
		return err
	}
	m, err := f.get(master)
	if err != nil {
		return err
	}
	l.MasterIndex = m.Index
	return nil
}

func (f *fakeNetlink) LinkSetMTU(link netlink.Link, mtu int) error {
	if err := f.call("LinkSetMTU"); err != nil {
		return err
	}
	l, err := f.get(link)
	if err != nil {
		return err
	}
	l.MTU = mtu
	return nil
}

func (f *fakeNetlink) LinkSetUp(link netlink.Link) error {
	if err := f.call("LinkSetUp"); err != nil {
		return err
	}
	l, err := f.get(link)
	if err != nil {
		return err
	}
	l.Up = true
	return nil
}

func (f *fakeNetlink) LinkSetIsolated(link netlink.Link, on bool) error {
	if err := f.call("LinkSetIsolated"); err != nil {
		return err
	}
	l, err := f.get(link)
	if err != nil {
		return err
	}
	if l.MasterIndex == 0 {
		// Port flags exist only on bridge ports; the kernel refuses the rest.
		return syscall.EOPNOTSUPP
	}
	l.Isolated = on
	return nil
}

func (f *fakeNetlink) AddrAdd(link netlink.Link, addr *netlink.Addr) error {
	if err := f.call("AddrAdd"); err != nil {
		return err
	}
	l, err := f.get(link)
	if err != nil {
		return err
	}
	p, _ := prefixOfNet(addr.IPNet)
	if slices.Contains(l.Addrs, p) {
		return syscall.EEXIST
	}
	l.Addrs = append(l.Addrs, p)
	return nil
}

func prefixOfNet(n *net.IPNet) (netip.Prefix, bool) {
	a, ok := netip.AddrFromSlice(n.IP)
	ones, _ := n.Mask.Size()
	return netip.PrefixFrom(a.Unmap(), ones), ok
}

func fromNetlinkRule(r *netlink.Rule) network.Rule {
	src, _ := prefixOfNet(r.Src)
	return network.Rule{Priority: r.Priority, Src: src, Table: r.Table, SuppressPrefixLen: r.SuppressPrefixlen}
}

func (f *fakeNetlink) RuleAdd(r *netlink.Rule) error {
	if err := f.call("RuleAdd"); err != nil {
		return err
	}
	rule := fromNetlinkRule(r)
	if slices.Contains(f.rules, rule) {
		return syscall.EEXIST
	}
	f.rules = append(f.rules, rule)
	return nil
}

func (f *fakeNetlink) RuleDel(r *netlink.Rule) error {
	if err := f.call("RuleDel"); err != nil {
		return err
	}
	rule := fromNetlinkRule(r)
	i := slices.Index(f.rules, rule)
	if i < 0 {
		return syscall.ENOENT
	}
	f.rules = slices.Delete(f.rules, i, i+1)
	return nil
}

func (f *fakeNetlink) RouteReplace(r *netlink.Route) error {
	if err := f.call("RouteReplace"); err != nil {
		return err
	}
	l := f.byIndex(r.LinkIndex)
	if l == nil {
		return syscall.ENODEV
	}
	if !l.Up {
		return syscall.ENETDOWN
	}
	dst, _ := prefixOfNet(r.Dst)
	f.routes = slices.DeleteFunc(f.routes, func(x network.Route) bool { return x.Table == r.Table && x.Dst == dst })
	f.routes = append(f.routes, network.Route{Table: r.Table, Dst: dst, Dev: l.Name})
	return nil
}

func (f *fakeNetlink) NeighSet(n *netlink.Neigh) error {
	if err := f.call("NeighSet"); err != nil {
		return err
	}
	l := f.byIndex(n.LinkIndex)
	if l == nil {
		return syscall.ENODEV
	}
	if n.Family != afBridge || l.MasterIndex == 0 {
		return syscall.EINVAL
	}
	f.fdb = slices.DeleteFunc(f.fdb, func(e network.FDBEntry) bool { return e.Dev == l.Name && bytes.Equal(e.MAC, n.HardwareAddr) })
	f.fdb = append(f.fdb, network.FDBEntry{Dev: l.Name, MAC: n.HardwareAddr, Static: n.State == nudNoARP && n.Flags == ntfMaster})
	return nil
}

func (f *fakeNetlink) SetARPIgnore(link netlink.Link, v int) error {
	if err := f.call("SetARPIgnore"); err != nil {
		return err
	}
	l, err := f.get(link)
	if err != nil {
		return err
	}
	if v < 0 || v > 8 {
		return syscall.EINVAL
	}
	l.ARPIgnore = v
	return nil
}

func (f *fakeNetlink) ReplaceRedirect(r network.Redirect) error {
	if err := f.call("ReplaceRedirect"); err != nil {
		return err
	}
	if r.Port == "" || len(r.MAC) != 6 {
		return syscall.EINVAL
	}
	// Like the kernel's rule, it names the port: it may exist later.
	f.redirect = &network.Redirect{Port: r.Port, MAC: slices.Clone(r.MAC)}
	return nil
}

func (f *fakeNetlink) DeleteRedirect() error {
	if err := f.call("DeleteRedirect"); err != nil {
		return err
	}
	f.redirect = nil
	return nil
}

func (f *fakeNetlink) ReplaceGuard(g network.Guard) error {
	if err := f.call("ReplaceGuard"); err != nil {
		return err
	}
	// What the kernel would refuse: a port out of range, the MAC the raw
	// chain matches missing, or no interface to accept from.
	if g.ServicePort < 1 || g.ServicePort > 65535 || g.ListenPort < 1 || g.ListenPort > 65535 || g.Redirects() != (len(g.MAC) == 6) || len(g.Ingress) == 0 {
		return syscall.EINVAL
	}
	f.guard = &network.Guard{ServicePort: g.ServicePort, ListenPort: g.ListenPort, MAC: slices.Clone(g.MAC), Ingress: slices.Clone(g.Ingress)}
	return nil
}

// observe is what Kernel.Observe would report for the fake namespace.
func (f *fakeNetlink) observe() network.Observed {
	var o network.Observed
	for _, l := range f.links {
		c := l.Link
		c.Addrs = slices.Clone(c.Addrs)
		o.Links = append(o.Links, c)
	}
	o.Rules = slices.Clone(f.rules)
	o.Routes = slices.Clone(f.routes)
	o.FDB = slices.Clone(f.fdb)
	if f.redirect != nil {
		r := *f.redirect
		r.MAC = slices.Clone(r.MAC)
		o.Redirect = &r
	}
	if f.guard != nil {
		g := *f.guard
		g.MAC = slices.Clone(g.MAC)
		g.Ingress = slices.Clone(g.Ingress)
		o.Guard = &g
	}
	return o
}

func (f *fakeNetlink) String() string {
	return fmt.Sprintf("links=%v rules=%v routes=%v fdb=%v redirect=%v guard=%v", f.links, f.rules, f.routes, f.fdb, f.redirect, f.guard)
}

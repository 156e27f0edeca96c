package netapply

import (
	"context"
	"errors"
	"fmt"
	"net"
	"syscall"

	"github.com/go-logr/logr"
	"github.com/vishvananda/netlink"

	"github.com/kubevirt-imds/kubevirt-imds/sidecar/network"
)

// Netlink is what Apply needs from the kernel. *Kernel implements it on
// Linux; tests use a fake that returns the kernel's error types
// (syscall.Errno, netlink.LinkNotFoundError).
type Netlink interface {
	LinkByName(name string) (netlink.Link, error)
	LinkAdd(link netlink.Link) error
	LinkDel(link netlink.Link) error
	LinkSetMaster(link, master netlink.Link) error
	LinkSetMTU(link netlink.Link, mtu int) error
	LinkSetUp(link netlink.Link) error
	LinkSetIsolated(link netlink.Link, on bool) error
	AddrAdd(link netlink.Link, addr *netlink.Addr) error
	RuleAdd(rule *netlink.Rule) error
	RuleDel(rule *netlink.Rule) error
	RouteReplace(route *netlink.Route) error
	NeighSet(neigh *netlink.Neigh) error
	// SetARPIgnore sets the device's IPv4 arp_ignore (RTM_SETLINK with
	// IFLA_AF_SPEC/IFLA_INET_CONF), never through /proc/sys.
	SetARPIgnore(link netlink.Link, value int) error
	// ReplaceRedirect creates RedirectTable holding r, replacing whatever
	// it held, in one nftables transaction: the guest's packets are never
	// left without the redirect while it is replaced.
	ReplaceRedirect(r network.Redirect) error
	// DeleteRedirect removes RedirectTable; a missing table is no error.
	DeleteRedirect() error
	// ReplaceGuard creates GuardTable holding g, replacing whatever it
	// held, in one nftables transaction: Address is never left unguarded
	// while it is replaced.
	ReplaceGuard(g network.Guard) error
}

// Apply carries out p's actions in order. Every step tolerates having been
// done already (EEXIST, a link already gone), so Apply may be re-run after a
// partial failure or by a restarted sidecar.
func Apply(ctx context.Context, nl Netlink, p network.Plan, log logr.Logger) error {
	for _, a := range p.Actions {
		if err := ctx.Err(); err != nil {
			return err
		}
		log.V(1).Info("applying", "action", a.String())
		if err := apply(nl, a); err != nil {
			return fmt.Errorf("%s: %w", a, err)
		}
	}
	return nil
}

func apply(nl Netlink, a network.Action) error {
	switch a := a.(type) {
	case network.CreateVeth:
		veth := &netlink.Veth{
			LinkAttrs:        netlink.LinkAttrs{Name: a.Name, HardwareAddr: a.MAC, MTU: a.MTU},
			PeerName:         a.Peer,
			PeerHardwareAddr: a.PeerMAC,
			PeerMTU:          uint32(a.MTU),
		}
		return ignore(nl.LinkAdd(veth), syscall.EEXIST)
	case network.DeleteLink:
		l, err := nl.LinkByName(a.Name)
		if err != nil {
			return ignoreNotFound(err)
		}
		return ignoreNotFound(nl.LinkDel(l))
	case network.SetMaster:
		return with2(nl, a.Link, a.Master, nl.LinkSetMaster)
	case network.SetMTU:
		return with(nl, a.Link, func(l netlink.Link) error { return nl.LinkSetMTU(l, a.MTU) })
	case network.SetUp:
		return with(nl, a.Link, nl.LinkSetUp)
	case network.SetIsolated:
		return with(nl, a.Link, func(l netlink.Link) error { return nl.LinkSetIsolated(l, true) })
	case network.SetARPIgnore:
		return with(nl, a.Link, func(l netlink.Link) error { return nl.SetARPIgnore(l, a.Value) })
	case network.AddAddress:
		return with(nl, a.Link, func(l netlink.Link) error {
			addr := &netlink.Addr{IPNet: &net.IPNet{IP: a.Prefix.Addr().AsSlice(), Mask: net.CIDRMask(a.Prefix.Bits(), 32)}}
			return ignore(nl.AddrAdd(l, addr), syscall.EEXIST)
		})
	case network.AddRule:
		return ignore(nl.RuleAdd(toNetlinkRule(a.Rule)), syscall.EEXIST)
	case network.DeleteRule:
		return ignore(nl.RuleDel(toNetlinkRule(a.Rule)), syscall.ENOENT)
	case network.ReplaceRoute:
		return with(nl, a.Route.Dev, func(l netlink.Link) error {
			return nl.RouteReplace(&netlink.Route{
				LinkIndex: l.Attrs().Index,
				Table:     a.Route.Table,
				Dst:       &net.IPNet{IP: a.Route.Dst.Addr().AsSlice(), Mask: net.CIDRMask(a.Route.Dst.Bits(), 32)},
				Scope:     scopeLink,
			})
		})
	case network.SetFDB:
		return with(nl, a.Link, func(l netlink.Link) error {
			return nl.NeighSet(&netlink.Neigh{
				LinkIndex:    l.Attrs().Index,
				Family:       afBridge,
				State:        nudNoARP,
				Flags:        ntfMaster,
				HardwareAddr: a.MAC,
			})
		})
	case network.ReplaceRedirect:
		return nl.ReplaceRedirect(a.Redirect)
	case network.DeleteRedirect:
		return nl.DeleteRedirect()
	case network.ReplaceGuard:
		return nl.ReplaceGuard(a.Guard)
	}
	return fmt.Errorf("unknown action %T", a)
}

// Kernel ABI constants, spelled out here because x/sys and netlink define
// them for Linux builds only and the plan and apply logic are portable.
const (
	afBridge  = 7    // AF_BRIDGE
	nudNoARP  = 0x40 // NUD_NOARP: a static bridge FDB entry
	ntfMaster = 0x04 // NTF_MASTER: the entry belongs to the bridge
	scopeLink = netlink.Scope(253)
	familyV4  = 2 // AF_INET
)

func toNetlinkRule(r network.Rule) *netlink.Rule {
	nr := netlink.NewRule()
	nr.Family = familyV4
	nr.Priority = r.Priority
	nr.Table = r.Table
	nr.Src = &net.IPNet{IP: r.Src.Addr().AsSlice(), Mask: net.CIDRMask(r.Src.Bits(), 32)}
	nr.SuppressPrefixlen = r.SuppressPrefixLen
	return nr
}

func with(nl Netlink, name string, f func(netlink.Link) error) error {
	l, err := nl.LinkByName(name)
	if err != nil {
		return err
	}
	return f(l)
}

func with2(nl Netlink, a, b string, f func(x, y netlink.Link) error) error {
	return with(nl, a, func(x netlink.Link) error {
		return with(nl, b, func(y netlink.Link) error { return f(x, y) })
	})
}

func ignore(err error, errno syscall.Errno) error {
	if errors.Is(err, errno) {
		return nil
	}
	return err
}

func ignoreNotFound(err error) error {
	var nf netlink.LinkNotFoundError
	if errors.As(err, &nf) || errors.Is(err, syscall.ENODEV) {
		return nil
	}
	return err
}

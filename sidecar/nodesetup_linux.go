package sidecar

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"

	"github.com/mdlayher/netlink"
	"github.com/mdlayher/netlink/nlenc"
	"golang.org/x/sys/unix"

	"github.com/kubevirt-imds/kubevirt-imds/sidecar/network"
)

// nodeSetupWatcher reports, in network-setup mode "node", whether the node
// agent has put 169.254.169.254 on veth-imds and attached it to the bridge.
// It only reads netlink and subscribes to its link and address events, which
// need no capability. It speaks rtnetlink through mdlayher/netlink (not
// vishvananda/netlink, whose every receive allocates 64 KiB) and one receive
// buffer of its own (rtnetlink_linux.go): the agent's plumbing makes dozens
// of events, and their garbage, below the collector's first goal, would stay
// resident in every VM's sidecar.
type nodeSetupWatcher struct {
	Inputs   network.Inputs
	OnStatus func(network.Status)
}

// Run reports a status on start and after every link or address change,
// until ctx ends.
func (w *nodeSetupWatcher) Run(ctx context.Context) error {
	events, err := dialRTNL(&netlink.Config{Groups: unix.RTMGRP_LINK | unix.RTMGRP_IPV4_IFADDR})
	if err != nil {
		return fmt.Errorf("subscribing to link and address events: %w", err)
	}
	dumps, err := dialRTNL(nil)
	if err != nil {
		events.Close()
		return fmt.Errorf("opening netlink: %w", err)
	}
	defer dumps.Close()

	// Any event means: look again. Events coalesce into one wake-up.
	changed := make(chan struct{}, 1)
	failed := make(chan error, 1)
	received := make(chan struct{})
	go func() {
		defer close(received)
		failed <- drainEvents(events.raw, func() {
			select {
			case changed <- struct{}{}:
			default:
			}
		})
	}()
	defer func() {
		events.Close() // ends drainEvents
		<-received
	}()

	for {
		w.OnStatus(w.observe(dumps))
		select {
		case <-ctx.Done():
			return nil
		case err := <-failed:
			if ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("netlink subscription: %w", err)
		case <-changed:
		}
	}
}

// observe is one look at the namespace.
func (w *nodeSetupWatcher) observe(c *rtnlConn) network.Status {
	links, err := dumpLinks(c)
	if err != nil {
		return network.Status{Err: fmt.Errorf("listing links: %w", err)}
	}
	for i := range links {
		if links[i].Name != network.LinkName {
			continue
		}
		if links[i].Addrs, err = dumpIPv4Addrs(c, links[i].Index); err != nil {
			return network.Status{Err: fmt.Errorf("listing the addresses of %s: %w", network.LinkName, err)}
		}
	}
	return network.AttachedStatus(links, w.Inputs)
}

// linkRequest and addrRequest are the dump requests' bodies: a zero struct
// ifinfomsg (every link), a struct ifaddrmsg of family AF_INET.
var (
	linkRequest = make([]byte, unix.SizeofIfInfomsg)
	addrRequest = append([]byte{unix.AF_INET}, make([]byte, unix.SizeofIfAddrmsg-1)...)
)

// dumpLinks lists the namespace's links: what AttachedStatus needs of them.
func dumpLinks(c *rtnlConn) ([]network.Link, error) {
	var links []network.Link
	err := c.dump(unix.RTM_GETLINK, linkRequest, func() { links = links[:0] }, func(m netlink.Message) error {
		l, ok, err := parseLink(m)
		if ok {
			links = append(links, l)
		}
		return err
	})
	return links, err
}

// parseLink reads an RTM_NEWLINK message; ok is false for any other.
func parseLink(m netlink.Message) (l network.Link, ok bool, err error) {
	if m.Header.Type != unix.RTM_NEWLINK || len(m.Data) < unix.SizeofIfInfomsg {
		return l, false, nil
	}
	// struct ifinfomsg: family, pad, type (u16), index (s32), flags (u32), change (u32).
	l = network.Link{
		Index:     int(int32(binary.NativeEndian.Uint32(m.Data[4:8]))),
		Up:        binary.NativeEndian.Uint32(m.Data[8:12])&unix.IFF_UP != 0,
		Kind:      "device",
		ARPIgnore: -1,
	}
	var nested error
	err = attrs(m.Data[unix.SizeofIfInfomsg:], func(typ uint16, data []byte) {
		switch typ {
		case unix.IFLA_IFNAME:
			l.Name = nlenc.String(data)
		case unix.IFLA_ADDRESS:
			l.MAC = slices.Clone(net.HardwareAddr(data))
		case unix.IFLA_MASTER:
			if len(data) == 4 {
				l.MasterIndex = int(nlenc.Uint32(data))
			}
		case unix.IFLA_MTU:
			if len(data) == 4 {
				l.MTU = int(nlenc.Uint32(data))
			}
		case unix.IFLA_LINKINFO:
			nested = attrs(data, func(typ uint16, data []byte) {
				if typ == unix.IFLA_INFO_KIND {
					l.Kind = linkKind(nlenc.String(data))
				}
			})
		}
	})
	if err = errors.Join(err, nested); err != nil {
		return l, false, fmt.Errorf("link %d: %w", l.Index, err)
	}
	return l, true, nil
}

// linkKind names an IFLA_INFO_KIND as network.Link.Kind does (netlink's
// link types): "tuntap" for the kernel's "tun".
func linkKind(kind string) string {
	if kind == "tun" {
		return "tuntap"
	}
	return kind
}

// dumpIPv4Addrs lists the IPv4 addresses of the link with ifindex index.
func dumpIPv4Addrs(c *rtnlConn, index int) ([]netip.Prefix, error) {
	var out []netip.Prefix
	err := c.dump(unix.RTM_GETADDR, addrRequest, func() { out = out[:0] }, func(m netlink.Message) error {
		// struct ifaddrmsg: family, prefixlen, flags, scope (u8 each), index (u32).
		if m.Header.Type != unix.RTM_NEWADDR || len(m.Data) < unix.SizeofIfAddrmsg || m.Data[0] != unix.AF_INET ||
			int(binary.NativeEndian.Uint32(m.Data[4:8])) != index {
			return nil
		}
		var local, address netip.Addr
		err := attrs(m.Data[unix.SizeofIfAddrmsg:], func(typ uint16, data []byte) {
			switch typ {
			case unix.IFA_LOCAL:
				local, _ = netip.AddrFromSlice(data)
			case unix.IFA_ADDRESS:
				address, _ = netip.AddrFromSlice(data)
			}
		})
		if err != nil {
			return err
		}
		// IFA_LOCAL is the interface's own address; IFA_ADDRESS is the peer's
		// on point-to-point links and the same otherwise.
		if !local.Is4() {
			local = address
		}
		if local.Is4() {
			out = append(out, netip.PrefixFrom(local, int(m.Data[1])))
		}
		return nil
	})
	return out, err
}

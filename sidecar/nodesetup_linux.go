package sidecar

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"

	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"

	"github.com/kubevirt-imds/kubevirt-imds/sidecar/network"
)

// nodeSetupWatcher reports, in network-setup mode "node", whether the node
// agent has put 169.254.169.254 on veth-imds and attached it to the bridge.
// It only reads netlink and subscribes to its link and address events, which
// need no capability. It speaks rtnetlink through mdlayher/netlink rather
// than vishvananda/netlink, whose every receive allocates 64 KiB: the agent's
// plumbing makes dozens of events, and that garbage, below the collector's
// first goal, would stay resident in every VM's sidecar.
type nodeSetupWatcher struct {
	Inputs   network.Inputs
	OnStatus func(network.Status)
}

// dumpRetries bounds the re-reads of a dump the kernel marked interrupted
// (the links changed while it was read).
const dumpRetries = 3

// Run reports a status on start and after every link or address change,
// until ctx ends.
func (w *nodeSetupWatcher) Run(ctx context.Context) error {
	events, err := netlink.Dial(unix.NETLINK_ROUTE, &netlink.Config{Groups: unix.RTMGRP_LINK | unix.RTMGRP_IPV4_IFADDR})
	if err != nil {
		return fmt.Errorf("subscribing to link and address events: %w", err)
	}
	dumps, err := netlink.Dial(unix.NETLINK_ROUTE, nil)
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
		for {
			_, err := events.Receive()
			if err != nil && !errors.Is(err, unix.ENOBUFS) { // ENOBUFS: events were lost; looking again covers them
				failed <- err
				return
			}
			select {
			case changed <- struct{}{}:
			default:
			}
		}
	}()
	defer func() {
		events.Close() // ends the Receive above
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
func (w *nodeSetupWatcher) observe(c *netlink.Conn) network.Status {
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

// dump runs an rtnetlink dump request, reading it again while the kernel
// marks it interrupted.
func dump(c *netlink.Conn, typ netlink.HeaderType, body []byte) ([]netlink.Message, error) {
	for range dumpRetries {
		msgs, err := c.Execute(netlink.Message{Header: netlink.Header{Type: typ, Flags: netlink.Request | netlink.Dump}, Data: body})
		if err != nil {
			return nil, err
		}
		interrupted := false
		for _, m := range msgs {
			interrupted = interrupted || m.Header.Flags&netlink.DumpInterrupted != 0
		}
		if !interrupted {
			return msgs, nil
		}
	}
	return nil, fmt.Errorf("the dump was interrupted %d times in a row", dumpRetries)
}

// dumpLinks lists the namespace's links: what AttachedStatus needs of them.
func dumpLinks(c *netlink.Conn) ([]network.Link, error) {
	msgs, err := dump(c, unix.RTM_GETLINK, make([]byte, unix.SizeofIfInfomsg))
	if err != nil {
		return nil, err
	}
	links := make([]network.Link, 0, len(msgs))
	for _, m := range msgs {
		if m.Header.Type != unix.RTM_NEWLINK || len(m.Data) < unix.SizeofIfInfomsg {
			continue
		}
		// struct ifinfomsg: family, pad, type (u16), index (s32), flags (u32), change (u32).
		l := network.Link{
			Index:     int(int32(binary.NativeEndian.Uint32(m.Data[4:8]))),
			Up:        binary.NativeEndian.Uint32(m.Data[8:12])&unix.IFF_UP != 0,
			Kind:      "device",
			ARPIgnore: -1,
		}
		ad, err := netlink.NewAttributeDecoder(m.Data[unix.SizeofIfInfomsg:])
		if err != nil {
			return nil, err
		}
		for ad.Next() {
			switch ad.Type() {
			case unix.IFLA_IFNAME:
				l.Name = ad.String()
			case unix.IFLA_ADDRESS:
				l.MAC = net.HardwareAddr(ad.Bytes())
			case unix.IFLA_MASTER:
				l.MasterIndex = int(ad.Uint32())
			case unix.IFLA_MTU:
				l.MTU = int(ad.Uint32())
			case unix.IFLA_LINKINFO:
				ad.Nested(func(info *netlink.AttributeDecoder) error {
					for info.Next() {
						if info.Type() == unix.IFLA_INFO_KIND {
							l.Kind = linkKind(info.String())
						}
					}
					return nil
				})
			}
		}
		if err := ad.Err(); err != nil {
			return nil, fmt.Errorf("link %d: %w", l.Index, err)
		}
		links = append(links, l)
	}
	return links, nil
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
func dumpIPv4Addrs(c *netlink.Conn, index int) ([]netip.Prefix, error) {
	// struct ifaddrmsg: family, prefixlen, flags, scope (u8 each), index (u32).
	req := make([]byte, unix.SizeofIfAddrmsg)
	req[0] = unix.AF_INET
	msgs, err := dump(c, unix.RTM_GETADDR, req)
	if err != nil {
		return nil, err
	}
	var out []netip.Prefix
	for _, m := range msgs {
		if m.Header.Type != unix.RTM_NEWADDR || len(m.Data) < unix.SizeofIfAddrmsg || m.Data[0] != unix.AF_INET ||
			int(binary.NativeEndian.Uint32(m.Data[4:8])) != index {
			continue
		}
		bits := int(m.Data[1])
		ad, err := netlink.NewAttributeDecoder(m.Data[unix.SizeofIfAddrmsg:])
		if err != nil {
			return nil, err
		}
		var local, address netip.Addr
		for ad.Next() {
			switch ad.Type() {
			case unix.IFA_LOCAL:
				local, _ = netip.AddrFromSlice(ad.Bytes())
			case unix.IFA_ADDRESS:
				address, _ = netip.AddrFromSlice(ad.Bytes())
			}
		}
		if err := ad.Err(); err != nil {
			return nil, err
		}
		// IFA_LOCAL is the interface's own address; IFA_ADDRESS is the peer's
		// on point-to-point links and the same otherwise.
		if !local.Is4() {
			local = address
		}
		if local.Is4() {
			out = append(out, netip.PrefixFrom(local, bits))
		}
	}
	return out, nil
}

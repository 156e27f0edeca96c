package sidecar

import (
	"encoding/binary"
	"errors"
	"net"
	"strings"
	"testing"

	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"

	"github.com/kubevirt-imds/kubevirt-imds/sidecar/network"
)

// newLinkMessage encodes an RTM_NEWLINK as the kernel sends it, with the
// library's encoder.
func newLinkMessage(t *testing.T, index, master int, name, kind string, up bool) netlink.Message {
	t.Helper()
	ae := netlink.NewAttributeEncoder()
	ae.String(unix.IFLA_IFNAME, name)
	ae.Bytes(unix.IFLA_ADDRESS, net.HardwareAddr{0x02, 0, 0, 0, 0, byte(index)})
	ae.Uint32(unix.IFLA_MTU, 1500)
	if master != 0 {
		ae.Uint32(unix.IFLA_MASTER, uint32(master))
	}
	ae.Nested(unix.IFLA_LINKINFO, func(nae *netlink.AttributeEncoder) error {
		nae.String(unix.IFLA_INFO_KIND, kind)
		return nil
	})
	attrs, err := ae.Encode()
	if err != nil {
		t.Fatal(err)
	}
	info := make([]byte, unix.SizeofIfInfomsg)
	binary.NativeEndian.PutUint32(info[4:8], uint32(index))
	if up {
		binary.NativeEndian.PutUint32(info[8:12], unix.IFF_UP)
	}
	return netlink.Message{Header: netlink.Header{Type: unix.RTM_NEWLINK}, Data: append(info, attrs...)}
}

func TestParseLink(t *testing.T) {
	l, ok, err := parseLink(newLinkMessage(t, 7, 3, network.PeerName, "tun", true))
	if err != nil || !ok {
		t.Fatalf("parseLink: ok %v, err %v", ok, err)
	}
	want := network.Link{Name: network.PeerName, Index: 7, Kind: "tuntap", MasterIndex: 3, MTU: 1500, Up: true,
		ARPIgnore: -1, MAC: net.HardwareAddr{0x02, 0, 0, 0, 0, 7}}
	if l.Name != want.Name || l.Index != want.Index || l.Kind != want.Kind || l.MasterIndex != want.MasterIndex ||
		l.MTU != want.MTU || l.Up != want.Up || l.ARPIgnore != want.ARPIgnore || l.MAC.String() != want.MAC.String() {
		t.Errorf("parseLink = %+v, want %+v", l, want)
	}

	if _, ok, err := parseLink(netlink.Message{Header: netlink.Header{Type: unix.RTM_NEWADDR}, Data: make([]byte, 64)}); ok || err != nil {
		t.Errorf("an RTM_NEWADDR: ok %v, err %v; want skipped", ok, err)
	}

	m := newLinkMessage(t, 9, 0, "eth0", "veth", false)
	binary.NativeEndian.PutUint16(m.Data[unix.SizeofIfInfomsg:], 0xfff) // the first attribute's length
	if _, _, err := parseLink(m); err == nil || !strings.Contains(err.Error(), "link 9: malformed netlink attribute") {
		t.Errorf("an attribute longer than the message: err %v", err)
	}
}

// TestParseLinkKeepsNothingOfTheBuffer: the receive buffer is reused, so a
// parsed link must not alias it.
func TestParseLinkKeepsNothingOfTheBuffer(t *testing.T) {
	m := newLinkMessage(t, 4, 0, "k6t-eth0", "bridge", true)
	l, _, err := parseLink(m)
	if err != nil {
		t.Fatal(err)
	}
	clear(m.Data)
	if l.Name != "k6t-eth0" || l.Kind != "bridge" || l.MAC.String() != "02:00:00:00:00:04" {
		t.Errorf("after the buffer was overwritten: %+v", l)
	}
}

// datagram frames msgs as the kernel sends a reply to request 7.
func datagram(t *testing.T, msgs ...netlink.Message) []byte {
	t.Helper()
	var b []byte
	for _, m := range msgs {
		if m.Header.Sequence == 0 {
			m.Header.Sequence = 7
		}
		m.Header.Length = uint32(unix.NLMSG_HDRLEN + len(m.Data))
		raw, err := m.MarshalBinary()
		if err != nil {
			t.Fatal(err)
		}
		b = append(b, raw...)
	}
	return b
}

func errnoData(errno unix.Errno) []byte {
	return binary.NativeEndian.AppendUint32(nil, uint32(-int32(errno)))
}

func TestDumpReply(t *testing.T) {
	req := netlink.Message{Header: netlink.Header{Type: unix.RTM_GETLINK, Sequence: 7}}
	link := newLinkMessage(t, 2, 0, "eth0", "veth", true)
	stale := newLinkMessage(t, 3, 0, "old0", "veth", true)
	stale.Header.Sequence = 6
	done := netlink.Message{Header: netlink.Header{Type: netlink.Done, Flags: netlink.Multi}, Data: errnoData(0)}
	for _, tc := range []struct {
		name     string
		datagram []byte
		seen     int
		done     bool
		err      error
	}{
		{name: "messages, not yet done", datagram: datagram(t, link, link), seen: 2},
		{name: "done", datagram: datagram(t, link, done), seen: 1, done: true},
		{name: "an earlier dump's rest is skipped", datagram: datagram(t, stale, link, done), seen: 1, done: true},
		{name: "done carrying an errno", datagram: datagram(t, link,
			netlink.Message{Header: netlink.Header{Type: netlink.Done, Flags: netlink.Multi}, Data: errnoData(unix.EMSGSIZE)}),
			seen: 1, done: true, err: unix.EMSGSIZE},
		{name: "error", datagram: datagram(t, netlink.Message{Header: netlink.Header{Type: netlink.Error}, Data: errnoData(unix.EPERM)}),
			done: true, err: unix.EPERM},
		{name: "interrupted", datagram: datagram(t,
			netlink.Message{Header: netlink.Header{Type: unix.RTM_NEWLINK, Flags: netlink.DumpInterrupted}, Data: link.Data}, done),
			seen: 1, done: true, err: errDumpInterrupted},
	} {
		t.Run(tc.name, func(t *testing.T) {
			seen, interrupted := 0, false
			done, err := dumpReply(tc.datagram, req, &interrupted, func(netlink.Message) error { seen++; return nil })
			if seen != tc.seen || done != tc.done || !errors.Is(err, tc.err) {
				t.Errorf("seen %d, done %v, err %v; want %d, %v, %v", seen, done, err, tc.seen, tc.done, tc.err)
			}
		})
	}
}

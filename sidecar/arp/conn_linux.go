package arp

import (
	"fmt"
	"net"
	"time"

	"github.com/mdlayher/arp"
	"github.com/mdlayher/packet"
	"golang.org/x/net/bpf"
	"golang.org/x/sys/unix"
)

// portReader reads ARP frames entering the bridge through one port.
type portReader struct {
	c    *packet.Conn
	port int
	buf  []byte
}

// Listen opens the responder's sockets: a reader on the guest's port and a
// writer on the link owning the address (veth-imds, which must carry it).
//
// The reader is an ETH_P_ALL packet socket: protocol-specific packet sockets
// on a bridge port never see frames, because the bridge consumes them first;
// ETH_P_ALL taps run before it. A kernel filter keeps only inbound ARP, so
// the guest's other traffic is not copied and our own replies, outgoing on
// the port, are not read back.
func Listen(guestPort, owner *net.Interface) (Reader, Writer, error) {
	filter, err := bpf.Assemble([]bpf.Instruction{
		bpf.LoadExtension{Num: bpf.ExtType},
		bpf.JumpIf{Cond: bpf.JumpEqual, Val: unix.PACKET_OUTGOING, SkipTrue: 3},
		bpf.LoadAbsolute{Off: 12, Size: 2},
		bpf.JumpIf{Cond: bpf.JumpNotEqual, Val: unix.ETH_P_ARP, SkipTrue: 1},
		bpf.RetConstant{Val: 256},
		bpf.RetConstant{Val: 0},
	})
	if err != nil {
		return nil, nil, err
	}
	c, err := packet.Listen(guestPort, packet.Raw, unix.ETH_P_ALL, &packet.Config{Filter: filter})
	if err != nil {
		return nil, nil, fmt.Errorf("listening on %s: %w", guestPort.Name, err)
	}
	w, err := arp.Dial(owner)
	if err != nil {
		c.Close()
		return nil, nil, fmt.Errorf("opening ARP socket on %s: %w", owner.Name, err)
	}
	return &portReader{c: c, port: guestPort.Index, buf: make([]byte, 256)}, w, nil
}

func (r *portReader) ReadFrame() (Frame, error) {
	n, _, err := r.c.ReadFrom(r.buf)
	if err != nil {
		return Frame{}, err
	}
	return Frame{Port: r.port, Data: append([]byte(nil), r.buf[:n]...)}, nil
}

func (r *portReader) SetReadDeadline(t time.Time) error { return r.c.SetReadDeadline(t) }
func (r *portReader) Close() error                      { return r.c.Close() }

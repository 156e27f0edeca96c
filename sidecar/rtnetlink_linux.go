package sidecar

import (
	"errors"
	"fmt"
	"syscall"

	"github.com/mdlayher/netlink"
	"github.com/mdlayher/netlink/nlenc"
	"golang.org/x/sys/unix"
)

// The sidecar of mode "node" reads netlink through one buffer it keeps.
// mdlayher/netlink's Receive allocates a page and doubles it until a
// datagram fits (28 KiB for a Pod's link dump), and its attribute decoder
// copies every attribute; the node agent's plumbing makes a dozen dumps, and
// that garbage, below the collector's first goal, stayed resident in every
// VM's sidecar (0.4 MiB of its heap). The library still opens the sockets,
// sends the requests and frames the messages.

// dumpBufferSize is the receive buffer. The kernel sizes a dump's datagrams
// to the largest buffer the reader has offered (up to 32 KiB), except when a
// single message is larger; a datagram that does not fit grows the buffer.
const dumpBufferSize = 16 << 10

// dumpRetries bounds the re-reads of a dump the kernel marked interrupted
// (the links changed while it was read).
const dumpRetries = 3

// errDumpInterrupted is a dump the kernel marked inconsistent: the links
// changed while it was read.
var errDumpInterrupted = errors.New("dump interrupted")

// rtnlConn runs rtnetlink dumps, receiving every reply into its buffer.
type rtnlConn struct {
	c   *netlink.Conn
	raw syscall.RawConn
	buf []byte
}

func dialRTNL(cfg *netlink.Config) (*rtnlConn, error) {
	c, err := netlink.Dial(unix.NETLINK_ROUTE, cfg)
	if err != nil {
		return nil, err
	}
	raw, err := c.SyscallConn()
	if err != nil {
		c.Close()
		return nil, err
	}
	return &rtnlConn{c: c, raw: raw}, nil
}

func (r *rtnlConn) Close() error { return r.c.Close() }

// dump runs a dump request and calls each for every message of the reply,
// whose Data is only valid during the call; it retries while the kernel
// marks the dump interrupted, calling start before every attempt.
func (r *rtnlConn) dump(typ netlink.HeaderType, body []byte, start func(), each func(netlink.Message) error) error {
	for range dumpRetries {
		start()
		err := r.dumpOnce(typ, body, each)
		if !errors.Is(err, errDumpInterrupted) {
			return err
		}
	}
	return fmt.Errorf("the dump was interrupted %d times in a row", dumpRetries)
}

func (r *rtnlConn) dumpOnce(typ netlink.HeaderType, body []byte, each func(netlink.Message) error) error {
	req, err := r.c.Send(netlink.Message{Header: netlink.Header{Type: typ, Flags: netlink.Request | netlink.Dump}, Data: body})
	if err != nil {
		return err
	}
	interrupted := false
	for {
		n, err := r.receive()
		if err != nil {
			return err
		}
		if done, err := dumpReply(r.buf[:n], req, &interrupted, each); err != nil || done {
			return err
		}
	}
}

// dumpReply hands each message of one datagram of the reply to req to each,
// and reports whether it ended the dump. interrupted accumulates the
// kernel's mark across the reply's datagrams.
func dumpReply(datagram []byte, req netlink.Message, interrupted *bool, each func(netlink.Message) error) (done bool, err error) {
	// Framed as mdlayher/netlink frames its own receives.
	msgs, err := syscall.ParseNetlinkMessage(datagram[:nlAlign(len(datagram))])
	if err != nil {
		return false, fmt.Errorf("malformed netlink message: %w", err)
	}
	for _, raw := range msgs {
		if raw.Header.Seq != req.Header.Sequence {
			continue // the rest of an earlier dump that ended in an error
		}
		m := netlink.Message{Header: netlink.Header{Type: netlink.HeaderType(raw.Header.Type),
			Flags: netlink.HeaderFlags(raw.Header.Flags), Sequence: raw.Header.Seq}, Data: raw.Data}
		*interrupted = *interrupted || m.Header.Flags&netlink.DumpInterrupted != 0
		switch m.Header.Type {
		case netlink.Done, netlink.Error:
			// Both end the dump, and both may carry an errno: rtnetlink ends a
			// dump that failed part way with a done holding it.
			switch {
			case len(m.Data) >= 4:
				if errno := -int32(nlenc.Uint32(m.Data[:4])); errno != 0 {
					return true, fmt.Errorf("netlink dump %d: %w", req.Header.Type, unix.Errno(errno))
				}
			case m.Header.Type == netlink.Error:
				return true, errors.New("truncated netlink error message")
			}
			if *interrupted {
				return true, errDumpInterrupted
			}
			return true, nil
		}
		if err := each(m); err != nil {
			return true, err
		}
	}
	return false, nil
}

// receive reads one datagram into r.buf, growing it first when the
// datagram would not fit, and returns its length.
func (r *rtnlConn) receive() (int, error) {
	if r.buf == nil {
		r.buf = make([]byte, dumpBufferSize)
	}
	var n int
	var rerr error
	recv := func(flags int) error {
		return r.raw.Read(func(fd uintptr) bool {
			for {
				n, _, rerr = unix.Recvfrom(int(fd), r.buf, flags|unix.MSG_DONTWAIT)
				if !errors.Is(rerr, unix.EINTR) {
					return !errors.Is(rerr, unix.EAGAIN)
				}
			}
		})
	}
	// MSG_TRUNC makes n the datagram's whole length.
	if err := recv(unix.MSG_PEEK | unix.MSG_TRUNC); err != nil {
		return 0, err
	}
	if rerr != nil {
		return 0, rerr
	}
	if n > len(r.buf) {
		r.buf = make([]byte, n)
	}
	if err := recv(0); err != nil {
		return 0, err
	}
	return n, rerr
}

// drainEvents waits for, and discards, the datagrams of a subscription,
// calling changed once for each batch read. It returns when the socket is
// closed or fails; lost events (ENOBUFS) count as a change.
func drainEvents(raw syscall.RawConn, changed func()) error {
	var discard [64]byte // a datagram is read whole; the rest is dropped
	var rerr error
	for {
		got := false
		err := raw.Read(func(fd uintptr) bool {
			for {
				_, rerr = unix.Read(int(fd), discard[:])
				switch {
				case rerr == nil, errors.Is(rerr, unix.ENOBUFS):
					got = true
				case errors.Is(rerr, unix.EINTR):
				case errors.Is(rerr, unix.EAGAIN):
					return got
				default:
					return true
				}
			}
		})
		if err != nil {
			return err
		}
		if rerr != nil && !errors.Is(rerr, unix.EAGAIN) {
			return rerr
		}
		changed()
	}
}

// nlAlign rounds a netlink length up to its 4-byte alignment.
func nlAlign(n int) int { return (n + unix.NLMSG_ALIGNTO - 1) &^ (unix.NLMSG_ALIGNTO - 1) }

// attrs walks the netlink attributes in b without copying them, calling
// each with an attribute's type (flags masked off) and data.
func attrs(b []byte, each func(typ uint16, data []byte)) error {
	for len(b) >= unix.SizeofNlAttr {
		length := int(nlenc.Uint16(b[:2]))
		if length < unix.SizeofNlAttr || length > len(b) {
			return fmt.Errorf("malformed netlink attribute: length %d, %d bytes left", length, len(b))
		}
		each(nlenc.Uint16(b[2:4])&^(unix.NLA_F_NESTED|unix.NLA_F_NET_BYTEORDER), b[unix.SizeofNlAttr:length])
		b = b[min(len(b), nlAlign(length)):]
	}
	return nil
}

package podnet

import (
	"bytes"
	"encoding/binary"
	"errors"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"

	"github.com/mdlayher/packet"
	"golang.org/x/sys/unix"
)

// Frame is one Ethernet frame a Capture recorded.
type Frame []byte

// EtherType is the frame's type field (0 for a runt).
func (f Frame) EtherType() uint16 {
	if len(f) < 14 {
		return 0
	}
	return binary.BigEndian.Uint16(f[12:14])
}

// IPv4Dst is the destination of an IPv4 frame.
func (f Frame) IPv4Dst() (netip.Addr, bool) {
	if f.EtherType() != unix.ETH_P_IP || len(f) < 14+20 {
		return netip.Addr{}, false
	}
	return netip.AddrFrom4([4]byte(f[14+16 : 14+20])), true
}

// ARP returns the sender and target protocol addresses of an Ethernet/IPv4
// ARP frame.
func (f Frame) ARP() (sender, target netip.Addr, ok bool) {
	if f.EtherType() != unix.ETH_P_ARP || len(f) < 14+28 {
		return netip.Addr{}, netip.Addr{}, false
	}
	return netip.AddrFrom4([4]byte(f[14+14 : 14+18])), netip.AddrFrom4([4]byte(f[14+24 : 14+28])), true
}

// Capture records the frames a device receives, like tcpdump, from a packet
// socket opened inside the device's namespace. Frames the device sends
// (its own MAC as source) are left out: they say nothing about what reached
// it.
type Capture struct {
	conn   *packet.Conn
	own    net.HardwareAddr
	mu     sync.Mutex
	frames []Frame
	err    error
	done   chan struct{}
}

// Capture starts recording what dev receives; it stops at cleanup.
func (n NS) Capture(tb TB, dev string) *Capture {
	tb.Helper()
	c := &Capture{done: make(chan struct{})}
	err := n.Do(func() error {
		ifi, err := net.InterfaceByName(dev)
		if err != nil {
			return err
		}
		c.own = ifi.HardwareAddr
		c.conn, err = packet.Listen(ifi, packet.Raw, unix.ETH_P_ALL, nil)
		return err
	})
	if err != nil {
		tb.Fatalf("capturing on %s in %s: %v", dev, n.Name, err)
	}
	go c.read()
	tb.Cleanup(func() {
		c.conn.Close()
		<-c.done
	})
	return c
}

func (c *Capture) read() {
	defer close(c.done)
	buf := make([]byte, 65536)
	for {
		n, _, err := c.conn.ReadFrom(buf)
		if err != nil {
			// Closed at cleanup; anything else ends the capture early,
			// which Err reports.
			if !errors.Is(err, net.ErrClosed) {
				c.mu.Lock()
				c.err = err
				c.mu.Unlock()
			}
			return
		}
		if n < 14 || bytes.Equal(buf[6:12], c.own) {
			continue
		}
		c.mu.Lock()
		c.frames = append(c.frames, Frame(append([]byte(nil), buf[:n]...)))
		c.mu.Unlock()
	}
}

// Frames returns the frames recorded so far for which match is true.
func (c *Capture) Frames(match func(Frame) bool) []Frame {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []Frame
	for _, f := range c.frames {
		if match(f) {
			out = append(out, f)
		}
	}
	return out
}

// Err is why the capture stopped before cleanup, if it did: frames after
// that were not recorded.
func (c *Capture) Err() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.err
}

// ToIPv4 matches IPv4 frames for dst.
func ToIPv4(dst netip.Addr) func(Frame) bool {
	return func(f Frame) bool {
		d, ok := f.IPv4Dst()
		return ok && d == dst
	}
}

// ARPFrom matches ARP frames whose sender protocol address is ip.
func ARPFrom(ip netip.Addr) func(Frame) bool {
	return func(f Frame) bool {
		s, _, ok := f.ARP()
		return ok && s == ip
	}
}

// Acceptor is a TCP listener inside a namespace that counts the
// connections it accepts, and closes them.
type Acceptor struct {
	ln       net.Listener
	accepted atomic.Int64
	done     chan struct{}
}

// Accept listens on addr (host:port) inside the namespace until cleanup.
func (n NS) Accept(tb TB, addr string) *Acceptor {
	tb.Helper()
	a := &Acceptor{done: make(chan struct{})}
	err := n.Do(func() error {
		var err error
		a.ln, err = net.Listen("tcp4", addr)
		return err
	})
	if err != nil {
		tb.Fatalf("listening on %s in %s: %v", addr, n.Name, err)
	}
	go func() {
		defer close(a.done)
		for {
			c, err := a.ln.Accept()
			if err != nil {
				return
			}
			a.accepted.Add(1)
			c.Close()
		}
	}()
	tb.Cleanup(func() {
		a.ln.Close()
		<-a.done
	})
	return a
}

// Accepted is the number of connections accepted so far.
func (a *Acceptor) Accepted() int { return int(a.accepted.Load()) }

package network

import (
	"context"
	"fmt"
	"net"
	"syscall"
	"unsafe"

	"golang.org/x/net/bpf"
	"golang.org/x/sys/unix"
)

// Listener is a TCP listener that only sees connections arriving on chosen
// interfaces. The choice is a classic BPF socket filter on the ingress
// ifindex: a SYN it rejects is dropped before TCP looks at it, so the sender
// gets no answer at all — not even the reset an unmatched SO_BINDTODEVICE
// listener would provoke — and it needs no privilege and no netfilter.
// Accepted connections inherit the filter.
type Listener struct {
	*net.TCPListener
	raw syscall.RawConn
}

// Listen listens on addr (host:port) admitting only ingress ifindexes. With
// no ingress it attaches no filter: an unprivileged process may not attach
// one on every kernel (EPERM), and in network-setup mode "node" the node
// agent's guard (in the Pod's netfilter) admits only the guest's interfaces.
func Listen(ctx context.Context, addr string, ingress []int) (*Listener, error) {
	var lc net.ListenConfig
	if ingress != nil {
		prog, err := ingressFilter(ingress)
		if err != nil {
			return nil, err
		}
		lc.Control = func(_, _ string, c syscall.RawConn) error {
			// Attach before listen(2), so no connection slips in unfiltered.
			return attach(c, prog)
		}
	}
	ln, err := lc.Listen(ctx, "tcp4", addr)
	if err != nil {
		return nil, err
	}
	tl := ln.(*net.TCPListener)
	raw, err := tl.SyscallConn()
	if err != nil {
		ln.Close()
		return nil, err
	}
	return &Listener{TCPListener: tl, raw: raw}, nil
}

// SetIngress replaces the admitted interfaces, for when the bridge or the
// serving link was recreated. Established connections keep their filter.
func (l *Listener) SetIngress(ingress []int) error {
	if ingress == nil {
		return nil
	}
	prog, err := ingressFilter(ingress)
	if err != nil {
		return err
	}
	return attach(l.raw, prog)
}

func ingressFilter(ingress []int) ([]bpf.RawInstruction, error) {
	if len(ingress) == 0 || len(ingress) > 200 {
		return nil, fmt.Errorf("ingress filter needs 1 to 200 interfaces, got %d", len(ingress))
	}
	prog := []bpf.Instruction{bpf.LoadExtension{Num: bpf.ExtInterfaceIndex}}
	for i, idx := range ingress {
		// Jump over the remaining comparisons and the drop to the accept.
		prog = append(prog, bpf.JumpIf{Cond: bpf.JumpEqual, Val: uint32(idx), SkipTrue: uint8(len(ingress) - i)})
	}
	prog = append(prog, bpf.RetConstant{Val: 0}, bpf.RetConstant{Val: 0xffffffff})
	return bpf.Assemble(prog)
}

func attach(c syscall.RawConn, prog []bpf.RawInstruction) error {
	fprog := unix.SockFprog{Len: uint16(len(prog))}
	if len(prog) > 0 {
		// bpf.RawInstruction and unix.SockFilter share struct sock_filter's layout.
		fprog.Filter = (*unix.SockFilter)(unsafe.Pointer(&prog[0]))
	}
	var serr error
	if err := c.Control(func(fd uintptr) {
		serr = unix.SetsockoptSockFprog(int(fd), unix.SOL_SOCKET, unix.SO_ATTACH_FILTER, &fprog)
	}); err != nil {
		return err
	}
	if serr != nil {
		return fmt.Errorf("attaching ingress filter: %w", serr)
	}
	return nil
}

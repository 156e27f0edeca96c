package podnet

import (
	"context"
	"errors"
	"fmt"
	"net"
	"syscall"
	"time"
)

// silenceWindow is how long a connection attempt gets to draw any answer.
const silenceWindow = 1500 * time.Millisecond

// NoTCPAnswer tries to connect from n to addr and returns nil when nothing
// answers at all — no SYN-ACK, no reset, no ICMP error — so the attempt
// times out; otherwise it describes the answer.
func (n NS) NoTCPAnswer(ctx context.Context, addr string) error {
	dctx, cancel := context.WithTimeout(ctx, silenceWindow)
	defer cancel()
	c, err := n.Dial(dctx, "tcp4", addr)
	if c != nil {
		c.Close()
	}
	var ne net.Error
	switch {
	case err == nil:
		return fmt.Errorf("connected to %s from %s", addr, n.Name)
	case errors.Is(err, syscall.ECONNREFUSED):
		return fmt.Errorf("got a reset from %s, an answer: %w", addr, err)
	case errors.Is(err, syscall.EHOSTUNREACH):
		return fmt.Errorf("got an ICMP error for %s, an answer: %w", addr, err)
	case errors.As(err, &ne) && ne.Timeout():
		return nil
	default:
		return fmt.Errorf("want a timeout connecting to %s, got %w", addr, err)
	}
}

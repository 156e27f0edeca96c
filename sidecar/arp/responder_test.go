package arp

import (
	"context"
	"net"
	"net/netip"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/go-logr/logr"
	"github.com/go-logr/logr/testr"
	"github.com/mdlayher/arp"
	"github.com/mdlayher/ethernet"
)

var (
	imdsIP    = netip.MustParseAddr("169.254.169.254")
	imdsMAC   = net.HardwareAddr{0x02, 0xaa, 0, 0, 0, 1}
	guestMAC  = net.HardwareAddr{0x02, 0x00, 0, 0, 0, 2}
	guestIP   = netip.MustParseAddr("169.254.7.9")
	guestPort = 4
)

func frame(t testing.TB, op arp.Operation, ethSrc, sha net.HardwareAddr, spa, tpa netip.Addr) []byte {
	t.Helper()
	p, err := arp.NewPacket(op, sha, spa, ethernet.Broadcast, tpa)
	if err != nil {
		t.Fatal(err)
	}
	pb, _ := p.MarshalBinary()
	fb, err := (&ethernet.Frame{Destination: ethernet.Broadcast, Source: ethSrc, EtherType: ethernet.EtherTypeARP, Payload: pb}).MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	return fb
}

func newResponder(t testing.TB, r Reader, w Writer) *Responder {
	return New(Config{IP: imdsIP, MAC: imdsMAC, GuestPort: guestPort}, r, w, testr.New(t.(*testing.T)))
}

func TestHandle(t *testing.T) {
	ipv6, _ := (&ethernet.Frame{Destination: ethernet.Broadcast, Source: guestMAC, EtherType: ethernet.EtherTypeIPv6, Payload: make([]byte, 46)}).MarshalBinary()
	tests := []struct {
		name string
		f    Frame
		want Reason
	}{
		{"request from the guest", Frame{guestPort, frame(t, arp.OperationRequest, guestMAC, guestMAC, guestIP, imdsIP)}, Answered},
		{"probe from the guest", Frame{guestPort, frame(t, arp.OperationRequest, guestMAC, guestMAC, netip.IPv4Unspecified(), imdsIP)}, Answered},
		{"request from eth0-nic", Frame{2, frame(t, arp.OperationRequest, guestMAC, guestMAC, guestIP, imdsIP)}, WrongPort},
		{"request for the gateway", Frame{guestPort, frame(t, arp.OperationRequest, guestMAC, guestMAC, guestIP, netip.MustParseAddr("10.0.2.1"))}, NotForUs},
		{"reply", Frame{guestPort, frame(t, arp.OperationReply, guestMAC, guestMAC, guestIP, imdsIP)}, NotRequest},
		{"sender hardware address forged", Frame{guestPort, frame(t, arp.OperationRequest, guestMAC, net.HardwareAddr{2, 9, 9, 9, 9, 9}, guestIP, imdsIP)}, Spoofed},
		{"not ARP", Frame{guestPort, ipv6}, Malformed},
		{"truncated", Frame{guestPort, frame(t, arp.OperationRequest, guestMAC, guestMAC, guestIP, imdsIP)[:20]}, Malformed},
		{"runt", Frame{guestPort, []byte{1, 2, 3}}, Malformed},
	}
	s := newResponder(t, nil, nil)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, reply := s.Handle(tt.f)
			if got != tt.want {
				t.Fatalf("reason = %s, want %s", got, tt.want)
			}
			if (reply != nil) != (got == Answered) {
				t.Fatalf("reply %v with reason %s", reply, got)
			}
			if reply != nil {
				if reply.Operation != arp.OperationReply || reply.SenderIP != imdsIP ||
					reply.SenderHardwareAddr.String() != imdsMAC.String() || reply.TargetHardwareAddr.String() != guestMAC.String() {
					t.Errorf("reply = %+v", reply)
				}
			}
		})
	}
}

// chanReader feeds frames from a channel and honours read deadlines.
type chanReader struct {
	frames chan Frame
	wake   chan struct{}
}

func newChanReader() *chanReader {
	return &chanReader{frames: make(chan Frame, 16), wake: make(chan struct{}, 1)}
}

func (r *chanReader) ReadFrame() (Frame, error) {
	select {
	case f := <-r.frames:
		return f, nil
	case <-r.wake:
		return Frame{}, os.ErrDeadlineExceeded
	}
}

func (r *chanReader) SetReadDeadline(t time.Time) error {
	if !t.IsZero() && t.Before(time.Now()) {
		select {
		case r.wake <- struct{}{}:
		default:
		}
	}
	return nil
}
func (r *chanReader) Close() error { return nil }

type sent struct {
	p   *arp.Packet
	dst net.HardwareAddr
}

type chanWriter chan sent

func (w chanWriter) WriteTo(p *arp.Packet, dst net.HardwareAddr) error {
	w <- sent{p, dst}
	return nil
}
func (w chanWriter) Close() error { return nil }

func TestRun(t *testing.T) {
	r, w := newChanReader(), make(chanWriter, 16)
	var mu sync.Mutex
	counts := map[Reason]int{}
	s := New(Config{IP: imdsIP, MAC: imdsMAC, GuestPort: guestPort, Observe: func(r Reason) {
		mu.Lock()
		counts[r]++
		mu.Unlock()
	}}, r, w, testr.New(t))
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error)
	go func() { done <- s.Run(ctx) }()

	garp := <-w
	if garp.dst.String() != ethernet.Broadcast.String() || garp.p.SenderIP != imdsIP || garp.p.TargetIP != imdsIP {
		t.Fatalf("gratuitous ARP = %+v to %s", garp.p, garp.dst)
	}
	r.frames <- Frame{2, frame(t, arp.OperationRequest, guestMAC, guestMAC, guestIP, imdsIP)}
	r.frames <- Frame{guestPort, frame(t, arp.OperationRequest, guestMAC, guestMAC, guestIP, imdsIP)}
	reply := <-w
	if reply.dst.String() != guestMAC.String() || reply.p.TargetIP != guestIP {
		t.Fatalf("reply = %+v to %s", reply.p, reply.dst)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("Run = %v, want nil on cancel", err)
	}
	select {
	case extra := <-w:
		t.Fatalf("unexpected write %+v", extra)
	default:
	}
	mu.Lock()
	defer mu.Unlock()
	if counts[WrongPort] != 1 || counts[Answered] != 1 {
		t.Errorf("counts = %v", counts)
	}
}

func BenchmarkHandle(b *testing.B) {
	s := New(Config{IP: imdsIP, MAC: imdsMAC, GuestPort: guestPort}, nil, nil, logr.Discard())
	f := Frame{guestPort, frame(b, arp.OperationRequest, guestMAC, guestMAC, guestIP, imdsIP)}
	for b.Loop() {
		if r, _ := s.Handle(f); r != Answered {
			b.Fatal(r)
		}
	}
}

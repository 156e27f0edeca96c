// Package arp answers ARP for the metadata address, to the guest only.
//
// Like MetalLB's layer2 responder, but narrowed to one address and one
// asker: frames are read on the guest's bridge port (so the ingress port is
// known, not guessed from a MAC address that any host can forge) and every
// frame gets one decision with a typed Reason. Replies leave from veth-imds,
// the link that owns the address, so the bridge learns where it lives.
package arp

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"time"

	"github.com/go-logr/logr"
	"github.com/mdlayher/arp"
	"github.com/mdlayher/ethernet"
)

// Reason is the outcome of handling one frame.
type Reason int

const (
	// Answered: a request from the guest for our address; a reply was sent.
	Answered Reason = iota
	// WrongPort: the frame entered the bridge on a port other than the guest's.
	WrongPort
	// Malformed: not an Ethernet/IPv4 ARP packet.
	Malformed
	// NotRequest: an ARP reply or another operation.
	NotRequest
	// NotForUs: a request for another address (the gateway, a neighbour).
	NotForUs
	// Spoofed: the ARP sender hardware address differs from the frame's
	// source; answering would teach the reply to someone else.
	Spoofed
)

// Reasons lists every Reason, for pre-creating metric series.
var Reasons = []Reason{Answered, WrongPort, Malformed, NotRequest, NotForUs, Spoofed}

func (r Reason) String() string {
	switch r {
	case Answered:
		return "answered"
	case WrongPort:
		return "wrong_port"
	case Malformed:
		return "malformed"
	case NotRequest:
		return "not_request"
	case NotForUs:
		return "not_for_us"
	case Spoofed:
		return "spoofed"
	}
	return fmt.Sprintf("reason(%d)", int(r))
}

// Frame is one received Ethernet frame and the ifindex it arrived on.
type Frame struct {
	Port int
	Data []byte
}

// Reader yields the frames arriving on the guest's port.
type Reader interface {
	ReadFrame() (Frame, error)
	SetReadDeadline(t time.Time) error
	Close() error
}

// Writer sends an ARP packet in an Ethernet frame to dst. *arp.Client on
// veth-imds implements it.
type Writer interface {
	WriteTo(p *arp.Packet, dst net.HardwareAddr) error
	Close() error
}

// Config is what the responder answers, and to whom.
type Config struct {
	// IP is the address answered for (169.254.169.254).
	IP netip.Addr
	// MAC is the address handed out (veth-imds's).
	MAC net.HardwareAddr
	// GuestPort is the ifindex of the guest's bridge port.
	GuestPort int
	// Observe, if set, is called with every decision (metrics).
	Observe func(Reason)
}

// Responder answers ARP requests for Config.IP from the guest's port.
type Responder struct {
	cfg Config
	r   Reader
	w   Writer
	log logr.Logger
}

// New returns a responder reading r and replying through w.
func New(cfg Config, r Reader, w Writer, log logr.Logger) *Responder {
	return &Responder{cfg: cfg, r: r, w: w, log: log}
}

// Handle decides about one frame. It returns the reply to send (nil unless
// the reason is Answered); it sends nothing itself.
func (s *Responder) Handle(f Frame) (Reason, *arp.Packet) {
	if f.Port != s.cfg.GuestPort {
		return WrongPort, nil
	}
	var eth ethernet.Frame
	if err := eth.UnmarshalBinary(f.Data); err != nil || eth.EtherType != ethernet.EtherTypeARP {
		return Malformed, nil
	}
	var req arp.Packet
	if err := req.UnmarshalBinary(eth.Payload); err != nil ||
		req.HardwareType != 1 || req.ProtocolType != uint16(ethernet.EtherTypeIPv4) ||
		req.HardwareAddrLength != 6 || req.IPLength != 4 {
		return Malformed, nil
	}
	if req.Operation != arp.OperationRequest {
		return NotRequest, nil
	}
	if req.TargetIP != s.cfg.IP {
		return NotForUs, nil
	}
	if !bytes.Equal(eth.Source, req.SenderHardwareAddr) {
		return Spoofed, nil
	}
	// A probe (sender 0.0.0.0, RFC 5227) is answered too: the address is in use.
	reply, err := arp.NewPacket(arp.OperationReply, s.cfg.MAC, s.cfg.IP, req.SenderHardwareAddr, req.SenderIP)
	if err != nil {
		return Malformed, nil
	}
	return Answered, reply
}

// Announce sends a gratuitous ARP reply for IP, refreshing a guest's cache
// entry left from an earlier veth-imds. Linux guests update an existing
// entry from it whatever their arp_accept; none creates a new one.
func (s *Responder) Announce() error {
	p, err := arp.NewPacket(arp.OperationReply, s.cfg.MAC, s.cfg.IP, ethernet.Broadcast, s.cfg.IP)
	if err != nil {
		return err
	}
	return s.w.WriteTo(p, ethernet.Broadcast)
}

// Run announces once, then answers until ctx is cancelled; it returns nil
// then, or the reader's error.
func (s *Responder) Run(ctx context.Context) error {
	defer s.r.Close()
	defer s.w.Close()
	stop := context.AfterFunc(ctx, func() {
		// Wake the blocked read; Close races with it less cleanly.
		_ = s.r.SetReadDeadline(time.Unix(1, 0))
	})
	defer stop()
	if err := s.Announce(); err != nil {
		s.log.Error(err, "gratuitous ARP failed")
	}
	for {
		f, err := s.r.ReadFrame()
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			if errors.Is(err, os.ErrDeadlineExceeded) {
				continue
			}
			return fmt.Errorf("reading ARP: %w", err)
		}
		reason, reply := s.Handle(f)
		if s.cfg.Observe != nil {
			s.cfg.Observe(reason)
		}
		if reason != Answered {
			s.log.V(2).Info("ARP frame ignored", "reason", reason.String(), "port", f.Port)
			continue
		}
		if err := s.w.WriteTo(reply, reply.TargetHardwareAddr); err != nil {
			s.log.Error(err, "sending ARP reply", "to", reply.TargetHardwareAddr.String())
			continue
		}
		s.log.V(1).Info("answered ARP", "from", reply.TargetIP.String(), "mac", reply.TargetHardwareAddr.String())
	}
}

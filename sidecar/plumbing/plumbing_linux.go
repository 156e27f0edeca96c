// Package plumbing keeps one network namespace ready for the metadata
// service: the network plan (sidecar/network) applied (sidecar/netapply)
// and the ARP responder (sidecar/arp) running on the guest's port. The in-Pod sidecar runs it in
// its own namespace when it has CAP_NET_ADMIN (network-setup mode
// "sidecar"); the node agent runs it, from an OS thread that entered the
// Pod's namespace, for unprivileged sidecars (mode "node").
//
// Every socket is opened from the goroutine that calls Run, so a caller that
// locked its thread into another network namespace gets them all there.
package plumbing

import (
	"context"
	"net"
	"strconv"

	"github.com/go-logr/logr"

	"github.com/kubevirt-imds/kubevirt-imds/sidecar/arp"
	"github.com/kubevirt-imds/kubevirt-imds/sidecar/netapply"
	"github.com/kubevirt-imds/kubevirt-imds/sidecar/network"
)

// Plumber applies Inputs to the calling goroutine's network namespace and
// keeps them applied.
type Plumber struct {
	Inputs network.Inputs
	Log    logr.Logger
	// OnStatus, if set, sees every reconciliation's outcome, from Run's
	// goroutine, after the ARP responder was (re)started for it.
	OnStatus func(network.Status)
	// ObserveARP, if set, counts the responder's packets by outcome.
	ObserveARP func(arp.Reason)

	arpKey    [3]string // guest port, owner link, MAC of the running responder
	arpCancel context.CancelFunc
	arpDone   chan struct{}
}

// Run reconciles until ctx ends, then stops the responder and returns nil;
// it returns an error when netlink cannot be opened or subscribed to.
// veth-imds and the rest of the plan stay in place after it returns: a
// restarted plumber adopts them, so the guest's neighbour entry stays valid.
func (p *Plumber) Run(ctx context.Context) error {
	k, err := netapply.NewKernel()
	if err != nil {
		return err
	}
	defer k.Close()
	defer p.stopARP()
	rec := &netapply.Reconciler{Kernel: k, Inputs: p.Inputs, Log: p.Log.WithName("network"), OnStatus: func(s network.Status) {
		if s.Err == nil {
			p.startARP(ctx, s)
		}
		if p.OnStatus != nil {
			p.OnStatus(s)
		}
	}}
	return rec.Run(ctx)
}

// startARP runs a responder for s unless one for the same port, link and
// MAC is still running.
func (p *Plumber) startARP(ctx context.Context, s network.Status) {
	key := [3]string{strconv.Itoa(s.GuestPortIndex), strconv.Itoa(s.LinkIndex), s.Plan.MAC.String()}
	if p.arpDone != nil {
		select {
		case <-p.arpDone:
		default:
			if key == p.arpKey {
				return
			}
		}
	}
	p.stopARP()
	log := p.Log.WithName("arp")
	guest, err := net.InterfaceByIndex(s.GuestPortIndex)
	if err != nil {
		log.Error(err, "guest port vanished", "port", s.Plan.GuestPort)
		return
	}
	owner, err := net.InterfaceByIndex(s.LinkIndex)
	if err != nil {
		log.Error(err, "serving link vanished", "link", network.LinkName)
		return
	}
	r, w, err := arp.Listen(guest, owner)
	if err != nil {
		log.Error(err, "opening ARP sockets")
		return
	}
	observe := p.ObserveARP
	if observe == nil {
		observe = func(arp.Reason) {}
	}
	resp := arp.New(arp.Config{
		IP:        network.Address.Addr(),
		MAC:       s.Plan.MAC,
		GuestPort: guest.Index,
		Observe:   observe,
	}, r, w, log)
	actx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	p.arpKey, p.arpCancel, p.arpDone = key, cancel, done
	go func() {
		defer close(done)
		if err := resp.Run(actx); err != nil {
			// The next link event (the port came back) restarts it.
			log.Error(err, "ARP responder stopped")
		}
	}()
	log.Info("answering ARP", "port", guest.Name, "mac", s.Plan.MAC.String())
}

func (p *Plumber) stopARP() {
	if p.arpCancel != nil {
		p.arpCancel()
		<-p.arpDone
		p.arpCancel, p.arpDone = nil, nil
	}
}

package netapply

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/go-logr/logr"
	"github.com/vishvananda/netlink"

	"github.com/kubevirt-imds/kubevirt-imds/sidecar/network"
)

// Reconciler keeps the namespace planned: it observes, plans and applies
// whenever a link changes, which is how it notices KubeVirt creating the
// bridge and the tap (no polling), and how it repairs a removed veth-imds.
type Reconciler struct {
	Kernel *Kernel
	Inputs network.Inputs
	Log    logr.Logger
	// OnStatus is called after every reconciliation, from Run's goroutine.
	OnStatus func(network.Status)
	// RetryInterval spaces retries after an apply error (default 1 s).
	RetryInterval time.Duration
}

// Run reconciles until ctx is cancelled or the link subscription fails.
func (r *Reconciler) Run(ctx context.Context) error {
	updates := make(chan netlink.LinkUpdate, 64)
	subErr := make(chan error, 1)
	done := make(chan struct{})
	defer close(done)
	err := netlink.LinkSubscribeWithOptions(updates, done, netlink.LinkSubscribeOptions{
		ErrorCallback: func(err error) {
			if errors.Is(err, netlink.ErrDumpInterrupted) {
				return
			}
			select {
			case subErr <- err:
			default:
			}
		},
	})
	if err != nil {
		return fmt.Errorf("subscribing to link events: %w", err)
	}
	retry := r.RetryInterval
	if retry <= 0 {
		retry = time.Second
	}
	timer := time.NewTimer(0) // the first reconciliation, after subscribing so no event is missed
	defer timer.Stop()
	var last string
	for {
		select {
		case <-ctx.Done():
			return nil
		case err := <-subErr:
			if ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("link subscription: %w", err)
		case _, ok := <-updates:
			if !ok {
				if ctx.Err() != nil {
					return nil
				}
				return errors.New("link subscription closed")
			}
			drain(updates)
		case <-timer.C:
		}
		st := r.reconcile(ctx)
		if st.Err != nil {
			var we *network.WaitError
			if msg := st.Err.Error(); msg != last {
				if errors.As(st.Err, &we) {
					r.Log.Info("waiting for the VM's network", "reason", msg)
				} else {
					r.Log.Error(st.Err, "network setup failed; retrying")
				}
				last = msg
			}
			if !errors.As(st.Err, &we) {
				timer.Reset(retry)
			}
		} else {
			last = ""
		}
		if r.OnStatus != nil {
			r.OnStatus(st)
		}
	}
}

func drain(ch <-chan netlink.LinkUpdate) {
	for {
		select {
		case _, ok := <-ch:
			if !ok {
				return
			}
		default:
			return
		}
	}
}

// reconcile observes, plans and applies once.
func (r *Reconciler) reconcile(ctx context.Context) network.Status {
	obs, err := r.Kernel.Observe(r.Inputs.Bridge)
	if err != nil {
		return network.Status{Err: err}
	}
	p, err := network.Compute(obs, r.Inputs)
	if err != nil {
		return network.Status{Err: err}
	}
	if len(p.Actions) > 0 {
		r.Log.Info("applying network plan", "bridge", p.Bridge, "guestPort", p.GuestPort, "mac", p.MAC.String(), "actions", len(p.Actions))
		if err := Apply(ctx, r.Kernel, p, r.Log); err != nil {
			return network.Status{Err: err}
		}
		if obs, err = r.Kernel.Observe(r.Inputs.Bridge); err != nil {
			return network.Status{Err: err}
		}
	}
	st := network.Status{Plan: p}
	for _, l := range obs.Links {
		switch l.Name {
		case network.LinkName:
			st.LinkIndex = l.Index
		case p.GuestPort:
			st.GuestPortIndex = l.Index
		case p.Bridge:
			st.BridgeIndex = l.Index
		}
	}
	for _, name := range p.Ingress() {
		for _, l := range obs.Links {
			if l.Name == name {
				st.Ingress = append(st.Ingress, l.Index)
			}
		}
	}
	if st.LinkIndex == 0 || st.GuestPortIndex == 0 {
		return network.Status{Err: &network.WaitError{Reason: "links changed while applying"}}
	}
	return st
}

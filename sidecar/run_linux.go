package sidecar

import (
	"context"
	"errors"
	"fmt"
	"net"
	"slices"
	"strconv"
	"time"

	vmetrics "github.com/VictoriaMetrics/metrics"
	"github.com/go-logr/logr"
	"golang.org/x/sync/errgroup"

	"github.com/kubevirt-imds/kubevirt-imds/sidecar/network"
	"github.com/kubevirt-imds/kubevirt-imds/sidecar/server"
	"github.com/kubevirt-imds/kubevirt-imds/sidecar/store"
)

func run(ctx context.Context, o Options, plumb Plumber, log logr.Logger) error {
	start := time.Now()
	st := store.New(store.Options{PayloadDir: o.PayloadDir, TokenDir: o.TokenDir}, log.WithName("store"))
	set := vmetrics.NewSet()
	m := newMetrics(set)
	srv, err := server.New(server.Config{Store: st, RateLimit: o.RateLimit, Burst: o.Burst, MaxConns: o.MaxConns,
		MaxLongPolls: o.MaxLongPolls, Hosts: o.Hosts, Metrics: set, Log: log.WithName("server")})
	if err != nil {
		return err
	}
	ready := newReadiness(st.Loaded)
	adminLn, err := (&net.ListenConfig{}).Listen(ctx, "tcp", o.AdminAddress)
	if err != nil {
		return fmt.Errorf("admin listener: %w", err)
	}

	g, ctx := errgroup.WithContext(ctx)
	g.Go(func() error { return st.Run(ctx) })
	g.Go(func() error { return serveAdmin(ctx, adminLn, adminHandler(ready, set)) })
	g.Go(func() error {
		return watchLiveness(ctx, healthzCheck(adminLn.Addr().String()),
			livenessInterval, livenessTimeout, livenessFailures, log.WithName("liveness"))
	})
	g.Go(func() error {
		n := &netRunner{o: o, plumb: plumb, log: log, st: st, srv: srv, ready: ready, m: m, start: start}
		return n.run(ctx)
	})
	log.Info("sidecar started", "admin", adminLn.Addr().String(), "payloadDir", o.PayloadDir)
	err = g.Wait()
	log.Info("sidecar stopped", "err", err)
	return err
}

// netRunner waits for the VM's network, keeps it planned (mode "sidecar")
// or waits for the node agent to plan it (mode "node"), and runs the
// guest-facing listener once 169.254.169.254 is in place.
type netRunner struct {
	o     Options
	plumb Plumber
	log   logr.Logger
	st    *store.Store
	srv   *server.Server
	ready *readiness
	m     *metrics
	start time.Time

	ln      *network.Listener
	ingress []int
}

func (n *netRunner) run(ctx context.Context) error {
	deadline := time.NewTimer(n.o.NetworkTimeout)
	defer deadline.Stop()

	// The payload names the instance (the MAC's seed) and may name the bridge.
	for {
		changed := n.st.Changed()
		if n.st.Loaded() {
			break
		}
		n.ready.setNetwork("waiting for the payload document")
		select {
		case <-ctx.Done():
			return nil
		case <-changed:
		case <-deadline.C:
			return fmt.Errorf("no payload document in %s after %s", n.o.PayloadDir, n.o.NetworkTimeout)
		}
	}
	in := inputsFor(n.o, n.st.Current())
	n.log.Info("serving bridge", "bridge", in.Bridge, "guestPort", in.GuestPort, "networkSetup", n.o.NetworkSetup)
	waiting := "looking for bridge " + in.Bridge
	if n.o.NetworkSetup == NetworkSetupNode {
		waiting = "waiting for the node agent to attach " + network.LinkName + " to " + in.Bridge
	}
	n.ready.setNetwork(waiting)

	statuses := make(chan network.Status, 1)
	onStatus := func(s network.Status) {
		// Only the latest status matters.
		select {
		case <-statuses:
		default:
		}
		statuses <- s
	}
	var source interface{ Run(context.Context) error }
	if n.o.NetworkSetup == NetworkSetupNode {
		source = &nodeSetupWatcher{Inputs: in, OnStatus: onStatus}
	} else {
		source = n.plumb(in, n.log, onStatus, func(reason string) { n.m.arpPackets.With(reason).Inc() })
	}
	recCtx, recCancel := context.WithCancel(ctx)
	recErr := make(chan error, 1)
	go func() { recErr <- source.Run(recCtx) }()
	serveErr := make(chan error, 1)
	serveDone := make(chan struct{})
	defer func() {
		recCancel()
		<-recErr //nolint:errcheck // the loop below handled its error; now only the cancellation
		if n.ln != nil {
			// Let in-flight guest requests finish before Run returns.
			<-serveDone
		}
	}()

	for {
		select {
		case <-ctx.Done():
			return nil
		case err := <-recErr:
			recErr <- err // for the deferred wait
			if ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("network reconciler: %w", err)
		case err := <-serveErr:
			return err
		case <-deadline.C:
			if n.ln == nil && n.o.NetworkSetup != NetworkSetupNode {
				return fmt.Errorf("the VM's network was not ready after %s: %s", n.o.NetworkTimeout, waiting)
			}
			if n.ln == nil {
				// Restarting would not bring the node agent; keep waiting, and
				// say so where an operator looks.
				n.log.Info("still waiting for the node agent", "after", n.o.NetworkTimeout.String(), "reason", waiting)
			}
		case s := <-statuses:
			if s.Err != nil {
				waiting = s.Err.Error()
				n.ready.setNetwork(waiting)
				n.m.networkReady.Set(0)
				var we *network.WaitError
				if errors.As(s.Err, &we) {
					n.m.reconciliations.With("waiting").Inc()
				} else {
					n.m.reconciliations.With("error").Inc()
				}
				continue
			}
			n.m.reconciliations.With("applied").Inc()
			if err := n.applied(ctx, s, serveErr, serveDone); err != nil {
				return err
			}
		}
	}
}

// applied (re)starts what depends on the network after a successful
// reconciliation.
func (n *netRunner) applied(ctx context.Context, s network.Status, serveErr chan<- error, serveDone chan<- struct{}) error {
	if n.ln == nil {
		addr := net.JoinHostPort(network.Address.Addr().String(), strconv.Itoa(n.o.ListenPort))
		ln, err := network.Listen(ctx, addr, s.Ingress)
		if err != nil {
			return fmt.Errorf("listening on %s: %w", addr, err)
		}
		n.ln, n.ingress = ln, s.Ingress
		go func() {
			defer close(serveDone)
			serveErr <- n.srv.Serve(ctx, ln)
		}()
		took := time.Since(n.start)
		n.m.setupSeconds.Set(took.Seconds())
		n.ready.setListening()
		n.log.Info("serving the guest", "address", addr, "bridge", s.Plan.Bridge, "guestPort", s.Plan.GuestPort,
			"mac", s.Plan.MAC.String(), "ingress", s.Plan.Ingress(), "sinceStart", took.String())
	} else if !slices.Equal(n.ingress, s.Ingress) {
		if err := n.ln.SetIngress(s.Ingress); err != nil {
			return err
		}
		n.ingress = s.Ingress
		n.log.Info("ingress changed", "ingress", s.Plan.Ingress())
	}
	n.ready.setNetwork("")
	n.m.networkReady.Set(1)
	return nil
}

package sidecar

import (
	"context"
	"errors"
	"fmt"
	"net"
	"slices"
	"strconv"
	"time"

	"github.com/go-logr/logr"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"golang.org/x/sync/errgroup"

	"github.com/kubevirt-imds/kubevirt-imds/sidecar/arp"
	"github.com/kubevirt-imds/kubevirt-imds/sidecar/network"
	"github.com/kubevirt-imds/kubevirt-imds/sidecar/server"
	"github.com/kubevirt-imds/kubevirt-imds/sidecar/store"
)

func run(ctx context.Context, o Options, log logr.Logger) error {
	start := time.Now()
	st := store.New(store.Options{PayloadDir: o.PayloadDir, TokenDir: o.TokenDir}, log.WithName("store"))
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	m := newMetrics(reg)
	srv, err := server.New(server.Config{Store: st, RateLimit: o.RateLimit, Burst: o.Burst, Registry: reg, Log: log.WithName("server")})
	if err != nil {
		return err
	}
	ready := newReadiness(st.Loaded)
	ready.onServing = o.OnServing
	adminLn, err := net.Listen("tcp", o.AdminAddress)
	if err != nil {
		return fmt.Errorf("admin listener: %w", err)
	}

	g, ctx := errgroup.WithContext(ctx)
	g.Go(func() error { return st.Run(ctx) })
	g.Go(func() error { return serveAdmin(ctx, adminLn, adminHandler(ready, reg)) })
	g.Go(func() error {
		n := &netRunner{o: o, log: log, st: st, srv: srv, ready: ready, m: m, start: start}
		return n.run(ctx)
	})
	log.Info("sidecar started", "admin", adminLn.Addr().String(), "payloadDir", o.PayloadDir)
	err = g.Wait()
	log.Info("sidecar stopped", "err", err)
	return err
}

// netRunner waits for the VM's network, keeps it planned, and runs what
// depends on it: the ARP responder and the guest-facing listener.
type netRunner struct {
	o     Options
	log   logr.Logger
	st    *store.Store
	srv   *server.Server
	ready *readiness
	m     *metrics
	start time.Time

	ln        *network.Listener
	ingress   []int
	arpKey    [3]string // guest port, owner link, MAC of the running responder
	arpCancel context.CancelFunc
	arpDone   chan struct{}
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
	n.log.Info("serving bridge", "bridge", in.Bridge, "guestPort", in.GuestPort)
	waiting := "looking for bridge " + in.Bridge
	n.ready.setNetwork(waiting)

	k, err := network.NewKernel()
	if err != nil {
		return err
	}
	defer k.Close()
	statuses := make(chan network.Status, 1)
	rec := &network.Reconciler{Kernel: k, Inputs: in, Log: n.log.WithName("network"), OnStatus: func(s network.Status) {
		// Only the latest status matters.
		select {
		case <-statuses:
		default:
		}
		statuses <- s
	}}
	recCtx, recCancel := context.WithCancel(ctx)
	recErr := make(chan error, 1)
	go func() { recErr <- rec.Run(recCtx) }()
	serveErr := make(chan error, 1)
	serveDone := make(chan struct{})
	defer func() {
		recCancel()
		<-recErr
		n.stopARP()
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
			if n.ln == nil {
				return fmt.Errorf("the VM's network was not ready after %s: %s", n.o.NetworkTimeout, waiting)
			}
		case s := <-statuses:
			if s.Err != nil {
				waiting = s.Err.Error()
				n.ready.setNetwork(waiting)
				n.m.networkReady.Set(0)
				var we *network.WaitError
				if errors.As(s.Err, &we) {
					n.m.reconciliations.WithLabelValues("waiting").Inc()
				} else {
					n.m.reconciliations.WithLabelValues("error").Inc()
				}
				continue
			}
			n.m.reconciliations.WithLabelValues("applied").Inc()
			if err := n.applied(ctx, s, serveErr, serveDone); err != nil {
				return err
			}
		}
	}
}

// applied (re)starts what depends on the network after a successful
// reconciliation.
func (n *netRunner) applied(ctx context.Context, s network.Status, serveErr chan<- error, serveDone chan<- struct{}) error {
	n.startARP(ctx, s)
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

// startARP runs a responder for s unless one for the same port, link and
// MAC is still running.
func (n *netRunner) startARP(ctx context.Context, s network.Status) {
	key := [3]string{strconv.Itoa(s.GuestPortIndex), strconv.Itoa(s.LinkIndex), s.Plan.MAC.String()}
	if n.arpDone != nil {
		select {
		case <-n.arpDone:
		default:
			if key == n.arpKey {
				return
			}
		}
	}
	n.stopARP()
	log := n.log.WithName("arp")
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
	resp := arp.New(arp.Config{
		IP:        network.Address.Addr(),
		MAC:       s.Plan.MAC,
		GuestPort: guest.Index,
		Observe:   func(r arp.Reason) { n.m.arpPackets.WithLabelValues(r.String()).Inc() },
	}, r, w, log)
	actx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	n.arpKey, n.arpCancel, n.arpDone = key, cancel, done
	go func() {
		defer close(done)
		if err := resp.Run(actx); err != nil {
			// The next link event (the port came back) restarts it.
			log.Error(err, "ARP responder stopped")
		}
	}()
	log.Info("answering ARP", "port", guest.Name, "mac", s.Plan.MAC.String())
}

func (n *netRunner) stopARP() {
	if n.arpCancel != nil {
		n.arpCancel()
		<-n.arpDone
		n.arpCancel, n.arpDone = nil, nil
	}
}

package sidecar

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strings"
	"sync"
	"time"

	vmetrics "github.com/VictoriaMetrics/metrics"

	"github.com/kubevirt-imds/kubevirt-imds/sidecar/promtext"
	"github.com/kubevirt-imds/kubevirt-imds/sidecar/server"
)

// readiness collects why the sidecar cannot serve yet.
type readiness struct {
	payloadLoaded func() bool

	mu        sync.Mutex
	network   string // why the network is not ready; "" once applied
	listening bool
}

func newReadiness(payloadLoaded func() bool) *readiness {
	return &readiness{payloadLoaded: payloadLoaded, network: "not set up yet"}
}

func (r *readiness) setNetwork(reason string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.network = reason
}

func (r *readiness) setListening() {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.listening = true
}

// reasons lists what is missing; none means ready.
func (r *readiness) reasons() []string {
	var out []string
	if !r.payloadLoaded() {
		out = append(out, "payload: no payload document loaded yet")
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.network != "" {
		out = append(out, "network: "+r.network)
	}
	if !r.listening {
		out = append(out, "listener: not listening on 169.254.169.254 yet")
	}
	return out
}

// adminHandler serves /healthz (the process runs), /readyz (the guest can be
// served, or why not) and /metrics: set's series (the sidecar's and its
// server's) and the Go runtime's and the process's.
func adminHandler(r *readiness, set *vmetrics.Set) http.Handler {
	// The runtime's and the process's series get their TYPE lines from the
	// library's switch, which is process-wide; promtext.Write writes set's
	// either way.
	vmetrics.ExposeMetadata(true)
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		fmt.Fprintln(w, "ok")
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		if reasons := r.reasons(); len(reasons) > 0 {
			w.WriteHeader(http.StatusServiceUnavailable)
			fmt.Fprintln(w, strings.Join(reasons, "\n"))
			return
		}
		fmt.Fprintln(w, "ok")
	})
	mux.HandleFunc("GET /metrics", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
		if err := promtext.Write(w, set, MetricFamilies()); err != nil {
			return // the scraper is gone
		}
		vmetrics.WriteProcessMetrics(w)
		vmetrics.WriteFDMetrics(w)
	})
	return mux
}

// serveAdmin serves h on ln until ctx is done.
func serveAdmin(ctx context.Context, ln net.Listener, h http.Handler) error {
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 5 * time.Second}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	select {
	case err := <-errc:
		return fmt.Errorf("admin server: %w", err)
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil {
		return fmt.Errorf("shutting down admin server: %w", err)
	}
	if err := <-errc; err != nil && !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("admin server: %w", err)
	}
	return nil
}

// The sidecar's own metric families; its server has its own.
var (
	arpPacketsFamily = promtext.Family{
		Name:   "kubevirt_imds_sidecar_arp_packets_total",
		Type:   promtext.Counter,
		Help:   "ARP frames seen on the guest's port, by decision (answered, not_for_us, wrong_port, …).",
		Labels: []string{"reason"},
	}
	reconciliationsFamily = promtext.Family{
		Name:   "kubevirt_imds_sidecar_network_reconciliations_total",
		Type:   promtext.Counter,
		Help:   "Network reconciliations, by result (applied, waiting, error).",
		Labels: []string{"result"},
	}
	networkReadyFamily = promtext.Family{
		Name: "kubevirt_imds_sidecar_network_ready",
		Type: promtext.Gauge,
		Help: "1 while veth-imds, routing and isolation are in place.",
	}
	setupSecondsFamily = promtext.Family{
		Name: "kubevirt_imds_sidecar_network_setup_seconds",
		Type: promtext.Gauge,
		Help: "Seconds from the sidecar's start until it first listened for the guest.",
	}
)

// MetricFamilies lists the families of the sidecar's /metrics besides the
// Go runtime's and the process's: its own and its server's. Tests that
// check dashboards and alert rules read their names and labels here.
func MetricFamilies() []promtext.Family {
	return append(server.MetricFamilies(), arpPacketsFamily, reconciliationsFamily, networkReadyFamily, setupSecondsFamily)
}

// metrics are the sidecar's own series; the server keeps its own.
type metrics struct {
	arpPackets      *promtext.Vec[string, *vmetrics.Counter]
	reconciliations *promtext.Vec[string, *vmetrics.Counter]
	networkReady    *vmetrics.Gauge
	setupSeconds    *vmetrics.Gauge
}

func newMetrics(set *vmetrics.Set) *metrics {
	return &metrics{
		arpPackets:      promtext.NewCounterVec(set, arpPacketsFamily),
		reconciliations: promtext.NewCounterVec(set, reconciliationsFamily),
		networkReady:    set.NewGauge(networkReadyFamily.Series(), nil),
		setupSeconds:    set.NewGauge(setupSecondsFamily.Series(), nil),
	}
}

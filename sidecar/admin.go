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

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
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
// served, or why not) and /metrics from the sidecar's own registry.
func adminHandler(r *readiness, g prometheus.Gatherer) http.Handler {
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
	mux.Handle("GET /metrics", promhttp.HandlerFor(g, promhttp.HandlerOpts{}))
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

// metrics are the sidecar's own series; the server registers its own.
type metrics struct {
	arpPackets      *prometheus.CounterVec
	reconciliations *prometheus.CounterVec
	networkReady    prometheus.Gauge
	setupSeconds    prometheus.Gauge
}

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		arpPackets: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "kubevirt_imds_sidecar_arp_packets_total",
			Help: "ARP frames seen on the guest's port, by decision (answered, not_for_us, wrong_port, …).",
		}, []string{"reason"}),
		reconciliations: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "kubevirt_imds_sidecar_network_reconciliations_total",
			Help: "Network reconciliations, by result (applied, waiting, error).",
		}, []string{"result"}),
		networkReady: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "kubevirt_imds_sidecar_network_ready",
			Help: "1 while veth-imds, routing and isolation are in place.",
		}),
		setupSeconds: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "kubevirt_imds_sidecar_network_setup_seconds",
			Help: "Seconds from the sidecar's start until it first listened for the guest.",
		}),
	}
	reg.MustRegister(m.arpPackets, m.reconciliations, m.networkReady, m.setupSeconds)
	return m
}

// RegisterMetrics registers the sidecar's own collectors (the network and
// ARP series; the server registers its request series itself) with reg:
// tests that check dashboards and alert rules read their names from it.
func RegisterMetrics(reg prometheus.Registerer) {
	newMetrics(reg)
}

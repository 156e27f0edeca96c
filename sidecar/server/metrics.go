package server

import (
	"fmt"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/kubevirt-imds/kubevirt-imds/api/payload"
	"github.com/kubevirt-imds/kubevirt-imds/sidecar/store"
)

// metrics are the server's Prometheus collectors. All are nil-safe through
// observe, so a Server without a registry costs nothing.
type metrics struct {
	requests *prometheus.CounterVec
	latency  *prometheus.HistogramVec
	refusals *prometheus.CounterVec
	sheds    *prometheus.CounterVec
}

func newMetrics(reg prometheus.Registerer, st *store.Store, polling, conns func() float64) (*metrics, error) {
	if reg == nil {
		return &metrics{}, nil
	}
	m := &metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "kubevirt_imds",
			Subsystem: "sidecar",
			Name:      "requests_total",
			Help:      "Guest metadata requests by dialect (v1, nocloud, openstack, none) and status code.",
		}, []string{"dialect", "code"}),
		latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: "kubevirt_imds",
			Subsystem: "sidecar",
			Name:      "request_duration_seconds",
			Help:      "Time to answer a guest metadata request, long polls excluded.",
			Buckets:   []float64{0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1},
		}, []string{"dialect"}),
		refusals: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "kubevirt_imds",
			Subsystem: "sidecar",
			Name:      "refused_requests_total",
			Help:      "Guest requests refused by the request rules, by reason (framing, malformed, header-size, body-size, version, host, proxy, rate, long-polls, uri-size, path, method, metadata).",
		}, []string{"reason"}),
		sheds: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "kubevirt_imds",
			Subsystem: "sidecar",
			Name:      "shed_connections_total",
			Help:      "Guest connections closed at the connection cap, by reason: idle, incomplete or stalled (closed to make room for a new one), full (the new one refused).",
		}, []string{"reason"}),
	}
	collectors := []prometheus.Collector{
		m.requests,
		m.latency,
		m.refusals,
		m.sheds,
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Namespace: "kubevirt_imds",
			Subsystem: "sidecar",
			Name:      "connections",
			Help:      "Open guest connections.",
		}, conns),
		prometheus.NewCounterFunc(prometheus.CounterOpts{
			Namespace:   "kubevirt_imds",
			Subsystem:   "sidecar",
			Name:        "payload_reloads_total",
			Help:        "Payload reads by result: loaded (a new document became current) or failed (missing or invalid, the last good document kept).",
			ConstLabels: prometheus.Labels{"result": "loaded"},
		}, func() float64 { return float64(st.Stats().Reloads) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{
			Namespace:   "kubevirt_imds",
			Subsystem:   "sidecar",
			Name:        "payload_reloads_total",
			Help:        "Payload reads by result: loaded (a new document became current) or failed (missing or invalid, the last good document kept).",
			ConstLabels: prometheus.Labels{"result": "failed"},
		}, func() float64 { return float64(st.Stats().Failures) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Namespace: "kubevirt_imds",
			Subsystem: "sidecar",
			Name:      "long_polls",
			Help:      "Long polls (/v1 wait_for_change) waiting for a change.",
		}, polling),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Namespace: "kubevirt_imds",
			Subsystem: "sidecar",
			Name:      "payload_loaded",
			Help:      "1 once a valid payload document is being served.",
		}, func() float64 {
			if st.Loaded() {
				return 1
			}
			return 0
		}),
	}
	for _, c := range collectors {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("registering metrics: %w", err)
		}
	}
	return m, nil
}

func (m *metrics) observe(d payload.Dialect, code int, took time.Duration, longPoll bool) {
	if m.requests == nil {
		return
	}
	label := string(d)
	if label == "" {
		label = "none"
	}
	m.requests.WithLabelValues(label, strconv.Itoa(code)).Inc()
	if !longPoll {
		m.latency.WithLabelValues(label).Observe(took.Seconds())
	}
}

func (m *metrics) refused(reason string) {
	if m.refusals != nil {
		m.refusals.WithLabelValues(reason).Inc()
	}
}

func (m *metrics) shed(reason string) {
	if m.sheds != nil {
		m.sheds.WithLabelValues(reason).Inc()
	}
}

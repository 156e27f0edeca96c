package server

import (
	"fmt"
	"slices"
	"strconv"
	"time"

	vmetrics "github.com/VictoriaMetrics/metrics"

	"github.com/kubevirt-imds/kubevirt-imds/api/payload"
	"github.com/kubevirt-imds/kubevirt-imds/sidecar/promtext"
	"github.com/kubevirt-imds/kubevirt-imds/sidecar/store"
)

// The server's metric families.
var (
	requestsFamily = promtext.Family{
		Name:   "kubevirt_imds_sidecar_requests_total",
		Type:   promtext.Counter,
		Help:   "Guest metadata requests by dialect (v1, nocloud, openstack, none) and status code.",
		Labels: []string{"code", "dialect"},
	}
	latencyFamily = promtext.Family{
		Name:   "kubevirt_imds_sidecar_request_duration_seconds",
		Type:   promtext.Histogram,
		Help:   "Time to answer a guest metadata request, long polls excluded.",
		Labels: []string{"dialect"},
	}
	refusalsFamily = promtext.Family{
		Name:   "kubevirt_imds_sidecar_refused_requests_total",
		Type:   promtext.Counter,
		Help:   "Guest requests refused by the request rules, by reason (framing, malformed, header-size, body-size, version, host, proxy, rate, long-polls, uri-size, path, method, metadata).",
		Labels: []string{"reason"},
	}
	shedsFamily = promtext.Family{
		Name:   "kubevirt_imds_sidecar_shed_connections_total",
		Type:   promtext.Counter,
		Help:   "Guest connections closed at the connection cap, by reason: idle, incomplete or stalled (closed to make room for a new one), full (the new one refused).",
		Labels: []string{"reason"},
	}
	connectionsFamily = promtext.Family{
		Name: "kubevirt_imds_sidecar_connections",
		Type: promtext.Gauge,
		Help: "Open guest connections.",
	}
	reloadsFamily = promtext.Family{
		Name:   "kubevirt_imds_sidecar_payload_reloads_total",
		Type:   promtext.Counter,
		Help:   "Payload reads by result: loaded (a new document became current) or failed (missing or invalid, the last good document kept).",
		Labels: []string{"result"},
	}
	longPollsFamily = promtext.Family{
		Name: "kubevirt_imds_sidecar_long_polls",
		Type: promtext.Gauge,
		Help: "Long polls (/v1 wait_for_change) waiting for a change.",
	}
	payloadLoadedFamily = promtext.Family{
		Name: "kubevirt_imds_sidecar_payload_loaded",
		Type: promtext.Gauge,
		Help: "1 once a valid payload document is being served.",
	}
)

// latencyBuckets are the upper bounds of request_duration_seconds.
var latencyBuckets = []float64{0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1}

// MetricFamilies lists the server's metric families: /metrics writes their
// HELP and TYPE lines from it.
func MetricFamilies() []promtext.Family {
	return []promtext.Family{requestsFamily, latencyFamily, refusalsFamily, shedsFamily,
		connectionsFamily, reloadsFamily, longPollsFamily, payloadLoadedFamily}
}

// metrics are the server's series. All are nil-safe through observe, so a
// Server without a metrics set costs nothing.
type metrics struct {
	requests *promtext.Vec[requestLabels, *vmetrics.Counter]
	latency  *promtext.Vec[string, *vmetrics.PrometheusHistogram]
	refusals *promtext.Vec[string, *vmetrics.Counter]
	sheds    *promtext.Vec[string, *vmetrics.Counter]
}

// requestLabels tell the series of requests_total apart.
type requestLabels struct {
	dialect string
	code    int
}

func newMetrics(set *vmetrics.Set, st *store.Store, polling, conns func() float64) (*metrics, error) {
	if set == nil {
		return &metrics{}, nil
	}
	// The series read when scraped are gauge functions, payload_reloads_total
	// too: the library's counters hold a value of their own, and its TYPE
	// line comes from reloadsFamily.
	funcs := []struct {
		name string
		f    func() float64
	}{
		{connectionsFamily.Series(), conns},
		{reloadsFamily.Series("loaded"), func() float64 { return float64(st.Stats().Reloads) }},
		{reloadsFamily.Series("failed"), func() float64 { return float64(st.Stats().Failures) }},
		{longPollsFamily.Series(), polling},
		{payloadLoadedFamily.Series(), func() float64 {
			if st.Loaded() {
				return 1
			}
			return 0
		}},
	}
	// The library panics on a name registered twice: a second server on
	// the same set is refused instead.
	have := set.ListMetricNames()
	for _, s := range funcs {
		if _, found := slices.BinarySearch(have, s.name); found {
			return nil, fmt.Errorf("registering metrics: %s is already registered", s.name)
		}
	}
	for _, s := range funcs {
		set.NewGauge(s.name, s.f)
	}
	return &metrics{
		requests: promtext.NewVec(func(l requestLabels) *vmetrics.Counter {
			return set.GetOrCreateCounter(requestsFamily.Series(strconv.Itoa(l.code), l.dialect))
		}),
		latency: promtext.NewVec(func(dialect string) *vmetrics.PrometheusHistogram {
			return set.GetOrCreatePrometheusHistogramExt(latencyFamily.Series(dialect), latencyBuckets)
		}),
		refusals: promtext.NewCounterVec(set, refusalsFamily),
		sheds:    promtext.NewCounterVec(set, shedsFamily),
	}, nil
}

func (m *metrics) observe(d payload.Dialect, code int, took time.Duration, longPoll bool) {
	if m.requests == nil {
		return
	}
	label := string(d)
	if label == "" {
		label = "none"
	}
	m.requests.With(requestLabels{label, code}).Inc()
	if !longPoll {
		m.latency.With(label).Update(took.Seconds())
	}
}

func (m *metrics) refused(reason string) {
	if m.refusals != nil {
		m.refusals.With(reason).Inc()
	}
}

func (m *metrics) shed(reason string) {
	if m.sheds != nil {
		m.sheds.With(reason).Inc()
	}
}

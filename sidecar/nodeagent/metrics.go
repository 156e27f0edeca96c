package nodeagent

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"google.golang.org/protobuf/proto"
)

// sidecarSeriesPrefix names the series the agent gathers from a sidecar:
// the sidecar's own. Its Go runtime and process series stay on its own
// /metrics: under the names of the agent's, with other HELP texts, they
// would make the agent's registry refuse the whole scrape, and every VM
// would add a hundred series.
const sidecarSeriesPrefix = "kubevirt_imds_sidecar_"

// Labels the agent puts on every series it gathers from a sidecar, so that
// one scrape of the agent covers every VM on its node. Not "namespace" and
// "name": Prometheus sets those of the scraped Pod (the agent's).
const (
	LabelVMINamespace = "vmi_namespace"
	LabelVMIName      = "vmi_name"
	LabelVMIUID       = "vmi_uid"
)

// scrapeTimeout bounds the scrape of one sidecar; scrapeConcurrency how many
// sidecars are scraped at once.
const (
	scrapeTimeout     = 2 * time.Second
	scrapeConcurrency = 8
	// maxSidecarMetrics bounds what one sidecar's /metrics may return: a
	// process that only claims to be a sidecar must not make the agent
	// buffer without end.
	maxSidecarMetrics = 1 << 20
)

// target is one sidecar to scrape: how to reach its admin endpoint from
// inside its network namespace, and who it serves.
type target struct {
	req  Request
	dial func(ctx context.Context, network, addr string) (net.Conn, error)
}

// agentMetrics are the agent's own series.
type agentMetrics struct {
	sidecars     prometheus.Gauge
	scrapeErrors prometheus.Counter
}

func newAgentMetrics() *agentMetrics {
	return &agentMetrics{
		sidecars: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "kubevirt_imds_node_agent_sidecars",
			Help: "Node-mode sidecars the agent plumbs on this node.",
		}),
		scrapeErrors: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "kubevirt_imds_node_agent_sidecar_scrape_errors_total",
			Help: "Scrapes of a sidecar's /metrics that failed (the sidecar's series are then missing from that scrape).",
		}),
	}
}

// Registry is what the agent serves: the agent process's Go runtime and
// process series, its own series and, through each sidecar's loopback admin
// endpoint reached inside its network namespace, every sidecar's series
// labelled with its VMI. Prometheus scrapes it on the agent's Pod: the
// sidecar's endpoint stays unreachable from outside its namespace (and so
// from the guest), as a launcher Pod's IP belongs to the guest in both of
// KubeVirt's bindings.
func (a *Agent) Registry() *prometheus.Registry {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}), a.Collector())
	return reg
}

func (a *Agent) initMetrics() {
	a.metricsOnce.Do(func() { a.metrics = newAgentMetrics() })
}

// gatherSidecars scrapes every sidecar the agent serves. A sidecar that
// fails to answer is counted and left out: one broken VM must not blank the
// node's metrics.
func (a *Agent) gatherSidecars() ([]*dto.MetricFamily, error) {
	targets := a.targets()
	a.metrics.sidecars.Set(float64(len(targets)))
	results := make([][]*dto.MetricFamily, len(targets))
	var wg sync.WaitGroup
	sem := make(chan struct{}, scrapeConcurrency)
	for i, t := range targets {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer func() { <-sem; wg.Done() }()
			ctx, cancel := context.WithTimeout(context.Background(), scrapeTimeout)
			defer cancel()
			fams, err := scrapeSidecar(ctx, t)
			if err != nil {
				a.metrics.scrapeErrors.Inc()
				a.Log.V(1).Info("scraping a sidecar's metrics", "vmi", t.req.Instance, "error", err.Error())
				return
			}
			results[i] = fams
		}()
	}
	wg.Wait()
	return mergeFamilies(results), nil
}

// scrapeSidecar reads t's /metrics and labels every series with its VMI.
func scrapeSidecar(ctx context.Context, t target) ([]*dto.MetricFamily, error) {
	client := &http.Client{Transport: &http.Transport{DialContext: t.dial, DisableKeepAlives: true}}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+t.req.AdminAddress+"/metrics", nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Accept", string(expfmt.NewFormat(expfmt.TypeTextPlain)))
	resp, err := client.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET /metrics: %s", resp.Status)
	}
	return relabel(io.LimitReader(resp.Body, maxSidecarMetrics), t.req)
}

// relabel parses the text exposition format in r, keeps the sidecar's own
// families (sidecarSeriesPrefix) and adds the VMI's labels to them.
func relabel(r io.Reader, req Request) ([]*dto.MetricFamily, error) {
	parser := expfmt.NewTextParser(model.UTF8Validation)
	byName, err := parser.TextToMetricFamilies(r)
	if err != nil {
		return nil, fmt.Errorf("parsing the sidecar's metrics: %w", err)
	}
	ns, name := req.InstanceNamespaceName()
	extra := []*dto.LabelPair{
		{Name: proto.String(LabelVMINamespace), Value: proto.String(ns)},
		{Name: proto.String(LabelVMIName), Value: proto.String(name)},
		{Name: proto.String(LabelVMIUID), Value: proto.String(req.MACSeed)},
	}
	fams := make([]*dto.MetricFamily, 0, len(byName))
	for _, f := range byName {
		if !strings.HasPrefix(f.GetName(), sidecarSeriesPrefix) {
			continue
		}
		for _, m := range f.Metric {
			// A sidecar's own label of the same name would make the series
			// ambiguous: the agent's labels win.
			kept := m.Label[:0]
			for _, l := range m.Label {
				if l.GetName() != LabelVMINamespace && l.GetName() != LabelVMIName && l.GetName() != LabelVMIUID {
					kept = append(kept, l)
				}
			}
			m.Label = append(kept, extra...)
		}
		fams = append(fams, f)
	}
	return fams, nil
}

// mergeFamilies joins the families of several sidecars by name, sorted as
// Gatherers expects; a family whose type differs from the first seen is
// dropped rather than failing the whole scrape.
func mergeFamilies(results [][]*dto.MetricFamily) []*dto.MetricFamily {
	byName := map[string]*dto.MetricFamily{}
	for _, fams := range results {
		for _, f := range fams {
			have, ok := byName[f.GetName()]
			switch {
			case !ok:
				byName[f.GetName()] = f
			case have.GetType() == f.GetType():
				have.Metric = append(have.Metric, f.Metric...)
			}
		}
	}
	out := make([]*dto.MetricFamily, 0, len(byName))
	for _, f := range byName {
		out = append(out, f)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].GetName() < out[j].GetName() })
	return out
}

// Collector is the agent's metrics as a prometheus.Collector, for a
// registry served behind authentication (Registry; the node agent's command
// serves that through controller-runtime's metrics server, which checks
// every scrape with the API server). It is unchecked: the sidecars' series are known only
// when gathered.
func (a *Agent) Collector() prometheus.Collector {
	a.initMetrics()
	return agentCollector{a}
}

type agentCollector struct{ a *Agent }

// Describe describes nothing: an unchecked collector.
func (agentCollector) Describe(chan<- *prometheus.Desc) {}

// Collect sends the agent's own series and every sidecar's.
func (c agentCollector) Collect(ch chan<- prometheus.Metric) {
	fams, _ := c.a.gatherSidecars()
	ch <- c.a.metrics.sidecars
	ch <- c.a.metrics.scrapeErrors
	for _, f := range fams {
		desc := prometheus.NewDesc(f.GetName(), f.GetHelp(), nil, nil)
		for _, m := range f.Metric {
			ch <- gatheredMetric{desc: desc, m: m}
		}
	}
}

// gatheredMetric is a series gathered from a sidecar, passed on as it came.
type gatheredMetric struct {
	desc *prometheus.Desc
	m    *dto.Metric
}

func (g gatheredMetric) Desc() *prometheus.Desc { return g.desc }

func (g gatheredMetric) Write(out *dto.Metric) error {
	proto.Merge(out, g.m)
	return nil
}

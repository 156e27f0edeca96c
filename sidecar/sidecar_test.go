package sidecar

import (
	"flag"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
	"time"

	vmetrics "github.com/VictoriaMetrics/metrics"
	"github.com/go-logr/logr"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/kubevirt-imds/kubevirt-imds/api/payload"
	"github.com/kubevirt-imds/kubevirt-imds/sidecar/network"
	"github.com/kubevirt-imds/kubevirt-imds/sidecar/server"
	"github.com/kubevirt-imds/kubevirt-imds/sidecar/store"
)

func parse(t *testing.T, args ...string) Options {
	t.Helper()
	var o Options
	fs := flag.NewFlagSet("sidecar", flag.ContinueOnError)
	o.AddFlags(fs)
	if err := fs.Parse(args); err != nil {
		t.Fatal(err)
	}
	return o
}

func TestDefaultsAndValidation(t *testing.T) {
	o := parse(t)
	if err := o.validate(); err != nil {
		t.Fatalf("defaults invalid: %v", err)
	}
	if o.ListenPort != 80 || o.AdminAddress != "127.0.0.2:8081" || o.NetworkTimeout != 5*time.Minute {
		t.Errorf("defaults = %+v", o)
	}
	for _, tt := range []struct {
		args []string
		want string
	}{
		{[]string{"--admin-address", "0.0.0.0:8081"}, "must be a loopback address"},
		{[]string{"--admin-address", "169.254.169.254:8081"}, "must be a loopback address"},
		{[]string{"--admin-address", "8081"}, "missing port"},
		{[]string{"--listen-port", "0"}, "out of range"},
		{[]string{"--network-timeout", "0s"}, "must be positive"},
	} {
		o := parse(t, tt.args...)
		err := o.validate()
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%v: err = %v, want %q", tt.args, err, tt.want)
		}
	}
	for _, ok := range []string{"[::1]:9000", "localhost:1", "127.0.0.2:80"} {
		o := parse(t, "--admin-address", ok)
		if err := o.validate(); err != nil {
			t.Errorf("%s: %v", ok, err)
		}
	}
}

func TestInputsFor(t *testing.T) {
	doc := &payload.Document{
		Instance: payload.Instance{ID: "id-1", UID: "uid-1"},
		Network: &payload.Network{Interfaces: []payload.Interface{
			{Name: "sec", Bridge: "k6t-abc"},
			{Name: "default", Bridge: "k6t-eth0", Primary: true},
		}},
	}
	tests := []struct {
		name string
		o    Options
		doc  func() *payload.Document
		want network.Inputs
	}{
		{"primary interface's bridge", Options{}, func() *payload.Document { return doc }, network.Inputs{Bridge: "k6t-eth0", MACSeed: "uid-1"}},
		{"payload's serve.bridge", Options{}, func() *payload.Document {
			d := *doc
			d.Serve.Bridge = "k6t-abc"
			return &d
		}, network.Inputs{Bridge: "k6t-abc", MACSeed: "uid-1"}},
		{"flags win", Options{Bridge: "k6t-net1", GuestPort: "vnet0"}, func() *payload.Document {
			d := *doc
			d.Serve.Bridge = "k6t-abc"
			return &d
		}, network.Inputs{Bridge: "k6t-net1", GuestPort: "vnet0", MACSeed: "uid-1"}},
		{"no network model, no UID", Options{}, func() *payload.Document {
			return &payload.Document{Instance: payload.Instance{ID: "id-1"}}
		}, network.Inputs{Bridge: "k6t-eth0", MACSeed: "id-1"}},
		{"no document", Options{}, func() *payload.Document { return nil }, network.Inputs{Bridge: "k6t-eth0"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := inputsFor(tt.o, tt.doc()); got != tt.want {
				t.Errorf("got %+v, want %+v", got, tt.want)
			}
		})
	}
}

func TestAdminHandler(t *testing.T) {
	loaded := false
	r := newReadiness(func() bool { return loaded })
	set := vmetrics.NewSet()
	m := newMetrics(set)
	m.arpPackets.With("answered").Inc()
	m.reconciliations.With("applied").Inc()
	guest, err := server.New(server.Config{Store: store.New(store.Options{}, logr.Discard()), Metrics: set, Log: logr.Discard()})
	if err != nil {
		t.Fatal(err)
	}
	guestReq := httptest.NewRequest(http.MethodGet, "/nocloud/meta-data", nil)
	guestReq.Host = server.Address
	guest.Handler().ServeHTTP(httptest.NewRecorder(), guestReq)
	srv := httptest.NewServer(adminHandler(r, set))
	defer srv.Close()

	get := func(path string) (int, string) {
		resp, err := http.Get(srv.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	if code, _ := get("/healthz"); code != http.StatusOK {
		t.Errorf("/healthz = %d", code)
	}
	code, body := get("/readyz")
	if code != http.StatusServiceUnavailable || !strings.Contains(body, "payload: no payload document loaded yet") ||
		!strings.Contains(body, "network: not set up yet") || !strings.Contains(body, "listener: not listening") {
		t.Errorf("/readyz = %d %q", code, body)
	}
	loaded = true
	r.setNetwork("bridge k6t-eth0 does not exist yet")
	if _, body := get("/readyz"); body != "network: bridge k6t-eth0 does not exist yet\nlistener: not listening on 169.254.169.254 yet\n" {
		t.Errorf("/readyz body %q", body)
	}
	r.setNetwork("")
	r.setListening()
	if code, body := get("/readyz"); code != http.StatusOK || body != "ok\n" {
		t.Errorf("/readyz = %d %q", code, body)
	}
	_, body = get("/metrics")
	if !strings.Contains(body, `kubevirt_imds_sidecar_arp_packets_total{reason="answered"} 1`) {
		t.Errorf("/metrics lacks the ARP counter:\n%s", body)
	}
	// What Prometheus and the node agent read of it.
	parser := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := parser.TextToMetricFamilies(strings.NewReader(body))
	if err != nil {
		t.Fatalf("parsing /metrics: %v\n%s", err, body)
	}
	for _, f := range MetricFamilies() {
		got, ok := fams[f.Name]
		if !ok {
			if f.Name == "kubevirt_imds_sidecar_refused_requests_total" || f.Name == "kubevirt_imds_sidecar_shed_connections_total" {
				continue // no series before the first refusal
			}
			t.Errorf("/metrics lacks %s", f.Name)
			continue
		}
		if got.GetHelp() != f.Help || !strings.EqualFold(got.GetType().String(), string(f.Type)) {
			t.Errorf("%s: HELP %q TYPE %s, want %q %s", f.Name, got.GetHelp(), got.GetType(), f.Help, f.Type)
		}
		for _, s := range got.GetMetric() {
			var names []string
			for _, l := range s.GetLabel() {
				names = append(names, l.GetName())
			}
			slices.Sort(names)
			if want := slices.Sorted(slices.Values(f.Labels)); !slices.Equal(names, want) {
				t.Errorf("%s: labels %v, want %v", f.Name, names, want)
			}
		}
	}
	if h := fams["kubevirt_imds_sidecar_request_duration_seconds"].GetMetric()[0].GetHistogram(); h.GetSampleCount() != 1 || len(h.GetBucket()) != 13 {
		t.Errorf("request_duration_seconds: %v", h)
	}
	for name, typ := range map[string]dto.MetricType{
		"go_goroutines":                 dto.MetricType_GAUGE,
		"go_gc_duration_seconds":        dto.MetricType_SUMMARY,
		"process_cpu_seconds_total":     dto.MetricType_COUNTER,
		"process_resident_memory_bytes": dto.MetricType_GAUGE,
		"process_open_fds":              dto.MetricType_GAUGE,
	} {
		if got := fams[name]; got.GetType() != typ || len(got.GetMetric()) == 0 {
			t.Errorf("%s: %v, want a %s", name, got, typ)
		}
	}
}

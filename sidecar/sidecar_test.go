package sidecar

import (
	"flag"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/kubevirt-imds/kubevirt-imds/api/payload"
	"github.com/kubevirt-imds/kubevirt-imds/sidecar/network"
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
	reg := prometheus.NewRegistry()
	m := newMetrics(reg)
	m.arpPackets.WithLabelValues("answered").Inc()
	srv := httptest.NewServer(adminHandler(r, reg))
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
	if _, body := get("/metrics"); !strings.Contains(body, `kubevirt_imds_sidecar_arp_packets_total{reason="answered"} 1`) {
		t.Errorf("/metrics lacks the ARP counter:\n%s", body)
	}
}

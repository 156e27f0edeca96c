package main

import (
	"context"
	"encoding/json"
	"net"
	"net/http"
	"path/filepath"
	"testing"
	"time"

	"github.com/go-logr/logr"

	"github.com/kubevirt-imds/kubevirt-imds/sidecar/server"
	"github.com/kubevirt-imds/kubevirt-imds/sidecar/store"
	"github.com/kubevirt-imds/kubevirt-imds/sidecar/store/storetest"
)

func TestCheckHost(t *testing.T) {
	for host, ok := range map[string]bool{
		"127.0.0.1": true, "localhost": true, "::1": true, "169.254.169.254": true,
		"10.0.2.2": true, "fd00::1": true, "8.8.8.8": false, "example.com": false, "2001:4860::1": false,
	} {
		if err := checkHost(host); (err == nil) != ok {
			t.Errorf("checkHost(%q) = %v", host, err)
		}
	}
	if err := checkURL("https://127.0.0.1/"); err == nil {
		t.Error("https accepted")
	}
}

// TestSidecarAgainstReference serves a payload with the real server on
// loopback and measures it next to the reference handler, both modes. It
// checks that every request succeeded; -v prints the numbers.
func TestSidecarAgainstReference(t *testing.T) {
	dir, err := storetest.NewDir(filepath.Join(t.TempDir(), "payload"))
	if err != nil {
		t.Fatal(err)
	}
	if err := dir.WriteDocument(storetest.Document()); err != nil {
		t.Fatal(err)
	}
	st := store.New(store.Options{PayloadDir: dir.Path}, logr.Discard())
	if _, err := st.Load(); err != nil {
		t.Fatal(err)
	}
	// The point is throughput, not the guest rate limit.
	srv, err := server.New(server.Config{Store: st, RateLimit: 1e9, Burst: 1e9, Log: logr.Discard()})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() { _ = srv.Serve(ctx, ln) }()

	refURL, shutdown, err := startReference("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer shutdown()

	const n, c = 2000, 4
	var results []Result
	for _, u := range []string{"http://" + ln.Addr().String() + "/latest/meta-data/instance-id", refURL + "/latest/meta-data/instance-id"} {
		for _, mode := range []string{"keepalive", "newconn"} {
			// The sidecar answers only requests addressed to the metadata
			// address, as a guest's are.
			r := measureURL(context.Background(), u, mode, http.Header{"Host": {"169.254.169.254"}}, n, c, time.Minute, 5*time.Second)
			if r.Requests != n || r.Errors != 0 || r.Status["200"] != n {
				t.Fatalf("%s %s: %+v", u, mode, r)
			}
			results = append(results, r)
		}
	}
	out, _ := json.MarshalIndent(results, "", "  ")
	t.Logf("%s", out)
}

// Command libfloor is the floor BenchmarkSidecarLoad measures the sidecar's
// memory against besides the bare net/http server: a net/http server that
// links the maintained libraries the per-VM sidecar is built from and has
// each do the least of its job once — encoding/json reads the payload
// document (api/payload), fsnotify watches its directory, go.yaml.in/yaml/v2
// renders meta-data, mdlayher/netlink lists the links, VictoriaMetrics counts
// requests, logr over log/slog logs — then answers every path with the YAML,
// until SIGTERM or SIGINT. What the sidecar holds above it is its own code
// and state.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"log"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	vmetrics "github.com/VictoriaMetrics/metrics"
	"github.com/fsnotify/fsnotify"
	"github.com/go-logr/logr"
	"github.com/mdlayher/netlink"
	"go.yaml.in/yaml/v2"
	"golang.org/x/sys/unix"

	"github.com/kubevirt-imds/kubevirt-imds/api/payload"
)

func main() {
	addr := flag.String("listen", "127.0.0.1:8080", "address to serve on")
	payloadDir := flag.String("payload-dir", "", "directory holding the payload document")
	flag.Parse()
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	logger := logr.FromSlogHandler(slog.NewJSONHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelError}))

	raw, err := os.ReadFile(filepath.Join(*payloadDir, payload.SecretKey))
	if err != nil {
		log.Fatal(err)
	}
	var doc payload.Document
	if err := json.Unmarshal(raw, &doc); err != nil {
		log.Fatal(err)
	}
	body, err := yaml.Marshal(map[string]any{"instance-id": doc.Instance.ID, "local-hostname": doc.Instance.Hostname,
		"public-keys": doc.Instance.SSHAuthorizedKeys})
	if err != nil {
		log.Fatal(err)
	}
	watcher, err := fsnotify.NewWatcher()
	if err != nil {
		log.Fatal(err)
	}
	defer watcher.Close()
	if err := watcher.Add(*payloadDir); err != nil {
		log.Fatal(err)
	}
	go func() {
		for range watcher.Events {
		}
	}()
	conn, err := netlink.Dial(unix.NETLINK_ROUTE, nil)
	if err != nil {
		log.Fatal(err)
	}
	links, err := conn.Execute(netlink.Message{Header: netlink.Header{Type: unix.RTM_GETLINK, Flags: netlink.Request | netlink.Dump},
		Data: make([]byte, unix.SizeofIfInfomsg)})
	conn.Close()
	if err != nil {
		log.Fatal(err)
	}
	logger.Info("started", "links", len(links))

	set := vmetrics.NewSet()
	requests := set.NewCounter("requests_total")
	mux := http.NewServeMux()
	mux.HandleFunc("/metrics", func(w http.ResponseWriter, _ *http.Request) { set.WritePrometheus(w) })
	mux.HandleFunc("/", func(w http.ResponseWriter, _ *http.Request) {
		requests.Inc()
		w.Header().Set("Content-Type", "application/yaml")
		_, _ = w.Write(body)
	})
	ln, err := net.Listen("tcp", *addr)
	if err != nil {
		log.Fatal(err)
	}
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go func() {
		<-ctx.Done()
		_ = srv.Close()
	}()
	if err := srv.Serve(ln); err != http.ErrServerClosed {
		log.Fatal(err)
	}
}

package main

import (
	"context"
	"crypto/tls"
	"errors"
	"flag"
	"fmt"
	"os/signal"
	"syscall"

	"k8s.io/client-go/rest"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/metrics"
	"sigs.k8s.io/controller-runtime/pkg/metrics/filters"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	"github.com/kubevirt-imds/kubevirt-imds/sidecar/jsonlog"
	"github.com/kubevirt-imds/kubevirt-imds/sidecar/nodeagent"
)

// runNodeAgent wires the node agent of network-setup mode "node".
func runNodeAgent(args []string) error {
	fs := flag.NewFlagSet("node-agent", flag.ExitOnError)
	a := nodeagent.Agent{}
	fs.StringVar(&a.Proc, "proc", "/proc", "the host's /proc (run with hostPID)")
	fs.StringVar(&a.Executable, "sidecar-executable", "", "serve only sidecars whose executable has this path in their own mount namespace (default: any)")
	fs.DurationVar(&a.ScanInterval, "scan-interval", nodeagent.DefaultScanInterval, "how often to look for new sidecars")
	metricsAddr := fs.String("metrics-bind-address", "", "HTTPS address (e.g. :9641) where Prometheus scrapes the agent's and every sidecar's metrics on this node, each scrape authenticated and authorised by the API server (empty: off)")
	logLevel := fs.String("log-level", "info", jsonlog.LevelHelp)
	if err := fs.Parse(args); err != nil {
		return err
	}
	var err error
	if a.Log, err = jsonlog.New(*logLevel); err != nil {
		return err
	}
	ctrl.SetLogger(a.Log)
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	if *metricsAddr == "" {
		return a.Run(ctx)
	}
	cfg, err := ctrl.GetConfig()
	if err != nil {
		return fmt.Errorf("loading the in-cluster configuration (to authenticate metrics scrapes; --metrics-bind-address= turns them off): %w", err)
	}
	srv, err := nodeAgentMetricsServer(*metricsAddr, cfg, &a)
	if err != nil {
		return err
	}
	served := make(chan error, 1)
	go func() { served <- srv.Start(ctx) }()
	runErr := a.Run(ctx)
	stop()
	return errors.Join(runErr, <-served)
}

// nodeAgentMetricsServer serves a's metrics (its own and its sidecars') on
// addr over HTTPS, as the manager serves its own: every scrape is checked
// with a TokenReview and a SubjectAccessReview (get on /metrics), so that
// a guest, which can reach the agent's Pod over the cluster network like any
// workload, learns nothing about the node's VMs.
func nodeAgentMetricsServer(addr string, cfg *rest.Config, a *nodeagent.Agent) (metricsserver.Server, error) {
	// The server serves controller-runtime's global registry, where the
	// manager's collectors, linked into the same binary, registered
	// themselves at start: the agent serves a registry of its own instead,
	// so that no node reports the manager's (idle) series.
	metrics.Registry = a.Registry()
	httpClient, err := rest.HTTPClientFor(cfg)
	if err != nil {
		return nil, err
	}
	return metricsserver.NewServer(metricsserver.Options{
		BindAddress:    addr,
		SecureServing:  true,
		FilterProvider: filters.WithAuthenticationAndAuthorization,
		// HTTP/2 off, as on the manager (CVE-2023-44487, CVE-2023-39325).
		TLSOpts: []func(*tls.Config){func(c *tls.Config) { c.NextProtos = []string{"http/1.1"} }},
	}, cfg, httpClient)
}

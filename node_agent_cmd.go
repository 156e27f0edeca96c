package main

import (
	"context"
	"flag"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"github.com/go-logr/logr"

	"github.com/kubevirt-imds/kubevirt-imds/sidecar/nodeagent"
)

// runNodeAgent wires the node agent of network-setup mode "node".
func runNodeAgent(args []string) error {
	fs := flag.NewFlagSet("node-agent", flag.ExitOnError)
	a := nodeagent.Agent{}
	fs.StringVar(&a.Proc, "proc", "/proc", "the host's /proc (run with hostPID)")
	fs.StringVar(&a.Executable, "sidecar-executable", "", "serve only sidecars whose executable has this path in their own mount namespace (default: any)")
	fs.DurationVar(&a.ScanInterval, "scan-interval", nodeagent.DefaultScanInterval, "how often to look for new sidecars")
	logLevel := fs.String("log-level", "info", "log level: debug, info, warn or error")
	if err := fs.Parse(args); err != nil {
		return err
	}
	var level slog.Level
	if err := level.UnmarshalText([]byte(*logLevel)); err != nil {
		return err
	}
	a.Log = logr.FromSlogHandler(slog.NewJSONHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	return a.Run(ctx)
}

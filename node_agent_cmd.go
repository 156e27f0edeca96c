package main

import (
	"context"
	"flag"
	"os/signal"
	"syscall"

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
	logLevel := fs.String("log-level", "info", jsonlog.LevelHelp)
	if err := fs.Parse(args); err != nil {
		return err
	}
	var err error
	if a.Log, err = jsonlog.New(*logLevel); err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	return a.Run(ctx)
}

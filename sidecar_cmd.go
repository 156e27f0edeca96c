package main

import (
	"context"
	"flag"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"github.com/go-logr/logr"

	"github.com/kubevirt-imds/kubevirt-imds/sidecar"
)

// runSidecar wires the sidecar. It deliberately uses log/slog rather than zap:
// the sidecar runs once per VM and its memory footprint matters.
func runSidecar(args []string) error {
	fs := flag.NewFlagSet("sidecar", flag.ExitOnError)
	var opts sidecar.Options
	opts.AddFlags(fs)
	logLevel := fs.String("log-level", "info", "log level: debug, info, warn or error")
	if err := fs.Parse(args); err != nil {
		return err
	}
	var level slog.Level
	if err := level.UnmarshalText([]byte(*logLevel)); err != nil {
		return err
	}
	log := logr.FromSlogHandler(slog.NewJSONHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
	release := func() {
		if err := releaseStartupPages(); err != nil {
			log.V(1).Info("could not release start-up pages", "error", err.Error())
		}
	}
	release()
	// Again once serving: network set-up touches code
	// the steady state never runs again.
	opts.OnServing = release

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	return sidecar.Run(ctx, opts, log)
}

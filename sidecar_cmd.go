package main

import (
	"context"
	"flag"
	"log/slog"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/go-logr/logr"

	"github.com/kubevirt-imds/kubevirt-imds/sidecar"
)

// defaultTrimInterval is how often the sidecar releases the executable's
// resident pages while it runs.
const defaultTrimInterval = 30 * time.Second

// runSidecar wires the sidecar. It deliberately uses log/slog rather than zap:
// the sidecar runs once per VM and its memory footprint matters.
func runSidecar(args []string) error {
	fs := flag.NewFlagSet("sidecar", flag.ExitOnError)
	var opts sidecar.Options
	opts.AddFlags(fs)
	logLevel := fs.String("log-level", "info", "log level: debug, info, warn or error")
	trimInterval := fs.Duration("trim-interval", defaultTrimInterval, "how often to release the executable's resident pages while serving (0 disables)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	var level slog.Level
	if err := level.UnmarshalText([]byte(*logLevel)); err != nil {
		return err
	}
	log := logr.FromSlogHandler(slog.NewJSONHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
	release := func() {
		if err := releaseExecutablePages(); err != nil {
			log.V(1).Info("could not release executable pages", "error", err.Error())
		}
	}
	release()

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	// Again once serving, as network set-up touches code the steady state
	// never runs again; then periodically, as the Go runtime's collector and
	// scavenger touch the executable again while the sidecar idles.
	opts.OnServing = func() {
		release()
		if *trimInterval > 0 {
			go trimPeriodically(ctx, *trimInterval, release)
		}
	}
	return sidecar.Run(ctx, opts, log)
}

// trimPeriodically calls release every interval until ctx ends. Pages the
// serving path needs fault back in from the page cache (minor faults, a few
// hundred per interval at most), a negligible cost next to keeping every VM's
// sidecar some 10 MiB larger for its whole life.
func trimPeriodically(ctx context.Context, interval time.Duration, release func()) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			release()
		}
	}
}

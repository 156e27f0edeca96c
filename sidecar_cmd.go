package main

import (
	"context"
	"flag"
	"os/signal"
	"syscall"
	"time"

	"github.com/kubevirt-imds/kubevirt-imds/sidecar"
)

// defaultTrimInterval is how often the sidecar releases the executable's
// resident pages while it runs.
const defaultTrimInterval = 30 * time.Second

// runSidecar wires the sidecar.
func runSidecar(args []string) error {
	fs := flag.NewFlagSet("sidecar", flag.ExitOnError)
	var opts sidecar.Options
	opts.AddFlags(fs)
	logLevel := fs.String("log-level", "info", logLevelHelp)
	trimInterval := fs.Duration("trim-interval", defaultTrimInterval, "how often to release the executable's resident pages while serving (0 disables)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	log, err := jsonLogger(*logLevel)
	if err != nil {
		return err
	}
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

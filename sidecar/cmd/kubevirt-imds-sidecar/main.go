// Command kubevirt-imds-sidecar is the metadata service the webhook injects
// into every selected virt-launcher Pod (`serve`, which checks its own
// liveness), and the exec liveness probe of Pods injected by earlier
// releases (`probe`). It is a binary of its own, beside the operator's in the same
// image, because one runs per VM: it links the sidecar packages and nothing
// of the operator (no Kubernetes client, no scheme), which keeps its resident
// memory near a bare HTTP server's.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/kubevirt-imds/kubevirt-imds/sidecar"
	"github.com/kubevirt-imds/kubevirt-imds/sidecar/jsonlog"
)

func main() {
	if len(os.Args) < 2 {
		usage()
		os.Exit(2)
	}
	var err error
	switch os.Args[1] {
	case "serve":
		err = runServe(os.Args[2:])
	case "probe":
		err = runProbe(os.Args[2:])
	case "-h", "--help", "help":
		usage()
		return
	default:
		fmt.Fprintf(os.Stderr, "kubevirt-imds-sidecar: unknown subcommand %q\n", os.Args[1])
		usage()
		os.Exit(2)
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "kubevirt-imds-sidecar %s: %v\n", os.Args[1], err)
		os.Exit(1)
	}
}

func usage() {
	fmt.Fprint(os.Stderr, `usage: kubevirt-imds-sidecar <subcommand> [flags]

subcommands:
  serve   run the metadata service inside a virt-launcher Pod
  probe   GET a loopback URL and exit 0 on 200 (the sidecar's exec probe)
`)
}

// runServe wires the metadata service.
func runServe(args []string) error {
	fs := flag.NewFlagSet("serve", flag.ExitOnError)
	var opts sidecar.Options
	opts.AddFlags(fs)
	logLevel := fs.String("log-level", "info", jsonlog.LevelHelp)
	if err := fs.Parse(args); err != nil {
		return err
	}
	log, err := jsonlog.New(*logLevel)
	if err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	return sidecar.Run(ctx, opts, log)
}

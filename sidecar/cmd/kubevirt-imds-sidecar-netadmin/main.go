// Command kubevirt-imds-sidecar-netadmin is the metadata service of
// network-setup mode "sidecar", where the sidecar plumbs its own Pod with
// CAP_NET_ADMIN and CAP_NET_RAW (`serve`), and the exec liveness probe of
// Pods injected by earlier releases (`probe`). The webhook always injects
// /kubevirt-imds-sidecar, which serves mode "node" itself and runs this
// binary in its place for everything else: the plumbing (netlink, nftables,
// the ARP responder's packet socket) and the HTTP client live only here, so
// the per-VM process of the default mode does not carry them. Both binaries
// link nothing of the operator.
package main

import (
	"context"
	"fmt"
	"os"

	"github.com/go-logr/logr"

	"github.com/kubevirt-imds/kubevirt-imds/sidecar"
	"github.com/kubevirt-imds/kubevirt-imds/sidecar/arp"
	"github.com/kubevirt-imds/kubevirt-imds/sidecar/network"
	"github.com/kubevirt-imds/kubevirt-imds/sidecar/plumbing"
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
		fmt.Fprintf(os.Stderr, "kubevirt-imds-sidecar-netadmin: unknown subcommand %q\n", os.Args[1])
		usage()
		os.Exit(2)
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "kubevirt-imds-sidecar-netadmin %s: %v\n", os.Args[1], err)
		os.Exit(1)
	}
}

func usage() {
	fmt.Fprint(os.Stderr, `usage: kubevirt-imds-sidecar-netadmin <subcommand> [flags]

subcommands:
  serve   run the metadata service inside a virt-launcher Pod
  probe   GET a loopback URL and exit 0 on 200 (the sidecar's exec probe)
`)
}

// runServe wires the metadata service, plumbing the Pod in mode "sidecar".
func runServe(args []string) error {
	opts, logLevel, err := sidecar.ParseServe(args)
	if err != nil {
		return err
	}
	return sidecar.Serve(opts, logLevel, plumb)
}

// plumb is the sidecar's Plumber: the plumbing package in this process's
// own network namespace.
func plumb(in network.Inputs, log logr.Logger, onStatus func(network.Status), arpPacket func(string)) interface {
	Run(ctx context.Context) error
} {
	return &plumbing.Plumber{Inputs: in, Log: log, OnStatus: onStatus, ObserveARP: func(r arp.Reason) { arpPacket(r.String()) }}
}

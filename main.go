// Command kubevirt-imds is the kubevirt-imds operator (`manager`), the
// metadata service sidecar injected into virt-launcher Pods (`sidecar`), the
// node agent that plumbs unprivileged sidecars' network (`node-agent`) and
// the sidecar's exec probe (`probe`).
package main

import (
	"fmt"
	"os"
)

func main() {
	if len(os.Args) < 2 {
		usage()
		os.Exit(2)
	}
	var err error
	switch os.Args[1] {
	case "manager":
		err = runManager(os.Args[2:])
	case "sidecar":
		err = runSidecar(os.Args[2:])
	case "node-agent":
		err = runNodeAgent(os.Args[2:])
	case "probe":
		err = runProbe(os.Args[2:])
	case "-h", "--help", "help":
		usage()
		return
	default:
		fmt.Fprintf(os.Stderr, "kubevirt-imds: unknown subcommand %q\n", os.Args[1])
		usage()
		os.Exit(2)
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "kubevirt-imds %s: %v\n", os.Args[1], err)
		os.Exit(1)
	}
}

func usage() {
	fmt.Fprint(os.Stderr, `usage: kubevirt-imds <subcommand> [flags]

subcommands:
  manager     run the operator: controllers and webhooks
  sidecar     run the metadata service inside a virt-launcher Pod
  node-agent  plumb the network of unprivileged sidecars on this node (a DaemonSet)
  probe       GET a URL and exit 0 on 200 (the sidecar's exec probe)
`)
}

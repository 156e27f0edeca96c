// Command kubevirt-imds is the kubevirt-imds operator (`manager`), the
// node agent that plumbs unprivileged sidecars' network (`node-agent`) and,
// invoked as kubectl-imds (a symlink or `make kubectl-plugin`), the kubectl
// plugin that shows what a VM is served (`kubectl imds show`). The
// sidecar injected into virt-launcher Pods is a binary of its own,
// sidecar/cmd/kubevirt-imds-sidecar (with, for network-setup mode "sidecar",
// sidecar/cmd/kubevirt-imds-sidecar-netadmin), shipped in the same image.
package main

import (
	"fmt"
	"os"
	"path/filepath"
)

func main() {
	if filepath.Base(os.Args[0]) == kubectlPluginName {
		os.Exit(runKubectlPlugin(os.Args[1:], os.Stdout, os.Stderr))
	}
	if len(os.Args) < 2 {
		usage()
		os.Exit(2)
	}
	var err error
	switch os.Args[1] {
	case "manager":
		err = runManager(os.Args[2:])
	case "node-agent":
		err = runNodeAgent(os.Args[2:])
	case kubectlPluginName:
		os.Exit(runKubectlPlugin(os.Args[2:], os.Stdout, os.Stderr))
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
  node-agent  plumb the network of unprivileged sidecars on this node (a DaemonSet)
  kubectl-imds show <vm>
              the kubectl plugin (also as a binary or symlink named kubectl-imds)

The per-VM metadata service is /kubevirt-imds-sidecar, a binary of its own.
`)
}

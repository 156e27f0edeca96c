// Command kubevirt-imds-sidecar is the metadata service the webhook injects
// into every selected virt-launcher Pod, one per VM. It serves
// network-setup mode "node" itself — the default, where the node agent
// plumbs the Pod and this process needs no capability — and links only what
// that takes: no plumbing, no HTTP client, nothing of the operator, which
// keeps its resident memory near a bare HTTP server's. Everything else (mode
// "sidecar", and the `probe` of Pods injected by earlier releases) is
// kubevirt-imds-sidecar-netadmin's, from the same directory, which this
// program executes in its own place: same process, same arguments, so Pod
// specs need not know which of the two serves them.
package main

import (
	"fmt"
	"os"
	"path/filepath"
	"syscall"

	"github.com/kubevirt-imds/kubevirt-imds/sidecar"
)

func main() {
	if len(os.Args) > 1 && os.Args[1] == "serve" {
		if served, err := serveNodeMode(os.Args[2:]); served {
			if err != nil {
				fmt.Fprintf(os.Stderr, "kubevirt-imds-sidecar serve: %v\n", err)
				os.Exit(1)
			}
			return
		}
	}
	err := execNetAdmin()
	fmt.Fprintf(os.Stderr, "kubevirt-imds-sidecar: %v\n", err)
	os.Exit(1)
}

// serveNodeMode runs `serve` when its flags ask for network-setup mode
// "node"; served is false for any other mode.
func serveNodeMode(args []string) (served bool, err error) {
	opts, logLevel, err := sidecar.ParseServe(args)
	if err != nil {
		return true, err
	}
	if opts.NetworkSetup != sidecar.NetworkSetupNode {
		return false, nil
	}
	return true, sidecar.Serve(opts, logLevel, nil)
}

// execNetAdmin replaces this process with kubevirt-imds-sidecar-netadmin,
// beside this binary, with the same arguments and environment; it returns
// only on failure.
func execNetAdmin() error {
	self, err := os.Executable()
	if err != nil {
		return fmt.Errorf("finding %s: %w", sidecar.NetAdminBinary, err)
	}
	path := filepath.Join(filepath.Dir(self), sidecar.NetAdminBinary)
	if err := syscall.Exec(path, os.Args, os.Environ()); err != nil {
		return fmt.Errorf("running %s for %q: %w", path, os.Args[1:], err)
	}
	return nil
}

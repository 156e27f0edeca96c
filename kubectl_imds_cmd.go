package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"time"

	"github.com/spf13/pflag"
	"k8s.io/client-go/tools/clientcmd"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/kubevirt-imds/kubevirt-imds/controllers"
	"github.com/kubevirt-imds/kubevirt-imds/controllers/explain"
)

// kubectlPluginName is the name kubectl finds the plugin by on PATH
// (`kubectl imds …` runs kubectl-imds); the operator binary answers to it
// when invoked under that name, e.g. through a symlink.
const kubectlPluginName = "kubectl-imds"

// exitNotServed is the exit status of `show` for a VM whose guest is not
// served, so that scripts can tell it from a failure (1) and from a usage
// error (2).
const exitNotServed = 3

// errNotServed ends `show` with exitNotServed once the report is printed.
var errNotServed = errors.New("not served")

// kubectlTimeout bounds the plugin's API reads.
const kubectlTimeout = 30 * time.Second

func kubectlUsage(w io.Writer) {
	fmt.Fprint(w, `usage: kubectl imds show <vm> [--dialect nocloud|openstack|ec2|v1] [--path PATH] [-n NAMESPACE]

Shows what the guest of a running VM is served at 169.254.169.254, and by which
MetadataService, as its sidecar serves it (rendered from the payload Secret by
the sidecar's own code; tokens left out), or explains why the VM is not served.
The default dialect is the one the service's guestDiscovery points the guest at.

Exit status: 0 served, 3 not served (the reasons are printed), 1 error, 2 usage.

flags:
`)
}

// runKubectlPlugin is `kubectl imds`.
func runKubectlPlugin(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		kubectlUsage(stderr)
		if len(args) == 0 {
			return 2
		}
		return 0
	}
	if args[0] != "show" {
		fmt.Fprintf(stderr, "kubectl imds: unknown command %q\n", args[0])
		kubectlUsage(stderr)
		return 2
	}
	err := runShow(args[1:], stdout, stderr)
	switch {
	case err == nil:
		return 0
	case errors.Is(err, errNotServed):
		return exitNotServed
	case errors.Is(err, pflag.ErrHelp):
		return 0
	case errors.Is(err, errUsage):
		fmt.Fprintf(stderr, "kubectl imds show: %v\n", err)
		return 2
	}
	fmt.Fprintf(stderr, "kubectl imds show: %v\n", err)
	return 1
}

var errUsage = errors.New("usage")

func runShow(args []string, stdout, stderr io.Writer) error {
	fs := pflag.NewFlagSet("kubectl imds show", pflag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() { kubectlUsage(stderr); fs.PrintDefaults() }
	dialect := fs.String("dialect", "", "nocloud, openstack, ec2 or v1 (default: the service's guestDiscovery: nocloud, openstack, or v1 for None)")
	onlyPath := fs.String("path", "", "print only this file's body, byte for byte (e.g. /nocloud/user-data)")
	overrides := &clientcmd.ConfigOverrides{}
	rules := clientcmd.NewDefaultClientConfigLoadingRules()
	fs.StringVar(&rules.ExplicitPath, "kubeconfig", "", "the kubeconfig file (default: $KUBECONFIG, then ~/.kube/config)")
	fs.StringVar(&overrides.CurrentContext, "context", "", "the kubeconfig context")
	fs.StringVarP(&overrides.Context.Namespace, "namespace", "n", "", "the VM's namespace (default: the context's)")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, pflag.ErrHelp) {
			return err
		}
		return fmt.Errorf("%w: %w", errUsage, err)
	}
	if fs.NArg() != 1 {
		return fmt.Errorf("%w: want exactly one VM name, got %d arguments", errUsage, fs.NArg())
	}
	cc := clientcmd.NewNonInteractiveDeferredLoadingClientConfig(rules, overrides)
	namespace, _, err := cc.Namespace()
	if err != nil {
		return fmt.Errorf("reading the namespace from the kubeconfig: %w", err)
	}
	cfg, err := cc.ClientConfig()
	if err != nil {
		return fmt.Errorf("reading the kubeconfig: %w", err)
	}
	scheme, err := controllers.NewScheme()
	if err != nil {
		return err
	}
	c, err := client.New(cfg, client.Options{Scheme: scheme})
	if err != nil {
		return fmt.Errorf("connecting to the API server: %w", err)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	ctx, cancel := context.WithTimeout(ctx, kubectlTimeout)
	defer cancel()
	return show(ctx, c, namespace, fs.Arg(0), explain.Dialect(*dialect), *onlyPath, stdout)
}

// show prints what explain.Explain found, or with onlyPath that one file's
// body alone.
func show(ctx context.Context, c client.Reader, namespace, name string, dialect explain.Dialect, onlyPath string, stdout io.Writer) error {
	rep, err := explain.Explain(ctx, c, namespace, name, dialect)
	if err != nil {
		return err
	}
	if onlyPath != "" && len(rep.Files) > 0 {
		for _, f := range rep.Files {
			if f.Path == onlyPath {
				_, err := stdout.Write(f.Body)
				return err
			}
		}
		return fmt.Errorf("--path %s: dialect %s has no such file (see `kubectl imds show %s --dialect %s`)", onlyPath, rep.Dialect, name, rep.Dialect)
	}
	if err := rep.Write(stdout); err != nil {
		return err
	}
	if !rep.Served() {
		return errNotServed
	}
	return nil
}

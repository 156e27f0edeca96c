//go:build linux

// Command demo runs kubevirt-imds end to end on this machine, with no
// cluster: `make demo`. It starts a real control plane with KubeVirt's CRDs,
// runs the manager with its webhooks, applies config/samples, creates the
// VM's virt-launcher Pod as virt-controller would, plays kubelet for it
// (network namespace in KubeVirt's masquerade topology, the payload Secret
// and projected tokens, the injected sidecar run from the Pod's spec) and
// boots a guest that finds the metadata service by itself: real cloud-init
// in a namespace, or with DEMO_GUEST=vm a real VM under qemu. It then shows
// what the guest got, validates the guest's token with the API server,
// edits the MetadataService while the guest long-polls, and cleans up.
//
// It needs root (network and mount namespaces) and KUBEBUILDER_ASSETS (the
// Makefile sets it). Logs go to tmp/demo/<time>/.
package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	"github.com/go-logr/logr"
	"github.com/go-logr/logr/funcr"
	ctrl "sigs.k8s.io/controller-runtime"

	"github.com/kubevirt-imds/kubevirt-imds/test/controlplane"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	os.Exit(run(ctx))
}

func run(ctx context.Context) int {
	kind := os.Getenv("DEMO_GUEST")
	if kind == "" {
		kind = "namespace"
	}
	if kind != "namespace" && kind != "vm" {
		fmt.Fprintf(os.Stderr, "DEMO_GUEST=%q: want namespace (the default) or vm\n", kind)
		return 2
	}
	if os.Geteuid() != 0 {
		fmt.Fprintln(os.Stderr, "make demo needs root: it builds network and mount namespaces and runs the node agent in the Pod's network namespace")
		return 2
	}
	if os.Getenv("KUBEBUILDER_ASSETS") == "" {
		fmt.Fprintln(os.Stderr, controlplane.ErrNoAssets)
		return 2
	}
	dir := filepath.Join(controlplane.RepoRoot(), "tmp", "demo", time.Now().UTC().Format("20060102-150405"))
	if err := os.MkdirAll(dir, 0o755); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	logFile, err := os.Create(filepath.Join(dir, "demo.log"))
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer logFile.Close()
	log := funcr.New(func(prefix, args string) {
		fmt.Fprintf(logFile, "%s %s %s\n", time.Now().UTC().Format(time.RFC3339Nano), prefix, args)
	}, funcr.Options{})
	// envtest and the clients log through controller-runtime's logger.
	ctrl.SetLogger(log)

	d := &demo{ctx: ctx, dir: dir, guestKind: kind, log: log, logFile: logFile}
	d.tb = &stepTB{log: log}
	return d.run()
}

// demo is one run of the demo.
type demo struct {
	ctx       context.Context
	dir       string
	guestKind string
	log       logr.Logger
	logFile   *os.File
	tb        *stepTB
	steps     int
	start     time.Time
}

// stepFailed is how a step's failure unwinds to the step runner.
type stepFailed struct{ msg string }

// step runs one numbered step, printing its progress; a failure names the
// step and where the logs are.
func (d *demo) step(name string, f func()) (ok bool) {
	d.steps++
	n := d.steps
	fmt.Printf("\n==> [%d/%d] %s\n", n, totalSteps, name)
	d.log.Info("step", "number", n, "name", name)
	start := time.Now()
	defer func() {
		r := recover()
		if r == nil {
			fmt.Printf("    ok (%.1fs)\n", time.Since(start).Seconds())
			return
		}
		sf, isStep := r.(stepFailed)
		if !isStep {
			panic(r)
		}
		ok = false
		fmt.Printf("\nFAILED at step %d (%s): %s\n", n, name, sf.msg)
		if errors.Is(d.ctx.Err(), context.Canceled) {
			fmt.Println("(interrupted)")
		}
		fmt.Printf("Logs: %s (demo.log: the harness, kubelet and dnsmasq; manager.log; *.imds-sidecar.log)\n", d.dir)
	}()
	f()
	return true
}

// stepTB adapts the harness's test-style reporting to the demo's steps:
// Fatalf ends the current step, Cleanup runs when the demo ends.
type stepTB struct {
	log      logr.Logger
	cleanups []func()
}

func (t *stepTB) Helper()          {}
func (t *stepTB) Cleanup(f func()) { t.cleanups = append(t.cleanups, f) }
func (t *stepTB) Fatalf(format string, args ...any) {
	panic(stepFailed{msg: fmt.Sprintf(format, args...)})
}
func (t *stepTB) Logf(format string, args ...any) {
	t.log.Info(fmt.Sprintf(format, args...))
}

// pending says whether cleanups are registered.
func (t *stepTB) pending() bool { return len(t.cleanups) > 0 }

// cleanup runs the registered cleanups, newest first.
func (t *stepTB) cleanup() {
	for i := len(t.cleanups) - 1; i >= 0; i-- {
		t.cleanups[i]()
	}
	t.cleanups = nil
}

// fatal fails the current step when err is set.
func (d *demo) fatal(err error, what string) {
	if err != nil {
		d.tb.Fatalf("%s: %v", what, err)
	}
}

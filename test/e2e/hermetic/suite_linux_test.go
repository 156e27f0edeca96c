package hermetic_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"

	"github.com/kubevirt-imds/kubevirt-imds/test/controlplane"
	"github.com/kubevirt-imds/kubevirt-imds/test/e2e/singlenode"
	"github.com/kubevirt-imds/kubevirt-imds/test/guest"
	"github.com/kubevirt-imds/kubevirt-imds/test/podnet"
)

func TestHermetic(t *testing.T) {
	RegisterFailHandler(Fail)
	// Generous: the control plane, the manager, guests and qemu share two cores.
	SetDefaultEventuallyTimeout(2 * time.Minute)
	SetDefaultEventuallyPollingInterval(100 * time.Millisecond)
	RunSpecs(t, "Hermetic end-to-end: control plane, manager, kubelet stand-in, sidecar, real guests")
}

var (
	node   *singlenode.Node
	trixie guest.Root
)

var _ = BeforeSuite(func(ctx SpecContext) {
	if os.Geteuid() != 0 {
		controlplane.Unavailable("the end-to-end suite needs root: network and mount namespaces, and the node agent's entry into Pod namespaces")
	}
	if err := podnet.Available(); err != nil {
		controlplane.Unavailable(err.Error())
	}
	if os.Getenv("KUBEBUILDER_ASSETS") == "" {
		controlplane.Unavailable(controlplane.ErrNoAssets.Error())
	}
	var err error
	trixie, err = guest.EnsureRoot(ctx, guest.Trixie, GinkgoWriter)
	if errors.Is(err, guest.ErrNotRoot) {
		controlplane.Unavailable(err.Error())
	}
	Expect(err).NotTo(HaveOccurred())

	dir, err := os.MkdirTemp("", "imds-e2e-")
	Expect(err).NotTo(HaveOccurred())
	DeferCleanup(func() {
		if CurrentSpecReport().Failed() {
			GinkgoWriter.Printf("logs kept in %s\n", dir)
			return
		}
		Expect(os.RemoveAll(dir)).To(Succeed())
	})
	node = singlenode.Start(GinkgoT(), singlenode.Options{WorkDir: dir, Log: GinkgoLogr})
}, NodeTimeout(30*time.Minute))

var nsCounter atomic.Int64

// newNamespace creates a namespace for one spec.
func newNamespace(ctx context.Context) string {
	GinkgoHelper()
	ns := fmt.Sprintf("e2e-%d", nsCounter.Add(1))
	node.NewNamespace(GinkgoT(), ctx, ns)
	return ns
}

// samples is config/samples.
func samples() string { return filepath.Join(controlplane.RepoRoot(), "config", "samples") }

// dumpOnFailure prints the sidecar's and the manager's logs when the
// current spec fails.
func dumpOnFailure(l *singlenode.Launcher) {
	DeferCleanup(func() {
		if !CurrentSpecReport().Failed() {
			return
		}
		for _, f := range []string{l.SidecarLog(), node.ManagerLog()} {
			b, _ := os.ReadFile(f)
			GinkgoWriter.Printf("==> %s\n%s\n", f, b)
		}
	})
}

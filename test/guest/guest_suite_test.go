//go:build linux

package guest_test

import (
	"context"
	"os"
	"sync"
	"testing"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"

	"github.com/kubevirt-imds/kubevirt-imds/test/controlplane"
	"github.com/kubevirt-imds/kubevirt-imds/test/guest"
)

// roots caches the guest trees, built (or found in the cache) on first use so
// that a focused run builds only the generations it boots.
var roots = struct {
	sync.Mutex
	m map[guest.Generation]guest.Root
}{m: map[guest.Generation]guest.Root{}}

// rootFor returns the tree of gen; a cold build takes minutes.
func rootFor(ctx context.Context, gen guest.Generation) guest.Root {
	GinkgoHelper()
	roots.Lock()
	defer roots.Unlock()
	if r, ok := roots.m[gen]; ok {
		return r
	}
	start := time.Now()
	r, err := guest.EnsureRoot(ctx, gen, GinkgoWriter)
	Expect(err).NotTo(HaveOccurred())
	GinkgoWriter.Printf("guest tree %s: %s (%s) ready after %v\n", gen, r.Dir, r.CloudInit, time.Since(start).Round(time.Second))
	roots.m[gen] = r
	return r
}

func TestGuest(t *testing.T) {
	RegisterFailHandler(Fail)
	RunSpecs(t, "Tier-1 guests: real cloud-init in namespaces")
}

var _ = BeforeSuite(func(ctx SpecContext) {
	if os.Geteuid() != 0 {
		controlplane.Unavailable("tier-1 guests need root (overlay mounts, chroot, network namespaces): run `go test` as root")
	}
	ensureTool(ctx, "dnsmasq", "dnsmasq-base")
}, NodeTimeout(5*time.Minute))

// The sidecar binary the sidecar specs build goes with the suite.
var _ = AfterSuite(removeSidecarBinary)

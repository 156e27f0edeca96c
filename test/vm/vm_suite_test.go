//go:build linux

package vm_test

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"

	"github.com/kubevirt-imds/kubevirt-imds/test/vm"
)

func TestVM(t *testing.T) {
	RegisterFailHandler(Fail)
	RunSpecs(t, "Tier-2 guests: real VMs under qemu")
}

// requirements are what the suite needs on the machine: without them it
// skips, saying what is missing.
var requirements = map[string]string{
	"qemu-system-x86_64": "qemu-system-x86",
	"qemu-img":           "qemu-utils",
	"debootstrap":        "debootstrap",
	"mkfs.ext4":          "e2fsprogs",
	"dnsmasq":            "dnsmasq-base",
	"setpriv":            "util-linux",
	"ip":                 "iproute2",
}

var _ = BeforeSuite(func() {
	if os.Geteuid() != 0 {
		Skip("tier-2 guests need root (debootstrap, network namespaces, taps): run `go test` as root")
	}
	for cmd, pkg := range requirements {
		if _, err := exec.LookPath(cmd); err != nil {
			Skip(cmd + " is missing (Debian package " + pkg + "; hack/install-test-deps.sh installs it)")
		}
	}
})

// image is the VM image, built (or found in tmp/guest-vm/) on first use.
var image struct {
	sync.Mutex
	img *vm.Image
}

// imageFor returns the VM image; a cold build takes minutes.
func imageFor(ctx context.Context) vm.Image {
	GinkgoHelper()
	image.Lock()
	defer image.Unlock()
	if image.img == nil {
		start := time.Now()
		img, err := vm.EnsureImage(ctx, GinkgoWriter)
		Expect(err).NotTo(HaveOccurred())
		GinkgoWriter.Printf("VM image %s (%s, kernel %s, %s) ready after %v\n",
			filepath.Base(img.Dir), img.Suite, img.KernelVersion, img.CloudInit, time.Since(start).Round(time.Second))
		image.img = &img
	}
	return *image.img
}

// The sidecar binary the specs build goes with the suite.
var _ = AfterSuite(removeSidecarBinary)

//go:build linux

package guest

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"

	"github.com/kubevirt-imds/kubevirt-imds/test/controlplane"
)

// Generation names a guest root tree built by hack/guest-rootfs.sh. It decides
// how the harness brings networking up between cloud-init's stages.
type Generation string

const (
	// Bookworm is Debian 12 with cloud-init 22.4: it renders ENI, which ifupdown
	// and dhclient bring up. It stands for the older guests of a population.
	Bookworm Generation = "bookworm"
	// Trixie is Debian 13 with cloud-init 25.x: it renders netplan v2, which
	// systemd-networkd applies, as current Ubuntu cloud images do.
	Trixie Generation = "trixie"
)

// Generations lists every generation the harness can run.
var Generations = []Generation{Bookworm, Trixie}

// Root is a built, read-only guest root tree. Every Run overlays it afresh.
type Root struct {
	Generation Generation
	// Dir is the tree's path in the cache.
	Dir string
	// CloudInit is the installed cloud-init package and version, e.g.
	// "cloud-init 22.4.2-1+deb12u4".
	CloudInit string
}

// markerFile is written last by hack/guest-rootfs.sh: a tree without it is incomplete.
const markerFile = ".kubevirt-imds-guest"

// EnsureRoot returns the guest root tree for gen, building it first (about a
// minute or more when nothing is cached) with hack/guest-rootfs.sh. The script's
// progress goes to progress, which may be nil. Needs root.
func EnsureRoot(ctx context.Context, gen Generation, progress io.Writer) (Root, error) {
	if !known(gen) {
		return Root{}, fmt.Errorf("guest: unknown generation %q", gen)
	}
	script := filepath.Join(controlplane.RepoRoot(), "hack", "guest-rootfs.sh")
	if progress == nil {
		progress = io.Discard
	}
	var out bytes.Buffer
	cmd := exec.CommandContext(ctx, "bash", script, string(gen))
	cmd.Stdout = &out
	cmd.Stderr = progress
	if err := cmd.Run(); err != nil {
		return Root{}, fmt.Errorf("guest: %s %s: %w", script, gen, err)
	}
	return OpenRoot(gen, strings.TrimSpace(out.String()))
}

// OpenRoot returns the already built tree of generation gen at dir.
func OpenRoot(gen Generation, dir string) (Root, error) {
	if !known(gen) {
		return Root{}, fmt.Errorf("guest: unknown generation %q", gen)
	}
	marker, err := os.ReadFile(filepath.Join(dir, markerFile))
	if err != nil {
		return Root{}, fmt.Errorf("guest: %s is not a complete guest tree: %w", dir, err)
	}
	return Root{Generation: gen, Dir: dir, CloudInit: strings.TrimSpace(string(marker))}, nil
}

func known(gen Generation) bool {
	for _, g := range Generations {
		if g == gen {
			return true
		}
	}
	return false
}

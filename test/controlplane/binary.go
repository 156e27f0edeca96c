package controlplane

import (
	"context"
	"fmt"
	"os/exec"
	"path/filepath"
)

// The names of the image's binaries, as hack/docker-build-command.sh writes
// them and the Dockerfile copies them to /.
const (
	// OperatorBinary runs `manager` and `node-agent`.
	OperatorBinary = "kubevirt-imds"
	// SidecarBinary runs `serve`, one per VM: network-setup mode "node"
	// itself, anything else by running SidecarNetAdminBinary in its place.
	SidecarBinary = "kubevirt-imds-sidecar"
	// SidecarNetAdminBinary serves mode "sidecar" and runs `probe`.
	SidecarNetAdminBinary = "kubevirt-imds-sidecar-netadmin"
)

// Binaries are the paths of one build of the image's binaries.
type Binaries struct {
	// Sidecar runs SidecarNetAdminBinary from its own directory.
	Operator, Sidecar string
}

// BuildBinaries builds the repository's binaries into dir with
// hack/docker-build-command.sh, as the image's build stage does: every suite
// that runs them then runs the ones that ship, and they share one set of
// build-cache entries instead of compiling the module once per flag set.
func BuildBinaries(ctx context.Context, dir string) (Binaries, error) {
	root := RepoRoot()
	cmd := exec.CommandContext(ctx, filepath.Join(root, "hack", "docker-build-command.sh"), dir)
	cmd.Dir = root
	if out, err := cmd.CombinedOutput(); err != nil {
		return Binaries{}, fmt.Errorf("building kubevirt-imds: %w: %s", err, out)
	}
	return Binaries{Operator: filepath.Join(dir, OperatorBinary), Sidecar: filepath.Join(dir, SidecarBinary)}, nil
}

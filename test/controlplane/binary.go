package controlplane

import (
	"context"
	"fmt"
	"os/exec"
	"path/filepath"
)

// BuildBinary builds the repository's kubevirt-imds to path with
// hack/docker-build-command.sh, as the image's build stage does: every suite
// that runs the binary then runs the one that ships, and they share one set
// of build-cache entries instead of compiling the module once per flag set.
func BuildBinary(ctx context.Context, path string) error {
	root := RepoRoot()
	cmd := exec.CommandContext(ctx, filepath.Join(root, "hack", "docker-build-command.sh"), path)
	cmd.Dir = root
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("building kubevirt-imds: %w: %s", err, out)
	}
	return nil
}

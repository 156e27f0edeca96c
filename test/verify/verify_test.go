// Package verify checks that `make verify` catches generated files that are
// out of date with their sources.
package verify

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/kubevirt-imds/kubevirt-imds/test/controlplane"
)

// copyTrackedTree copies the files git tracks (as they are in the work tree)
// into a fresh git repository with one commit, like a clean clone.
func copyTrackedTree(t *testing.T, root string) string {
	t.Helper()
	out, err := exec.Command("git", "-C", root, "ls-files", "-z").Output()
	if err != nil {
		t.Skipf("not a git checkout: %v", err)
	}
	dst := t.TempDir()
	for _, f := range strings.Split(strings.TrimRight(string(out), "\x00"), "\x00") {
		data, err := os.ReadFile(filepath.Join(root, f))
		if os.IsNotExist(err) {
			continue // deleted in the work tree, not yet committed
		}
		if err != nil {
			t.Fatal(err)
		}
		info, err := os.Stat(filepath.Join(root, f))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.MkdirAll(filepath.Dir(filepath.Join(dst, f)), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dst, f), data, info.Mode().Perm()); err != nil {
			t.Fatal(err)
		}
	}
	for _, args := range [][]string{{"init", "-q"}, {"add", "-A"},
		{"-c", "user.name=t", "-c", "user.email=t@example.invalid", "commit", "-qm", "snapshot"}} {
		if out, err := exec.Command("git", append([]string{"-C", dst}, args...)...).CombinedOutput(); err != nil {
			t.Fatalf("git %v: %v\n%s", args, err, out)
		}
	}
	return dst
}

func makeVerify(t *testing.T, dir, localbin string) (string, error) {
	t.Helper()
	cmd := exec.Command("make", "--no-print-directory", "verify", "LOCALBIN="+localbin)
	cmd.Dir = dir
	out, err := cmd.CombinedOutput()
	return string(out), err
}

func TestVerifyCatchesStaleGeneratedFiles(t *testing.T) {
	if testing.Short() {
		t.Skip("runs controller-gen twice")
	}
	if _, err := exec.LookPath("make"); err != nil {
		controlplane.UnavailableT(t, "make is not installed")
	}
	root := controlplane.RepoRoot()
	localbin := filepath.Join(root, "tmp", "bin")
	dir := copyTrackedTree(t, root)

	if out, err := makeVerify(t, dir, localbin); err != nil {
		t.Fatalf("make verify fails on the tree as it is: %v\n%s", err, out)
	}

	types := filepath.Join(dir, "api", "v1alpha1", "metadataservice_types.go")
	src, err := os.ReadFile(types)
	if err != nil {
		t.Fatal(err)
	}
	stale := strings.Replace(string(src), "type MetadataServiceSpec struct {",
		"type MetadataServiceSpec struct {\n\t// Extra is a field the generated files do not know yet.\n\t// +optional\n\tExtra string `json:\"extra,omitempty\"`\n", 1)
	if err := os.WriteFile(types, []byte(stale), 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := makeVerify(t, dir, localbin)
	if err == nil {
		t.Fatalf("make verify passed with a new API field and stale CRD:\n%s", out)
	}
	for _, want := range []string{"generated files are stale", "config/crd/bases/imds.kubevirt.io_metadataservices.yaml"} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
}

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
	dir := controlplane.CopyTrackedTree(t, root)

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

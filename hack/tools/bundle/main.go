// Command bundle writes the OLM bundle (registry+v1) of kubevirt-imds:
// bundle/manifests, bundle/metadata and bundle.Dockerfile, from the output of
// `kubectl kustomize config/manifests`, which it runs itself.
//
//	go run . -root ../../..
//
// It is a module of its own so that github.com/operator-framework/api and its
// Kubernetes libraries stay out of the operator's go.mod.
package main

import (
	"flag"
	"fmt"
	"os"
	"path/filepath"
)

func main() {
	root := flag.String("root", "../../..", "the repository root")
	kubectl := flag.String("kubectl", "", "kubectl to run kustomize with (default: $KUBEBUILDER_ASSETS/kubectl, else hack/envtest-assets.sh's)")
	flag.Parse()
	if err := run(*root, *kubectl); err != nil {
		fmt.Fprintln(os.Stderr, "bundle:", err)
		os.Exit(1)
	}
}

func run(root, kubectl string) error {
	root, err := filepath.Abs(root)
	if err != nil {
		return err
	}
	files, err := generateFromRepo(root, kubectl)
	if err != nil {
		return err
	}
	return writeFiles(root, files)
}

// writeFiles replaces the generated files under root with files, removing
// generated files that are no longer produced (an object renamed in config/
// must not leave its old manifest behind).
func writeFiles(root string, files map[string][]byte) error {
	stale, err := existingFiles(root)
	if err != nil {
		return err
	}
	for _, f := range stale {
		if _, ok := files[f]; !ok {
			if err := os.Remove(filepath.Join(root, f)); err != nil {
				return err
			}
		}
	}
	for name, data := range files {
		path := filepath.Join(root, name)
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			return err
		}
		if err := os.WriteFile(path, data, 0o644); err != nil {
			return err
		}
	}
	return nil
}

// existingFiles lists the files under root that the generator owns: all of
// bundle/ and bundle.Dockerfile, as slash-separated relative paths.
func existingFiles(root string) ([]string, error) {
	var out []string
	err := filepath.WalkDir(filepath.Join(root, bundleDir), func(path string, d os.DirEntry, err error) error {
		if os.IsNotExist(err) {
			return filepath.SkipDir
		}
		if err != nil || d.IsDir() {
			return err
		}
		rel, err := filepath.Rel(root, path)
		if err != nil {
			return err
		}
		out = append(out, filepath.ToSlash(rel))
		return nil
	})
	if err != nil {
		return nil, err
	}
	if _, err := os.Stat(filepath.Join(root, dockerfileName)); err == nil {
		out = append(out, dockerfileName)
	}
	return out, nil
}

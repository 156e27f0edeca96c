package manifests_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/kubevirt-imds/kubevirt-imds/test/controlplane"
)

// source is one set of manifests a user applies.
type source struct {
	// name says where the objects come from, in failure messages.
	name string
	// render returns the YAML that is applied.
	render func() ([]byte, error)
}

// kustomization renders a kustomize directory as `kubectl apply -k` would.
func kustomization(dir string) source {
	return source{name: "kubectl kustomize " + dir, render: func() ([]byte, error) {
		cmd := exec.Command(kubectl, "kustomize", filepath.Join(controlplane.RepoRoot(), dir))
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		out, err := cmd.Output()
		if err != nil {
			return nil, fmt.Errorf("kubectl kustomize %s: %w\n%s", dir, err, stderr.String())
		}
		return out, nil
	}}
}

func file(rel string) source {
	return source{name: rel, render: func() ([]byte, error) {
		return os.ReadFile(filepath.Join(controlplane.RepoRoot(), rel))
	}}
}

// e2eTestdata are the YAML files of the cluster end-to-end suite, which may not
// exist yet.
func e2eTestdata() []source {
	root := controlplane.RepoRoot()
	dir := filepath.Join(root, "test", "e2e", "cluster", "testdata")
	var out []source
	err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		ext := filepath.Ext(path)
		// Kustomize's own files describe manifests rather than being some.
		if d.IsDir() || (ext != ".yaml" && ext != ".yml") || strings.HasPrefix(d.Name(), "kustomiz") {
			return nil
		}
		rel, err := filepath.Rel(root, path)
		if err != nil {
			return err
		}
		out = append(out, file(rel))
		return nil
	})
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		Fail(fmt.Sprintf("reading %s: %v", dir, err))
	}
	return out
}

// objectKey names an object in failure messages and matches it in the
// server's answer; namespace is empty for objects that name none.
type objectKey struct {
	group, kind, namespace, name string
}

func keyOf(u *unstructured.Unstructured) objectKey {
	gv, _ := schema.ParseGroupVersion(u.GetAPIVersion())
	return objectKey{group: gv.Group, kind: u.GetKind(), namespace: u.GetNamespace(), name: u.GetName()}
}

func (k objectKey) String() string {
	gk := k.kind
	if k.group != "" {
		gk += "." + k.group
	}
	if k.namespace == "" {
		return gk + " " + k.name
	}
	return gk + " " + k.namespace + "/" + k.name
}

// accepts reports whether the server's answer a is for the object k.
func (k objectKey) accepts(a objectKey) bool {
	return k.group == a.group && k.kind == a.kind && k.name == a.name &&
		(k.namespace == a.namespace || (k.namespace == "" && a.namespace == defaultNamespace))
}

// decode reads every object of a multi-document YAML stream.
func decode(data []byte) ([]*unstructured.Unstructured, error) {
	dec := utilyaml.NewYAMLOrJSONDecoder(bytes.NewReader(data), 4096)
	var objs []*unstructured.Unstructured
	for {
		u := &unstructured.Unstructured{}
		err := dec.Decode(&u.Object)
		if errors.Is(err, io.EOF) {
			return objs, nil
		}
		if err != nil {
			return nil, err
		}
		if len(u.Object) == 0 {
			continue // an empty document
		}
		if u.IsList() {
			if err := u.EachListItem(func(o runtime.Object) error {
				objs = append(objs, o.(*unstructured.Unstructured))
				return nil
			}); err != nil {
				return nil, err
			}
			continue
		}
		objs = append(objs, u)
	}
}

func anyKind(objs []*unstructured.Unstructured) bool {
	for _, o := range objs {
		if o.GetAPIVersion() != "" && o.GetKind() != "" {
			return true
		}
	}
	return false
}

// ensureNamespaces creates, for real, the namespaces the objects live in,
// with the labels the manifests give them (Pod Security levels), since a
// dry-run creates nothing for the objects after it to land in.
func ensureNamespaces(ctx context.Context, objs []*unstructured.Unstructured) {
	labels := map[string]map[string]string{defaultNamespace: nil}
	for _, o := range objs {
		if o.GetAPIVersion() == "v1" && o.GetKind() == "Namespace" {
			labels[o.GetName()] = o.GetLabels()
		} else if ns := o.GetNamespace(); ns != "" {
			if _, ok := labels[ns]; !ok {
				labels[ns] = nil
			}
		}
	}
	for name, l := range labels {
		ns := &corev1.Namespace{}
		err := k8sClient.Get(ctx, client.ObjectKey{Name: name}, ns)
		switch {
		case apierrors.IsNotFound(err):
			ns.Name, ns.Labels = name, l
			Expect(k8sClient.Create(ctx, ns)).To(Succeed(), "creating namespace %s", name)
		case err != nil:
			Expect(err).NotTo(HaveOccurred())
		default:
			if ns.Labels == nil {
				ns.Labels = map[string]string{}
			}
			for k, v := range l {
				ns.Labels[k] = v
			}
			Expect(k8sClient.Update(ctx, ns)).To(Succeed(), "labelling namespace %s", name)
		}
	}
}

// dryRunApply applies path as a user would, server-side, with a server-side
// dry-run, and returns the objects the server accepted and what kubectl said.
func dryRunApply(path string) (accepted []objectKey, stderr string, err error) {
	cmd := exec.Command(kubectl, "--kubeconfig", kubeconfig, "--context", kubeContext,
		"apply", "--server-side", "--dry-run=server", "--force-conflicts", "--field-manager=kubectl",
		"-f", path, "-o", "json")
	var errBuf bytes.Buffer
	cmd.Stderr = &errBuf
	out, runErr := cmd.Output()
	objs, decErr := decode(out)
	for _, o := range objs {
		accepted = append(accepted, keyOf(o))
	}
	return accepted, errBuf.String(), errors.Join(runErr, decErr)
}

// rejections applies each object alone and lists the ones the API server
// rejects, with its reasons; whole is what kubectl said about them all.
func rejections(objs []*unstructured.Unstructured, whole string) string {
	var out []string
	for _, o := range objs {
		data, err := json.Marshal(o.Object)
		Expect(err).NotTo(HaveOccurred())
		path := filepath.Join(GinkgoT().TempDir(), "object.json")
		Expect(os.WriteFile(path, data, 0o600)).To(Succeed())
		if _, stderr, err := dryRunApply(path); err != nil {
			out = append(out, fmt.Sprintf("- %s: %s", keyOf(o), strings.TrimSpace(stderr)))
		}
	}
	if len(out) == 0 {
		return whole
	}
	return strings.Join(out, "\n")
}

var _ = Describe("dist/install.yaml", func() {
	It("is config/default as kubectl renders it (`make build-installer`)", func() {
		want, err := kustomization("config/default").render()
		Expect(err).NotTo(HaveOccurred())
		got, err := file("dist/install.yaml").render()
		Expect(err).NotTo(HaveOccurred(), "run `make build-installer`")
		// The default image of config/manager is build-installer's default
		// IMG, so the two agree byte for byte.
		Expect(string(got)).To(Equal(string(want)), "dist/install.yaml is stale: run `make build-installer`")
	})
})

var _ = Describe("Every manifest", func() {
	sources := []source{
		kustomization("config/default"),
		kustomization("config/overlays/builtin-certs"),
		kustomization("config/samples"),
		// Written by `make build-installer`; `make verify` keeps it current.
		file("dist/install.yaml"),
	}
	sources = append(sources, e2eTestdata()...)

	for _, src := range sources {
		It("is accepted by the API server: "+src.name, func(ctx SpecContext) {
			data, err := src.render()
			Expect(err).NotTo(HaveOccurred(), src.name)
			objs, err := decode(data)
			Expect(err).NotTo(HaveOccurred(), "%s is not YAML", src.name)
			if len(objs) == 0 {
				Skip(src.name + " holds no object")
			}
			if !anyKind(objs) {
				// Test data besides manifests, such as a cloud-config.
				Skip(src.name + " holds no Kubernetes object")
			}
			ensureNamespaces(ctx, objs)
			path := filepath.Join(GinkgoT().TempDir(), "manifests.yaml")
			Expect(os.WriteFile(path, data, 0o600)).To(Succeed())

			accepted, stderr, err := dryRunApply(path)
			var missing []string
			for _, o := range objs {
				k := keyOf(o)
				found := false
				for _, a := range accepted {
					found = found || k.accepts(a)
				}
				if !found {
					missing = append(missing, k.String())
				}
			}
			if len(missing) > 0 || err != nil {
				// kubectl prints nothing for the objects it did accept when
				// another fails: apply each alone to say which and why.
				Fail(fmt.Sprintf("%s: the API server rejected:\n%s\n(kubectl: %v)", src.name, rejections(objs, stderr), err))
			}
			Expect(accepted).To(HaveLen(len(objs)), src.name)
			// Warnings are deprecated APIs, unknown fields the server dropped,
			// or Pod Security violations that the namespace would enforce on
			// the Pods.
			Expect(stderr).NotTo(ContainSubstring("Warning:"), src.name)
			GinkgoWriter.Printf("%s: %d objects accepted\n", src.name, len(accepted))
		})
	}
})

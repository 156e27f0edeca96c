// Package project checks that PROJECT, kubebuilder's record of the project,
// describes the tree: its resources, their APIs, controllers and webhooks
// (with their real paths), and that the kubebuilder CLI loads it and, run on
// the tree, changes nothing.
package project

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"golang.org/x/mod/modfile"
	"sigs.k8s.io/yaml"

	"github.com/kubevirt-imds/kubevirt-imds/test/controlplane"
)

// project is the part of PROJECT (version 3) the test checks.
type project struct {
	Domain      string     `json:"domain"`
	Layout      []string   `json:"layout"`
	ProjectName string     `json:"projectName"`
	Repo        string     `json:"repo"`
	Version     string     `json:"version"`
	Resources   []resource `json:"resources"`
}

type resource struct {
	API *struct {
		CRDVersion string `json:"crdVersion"`
		Namespaced bool   `json:"namespaced"`
	} `json:"api"`
	Controller bool   `json:"controller"`
	Core       bool   `json:"core"`
	External   bool   `json:"external"`
	Domain     string `json:"domain"`
	Group      string `json:"group"`
	Kind       string `json:"kind"`
	Module     string `json:"module"`
	Path       string `json:"path"`
	Version    string `json:"version"`
	Webhooks   *struct {
		Defaulting     bool   `json:"defaulting"`
		DefaultingPath string `json:"defaultingPath"`
		Validation     bool   `json:"validation"`
		ValidationPath string `json:"validationPath"`
		WebhookVersion string `json:"webhookVersion"`
	} `json:"webhooks"`
}

// apiGroup is the resource's API group as the API server knows it.
func (r resource) apiGroup() string {
	if r.Core {
		return ""
	}
	return r.Group + "." + r.Domain
}

func readProject(t *testing.T, root string) project {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join(root, "PROJECT"))
	if err != nil {
		t.Fatal(err)
	}
	var p project
	if err := yaml.Unmarshal(raw, &p); err != nil {
		t.Fatalf("PROJECT: %v", err)
	}
	return p
}

var markerRE = regexp.MustCompile(`\+kubebuilder:webhook:(\S+)`)

// webhookMarker is one +kubebuilder:webhook marker of package webhooks.
type webhookMarker struct {
	mutating bool
	group    string
	resource string
	version  string
}

func webhookMarkers(t *testing.T, root string) map[string]webhookMarker {
	t.Helper()
	files, err := filepath.Glob(filepath.Join(root, "webhooks", "*.go"))
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]webhookMarker{}
	for _, f := range files {
		if strings.HasSuffix(f, "_test.go") {
			continue
		}
		src, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range markerRE.FindAllStringSubmatch(string(src), -1) {
			args := map[string]string{}
			for _, kv := range strings.Split(m[1], ",") {
				k, v, _ := strings.Cut(kv, "=")
				args[k] = strings.Trim(v, `"`)
			}
			out[args["path"]] = webhookMarker{mutating: args["mutating"] == "true", group: args["groups"], resource: args["resources"], version: args["versions"]}
		}
	}
	return out
}

// TestProjectDescribesTree checks PROJECT against the code: the module, the
// API types and CRDs, the controllers, and every webhook both ways.
func TestProjectDescribesTree(t *testing.T) {
	root := controlplane.RepoRoot()
	p := readProject(t, root)
	gomod, err := os.ReadFile(filepath.Join(root, "go.mod"))
	if err != nil {
		t.Fatal(err)
	}
	mod, err := modfile.Parse("go.mod", gomod, nil)
	if err != nil {
		t.Fatal(err)
	}
	if p.Repo != mod.Module.Mod.Path {
		t.Errorf("PROJECT repo %q, go.mod module %q", p.Repo, mod.Module.Mod.Path)
	}
	if !slices.Equal(p.Layout, []string{"go.kubebuilder.io/v4"}) {
		t.Errorf("PROJECT layout %v, want [go.kubebuilder.io/v4] (the only Go layout kubebuilder v4 supports)", p.Layout)
	}

	markers := webhookMarkers(t, root)
	listed := map[string]bool{}
	for _, r := range p.Resources {
		where := "PROJECT resource " + r.Kind
		if r.API != nil {
			dir := filepath.Join(root, strings.TrimPrefix(r.Path, p.Repo+"/"))
			if !strings.HasPrefix(r.Path, p.Repo+"/") {
				t.Errorf("%s: path %q is outside the module", where, r.Path)
			}
			if !grepDir(t, dir, "type "+r.Kind+" struct") {
				t.Errorf("%s: no type %s in %s", where, r.Kind, r.Path)
			}
			crd := filepath.Join(root, "config", "crd", "bases", r.apiGroup()+"_"+strings.ToLower(r.Kind)+"s.yaml")
			raw, err := os.ReadFile(crd)
			if err != nil {
				t.Errorf("%s: %v", where, err)
			} else if scope := map[bool]string{true: "Namespaced", false: "Cluster"}[r.API.Namespaced]; !strings.Contains(string(raw), "scope: "+scope+"\n") {
				t.Errorf("%s: %s is not %s", where, crd, scope)
			}
		}
		if r.Controller && !grepDir(t, filepath.Join(root, "controllers"), "For(&imdsv1alpha1."+r.Kind+"{}") {
			t.Errorf("%s: controller true, but no controller in controllers/ is For(&imdsv1alpha1.%s{})", where, r.Kind)
		}
		if r.External {
			want := r.Path
			for _, req := range mod.Require {
				if strings.HasPrefix(r.Path, req.Mod.Path) && r.Module != req.Mod.Path+"@"+req.Mod.Version {
					t.Errorf("%s: module %q, go.mod requires %s@%s", where, r.Module, req.Mod.Path, req.Mod.Version)
				}
			}
			if !grepDir(t, filepath.Join(root, "webhooks"), `"`+want+`"`) {
				t.Errorf("%s: package webhooks does not import %s", where, want)
			}
		}
		if r.Webhooks == nil {
			continue
		}
		check := func(kind, path string, mutating bool) {
			listed[path] = true
			m, ok := markers[path]
			switch {
			case path == "":
				t.Errorf("%s: %s webhook without its path (kubebuilder would derive another)", where, kind)
			case !ok:
				t.Errorf("%s: %s webhook %s has no +kubebuilder:webhook marker in webhooks/", where, kind, path)
			case m.mutating != mutating || m.group != r.apiGroup() || m.version != r.Version ||
				m.resource != strings.ToLower(r.Kind)+"s":
				t.Errorf("%s: %s webhook %s: marker says mutating=%v groups=%q versions=%q resources=%q", where, kind, path, m.mutating, m.group, m.version, m.resource)
			}
		}
		if r.Webhooks.Defaulting {
			check("defaulting", r.Webhooks.DefaultingPath, true)
		}
		if r.Webhooks.Validation {
			check("validation", r.Webhooks.ValidationPath, false)
		}
	}
	for path := range markers {
		if !listed[path] {
			t.Errorf("webhook %s (webhooks/) is not in PROJECT", path)
		}
	}
}

func grepDir(t *testing.T, dir, s string) bool {
	t.Helper()
	files, err := filepath.Glob(filepath.Join(dir, "*.go"))
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range files {
		src, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		if strings.Contains(string(src), s) {
			return true
		}
	}
	return false
}

// TestKubebuilderLoadsProject runs the kubebuilder CLI (built from Go
// modules, hack/go-tool.sh kubebuilder) on a copy of the tree: it loads PROJECT and
// `kubebuilder edit` rewrites nothing, PROJECT included, which it writes in
// its own canonical form.
func TestKubebuilderLoadsProject(t *testing.T) {
	root := controlplane.RepoRoot()
	out, err := exec.Command(filepath.Join(root, "hack", "go-tool.sh"), "kubebuilder").Output()
	if err != nil {
		controlplane.UnavailableT(t, "building kubebuilder: "+err.Error())
	}
	kb := strings.TrimSpace(string(out))
	tree := controlplane.CopyTrackedTree(t, root)
	run := func(name string, args ...string) string {
		t.Helper()
		cmd := exec.Command(name, args...)
		cmd.Dir = tree
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
		}
		return string(out)
	}
	run(kb, "edit", "--multigroup=false")
	if st := run("git", "status", "--porcelain"); st != "" {
		t.Errorf("kubebuilder edit changed the tree:\n%s\n%s", st, run("git", "diff"))
	}
}

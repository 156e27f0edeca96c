package main

import (
	"bytes"
	"strings"
	"testing"
)

// generate renders the project's API packages as `make docs` does.
func generate(t *testing.T) string {
	t.Helper()
	dirs := []string{"../../../api/v1alpha1", "../../../api/payload"}
	var pkgs []*apiPackage
	for _, d := range dirs {
		p, err := loadPackage(d)
		if err != nil {
			t.Fatal(err)
		}
		pkgs = append(pkgs, p)
	}
	var buf bytes.Buffer
	render(&buf, pkgs, []string{"api/v1alpha1", "api/payload"})
	return buf.String()
}

func TestReferenceIsDeterministic(t *testing.T) {
	first := generate(t)
	for range 3 {
		if again := generate(t); again != first {
			t.Fatal("two runs over the same sources differ")
		}
	}
}

// TestReferenceShowsWhatTheCRDEnforces checks rows a reader looks up: a
// default with bounds, a required field with its pattern, an enum, a CEL
// rule, a list-map, a payload field's presence and an untyped constant.
func TestReferenceShowsWhatTheCRDEnforces(t *testing.T) {
	out := generate(t)
	for _, want := range []string{
		"| `priority` | `int32` | no | `0` |",
		"Validation: minimum -1000000; maximum 1000000.",
		"| `audience` | `string` | yes |  |",
		"| `expirationSeconds` | `int64` | no | `3600` |",
		"- one of `Auto`, `Inline`, `None`",
		"- rule `has(self.inline) != has(self.secretRef)`: exactly one of inline and secretRef must be set",
		"list type map keyed by `audience`; at most 8 items",
		"each item: pattern `^(ssh-\\|ecdsa-\\|sk-)",
		"| `dialects` | `[]`[Dialect](#v1alpha1-dialect) | no | `{v1,nocloud,openstack,ec2}` |",
		"| short names | `mds` |",
		"| `userData` | `string` (base64) | omitted when empty |",
		"| `ReasonSidecarMissing` | `SidecarMissing` |",
		"func PayloadSecretName(vmiName string) string",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("reference lacks %q", want)
		}
	}
	if strings.Contains(out, "+kubebuilder") || strings.Contains(out, "+optional") {
		t.Error("reference shows raw markers")
	}
}

func TestMarkerArgs(t *testing.T) {
	got := markerArgs("name=\"Ready\",type=string,JSONPath=`.status.conditions[?(@.type==\"Ready\")].status`,x={a,b}")
	want := [][2]string{{"name", "Ready"}, {"type", "string"}, {"JSONPath", `.status.conditions[?(@.type=="Ready")].status`}, {"x", "{a,b}"}}
	if len(got) != len(want) {
		t.Fatalf("got %q, want %q", got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("arg %d: got %q, want %q", i, got[i], want[i])
		}
	}
}

// Package monitoring checks config/prometheus: the alert rules pass
// `promtool test rules`, and the alert rules and the Grafana dashboard use
// only metric and label names that the code registers.
package monitoring

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"sigs.k8s.io/yaml"

	"github.com/kubevirt-imds/kubevirt-imds/controllers"
	"github.com/kubevirt-imds/kubevirt-imds/sidecar"
	"github.com/kubevirt-imds/kubevirt-imds/test/controlplane"
	"github.com/kubevirt-imds/kubevirt-imds/webhooks"
)

// dir is config/prometheus.
var dir = filepath.Join(controlplane.RepoRoot(), "config", "prometheus")

// external are the series the rules read from others: Prometheus' own up,
// and kube-state-metrics' init container restarts (the sidecar is a native
// sidecar, an init container).
var external = map[string][]string{
	"up": {"job", "instance"},
	"kube_pod_init_container_status_restarts_total": {"namespace", "pod", "container"},
	"kube_pod_container_status_restarts_total":      {"namespace", "pod", "container"},
}

// targetLabels are the labels Prometheus adds to every scraped series
// (monitor.yaml), and those a Prometheus collecting the sidecars adds.
var targetLabels = []string{"namespace", "pod", "container", "instance", "job", "service", "endpoint"}

// registered is metric name → label names, as the components register them.
type registered map[string][]string

var descRE = regexp.MustCompile(`^Desc\{fqName: "([^"]+)", .*constLabels: \{([^}]*)\}, variableLabels: \{([^}]*)\}\}$`)

// Register records c's descriptors (prometheus.Registerer).
func (r registered) Register(c prometheus.Collector) error {
	ch := make(chan *prometheus.Desc)
	go func() { c.Describe(ch); close(ch) }()
	for d := range ch {
		m := descRE.FindStringSubmatch(d.String())
		if m == nil {
			return fmt.Errorf("unexpected descriptor %s", d)
		}
		var names []string
		for _, kv := range strings.Split(m[2], ",") {
			if k, _, ok := strings.Cut(kv, "="); ok {
				names = append(names, k)
			}
		}
		for _, l := range strings.Split(m[3], ",") {
			if l != "" {
				names = append(names, l)
			}
		}
		r.add(m[1], names...)
	}
	return nil
}

// add records that metric name has labels.
func (r registered) add(name string, labels ...string) {
	// Non-nil even without labels: nil means not registered.
	r[name] = append(r[name], labels...)
	if r[name] == nil {
		r[name] = []string{}
	}
}

// MustRegister records cs (prometheus.Registerer).
func (r registered) MustRegister(cs ...prometheus.Collector) {
	for _, c := range cs {
		if err := r.Register(c); err != nil {
			panic(err)
		}
	}
}

// Unregister is a no-op (prometheus.Registerer).
func (registered) Unregister(prometheus.Collector) bool { return true }

// registeredNames collects every metric the manager registers and the
// sidecar exposes.
func registeredNames(t *testing.T) registered {
	t.Helper()
	r := registered{}
	r.MustRegister(controllers.Collectors()...)
	r.MustRegister(webhooks.Collectors()...)
	for _, f := range sidecar.MetricFamilies() {
		r.add(f.Name, f.Labels...)
	}
	for name := range r {
		if !strings.HasPrefix(name, controllers.MetricsPrefix) && !strings.HasPrefix(name, "kubevirt_imds_sidecar_") {
			t.Errorf("metric %s has neither the manager's prefix %s nor the sidecar's kubevirt_imds_sidecar_", name, controllers.MetricsPrefix)
		}
	}
	return r
}

var (
	identRE   = regexp.MustCompile(`[a-zA-Z_:][a-zA-Z0-9_:]*`)
	matcherRE = regexp.MustCompile(`\{([^}]*)\}`)
	labelRE   = regexp.MustCompile(`([a-zA-Z_][a-zA-Z0-9_]*)\s*(=~|!~|!=|=)`)
	groupRE   = regexp.MustCompile(`\b(?:by|without|on|ignoring)\s*\(([^)]*)\)`)
	stringRE  = regexp.MustCompile(`"(?:[^"\\]|\\.)*"`)
)

// checkNames fails when expr names a kubevirt-imds metric the code does not
// register, or a label none of its metrics (nor the scrape) has. It returns
// the metrics expr reads.
func checkNames(t *testing.T, r registered, where, expr string) []string {
	t.Helper()
	bare := stringRE.ReplaceAllString(matcherRE.ReplaceAllStringFunc(expr, func(m string) string {
		return stringRE.ReplaceAllString(m, `""`)
	}), `""`)
	var used []string
	labels := slices.Clone(targetLabels)
	for _, id := range identRE.FindAllString(matcherRE.ReplaceAllString(bare, ""), -1) {
		name, suffix := id, ""
		for _, s := range []string{"_bucket", "_sum", "_count"} {
			if base, ok := strings.CutSuffix(id, s); ok && r[base] != nil {
				name, suffix = base, s
			}
		}
		switch {
		case r[name] != nil:
			labels = append(labels, r[name]...)
			if suffix == "_bucket" {
				labels = append(labels, "le")
			}
		case external[name] != nil:
			labels = append(labels, external[name]...)
		case strings.HasPrefix(name, "kubevirt_imds"):
			t.Errorf("%s: %s is not a metric the code registers", where, id)
			continue
		default:
			continue
		}
		used = append(used, name)
	}
	var named []string
	for _, m := range matcherRE.FindAllStringSubmatch(bare, -1) {
		for _, l := range labelRE.FindAllStringSubmatch(m[1], -1) {
			named = append(named, l[1])
		}
	}
	for _, g := range groupRE.FindAllStringSubmatch(bare, -1) {
		for _, l := range strings.Split(g[1], ",") {
			if l = strings.TrimSpace(l); l != "" {
				named = append(named, l)
			}
		}
	}
	for _, l := range named {
		if l != "__name__" && !slices.Contains(labels, l) {
			t.Errorf("%s: label %q is on none of the series %s reads (%v)", where, l, expr, used)
		}
	}
	return used
}

// rules is a PrometheusRule's spec.groups, as promtool reads a rules file.
type rules struct {
	Groups []struct {
		Name  string `json:"name"`
		Rules []struct {
			Alert  string `json:"alert"`
			Record string `json:"record"`
			Expr   string `json:"expr"`
		} `json:"rules"`
	} `json:"groups"`
}

func readRules(t *testing.T) ([]byte, rules) {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join(dir, "rules.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var pr struct {
		Kind string          `json:"kind"`
		Spec json.RawMessage `json:"spec"`
	}
	if err := yaml.Unmarshal(raw, &pr); err != nil {
		t.Fatalf("config/prometheus/rules.yaml: %v", err)
	}
	if pr.Kind != "PrometheusRule" {
		t.Fatalf("config/prometheus/rules.yaml: kind %q, want PrometheusRule", pr.Kind)
	}
	var rs rules
	if err := json.Unmarshal(pr.Spec, &rs); err != nil {
		t.Fatalf("config/prometheus/rules.yaml: spec: %v", err)
	}
	out, err := yaml.JSONToYAML(pr.Spec)
	if err != nil {
		t.Fatal(err)
	}
	return out, rs
}

// promtool builds promtool from Go modules (hack/go-tool.sh promtool, cached).
func promtool(t *testing.T) string {
	t.Helper()
	out, err := exec.Command(filepath.Join(controlplane.RepoRoot(), "hack", "go-tool.sh"), "promtool").Output()
	if err != nil {
		var stderr string
		if ee := (*exec.ExitError)(nil); errors.As(err, &ee) {
			stderr = string(ee.Stderr)
		}
		controlplane.UnavailableT(t, fmt.Sprintf("building promtool: %v: %s", err, stderr))
	}
	return strings.TrimSpace(string(out))
}

func runPromtool(t *testing.T, bin, workdir string, args ...string) {
	t.Helper()
	cmd := exec.Command(bin, args...)
	cmd.Dir = workdir
	out, err := cmd.CombinedOutput()
	t.Logf("promtool %s:\n%s", strings.Join(args, " "), out)
	if err != nil {
		t.Fatalf("promtool %s: %v", strings.Join(args, " "), err)
	}
}

// TestAlertRules runs `promtool check rules` and `promtool test rules`
// (config/prometheus/rules_test.yaml) on the PrometheusRule's groups.
func TestAlertRules(t *testing.T) {
	groups, rs := readRules(t)
	r := registeredNames(t)
	var alerts []string
	for _, g := range rs.Groups {
		for _, rule := range g.Rules {
			alerts = append(alerts, rule.Alert)
			checkNames(t, r, "rule "+rule.Alert+rule.Record, rule.Expr)
		}
	}
	tests, err := os.ReadFile(filepath.Join(dir, "rules_test.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range alerts {
		if !strings.Contains(string(tests), "alertname: "+a+"\n") {
			t.Errorf("alert %s has no test in config/prometheus/rules_test.yaml", a)
		}
	}
	bin := promtool(t)
	work := t.TempDir()
	if err := os.WriteFile(filepath.Join(work, "kubevirt-imds.rules.yaml"), groups, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(work, "rules_test.yaml"), tests, 0o644); err != nil {
		t.Fatal(err)
	}
	runPromtool(t, bin, work, "check", "rules", "kubevirt-imds.rules.yaml")
	runPromtool(t, bin, work, "test", "rules", "rules_test.yaml")
}

// dashboard is the part of Grafana's dashboard model the test checks.
type dashboard struct {
	UID    string  `json:"uid"`
	Title  string  `json:"title"`
	Panels []panel `json:"panels"`
}

type panel struct {
	ID         int    `json:"id"`
	Type       string `json:"type"`
	Title      string `json:"title"`
	Datasource *struct {
		Type string `json:"type"`
		UID  string `json:"uid"`
	} `json:"datasource"`
	GridPos struct{ H, W, X, Y int } `json:"gridPos"`
	Targets []struct {
		RefID string `json:"refId"`
		Expr  string `json:"expr"`
	} `json:"targets"`
}

// TestDashboard parses the Grafana dashboard, checks its panels' layout and
// queries, and that each query is PromQL (promtool parses them as recording
// rules) reading metrics the code registers.
func TestDashboard(t *testing.T) {
	raw, err := os.ReadFile(filepath.Join(dir, "grafana-dashboard.json"))
	if err != nil {
		t.Fatal(err)
	}
	var d dashboard
	dec := json.NewDecoder(strings.NewReader(string(raw)))
	if err := dec.Decode(&d); err != nil {
		t.Fatalf("config/prometheus/grafana-dashboard.json does not parse: %v", err)
	}
	if d.UID == "" || d.Title == "" {
		t.Errorf("the dashboard needs a uid and a title, has %q and %q", d.UID, d.Title)
	}
	r := registeredNames(t)
	ids := map[int]bool{}
	var exprs []string
	used := map[string]bool{}
	for _, p := range d.Panels {
		where := fmt.Sprintf("panel %d %q", p.ID, p.Title)
		if ids[p.ID] {
			t.Errorf("%s: duplicate id", where)
		}
		ids[p.ID] = true
		if p.GridPos.X < 0 || p.GridPos.W <= 0 || p.GridPos.X+p.GridPos.W > 24 || p.GridPos.H <= 0 {
			t.Errorf("%s: gridPos %+v outside Grafana's 24 columns", where, p.GridPos)
		}
		if p.Type == "row" {
			continue
		}
		if p.Datasource == nil || p.Datasource.Type != "prometheus" {
			t.Errorf("%s: no Prometheus datasource", where)
		}
		if len(p.Targets) == 0 {
			t.Errorf("%s: no query", where)
		}
		for _, tg := range p.Targets {
			if strings.TrimSpace(tg.Expr) == "" {
				t.Errorf("%s, query %s: empty expression", where, tg.RefID)
				continue
			}
			names := checkNames(t, r, where, tg.Expr)
			if len(names) == 0 {
				t.Errorf("%s, query %s: reads no kubevirt-imds metric: %s", where, tg.RefID, tg.Expr)
			}
			for _, n := range names {
				used[n] = true
			}
			exprs = append(exprs, tg.Expr)
		}
	}
	for name := range r {
		if !used[name] {
			t.Errorf("metric %s is on no panel of the dashboard", name)
		}
	}

	// Grafana's variables are not PromQL: give them values.
	vars := strings.NewReplacer("$__rate_interval", "5m", `"$namespace"`, `".*"`)
	var rec strings.Builder
	rec.WriteString("groups:\n- name: dashboard\n  rules:\n")
	for i, e := range exprs {
		fmt.Fprintf(&rec, "  - record: dashboard:query_%d\n    expr: %q\n", i, vars.Replace(e))
	}
	work := t.TempDir()
	if err := os.WriteFile(filepath.Join(work, "dashboard.rules.yaml"), []byte(rec.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	runPromtool(t, promtool(t), work, "check", "rules", "dashboard.rules.yaml")
}

package controllers

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/rest"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	ctrlconfig "sigs.k8s.io/controller-runtime/pkg/config"
	"sigs.k8s.io/controller-runtime/pkg/metrics"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	imdsv1alpha1 "github.com/kubevirt-imds/kubevirt-imds/api/v1alpha1"
	"github.com/kubevirt-imds/kubevirt-imds/test/controlplane"
)

const (
	benchVMIs     = 1000
	benchServices = 20
	// benchQPS matches the manager's default --kube-api-qps/--kube-api-burst.
	benchQPS, benchBurst = DefaultKubeAPIQPS, DefaultKubeAPIBurst
)

// writeCounter counts the manager's mutating API requests by resource.
type writeCounter struct {
	mu     sync.Mutex
	counts map[string]int
	total  atomic.Int64
}

func (w *writeCounter) wrap(rt http.RoundTripper) http.RoundTripper {
	return roundTripFunc(func(req *http.Request) (*http.Response, error) {
		if req.Method != http.MethodGet {
			key := req.Method + " " + resourceOf(req.URL.Path)
			w.mu.Lock()
			w.counts[key]++
			w.mu.Unlock()
			w.total.Add(1)
		}
		return rt.RoundTrip(req)
	})
}

func (w *writeCounter) snapshot() (int64, string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	var parts []string
	for k, v := range w.counts {
		parts = append(parts, fmt.Sprintf("%s=%d", k, v))
	}
	return w.total.Load(), strings.Join(parts, " ")
}

type roundTripFunc func(*http.Request) (*http.Response, error)

func (f roundTripFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

// resourceOf turns /api/v1/namespaces/x/secrets/y into "secrets" and
// …/metadataservices/y/status into "metadataservices/status".
func resourceOf(path string) string {
	parts := strings.Split(strings.Trim(path, "/"), "/")
	for i, p := range parts {
		if p == "namespaces" && i+2 < len(parts) {
			if i+4 < len(parts) {
				return parts[i+2] + "/" + parts[i+4]
			}
			return parts[i+2]
		}
	}
	return parts[len(parts)-1]
}

// BenchmarkConvergence measures an operator starting on a namespace with
// 1,000 VMIs and 20 MetadataServices (50 VMIs each, all sharing a Secret
// source): wall time until every payload Secret exists and every status is
// current, API writes per VMI, and the writes of a full resync (a restart
// with a cold cache) when nothing changed, which must be zero.
func BenchmarkConvergence(b *testing.B) {
	env, cfg, err := controlplane.Start(controlplane.Options{})
	if err != nil {
		b.Skip(err.Error())
	}
	defer func() { _ = env.Stop() }()
	s := newBenchScheme(b)
	cfg.QPS, cfg.Burst = 1000, 2000 // setup only; the manager uses its own
	c, err := client.New(cfg, client.Options{Scheme: s})
	if err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "bench"}}
	must(b, c.Create(ctx, ns))
	// The operator's own namespace, where the identity signing key is kept:
	// every payload carries a signed EC2 identity document.
	must(b, c.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: benchOperatorNamespace}}))
	must(b, c.Create(ctx, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: "bench", Name: "user-data"},
		Data: map[string][]byte{"cloud-config": []byte("#cloud-config\npackages: [nginx]\n")}}))
	for i := range benchServices {
		must(b, c.Create(ctx, newMDS("bench", fmt.Sprintf("group-%02d", i), imdsv1alpha1.MetadataServiceSpec{
			Selector: metav1.LabelSelector{MatchLabels: map[string]string{"group": fmt.Sprint(i)}},
			UserData: &imdsv1alpha1.DataSource{SecretRef: &imdsv1alpha1.KeyReference{Name: "user-data", Key: "cloud-config"}},
			Identity: &imdsv1alpha1.IdentitySpec{ServiceAccountTokens: []imdsv1alpha1.ServiceAccountTokenSpec{{Audience: "vault"}}},
		})))
	}
	created := parallel(b, benchVMIs, 16, func(i int) error {
		return c.Create(ctx, newVMI("bench", fmt.Sprintf("vm-%04d", i), map[string]string{"group": fmt.Sprint(i % benchServices)}))
	})
	b.Logf("created %d VMIs in %v", benchVMIs, created)

	for b.Loop() {
		writes := &writeCounter{counts: map[string]int{}}
		start := time.Now()
		stop := startBenchManager(b, cfg, s, writes)
		waitConverged(b, ctx, c, "bench", benchVMIs)
		elapsed := time.Since(start)
		total, detail := writes.snapshot()
		b.ReportMetric(elapsed.Seconds(), "s/converge")
		b.ReportMetric(float64(total)/benchVMIs, "writes/VMI")
		b.Logf("converged in %v: %d writes (%s)", elapsed, total, detail)
		stop()

		resync := &writeCounter{counts: map[string]int{}}
		start = time.Now()
		stop = startBenchManager(b, cfg, s, resync)
		waitIdle(b)
		total, detail = resync.snapshot()
		b.ReportMetric(float64(total), "resync-writes")
		b.Logf("resync settled in %v: %d writes (%s)", time.Since(start), total, detail)
		stop()
	}
}

// benchReconciler is the reconciler of the manager startBenchManager last
// started.
var benchReconciler *MetadataServiceReconciler

// benchOperatorNamespace plays the operator's namespace.
const benchOperatorNamespace = "kubevirt-imds-system"

func newBenchScheme(b *testing.B) *runtime.Scheme {
	b.Helper()
	s, err := NewScheme()
	must(b, err)
	return s
}

func startBenchManager(b *testing.B, cfg *rest.Config, s *runtime.Scheme, writes *writeCounter) func() {
	b.Helper()
	mcfg := rest.CopyConfig(cfg)
	mcfg.QPS, mcfg.Burst = benchQPS, benchBurst
	mcfg.Wrap(writes.wrap)
	reconcileBase = metricSum("controller_runtime_reconcile_total")
	mgr, err := ctrl.NewManager(mcfg, ctrl.Options{
		Scheme:                 s,
		Metrics:                metricsserver.Options{BindAddress: "0"},
		HealthProbeBindAddress: "0",
		Controller:             ctrlconfig.Controller{SkipNameValidation: ptr(true)},
		Cache:                  CacheOptions(), // as manager_cmd.go
	})
	must(b, err)
	benchReconciler = &MetadataServiceReconciler{Client: mgr.GetClient(), Recorder: mgr.GetEventRecorder("kubevirt-imds"),
		Identity: &IdentityKeys{Client: mgr.GetClient(), Live: mgr.GetAPIReader(), Namespace: benchOperatorNamespace}}
	must(b, benchReconciler.SetupWithManager(mgr))
	stop := controlplane.RunManager(mgr)
	return func() {
		if err := stop(); err != nil {
			b.Error(err)
		}
	}
}

// waitConverged polls (from a second client, as a user would) until the
// vmis payload Secrets of namespace ns exist and every status there
// describes its current generation.
func waitConverged(b *testing.B, ctx context.Context, c client.Client, ns string, vmis int) {
	b.Helper()
	deadline := time.Now().Add(10 * time.Minute)
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for range tick.C {
		if time.Now().After(deadline) {
			b.Fatal("did not converge within 10 minutes")
		}
		var secrets corev1.SecretList
		if err := c.List(ctx, &secrets, client.InNamespace(ns), client.MatchingLabels{imdsv1alpha1.LabelManagedBy: imdsv1alpha1.ManagedByValue},
			client.HasLabels{imdsv1alpha1.LabelInstanceUID}); err != nil {
			continue
		}
		if len(secrets.Items) < vmis {
			continue
		}
		var services imdsv1alpha1.MetadataServiceList
		if err := c.List(ctx, &services, client.InNamespace(ns)); err != nil {
			continue
		}
		served := int32(0)
		current := true
		for _, m := range services.Items {
			served += m.Status.SelectedInstances
			current = current && m.Status.ObservedGeneration == m.Generation
		}
		if served == int32(vmis) && current {
			return
		}
	}
}

// waitIdle waits until every service was reconciled since the manager
// started and the work queue has stayed empty, with no reconcile in flight,
// for a second.
func waitIdle(b *testing.B) {
	b.Helper()
	deadline := time.Now().Add(10 * time.Minute)
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	quiet := 0
	for range tick.C {
		if time.Now().After(deadline) {
			b.Fatal("did not settle within 10 minutes")
		}
		idle := metricSum("workqueue_depth") == 0 && metricSum("controller_runtime_active_workers") == 0 &&
			metricSum("controller_runtime_reconcile_total")-reconcileBase >= benchServices
		if !idle {
			quiet = 0
			continue
		}
		if quiet++; quiet == 10 {
			return
		}
	}
}

// reconcileBase is the reconcile counter when the current manager started:
// controller metrics are process-global and outlive a manager.
var reconcileBase float64

func metricSum(name string) float64 {
	families, err := metrics.Registry.Gather()
	if err != nil {
		return -1
	}
	sum := 0.0
	for _, f := range families {
		if f.GetName() != name {
			continue
		}
		for _, m := range f.GetMetric() {
			if !hasLabel(m, "controller", "metadataservice") && !hasLabel(m, "name", "metadataservice") {
				continue
			}
			sum += m.GetGauge().GetValue() + m.GetCounter().GetValue()
		}
	}
	return sum
}

func hasLabel(m *dto.Metric, k, v string) bool {
	for _, l := range m.GetLabel() {
		if l.GetName() == k && l.GetValue() == v {
			return true
		}
	}
	return false
}

func parallel(b *testing.B, n, workers int, f func(int) error) time.Duration {
	b.Helper()
	start := time.Now()
	jobs := make(chan int)
	errs := make(chan error, n)
	var wg sync.WaitGroup
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range jobs {
				if err := f(i); err != nil {
					errs <- err
				}
			}
		}()
	}
	for i := range n {
		jobs <- i
	}
	close(jobs)
	wg.Wait()
	close(errs)
	for err := range errs {
		b.Fatal(err)
	}
	return time.Since(start)
}

func must(b *testing.B, err error) {
	b.Helper()
	if err != nil {
		b.Fatal(err)
	}
}

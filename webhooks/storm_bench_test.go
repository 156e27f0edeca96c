package webhooks_test

import (
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-logr/logr"
	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/rest"
	toolscache "k8s.io/client-go/tools/cache"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/config"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"
	"sigs.k8s.io/controller-runtime/pkg/webhook"

	imdsv1alpha1 "github.com/kubevirt-imds/kubevirt-imds/api/v1alpha1"
	"github.com/kubevirt-imds/kubevirt-imds/controllers"
	"github.com/kubevirt-imds/kubevirt-imds/hack/loadtest/measure"
	"github.com/kubevirt-imds/kubevirt-imds/test/controlplane"
	"github.com/kubevirt-imds/kubevirt-imds/test/fixtures"
	"github.com/kubevirt-imds/kubevirt-imds/webhooks"
)

const (
	stormVMIs = 1000
	// stormPayloadTimeout bounds the wait for the last payload Secret.
	stormPayloadTimeout = 3 * time.Minute
	// stormProfileDuration is how long the API server is profiled from a
	// storm's start (STORM_PROFILE_DIR): shorter than the shortest storm.
	stormProfileDuration = 4 * time.Second
)

// BenchmarkBootStorm creates 1,000 VMIs under one MetadataService, each
// followed by its launcher Pod as virt-controller creates it, from 200 and
// from 10 concurrent creators, against the real API server with the manager
// wired as manager_cmd.go wires it (client QPS and burst as the manager's defaults, the same cache
// options), and the same storms without the product. It reports, per number
// of creators (suffix -cN):
//
//   - served-%: launcher Pods that got the sidecar; discovered-%: VMIs that
//     got the SMBIOS discovery data. Target 100.
//   - vmi-adm-p50/p99-ms, pod-adm-p50/p99-ms: the webhooks' handling time as
//     their server measures it. Target p99 < 100 ms.
//   - throughput-ratio: VM+Pod pairs per second with the product over
//     without it. Target ≥ 0.9.
//   - payload-p50/p99-ms: from a VMI's creation until its payload Secret is
//     in a watcher's cache.
//   - writes/VMI, reads/VMI: the manager's API requests in the storm's
//     namespace (reads: live reads on cache misses, and the controller's).
//
// and, with the operator stopped (its webhooks still registered), the added
// Pod creation latency over the storm without the product (stopped-pod-
// added-p50/p99-ms; target: no more than one failed call).
func BenchmarkBootStorm(b *testing.B) {
	if os.Getenv("KUBEBUILDER_ASSETS") == "" {
		b.Skip(controlplane.ErrNoAssets.Error())
	}
	ctrl.SetLogger(logr.Discard())
	hooksDir := b.TempDir()
	kubectl := filepath.Join(os.Getenv("KUBEBUILDER_ASSETS"), "kubectl")
	out, err := exec.Command(kubectl, "kustomize", filepath.Join(controlplane.RepoRoot(), "config", "webhook")).Output()
	if err != nil {
		b.Fatalf("kubectl kustomize config/webhook: %v", err)
	}
	if err := os.WriteFile(filepath.Join(hooksDir, "webhooks.yaml"), out, 0o644); err != nil {
		b.Fatal(err)
	}
	env, cfg, err := controlplane.Start(controlplane.Options{
		Webhooks: envtest.WebhookInstallOptions{Paths: []string{hooksDir}, LocalServingHostExternalName: "localhost"},
	})
	if err != nil {
		b.Fatal(err)
	}
	defer func() { _ = env.Stop() }()
	s, err := controllers.NewScheme()
	if err != nil {
		b.Fatal(err)
	}
	// The creators stand in for users and virt-controller, which have their
	// own (larger) rate limits; here none limits them.
	ccfg := rest.CopyConfig(cfg)
	ccfg.QPS, ccfg.Burst = -1, 0
	c, err := client.New(ccfg, client.Options{Scheme: s})
	if err != nil {
		b.Fatal(err)
	}
	st := &stormEnv{b: b, env: env, cfg: cfg, c: c, scheme: s, cpu: newCPUMeter()}
	st.saveWebhooks()

	for b.Loop() {
		for _, creators := range []int{200, 10} {
			suffix := fmt.Sprintf("-c%d", creators)
			st.removeWebhooks()
			base := st.storm(fmt.Sprintf("base%d", creators), creators, false)
			st.restoreWebhooks()

			m := st.startManager()
			st.probe(fmt.Sprintf("probe%d", creators))
			// The storm's own requests: a restarted manager also resyncs the
			// namespaces of earlier storms.
			m.requests.Reset()
			m.requests.Only(fmt.Sprintf("storm%d", creators))
			m.server.reset()
			with := st.storm(fmt.Sprintf("storm%d", creators), creators, true)
			writes, reads := m.requests.Writes()
			m.stop()

			_, vp50, vp99, _ := m.admission(webhooks.VMIPath).Summary()
			_, pp50, pp99, pmax := m.admission(webhooks.PodPath).Summary()
			_, _, _, vmax := m.admission(webhooks.VMIPath).Summary()
			_, yp50, yp99, _ := with.payload.Summary()
			b.ReportMetric(100*float64(with.served.Load())/stormVMIs, "served-%"+suffix)
			b.ReportMetric(100*float64(with.discovered.Load())/stormVMIs, "discovered-%"+suffix)
			b.ReportMetric(vp50, "vmi-adm-p50-ms"+suffix)
			b.ReportMetric(vp99, "vmi-adm-p99-ms"+suffix)
			b.ReportMetric(pp50, "pod-adm-p50-ms"+suffix)
			b.ReportMetric(pp99, "pod-adm-p99-ms"+suffix)
			// Above the webhook's timeoutSeconds (3 s, 2 s for VMIs) the API
			// server would have given up on the answer.
			b.ReportMetric(pmax, "pod-adm-max-ms"+suffix)
			b.ReportMetric(vmax, "vmi-adm-max-ms"+suffix)
			b.ReportMetric(with.rate()/base.rate(), "throughput-ratio"+suffix)
			b.ReportMetric(yp50, "payload-p50-ms"+suffix)
			b.ReportMetric(yp99, "payload-p99-ms"+suffix)
			b.ReportMetric(float64(writes)/stormVMIs, "writes/VMI"+suffix)
			b.ReportMetric(float64(reads)/stormVMIs, "reads/VMI"+suffix)
			b.Logf("%d creators: %.0f pairs/s with the product, %.0f without; payload ready %d of %d; manager requests: %s",
				creators, with.rate(), base.rate(), with.payloads.Load(), stormVMIs, m.requests.String())
			b.Logf("%d creators: VMI create %s / %s, Pod create %s / %s (with / without the product)",
				creators, with.vmiCreate.String(), base.vmiCreate.String(), with.podCreate.String(), base.podCreate.String())
			b.Logf("%d creators: CPU while creating: %s with the product; %s without", creators, with.cpu, base.cpu)
		}

		// The operator stopped, its webhooks still registered: every
		// admission is one failed call, which failurePolicy Ignore forgives.
		st.removeWebhooks()
		base := st.storm("base-stopped", 10, false)
		st.restoreWebhooks()
		stopped := st.storm("stopped", 10, false)
		bs, ss := base.podCreate.Sorted(), stopped.podCreate.Sorted()
		b.ReportMetric(measure.Millis(measure.Percentile(ss, 0.5)-measure.Percentile(bs, 0.5)), "stopped-pod-added-p50-ms")
		b.ReportMetric(measure.Millis(measure.Percentile(ss, 0.99)-measure.Percentile(bs, 0.99)), "stopped-pod-added-p99-ms")
		b.Logf("operator stopped: Pod create %s, without the product %s", stopped.podCreate.String(), base.podCreate.String())
	}
	b.ReportMetric(0, "ns/op")
}

// stormEnv is the control plane the storms run against.
type stormEnv struct {
	b      *testing.B
	env    *envtest.Environment
	cfg    *rest.Config
	c      client.Client
	scheme *runtime.Scheme

	cpu *cpuMeter

	mutating   []admissionregistrationv1.MutatingWebhookConfiguration
	validating []admissionregistrationv1.ValidatingWebhookConfiguration
}

func (st *stormEnv) must(err error) {
	st.b.Helper()
	if err != nil {
		st.b.Fatal(err)
	}
}

// saveWebhooks keeps the installed configurations, to install them again.
func (st *stormEnv) saveWebhooks() {
	ctx := context.Background()
	var m admissionregistrationv1.MutatingWebhookConfigurationList
	var v admissionregistrationv1.ValidatingWebhookConfigurationList
	st.must(st.c.List(ctx, &m))
	st.must(st.c.List(ctx, &v))
	st.mutating, st.validating = m.Items, v.Items
}

// removeWebhooks uninstalls the webhook configurations: the cluster without
// the product.
func (st *stormEnv) removeWebhooks() {
	ctx := context.Background()
	for i := range st.mutating {
		st.must(client.IgnoreNotFound(st.c.Delete(ctx, st.mutating[i].DeepCopy())))
	}
	for i := range st.validating {
		st.must(client.IgnoreNotFound(st.c.Delete(ctx, st.validating[i].DeepCopy())))
	}
	// The API server drops them from its webhook informer asynchronously;
	// wait until a Pod admission no longer reaches a webhook (see
	// webhooksActive).
	st.waitWebhooks(false)
}

// restoreWebhooks installs the saved configurations again.
func (st *stormEnv) restoreWebhooks() {
	ctx := context.Background()
	for _, m := range st.mutating {
		m := m.DeepCopy()
		m.ResourceVersion, m.UID = "", ""
		st.must(st.c.Create(ctx, m))
	}
	for _, v := range st.validating {
		v := v.DeepCopy()
		v.ResourceVersion, v.UID = "", ""
		st.must(st.c.Create(ctx, v))
	}
	st.waitWebhooks(true)
}

// waitWebhooks waits until the configurations are (or are no longer)
// stored; the API server's webhook informer follows within milliseconds,
// and probe checks that the product is in force before a storm with it.
func (st *stormEnv) waitWebhooks(installed bool) {
	st.b.Helper()
	ctx := context.Background()
	deadline := time.Now().Add(30 * time.Second)
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for range tick.C {
		var m admissionregistrationv1.MutatingWebhookConfigurationList
		st.must(st.c.List(ctx, &m))
		if (len(m.Items) > 0) == installed {
			return
		}
		if time.Now().After(deadline) {
			st.b.Fatalf("webhook configurations installed=%v after 30s", !installed)
		}
	}
}

// probe waits until a VMI created under a MetadataService gets its
// discovery data: the webhooks are registered and the manager serves them.
func (st *stormEnv) probe(name string) {
	st.b.Helper()
	ctx := context.Background()
	st.must(st.c.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name}}))
	st.must(st.c.Create(ctx, fixtures.MetadataService(name, "web", imdsv1alpha1.MetadataServiceSpec{})))
	deadline := time.Now().Add(time.Minute)
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for i := 0; ; i++ {
		vmi := fixtures.VMI(name, fmt.Sprintf("probe-%d", i), nil)
		st.must(st.c.Create(ctx, vmi))
		if fw := vmi.Spec.Domain.Firmware; fw != nil && fw.Serial != "" {
			return
		}
		if time.Now().After(deadline) {
			st.b.Fatal("the webhooks did not come into force within a minute")
		}
		<-tick.C
	}
}

// stormManager is a running manager and what was measured of it.
type stormManager struct {
	stop     func()
	requests *measure.Requests
	server   *timedServer
}

func (m *stormManager) admission(path string) *measure.Latencies { return m.server.latencies(path) }

// startManager runs the controller and the webhooks as manager_cmd.go wires
// them and waits until the webhooks answer from a synced cache.
func (st *stormEnv) startManager() *stormManager {
	st.b.Helper()
	w := &st.env.WebhookInstallOptions
	requests := &measure.Requests{}
	mcfg := rest.CopyConfig(st.cfg)
	mcfg.QPS, mcfg.Burst = managerQPS, managerBurst
	mcfg.Wrap(requests.Wrap)
	// HTTP/1.1 only, as manager_cmd.go serves webhooks unless
	// --enable-http2: the API server then calls over a pool of connections
	// rather than one multiplexed one.
	http1 := func(c *tls.Config) { c.NextProtos = []string{"http/1.1"} }
	server := &timedServer{Server: webhook.NewServer(webhook.Options{Host: w.LocalServingHost, Port: w.LocalServingPort, CertDir: w.LocalServingCertDir,
		TLSOpts: []func(*tls.Config){http1}})}
	mgr, err := ctrl.NewManager(mcfg, ctrl.Options{
		Scheme:                 st.scheme,
		Metrics:                metricsserver.Options{BindAddress: "0"},
		HealthProbeBindAddress: "0",
		WebhookServer:          server,
		Cache:                  controllers.CacheOptions(),
		Controller:             config.Controller{SkipNameValidation: new(true)},
	})
	st.must(err)
	reconciler := newReconciler(mgr)
	st.must(reconciler.SetupWithManager(mgr))
	st.must(webhooks.SetupWithManager(mgr, webhooks.Options{Sidecar: webhooks.SidecarOptions{Image: sidecarImage}, Payload: reconciler}))
	stop := controlplane.RunManager(mgr)
	addr := net.JoinHostPort(w.LocalServingHost, strconv.Itoa(w.LocalServingPort))
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if !mgr.GetCache().WaitForCacheSync(ctx) {
		st.b.Fatal("the manager's cache did not sync")
	}
	for ctx.Err() == nil {
		if conn, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
			_ = conn.Close()
			break
		}
		select {
		case <-ctx.Done():
		case <-time.After(20 * time.Millisecond):
		}
	}
	return &stormManager{requests: requests, server: server, stop: func() { st.must(stop()) }}
}

// stormResult is what one storm measured from the creators' side.
type stormResult struct {
	elapsed              time.Duration
	vmiCreate, podCreate measure.Latencies
	payload              measure.Latencies
	served, discovered   atomic.Int64
	payloads             atomic.Int64
	// cpu is the CPU time each process spent while the creators ran, per
	// pair.
	cpu string
}

func (r *stormResult) rate() float64 { return stormVMIs / r.elapsed.Seconds() }

// storm creates stormVMIs VMIs in a new namespace name, each followed by its
// launcher Pod, from creators goroutines; with serve, under one
// MetadataService created first, and waits until every payload Secret is
// there.
func (st *stormEnv) storm(name string, creators int, serve bool) *stormResult {
	st.b.Helper()
	ctx := context.Background()
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name}}
	st.must(st.c.Create(ctx, ns))
	res := &stormResult{}
	created := sync.Map{} // VMI name → time its creation returned
	allPayloads := make(chan struct{})
	if serve {
		st.must(st.c.Create(ctx, fixtures.MetadataService(name, "web", imdsv1alpha1.MetadataServiceSpec{})))
		stopWatch := st.watchPayloads(name, &created, res, allPayloads)
		defer stopWatch()
	}

	jobs := make(chan int)
	var wg sync.WaitGroup
	start, cpuBefore := time.Now(), st.cpu.sample()
	profileAPIServer(st.cfg, name, stormProfileDuration)
	for range creators {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range jobs {
				vmi := fixtures.VMI(name, fmt.Sprintf("vm-%04d", i), map[string]string{"app": "storm"})
				t0 := time.Now()
				if err := st.c.Create(ctx, vmi); err != nil {
					st.b.Errorf("creating VMI %d: %v", i, err)
					continue
				}
				t1 := time.Now()
				res.vmiCreate.Add(t1.Sub(t0))
				created.Store(vmi.Name, t1)
				if fw := vmi.Spec.Domain.Firmware; fw != nil && fw.Serial == controllers.NoCloudSerial {
					res.discovered.Add(1)
				}
				pod := fixtures.LauncherPod(vmi)
				if err := st.c.Create(ctx, pod); err != nil {
					st.b.Errorf("creating the launcher Pod of VMI %d: %v", i, err)
					continue
				}
				res.podCreate.Add(time.Since(t1))
				if controllers.HasSidecar(pod) {
					res.served.Add(1)
				}
			}
		}()
	}
	for i := range stormVMIs {
		jobs <- i
	}
	close(jobs)
	wg.Wait()
	res.elapsed = time.Since(start)
	_, res.cpu = st.cpu.since(cpuBefore, stormVMIs)
	if serve {
		select {
		case <-allPayloads:
		case <-time.After(stormPayloadTimeout):
			st.b.Logf("%s: only %d of %d payloads after %v", name, res.payloads.Load(), stormVMIs, stormPayloadTimeout)
		}
	}
	return res
}

// watchPayloads records, in res, when each payload Secret of namespace
// first reaches a watcher's cache, relative to its VMI's creation, and
// closes all when every VMI has one.
func (st *stormEnv) watchPayloads(namespace string, created *sync.Map, res *stormResult, all chan struct{}) func() {
	st.b.Helper()
	wcache, err := cache.New(st.cfg, cache.Options{Scheme: st.scheme, DefaultNamespaces: map[string]cache.Config{namespace: {}}})
	st.must(err)
	inf, err := wcache.GetInformer(context.Background(), &corev1.Secret{})
	st.must(err)
	var seen sync.Map
	_, err = inf.AddEventHandler(toolscache.ResourceEventHandlerFuncs{AddFunc: func(obj any) {
		s, ok := obj.(*corev1.Secret)
		if !ok || s.Labels[imdsv1alpha1.LabelManagedBy] != imdsv1alpha1.ManagedByValue || s.Labels[imdsv1alpha1.LabelInstanceUID] == "" {
			return // not an instance's payload (the service's shared one, say)
		}
		now := time.Now()
		if _, dup := seen.LoadOrStore(s.Name, true); dup {
			return
		}
		if t, ok := created.Load(s.Annotations[imdsv1alpha1.AnnotationInstanceName]); ok {
			res.payload.Add(max(0, now.Sub(t.(time.Time))))
		}
		if res.payloads.Add(1) == stormVMIs {
			close(all)
		}
	}})
	st.must(err)
	ctx, cancel := context.WithCancel(context.Background())
	go func() { _ = wcache.Start(ctx) }()
	if !wcache.WaitForCacheSync(ctx) {
		st.b.Fatal("the payload watcher did not sync")
	}
	return cancel
}

// timedServer is the manager's webhook server, timing each webhook's
// handling of its requests.
type timedServer struct {
	webhook.Server
	mu  sync.Mutex
	lat map[string]*measure.Latencies
}

func (s *timedServer) latencies(path string) *measure.Latencies {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.lat == nil {
		s.lat = map[string]*measure.Latencies{}
	}
	if s.lat[path] == nil {
		s.lat[path] = &measure.Latencies{}
	}
	return s.lat[path]
}

// reset forgets the timings so far.
func (s *timedServer) reset() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, l := range s.lat {
		l.Reset()
	}
}

// Register times hook.
func (s *timedServer) Register(path string, hook http.Handler) {
	l := s.latencies(path)
	s.Server.Register(path, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		hook.ServeHTTP(w, r)
		l.Add(time.Since(start))
	}))
}

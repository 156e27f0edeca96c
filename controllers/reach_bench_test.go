package controllers

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"strconv"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"

	"github.com/kubevirt-imds/kubevirt-imds/api/payload"
	imdsv1alpha1 "github.com/kubevirt-imds/kubevirt-imds/api/v1alpha1"
	"github.com/kubevirt-imds/kubevirt-imds/test/controlplane"
)

// benchScale reads a count from the environment, else def: the defaults
// keep `make bench` short; IMDS_BENCH_VMIS=10000 IMDS_BENCH_SERVICES=100
// IMDS_BENCH_UNRELATED=10000 is the scale of a large cluster.
func benchScale(b *testing.B, name string, def int) int {
	b.Helper()
	v := os.Getenv(name)
	if v == "" {
		return def
	}
	n, err := strconv.Atoi(v)
	if err != nil || n <= 0 {
		b.Fatalf("%s=%q: want a positive count", name, v)
	}
	return n
}

// BenchmarkManagerReach measures what the manager holds in memory on a
// cluster full of Secrets and ConfigMaps unrelated to any VM: VMIs
// (IMDS_BENCH_VMIS, default 1,000) across services (IMDS_BENCH_SERVICES,
// default 10) that share a 16 KiB cloud-config Secret, among
// IMDS_BENCH_UNRELATED unrelated 10 KiB Secrets and as many ConfigMaps
// (default 2,000 each). It reports the manager's live heap once converged
// (after a GC, less the process's heap before the manager started), the time
// to converge, the writes per VMI and the payload bytes per VMI (the shared
// documents included), then the time and writes for an edit of one service's
// vendor-data, which changes that service's shared payload only. Last, on
// Linux, the manager binary converges the same cluster again as a process of
// its own: its resident memory is the number to size the Deployment by.
func BenchmarkManagerReach(b *testing.B) {
	vmis := benchScale(b, "IMDS_BENCH_VMIS", 1000)
	services := benchScale(b, "IMDS_BENCH_SERVICES", 10)
	unrelated := benchScale(b, "IMDS_BENCH_UNRELATED", 2000)
	env, cfg, err := controlplane.Start(controlplane.Options{})
	if err != nil {
		b.Skip(err.Error())
	}
	defer func() { _ = env.Stop() }()
	s := newBenchScheme(b)
	cfg.QPS, cfg.Burst = 1000, 2000 // setup only; the manager uses its own
	c, err := client.New(cfg, client.Options{Scheme: s})
	must(b, err)
	ctx := context.Background()
	const ns = "reach"
	must(b, c.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}))
	must(b, c.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: benchOperatorNamespace}}))

	filler := strings.Repeat("x", 10<<10)
	took := parallel(b, 2*unrelated, 32, func(i int) error {
		meta := metav1.ObjectMeta{Namespace: ns, Name: fmt.Sprintf("unrelated-%05d", i/2)}
		if i%2 == 0 {
			return c.Create(ctx, &corev1.Secret{ObjectMeta: meta, Data: map[string][]byte{"blob": []byte(filler)}})
		}
		return c.Create(ctx, &corev1.ConfigMap{ObjectMeta: meta, Data: map[string]string{"blob": filler}})
	})
	b.Logf("created %d unrelated 10 KiB Secrets and %d ConfigMaps in %v", unrelated, unrelated, took)

	cloudConfig := "#cloud-config\n" + strings.Repeat("# padding to a 16 KiB cloud-config\n", (16<<10)/36)
	must(b, c.Create(ctx, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "user-data"},
		Data: map[string][]byte{"cloud-config": []byte(cloudConfig)}}))
	for i := range services {
		must(b, c.Create(ctx, newMDS(ns, fmt.Sprintf("group-%03d", i), imdsv1alpha1.MetadataServiceSpec{
			Selector:   metav1.LabelSelector{MatchLabels: map[string]string{"group": fmt.Sprint(i)}},
			UserData:   &imdsv1alpha1.DataSource{SecretRef: &imdsv1alpha1.KeyReference{Name: "user-data", Key: "cloud-config"}},
			VendorData: &imdsv1alpha1.DataSource{Inline: ptr("#cloud-config\npackages: [jq]\n")},
		})))
	}
	took = parallel(b, vmis, 32, func(i int) error {
		return c.Create(ctx, newVMI(ns, fmt.Sprintf("vm-%05d", i), map[string]string{"group": fmt.Sprint(i % services)}))
	})
	b.Logf("created %d VMIs across %d services in %v", vmis, services, took)

	for b.Loop() {
		before := liveHeap()
		writes := &writeCounter{counts: map[string]int{}}
		start := time.Now()
		stop := startBenchManager(b, cfg, s, writes)
		waitConverged(b, ctx, c, ns, vmis)
		elapsed := time.Since(start)
		heap := liveHeap() - before
		writeHeapProfile(b, os.Getenv("IMDS_BENCH_HEAPPROFILE"))
		total, detail := writes.snapshot()
		b.ReportMetric(float64(heap)/(1<<20), "heap-MiB")
		b.ReportMetric(elapsed.Seconds(), "s/converge")
		b.ReportMetric(float64(total)/float64(vmis), "writes/VMI")
		b.Logf("converged in %v: live heap +%.1f MiB, %d sources' content held, %d writes (%s)",
			elapsed, float64(heap)/(1<<20), benchReconciler.Sources.Held(), total, detail)
		perVMI := payloadBytesPerVMI(b, ctx, c, ns)
		b.ReportMetric(perVMI/1024, "payload-KiB/VMI")
		b.Logf("payload Secrets hold %.1f KiB per VMI (data, as etcd stores it)", perVMI/1024)

		base := writes.total.Load()
		mds := &imdsv1alpha1.MetadataService{}
		must(b, c.Get(ctx, types.NamespacedName{Namespace: ns, Name: "group-000"}, mds))
		mds.Spec.VendorData = &imdsv1alpha1.DataSource{Inline: ptr("#cloud-config\npackages: [jq, curl]\n")}
		start = time.Now()
		must(b, c.Update(ctx, mds))
		perService := waitVendorData(b, ctx, c, ns, "group-000", "#cloud-config\npackages: [jq, curl]\n")
		editWrites := writes.total.Load() - base
		b.ReportMetric(time.Since(start).Seconds(), "s/edit")
		b.ReportMetric(float64(editWrites)/float64(perService), "edit-writes/VMI")
		b.Logf("an edit of one service's vendor-data reached its %d VMIs in %v: %d writes",
			perService, time.Since(start), editWrites)
		stop()
	}

	// The live heap leaves out what a process adds (the runtime, stacks,
	// memory the collector has not returned): the manager binary, run as
	// the image runs it, converges again from every payload deleted.
	if runtime.GOOS != "linux" {
		return
	}
	mem, took := managerProcessRSS(b, ctx, env, c, ns, vmis)
	b.ReportMetric(mem["VmRSS"]/(1<<20), "process-rss-MiB")
	b.ReportMetric(mem["VmHWM"]/(1<<20), "process-peak-rss-MiB")
	b.Logf("the manager process rewrote %d payloads in %v: resident %.1f MiB once converged (anonymous %.1f, file %.1f), peak %.1f MiB",
		vmis, took, mem["VmRSS"]/(1<<20), mem["RssAnon"]/(1<<20), mem["RssFile"]/(1<<20), mem["VmHWM"]/(1<<20))
}

// managerProcessRSS deletes the instances' payload Secrets in ns, runs the
// operator binary's manager (webhooks off, as a cluster-admin) until it has
// written them again, and returns its resident memory then and the time it
// took: the memory lines of /proc/PID/status in bytes
// (VmRSS, VmHWM, RssAnon, RssFile). It runs as the Deployment in
// config/manager runs it: one CPU, its memory limit as GOMEMLIMIT, and
// GOGC=25.
func managerProcessRSS(b *testing.B, ctx context.Context, env *envtest.Environment, c client.Client, ns string, vmis int) (mem map[string]float64, took time.Duration) {
	b.Helper()
	dir := b.TempDir()
	bins, err := controlplane.BuildBinaries(ctx, dir)
	must(b, err)
	user, err := env.AddUser(envtest.User{Name: "reach-bench-manager", Groups: []string{"system:masters"}}, nil)
	must(b, err)
	kubeconfig, err := user.KubeConfig()
	must(b, err)
	must(b, os.WriteFile(filepath.Join(dir, "kubeconfig"), kubeconfig, 0o600))
	must(b, c.DeleteAllOf(ctx, &corev1.Secret{}, client.InNamespace(ns),
		client.MatchingLabels{imdsv1alpha1.LabelManagedBy: imdsv1alpha1.ManagedByValue}, client.HasLabels{imdsv1alpha1.LabelInstanceUID}))

	start := time.Now()
	cmd := exec.CommandContext(ctx, bins.Operator, "manager", "--enable-webhooks=false",
		"--metrics-bind-address=0", "--health-probe-bind-address=127.0.0.1:0")
	cmd.Env = []string{"KUBECONFIG=" + filepath.Join(dir, "kubeconfig"), "POD_NAMESPACE=" + benchOperatorNamespace,
		"GOMAXPROCS=1", fmt.Sprintf("GOMEMLIMIT=%d", 512<<20), "GOGC=25"}
	var logs strings.Builder
	cmd.Stdout, cmd.Stderr = &logs, &logs
	must(b, cmd.Start())
	defer func() {
		_ = cmd.Process.Signal(os.Interrupt)
		_ = cmd.Wait()
		if b.Failed() {
			b.Logf("manager output:\n%s", logs.String())
		}
	}()
	waitConverged(b, ctx, c, ns, vmis)
	took = time.Since(start)
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", cmd.Process.Pid))
	must(b, err)
	mem = map[string]float64{}
	for _, line := range strings.Split(string(data), "\n") {
		field, v, _ := strings.Cut(line, ":")
		switch field {
		case "VmRSS", "VmHWM", "RssAnon", "RssFile":
			kib, err := strconv.ParseFloat(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 64)
			must(b, err)
			mem[field] = kib * 1024
		}
	}
	return mem, took
}

// writeHeapProfile writes the process's heap profile to path, if one is
// given, to see what the converged manager holds (go tool pprof).
func writeHeapProfile(b *testing.B, path string) {
	b.Helper()
	if path == "" {
		return
	}
	f, err := os.Create(path)
	must(b, err)
	defer func() { must(b, f.Close()) }()
	must(b, pprof.WriteHeapProfile(f))
}

// liveHeap is the process's heap in use after a full collection.
func liveHeap() uint64 {
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.HeapAlloc
}

// waitVendorData waits until every payload Secret of service in ns serves
// want as vendor-data (its own, or its service's shared document's), and
// returns how many there are.
func waitVendorData(b *testing.B, ctx context.Context, c client.Client, ns, service, want string) int {
	b.Helper()
	deadline := time.Now().Add(10 * time.Minute)
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for range tick.C {
		if time.Now().After(deadline) {
			b.Fatal("the edit did not reach every payload within 10 minutes")
		}
		var secrets corev1.SecretList
		if err := c.List(ctx, &secrets, client.InNamespace(ns), client.MatchingLabels{imdsv1alpha1.LabelMetadataService: service},
			client.HasLabels{imdsv1alpha1.LabelInstanceUID}); err != nil {
			continue
		}
		var shared corev1.Secret
		var sharedDoc *payload.SharedDocument
		if err := c.Get(ctx, types.NamespacedName{Namespace: ns, Name: imdsv1alpha1.SharedPayloadSecretName(service)}, &shared); err == nil {
			sharedDoc, _ = payload.ParseShared(shared.Data[payload.SharedKey])
		}
		done := len(secrets.Items) > 0
		for i := range secrets.Items {
			doc, err := payload.Parse(secrets.Items[i].Data[payload.SecretKey])
			if err == nil {
				doc, err = doc.WithShared(sharedDoc)
			}
			done = done && err == nil && string(doc.VendorData) == want
		}
		if done {
			return len(secrets.Items)
		}
	}
	return 0
}

// payloadBytesPerVMI is the size of the data of the payload Secrets in ns,
// the services' shared ones included, per VMI.
func payloadBytesPerVMI(b *testing.B, ctx context.Context, c client.Client, ns string) float64 {
	b.Helper()
	var secrets corev1.SecretList
	must(b, c.List(ctx, &secrets, client.InNamespace(ns), client.MatchingLabels{imdsv1alpha1.LabelManagedBy: imdsv1alpha1.ManagedByValue}))
	if len(secrets.Items) == 0 {
		return 0
	}
	total, instances := 0, 0
	for i := range secrets.Items {
		for _, v := range secrets.Items[i].Data {
			total += len(v)
		}
		if secrets.Items[i].Labels[imdsv1alpha1.LabelInstanceUID] != "" {
			instances++
		}
	}
	if instances == 0 {
		return 0
	}
	return float64(total) / float64(instances)
}

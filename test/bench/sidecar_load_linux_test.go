package bench

import (
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/go-logr/logr/testr"

	"github.com/kubevirt-imds/kubevirt-imds/sidecar/nodeagent"
	"github.com/kubevirt-imds/kubevirt-imds/sidecar/store/storetest"
	"github.com/kubevirt-imds/kubevirt-imds/test/controlplane"
	"github.com/kubevirt-imds/kubevirt-imds/test/podnet"
	"github.com/kubevirt-imds/kubevirt-imds/webhooks"
)

// loadResult is one row of hack/loadtest's report.
type loadResult struct {
	Target string  `json:"target"`
	Mode   string  `json:"mode"`
	Errors int     `json:"errors"`
	RPS    float64 `json:"rps"`
	P50    float64 `json:"p50_ms"`
	P99    float64 `json:"p99_ms"`
}

const (
	loadRequests = 10000
	loadRounds   = 3
	loadWorkers  = 4
	// benchPath is what a booting cloud-init fetches first.
	benchPath = "/nocloud/meta-data"
	// referenceAddr is the masquerade gateway: the guest reaches it over the
	// same bridge and Pod kernel as 169.254.169.254.
	referenceAddr = "10.0.2.1:8080"
	// floorAddr is where testdata/libfloor listens, beside the bare server.
	floorAddr = "10.0.2.1:8081"
	// idleAt is when, after their start, the sidecar's and the bare
	// server's idle memory is read: both have served one request and then
	// sat without traffic, as a VM's sidecar spends nearly all its life.
	idleAt = 60 * time.Second
)

// BenchmarkSidecarLoad runs the real sidecar as the webhook injects it by
// default — network-setup mode "node", the per-VM binary plumbed by the node
// agent (in this process, as its DaemonSet would) — in a masquerade Pod
// namespace and loads it from the guest's namespace, keep-alive and with a
// new connection per request (as cloud-init and curl do), beside a bare
// net/http server (testdata/bareserver, built as the sidecar is) run in the
// same Pod namespace and measured in the same run. It reports requests/s,
// p50/p99 latency, the sidecar's throughput relative to the bare server,
// both processes' resident memory 60 s after their start, having served one
// request (the state a VM's sidecar spends its life in), their ratio
// (idle-rss-ratio; goal ≤ 1.2), the same for testdata/libfloor (a bare
// server that links the libraries the sidecar is built from and has each do
// the least of its job: libfloor-idle-rss-ratio), the sidecar's after load,
// its binary's size, the time from its exec to its first answer to the
// guest, and the CPU it uses per hour idle; and, from a second Pod, the idle memory of a sidecar
// of mode "sidecar" (the netadmin binary, which plumbs its own Pod). Needs
// root (network namespaces).
func BenchmarkSidecarLoad(b *testing.B) {
	if err := podnet.Available(); err != nil {
		b.Skip(err.Error())
	}
	dir := b.TempDir()
	// The sidecar as the image ships it: its resident memory is measured.
	bins, err := controlplane.BuildBinaries(context.Background(), dir)
	if err != nil {
		b.Fatal(err)
	}
	sidecarBin, loadBin, bareBin := bins.Sidecar, filepath.Join(dir, "loadtest"), filepath.Join(dir, "bareserver")
	floorBin := filepath.Join(dir, "libfloor")
	for bin, pkg := range map[string]string{loadBin: "./hack/loadtest", bareBin: "./test/bench/testdata/bareserver",
		floorBin: "./test/bench/testdata/libfloor"} {
		cmd := exec.Command("go", "build", "-trimpath", "-ldflags=-s -w", "-o", bin, pkg)
		cmd.Dir, cmd.Env = controlplane.RepoRoot(), append(os.Environ(), "CGO_ENABLED=0")
		if out, err := cmd.CombinedOutput(); err != nil {
			b.Fatalf("building %s: %v\n%s", pkg, err, out)
		}
	}

	pod := podnet.NewPod(b)
	pod.Plumb(b, podnet.Masquerade)
	plumbedPod := podnet.NewPod(b)
	plumbedPod.Plumb(b, podnet.Masquerade)
	agentCtx, stopAgent := context.WithCancel(context.Background())
	agentDone := make(chan error, 1)
	go func() {
		agentDone <- (&nodeagent.Agent{Executable: sidecarBin, Log: testr.NewWithInterface(b, testr.Options{})}).Run(agentCtx)
	}()
	b.Cleanup(func() {
		stopAgent()
		if err := <-agentDone; err != nil {
			b.Errorf("node agent: %v", err)
		}
	})
	payloadDir := filepath.Join(dir, "payload")
	d, err := storetest.NewDir(payloadDir)
	if err != nil {
		b.Fatal(err)
	}
	if err := d.WriteDocument(storetest.Document()); err != nil {
		b.Fatal(err)
	}

	// The rate limit is raised for the run: the point is the serving path.
	// The rate limit is raised for the run: the point is the serving path.
	// Both processes get the environment the webhook gives the sidecar.
	env := append(os.Environ(), fmt.Sprintf("GOMEMLIMIT=%d", containerLimit), "GOMAXPROCS=1")
	started := time.Now()
	serveArgs := []string{"serve", "--payload-dir", payloadDir, "--token-dir", payloadDir,
		"--rate-limit", "1000000", "--burst", "1000000", "--log-level", "error"}
	// The flags the webhook gives a sidecar of mode "node" (webhooks/pod.go).
	sidecar := start(b, pod, env, sidecarBin, slices.Concat(serveArgs, []string{"--network-setup=node",
		"--listen-port=" + strconv.Itoa(webhooks.ListenPort), "--mac-seed=bench-vmi-uid", "--instance=bench/vm"})...)
	bare := start(b, pod, env, bareBin, "-listen", referenceAddr, "-body-size", "160")
	floor := start(b, pod, env, floorBin, "-listen", floorAddr, "-payload-dir", payloadDir)
	plumbed := start(b, plumbedPod, env, sidecarBin, slices.Concat(serveArgs, []string{"--network-setup=sidecar"})...)
	waitReady(b, pod)
	waitServed(b, pod, "http://169.254.169.254"+benchPath)
	serving := time.Since(started)
	waitServed(b, pod, "http://"+referenceAddr+benchPath)
	waitServed(b, pod, "http://"+floorAddr+benchPath)
	waitReady(b, plumbedPod)
	waitServed(b, plumbedPod, "http://169.254.169.254"+benchPath)
	// Idle means idle: no guest traffic until a minute after the start. This
	// is the measurement window, not a wait for anything to happen.
	cpuBefore, idleFrom := cpuTime(b, sidecar.Process.Pid), time.Now()
	<-time.After(time.Until(started.Add(idleAt)))
	idleCPU := float64(cpuTime(b, sidecar.Process.Pid)-cpuBefore) / float64(time.Since(idleFrom))
	idle, bareIdle, plumbedIdle := rss(b, sidecar.Process.Pid), rss(b, bare.Process.Pid), rss(b, plumbed.Process.Pid)
	floorIdle := rss(b, floor.Process.Pid)
	b.Logf("idle sidecar: %s", memoryLine(b, sidecar.Process.Pid))
	b.Logf("idle bare net/http server: %s", memoryLine(b, bare.Process.Pid))
	b.Logf("idle server linking the sidecar's libraries: %s", memoryLine(b, floor.Process.Pid))
	b.Logf("idle sidecar of mode \"sidecar\": %s", memoryLine(b, plumbed.Process.Pid))

	for b.Loop() {
		// Alternate the two targets over several rounds and compare medians,
		// so a burst of other load on the machine hits both alike.
		samples := map[string][]loadResult{}
		for range loadRounds {
			for _, t := range []struct{ name, url string }{
				{"sidecar", "http://169.254.169.254" + benchPath},
				{"bare", "http://" + referenceAddr + benchPath},
			} {
				for _, r := range runLoad(b, pod, loadBin, t.url) {
					if r.Errors > 0 {
						b.Errorf("%s %s: %d errors", t.name, r.Mode, r.Errors)
					}
					key := t.name + "-" + r.Mode
					samples[key] = append(samples[key], r)
				}
			}
		}
		median := map[string]loadResult{}
		for key, rs := range samples {
			slices.SortFunc(rs, func(a, b loadResult) int { return cmp.Compare(a.RPS, b.RPS) })
			m := rs[len(rs)/2]
			median[key] = m
			b.ReportMetric(m.RPS, key+"-req/s")
			b.ReportMetric(m.P50, key+"-p50-ms")
			b.ReportMetric(m.P99, key+"-p99-ms")
		}
		for _, mode := range []string{"keepalive", "newconn"} {
			b.ReportMetric(median["sidecar-"+mode].RPS/median["bare-"+mode].RPS, "ratio-"+mode)
		}
	}
	b.ReportMetric(idle/1024, "idle-rss-MiB")
	b.ReportMetric(bareIdle/1024, "bare-idle-rss-MiB")
	b.ReportMetric(idle/bareIdle, "idle-rss-ratio")
	b.ReportMetric(floorIdle/1024, "libfloor-idle-rss-MiB")
	b.ReportMetric(floorIdle/bareIdle, "libfloor-idle-rss-ratio")
	b.ReportMetric(plumbedIdle/1024, "sidecar-mode-idle-rss-MiB")
	b.ReportMetric(rss(b, sidecar.Process.Pid)/1024, "loaded-rss-MiB")
	info, err := os.Stat(sidecarBin)
	if err != nil {
		b.Fatal(err)
	}
	b.ReportMetric(float64(info.Size())/(1<<20), "binary-MiB")
	b.ReportMetric(serving.Seconds()*1000, "exec-to-serving-ms")
	b.ReportMetric(idleCPU*time.Hour.Seconds(), "idle-cpu-s/hour")
	b.Logf("after load: %s", memoryLine(b, sidecar.Process.Pid))
}

// memoryLine summarises the resident set: anonymous (heap, stacks) and file
// pages (the executable).
func memoryLine(b *testing.B, pid int) string {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		b.Fatal(err)
	}
	var parts []string
	for _, line := range strings.Split(string(data), "\n") {
		for _, key := range []string{"VmRSS:", "RssAnon:", "RssFile:"} {
			if v, ok := strings.CutPrefix(line, key); ok {
				parts = append(parts, key+" "+strings.TrimSpace(v))
			}
		}
	}
	return strings.Join(parts, ", ")
}

// waitReady polls the sidecar's admin endpoint inside the Pod.
func waitReady(b *testing.B, pod *podnet.Pod) {
	client := pod.HTTPClient(time.Second)
	deadline := time.Now().Add(time.Minute)
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for range tick.C {
		if time.Now().After(deadline) {
			b.Fatal("sidecar not ready within a minute")
		}
		resp, err := client.Get("http://127.0.0.2:8081/readyz")
		if err != nil {
			continue
		}
		_ = resp.Body.Close()
		if resp.StatusCode == http.StatusOK {
			return
		}
	}
}

// start runs bin in pod's namespace until the benchmark ends.
func start(b *testing.B, pod *podnet.Pod, env []string, bin string, args ...string) *exec.Cmd {
	cmd := pod.Command(context.Background(), bin, args...)
	cmd.Env, cmd.Stderr = env, os.Stderr
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() {
		_ = cmd.Process.Signal(os.Interrupt)
		_ = cmd.Wait()
	})
	return cmd
}

// waitServed polls url from the guest until it answers 200: both servers
// have then served one request, as a VM's sidecar has once cloud-init ran.
func waitServed(b *testing.B, pod *podnet.Pod, url string) {
	deadline := time.Now().Add(time.Minute)
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for range tick.C {
		if time.Now().After(deadline) {
			b.Fatalf("%s not served within a minute", url)
		}
		if code, _, err := pod.GuestGet(context.Background(), url); err == nil && code == http.StatusOK {
			return
		}
	}
}

func runLoad(b *testing.B, pod *podnet.Pod, loadBin, url string) []loadResult {
	out, err := pod.Guest.Command(context.Background(), loadBin, "-url", url, "-n", strconv.Itoa(loadRequests),
		"-c", strconv.Itoa(loadWorkers), "-modes", "keepalive,newconn", "-timeout", "2m").Output()
	if err != nil {
		b.Fatalf("loadtest %s: %v", url, err)
	}
	var rep struct {
		Results []loadResult `json:"results"`
	}
	if err := json.Unmarshal(out, &rep); err != nil {
		b.Fatalf("loadtest output: %v\n%s", err, out)
	}
	for _, r := range rep.Results {
		b.Logf("%-40s %-9s %8.0f req/s  p50 %.2f ms  p99 %.2f ms  errors %d", url, r.Mode, r.RPS, r.P50, r.P99, r.Errors)
	}
	return rep.Results
}

// cpuTime is the CPU time all of the process's threads have run, from the
// scheduler's nanosecond accounting (clock ticks are too coarse for an idle
// process).
func cpuTime(b *testing.B, pid int) time.Duration {
	tasks, err := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/schedstat", pid))
	if err != nil || len(tasks) == 0 {
		b.Fatalf("no threads of process %d: %v", pid, err)
	}
	var total time.Duration
	for _, t := range tasks {
		data, err := os.ReadFile(t)
		if err != nil {
			continue // the thread exited
		}
		ns, err := strconv.ParseInt(strings.Fields(string(data))[0], 10, 64)
		if err != nil {
			b.Fatal(err)
		}
		total += time.Duration(ns)
	}
	return total
}

// rss is the process's resident set in KiB.
func rss(b *testing.B, pid int) float64 { return float64(statusKiB(b, pid, "VmRSS")) }

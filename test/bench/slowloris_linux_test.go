package bench

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/kubevirt-imds/kubevirt-imds/sidecar/store/storetest"
	"github.com/kubevirt-imds/kubevirt-imds/test/controlplane"
	"github.com/kubevirt-imds/kubevirt-imds/test/podnet"
)

const (
	// attackConns is how many connections the guest tries to hold.
	attackConns = 10000
	// attackTime is how long it holds them.
	attackTime = 60 * time.Second
	// probeDelay is how long after the attack begins, and before it ends,
	// the legitimate client starts and stops.
	probeDelay = 5 * time.Second
	// containerLimit is the sidecar container's memory limit
	// (webhooks/pod.go), passed to the runtime as the webhook does.
	containerLimit = 64 << 20
)

// BenchmarkSidecarHeldConnections runs the real sidecar in a masquerade Pod
// namespace, as its container runs it (GOMEMLIMIT 64 MiB, GOMAXPROCS 1),
// while the guest tries to hold 10,000 connections for 60 s: a third send
// half a request head and then a byte every second, a third send nothing,
// a third complete a request and sit idle on the kept-alive connection;
// each reopens at once when the sidecar closes it. Meanwhile a legitimate
// client, another process in the guest (hack/loadtest), makes one request
// after the other, each on a new connection, as cloud-init does.
//
// Targets: peak resident memory under 60 % of the 64 MiB limit
// (peak-rss-%-of-limit < 60; peak-anon-rss-MiB is the part that is not the
// executable's pages, which the kernel can drop), and p99 latency of the legitimate requests
// under 100 ms (legit-p99-ms < 100) with none failing (legit-errors 0). It
// also reports the sidecar's open files at their peak, the CPU it used (in
// cores) and how many attacking connections it closed. Needs root (network
// namespaces).
func BenchmarkSidecarHeldConnections(b *testing.B) {
	if err := podnet.Available(); err != nil {
		b.Skip(err.Error())
	}
	dir := b.TempDir()
	bins, err := controlplane.BuildBinaries(context.Background(), dir)
	if err != nil {
		b.Fatal(err)
	}
	bin := bins.Sidecar
	loadBin := filepath.Join(dir, "loadtest")
	cmd := exec.Command("go", "build", "-trimpath", "-o", loadBin, "./hack/loadtest")
	cmd.Dir = controlplane.RepoRoot()
	if out, err := cmd.CombinedOutput(); err != nil {
		b.Fatalf("building hack/loadtest: %v\n%s", err, out)
	}
	pod := podnet.NewPod(b)
	pod.Plumb(b, podnet.Masquerade)
	d, err := storetest.NewDir(filepath.Join(dir, "payload"))
	if err != nil {
		b.Fatal(err)
	}
	if err := d.WriteDocument(storetest.Document()); err != nil {
		b.Fatal(err)
	}
	sidecar := pod.Command(context.Background(), bin, "serve", "--payload-dir", d.Path, "--token-dir", d.Path, "--log-level", "info")
	sidecar.Env = append(os.Environ(), fmt.Sprintf("GOMEMLIMIT=%d", containerLimit), "GOMAXPROCS=1")
	// The refusal log lines are rate-limited; they are part of the cost.
	sidecar.Stderr = io.Discard
	if err := sidecar.Start(); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() {
		_ = sidecar.Process.Signal(os.Interrupt)
		_ = sidecar.Wait()
	})
	waitReady(b, pod)
	pid := sidecar.Process.Pid
	b.Logf("before the attack: %s, %d open files", memoryLine(b, pid), openFiles(pid))

	for b.Loop() {
		ctx, cancel := context.WithTimeout(context.Background(), attackTime)
		var closed atomic.Int64
		var wg sync.WaitGroup
		dials := make(chan struct{}, 64)
		for i := range attackConns {
			wg.Add(1)
			go func() {
				defer wg.Done()
				hold(ctx, pod, i%3, dials, &closed)
			}()
		}

		// The legitimate client is a process of its own in the guest, as
		// cloud-init is: one request at a time, each on a new connection,
		// from shortly after the attack begins until shortly before it
		// ends.
		probe := make(chan legitResult, 1)
		go func() {
			select {
			case <-ctx.Done():
				probe <- legitResult{}
				return
			case <-time.After(probeDelay):
			}
			out, err := pod.Guest.Command(context.Background(), loadBin, "-url", "http://169.254.169.254/nocloud/meta-data",
				"-n", "1000000", "-c", "1", "-modes", "newconn", "-timeout", (attackTime - 2*probeDelay).String(), "-request-timeout", "5s").Output()
			var rep struct {
				Results []legitResult `json:"results"`
			}
			if err != nil || json.Unmarshal(out, &rep) != nil || len(rep.Results) != 1 {
				b.Errorf("legitimate client: %v: %s", err, out)
				probe <- legitResult{}
				return
			}
			probe <- rep.Results[0]
		}()
		cpuBefore := cpuSeconds(b, pid)
		maxFiles, maxAnon := 0, int64(0)
		sample := time.NewTicker(200 * time.Millisecond)
	attack:
		for {
			select {
			case <-ctx.Done():
				break attack
			case <-sample.C:
				maxFiles = max(maxFiles, openFiles(pid))
				maxAnon = max(maxAnon, statusKiB(b, pid, "RssAnon")<<10)
			}
		}
		sample.Stop()
		cpu := cpuSeconds(b, pid) - cpuBefore
		peak := peakRSS(b, pid)
		legit := <-probe
		cancel()
		wg.Wait()

		b.ReportMetric(float64(peak)/(1<<20), "peak-rss-MiB")
		b.ReportMetric(100*float64(peak)/containerLimit, "peak-rss-%-of-limit")
		b.ReportMetric(float64(maxAnon)/(1<<20), "peak-anon-rss-MiB")
		b.ReportMetric(float64(maxFiles), "peak-open-files")
		b.ReportMetric(legit.P50, "legit-p50-ms")
		b.ReportMetric(legit.P99, "legit-p99-ms")
		b.ReportMetric(float64(legit.Errors), "legit-errors")
		b.ReportMetric(float64(closed.Load()), "attack-conns-closed")
		b.ReportMetric(cpu/attackTime.Seconds(), "sidecar-cpu-cores")
		b.Logf("legitimate client during the attack: %d requests, p50 %.2f ms, p99 %.2f ms, %d failed; %d attacking connections closed by the sidecar; sidecar CPU %.1f s in %v; peak VmHWM %d KiB (anonymous at most %d KiB, the rest the executable's pages), %d open files at most",
			legit.Requests, legit.P50, legit.P99, legit.Errors, closed.Load(), cpu, attackTime, peak>>10, maxAnon>>10, maxFiles)
		if legit.Errors > 0 || legit.Requests == 0 {
			b.Errorf("legitimate client: %d of %d requests failed (first: %s)", legit.Errors, legit.Requests, legit.FirstError)
		}
	}
}

// hold keeps one attacking connection open until ctx ends, reopening it
// whenever the sidecar closes it. kind 0 sends half a head and then a byte
// a second, 1 sends nothing, 2 completes a request and idles.
func hold(ctx context.Context, pod *podnet.Pod, kind int, dials chan struct{}, closed *atomic.Int64) {
	buf := make([]byte, 1024)
	for ctx.Err() == nil {
		dials <- struct{}{}
		c, err := pod.Guest.Dial(ctx, "tcp4", "169.254.169.254:80")
		<-dials
		if err != nil {
			continue
		}
		stop := context.AfterFunc(ctx, func() { c.Close() })
		var werr error
		switch kind {
		case 0:
			_, werr = io.WriteString(c, "GET /nocloud/meta-data HTTP/1.1\r\nX-Slow: ")
			if werr == nil {
				go func() {
					// The trickle ends with the connection.
					t := time.NewTicker(time.Second)
					defer t.Stop()
					for range t.C {
						if _, err := c.Write([]byte("x")); err != nil {
							return
						}
					}
				}()
			}
		case 2:
			_, werr = io.WriteString(c, "GET /nocloud/meta-data HTTP/1.1\r\nHost: 169.254.169.254\r\n\r\n")
		}
		if werr == nil {
			for {
				if _, err := c.Read(buf); err != nil {
					break
				}
			}
		}
		stop()
		c.Close()
		if ctx.Err() == nil {
			closed.Add(1)
		}
	}
}

// legitResult is the part of hack/loadtest's report the benchmark reads.
type legitResult struct {
	Requests   int     `json:"requests"`
	Errors     int     `json:"errors"`
	P50        float64 `json:"p50_ms"`
	P99        float64 `json:"p99_ms"`
	FirstError string  `json:"first_error"`
}

// cpuSeconds is the CPU time the process has used (user and system).
func cpuSeconds(b *testing.B, pid int) float64 {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		b.Fatal(err)
	}
	// Fields after the command name, which ends with the last ')'.
	f := strings.Fields(string(data[strings.LastIndexByte(string(data), ')')+2:]))
	var utime, stime float64
	if _, err := fmt.Sscan(f[11], &utime); err != nil {
		b.Fatal(err)
	}
	if _, err := fmt.Sscan(f[12], &stime); err != nil {
		b.Fatal(err)
	}
	// USER_HZ is 100 on Linux.
	return (utime + stime) / 100
}

// peakRSS is the process's peak resident set (VmHWM) in bytes: anonymous
// memory and the executable's pages.
func peakRSS(b *testing.B, pid int) int64 { return statusKiB(b, pid, "VmHWM") << 10 }

// statusKiB reads a "Key: N kB" line of the process's status.
func statusKiB(b *testing.B, pid int, key string) int64 {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		b.Fatal(err)
	}
	for _, line := range strings.Split(string(data), "\n") {
		if v, ok := strings.CutPrefix(line, key+":"); ok {
			var kb int64
			if _, err := fmt.Sscanf(strings.TrimSpace(v), "%d kB", &kb); err != nil {
				b.Fatal(err)
			}
			return kb
		}
	}
	b.Fatalf("no %s", key)
	return 0
}

// openFiles counts the process's open file descriptors.
func openFiles(pid int) int {
	fds, _ := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	return len(fds)
}

package webhooks_test

import (
	"bytes"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"k8s.io/client-go/rest"
)

// profileAPIServer writes a CPU profile of kube-apiserver over the next d
// into $STORM_PROFILE_DIR/<name>.apiserver.cpu, in the background, when
// that variable is set: what the API server spends on a storm's behalf
// (go tool pprof -top). The API server serves /debug/pprof to its admin.
func profileAPIServer(cfg *rest.Config, name string, d time.Duration) {
	dir := os.Getenv("STORM_PROFILE_DIR")
	if dir == "" {
		return
	}
	hc, err := rest.HTTPClientFor(cfg)
	if err != nil {
		return
	}
	go func() {
		resp, err := hc.Get(fmt.Sprintf("%s/debug/pprof/profile?seconds=%d", strings.TrimSuffix(cfg.Host, "/"), int(d.Seconds())))
		if err != nil {
			fmt.Fprintln(os.Stderr, "profiling kube-apiserver:", err)
			return
		}
		defer func() { _ = resp.Body.Close() }()
		b, err := io.ReadAll(resp.Body)
		if err != nil || resp.StatusCode != 200 {
			fmt.Fprintln(os.Stderr, "profiling kube-apiserver:", resp.Status, err, string(b))
			return
		}
		_ = os.WriteFile(filepath.Join(dir, name+".apiserver.cpu"), b, 0o644)
	}()
}

// clockTicks is the unit of utime and stime in /proc/<pid>/stat (USER_HZ,
// 100 on every Linux architecture Go supports).
const clockTicks = 100

// cpuMeter samples the CPU time of the processes that share the machine in
// a storm: the control plane envtest started as this process's children
// (kube-apiserver, etcd) and this process (the manager, the creators and the
// payload watcher). On a machine whose cores they all share, throughput
// follows the CPU each pair costs; this says whose.
type cpuMeter struct{ pids map[string]int }

// cpuSample is CPU time per process name.
type cpuSample map[string]time.Duration

// newCPUMeter finds this process's kube-apiserver and etcd children; on a
// system without /proc it measures nothing.
func newCPUMeter() *cpuMeter {
	m := &cpuMeter{pids: map[string]int{"test": os.Getpid()}}
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		comm, ppid, _, ok := procStat(pid)
		if ok && ppid == os.Getpid() && (comm == "kube-apiserver" || comm == "etcd") {
			m.pids[comm] = pid
		}
	}
	return m
}

// sample reads the CPU time each process has used so far.
func (m *cpuMeter) sample() cpuSample {
	s := cpuSample{}
	for name, pid := range m.pids {
		if _, _, cpu, ok := procStat(pid); ok {
			s[name] = cpu
		}
	}
	return s
}

// since is the CPU time used from before to now, per process, and a summary
// per pair ("kube-apiserver 12.3 ms/pair, …").
func (m *cpuMeter) since(before cpuSample, pairs int) (cpuSample, string) {
	now, d := m.sample(), cpuSample{}
	var parts []string
	for _, name := range []string{"kube-apiserver", "etcd", "test"} {
		if _, ok := now[name]; !ok {
			continue
		}
		d[name] = now[name] - before[name]
		parts = append(parts, fmt.Sprintf("%s %.1f ms/pair", name, float64(d[name].Microseconds())/1000/float64(pairs)))
	}
	return d, strings.Join(parts, ", ")
}

// procStat reads comm, ppid and utime+stime from /proc/<pid>/stat.
func procStat(pid int) (comm string, ppid int, cpu time.Duration, ok bool) {
	b, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "stat"))
	if err != nil {
		return "", 0, 0, false
	}
	// comm is parenthesised and may hold spaces: split after its last ')'.
	open, end := bytes.IndexByte(b, '('), bytes.LastIndexByte(b, ')')
	if open < 0 || end < open {
		return "", 0, 0, false
	}
	comm = string(b[open+1 : end])
	f := strings.Fields(string(b[end+1:]))
	// Fields after comm: state(0) ppid(1) … utime(11) stime(12).
	if len(f) < 13 {
		return "", 0, 0, false
	}
	ppid, _ = strconv.Atoi(f[1])
	ut, _ := strconv.ParseInt(f[11], 10, 64)
	st, _ := strconv.ParseInt(f[12], 10, 64)
	return comm, ppid, time.Duration(ut+st) * time.Second / clockTicks, true
}

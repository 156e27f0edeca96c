package nodeagent

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"time"

	"github.com/go-logr/logr"
	"golang.org/x/sys/unix"

	"github.com/kubevirt-imds/kubevirt-imds/sidecar/plumbing"
)

// nsID identifies a network namespace: the device and inode of its nsfs file.
type nsID struct{ dev, ino uint64 }

type worker struct {
	pid    int
	req    Request
	cancel context.CancelFunc
	done   chan struct{}
}

// Run scans until ctx ends, then stops every worker (leaving what they built
// in place, for the next agent to adopt) and returns nil.
func (a *Agent) Run(ctx context.Context) error {
	if a.Proc == "" {
		a.Proc = "/proc"
	}
	interval := a.ScanInterval
	if interval <= 0 {
		interval = DefaultScanInterval
	}
	// Never the agent's own namespace, nor the node's (init's, with hostPID).
	// Its own is this (unlocked) thread's: every thread the Go runtime may
	// run an unlocked goroutine on stays where the process started, whereas
	// /proc/self names the main thread, which stays in a Pod's namespace if
	// a worker that entered one ran on it (Go wedges the main thread rather
	// than ending it with its locked goroutine).
	self, err := nsOf(filepath.Join(a.Proc, "thread-self"))
	if err != nil {
		return fmt.Errorf("reading the agent's own network namespace: %w", err)
	}
	excluded := []nsID{self}
	if host, err := nsOf(filepath.Join(a.Proc, "1")); err == nil {
		excluded = append(excluded, host)
	} else {
		// Without hostPID (or in a sandbox hiding init) there is no node
		// namespace to read; nothing plumbed there would have a k6t bridge.
		a.Log.Info("cannot read the node's network namespace; excluding only the agent's own", "error", err.Error())
	}
	a.workers, a.rejected = map[nsID]*worker{}, map[nsID]string{}
	defer a.stopAll()
	a.Log.Info("node agent started", "proc", a.Proc, "executable", a.Executable, "scanInterval", interval.String())
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		a.scan(ctx, excluded...)
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

// scan starts a worker for every new sidecar namespace, restarts one whose
// sidecar now asks for something else, and stops those whose sidecar is gone.
func (a *Agent) scan(ctx context.Context, excluded ...nsID) {
	found := map[nsID]candidate{}
	entries, err := os.ReadDir(a.Proc)
	if err != nil {
		a.Log.Error(err, "scanning for sidecars")
		return
	}
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		c, ok := a.inspect(pid)
		if !ok || slices.Contains(excluded, c.ns) {
			continue
		}
		if prev, seen := found[c.ns]; seen && prev.pid < pid {
			continue // the oldest process stands for its namespace
		}
		found[c.ns] = c
	}
	for id, w := range a.workers {
		c, ok := found[id]
		select {
		case <-w.done:
			ok = false // it failed; a later scan retries
		default:
		}
		if !ok || c.err != nil || c.req != w.req {
			w.cancel()
			<-w.done
			delete(a.workers, id)
		}
	}
	for id, c := range found {
		if c.err != nil {
			if a.rejected[id] != c.err.Error() {
				a.rejected[id] = c.err.Error()
				a.Log.Info("not plumbing a sidecar", "pid", c.pid, "reason", c.err.Error())
			}
			continue
		}
		delete(a.rejected, id)
		if _, running := a.workers[id]; !running {
			a.workers[id] = a.start(ctx, c)
		}
	}
	for id := range a.rejected {
		if _, ok := found[id]; !ok {
			delete(a.rejected, id)
		}
	}
	scraped := make([]target, 0, len(a.workers))
	for id, w := range a.workers {
		scraped = append(scraped, target{req: w.req, dial: a.dialIn(w.pid, id)})
	}
	a.mu.Lock()
	a.scraped = scraped
	a.mu.Unlock()
}

// dialIn returns a dialer whose sockets are made inside the network
// namespace id of process pid, on a thread of their own that ends with the
// dial (as plumb's does), so that no thread of the agent stays there.
func (a *Agent) dialIn(pid int, id nsID) func(ctx context.Context, network, addr string) (net.Conn, error) {
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		type result struct {
			c   net.Conn
			err error
		}
		done := make(chan result, 1)
		go func() {
			runtime.LockOSThread()
			if err := a.enter(pid, id); err != nil {
				done <- result{err: err}
				return
			}
			c, err := (&net.Dialer{}).DialContext(ctx, network, addr)
			done <- result{c, err}
		}()
		r := <-done
		return r.c, r.err
	}
}

// enter moves the calling (locked) thread into the network namespace id of
// process pid, checking that the pid was not reused meanwhile.
func (a *Agent) enter(pid int, id nsID) error {
	path := filepath.Join(a.Proc, strconv.Itoa(pid), "ns", "net")
	f, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("opening %s: %w", path, err)
	}
	err = unix.Setns(int(f.Fd()), unix.CLONE_NEWNET)
	f.Close()
	if err != nil {
		return fmt.Errorf("entering the network namespace of pid %d: %w", pid, err)
	}
	var st unix.Stat_t
	if err := unix.Stat("/proc/thread-self/ns/net", &st); err != nil {
		return err
	}
	if (nsID{dev: st.Dev, ino: st.Ino}) != id {
		return fmt.Errorf("pid %d moved to another network namespace", pid)
	}
	return nil
}

type candidate struct {
	pid int
	ns  nsID
	req Request
	err error
}

// inspect reads one process; ok is false unless it is a node-mode sidecar.
func (a *Agent) inspect(pid int) (candidate, bool) {
	dir := filepath.Join(a.Proc, strconv.Itoa(pid))
	raw, err := os.ReadFile(filepath.Join(dir, "cmdline"))
	if err != nil || len(raw) == 0 {
		return candidate{}, false
	}
	argv := bytes.Split(bytes.TrimRight(raw, "\x00"), []byte{0})
	args := make([]string, len(argv))
	for i, a := range argv {
		args[i] = string(a)
	}
	req, err := ParseCommandLine(args)
	if errors.Is(err, errNotNodeMode) {
		return candidate{}, false
	}
	if a.Executable != "" {
		if exe, lerr := os.Readlink(filepath.Join(dir, "exe")); lerr != nil || exe != a.Executable {
			return candidate{}, false
		}
	}
	ns, nerr := nsOf(dir)
	if nerr != nil {
		return candidate{}, false // gone, or not ours to read
	}
	return candidate{pid: pid, ns: ns, req: req, err: err}, true
}

func nsOf(procDir string) (nsID, error) {
	var st unix.Stat_t
	if err := unix.Stat(filepath.Join(procDir, "ns", "net"), &st); err != nil {
		return nsID{}, err
	}
	return nsID{dev: st.Dev, ino: st.Ino}, nil
}

func (a *Agent) start(ctx context.Context, c candidate) *worker {
	wctx, cancel := context.WithCancel(ctx)
	w := &worker{pid: c.pid, req: c.req, cancel: cancel, done: make(chan struct{})}
	log := a.Log.WithValues("pid", c.pid, "netns", c.ns.ino, "bridge", c.req.Bridge)
	log.Info("plumbing a sidecar's network namespace", "listenPort", c.req.ListenPort)
	go func() {
		defer close(w.done)
		if err := a.plumb(wctx, c, log); err != nil {
			log.Error(err, "plumbing stopped")
		}
	}()
	return w
}

// plumb runs on a thread of its own inside the sidecar's namespace. The
// thread is never unlocked: Go ends a locked thread with its goroutine, so no
// thread of the agent stays in — and keeps alive — a Pod's namespace.
func (a *Agent) plumb(ctx context.Context, c candidate, log logr.Logger) error {
	runtime.LockOSThread()
	// The pid may have been reused between the scan and the open.
	if err := a.enter(c.pid, c.ns); err != nil {
		return err
	}
	p := &plumbing.Plumber{Inputs: c.req.Inputs(), Log: log}
	return p.Run(ctx)
}

func (a *Agent) stopAll() {
	for id, w := range a.workers {
		w.cancel()
		<-w.done
		delete(a.workers, id)
	}
	a.mu.Lock()
	a.scraped = nil
	a.mu.Unlock()
}

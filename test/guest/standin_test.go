//go:build linux

package guest_test

// A small stand-in for what the real metadata sidecar and a virt-launcher Pod
// provide, so the harness can be proven on its own: a Pod network namespace
// shaped like KubeVirt's masquerade binding (bridge k6t-eth0 10.0.2.1/24, the
// guest's NIC on it as tap0, dnsmasq for KubeVirt's in-Pod DHCP) with
// 169.254.169.254 local to it, and a static HTTP server of NoCloud/OpenStack
// files there. Specs need only the guest namespace's name from it, so they can
// move to the real Pod network and sidecar by swapping this file out.

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"sync"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	"golang.org/x/sys/unix"

	"github.com/kubevirt-imds/kubevirt-imds/test/podnet"
)

const (
	metadataAddr = "169.254.169.254"
	gatewayAddr  = "10.0.2.1"
	guestAddr    = "10.0.2.2"
)

// podNetwork is a Pod network namespace with one guest namespace plugged in.
type podNetwork struct {
	// Pod and Guest are network namespace names.
	Pod, Guest string
	// GuestMAC is the guest NIC's (eth0) MAC address.
	GuestMAC string
}

// newPodNetwork builds the namespaces and starts DHCP in the Pod one. Everything
// is torn down when the current spec ends.
func newPodNetwork(ctx context.Context) *podNetwork {
	GinkgoHelper()
	suffix := randomHex(4)
	n := &podNetwork{Pod: "kvimds-pod-" + suffix, Guest: "kvimds-guest-" + suffix}
	ip(ctx, "netns", "add", n.Pod)
	DeferCleanup(ip, context.Background(), "netns", "del", n.Pod)
	ip(ctx, "netns", "add", n.Guest)
	DeferCleanup(ip, context.Background(), "netns", "del", n.Guest)

	ip(ctx, "-n", n.Pod, "link", "set", "lo", "up")
	ip(ctx, "-n", n.Pod, "link", "add", "k6t-eth0", "type", "bridge")
	ip(ctx, "-n", n.Pod, "addr", "add", gatewayAddr+"/24", "dev", "k6t-eth0")
	ip(ctx, "-n", n.Pod, "link", "set", "k6t-eth0", "up")
	// The guest's end is created straight in its namespace: no name in the
	// host's namespace that parallel runs could collide on.
	ip(ctx, "link", "add", "tap0", "netns", n.Pod, "type", "veth", "peer", "name", "eth0", "netns", n.Guest)
	ip(ctx, "-n", n.Pod, "link", "set", "tap0", "master", "k6t-eth0", "up")
	// A masquerade guest reaches .254 through its gateway, where the Pod's
	// kernel delivers it locally: an address on lo is all the stand-in needs.
	ip(ctx, "-n", n.Pod, "addr", "add", metadataAddr+"/32", "dev", "lo")

	var links []struct {
		Address string `json:"address"`
	}
	Expect(json.Unmarshal([]byte(ip(ctx, "-n", n.Guest, "-j", "link", "show", "eth0")), &links)).To(Succeed())
	Expect(links).To(HaveLen(1))
	n.GuestMAC = links[0].Address

	podnet.ServeMasqueradeDHCP(GinkgoT(), n.Pod, "k6t-eth0", n.GuestMAC)
	return n
}

// metadataServer serves fixed files over HTTP at 169.254.169.254:80 in a Pod
// namespace and records the paths requested.
type metadataServer struct {
	mu       sync.Mutex
	files    map[string]string
	requests []string
}

// serveMetadata starts a metadataServer for files in the Pod namespace pod;
// it stops when the current spec ends. Paths under /openstack/<version>/ are
// answered from /openstack/latest/ for every version the /openstack listing
// offers, as nova does.
func serveMetadata(pod string, files map[string]string) *metadataServer {
	GinkgoHelper()
	s := &metadataServer{files: files}
	l, err := listenInNetns(pod, "tcp4", net.JoinHostPort(metadataAddr, "80"))
	Expect(err).NotTo(HaveOccurred())
	srv := &http.Server{Handler: s, ReadHeaderTimeout: 10 * time.Second}
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = srv.Serve(l)
	}()
	DeferCleanup(func() {
		_ = srv.Close()
		<-done
	})
	return s
}

func (s *metadataServer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	s.requests = append(s.requests, r.URL.Path)
	s.mu.Unlock()
	p := r.URL.Path
	if rest, ok := strings.CutPrefix(p, "/openstack/"); ok {
		if version, file, ok := strings.Cut(rest, "/"); ok && s.offersOpenStack(version) {
			p = "/openstack/latest/" + file
		}
	}
	body, ok := s.files[p]
	if !ok {
		http.NotFound(w, r)
		return
	}
	fmt.Fprintf(GinkgoWriter, "metadata: %s %s\n", r.Method, r.URL.Path)
	_, _ = w.Write([]byte(body))
}

func (s *metadataServer) offersOpenStack(version string) bool {
	for _, v := range strings.Fields(s.files["/openstack"]) {
		if v == version {
			return true
		}
	}
	return false
}

// Requests returns the paths requested so far.
func (s *metadataServer) Requests() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.requests...)
}

// listenInNetns opens a listening socket inside the named network namespace:
// a socket stays in the namespace it was created in, so only this thread has to
// switch, and it switches back before being handed back to the Go scheduler.
func listenInNetns(ns, network, addr string) (net.Listener, error) {
	runtime.LockOSThread()
	orig, err := os.Open("/proc/thread-self/ns/net")
	if err != nil {
		runtime.UnlockOSThread()
		return nil, err
	}
	defer orig.Close()
	target, err := os.Open("/run/netns/" + ns)
	if err != nil {
		runtime.UnlockOSThread()
		return nil, err
	}
	defer target.Close()
	if err := unix.Setns(int(target.Fd()), unix.CLONE_NEWNET); err != nil {
		runtime.UnlockOSThread()
		return nil, fmt.Errorf("entering netns %s: %w", ns, err)
	}
	l, lerr := net.Listen(network, addr)
	if err := unix.Setns(int(orig.Fd()), unix.CLONE_NEWNET); err != nil {
		// Leave the thread locked: the runtime then retires it with the
		// goroutine instead of reusing a thread in the wrong namespace.
		if l != nil {
			l.Close()
		}
		return nil, errors.Join(lerr, fmt.Errorf("leaving netns %s: %w", ns, err))
	}
	runtime.UnlockOSThread()
	return l, lerr
}

// ip runs ip(8) and returns its output, failing the spec on error.
func ip(ctx context.Context, args ...string) string {
	GinkgoHelper()
	out, err := exec.CommandContext(ctx, "ip", args...).CombinedOutput()
	Expect(err).NotTo(HaveOccurred(), "ip %s: %s", strings.Join(args, " "), out)
	return string(out)
}

// ensureTool installs the Debian package pkg when binary is not on PATH.
func ensureTool(ctx context.Context, binary, pkg string) {
	GinkgoHelper()
	if _, err := exec.LookPath(binary); err == nil {
		return
	}
	install := func() error {
		cmd := exec.CommandContext(ctx, "apt-get", "install", "-y", "-q", "--no-install-recommends", pkg)
		cmd.Env = append(os.Environ(), "DEBIAN_FRONTEND=noninteractive")
		cmd.Stdout, cmd.Stderr = GinkgoWriter, GinkgoWriter
		return cmd.Run()
	}
	if install() != nil {
		update := exec.CommandContext(ctx, "apt-get", "update", "-q")
		update.Stdout, update.Stderr = GinkgoWriter, GinkgoWriter
		Expect(update.Run()).To(Succeed(), "apt-get update")
		Expect(install()).To(Succeed(), "apt-get install %s", pkg)
	}
	_, err := exec.LookPath(binary)
	Expect(err).NotTo(HaveOccurred(), "%s still missing after installing %s", binary, pkg)
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

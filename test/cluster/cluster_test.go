//go:build cluster

package cluster_test

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/utils/ptr"
)

var _ = Describe("The local single-node cluster", Ordered, func() {
	var (
		repo, stateDir string
		before         hostState
		ours           []string // links the cluster made, seen while it ran
		timings        = map[string]time.Duration{}
	)

	// cluster runs hack/cluster/cluster.sh on the state directory stateDir,
	// with its output in the spec's log.
	cluster := func(args ...string) time.Duration {
		GinkgoHelper()
		start := time.Now()
		cmd := exec.Command(filepath.Join(repo, clusterScript), args...)
		cmd.Dir = repo
		cmd.Env = append(os.Environ(), "KUBEVIRT_IMDS_CLUSTER_STATE="+stateDir)
		cmd.Stdout = GinkgoWriter
		cmd.Stderr = GinkgoWriter
		Expect(cmd.Run()).To(Succeed(), "cluster.sh %s", strings.Join(args, " "))
		return time.Since(start)
	}

	client := func() *kubernetes.Clientset {
		GinkgoHelper()
		cfg, err := clientcmd.NewNonInteractiveDeferredLoadingClientConfig(
			&clientcmd.ClientConfigLoadingRules{ExplicitPath: filepath.Join(stateDir, "kubeconfig")},
			&clientcmd.ConfigOverrides{CurrentContext: kubeContext}).ClientConfig()
		Expect(err).NotTo(HaveOccurred())
		cs, err := kubernetes.NewForConfig(cfg)
		Expect(err).NotTo(HaveOccurred())
		return cs
	}

	nodeReady := func(ctx context.Context) (corev1.ConditionStatus, error) {
		node, err := client().CoreV1().Nodes().Get(ctx, nodeName, metav1.GetOptions{})
		if err != nil {
			return "", err
		}
		for _, c := range node.Status.Conditions {
			if c.Type == corev1.NodeReady {
				return c.Status, nil
			}
		}
		return corev1.ConditionUnknown, nil
	}

	// remember notes the cluster's links while it runs: its veth pair, its
	// bridge and the Pods' veths on the bridge.
	remember := func() {
		for _, l := range append([]string{nodeLink, peerLink, bridge}, bridgePorts()...) {
			if !containsString(ours, l) {
				ours = append(ours, l)
			}
		}
	}

	// runWebPod imports the test server image and runs a Pod with a main
	// container and a native sidecar, both serving HTTP, behind a ClusterIP
	// Service; it returns the Service's IP.
	runWebPod := func(ctx context.Context, name string) string {
		GinkgoHelper()
		bin, err := os.ReadFile(filepath.Join(stateDir, "bin-dir"))
		Expect(err).NotTo(HaveOccurred())
		cluster("import-binary", filepath.Join(strings.TrimSpace(string(bin)), "testserver"), testImage)

		cs := client()
		probe := func(port int) *corev1.Probe {
			return &corev1.Probe{
				ProbeHandler:  corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{Port: intstr.FromInt32(int32(port))}},
				PeriodSeconds: 1,
			}
		}
		pod := &corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "default", Labels: map[string]string{"app": name}},
			Spec: corev1.PodSpec{
				TerminationGracePeriodSeconds: ptr.To[int64](1),
				InitContainers: []corev1.Container{{
					Name:            "sidecar",
					Image:           testImage,
					ImagePullPolicy: corev1.PullNever,
					Args:            []string{"-listen", ":8081", "-message", "sidecar"},
					RestartPolicy:   ptr.To(corev1.ContainerRestartPolicyAlways),
					ReadinessProbe:  probe(8081),
				}},
				Containers: []corev1.Container{{
					Name:            "web",
					Image:           testImage,
					ImagePullPolicy: corev1.PullNever,
					Args:            []string{"-listen", ":8080"},
					ReadinessProbe:  probe(8080),
				}},
			},
		}
		// The first Pods can meet the node's not-ready taint or a missing
		// default ServiceAccount for a moment after bring-up.
		Eventually(func() error {
			_, err := cs.CoreV1().Pods("default").Create(ctx, pod, metav1.CreateOptions{})
			return err
		}).WithContext(ctx).Should(Succeed())
		svc := &corev1.Service{
			ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "default"},
			Spec: corev1.ServiceSpec{
				Selector: map[string]string{"app": name},
				Ports: []corev1.ServicePort{
					{Name: "web", Port: 80, TargetPort: intstr.FromInt32(8080)},
					{Name: "sidecar", Port: 81, TargetPort: intstr.FromInt32(8081)},
				},
			},
		}
		svc, err = cs.CoreV1().Services("default").Create(ctx, svc, metav1.CreateOptions{})
		Expect(err).NotTo(HaveOccurred())

		By("waiting for the Pod to be Running and Ready, its native sidecar started and ready")
		Eventually(func(g Gomega) {
			p, err := cs.CoreV1().Pods("default").Get(ctx, name, metav1.GetOptions{})
			g.Expect(err).NotTo(HaveOccurred())
			g.Expect(p.Status.Phase).To(Equal(corev1.PodRunning), "Pod status: %+v", p.Status)
			g.Expect(podReady(p)).To(BeTrue(), "Pod conditions: %+v", p.Status.Conditions)
			g.Expect(p.Status.InitContainerStatuses).To(HaveLen(1))
			side := p.Status.InitContainerStatuses[0]
			g.Expect(side.State.Running).NotTo(BeNil(), "sidecar state: %+v", side.State)
			g.Expect(side.Started).To(HaveValue(BeTrue()))
			g.Expect(side.Ready).To(BeTrue())
			g.Expect(inCIDR(p.Status.PodIP, podCIDR)).To(BeTrue(), "Pod IP %q in %s", p.Status.PodIP, podCIDR)
		}).WithContext(ctx).Should(Succeed())
		return svc.Spec.ClusterIP
	}

	// get fetches a URL on a ClusterIP from the host, never an address outside
	// the cluster's Service range.
	get := func(ip string, port int) (string, error) {
		if !inCIDR(ip, serviceCIDR) {
			return "", fmt.Errorf("refusing %s: not in the Service range %s", ip, serviceCIDR)
		}
		c := http.Client{Timeout: 2 * time.Second}
		resp, err := c.Get("http://" + net.JoinHostPort(ip, strconv.Itoa(port)) + "/")
		if err != nil {
			return "", err
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		return string(b), err
	}

	// expectHostAsBefore compares the host with the snapshot taken before the
	// first bring-up.
	expectHostAsBefore := func() {
		GinkgoHelper()
		after := snapshotHost(stateDir)
		Expect(after.processes).To(BeEmpty(), "cluster processes left")
		Expect(after.mounts).To(Equal(before.mounts), "mounts")
		Expect(after.netns).To(Equal(before.netns), "network namespaces in /run/netns")
		for _, l := range ours {
			Expect(after.links).NotTo(ContainElement(l), "link %s made by the cluster", l)
		}
		Expect(minus(before.links, after.links)).To(BeEmpty(), "links that were there before")
		if extra := minus(after.links, before.links); len(extra) > 0 {
			// Other work on this host creates links too; none of these was the cluster's.
			fmt.Fprintf(GinkgoWriter, "links that appeared meanwhile, not the cluster's: %v\n", extra)
		}
		Expect(after.nftTables).To(Equal(before.nftTables), "nftables tables")
		Expect(after.nftKube).To(Equal(before.nftKube), "nftables KUBE-* / kube-proxy lines")
		Expect(after.iptKube).To(Equal(before.iptKube), "iptables KUBE-* lines")
		Expect(after.sysctls).To(Equal(before.sysctls), "sysctls")
		Expect(after.paths).To(Equal(before.paths), "paths outside the state directory")
		Expect(diffEntries(before.entries, after.entries)).To(BeEmpty(), "entries of %v", listedDirs)
		Expect(after.cgroups).To(Equal(before.cgroups), "cgroups")
	}

	BeforeAll(func() {
		wd, err := os.Getwd()
		Expect(err).NotTo(HaveOccurred())
		repo = filepath.Clean(filepath.Join(wd, "..", ".."))
		stateDir = filepath.Join(repo, "tmp", "cluster")
		if _, err := os.Stat(filepath.Join(stateDir, "pids")); err == nil {
			Fail("a local cluster is up (or crashed) in " + stateDir + ": run make cluster-down first")
		}
		// Packages and binaries first: installing packages changes /etc and
		// /var/lib for good, which is not the cluster's doing.
		cluster("prepare")
		before = snapshotHost(stateDir)
		Expect(before.processes).To(BeEmpty())
		DeferCleanup(func() {
			// Whatever failed, leave nothing behind.
			cmd := exec.Command(filepath.Join(repo, clusterScript), "down")
			cmd.Dir = repo
			cmd.Stdout, cmd.Stderr = GinkgoWriter, GinkgoWriter
			_ = cmd.Run()
			for k, v := range timings {
				AddReportEntry(k, v.Round(100*time.Millisecond).String())
				fmt.Fprintf(GinkgoWriter, "timing %s: %s\n", k, v.Round(100*time.Millisecond))
			}
		})
	})

	It("comes up with one command, to a Ready node", func(ctx SpecContext) {
		timings["bring-up (cluster.sh up)"] = cluster("up")
		Eventually(nodeReady).WithContext(ctx).Should(Equal(corev1.ConditionTrue))
		remember()

		By("coming up again while up: nothing to do")
		Expect(cluster("up")).To(BeNumerically("<", 10*time.Second))

		By("measuring the idle node's memory")
		cluster("status")
	}, SpecTimeout(10*time.Minute))

	It("runs a Pod from a locally imported image, with a native sidecar, reachable through a ClusterIP from the host", func(ctx SpecContext) {
		ip := runWebPod(ctx, "web")
		remember()
		Expect(inCIDR(ip, serviceCIDR)).To(BeTrue(), "ClusterIP %q in %s", ip, serviceCIDR)
		Eventually(func() (string, error) { return get(ip, 80) }).WithContext(ctx).
			Should(Equal("hello from web\n"), "the main container through kube-proxy")
		Eventually(func() (string, error) { return get(ip, 81) }).WithContext(ctx).
			Should(Equal("sidecar web\n"), "the native sidecar through kube-proxy")
		cluster("status")
	}, SpecTimeout(10*time.Minute))

	It("comes down and leaves the host as it was", func() {
		remember()
		timings["teardown (cluster.sh down)"] = cluster("down")
		expectHostAsBefore()
	})

	It("comes up after every process of the node was killed with SIGKILL, from another checkout too", func(ctx SpecContext) {
		cluster("up")
		ip := runWebPod(ctx, "web")
		remember()
		Eventually(func() (string, error) { return get(ip, 80) }).WithContext(ctx).Should(Equal("hello from web\n"))

		By("killing every component with SIGKILL: shims, containers, mounts, links and netfilter rules stay")
		pidFiles, err := filepath.Glob(filepath.Join(stateDir, "pids", "*"))
		Expect(err).NotTo(HaveOccurred())
		// The seven components and the init of the node's PID namespace,
		// which stays: killing it would end every process of the node, shims
		// and containers too, which a crash of the components does not.
		Expect(pidFiles).To(HaveLen(8))
		for _, f := range pidFiles {
			if filepath.Base(f) == "node-init" {
				continue
			}
			b, err := os.ReadFile(f)
			Expect(err).NotTo(HaveOccurred())
			pid, err := strconv.Atoi(strings.Fields(string(b))[0])
			Expect(err).NotTo(HaveOccurred())
			Expect(syscall.Kill(pid, syscall.SIGKILL)).To(Succeed(), f)
		}
		Eventually(func() []string {
			var comps []string
			for _, p := range clusterProcesses(stateDir) {
				if !strings.Contains(p, "containerd-shim") && !strings.Contains(p, " in /sys/fs/cgroup/") {
					comps = append(comps, p)
				}
			}
			return comps
		}).Should(BeEmpty())
		crashed := snapshotHost(stateDir)
		Expect(crashed.processes).NotTo(BeEmpty(), "shims and containers outlive the components")
		Expect(crashed.mounts).NotTo(BeEmpty())
		Expect(crashed.links).To(ContainElement(bridge))

		By("coming up again from another checkout, whose up tears the crashed cluster down with that one's baseline")
		crashedState := stateDir
		stateDir = filepath.Join(repo, "tmp", "cluster-other-checkout")
		timings["bring-up after a crash (cluster.sh up)"] = cluster("up")
		Eventually(nodeReady).WithContext(ctx).Should(Equal(corev1.ConditionTrue))
		ip = runWebPod(ctx, "web-again")
		remember()
		Eventually(func() (string, error) { return get(ip, 80) }).WithContext(ctx).Should(Equal("hello from web-again\n"))

		By("coming down again")
		timings["teardown with Pods (cluster.sh down)"] = cluster("down")
		expectHostAsBefore()
		Expect(clusterProcesses(crashedState)).To(BeEmpty(), "the crashed cluster's processes")
		Expect(clusterMounts(crashedState)).To(BeEmpty(), "the crashed cluster's mounts")
	}, SpecTimeout(15*time.Minute))
})

func podReady(p *corev1.Pod) bool {
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

func inCIDR(ip, cidr string) bool {
	_, n, err := net.ParseCIDR(cidr)
	parsed := net.ParseIP(ip)
	return err == nil && parsed != nil && n.Contains(parsed)
}

func containsString(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

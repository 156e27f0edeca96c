package sidecar_test

import (
	"context"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/go-logr/logr"
	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/sys/unix"

	"github.com/kubevirt-imds/kubevirt-imds/sidecar/network"
	"github.com/kubevirt-imds/kubevirt-imds/sidecar/nodeagent"
	"github.com/kubevirt-imds/kubevirt-imds/test/output"
	"github.com/kubevirt-imds/kubevirt-imds/test/podnet"
)

// nodeModeListenPort is where the unprivileged sidecar listens, as the
// webhook renders it: not a privileged port.
const nodeModeListenPort = "8775"

// startAgent runs the node agent in this (root) test process, limited to
// this suite's binary so that sidecars of other suites on the machine are
// left to their own agents. It stops at cleanup.
func startAgent() *output.Buffer {
	_, logs := startAgentRun()
	return logs
}

// startAgentRun is startAgent returning the agent too.
func startAgentRun() (*nodeagent.Agent, *output.Buffer) {
	logs := &output.Buffer{}
	a := &nodeagent.Agent{
		Executable: binary,
		Log:        logr.FromSlogHandler(slog.NewJSONHandler(logs, nil)),
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	DeferCleanup(func() {
		cancel()
		Expect(<-done).To(Succeed())
		if CurrentSpecReport().Failed() {
			GinkgoWriter.Printf("node agent logs:\n%s\n", logs.String())
		}
	})
	return a, logs
}

// sidecarSeries gathers what g exposes of the sidecars' request series,
// one "vmi_namespace/vmi_name/vmi_uid" per series.
func sidecarSeries(g prometheus.Gatherer) []string {
	GinkgoHelper()
	fams, err := g.Gather()
	Expect(err).NotTo(HaveOccurred())
	var out []string
	for _, f := range fams {
		if f.GetName() != "kubevirt_imds_sidecar_requests_total" {
			continue
		}
		for _, m := range f.Metric {
			labels := map[string]string{}
			for _, l := range m.Label {
				labels[l.GetName()] = l.GetValue()
			}
			out = append(out, labels[nodeagent.LabelVMINamespace]+"/"+labels[nodeagent.LabelVMIName]+"/"+labels[nodeagent.LabelVMIUID])
		}
	}
	return out
}

// threadsIn counts this process's threads in pod's network namespace.
func threadsIn(pod *podnet.Pod) int {
	var want unix.Stat_t
	Expect(unix.Stat(filepath.Join("/run/netns", pod.NS.Name), &want)).To(Succeed())
	tasks, err := os.ReadDir("/proc/self/task")
	Expect(err).NotTo(HaveOccurred())
	n := 0
	for _, t := range tasks {
		var st unix.Stat_t
		if unix.Stat(filepath.Join("/proc/self/task", t.Name(), "ns/net"), &st) == nil && st.Ino == want.Ino && st.Dev == want.Dev {
			n++
		}
	}
	return n
}

var _ = Describe("network-setup mode node: an unprivileged sidecar plumbed by the node agent", func() {
	nodeArgs := func(seed string) []string {
		return []string{"--network-setup=node", "--listen-port=" + nodeModeListenPort, "--bridge=k6t-eth0", "--mac-seed=" + seed}
	}

	DescribeTable("serves the guest on 169.254.169.254:80 with no capability at all",
		func(ctx SpecContext, topo podnet.Topology) {
			pod := podnet.NewPod(GinkgoT())
			pod.Plumb(GinkgoT(), topo)
			startAgent()
			p := startSidecarWithCaps(pod, writePayload(), "-all", nodeArgs("vmi-uid-1")...)
			expectServed(ctx, pod)
			Expect(p.status("CapEff")).To(Equal("0000000000000000"))
			expectReady(ctx, pod)

			By("giving veth-imds the MAC a sidecar of the same instance would derive, so a migration target matches")
			mac, err := pod.MAC(network.LinkName)
			Expect(err).NotTo(HaveOccurred())
			Expect(mac).To(Equal(network.DeriveMAC("vmi-uid-1", "k6t-eth0")))
		},
		Entry("masquerade", podnet.Masquerade),
		Entry("bridge binding", podnet.BridgeBinding),
		Entry("bridge binding, routed guest", podnet.BridgeBindingRouted),
		Entry("link-local guest", podnet.LinkLocal),
	)

	DescribeTable("exposes the sidecar's metrics through the agent, labelled with its VMI, and the guest reaches no metrics endpoint",
		func(ctx SpecContext, topo podnet.Topology, fromGuest []string) {
			pod := podnet.NewPod(GinkgoT())
			pod.Plumb(GinkgoT(), topo)
			agent, _ := startAgentRun()
			startSidecarWithCaps(pod, writePayload(), "-all", append(nodeArgs("vmi-uid-m"), "--instance=tenant/web-1")...)
			expectServed(ctx, pod)
			g := agent.Registry() // as the agent's command serves it
			Eventually(func() []string { return sidecarSeries(g) }).WithContext(ctx).Should(ContainElement("tenant/web-1/vmi-uid-m"),
				"the guest's requests, counted by the sidecar, scraped by the agent in the Pod's namespace")
			fams, err := g.Gather()
			Expect(err).NotTo(HaveOccurred())
			Expect(fams).To(ContainElement(HaveField("Name", HaveValue(Equal("kubevirt_imds_node_agent_sidecars")))))

			By("the guest reaching neither the sidecar's admin endpoint nor anything else but port 80")
			for _, addr := range fromGuest {
				dctx, cancel := context.WithTimeout(ctx, time.Second)
				c, err := pod.Guest.Dial(dctx, "tcp4", addr)
				cancel()
				if c != nil {
					c.Close()
				}
				Expect(err).To(HaveOccurred(), "the guest reached %s", addr)
			}
		},
		Entry("masquerade", podnet.Masquerade, []string{"10.0.2.1:8081", "169.254.169.254:8081", "169.254.169.254:8775", "169.254.169.254:9641"}),
		Entry("bridge binding", podnet.BridgeBinding, []string{"169.254.75.10:8081", "169.254.169.254:8081", "169.254.169.254:8775", "169.254.169.254:9641"}),
	)

	It("answers a link-local guest's ARP from the agent", func(ctx SpecContext) {
		pod := podnet.NewPod(GinkgoT())
		pod.Plumb(GinkgoT(), podnet.LinkLocal)
		startAgent()
		startSidecarWithCaps(pod, writePayload(), "-all", nodeArgs("vmi-uid-2")...)
		expectReady(ctx, pod)
		mac, err := pod.MAC(network.LinkName)
		Expect(err).NotTo(HaveOccurred())
		Eventually(func(g Gomega) {
			replies, err := pod.Guest.ARPRequest("eth0", imds, 300*time.Millisecond)
			g.Expect(err).NotTo(HaveOccurred())
			g.Expect(replies).NotTo(BeEmpty())
			for _, r := range replies {
				g.Expect(r.SenderMAC).To(Equal(mac))
			}
		}).WithContext(ctx).Should(Succeed())
	})

	It("keeps serving across an agent restart, which adopts the plumbing unchanged", func(ctx SpecContext) {
		pod := podnet.NewPod(GinkgoT())
		pod.Plumb(GinkgoT(), podnet.Masquerade)
		agentCtx, stopAgent := context.WithCancel(ctx)
		first := &nodeagent.Agent{Executable: binary, Log: logr.Discard()}
		stopped := make(chan error, 1)
		go func() { stopped <- first.Run(agentCtx) }()
		startSidecarWithCaps(pod, writePayload(), "-all", nodeArgs("vmi-uid-3")...)
		expectServed(ctx, pod)

		stopAgent()
		Expect(<-stopped).To(Succeed())
		By("leaving no thread of the agent in the Pod's namespace once it stopped")
		// A locked thread ends after its goroutine's deferred calls (which
		// signal the worker done) have run, so the kernel reaps it a moment
		// after Run returns.
		Eventually(func() int { return threadsIn(pod) }).WithContext(ctx).Should(BeZero())
		code, _, err := pod.GuestGet(ctx, metaURL)
		Expect(err).NotTo(HaveOccurred())
		Expect(code).To(Equal(http.StatusOK))

		logs := startAgent()
		Eventually(logs.String).Should(ContainSubstring("plumbing a sidecar's network namespace"))
		expectServed(ctx, pod)
		Consistently(func() int { return strings.Count(logs.String(), `"msg":"applying network plan"`) }).
			WithTimeout(1500*time.Millisecond).Should(BeZero(), "the second agent found the plan applied")
	})

	It("lets go of the Pod's namespace when the sidecar is gone", func(ctx SpecContext) {
		pod := podnet.NewPod(GinkgoT())
		pod.Plumb(GinkgoT(), podnet.Masquerade)
		startAgent()
		p := startSidecarWithCaps(pod, writePayload(), "-all", nodeArgs("vmi-uid-4")...)
		expectServed(ctx, pod)
		Expect(threadsIn(pod)).To(BeNumerically(">", 0))
		Expect(p.stop()).To(Succeed())
		Eventually(func() int { return threadsIn(pod) }).WithContext(ctx).Should(BeZero())
	})

	It("never touches a namespace whose sidecar plumbs itself", func(ctx SpecContext) {
		pod := podnet.NewPod(GinkgoT())
		pod.Plumb(GinkgoT(), podnet.Masquerade)
		logs := startAgent()
		startSidecar(pod, writePayload())
		expectServed(ctx, pod)
		Consistently(logs.String).WithTimeout(1500 * time.Millisecond).ShouldNot(ContainSubstring("plumbing a sidecar"))
	})
})

var _ = Describe("the node agent", func() {
	It("never plumbs the node's own network namespace, whatever a process there claims", func(ctx SpecContext) {
		logs := startAgent()
		l, err := net.Listen("tcp", "127.0.0.1:0")
		Expect(err).NotTo(HaveOccurred())
		admin := l.Addr().String()
		Expect(l.Close()).To(Succeed())
		cmd := exec.CommandContext(ctx, binary, "serve", "--payload-dir", writePayload(), "--admin-address", admin,
			"--network-setup=node", "--mac-seed=host", "--bridge=k6t-eth0", "--listen-port=8775")
		out := &output.Buffer{}
		cmd.Stdout, cmd.Stderr = out, out
		Expect(cmd.Start()).To(Succeed())
		DeferCleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
		Eventually(out.String).WithContext(ctx).Should(ContainSubstring(`"msg":"serving bridge"`))
		Consistently(logs.String).WithTimeout(2500 * time.Millisecond).ShouldNot(ContainSubstring("plumbing a sidecar"))
	})
})

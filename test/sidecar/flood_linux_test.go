package sidecar_test

// Real cloud-init (test/guest's root trees: bookworm's 22.4, trixie's 25.1)
// boots against the sidecar while another process in the same guest floods
// it as fast as it can, over new connections and over kept-alive ones.

import (
	"context"
	"encoding/json"
	"fmt"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"

	"github.com/kubevirt-imds/kubevirt-imds/sidecar/store/storetest"
	"github.com/kubevirt-imds/kubevirt-imds/test/controlplane"
	"github.com/kubevirt-imds/kubevirt-imds/test/guest"
	"github.com/kubevirt-imds/kubevirt-imds/test/podnet"
)

// floodSerial seeds NoCloud over HTTP on both generations (shared notes).
const floodSerial = "ds=nocloud;s=http://169.254.169.254/nocloud/;dsmode=net"

// floodWritten is where the flooded guest's user-data writes.
const floodWritten = "/var/lib/kubevirt-imds-test/flooded"

// floodReport is the part of hack/loadtest's report the spec reads.
type floodReport struct {
	Results []struct {
		Mode     string         `json:"mode"`
		Requests int            `json:"requests"`
		Errors   int            `json:"errors"`
		Status   map[string]int `json:"status"`
		RPS      float64        `json:"rps"`
	} `json:"results"`
}

var _ = Describe("real cloud-init under a flood from its own guest", Label("adversarial", "guest"), func() {
	var loadtest string
	BeforeEach(func(ctx SpecContext) {
		if _, err := exec.LookPath("dnsmasq"); err != nil {
			controlplane.Unavailable("dnsmasq (dnsmasq-base) is needed to answer the guest's DHCP")
		}
		loadtest = filepath.Join(worldReadableTempDir(), "loadtest")
		cmd := exec.CommandContext(ctx, "go", "build", "-o", loadtest, "./hack/loadtest")
		cmd.Dir = controlplane.RepoRoot()
		out, err := cmd.CombinedOutput()
		Expect(err).NotTo(HaveOccurred(), "building hack/loadtest: %s", out)
	})

	for _, gen := range guest.Generations {
		It("boots "+string(gen)+" to done while another process floods the service", func(ctx SpecContext) {
			root, err := guest.EnsureRoot(ctx, gen, GinkgoWriter)
			Expect(err).NotTo(HaveOccurred())

			pod := podnet.NewPod(GinkgoT())
			pod.PlumbMasqueradeDHCP(GinkgoT())
			doc := storetest.Document()
			doc.Instance.ID = fmt.Sprintf("flooded-%s-%d", gen, time.Now().UnixNano())
			doc.Instance.Hostname = "flooded"
			// cloud-init's own fallback network (DHCP), as the document
			// carries none: the flood, not the network, is under test.
			doc.Network = nil
			doc.UserData = []byte(fmt.Sprintf("#cloud-config\nwrite_files:\n  - path: %s\n    content: |\n      booted %s\n", floodWritten, doc.Instance.ID))
			p := startSidecar(pod, writeDocument(doc), "--log-level", "info", "--token-dir", writeTokens())
			Eventually(func(g Gomega) {
				code, _, err := pod.AdminGet(ctx, readyURL)
				g.Expect(err).NotTo(HaveOccurred())
				g.Expect(code).To(Equal(200))
			}).WithContext(ctx).WithTimeout(30 * time.Second).Should(Succeed())

			By("flooding from the guest as soon as it has its address")
			floodCtx, stopFlood := context.WithCancel(ctx)
			defer stopFlood()
			reports := make(chan floodReport, 2)
			go flood(floodCtx, pod, loadtest, reports)

			res, err := guest.Run(ctx, guest.Config{Root: root, NetNS: pod.Guest.Name,
				SMBIOS: guest.KubeVirtSMBIOS(floodSerial, doc.Instance.ID), Log: GinkgoWriter})
			Expect(err).NotTo(HaveOccurred())
			DeferCleanup(res.Close)
			stopFlood()
			var served, requests int
			var rates []string
			for range 2 {
				var rep floodReport
				Eventually(reports).WithTimeout(30 * time.Second).Should(Receive(&rep))
				for _, r := range rep.Results {
					requests += r.Requests
					served += r.Status["200"]
					rates = append(rates, fmt.Sprintf("%s %.0f req/s (%v)", r.Mode, r.RPS, r.Status))
				}
			}

			msg := fmt.Sprintf("%s (%s) reached %q via %s in %v while the guest flooded the service: %s",
				gen, res.CloudInit, res.Status[:min(len(res.Status), 40)], res.Datasource, res.Duration.Round(time.Millisecond), strings.Join(rates, "; "))
			AddReportEntry("boot under flood", msg)
			GinkgoWriter.Println("MEASURED " + msg)

			Expect(res.StatusCode).To(Equal(0), res.Report())
			Expect(res.Errors).To(BeEmpty(), res.Report())
			Expect(res.Datasource).To(Equal("DataSourceNoCloudNet"), res.Report())
			Expect(res.InstanceID).To(Equal(doc.Instance.ID))
			written, err := res.ReadFile(floodWritten)
			Expect(err).NotTo(HaveOccurred(), res.Report())
			Expect(string(written)).To(Equal("booted " + doc.Instance.ID + "\n"))
			Expect(served).To(BeNumerically(">", 1000), "the flood ran during the boot: %v", rates)
			Expect(p.logs.String()).NotTo(ContainSubstring(`"level":"ERROR"`))
		}, SpecTimeout(20*time.Minute))
	}
})

// flood waits until the guest's NIC has its DHCP address, then runs two
// hack/loadtest processes in the guest's namespace until ctx ends: one over
// new connections (cloud-init's own pattern), one over kept-alive ones.
// Each sends its report to reports.
func flood(ctx context.Context, pod *podnet.Pod, loadtest string, reports chan<- floodReport) {
	defer GinkgoRecover()
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		out, _ := pod.Guest.IP("-4", "addr", "show", "dev", "eth0")
		if strings.Contains(out, "inet "+podnet.MasqueradeGuestAddr+"/") {
			break
		}
		select {
		case <-ctx.Done():
			reports <- floodReport{}
			reports <- floodReport{}
			return
		case <-tick.C:
		}
	}
	for _, mode := range []string{"newconn", "keepalive"} {
		go func() {
			defer GinkgoRecover()
			cmd := pod.Guest.Command(context.Background(), loadtest, "-url", "http://169.254.169.254/nocloud/meta-data",
				"-n", "1000000", "-c", "16", "-modes", mode, "-timeout", "10m", "-request-timeout", "2s")
			var stdout strings.Builder
			cmd.Stdout, cmd.Stderr = &stdout, GinkgoWriter
			Expect(cmd.Start()).To(Succeed())
			stop := context.AfterFunc(ctx, func() { _ = cmd.Process.Signal(syscall.SIGTERM) })
			defer stop()
			_ = cmd.Wait()
			var rep floodReport
			Expect(json.Unmarshal([]byte(stdout.String()), &rep)).To(Succeed(), stdout.String())
			reports <- rep
		}()
	}
}

//go:build linux

package guest_test

// Acceptance: real cloud-init, both generations, boots against the real
// sidecar. The sidecar is the repository's binary, run in a virt-launcher-like
// Pod namespace (test/podnet, masquerade binding) exactly as test/sidecar runs
// it: as nobody, with only NET_ADMIN, NET_RAW and NET_BIND_SERVICE, and
// /proc/sys read-only. It serves a payload document shaped as the operator
// renders it for a masquerade VMI; dnsmasq stands in for KubeVirt's in-Pod
// DHCP.

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	kubevirtv1 "kubevirt.io/api/core/v1"
	"sigs.k8s.io/yaml"

	"github.com/kubevirt-imds/kubevirt-imds/api/payload"
	"github.com/kubevirt-imds/kubevirt-imds/controllers/netconfig"
	"github.com/kubevirt-imds/kubevirt-imds/sidecar/render"
	"github.com/kubevirt-imds/kubevirt-imds/sidecar/store/storetest"
	"github.com/kubevirt-imds/kubevirt-imds/test/controlplane"
	"github.com/kubevirt-imds/kubevirt-imds/test/guest"
	"github.com/kubevirt-imds/kubevirt-imds/test/output"
	"github.com/kubevirt-imds/kubevirt-imds/test/podnet"
)

// sidecarCaps are the sidecar's capabilities: exactly what its Pod spec grants.
const sidecarCaps = "-all,+net_admin,+net_raw,+net_bind_service"

// sidecarAdmin is the sidecar's admin endpoint, on the Pod's loopback.
const sidecarAdmin = "http://127.0.0.2:8081"

// testSSHKey is the SSH key the payload hands the guest.
const testSSHKey = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGv3W0UJx8nQ2WTbd6tqhJmUQAKnj4nYVi0DvH7M5J3y tier1@kubevirt-imds"

// sidecarBinary is the kubevirt-imds-sidecar binary, built from the repository root on
// first use so that runs focused on the stand-in specs do not pay for it.
var sidecarBinary struct {
	sync.Mutex
	dir, path string
}

// buildSidecar returns the path of the kubevirt-imds-sidecar binary, building it once.
func buildSidecar(ctx context.Context) string {
	GinkgoHelper()
	sidecarBinary.Lock()
	defer sidecarBinary.Unlock()
	if sidecarBinary.path != "" {
		return sidecarBinary.path
	}
	dir, err := os.MkdirTemp("", "kubevirt-imds-guest-sidecar-")
	Expect(err).NotTo(HaveOccurred())
	// The sidecar's unprivileged user must reach the binary.
	Expect(os.Chmod(dir, 0o755)).To(Succeed())
	start := time.Now()
	bins, err := controlplane.BuildBinaries(ctx, dir)
	bin := bins.Sidecar
	if err != nil {
		_ = os.RemoveAll(dir)
	}
	Expect(err).NotTo(HaveOccurred())
	GinkgoWriter.Printf("sidecar binary built in %v\n", time.Since(start).Round(time.Millisecond))
	sidecarBinary.dir, sidecarBinary.path = dir, bin
	return bin
}

// removeSidecarBinary deletes the binary buildSidecar built, if any.
func removeSidecarBinary() {
	sidecarBinary.Lock()
	defer sidecarBinary.Unlock()
	if sidecarBinary.dir != "" {
		_ = os.RemoveAll(sidecarBinary.dir)
		sidecarBinary.dir, sidecarBinary.path = "", ""
	}
}

// sidecar is one running sidecar process.
type sidecar struct {
	pod  *podnet.Pod
	cmd  *exec.Cmd
	logs *output.Buffer
	done chan struct{}
}

// startSidecar writes doc in kubelet's atomic layout and runs the sidecar on
// it in pod's namespace as test/sidecar does: as nobody with only the three
// capabilities, in a mount namespace where /proc/sys is read-only. It waits
// until /readyz answers 200, and stops the sidecar (SIGTERM) when the spec
// ends.
func startSidecar(ctx context.Context, pod *podnet.Pod, doc *payload.Document) *sidecar {
	GinkgoHelper()
	bin := buildSidecar(ctx)
	root, err := os.MkdirTemp("", "kubevirt-imds-guest-payload-")
	Expect(err).NotTo(HaveOccurred())
	DeferCleanup(os.RemoveAll, root)
	Expect(os.Chmod(root, 0o755)).To(Succeed())
	dir, err := storetest.NewDir(filepath.Join(root, "payload"))
	Expect(err).NotTo(HaveOccurred())
	Expect(dir.WriteDocument(doc)).To(Succeed())

	args := []string{"serve", "--payload-dir", dir.Path, "--token-dir", dir.Path, "--log-level", "debug"}
	script := `mount --bind /proc/sys /proc/sys && mount -o remount,bind,ro /proc/sys && ` +
		`exec setpriv --reuid=65534 --regid=65534 --clear-groups --inh-caps=` + sidecarCaps +
		` --ambient-caps=` + sidecarCaps + ` --bounding-set=` + sidecarCaps + ` -- "$@"`
	cmd := pod.Command(context.Background(), "sh", append([]string{"-c", script, "sh", bin}, args...)...)
	s := &sidecar{pod: pod, cmd: cmd, logs: &output.Buffer{}, done: make(chan struct{})}
	cmd.Stdout, cmd.Stderr = s.logs, s.logs
	Expect(cmd.Start()).To(Succeed())
	go func() {
		_ = cmd.Wait()
		close(s.done)
	}()
	DeferCleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-s.done:
		case <-time.After(10 * time.Second):
			_ = cmd.Process.Kill()
			<-s.done
		}
		if CurrentSpecReport().Failed() {
			GinkgoWriter.Printf("sidecar logs:\n%s\n", s.logs.String())
		}
	})

	Eventually(func(g Gomega) {
		select {
		case <-s.done:
			StopTrying("the sidecar exited").Wrap(fmt.Errorf("%s", s.logs.String())).Now()
		default:
		}
		code, body, err := pod.AdminGet(ctx, sidecarAdmin+"/readyz")
		g.Expect(err).NotTo(HaveOccurred())
		g.Expect(code).To(Equal(http.StatusOK), body)
	}).WithContext(ctx).WithTimeout(30*time.Second).WithPolling(20*time.Millisecond).Should(Succeed(), "sidecar ready")

	// ip netns exec, sh and setpriv each exec the next: the process started
	// is the sidecar itself.
	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", cmd.Process.Pid))
	Expect(err).NotTo(HaveOccurred())
	Expect(string(status)).To(MatchRegexp(`(?m)^Uid:\s+65534\s`))
	// CAP_NET_BIND_SERVICE (10), CAP_NET_ADMIN (12), CAP_NET_RAW (13).
	Expect(string(status)).To(MatchRegexp(`(?m)^CapEff:\s+0000000000003400$`))
	return s
}

// sidecarRequest is one guest request the sidecar logged.
type sidecarRequest struct {
	Method string `json:"method"`
	URI    string `json:"uri"`
	Remote string `json:"remote"`
	Status int    `json:"status"`
}

// Requests returns the guest requests the sidecar has logged so far.
func (s *sidecar) Requests() []sidecarRequest {
	var out []sidecarRequest
	sc := bufio.NewScanner(strings.NewReader(s.logs.String()))
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
	for sc.Scan() {
		var line struct {
			Msg string `json:"msg"`
			sidecarRequest
		}
		if json.Unmarshal(sc.Bytes(), &line) == nil && line.Msg == "request" {
			out = append(out, line.sidecarRequest)
		}
	}
	return out
}

// Answered returns the URIs the sidecar answered 200 to the guest at addr.
func (s *sidecar) Answered(addr string) []string {
	var out []string
	for _, r := range s.Requests() {
		if host, _, _ := strings.Cut(r.Remote, ":"); host == addr && r.Status == http.StatusOK {
			out = append(out, r.URI)
		}
	}
	return out
}

// RequestCounts reads kubevirt_imds_sidecar_requests_total from /metrics by dialect
// and code ("nocloud 200").
func (s *sidecar) RequestCounts(ctx context.Context) map[string]int {
	GinkgoHelper()
	code, body, err := s.pod.AdminGet(ctx, sidecarAdmin+"/metrics")
	Expect(err).NotTo(HaveOccurred())
	Expect(code).To(Equal(http.StatusOK))
	re := regexp.MustCompile(`(?m)^kubevirt_imds_sidecar_requests_total\{code="(\d+)",dialect="([a-z0-9]+)"\} (\d+)$`)
	out := map[string]int{}
	for _, m := range re.FindAllStringSubmatch(body, -1) {
		n, err := strconv.Atoi(m[3])
		Expect(err).NotTo(HaveOccurred())
		out[m[2]+" "+m[1]] += n
	}
	return out
}

// newDHCPPod builds a Pod with the masquerade binding whose guest NIC is as a
// VM's is at power-on: down, without an address or route. podnet's
// masquerade guest is configured statically; a booting guest gets its address
// from KubeVirt's in-Pod DHCP, served here by dnsmasq.
func newDHCPPod() *podnet.Pod {
	GinkgoHelper()
	if err := podnet.Available(); err != nil {
		controlplane.Unavailable(err.Error())
	}
	if _, err := exec.LookPath("setpriv"); err != nil {
		controlplane.Unavailable("the sidecar runs under setpriv (util-linux), which is missing")
	}
	pod := podnet.NewPod(GinkgoT())
	pod.PlumbMasqueradeDHCP(GinkgoT())
	return pod
}

// operatorDocument renders the payload document the operator renders
// (controllers/render.go) for a VMI named name with one masquerade interface
// on the Pod network, whose MAC is the guest's, and a firmware UUID: the
// network comes from the operator's own netconfig.FromVMI, every dialect is
// served, and the sidecar attaches to the primary NIC's bridge.
func operatorDocument(name, mac string) *payload.Document {
	GinkgoHelper()
	firmwareUUID := newUUID()
	vmi := &kubevirtv1.VirtualMachineInstance{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "tenant-a", UID: types.UID(newUUID())},
		Spec: kubevirtv1.VirtualMachineInstanceSpec{
			Domain: kubevirtv1.DomainSpec{
				Firmware: &kubevirtv1.Firmware{UUID: types.UID(firmwareUUID)},
				Devices: kubevirtv1.Devices{Interfaces: []kubevirtv1.Interface{{
					Name:                   "default",
					MacAddress:             mac,
					InterfaceBindingMethod: kubevirtv1.InterfaceBindingMethod{Masquerade: &kubevirtv1.InterfaceMasquerade{}},
				}}},
			},
			Networks: []kubevirtv1.Network{{Name: "default", NetworkSource: kubevirtv1.NetworkSource{Pod: &kubevirtv1.PodNetwork{}}}},
		},
	}
	network := netconfig.FromVMI(vmi)
	Expect(network.Interfaces).To(HaveLen(1))
	nic := network.Interfaces[0]
	Expect(nic).To(And(
		HaveField("MACAddress", mac), HaveField("Binding", "masquerade"), HaveField("Primary", true),
		HaveField("DHCP4", true), HaveField("Bridge", "k6t-eth0")))
	return &payload.Document{
		Instance: payload.Instance{
			// The firmware UUID, as the operator's instanceID picks it.
			ID:                 firmwareUUID,
			UID:                string(vmi.UID),
			Name:               vmi.Name,
			Namespace:          vmi.Namespace,
			Hostname:           vmi.Name,
			ServiceAccountName: "default",
			SSHAuthorizedKeys:  []string{testSSHKey},
		},
		UserData: []byte(nocloudFiles(firmwareUUID, vmi.Name, mac)["/nocloud/user-data"]),
		Network:  network,
		Dialects: append([]payload.Dialect(nil), payload.AllDialects...),
		Serve:    payload.Serve{Interface: nic.Name, Bridge: nic.Bridge},
		Source:   payload.Source{MetadataService: "default"},
	}
}

// newUUID returns a random version 4 UUID that cloud-init does not take for
// an AWS one (see withUnsignedEC2Tree): the NoCloud specs boot from NoCloud
// every time.
func newUUID() string {
	for {
		h := randomHex(16)
		if awsLike := strings.HasPrefix(h, "ec2") || h[4] == '2' && h[6:8] == "ec"; !awsLike {
			return h[0:8] + "-" + h[8:12] + "-4" + h[13:16] + "-a" + h[17:20] + "-" + h[20:32]
		}
	}
}

// yamlOf decodes YAML text for a comparison that ignores layout and comments.
func yamlOf(text string) any {
	GinkgoHelper()
	var v any
	Expect(yaml.Unmarshal([]byte(text), &v)).To(Succeed(), text)
	return v
}

// bootSummary is the one line printed per boot.
func bootSummary(res *guest.Result, dialect string, s *sidecar) string {
	return fmt.Sprintf("BOOT %s (%s) via %s against the sidecar: %s, status exit %d, %d requests answered, in %v",
		res.Generation, res.CloudInit, dialect, res.Datasource, res.StatusCode,
		len(s.Answered(guestAddr)), res.Duration.Round(time.Millisecond))
}

// noCloudSMBIOS is what guestDiscovery NoCloud gives the VM: the seed in
// the serial; the UUID is KubeVirt's.
func noCloudSMBIOS(doc *payload.Document) guest.SMBIOS {
	return guest.KubeVirtSMBIOS(nocloudSerial, doc.Instance.ID)
}

// bootGuest runs one guest on gen in a fresh Pod whose sidecar serves the
// operator's document for it (changed by adjust, when not nil), with the
// SMBIOS the caller's datasource needs.
func bootGuest(ctx context.Context, gen guest.Generation, name string, adjust func(doc *payload.Document), smbios func(doc *payload.Document) guest.SMBIOS) (*guest.Result, *payload.Document, *sidecar) {
	GinkgoHelper()
	root := rootFor(ctx, gen)
	pod := newDHCPPod()
	doc := operatorDocument(name, pod.GuestMAC.String())
	if adjust != nil {
		adjust(doc)
	}
	s := startSidecar(ctx, pod, doc)
	res, err := guest.Run(ctx, guest.Config{Root: root, NetNS: pod.Guest.Name, SMBIOS: smbios(doc), Log: GinkgoWriter})
	Expect(err).NotTo(HaveOccurred())
	DeferCleanup(res.Close)
	reportRun(res)
	return res, doc, s
}

var _ = Describe("a tier-1 guest against the real sidecar", Label("guest", "sidecar"), func() {
	boot := bootGuest

	// expectBooted checks what every boot must show: done with exit 0, the
	// payload's identity, the file user-data writes, the SSH key, and the
	// guest holding its DHCP address.
	expectBooted := func(res *guest.Result, doc *payload.Document) {
		GinkgoHelper()
		Expect(res.StatusCode).To(Equal(0), res.Report())
		Expect(res.Status).To(ContainSubstring("done"))
		Expect(res.Errors).To(BeEmpty(), res.Report())
		expectConfiguredFrom(res, doc)
		Expect(res.LocalHostname).To(Equal(doc.Instance.Hostname))
		Expect(res.Hostname).To(Equal(doc.Instance.Hostname))
		hostnameFile, err := res.ReadFile("/etc/hostname")
		Expect(err).NotTo(HaveOccurred())
		Expect(strings.TrimSpace(string(hostnameFile))).To(Equal(doc.Instance.Hostname))

		// KubeVirt's masquerade DHCP address and gateway.
		Expect(res.IPAddr).To(MatchRegexp(`inet ` + guestAddr + `/24 .*dynamic eth0`))
		Expect(res.IPRoute).To(ContainSubstring("default via " + gatewayAddr + " dev eth0"))
	}

	// expectSidecarServed checks that the requests came from the guest to the
	// sidecar: its request log names the guest's address, and its metrics
	// count them under dialect with nothing failing.
	expectSidecarServed := func(ctx context.Context, s *sidecar, dialect string, uris ...string) {
		GinkgoHelper()
		Expect(s.Answered(guestAddr)).To(ContainElements(uris), "sidecar request log:\n%v", s.Requests())
		counts := s.RequestCounts(ctx)
		Expect(counts).To(HaveKeyWithValue(dialect+" 200", BeNumerically(">=", len(uris))))
		for k := range counts {
			Expect(k).NotTo(MatchRegexp(` (5\d\d|429|400)$`), "the sidecar refused or failed a request: %v", counts)
		}
	}

	// expectNoCloudServedOnce checks that the guest fetched each NoCloud
	// file its generation reads from the sidecar exactly once, answered 200
	// at the first attempt: cloud-init retries any other answer ten times a
	// second apart (a 404 for absent vendor-data held every boot for 10 s).
	expectNoCloudServedOnce := func(ctx context.Context, s *sidecar, gen guest.Generation) {
		GinkgoHelper()
		files := []string{"/nocloud/meta-data", "/nocloud/user-data", "/nocloud/vendor-data"}
		if gen == guest.Trixie {
			// 24.3 and later fetch network-config first; 22.4 never does.
			files = append(files, "/nocloud/network-config")
		}
		expectSidecarServed(ctx, s, "nocloud", files...)
		perFile := map[string]int{}
		for _, r := range s.Requests() {
			Expect(r.Status).To(Equal(http.StatusOK), "%s %s", r.Method, r.URI)
			perFile[r.URI]++
		}
		Expect(perFile).To(And(HaveLen(len(files)), HaveEach(1)), "requests per file: %v", perFile)
	}

	for _, gen := range guest.Generations {
		Context("on "+string(gen), func() {
			It("reaches done over NoCloud seeded by the SMBIOS serial", func(ctx SpecContext) {
				res, doc, s := boot(ctx, gen, "vm-nocloud-"+string(gen), nil, noCloudSMBIOS)
				AddReportEntry("boot", bootSummary(res, "NoCloud", s))
				GinkgoWriter.Println(bootSummary(res, "NoCloud", s))

				Expect(res.Datasource).To(Equal("DataSourceNoCloudNet"), res.Report())
				Expect(res.DatasourceDetail).To(ContainSubstring("http://169.254.169.254/nocloud/"))
				expectBooted(res, doc)
				expectNoCloudServedOnce(ctx, s, gen)

				switch gen {
				case guest.Bookworm:
					// 22.4 never fetches network-config. The operator's
					// masquerade network is DHCPv4 on one NIC, cloud-init's
					// own fallback, so meta-data carries no
					// network-interfaces and the fallback stays.
					Expect(s.Answered(guestAddr)).NotTo(ContainElement("/nocloud/network-config"))
					Expect(res.NetworkConfig).To(HaveKeyWithValue("/etc/network/interfaces.d/50-cloud-init",
						ContainSubstring("iface eth0 inet dhcp")), res.Report())
				case guest.Trixie:
					// 25.x fetches network-config and renders the served
					// version 2 as netplan, which systemd-networkd applied.
					Expect(s.Answered(guestAddr)).To(ContainElement("/nocloud/network-config"))
					served, err := render.NoCloudNetworkConfig(doc)
					Expect(err).NotTo(HaveOccurred())
					Expect(res.NetworkConfig).To(HaveKey("/etc/netplan/50-cloud-init.yaml"), res.Report())
					Expect(yamlOf(res.NetworkConfig["/etc/netplan/50-cloud-init.yaml"])).To(Equal(yamlOf(string(served))),
						"netplan file:\n%s\nserved:\n%s", res.NetworkConfig["/etc/netplan/50-cloud-init.yaml"], served)
					Expect(res.Stage("networkd-restart")).NotTo(BeNil(), res.Report())
					Expect(res.IPRoute).To(MatchRegexp(`default via ` + gatewayAddr + ` dev eth0 proto dhcp`))
				}
			}, SpecTimeout(specTimeout))

			It("keeps its fallback network over NoCloud when the document carries none (networkData None)", func(ctx SpecContext) {
				withoutNetwork := func(doc *payload.Document) { doc.Network = nil }
				res, doc, s := boot(ctx, gen, "vm-nonet-"+string(gen), withoutNetwork, noCloudSMBIOS)
				AddReportEntry("boot", bootSummary(res, "NoCloud, no network", s))
				GinkgoWriter.Println(bootSummary(res, "NoCloud, no network", s))

				Expect(res.Datasource).To(Equal("DataSourceNoCloudNet"), res.Report())
				expectBooted(res, doc)
				// An empty network-config is none to 25.x: no 404 retried for 10 s.
				expectNoCloudServedOnce(ctx, s, gen)
				switch gen {
				case guest.Bookworm:
					Expect(res.NetworkConfig).To(HaveKeyWithValue("/etc/network/interfaces.d/50-cloud-init",
						ContainSubstring("iface eth0 inet dhcp")), res.Report())
				case guest.Trixie:
					// cloud-init's own fallback: the NIC renamed to eth0 by MAC.
					Expect(res.NetworkConfig).To(HaveKeyWithValue("/etc/netplan/50-cloud-init.yaml",
						And(ContainSubstring(`set-name: "eth0"`), ContainSubstring("dhcp4: true"))), res.Report())
				}
			}, SpecTimeout(specTimeout))

			It("reaches done over OpenStack, identified by the chassis asset tag", func(ctx SpecContext) {
				res, doc, s := boot(ctx, gen, "vm-openstack-"+string(gen), nil, func(doc *payload.Document) guest.SMBIOS {
					smbios := guest.KubeVirtSMBIOS("", doc.Instance.ID)
					smbios.ChassisAsset = "OpenStack Nova"
					return smbios
				})
				AddReportEntry("boot", bootSummary(res, "OpenStack", s))
				GinkgoWriter.Println(bootSummary(res, "OpenStack", s))

				// Identified locally, it fetches metadata in init-local over
				// an ephemeral DHCP lease, before the guest's own networking.
				Expect(res.Datasource).To(Equal("DataSourceOpenStackLocal"), res.Report())
				expectBooted(res, doc)
				Expect(s.Answered(guestAddr)).To(ContainElements(
					MatchRegexp(`^/openstack/[^/]+/meta_data\.json$`),
					MatchRegexp(`^/openstack/[^/]+/network_data\.json$`),
					MatchRegexp(`^/openstack/[^/]+/user_data$`)), "sidecar request log:\n%v", s.Requests())
				expectSidecarServed(ctx, s, "openstack")

				// network_data.json (one phy link with the guest's MAC,
				// ipv4_dhcp) applied as the datasource's configuration.
				Expect(res.CloudInitLog).To(MatchRegexp(`Applying network configuration from ds\b.*`+regexp.QuoteMeta(doc.Network.Interfaces[0].MACAddress)), res.Report())
				switch gen {
				case guest.Bookworm:
					Expect(res.NetworkConfig).To(HaveKeyWithValue("/etc/network/interfaces.d/50-cloud-init",
						ContainSubstring("iface eth0 inet dhcp")), res.Report())
				case guest.Trixie:
					Expect(res.NetworkConfig).To(HaveKeyWithValue("/etc/netplan/50-cloud-init.yaml",
						And(ContainSubstring(doc.Network.Interfaces[0].MACAddress), MatchRegexp(`dhcp4: true`))), res.Report())
				}
			}, SpecTimeout(specTimeout))
		})
	}
})

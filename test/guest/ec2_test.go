//go:build linux

package guest_test

// Acceptance of the EC2 dialect: the AWS clients a guest image carries, run
// from a guest network namespace against the real sidecar binary with
// IMDSv2 tokens required: the AWS SDK for Go v2 (fallback to IMDSv1
// disabled), Debian's ec2-metadata (amazon-ec2-utils), Debian's
// python3-botocore IMDS fetchers, and cloud-init's Ec2 datasource on both
// generations, on a platform identified as AWS by an SMBIOS UUID starting
// with "ec2" (guestDiscovery EC2).

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/feature/ec2/imds"
	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"

	"github.com/kubevirt-imds/kubevirt-imds/api/payload"
	"github.com/kubevirt-imds/kubevirt-imds/controllers/instanceidentity"
	"github.com/kubevirt-imds/kubevirt-imds/test/controlplane"
	"github.com/kubevirt-imds/kubevirt-imds/test/guest"
	"github.com/kubevirt-imds/kubevirt-imds/test/podnet"
)

// Placement the Node's topology labels would give; the zone is the region
// and a letter, as botocore derives the region from it.
const (
	ec2Region = "eu-west-9"
	ec2Zone   = "eu-west-9b"
)

// withEC2 gives doc what the operator writes for a VMI with guestDiscovery
// EC2 and httpTokens required: an instance-id (the firmware UUID) starting
// with "ec2", placement, an instance type, the NIC and a signed identity
// document.
func withEC2(doc *payload.Document) {
	GinkgoHelper()
	doc.Instance.ID = "ec2" + doc.Instance.ID[3:]
	doc.UserData = []byte(nocloudFiles(doc.Instance.ID, doc.Instance.Name, doc.Network.Interfaces[0].MACAddress)["/nocloud/user-data"])
	key, err := instanceidentity.NewKey(time.Now(), time.Hour)
	Expect(err).NotTo(HaveOccurred())
	id, err := key.Sign(&instanceidentity.Document{
		AvailabilityZone: ec2Zone, InstanceID: doc.Instance.ID, InstanceType: "u1.small", PrivateIP: "10.244.1.7",
		Region: ec2Region, Version: instanceidentity.Version, Namespace: doc.Instance.Namespace, Name: doc.Instance.Name,
		UID: doc.Instance.UID,
	})
	Expect(err).NotTo(HaveOccurred())
	doc.EC2 = &payload.EC2{
		HTTPTokens: payload.HTTPTokensRequired, HopLimit: 1, Region: ec2Region, AvailabilityZone: ec2Zone, InstanceType: "u1.small",
		Interfaces: []payload.EC2Interface{{MACAddress: doc.Network.Interfaces[0].MACAddress, IPv4: []string{guestAddr + "/24"}}},
		Identity:   id,
	}
}

// withUnsignedEC2Tree gives doc a firmware UUID that cloud-init takes for
// AWS's (one in 2,048 of the UUIDs KubeVirt derives from VM names) and what
// the operator writes for a service serving the EC2 tree only as OpenStack's
// (dialects v1, nocloud, openstack): placement by default, the NIC, and the
// identity document unsigned.
func withUnsignedEC2Tree(doc *payload.Document) {
	GinkgoHelper()
	doc.Instance.ID = "ec2" + doc.Instance.ID[3:]
	doc.UserData = []byte(nocloudFiles(doc.Instance.ID, doc.Instance.Name, doc.Network.Interfaces[0].MACAddress)["/nocloud/user-data"])
	doc.Dialects = []payload.Dialect{payload.DialectV1, payload.DialectNoCloud, payload.DialectOpenStack}
	id, err := instanceidentity.Unsigned(&instanceidentity.Document{
		AvailabilityZone: "kubevirt", InstanceID: doc.Instance.ID, PrivateIP: "10.244.1.7", Region: "kubevirt",
		Version: instanceidentity.Version, Namespace: doc.Instance.Namespace, Name: doc.Instance.Name, UID: doc.Instance.UID,
	})
	Expect(err).NotTo(HaveOccurred())
	doc.EC2 = &payload.EC2{
		HTTPTokens: payload.HTTPTokensOptional, HopLimit: 1,
		Interfaces: []payload.EC2Interface{{MACAddress: doc.Network.Interfaces[0].MACAddress, IPv4: []string{guestAddr + "/24"}}},
		Identity:   id,
	}
}

// expectConfiguredFrom checks that cloud-init configured the guest from doc:
// its instance-id, the file its user-data writes, and its SSH key.
func expectConfiguredFrom(res *guest.Result, doc *payload.Document) {
	GinkgoHelper()
	Expect(res.InstanceID).To(Equal(doc.Instance.ID))
	written, err := res.ReadFile(writtenFile)
	Expect(err).NotTo(HaveOccurred(), res.Report())
	Expect(string(written)).To(Equal("written by user-data for " + doc.Instance.ID + "\nruncmd ran\n"))
	keys, err := res.ReadFile("/home/debian/.ssh/authorized_keys")
	Expect(err).NotTo(HaveOccurred(), res.Report())
	Expect(string(keys)).To(ContainSubstring(testSSHKey))
}

// expectNoIMDSv1 checks that every EC2 request the sidecar answered carried
// a valid token: with tokens required, any other gets 401.
func expectNoIMDSv1(s *sidecar) {
	GinkgoHelper()
	put := 0
	for _, r := range s.Requests() {
		Expect(r.Status).NotTo(Equal(http.StatusUnauthorized), "%s %s was refused for want of a token", r.Method, r.URI)
		if r.Method == http.MethodPut && r.URI == "/latest/api/token" && r.Status == http.StatusOK {
			put++
		}
	}
	Expect(put).To(BeNumerically(">", 0), "no token was issued: %v", s.Requests())
}

var _ = Describe("the EC2 dialect from a guest namespace", Label("guest", "sidecar", "ec2"), func() {
	It("serves the AWS SDK, ec2-metadata and botocore with IMDSv2 only", func(ctx SpecContext) {
		if err := podnet.Available(); err != nil {
			controlplane.Unavailable(err.Error())
		}
		pod := podnet.NewPod(GinkgoT())
		pod.Plumb(GinkgoT(), podnet.Masquerade)
		doc := operatorDocument("vm-ec2", pod.GuestMAC.String())
		withEC2(doc)
		s := startSidecar(ctx, pod, doc)
		const endpoint = "http://169.254.169.254"

		By("the AWS SDK for Go v2, EnableFallback disabled")
		c := imds.New(imds.Options{Endpoint: endpoint, EnableFallback: aws.FalseTernary, HTTPClient: pod.Guest.HTTPClient(5 * time.Second)})
		for path, want := range map[string]string{
			"instance-id":      doc.Instance.ID,
			"local-ipv4":       guestAddr,
			"mac":              pod.GuestMAC.String(),
			"placement/region": ec2Region,
		} {
			out, err := c.GetMetadata(ctx, &imds.GetMetadataInput{Path: path})
			Expect(err).NotTo(HaveOccurred(), path)
			Expect(readBody(out.Content)).To(Equal(want), path)
		}
		ud, err := c.GetUserData(ctx, &imds.GetUserDataInput{})
		Expect(err).NotTo(HaveOccurred())
		Expect(readBody(ud.Content)).To(Equal(string(doc.UserData)))
		iid, err := c.GetInstanceIdentityDocument(ctx, &imds.GetInstanceIdentityDocumentInput{})
		Expect(err).NotTo(HaveOccurred())
		Expect(iid.InstanceID).To(Equal(doc.Instance.ID))
		Expect(iid.Region).To(Equal(ec2Region))
		Expect(iid.AvailabilityZone).To(Equal(ec2Zone))
		region, err := c.GetRegion(ctx, &imds.GetRegionInput{})
		Expect(err).NotTo(HaveOccurred())
		Expect(region.Region).To(Equal(ec2Region))
		dyn, err := c.GetDynamicData(ctx, &imds.GetDynamicDataInput{Path: "instance-identity/document"})
		Expect(err).NotTo(HaveOccurred())
		Expect(readBody(dyn.Content)).To(Equal(doc.EC2.Identity.Document))

		By("an IMDSv1 request gets 401")
		resp, err := pod.Guest.HTTPClient(5 * time.Second).Get(endpoint + "/latest/meta-data/instance-id")
		Expect(err).NotTo(HaveOccurred())
		_ = resp.Body.Close()
		Expect(resp.StatusCode).To(Equal(http.StatusUnauthorized))

		By("Debian's ec2-metadata (amazon-ec2-utils)")
		ensureTool(ctx, "ec2-metadata", "amazon-ec2-utils")
		out, err := pod.Guest.Command(ctx, "ec2-metadata", "--all").CombinedOutput()
		Expect(err).NotTo(HaveOccurred(), string(out))
		GinkgoWriter.Printf("ec2-metadata --all:\n%s\n", out)
		for _, line := range []string{
			"ami-launch-index: 0",
			"instance-id: " + doc.Instance.ID,
			"instance-type: u1.small",
			"local-hostname: " + doc.Instance.Hostname,
			"local-ipv4: " + guestAddr,
			"placement: " + ec2Zone,
			"keyname:key-0",
			"index:0",
			testSSHKey,
		} {
			Expect(string(out)).To(ContainSubstring(line))
		}
		Expect(string(out)).To(ContainSubstring("user-data: #cloud-config"))

		By("Debian's python3-botocore IMDS fetchers")
		// Debian's python3 and its botocore, not another python on PATH.
		ensureTool(ctx, "/usr/bin/python3", "python3")
		if exec.CommandContext(ctx, "/usr/bin/python3", "-c", "import botocore").Run() != nil {
			install := exec.CommandContext(ctx, "apt-get", "install", "-y", "-q", "--no-install-recommends", "python3-botocore")
			install.Env = append(install.Environ(), "DEBIAN_FRONTEND=noninteractive")
			out, err := install.CombinedOutput()
			Expect(err).NotTo(HaveOccurred(), "apt-get install python3-botocore: %s", out)
		}
		script := `import botocore, botocore.utils as u
f = u.InstanceMetadataFetcher(timeout=2, num_attempts=1)
tok = f._fetch_metadata_token()
assert tok, "no IMDSv2 token"
iid = f._get_request("latest/meta-data/instance-id", None, tok).text
region = u.InstanceMetadataRegionFetcher(timeout=2, num_attempts=1).retrieve_region()
print(botocore.__version__, iid, region)
`
		out, err = pod.Guest.Command(ctx, "/usr/bin/python3", "-c", script).CombinedOutput()
		Expect(err).NotTo(HaveOccurred(), string(out))
		GinkgoWriter.Printf("botocore: %s", out)
		fields := strings.Fields(string(out))
		Expect(fields).To(HaveLen(3), string(out))
		Expect(fields[1:]).To(Equal([]string{doc.Instance.ID, ec2Region}))

		Expect(s.RequestCounts(ctx)).To(HaveKeyWithValue("ec2 401", 1), "the one IMDSv1 request, and no other refusal")
	}, SpecTimeout(5*time.Minute))

	for _, gen := range guest.Generations {
		It("reaches done on "+string(gen)+" over Ec2 with IMDSv2, identified as AWS by the SMBIOS UUID", func(ctx SpecContext) {
			// What guestDiscovery EC2 gives the VM: the UUID, and the
			// same serial (cloud-init 22.4 wants both).
			res, doc, s := bootGuest(ctx, gen, "vm-ec2-"+string(gen), withEC2, func(doc *payload.Document) guest.SMBIOS {
				return guest.KubeVirtSMBIOS(doc.Instance.ID, doc.Instance.ID)
			})
			AddReportEntry("boot", bootSummary(res, "Ec2", s))
			GinkgoWriter.Println(bootSummary(res, "Ec2", s))

			Expect(res.Datasource).To(HavePrefix("DataSourceEc2"), res.Report())
			Expect(res.CloudName).To(Equal("aws"), res.Report())
			Expect(res.StatusCode).To(Equal(0), res.Report())
			Expect(res.Status).To(ContainSubstring("done"))
			expectConfiguredFrom(res, doc)
			expectNoIMDSv1(s)
			Expect(s.Answered(guestAddr)).To(ContainElement(MatchRegexp(`^/[^/]+/meta-data/instance-id$`)))
		}, SpecTimeout(specTimeout))
	}
})

// A VM on NoCloud discovery whose firmware UUID looks like AWS's: cloud-init
// 25.1 (trixie) identifies the platform from the UUID alone, lists
// Ec2 beside NoCloud, and Ec2Local claims the boot in the local stage, before
// NoCloudNet can; 22.4 (bookworm) also wants the serial to match and stays on
// NoCloud. Served the EC2 tree without a signed identity, trixie's Ec2
// datasource asked for the identity document five times, then again on every
// instance-id lookup: minutes of boot and a degraded status.
var _ = Describe("a NoCloud guest whose firmware UUID looks like AWS's", Label("guest", "sidecar", "ec2"), func() {
	for _, gen := range guest.Generations {
		It("reaches done on "+string(gen)+" without the ec2 dialect, from the unsigned identity document", func(ctx SpecContext) {
			res, doc, s := bootGuest(ctx, gen, "vm-awsuuid-"+string(gen), withUnsignedEC2Tree, noCloudSMBIOS)
			AddReportEntry("boot", bootSummary(res, "NoCloud, AWS-like UUID", s))
			GinkgoWriter.Println(bootSummary(res, "NoCloud, AWS-like UUID", s))

			switch gen {
			case guest.Bookworm:
				Expect(res.Datasource).To(Equal("DataSourceNoCloudNet"), res.Report())
			case guest.Trixie:
				Expect(res.Datasource).To(Equal("DataSourceEc2Local"), res.Report())
				Expect(res.CloudName).To(Equal("aws"), res.Report())
				Expect(s.Answered(guestAddr)).To(ContainElement(MatchRegexp(`^/[^/]+/dynamic/instance-identity/document$`)))
			}
			// No retries, no warnings: status 0 is "done" with no
			// recoverable errors.
			Expect(res.StatusCode).To(Equal(0), res.Report())
			expectConfiguredFrom(res, doc)
			// The one kind of 404: cloud-init probing API versions newer
			// than the tree's.
			versionProbe := regexp.MustCompile(`^/\d{4}-\d{2}-\d{2}/meta-data/instance-id$`)
			for _, r := range s.Requests() {
				if r.Status >= 400 {
					Expect(r.URI).To(MatchRegexp(versionProbe.String()), "%s %s answered %d", r.Method, r.URI, r.Status)
				}
			}
		}, SpecTimeout(specTimeout))

		It("stays on NoCloud on "+string(gen)+" when the service serves no EC2 tree", func(ctx SpecContext) {
			withoutEC2Tree := func(doc *payload.Document) {
				withUnsignedEC2Tree(doc)
				doc.Dialects, doc.EC2 = []payload.Dialect{payload.DialectV1, payload.DialectNoCloud}, nil
			}
			res, doc, s := bootGuest(ctx, gen, "vm-awsuuid-noec2-"+string(gen), withoutEC2Tree, noCloudSMBIOS)
			AddReportEntry("boot", bootSummary(res, "NoCloud, AWS-like UUID, no EC2 tree", s))
			GinkgoWriter.Println(bootSummary(res, "NoCloud, AWS-like UUID, no EC2 tree", s))

			// On a platform it takes for AWS, cloud-init asks for an IMDSv2
			// token first and gives the Ec2 datasource up at once on a 404
			// (where nothing answers, it retries for 240 s), but it counts
			// that as a recoverable error: status "done", exit code 2.
			Expect(res.Datasource).To(Equal("DataSourceNoCloudNet"), res.Report())
			Expect(res.Status).To(ContainSubstring("done"), res.Report())
			for _, r := range s.Requests() {
				if !strings.HasPrefix(r.URI, "/nocloud/") {
					Expect(r).To(And(HaveField("Method", http.MethodPut), HaveField("URI", "/latest/api/token"), HaveField("Status", http.StatusNotFound)))
				}
			}
			expectConfiguredFrom(res, doc)
		}, SpecTimeout(specTimeout))
	}
})

func readBody(rc io.ReadCloser) string {
	GinkgoHelper()
	defer func() { _ = rc.Close() }()
	b, err := io.ReadAll(rc)
	Expect(err).NotTo(HaveOccurred())
	return string(b)
}

// vmRSS reads a process's resident set size in KiB.
func vmRSS(pid int) int {
	GinkgoHelper()
	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	Expect(err).NotTo(HaveOccurred())
	m := regexp.MustCompile(`(?m)^VmRSS:\s+(\d+) kB$`).FindSubmatch(status)
	Expect(m).NotTo(BeNil())
	kb, err := strconv.Atoi(string(m[1]))
	Expect(err).NotTo(HaveOccurred())
	return kb
}

// hammer runs op from workers goroutines until n calls are done or d has
// passed, whichever is first, and returns the calls made and the time taken.
func hammer(n int, d time.Duration, workers int, op func() error) (int, time.Duration) {
	GinkgoHelper()
	var done atomic.Int64
	deadline := time.Now().Add(d)
	start := time.Now()
	errs := make(chan error, workers)
	for range workers {
		go func() {
			for time.Now().Before(deadline) && done.Add(1) <= int64(n) {
				if err := op(); err != nil {
					errs <- err
					return
				}
			}
			errs <- nil
		}()
	}
	for range workers {
		Expect(<-errs).To(Succeed())
	}
	return min(int(done.Load()), n), time.Since(start)
}

var _ = Describe("IMDSv2 tokens under load", Label("guest", "sidecar", "ec2", "bench"), func() {
	It("costs a token PUT per pair, and holds the sidecar's memory flat over 100,000 tokens", func(ctx SpecContext) {
		if err := podnet.Available(); err != nil {
			controlplane.Unavailable(err.Error())
		}
		pod := podnet.NewPod(GinkgoT())
		pod.Plumb(GinkgoT(), podnet.Masquerade)
		doc := operatorDocument("vm-ec2-load", pod.GuestMAC.String())
		withEC2(doc)
		s := startSidecar(ctx, pod, doc)
		// One connection per request, as curl-based clients make them: the
		// per-connection request budget never runs out.
		client := pod.Guest.HTTPClient(5 * time.Second)
		const base = "http://169.254.169.254"
		do := func(method, path string, hdr ...string) (string, error) {
			req, err := http.NewRequestWithContext(ctx, method, base+path, nil)
			if err != nil {
				return "", err
			}
			for i := 0; i+1 < len(hdr); i += 2 {
				req.Header.Set(hdr[i], hdr[i+1])
			}
			resp, err := client.Do(req)
			if err != nil {
				return "", err
			}
			defer func() { _ = resp.Body.Close() }()
			b, err := io.ReadAll(resp.Body)
			if err == nil && resp.StatusCode != http.StatusOK {
				err = fmt.Errorf("%s %s: %d", method, path, resp.StatusCode)
			}
			return string(b), err
		}
		tok, err := do(http.MethodPut, "/latest/api/token", "X-aws-ec2-metadata-token-ttl-seconds", "21600")
		Expect(err).NotTo(HaveOccurred())
		pid := s.cmd.Process.Pid
		before := vmRSS(pid)

		const workers = 8
		gets, getTime := hammer(1<<30, 3*time.Second, workers, func() error {
			_, err := do(http.MethodGet, "/latest/meta-data/instance-id", "X-aws-ec2-metadata-token", tok)
			return err
		})
		pairs, pairTime := hammer(1<<30, 3*time.Second, workers, func() error {
			t, err := do(http.MethodPut, "/latest/api/token", "X-aws-ec2-metadata-token-ttl-seconds", "60")
			if err != nil {
				return err
			}
			_, err = do(http.MethodGet, "/latest/meta-data/instance-id", "X-aws-ec2-metadata-token", t)
			return err
		})
		getRate := float64(gets) / getTime.Seconds()
		pairRate := float64(pairs) / pairTime.Seconds()

		put := func() error {
			_, err := do(http.MethodPut, "/latest/api/token", "X-aws-ec2-metadata-token-ttl-seconds", "21600")
			return err
		}
		first, firstTime := hammer(50_000, 5*time.Minute, workers, put)
		mid := vmRSS(pid)
		second, secondTime := hammer(50_000, 5*time.Minute, workers, put)
		Expect(first + second).To(Equal(100_000))
		after := vmRSS(pid)
		line := fmt.Sprintf("IMDSv2 over TCP from the guest namespace, one connection per request, %d clients: "+
			"GET %.0f/s, token PUT+GET pair %.0f/s (%.2f× a GET's time); 100,000 tokens issued in %v; "+
			"sidecar RSS %d KiB at the start, %d KiB after 50,000 tokens, %d KiB after 100,000",
			workers, getRate, pairRate, getRate/pairRate, (firstTime + secondTime).Round(time.Millisecond), before, mid, after)
		AddReportEntry("tokens", line)
		GinkgoWriter.Println(line)
		// Tokens are stateless: nothing is kept per token, so the second
		// 50,000 leave the RSS where the first left it (the first grow it
		// by the heap and connection buffers any burst of connections
		// needs).
		Expect(after-mid).To(BeNumerically("<", 2*1024), line)
		Expect(after).To(BeNumerically("<", 32*1024), line)
	}, SpecTimeout(10*time.Minute))
})

// ttlsTo returns the IP TTLs of the captured TCP packets from
// 169.254.169.254 to the guest's local port.
func ttlsTo(c *podnet.Capture, port int) []int {
	var out []int
	for _, f := range c.Frames(func(f podnet.Frame) bool { return true }) {
		if f.EtherType() != 0x0800 || len(f) < 14+20+4 {
			continue
		}
		ip := f[14:]
		ihl := int(ip[0]&0x0f) * 4
		if ip[9] != 6 || len(ip) < ihl+4 || [4]byte(ip[12:16]) != [4]byte{169, 254, 169, 254} {
			continue
		}
		if int(ip[ihl+2])<<8|int(ip[ihl+3]) == port {
			out = append(out, int(ip[8]))
		}
	}
	return out
}

var _ = Describe("the token response's hop limit", Label("guest", "sidecar", "ec2"), func() {
	It("sends a token PUT's answer with the hop limit as IP TTL, and other answers as usual", func(ctx SpecContext) {
		if err := podnet.Available(); err != nil {
			controlplane.Unavailable(err.Error())
		}
		pod := podnet.NewPod(GinkgoT())
		pod.Plumb(GinkgoT(), podnet.Masquerade)
		doc := operatorDocument("vm-ec2-hops", pod.GuestMAC.String())
		withEC2(doc)
		doc.EC2.HopLimit = 3
		startSidecar(ctx, pod, doc)
		capture := pod.Guest.Capture(GinkgoT(), "eth0")

		exchange := func(request string) (port int, response string) {
			conn, err := pod.Guest.Dial(ctx, "tcp", "169.254.169.254:80")
			Expect(err).NotTo(HaveOccurred())
			defer func() { _ = conn.Close() }()
			Expect(conn.SetDeadline(time.Now().Add(5 * time.Second))).To(Succeed())
			_, err = io.WriteString(conn, request)
			Expect(err).NotTo(HaveOccurred())
			b, err := io.ReadAll(conn)
			Expect(err).NotTo(HaveOccurred())
			return conn.LocalAddr().(*net.TCPAddr).Port, string(b)
		}
		putPort, put := exchange("PUT /latest/api/token HTTP/1.1\r\nHost: 169.254.169.254\r\n" +
			"X-aws-ec2-metadata-token-ttl-seconds: 60\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
		Expect(put).To(HavePrefix("HTTP/1.1 200 "))
		token := put[strings.LastIndex(put, "\r\n\r\n")+4:]
		getPort, get := exchange("GET /latest/meta-data/instance-id HTTP/1.1\r\nHost: 169.254.169.254\r\n" +
			"X-aws-ec2-metadata-token: " + token + "\r\nConnection: close\r\n\r\n")
		Expect(get).To(HaveSuffix(doc.Instance.ID))

		Eventually(func() []int { return ttlsTo(capture, putPort) }).ShouldNot(BeEmpty())
		Expect(ttlsTo(capture, putPort)).To(ContainElement(3), "the token's packets")
		Expect(ttlsTo(capture, getPort)).To(HaveEach(64), "a GET's packets keep the default TTL")
		Expect(capture.Err()).NotTo(HaveOccurred())
	}, SpecTimeout(2*time.Minute))
})

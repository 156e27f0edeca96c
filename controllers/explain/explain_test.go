package explain_test

import (
	"bytes"
	"context"
	"io"
	"net"
	"net/http"
	"path/filepath"
	"strings"

	"github.com/go-logr/logr"
	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/kubevirt-imds/kubevirt-imds/api/payload"
	imdsv1alpha1 "github.com/kubevirt-imds/kubevirt-imds/api/v1alpha1"
	"github.com/kubevirt-imds/kubevirt-imds/controllers/explain"
	"github.com/kubevirt-imds/kubevirt-imds/sidecar/server"
	"github.com/kubevirt-imds/kubevirt-imds/sidecar/store"
	"github.com/kubevirt-imds/kubevirt-imds/sidecar/store/storetest"
	"github.com/kubevirt-imds/kubevirt-imds/test/fixtures"
)

func ptr[T any](v T) *T { return &v }

// sampleSpec is a service with something in every part of the payload that
// the dialects show.
func sampleSpec() imdsv1alpha1.MetadataServiceSpec {
	return imdsv1alpha1.MetadataServiceSpec{
		Selector:   metav1.LabelSelector{MatchLabels: map[string]string{"app": "web"}},
		Hostname:   "{name}-host",
		UserData:   &imdsv1alpha1.DataSource{Inline: ptr("#cloud-config\nwrite_files:\n- path: /etc/motd\n  content: hello\n")},
		VendorData: &imdsv1alpha1.DataSource{Inline: ptr("#cloud-config\npackages: [jq]\n")},
		SSHAuthorizedKeys: &imdsv1alpha1.SSHKeysSource{Inline: []string{
			"ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl demo@example"}},
		Metadata: &imdsv1alpha1.MetadataSpec{Tags: map[string]string{"environment": "test"}, ExposeLabels: []string{"app"}},
		Identity: &imdsv1alpha1.IdentitySpec{ServiceAccountTokens: []imdsv1alpha1.ServiceAccountTokenSpec{{Audience: "vault"}}},
	}
}

// payloadSecret waits for the operator to write the VMI's payload Secret.
func payloadSecret(ctx context.Context, namespace, vmi string) *corev1.Secret {
	var s corev1.Secret
	EventuallyWithOffset(1, func() error {
		return k8sClient.Get(ctx, types.NamespacedName{Namespace: namespace, Name: imdsv1alpha1.PayloadSecretName(vmi)}, &s)
	}).Should(Succeed())
	return &s
}

// sidecar serves a payload Secret's data as the sidecar does in a launcher
// Pod: the Secret and its service's shared one mounted as kubelet mounts
// the Pod webhook's projected volume, the sidecar's store and server, a real
// TCP listener (on loopback). It returns the base URL.
func sidecar(ctx context.Context, secret *corev1.Secret) string {
	dir, err := storetest.NewDir(filepath.Join(GinkgoT().TempDir(), "payload"))
	Expect(err).NotTo(HaveOccurred())
	files := map[string][]byte{payload.SecretKey: secret.Data[payload.SecretKey]}
	var shared corev1.Secret
	key := types.NamespacedName{Namespace: secret.Namespace, Name: imdsv1alpha1.SharedPayloadSecretName(secret.Labels[imdsv1alpha1.LabelMetadataService])}
	if err := k8sClient.Get(ctx, key, &shared); err == nil {
		files[payload.SharedKey] = shared.Data[payload.SharedKey]
	}
	Expect(dir.Write(files)).To(Succeed())
	st := store.New(store.Options{PayloadDir: dir.Path, TokenDir: GinkgoT().TempDir()}, logr.Discard())
	_, err = st.Load()
	Expect(err).NotTo(HaveOccurred())
	srv, err := server.New(server.Config{Store: st, Log: logr.Discard()})
	Expect(err).NotTo(HaveOccurred())
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	Expect(err).NotTo(HaveOccurred())
	sctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- srv.Serve(sctx, ln) }()
	DeferCleanup(func() {
		cancel()
		Expect(<-done).To(Succeed())
	})
	return "http://" + ln.Addr().String()
}

// guestGet is a guest's request: to 169.254.169.254 by name, whatever
// address the test's sidecar listens on.
func guestGet(base, p string, header http.Header) (int, []byte) {
	req, err := http.NewRequest(http.MethodGet, base+p, nil)
	Expect(err).NotTo(HaveOccurred())
	req.Host = server.Address
	for k, v := range header {
		req.Header[k] = v
	}
	resp, err := http.DefaultClient.Do(req)
	Expect(err).NotTo(HaveOccurred())
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	Expect(err).NotTo(HaveOccurred())
	return resp.StatusCode, body
}

var _ = Describe("kubectl imds show", func() {
	var (
		ctx context.Context
		ns  string
	)
	BeforeEach(func() {
		ctx = context.Background()
		ns = newNamespace(ctx, nil)
	})

	// The plugin's output for a sample VM is what the sidecar serves for
	// the same payload Secret, file by file, in each dialect.
	DescribeTable("prints what the sidecar serves",
		func(dialect explain.Dialect, header http.Header, want []string) {
			Expect(k8sClient.Create(ctx, fixtures.MetadataService(ns, "web", sampleSpec()))).To(Succeed())
			vmi := fixtures.VMI(ns, "web-1", map[string]string{"app": "web"})
			Expect(k8sClient.Create(ctx, vmi)).To(Succeed())
			base := sidecar(ctx, payloadSecret(ctx, ns, "web-1"))

			rep, err := explain.Explain(ctx, k8sClient, ns, "web-1", dialect)
			Expect(err).NotTo(HaveOccurred())
			var out bytes.Buffer
			Expect(rep.Write(&out)).To(Succeed())
			GinkgoWriter.Print(out.String())
			Expect(rep.Served()).To(BeTrue(), out.String())
			Expect(out.String()).To(HavePrefix("VirtualMachineInstance " + ns + "/web-1 is served by MetadataService web.\n"))

			files, err := explain.ParseFiles(out.Bytes())
			Expect(err).NotTo(HaveOccurred())
			paths := make([]string, 0, len(files))
			for p, body := range files {
				paths = append(paths, p)
				code, served := guestGet(base, p, header)
				Expect(code).To(Equal(http.StatusOK), p)
				Expect(string(body)).To(Equal(string(served)), "%s differs from what the sidecar serves", p)
			}
			Expect(paths).To(ContainElements(want))
			for _, p := range paths {
				Expect(p).NotTo(ContainSubstring("token"), "tokens are never shown")
			}
		},
		Entry("nocloud", explain.DialectNoCloud, nil,
			[]string{"/nocloud/meta-data", "/nocloud/network-config", "/nocloud/user-data", "/nocloud/vendor-data"}),
		Entry("openstack", explain.DialectOpenStack, nil,
			[]string{"/openstack/latest/meta_data.json", "/openstack/latest/network_data.json", "/openstack/latest/user_data", "/openstack/latest/vendor_data.json"}),
		Entry("ec2", explain.DialectEC2, nil,
			[]string{"/latest/meta-data/instance-id", "/latest/meta-data/local-hostname", "/latest/meta-data/public-keys/0/openssh-key", "/latest/user-data"}),
		Entry("v1", explain.DialectV1, http.Header{"Metadata": {"true"}},
			[]string{"/v1/identity", "/v1/metadata", "/v1/network-config", "/v1/user-data", "/v1/vendor-data"}),
	)

	It("defaults to the dialect of the service's guest discovery", func() {
		spec := sampleSpec()
		spec.GuestDiscovery = imdsv1alpha1.GuestDiscoveryOpenStack
		Expect(k8sClient.Create(ctx, fixtures.MetadataService(ns, "web", spec))).To(Succeed())
		Expect(k8sClient.Create(ctx, fixtures.VMI(ns, "web-1", map[string]string{"app": "web"}))).To(Succeed())
		payloadSecret(ctx, ns, "web-1")
		rep, err := explain.Explain(ctx, k8sClient, ns, "web-1", "")
		Expect(err).NotTo(HaveOccurred())
		Expect(rep.Dialect).To(Equal(explain.DialectOpenStack))
		Expect(rep.Files).NotTo(BeEmpty())
	})

	Describe("explains why a VM is not served", func() {
		explainOf := func(name string, dialect explain.Dialect) (*explain.Report, string) {
			GinkgoHelper()
			rep, err := explain.Explain(ctx, k8sClient, ns, name, dialect)
			Expect(err).NotTo(HaveOccurred())
			var out bytes.Buffer
			Expect(rep.Write(&out)).To(Succeed())
			return rep, out.String()
		}
		reasons := func(rep *explain.Report) []string {
			var out []string
			for _, f := range rep.Findings {
				if f.Blocking {
					out = append(out, f.Reason)
				}
			}
			return out
		}

		It("a VM that is not running", func() {
			rep, out := explainOf("absent", "")
			Expect(rep.Served()).To(BeFalse())
			Expect(reasons(rep)).To(Equal([]string{explain.ReasonInstanceNotFound}))
			Expect(out).To(ContainSubstring("is not served by any MetadataService"))
			Expect(out).To(ContainSubstring("the VM is not running"))
		})

		It("a namespace without a MetadataService", func() {
			Expect(k8sClient.Create(ctx, fixtures.VMI(ns, "vm", map[string]string{"app": "web"}))).To(Succeed())
			rep, out := explainOf("vm", "")
			Expect(reasons(rep)).To(Equal([]string{explain.ReasonNoMetadataService}))
			Expect(out).To(ContainSubstring("namespace " + ns + " has no MetadataService"))
		})

		It("a selector that does not match, naming the failing requirement", func() {
			Expect(k8sClient.Create(ctx, fixtures.MetadataService(ns, "web", sampleSpec()))).To(Succeed())
			Expect(k8sClient.Create(ctx, fixtures.VMI(ns, "db-1", map[string]string{"app": "db"}))).To(Succeed())
			Expect(k8sClient.Create(ctx, fixtures.VMI(ns, "bare", nil))).To(Succeed())
			rep, out := explainOf("db-1", "")
			Expect(reasons(rep)).To(Equal([]string{explain.ReasonSelectorMismatch}))
			Expect(out).To(ContainSubstring("MetadataService web requires app=web, and the VMI has app=db"))
			Expect(rep.Files).To(BeEmpty())
			_, out = explainOf("bare", "")
			Expect(out).To(ContainSubstring("MetadataService web requires app=web, and the VMI has no label app"))
		})

		It("a running launcher Pod without the sidecar (SidecarMissing), showing what a new Pod gets", func() {
			Expect(k8sClient.Create(ctx, fixtures.MetadataService(ns, "web", sampleSpec()))).To(Succeed())
			vmi := fixtures.VMI(ns, "web-1", map[string]string{"app": "web"})
			Expect(k8sClient.Create(ctx, vmi)).To(Succeed())
			payloadSecret(ctx, ns, "web-1")
			Expect(k8sClient.Create(ctx, fixtures.LauncherPod(vmi))).To(Succeed())
			rep, out := explainOf("web-1", explain.DialectNoCloud)
			Expect(rep.Served()).To(BeFalse())
			Expect(reasons(rep)).To(Equal([]string{imdsv1alpha1.ReasonSidecarMissing}))
			Expect(out).To(ContainSubstring("is selected by MetadataService web but not served"))
			Expect(out).To(ContainSubstring("restart or live-migrate the VM"))
			Expect(rep.Files).NotTo(BeEmpty(), "the files the next launcher Pod serves")
		})

		It("a NIC the service cannot serve (status.unservableInstances)", func() {
			spec := sampleSpec()
			spec.NetworkData = &imdsv1alpha1.NetworkDataSpec{ServeInterface: "storage"}
			Expect(k8sClient.Create(ctx, fixtures.MetadataService(ns, "web", spec))).To(Succeed())
			Expect(k8sClient.Create(ctx, fixtures.VMI(ns, "web-1", map[string]string{"app": "web"}))).To(Succeed())
			rep, out := explainOf("web-1", "")
			Expect(reasons(rep)).To(ContainElement(imdsv1alpha1.ReasonServeInterfaceNotFound))
			Expect(out).To(ContainSubstring(`spec.networkData.serveInterface "storage" names no interface of the VMI`))
			Expect(rep.Files).To(BeEmpty())
		})

		It("a namespace whose Pod Security forbids the privileged sidecar, as the controller reports it", func() {
			ns = newNamespace(ctx, map[string]string{"pod-security.kubernetes.io/enforce": "baseline"})
			Expect(k8sClient.Create(ctx, fixtures.MetadataService(ns, "web", sampleSpec()))).To(Succeed())
			Expect(k8sClient.Create(ctx, fixtures.VMI(ns, "web-1", map[string]string{"app": "web"}))).To(Succeed())
			Eventually(func() []string {
				rep, _ := explainOf("web-1", "")
				return reasons(rep)
			}).Should(ContainElement(imdsv1alpha1.ReasonPodSecurityForbidsSidecar))
			_, out := explainOf("web-1", "")
			Expect(out).To(ContainSubstring(`enforces Pod Security level "baseline"`))
		})

		It("a dialect the service does not enable", func() {
			spec := sampleSpec()
			spec.Dialects = []imdsv1alpha1.Dialect{"nocloud"}
			Expect(k8sClient.Create(ctx, fixtures.MetadataService(ns, "web", spec))).To(Succeed())
			Expect(k8sClient.Create(ctx, fixtures.VMI(ns, "web-1", map[string]string{"app": "web"}))).To(Succeed())
			payloadSecret(ctx, ns, "web-1")
			rep, out := explainOf("web-1", explain.DialectV1)
			Expect(rep.Files).To(BeEmpty())
			Expect(out).To(ContainSubstring("(DialectDisabled): MetadataService web does not enable the v1 dialect"))
		})

		It("a VM selected by two services names the one that wins", func() {
			Expect(k8sClient.Create(ctx, fixtures.MetadataService(ns, "web", sampleSpec()))).To(Succeed())
			high := sampleSpec()
			high.Priority = 10
			Expect(k8sClient.Create(ctx, fixtures.MetadataService(ns, "urgent", high))).To(Succeed())
			Expect(k8sClient.Create(ctx, fixtures.VMI(ns, "web-1", map[string]string{"app": "web"}))).To(Succeed())
			Eventually(func() string {
				var s corev1.Secret
				_ = k8sClient.Get(ctx, types.NamespacedName{Namespace: ns, Name: "imds-web-1"}, &s)
				return s.Labels[imdsv1alpha1.LabelMetadataService]
			}).Should(Equal("urgent"))
			rep, out := explainOf("web-1", "")
			Expect(rep.Service).To(Equal("urgent"))
			Expect(out).To(ContainSubstring("also selected by MetadataService web, which urgent takes precedence over"))
		})
	})

	It("refuses an unknown dialect, naming the flag", func() {
		_, err := explain.Explain(ctx, k8sClient, ns, "x", "gce")
		Expect(err).To(MatchError(ContainSubstring(`--dialect "gce"`)))
	})

	It("parses its own output back", func() {
		rep := &explain.Report{Files: []explain.File{
			{Path: "/a", ContentType: "text/plain", Body: []byte("x\n=== /fake (y, 1 bytes)\n")},
			{Path: "/b", ContentType: "text/plain", Body: []byte("")},
			{Path: "/c", ContentType: "application/octet-stream", Body: []byte{0x1f, 0x8b, 0xff}},
		}}
		var out bytes.Buffer
		Expect(rep.Write(&out)).To(Succeed())
		files, err := explain.ParseFiles(out.Bytes())
		Expect(err).NotTo(HaveOccurred())
		Expect(files).To(HaveLen(2))
		Expect(string(files["/a"])).To(Equal("x\n=== /fake (y, 1 bytes)\n"))
		Expect(files).To(HaveKey("/b"))
		Expect(strings.Contains(out.String(), "--path /c")).To(BeTrue())
	})
})

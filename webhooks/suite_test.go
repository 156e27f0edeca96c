package webhooks_test

import (
	"context"
	"crypto/tls"
	"errors"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/rest"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/config"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"
	"sigs.k8s.io/controller-runtime/pkg/webhook"

	"github.com/kubevirt-imds/kubevirt-imds/controllers"
	"github.com/kubevirt-imds/kubevirt-imds/test/controlplane"
	"github.com/kubevirt-imds/kubevirt-imds/webhooks"
)

const sidecarImage = "registry.example/kubevirt-imds:test"

var (
	testEnv   *envtest.Environment
	cfg       *rest.Config
	k8sClient client.Client // uncached: what kubectl would see
	scheme    *runtime.Scheme
)

func TestWebhooks(t *testing.T) {
	RegisterFailHandler(Fail)
	// Generous: the control plane shares two cores with the compiler in CI.
	SetDefaultEventuallyTimeout(30 * time.Second)
	SetDefaultEventuallyPollingInterval(50 * time.Millisecond)
	RunSpecs(t, "Webhooks Suite")
}

func newScheme() *runtime.Scheme {
	s, err := controllers.NewScheme()
	Expect(err).NotTo(HaveOccurred())
	return s
}

// renderWebhookConfig builds config/webhook with kustomize (kubectl's, from
// the envtest assets), so the suite installs the webhooks exactly as
// deployed, selectors included.
func renderWebhookConfig() string {
	kubectl := filepath.Join(os.Getenv("KUBEBUILDER_ASSETS"), "kubectl")
	out, err := exec.Command(kubectl, "kustomize", filepath.Join(controlplane.RepoRoot(), "config", "webhook")).Output()
	Expect(err).NotTo(HaveOccurred(), "kubectl kustomize config/webhook")
	dir := GinkgoT().TempDir()
	Expect(os.WriteFile(filepath.Join(dir, "webhooks.yaml"), out, 0o644)).To(Succeed())
	return dir
}

var _ = BeforeSuite(func() {
	ctrl.SetLogger(zap.New(zap.WriteTo(GinkgoWriter), zap.UseDevMode(true)))
	if os.Getenv("KUBEBUILDER_ASSETS") == "" {
		Skip(controlplane.ErrNoAssets.Error())
	}
	var err error
	testEnv, cfg, err = controlplane.Start(controlplane.Options{
		// A host name, not an IP: the built-in certificates carry DNS names only.
		Webhooks: envtest.WebhookInstallOptions{Paths: []string{renderWebhookConfig()}, LocalServingHostExternalName: "localhost"},
	})
	if errors.Is(err, controlplane.ErrNoAssets) {
		Skip(err.Error())
	}
	Expect(err).NotTo(HaveOccurred())
	scheme = newScheme()
	k8sClient, err = client.New(cfg, client.Options{Scheme: scheme})
	Expect(err).NotTo(HaveOccurred())
	startManager()
})

var _ = AfterSuite(func() {
	stopManager()
	if testEnv != nil {
		Expect(testEnv.Stop()).To(Succeed())
	}
})

// stopManagerFunc stops the running manager; nil when none runs.
var stopManagerFunc func() error

// startManager runs the controller and the webhooks as manager_cmd.go wires
// them, and waits until the webhook server accepts connections.
func startManager() {
	mgr := newManager(testEnv.WebhookInstallOptions.LocalServingCertDir)
	Expect((&controllers.MetadataServiceReconciler{
		Client:   mgr.GetClient(),
		Recorder: mgr.GetEventRecorder("kubevirt-imds"),
	}).SetupWithManager(mgr)).To(Succeed())
	Expect(webhooks.SetupWithManager(mgr, webhooks.Options{Sidecar: webhooks.SidecarOptions{Image: sidecarImage}})).To(Succeed())
	runManager(mgr)
}

// newManager is a manager serving webhooks from certDir on envtest's port.
func newManager(certDir string) ctrl.Manager {
	w := &testEnv.WebhookInstallOptions
	mgr, err := ctrl.NewManager(cfg, ctrl.Options{
		Scheme:                 scheme,
		Metrics:                metricsserver.Options{BindAddress: "0"},
		HealthProbeBindAddress: "0",
		WebhookServer:          webhook.NewServer(webhook.Options{Host: w.LocalServingHost, Port: w.LocalServingPort, CertDir: certDir}),
		Cache:                  cache.Options{ByObject: controllers.CacheByObject()},
		// The suite restarts the manager; controller names are per process.
		Controller: config.Controller{SkipNameValidation: ptr(true)},
	})
	Expect(err).NotTo(HaveOccurred())
	return mgr
}

// runManager starts mgr and waits until its webhook server accepts
// connections and its cache has synced.
func runManager(mgr ctrl.Manager) {
	w := &testEnv.WebhookInstallOptions
	stopManagerFunc = controlplane.RunManager(mgr)
	addr := net.JoinHostPort(w.LocalServingHost, strconv.Itoa(w.LocalServingPort))
	Eventually(func() error {
		conn, err := tls.Dial("tcp", addr, &tls.Config{InsecureSkipVerify: true}) //nolint:gosec // only checks the server is up
		if err != nil {
			return err
		}
		return conn.Close()
	}).Should(Succeed())
	// The webhooks read live, but the controller reads through the cache:
	// wait until it has synced, so that the specs' Eventually timeouts time
	// the controller's work, not the manager's start.
	Eventually(func() bool { return mgr.GetCache().WaitForCacheSync(context.Background()) }).Should(BeTrue())
}

// stopManager stops the manager and waits for it, before the control plane goes.
func stopManager() {
	if stopManagerFunc == nil {
		return
	}
	Expect(stopManagerFunc()).To(Succeed())
	stopManagerFunc = nil
}

// newNamespace creates a namespace for one spec.
func newNamespace(ctx context.Context) string {
	ns := &corev1.Namespace{}
	ns.GenerateName = "wh-"
	Expect(k8sClient.Create(ctx, ns)).To(Succeed())
	return ns.Name
}

func ptr[T any](v T) *T { return &v }

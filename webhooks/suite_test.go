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
		controlplane.Unavailable(controlplane.ErrNoAssets.Error())
	}
	var err error
	testEnv, cfg, err = controlplane.Start(controlplane.Options{
		// A host name, not an IP: the built-in certificates carry DNS names only.
		Webhooks: envtest.WebhookInstallOptions{Paths: []string{renderWebhookConfig()}, LocalServingHostExternalName: "localhost"},
	})
	if errors.Is(err, controlplane.ErrNoAssets) {
		controlplane.Unavailable(err.Error())
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

// defaultOptions are the webhooks' options as the manager's defaults set them.
func defaultOptions() webhooks.Options {
	return webhooks.Options{Sidecar: webhooks.SidecarOptions{Image: sidecarImage}}
}

// startManager runs the controller and the webhooks as manager_cmd.go wires
// them, with the manager's default options.
func startManager() { startManagerWith(defaultOptions()) }

// startManagerWith runs the controller and the webhooks with o on the
// suite's control plane, and waits until they serve.
func startManagerWith(o webhooks.Options) {
	stopManagerFunc = startStackManager(testEnv, cfg, o)
}

// startStackManager runs the controller and the webhooks with o against the
// control plane env, serving its webhooks, and waits until the webhook
// server accepts connections and the cache has synced. It returns the stop.
func startStackManager(env *envtest.Environment, cfg *rest.Config, o webhooks.Options) func() error {
	mgr := newManager(env, cfg, env.WebhookInstallOptions.LocalServingCertDir)
	reconciler := newReconciler(mgr)
	Expect(reconciler.SetupWithManager(mgr)).To(Succeed())
	if o.Payload == nil {
		o.Payload = reconciler
	}
	Expect(webhooks.SetupWithManager(mgr, o)).To(Succeed())
	return runManager(env, mgr)
}

// startWebhooksAlone runs the webhooks with the manager's default options
// and no controller: their payload writer is a reconciler that never
// reconciles, as the Pod webhook finds it when it renders ahead of the
// controller's first reconcile of a new service.
func startWebhooksAlone() {
	env := testEnv
	mgr := newManager(env, cfg, env.WebhookInstallOptions.LocalServingCertDir)
	o := defaultOptions()
	o.Payload = newReconciler(mgr)
	Expect(webhooks.SetupWithManager(mgr, o)).To(Succeed())
	stopManagerFunc = runManager(env, mgr)
}

// newReconciler is the controller's reconciler, its options at their
// defaults.
func newReconciler(mgr ctrl.Manager) *controllers.MetadataServiceReconciler {
	return &controllers.MetadataServiceReconciler{Client: mgr.GetClient(), Recorder: mgr.GetEventRecorder("kubevirt-imds")}
}

// newManager is a manager wired as manager_cmd.go wires it (client QPS and
// burst, cache options), serving webhooks from certDir on env's port.
func newManager(env *envtest.Environment, cfg *rest.Config, certDir string) ctrl.Manager {
	w := &env.WebhookInstallOptions
	mcfg := rest.CopyConfig(cfg)
	mcfg.QPS, mcfg.Burst = managerQPS, managerBurst
	mgr, err := ctrl.NewManager(mcfg, ctrl.Options{
		Scheme:                 scheme,
		Metrics:                metricsserver.Options{BindAddress: "0"},
		HealthProbeBindAddress: "0",
		WebhookServer:          webhook.NewServer(webhook.Options{Host: w.LocalServingHost, Port: w.LocalServingPort, CertDir: certDir}),
		Cache:                  controllers.CacheOptions(),
		// The suite restarts the manager; controller names are per process.
		Controller: config.Controller{SkipNameValidation: ptr(true)},
	})
	Expect(err).NotTo(HaveOccurred())
	return mgr
}

// managerQPS and managerBurst are the manager's --kube-api-qps and
// --kube-api-burst defaults.
const managerQPS, managerBurst = controllers.DefaultKubeAPIQPS, controllers.DefaultKubeAPIBurst

// runManager starts mgr and waits until its webhook server (on env's port)
// accepts connections and its cache has synced, so that the specs'
// Eventually timeouts time the work, not the manager's start.
func runManager(env *envtest.Environment, mgr ctrl.Manager) func() error {
	w := &env.WebhookInstallOptions
	stop := controlplane.RunManager(mgr)
	addr := net.JoinHostPort(w.LocalServingHost, strconv.Itoa(w.LocalServingPort))
	Eventually(func() error {
		conn, err := tls.Dial("tcp", addr, &tls.Config{InsecureSkipVerify: true}) //nolint:gosec // only checks the server is up
		if err != nil {
			return err
		}
		return conn.Close()
	}).Should(Succeed())
	Eventually(func() bool { return mgr.GetCache().WaitForCacheSync(context.Background()) }).Should(BeTrue())
	return stop
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

package controllers

import (
	"context"
	"errors"
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
	"sigs.k8s.io/controller-runtime/pkg/envtest"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	"github.com/kubevirt-imds/kubevirt-imds/test/controlplane"
)

var (
	testEnv   *envtest.Environment
	cfg       *rest.Config
	k8sClient client.Client // uncached: what a user's kubectl would see
	scheme    *runtime.Scheme
)

func TestControllers(t *testing.T) {
	RegisterFailHandler(Fail)
	// Generous: the control plane shares two cores with the compiler in CI.
	SetDefaultEventuallyTimeout(30 * time.Second)
	SetDefaultEventuallyPollingInterval(50 * time.Millisecond)
	RunSpecs(t, "Controllers Suite")
}

func newTestScheme() *runtime.Scheme {
	s, err := NewScheme()
	Expect(err).NotTo(HaveOccurred())
	return s
}

var _ = BeforeSuite(func() {
	ctrl.SetLogger(zap.New(zap.WriteTo(GinkgoWriter), zap.UseDevMode(true)))
	var err error
	testEnv, cfg, err = controlplane.Start(controlplane.Options{})
	if errors.Is(err, controlplane.ErrNoAssets) {
		controlplane.Unavailable(err.Error())
	}
	Expect(err).NotTo(HaveOccurred())
	scheme = newTestScheme()
	k8sClient, err = client.New(cfg, client.Options{Scheme: scheme})
	Expect(err).NotTo(HaveOccurred())
	startManager(cfg)
})

var _ = AfterSuite(func() {
	stopManager()
	if testEnv != nil {
		Expect(testEnv.Stop()).To(Succeed())
	}
})

// stopManagerFunc stops the running manager; nil when none runs.
var stopManagerFunc func() error

// managerReconciler and managerCache are the running manager's, for specs
// that check what it holds in memory.
var (
	managerReconciler *MetadataServiceReconciler
	managerCache      cache.Cache
)

// identityNamespace plays the operator's namespace, where the identity
// signing key is kept.
var identityNamespace string

// startManager runs the controller as main.go wires it, with its own cache.
func startManager(c *rest.Config) {
	mgr, err := ctrl.NewManager(c, ctrl.Options{
		Scheme:                 scheme,
		Metrics:                metricsserver.Options{BindAddress: "0"},
		HealthProbeBindAddress: "0",
		Cache:                  CacheOptions(),
	})
	Expect(err).NotTo(HaveOccurred())
	identityNamespace = newNamespace(context.Background())
	managerReconciler = &MetadataServiceReconciler{
		Client:   mgr.GetClient(),
		Recorder: mgr.GetEventRecorder("kubevirt-imds"),
		Identity: &IdentityKeys{Client: mgr.GetClient(), Live: mgr.GetAPIReader(), Namespace: identityNamespace},
	}
	Expect(managerReconciler.SetupWithManager(mgr)).To(Succeed())
	managerCache = mgr.GetCache()
	stopManagerFunc = controlplane.RunManager(mgr)
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
	ns.GenerateName = "mds-"
	Expect(k8sClient.Create(ctx, ns)).To(Succeed())
	return ns.Name
}

package explain_test

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
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	"github.com/kubevirt-imds/kubevirt-imds/controllers"
	"github.com/kubevirt-imds/kubevirt-imds/test/controlplane"
)

var (
	testEnv     *envtest.Environment
	k8sClient   client.Client // uncached: what the plugin reads
	scheme      *runtime.Scheme
	stopManager func() error
)

func TestExplain(t *testing.T) {
	RegisterFailHandler(Fail)
	SetDefaultEventuallyTimeout(30 * time.Second)
	SetDefaultEventuallyPollingInterval(50 * time.Millisecond)
	RunSpecs(t, "Explain Suite")
}

var _ = BeforeSuite(func() {
	ctrl.SetLogger(zap.New(zap.WriteTo(GinkgoWriter), zap.UseDevMode(true)))
	var (
		cfg *rest.Config
		err error
	)
	testEnv, cfg, err = controlplane.Start(controlplane.Options{})
	if errors.Is(err, controlplane.ErrNoAssets) {
		controlplane.Unavailable(err.Error())
	}
	Expect(err).NotTo(HaveOccurred())
	DeferCleanup(func() {
		if stopManager != nil {
			Expect(stopManager()).To(Succeed())
		}
		Expect(testEnv.Stop()).To(Succeed())
	})
	scheme, err = controllers.NewScheme()
	Expect(err).NotTo(HaveOccurred())
	k8sClient, err = client.New(cfg, client.Options{Scheme: scheme})
	Expect(err).NotTo(HaveOccurred())

	// The operator as main.go wires it with --sidecar-network-setup=sidecar,
	// so that Pod Security can forbid the sidecar in a namespace.
	mgr, err := ctrl.NewManager(cfg, ctrl.Options{
		Scheme:                 scheme,
		Metrics:                metricsserver.Options{BindAddress: "0"},
		HealthProbeBindAddress: "0",
		Cache:                  controllers.CacheOptions(),
	})
	Expect(err).NotTo(HaveOccurred())
	Expect((&controllers.MetadataServiceReconciler{
		Client:            mgr.GetClient(),
		Recorder:          mgr.GetEventRecorder("kubevirt-imds"),
		PrivilegedSidecar: true,
	}).SetupWithManager(mgr)).To(Succeed())
	stopManager = controlplane.RunManager(mgr)
})

// newNamespace creates a namespace for one spec, with labels.
func newNamespace(ctx context.Context, labels map[string]string) string {
	ns := &corev1.Namespace{}
	ns.GenerateName = "explain-"
	ns.Labels = labels
	Expect(k8sClient.Create(ctx, ns)).To(Succeed())
	return ns.Name
}

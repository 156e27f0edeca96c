package kubelet_test

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"testing"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/kubevirt-imds/kubevirt-imds/test/controlplane"
	"github.com/kubevirt-imds/kubevirt-imds/test/kubelet"
)

func TestKubelet(t *testing.T) {
	RegisterFailHandler(Fail)
	RunSpecs(t, "kubelet stand-in against a real API server")
}

var clientset kubernetes.Interface

var _ = BeforeSuite(func() {
	env, cfg, err := controlplane.Start(controlplane.Options{})
	if errors.Is(err, controlplane.ErrNoAssets) {
		controlplane.Unavailable(err.Error())
	}
	Expect(err).NotTo(HaveOccurred())
	DeferCleanup(env.Stop)
	clientset, err = kubernetes.NewForConfig(cfg)
	Expect(err).NotTo(HaveOccurred())
})

var nsCounter atomic.Int64

// newNamespace creates a namespace and the ServiceAccount sa in it: envtest
// has no controller-manager to create ServiceAccounts.
func newNamespace(ctx context.Context, sa string) string {
	GinkgoHelper()
	ns := fmt.Sprintf("kubelet-%d", nsCounter.Add(1))
	_, err := clientset.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{})
	Expect(err).NotTo(HaveOccurred())
	_, err = clientset.CoreV1().ServiceAccounts(ns).Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: sa}}, metav1.CreateOptions{})
	Expect(err).NotTo(HaveOccurred())
	return ns
}

// newKubelet returns a Kubelet materialising below a fresh directory.
func newKubelet(executables map[string]string) *kubelet.Kubelet {
	return kubelet.New(kubelet.Config{
		Client:      clientset,
		Root:        GinkgoT().TempDir(),
		Log:         GinkgoLogr,
		Executables: executables,
	})
}

// run runs kl until the spec ends.
func run(kl *kubelet.Kubelet) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- kl.Run(ctx) }()
	DeferCleanup(func() {
		cancel()
		Eventually(done).Should(Receive(BeNil()))
	})
}

func mustQuantity(s string) resource.Quantity { return resource.MustParse(s) }

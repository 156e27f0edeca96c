// Package manifests_test applies every manifest the project ships or tests
// with, as a user would (`kubectl apply --server-side`), with a server-side
// dry-run against a real API server that has the CRDs the manifests use: the
// API server's validation, defaulting and admission judge every object
// without anything being created.
package manifests_test

import (
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"

	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"

	"github.com/kubevirt-imds/kubevirt-imds/test/controlplane"
)

// kubeContext is the context every kubectl call names: never a current
// context, which on a developer's machine could be a real cluster's.
const kubeContext = "envtest-manifests"

// defaultNamespace receives the objects that name no namespace (samples).
const defaultNamespace = "manifests-default"

var (
	testEnv    *envtest.Environment
	k8sClient  client.Client
	kubectl    string
	kubeconfig string
)

func TestManifests(t *testing.T) {
	RegisterFailHandler(Fail)
	SetDefaultEventuallyTimeout(30 * time.Second)
	RunSpecs(t, "Manifests Suite")
}

var _ = BeforeSuite(func() {
	if os.Getenv("KUBEBUILDER_ASSETS") == "" {
		controlplane.Unavailable(controlplane.ErrNoAssets.Error())
	}
	var err error
	testEnv, _, err = controlplane.Start(controlplane.Options{})
	if errors.Is(err, controlplane.ErrNoAssets) {
		controlplane.Unavailable(err.Error())
	}
	Expect(err).NotTo(HaveOccurred())
	// config/default asks cert-manager for its webhook certificate.
	_, err = envtest.InstallCRDs(testEnv.Config, envtest.CRDInstallOptions{
		Paths:              []string{filepath.Join(controlplane.RepoRoot(), "test", "crds", "cert-manager")},
		ErrorIfPathMissing: true,
	})
	Expect(err).NotTo(HaveOccurred())

	user, err := testEnv.AddUser(envtest.User{Name: "manifests-test", Groups: []string{"system:masters"}}, nil)
	Expect(err).NotTo(HaveOccurred())
	k8sClient, err = client.New(user.Config(), client.Options{})
	Expect(err).NotTo(HaveOccurred())
	data, err := user.KubeConfig()
	Expect(err).NotTo(HaveOccurred())
	cfg, err := clientcmd.Load(data)
	Expect(err).NotTo(HaveOccurred())
	ctx := *cfg.Contexts[cfg.CurrentContext]
	ctx.Namespace = defaultNamespace
	cfg.Contexts = map[string]*clientcmdapi.Context{kubeContext: &ctx}
	cfg.CurrentContext = "" // every call names kubeContext
	kubeconfig = filepath.Join(GinkgoT().TempDir(), "kubeconfig")
	Expect(clientcmd.WriteToFile(*cfg, kubeconfig)).To(Succeed())
	kubectl = filepath.Join(os.Getenv("KUBEBUILDER_ASSETS"), "kubectl")
})

var _ = AfterSuite(func() {
	if testEnv != nil {
		Expect(testEnv.Stop()).To(Succeed())
	}
})

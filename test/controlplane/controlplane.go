// Package controlplane starts the real control plane the integration tests
// run against: kube-apiserver and etcd (envtest) with the kubevirt-imds CRDs
// and KubeVirt's real, full-schema VirtualMachine and VirtualMachineInstance
// CRDs, so VMIs are validated as in a cluster.
package controlplane

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	goruntime "runtime"

	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	kubevirtv1 "kubevirt.io/api/core/v1"
	"sigs.k8s.io/controller-runtime/pkg/envtest"

	imdsv1alpha1 "github.com/kubevirt-imds/kubevirt-imds/api/v1alpha1"
)

// ErrNoAssets means KUBEBUILDER_ASSETS is unset: run the tests through
// `make test`, which builds the control plane first.
var ErrNoAssets = errors.New("KUBEBUILDER_ASSETS is not set: run `make test` (it builds kube-apiserver, etcd and kubectl with hack/envtest-assets.sh)")

// RepoRoot is the repository's root directory.
func RepoRoot() string {
	_, file, _, _ := goruntime.Caller(0)
	return filepath.Join(filepath.Dir(file), "..", "..")
}

// Options adjust the environment.
type Options struct {
	// Webhooks, when set, are installed and served from the test process.
	Webhooks envtest.WebhookInstallOptions
}

// Start starts kube-apiserver and etcd with the CRDs installed. Stop the
// returned environment when done (after stopping any manager using it).
func Start(o Options) (*envtest.Environment, *rest.Config, error) {
	if os.Getenv("KUBEBUILDER_ASSETS") == "" {
		return nil, nil, ErrNoAssets
	}
	root := RepoRoot()
	env := &envtest.Environment{
		CRDDirectoryPaths: []string{
			filepath.Join(root, "config", "crd", "bases"),
			filepath.Join(root, "test", "crds", "kubevirt"),
		},
		ErrorIfCRDPathMissing: true,
		WebhookInstallOptions: o.Webhooks,
	}
	cfg, err := env.Start()
	if err != nil {
		return nil, nil, fmt.Errorf("starting envtest: %w", err)
	}
	return env, cfg, nil
}

// VMIResource is the KubeVirt VirtualMachineInstance resource.
var VMIResource = schema.GroupVersionResource{Group: "kubevirt.io", Version: "v1", Resource: "virtualmachineinstances"}

// Scheme registers the API types the operator and its tests use: Kubernetes'
// own, imds.kubevirt.io and kubevirt.io.
func Scheme() (*runtime.Scheme, error) {
	s := runtime.NewScheme()
	for _, add := range []func(*runtime.Scheme) error{clientgoscheme.AddToScheme, imdsv1alpha1.AddToScheme, kubevirtv1.AddToScheme} {
		if err := add(s); err != nil {
			return nil, err
		}
	}
	return s, nil
}

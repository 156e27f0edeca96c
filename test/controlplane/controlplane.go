// Package controlplane starts the real control plane the integration tests
// run against: kube-apiserver and etcd (envtest) with the kubevirt-imds CRDs
// and KubeVirt's real, full-schema VirtualMachine and VirtualMachineInstance
// CRDs, so VMIs are validated as in a cluster.
package controlplane

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"

	"golang.org/x/mod/modfile"
	"k8s.io/client-go/rest"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
)

// ErrNoAssets means KUBEBUILDER_ASSETS is unset: run the tests through
// `make test`, which builds the control plane first.
var ErrNoAssets = errors.New("KUBEBUILDER_ASSETS is not set: run `make test` (it builds kube-apiserver, etcd and kubectl with hack/envtest-assets.sh)")

// RepoRoot is the repository's root directory: the nearest directory at or
// above the working directory (go test runs in the package's directory) that
// holds this module's go.mod. It does not use the source file's path, which a
// -trimpath build (as make builds) turns into the import path. Found once per
// process.
func RepoRoot() string { return repoRoot() }

// modulePath is the module RepoRoot looks for.
const modulePath = "github.com/kubevirt-imds/kubevirt-imds"

var repoRoot = sync.OnceValue(func() string {
	wd, err := os.Getwd()
	if err != nil {
		panic(fmt.Sprintf("RepoRoot: %v", err))
	}
	for dir := wd; ; dir = filepath.Dir(dir) {
		if mod, err := os.ReadFile(filepath.Join(dir, "go.mod")); err == nil && modfile.ModulePath(mod) == modulePath {
			return dir
		}
		if filepath.Dir(dir) == dir {
			panic(fmt.Sprintf("RepoRoot: no go.mod of %s at or above %s", modulePath, wd))
		}
	}
})

// Options adjust the environment.
type Options struct {
	// Webhooks, when set, are installed and served from the test process.
	Webhooks envtest.WebhookInstallOptions
	// AdmissionConfigFile, when set, is kube-apiserver's
	// --admission-control-config-file: an AdmissionConfiguration, e.g. a
	// PodSecurity plugin configuration with cluster-wide default levels.
	AdmissionConfigFile string
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
	if o.AdmissionConfigFile != "" {
		env.ControlPlane.GetAPIServer().Configure().Set("admission-control-config-file", o.AdmissionConfigFile)
	}
	cfg, err := env.Start()
	if err != nil {
		return nil, nil, fmt.Errorf("starting envtest: %w", err)
	}
	return env, cfg, nil
}

// RunManager starts mgr in the background. The returned stop cancels it,
// waits until it has stopped (stop managers before the control plane: their
// watches would otherwise log errors) and returns what Start returned.
func RunManager(mgr ctrl.Manager) (stop func() error) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- mgr.Start(ctx) }()
	return func() error {
		cancel()
		return <-done
	}
}

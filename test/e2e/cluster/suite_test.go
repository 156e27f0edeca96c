//go:build e2e

package cluster_test

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"

	authenticationv1 "k8s.io/api/authentication/v1"
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	"sigs.k8s.io/controller-runtime/pkg/client"

	imdsv1alpha1 "github.com/kubevirt-imds/kubevirt-imds/api/v1alpha1"
	"github.com/kubevirt-imds/kubevirt-imds/controllers"
	"github.com/kubevirt-imds/kubevirt-imds/test/controlplane"
)

// namespace is where testdata/ puts the VMs.
const namespace = "imds-e2e"

var (
	// kubeContext is the only context the suite uses: never the current one,
	// which other projects on the same host may switch at any time.
	kubeContext string
	cfg         *rest.Config
	k8sClient   client.Client
	clientset   kubernetes.Interface
	img         string
)

func TestCluster(t *testing.T) {
	RegisterFailHandler(Fail)
	// VMs boot from containerdisks, often under software emulation.
	SetDefaultEventuallyTimeout(10 * time.Minute)
	SetDefaultEventuallyPollingInterval(2 * time.Second)
	RunSpecs(t, "cluster end-to-end: the operator on a real cluster with KubeVirt")
}

// kctl runs kubectl against kubeContext only.
func kctl(ctx context.Context, args ...string) string {
	GinkgoHelper()
	return kctlWith(ctx, nil, args...)
}

// kctlWith runs kubectl against kubeContext only, reading stdin.
func kctlWith(ctx context.Context, stdin io.Reader, args ...string) string {
	GinkgoHelper()
	cmd := exec.CommandContext(ctx, "kubectl", append([]string{"--context", kubeContext}, args...)...)
	cmd.Stdin = stdin
	out, err := cmd.CombinedOutput()
	Expect(err).NotTo(HaveOccurred(), "kubectl --context %s %s: %s", kubeContext, strings.Join(args, " "), out)
	return string(out)
}

var _ = BeforeSuite(func(ctx SpecContext) {
	kubeContext = os.Getenv("KUBE_CONTEXT")
	Expect(kubeContext).NotTo(BeEmpty(), "KUBE_CONTEXT names the cluster's context (make test-e2e-cluster sets it)")
	img = os.Getenv("IMG")
	if img == "" {
		img = "kubevirt-imds:dev"
	}
	var err error
	cfg, err = clientcmd.NewNonInteractiveDeferredLoadingClientConfig(
		clientcmd.NewDefaultClientConfigLoadingRules(),
		&clientcmd.ConfigOverrides{CurrentContext: kubeContext},
	).ClientConfig()
	Expect(err).NotTo(HaveOccurred(), "kubeconfig context %s", kubeContext)
	scheme, err := controllers.NewScheme()
	Expect(err).NotTo(HaveOccurred())
	Expect(apiextensionsv1.AddToScheme(scheme)).To(Succeed())
	k8sClient, err = client.New(cfg, client.Options{Scheme: scheme})
	Expect(err).NotTo(HaveOccurred())
	clientset, err = kubernetes.NewForConfig(cfg)
	Expect(err).NotTo(HaveOccurred())

	By("checking KubeVirt is installed in " + kubeContext)
	var crd apiextensionsv1.CustomResourceDefinition
	Expect(k8sClient.Get(ctx, client.ObjectKey{Name: "virtualmachineinstances.kubevirt.io"}, &crd)).To(Succeed(),
		"KubeVirt is not installed in context %s (see docs/cluster.md)", kubeContext)

	if catalog := os.Getenv("OLM_CATALOG_IMAGE"); catalog != "" {
		installThroughOLM(ctx, catalog)
	} else {
		installWithKustomize(ctx)
	}
	waitWebhooksReachable(ctx)

	By("creating the test namespace and the sample MetadataService (the specs create the VMs)")
	testdata := filepath.Join(controlplane.RepoRoot(), "test", "e2e", "cluster", "testdata")
	kctl(ctx, "apply", "--server-side", "-f", filepath.Join(testdata, "00-namespace.yaml"))
	DeferCleanup(func(ctx SpecContext) {
		kctl(ctx, "delete", "namespace", namespace, "--ignore-not-found", "--wait=true", "--timeout=5m")
	})
	applySampleService(ctx, namespace)
}, NodeTimeout(20*time.Minute))

// kustomizeInstallDir is where installWithKustomize writes its kustomization.
func kustomizeInstallDir() string {
	return filepath.Join(controlplane.RepoRoot(), "tmp", "e2e-cluster", "install")
}

// installWithKustomize installs the operator from config/overlays/builtin-certs
// with the run's image, as `make deploy` does.
func installWithKustomize(ctx context.Context) {
	GinkgoHelper()
	By("installing the operator with kustomize (built-in certificates), image " + img)
	dir := kustomizeInstallDir()
	Expect(os.MkdirAll(dir, 0o755)).To(Succeed())
	repo, tag, _ := strings.Cut(img, ":")
	Expect(os.WriteFile(filepath.Join(dir, "kustomization.yaml"), fmt.Appendf(nil, `resources:
- ../../../config/overlays/builtin-certs
# config/manager already names the image kubevirt-imds:dev; both names are
# overridden so that the run's own build is the one that starts.
images:
- name: controller
  newName: %[1]s
  newTag: %[2]q
- name: kubevirt-imds
  newName: %[1]s
  newTag: %[2]q
# config/default copied the placeholder image into the sidecar's image.
patches:
- patch: |-
    apiVersion: apps/v1
    kind: Deployment
    metadata:
      name: kubevirt-imds-controller-manager
      namespace: kubevirt-imds-system
    spec:
      template:
        spec:
          containers:
          - name: manager
            env:
            - name: KUBEVIRT_IMDS_IMAGE
              value: %[3]q
`, repo, tag, img), 0o644)).To(Succeed())
	kctl(ctx, "apply", "--server-side", "--force-conflicts", "-k", dir)
	kctl(ctx, "-n", "kubevirt-imds-system", "rollout", "status", "deployment/kubevirt-imds-controller-manager", "--timeout=5m")
}

// waitWebhooksReachable waits until the API server reaches the operator's
// webhooks. A Deployment is Available before that (the Service's endpoints
// and kube-proxy follow the Pods' readiness), and the webhooks fail open: a
// VM created in between starts without its sidecar. The validating webhook
// answering proves the path the Pod webhook shares (Service, serving
// certificate, CA bundle).
func waitWebhooksReachable(ctx context.Context) {
	GinkgoHelper()
	By("waiting until the API server reaches the operator's webhooks")
	probe := &imdsv1alpha1.MetadataService{
		ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "webhook-probe"},
		// Passes the CRD's pattern; only the webhook sees it is truncated.
		Spec: imdsv1alpha1.MetadataServiceSpec{SSHAuthorizedKeys: &imdsv1alpha1.SSHKeysSource{Inline: []string{"ssh-ed25519 AAAA"}}},
	}
	Eventually(func() error {
		return k8sClient.Create(ctx, probe.DeepCopy(), client.DryRunAll)
	}).WithContext(ctx).WithTimeout(2 * time.Minute).Should(MatchError(ContainSubstring("denied the request")))
}

// applySampleService applies the sample MetadataService (config/samples), as
// a user does, in ns.
func applySampleService(ctx context.Context, ns string) {
	GinkgoHelper()
	sample := kctl(ctx, "kustomize", filepath.Join(controlplane.RepoRoot(), "config", "samples"))
	mds := extractDocument(sample, "kind: MetadataService")
	Expect(mds).NotTo(BeEmpty())
	kctlWith(ctx, strings.NewReader(mds), "-n", ns, "apply", "--server-side", "-f", "-")
}

// extractDocument returns the YAML document of stream containing marker.
func extractDocument(stream, marker string) string {
	for _, doc := range strings.Split(stream, "\n---\n") {
		if strings.Contains(doc, marker) {
			return doc
		}
	}
	return ""
}

// reviewer validates tokens with the cluster's TokenReview API.
type reviewer struct{}

func (reviewer) ReviewToken(ctx context.Context, token, audience string) (authenticationv1.TokenReviewStatus, error) {
	tr, err := clientset.AuthenticationV1().TokenReviews().Create(ctx, &authenticationv1.TokenReview{
		Spec: authenticationv1.TokenReviewSpec{Token: token, Audiences: []string{audience}},
	}, metav1.CreateOptions{})
	if err != nil {
		return authenticationv1.TokenReviewStatus{}, err
	}
	return tr.Status, nil
}

//go:build e2e

package cluster_test

import (
	"context"
	"fmt"
	"os"
	"strings"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	appsv1 "k8s.io/api/apps/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// OLM's names for the install: the catalog lives in OLM's own namespace,
// and an operator for all namespaces is subscribed in "operators", where the
// release's manifests put the global OperatorGroup.
const (
	olmNamespace         = "olm"
	olmOperatorNamespace = "operators"
	olmPackage           = "kubevirt-imds"
	olmCatalogSource     = "kubevirt-imds"
	olmChannel           = "candidate"
)

var (
	csvGVK          = schema.GroupVersionKind{Group: "operators.coreos.com", Version: "v1alpha1", Kind: "ClusterServiceVersion"}
	subscriptionGVK = schema.GroupVersionKind{Group: "operators.coreos.com", Version: "v1alpha1", Kind: "Subscription"}
)

// installThroughOLM installs the operator as an OLM user does: a
// CatalogSource for the catalog image (hack/cluster/olm.sh catalog), a
// Subscription to the package's channel, and the CSV OLM resolves from it
// until it Succeeded. A kustomize install of an earlier suite run on the same
// cluster is removed first: two managers must not serve the same VMs.
func installThroughOLM(ctx context.Context, catalogImage string) {
	GinkgoHelper()
	if _, err := os.Stat(kustomizeInstallDir()); err == nil {
		By("removing the kustomize install of the suite's earlier run")
		kctl(ctx, "delete", "-k", kustomizeInstallDir(), "--ignore-not-found", "--wait=true", "--timeout=5m")
	}
	operatorNamespace = olmOperatorNamespace

	By("subscribing to the package " + olmPackage + " in the catalog " + catalogImage)
	kctlWith(ctx, strings.NewReader(fmt.Sprintf(`apiVersion: operators.coreos.com/v1alpha1
kind: CatalogSource
metadata:
  name: %[1]s
  namespace: %[2]s
spec:
  sourceType: grpc
  image: %[3]s
  displayName: kubevirt-imds (this build)
  grpcPodConfig:
    securityContextConfig: restricted
---
apiVersion: operators.coreos.com/v1alpha1
kind: Subscription
metadata:
  name: %[4]s
  namespace: %[5]s
spec:
  name: %[4]s
  channel: %[6]s
  source: %[1]s
  sourceNamespace: %[2]s
  installPlanApproval: Automatic
`, olmCatalogSource, olmNamespace, catalogImage, olmPackage, olmOperatorNamespace, olmChannel)), "apply", "--server-side", "-f", "-")

	By("waiting for the CSV that OLM installs from the Subscription to succeed")
	var csvName string
	Eventually(func(g Gomega) {
		sub := &unstructured.Unstructured{}
		sub.SetGroupVersionKind(subscriptionGVK)
		g.Expect(k8sClient.Get(ctx, client.ObjectKey{Namespace: olmOperatorNamespace, Name: olmPackage}, sub)).To(Succeed())
		csvName, _, _ = unstructured.NestedString(sub.Object, "status", "installedCSV")
		g.Expect(csvName).NotTo(BeEmpty(), "the Subscription's status: %v", sub.Object["status"])
		g.Expect(csvPhase(ctx, csvName)).To(Equal("Succeeded"))
	}).WithContext(ctx).WithTimeout(10*time.Minute).Should(Succeed(), "the operator installed by OLM")
	GinkgoWriter.Printf("OLM installed %s\n", csvName)
}

// csvPhase returns the phase of the CSV name in the operators' namespace,
// with its message when it is not Succeeded.
func csvPhase(ctx context.Context, name string) (string, error) {
	csv := &unstructured.Unstructured{}
	csv.SetGroupVersionKind(csvGVK)
	if err := k8sClient.Get(ctx, client.ObjectKey{Namespace: olmOperatorNamespace, Name: name}, csv); err != nil {
		return "", err
	}
	phase, _, _ := unstructured.NestedString(csv.Object, "status", "phase")
	if phase != "Succeeded" {
		msg, _, _ := unstructured.NestedString(csv.Object, "status", "message")
		return phase + ": " + msg, nil
	}
	return phase, nil
}

// Label olm: hack/cluster/e2e.sh runs this spec in a second pass, after
// installing OLM and with the operator installed through it, with the specs
// labelled bundle.
var _ = Describe("installed through OLM", Label("olm"), func() {
	It("runs the bundle's operator with OLM's webhook certificates, and serves a VM", func(ctx SpecContext) {
		// Selected without an OLM install, the spec fails rather than
		// skips: a skipped spec would report the OLM path as proven.
		Expect(os.Getenv("OLM_CATALOG_IMAGE")).NotTo(BeEmpty(),
			"the operator was installed with kustomize; make test-e2e-cluster runs this spec (label olm) with OLM")
		By("the manager that OLM deployed mounting OLM's serving certificate")
		var dep appsv1.Deployment
		Expect(k8sClient.Get(ctx, client.ObjectKey{Namespace: olmOperatorNamespace, Name: operatorDeployment}, &dep)).To(Succeed())
		Expect(dep.Spec.Template.Spec.Volumes).To(ContainElement(HaveField("Secret.SecretName", operatorDeployment+"-service-cert")),
			"OLM mounts the certificate it issued for the webhook Service")

		By("OLM's webhook configurations, with OLM's CA, calling that manager")
		var mutating admissionregistrationv1.MutatingWebhookConfigurationList
		Expect(k8sClient.List(ctx, &mutating, client.MatchingLabels{"olm.owner.namespace": olmOperatorNamespace})).To(Succeed())
		var validating admissionregistrationv1.ValidatingWebhookConfigurationList
		Expect(k8sClient.List(ctx, &validating, client.MatchingLabels{"olm.owner.namespace": olmOperatorNamespace})).To(Succeed())
		var names []string
		for _, c := range mutating.Items {
			for _, w := range c.Webhooks {
				names = append(names, w.Name)
				Expect(w.ClientConfig.CABundle).NotTo(BeEmpty(), "webhook %s", w.Name)
				Expect(w.ClientConfig.Service).NotTo(BeNil(), "webhook %s", w.Name)
				Expect(w.ClientConfig.Service.Namespace).To(Equal(olmOperatorNamespace), "webhook %s", w.Name)
			}
		}
		for _, c := range validating.Items {
			for _, w := range c.Webhooks {
				names = append(names, w.Name)
				Expect(w.ClientConfig.CABundle).NotTo(BeEmpty(), "webhook %s", w.Name)
			}
		}
		Expect(names).To(ConsistOf(
			HavePrefix("pods.imds.kubevirt.io"),
			HavePrefix("virtualmachineinstances.imds.kubevirt.io"),
			HavePrefix("metadataservices.imds.kubevirt.io")))

		By("a VM that KubeVirt starts getting the sidecar and its payload")
		vm := debianVM(namespace, "olm-debian")
		startVM(ctx, vm)
		vmi, _ := readyVMI(ctx, namespace, vm.Name, "")
		g := bootedGuest(ctx, namespace, vm.Name, vmi.CreationTimestamp.Time)
		expectServedGuest(ctx, g, vmi)
	}, SpecTimeout(20*time.Minute))
})

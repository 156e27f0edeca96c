package webhooks_test

import (
	"context"
	"os"
	"path/filepath"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	imdsv1alpha1 "github.com/kubevirt-imds/kubevirt-imds/api/v1alpha1"
	"github.com/kubevirt-imds/kubevirt-imds/controllers"
	"github.com/kubevirt-imds/kubevirt-imds/test/controlplane"
	"github.com/kubevirt-imds/kubevirt-imds/webhooks"
)

const (
	mutatingName   = "mutating-webhook-configuration"
	validatingName = "validating-webhook-configuration"
)

// caBundles returns the caBundle of the first webhook of each configuration.
func caBundles(ctx context.Context) (mutating, validating []byte) {
	var m admissionregistrationv1.MutatingWebhookConfiguration
	ExpectWithOffset(1, k8sClient.Get(ctx, client.ObjectKey{Name: mutatingName}, &m)).To(Succeed())
	var v admissionregistrationv1.ValidatingWebhookConfiguration
	ExpectWithOffset(1, k8sClient.Get(ctx, client.ObjectKey{Name: validatingName}, &v)).To(Succeed())
	return m.Webhooks[0].ClientConfig.CABundle, v.Webhooks[0].ClientConfig.CABundle
}

// restoreCABundles puts envtest's CA back into every webhook.
func restoreCABundles(ctx context.Context) {
	ca := testEnv.WebhookInstallOptions.LocalServingCAData
	var m admissionregistrationv1.MutatingWebhookConfiguration
	Expect(k8sClient.Get(ctx, client.ObjectKey{Name: mutatingName}, &m)).To(Succeed())
	for i := range m.Webhooks {
		m.Webhooks[i].ClientConfig.CABundle = ca
	}
	Expect(k8sClient.Update(ctx, &m)).To(Succeed())
	var v admissionregistrationv1.ValidatingWebhookConfiguration
	Expect(k8sClient.Get(ctx, client.ObjectKey{Name: validatingName}, &v)).To(Succeed())
	for i := range v.Webhooks {
		v.Webhooks[i].ClientConfig.CABundle = ca
	}
	Expect(k8sClient.Update(ctx, &v)).To(Succeed())
}

var _ = Describe("Built-in certificates", Serial, func() {
	It("issues the webhook certificate, injects its CA and serves with it", func() {
		ctx := context.Background()
		operatorNS := newNamespace(ctx)
		ns := newNamespace(ctx)
		secret := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: operatorNS, Name: "webhook-server-cert"}}
		create(ctx, secret)
		mds := newMDS(ns, "web", imdsv1alpha1.MetadataServiceSpec{})
		create(ctx, mds)

		stopManager()
		DeferCleanup(func() {
			stopManager()
			restoreCABundles(ctx)
			startManager()
		})
		// No kubelet projects the Secret here: the manager writes the
		// files itself.
		certDir := GinkgoT().TempDir()

		mgr := newManager(testEnv, cfg, certDir)
		ready, err := webhooks.AddCertRotator(mgr, webhooks.CertOptions{
			Namespace: operatorNS, SecretName: secret.Name, ServiceName: "webhook-service",
			ExtraDNSNames: []string{"localhost"}, CertDir: certDir,
			MutatingConfiguration: mutatingName, ValidatingConfiguration: validatingName,
		})
		Expect(err).NotTo(HaveOccurred())
		registered := make(chan struct{})
		go func() {
			defer GinkgoRecover()
			<-ready
			Expect(webhooks.SetupWithManager(mgr, defaultOptions())).To(Succeed())
			close(registered)
		}()
		stopManagerFunc = controlplane.RunManager(mgr)

		Eventually(registered).WithTimeout(90 * time.Second).Should(BeClosed())
		m, v := caBundles(ctx)
		Expect(m).NotTo(Equal(testEnv.WebhookInstallOptions.LocalServingCAData))
		Expect(v).To(Equal(m))
		By("the serving pair written from the Secret into the cert directory, and nothing else")
		Expect(k8sClient.Get(ctx, client.ObjectKeyFromObject(secret), secret)).To(Succeed())
		Expect(secret.Data).To(HaveKey("ca.key"))
		for _, name := range []string{"tls.crt", "tls.key"} {
			Expect(os.ReadFile(filepath.Join(certDir, name))).To(Equal(secret.Data[name]), name)
		}
		entries, err := os.ReadDir(certDir)
		Expect(err).NotTo(HaveOccurred())
		Expect(entries).To(HaveLen(2))

		By("the API server reaches the webhook through the new CA")
		Eventually(func(g Gomega) {
			vmi := newVMI(ns, "", nil)
			vmi.GenerateName = "vm-"
			g.Expect(k8sClient.Create(ctx, vmi)).To(Succeed())
			g.Expect(vmi.Spec.Domain.Firmware).NotTo(BeNil())
			g.Expect(vmi.Spec.Domain.Firmware.Serial).To(Equal(controllers.NoCloudSerial))
		}).Should(Succeed())
	})
})

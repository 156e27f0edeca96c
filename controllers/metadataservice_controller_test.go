package controllers

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	. "github.com/onsi/gomega/gstruct"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/util/retry"
	kubevirtv1 "kubevirt.io/api/core/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"

	"github.com/kubevirt-imds/kubevirt-imds/api/payload"
	imdsv1alpha1 "github.com/kubevirt-imds/kubevirt-imds/api/v1alpha1"
)

var _ = Describe("MetadataService controller", func() {
	var (
		ctx context.Context
		ns  string
	)
	BeforeEach(func() {
		ctx = context.Background()
		ns = newNamespace(ctx)
	})

	It("renders one payload Secret per selected VMI, owned by it, and follows relabelling", func() {
		web1 := newVMI(ns, "web-1", map[string]string{"app": "web"})
		web2 := newVMI(ns, "web-2", map[string]string{"app": "web"})
		db := newVMI(ns, "db-1", map[string]string{"app": "db"})
		create(ctx, web1, web2, db)
		create(ctx, newMDS(ns, "web", imdsv1alpha1.MetadataServiceSpec{
			Selector:          metav1.LabelSelector{MatchLabels: map[string]string{"app": "web"}},
			UserData:          &imdsv1alpha1.DataSource{Inline: ptr("#cloud-config\nhostname: ignored\n")},
			SSHAuthorizedKeys: &imdsv1alpha1.SSHKeysSource{Inline: []string{"ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIG0 admin@example"}},
			Metadata:          &imdsv1alpha1.MetadataSpec{Tags: map[string]string{"tier": "frontend"}, ExposeLabels: []string{"app"}},
			Identity: &imdsv1alpha1.IdentitySpec{ServiceAccountTokens: []imdsv1alpha1.ServiceAccountTokenSpec{
				{Audience: "vault"},
			}},
		}))

		Eventually(func(g Gomega) {
			g.Expect(payloadSecrets(ctx, ns)).To(HaveLen(2))
			g.Expect(payloadSecrets(ctx, ns)).To(HaveKey("imds-web-1"))
			g.Expect(payloadSecrets(ctx, ns)).To(HaveKey("imds-web-2"))
		}).Should(Succeed())

		for _, vmi := range []*kubevirtv1.VirtualMachineInstance{web1, web2} {
			doc, err := payloadOf(ctx, ns, vmi.Name)
			Expect(err).NotTo(HaveOccurred())
			Expect(doc.Instance).To(MatchFields(IgnoreExtras, Fields{
				"ID":                 Equal(string(vmi.UID)),
				"UID":                Equal(string(vmi.UID)),
				"Name":               Equal(vmi.Name),
				"Namespace":          Equal(ns),
				"Hostname":           Equal(vmi.Name),
				"ServiceAccountName": Equal("default"),
				"Tags":               Equal(map[string]string{"tier": "frontend"}),
				"Labels":             Equal(map[string]string{"app": "web"}),
				"SSHAuthorizedKeys":  ConsistOf("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIG0 admin@example"),
			}))
			Expect(string(doc.UserData)).To(Equal("#cloud-config\nhostname: ignored\n"))
			Expect(doc.Tokens).To(ConsistOf(payload.Token{Audience: "vault", ExpirationSeconds: 3600, Path: payload.TokenPath("vault")}))
			Expect(doc.Dialects).To(Equal(payload.AllDialects))
			Expect(doc.Serve).To(Equal(payload.Serve{Interface: "default", Bridge: "k6t-eth0"}))
			Expect(doc.Source.MetadataService).To(Equal("web"))

			secret := payloadSecrets(ctx, ns)[imdsv1alpha1.PayloadSecretName(vmi.Name)]
			owner := metav1.GetControllerOf(&secret)
			Expect(owner).NotTo(BeNil())
			Expect(owner.UID).To(Equal(vmi.UID))
			Expect(owner.Kind).To(Equal("VirtualMachineInstance"))
			Expect(secret.Labels).To(HaveKeyWithValue(imdsv1alpha1.LabelInstanceUID, string(vmi.UID)))
			Expect(secret.Type).To(Equal(PayloadSecretType))
		}

		Eventually(func(g Gomega) {
			m := getMDS(ctx, ns, "web")
			g.Expect(m.Status.SelectedInstances).To(BeEquivalentTo(2))
			g.Expect(condition(m, imdsv1alpha1.ConditionReady).Status).To(Equal(metav1.ConditionTrue))
			g.Expect(m.Status.ObservedGeneration).To(Equal(m.Generation))
		}).Should(Succeed())

		By("relabelling db-1 into the selection")
		relabel(ctx, db, "web")
		Eventually(func() map[string]corev1.Secret { return payloadSecrets(ctx, ns) }).Should(HaveKey("imds-db-1"))

		By("relabelling web-2 out of it")
		relabel(ctx, web2, "other")
		Eventually(func() map[string]corev1.Secret { return payloadSecrets(ctx, ns) }).Should(SatisfyAll(
			HaveLen(2), HaveKey("imds-web-1"), HaveKey("imds-db-1")))
		Eventually(func() int32 { return getMDS(ctx, ns, "web").Status.SelectedInstances }).Should(BeEquivalentTo(2))
	})

	It("re-renders when a referenced Secret changes, and keeps the last good payload when it goes", func() {
		src := &corev1.Secret{
			ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "cloud-config"},
			Data:       map[string][]byte{"user-data": []byte("#cloud-config\nruncmd: [echo one]\n")},
		}
		create(ctx, src, newVMI(ns, "vm", map[string]string{"app": "x"}))
		create(ctx, newMDS(ns, "mds", imdsv1alpha1.MetadataServiceSpec{
			UserData: &imdsv1alpha1.DataSource{SecretRef: &imdsv1alpha1.KeyReference{Name: "cloud-config", Key: "user-data"}},
		}))
		userData := func() string {
			doc, err := payloadOf(ctx, ns, "vm")
			if err != nil {
				return err.Error()
			}
			return string(doc.UserData)
		}
		Eventually(userData).Should(Equal("#cloud-config\nruncmd: [echo one]\n"))

		By("editing the Secret")
		src.Data["user-data"] = []byte("#cloud-config\nruncmd: [echo two]\n")
		Expect(k8sClient.Update(ctx, src)).To(Succeed())
		Eventually(userData).Should(Equal("#cloud-config\nruncmd: [echo two]\n"))

		By("deleting the Secret")
		Expect(k8sClient.Delete(ctx, src)).To(Succeed())
		Eventually(func(g Gomega) {
			m := getMDS(ctx, ns, "mds")
			g.Expect(condition(m, imdsv1alpha1.ConditionDegraded)).To(MatchFields(IgnoreExtras, Fields{
				"Status":  Equal(metav1.ConditionTrue),
				"Reason":  Equal(imdsv1alpha1.ReasonSourceNotFound),
				"Message": ContainSubstring(`spec.userData.secretRef: Secret "cloud-config" not found`),
			}))
			g.Expect(condition(m, imdsv1alpha1.ConditionReady).Status).To(Equal(metav1.ConditionFalse))
		}).Should(Succeed())
		Expect(userData()).To(Equal("#cloud-config\nruncmd: [echo two]\n"), "the last good payload stays")
		Eventually(func() []string { return warningEvents(ctx, ns) }).Should(ContainElement(imdsv1alpha1.ReasonSourceNotFound))

		By("restoring it")
		create(ctx, &corev1.Secret{
			ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "cloud-config"},
			Data:       map[string][]byte{"user-data": []byte("#cloud-config\nruncmd: [echo three]\n")},
		})
		Eventually(userData).Should(Equal("#cloud-config\nruncmd: [echo three]\n"))
		Eventually(func() metav1.ConditionStatus {
			return condition(getMDS(ctx, ns, "mds"), imdsv1alpha1.ConditionDegraded).Status
		}).Should(Equal(metav1.ConditionFalse))
	})

	It("holds in memory its own Secrets and ConfigMaps, the content of referenced sources, and nothing of other objects", func() {
		unrelated := &corev1.Secret{
			ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "database-password",
				Annotations: map[string]string{"kubectl.kubernetes.io/last-applied-configuration": `{"data":{"password":"aHVudGVyMg=="}}`}},
			Data: map[string][]byte{"password": []byte("hunter2")},
		}
		unrelatedConfig := &corev1.ConfigMap{
			ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "app-settings"},
			Data:       map[string]string{"settings": strings.Repeat("x", 10<<10)},
		}
		src := &corev1.Secret{
			ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "cloud-config"},
			Data:       map[string][]byte{"user-data": []byte("#cloud-config\nruncmd: [echo one]\n")},
		}
		vendor := &corev1.ConfigMap{
			ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "vendor"},
			Data:       map[string]string{"vendor-data": "#cloud-config\npackages: [jq]\n"},
		}
		create(ctx, unrelated, unrelatedConfig, src, vendor, newVMI(ns, "vm", nil))
		create(ctx, newMDS(ns, "mds", imdsv1alpha1.MetadataServiceSpec{
			UserData:   &imdsv1alpha1.DataSource{SecretRef: &imdsv1alpha1.KeyReference{Name: "cloud-config", Key: "user-data"}},
			VendorData: &imdsv1alpha1.DataSource{ConfigMapRef: &imdsv1alpha1.KeyReference{Name: "vendor", Key: "vendor-data"}},
		}))
		Eventually(func() (string, error) {
			doc, err := payloadOf(ctx, ns, "vm")
			if err != nil {
				return "", err
			}
			return string(doc.UserData) + string(doc.VendorData), nil
		}).Should(Equal("#cloud-config\nruncmd: [echo one]\n#cloud-config\npackages: [jq]\n"))

		By("the manager's cache: the payload Secret and the service's shared one alone, no ConfigMap (not even kube-root-ca.crt)")
		var secrets corev1.SecretList
		Expect(managerCache.List(ctx, &secrets, client.InNamespace(ns))).To(Succeed())
		names := []string{}
		for _, s := range secrets.Items {
			names = append(names, s.Name)
		}
		Expect(names).To(ConsistOf(imdsv1alpha1.PayloadSecretName("vm"), imdsv1alpha1.SharedPayloadSecretName("mds")))
		var configMaps corev1.ConfigMapList
		Expect(managerCache.List(ctx, &configMaps, client.InNamespace(ns))).To(Succeed())
		Expect(configMaps.Items).To(BeEmpty())

		By("the instance's payload Secret there without its data, which the shared one keeps")
		for _, s := range secrets.Items {
			if s.Name == imdsv1alpha1.PayloadSecretName("vm") {
				Expect(s.Data).To(BeEmpty())
				var onServer corev1.Secret
				Expect(k8sClient.Get(ctx, client.ObjectKeyFromObject(&s), &onServer)).To(Succeed())
				Expect(s.Annotations).To(HaveKeyWithValue(cachedDataDigest, dataDigest(onServer.Data)))
				Expect(s.Annotations).To(HaveKeyWithValue(imdsv1alpha1.AnnotationServe, MatchJSON(`{"interface":"default","bridge":"k6t-eth0"}`)))
			} else {
				Expect(s.Data).To(HaveKey(payload.SharedKey))
			}
		}

		By("a payload Secret edited behind the operator's back: its data is restored, and the digest never reaches the API server")
		payloadSecret := &corev1.Secret{}
		Expect(k8sClient.Get(ctx, client.ObjectKey{Namespace: ns, Name: imdsv1alpha1.PayloadSecretName("vm")}, payloadSecret)).To(Succeed())
		sealed := payloadSecret.Data[payload.SecretKey]
		payloadSecret.Data[payload.SecretKey] = []byte(`{"tampered":true}`)
		Expect(k8sClient.Update(ctx, payloadSecret)).To(Succeed())
		Eventually(func() ([]byte, error) {
			err := k8sClient.Get(ctx, client.ObjectKeyFromObject(payloadSecret), payloadSecret)
			return payloadSecret.Data[payload.SecretKey], err
		}).Should(Equal(sealed))
		Expect(payloadSecret.Annotations).NotTo(HaveKey(cachedDataDigest))

		By("the source metadata cache: none of the operator's own Secrets")
		own := &metav1.PartialObjectMetadata{}
		own.SetGroupVersionKind(corev1.SchemeGroupVersion.WithKind("Secret"))
		Expect(apierrors.IsNotFound(managerReconciler.Sources.Metadata.Get(ctx, client.ObjectKeyFromObject(payloadSecret), own))).To(BeTrue())

		By("the sources' content: the two referenced, not the others")
		held := func() []string {
			r := managerReconciler.Sources
			r.mu.Lock()
			defer r.mu.Unlock()
			var out []string
			for k := range r.held {
				if k.Namespace == ns {
					out = append(out, k.kind+"/"+k.Name)
				}
			}
			return out
		}
		Expect(held()).To(ConsistOf("Secret/cloud-config", "ConfigMap/vendor"))

		By("the metadata of the others, stripped of annotations, data and managed fields")
		meta := &metav1.PartialObjectMetadata{}
		meta.SetGroupVersionKind(corev1.SchemeGroupVersion.WithKind("Secret"))
		Eventually(func() error {
			return managerReconciler.Sources.Metadata.Get(ctx, client.ObjectKeyFromObject(unrelated), meta)
		}).Should(Succeed())
		Expect(meta.Annotations).To(BeEmpty())
		Expect(meta.ManagedFields).To(BeEmpty())
		Expect(meta.ResourceVersion).NotTo(BeEmpty())

		By("a source no service references any more is dropped on its next change")
		updateMDS(ctx, getMDS(ctx, ns, "mds"), func(m *imdsv1alpha1.MetadataService) { m.Spec.VendorData = nil })
		Eventually(func() ([]byte, error) {
			doc, err := payloadOf(ctx, ns, "vm")
			if err != nil {
				return nil, err
			}
			return doc.VendorData, nil
		}).Should(BeEmpty())
		vendor.Data["vendor-data"] = "#cloud-config\npackages: [curl]\n"
		Expect(k8sClient.Update(ctx, vendor)).To(Succeed())
		Eventually(held).Should(ConsistOf("Secret/cloud-config"))
	})

	It("reports oversized and invalid sources without touching the payload", func() {
		create(ctx, newVMI(ns, "vm", nil))
		mds := newMDS(ns, "mds", imdsv1alpha1.MetadataServiceSpec{UserData: &imdsv1alpha1.DataSource{Inline: ptr("#!/bin/sh\necho ok\n")}})
		create(ctx, mds)
		Eventually(func() error { _, err := payloadOf(ctx, ns, "vm"); return err }).Should(Succeed())

		big := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "big"},
			BinaryData: map[string][]byte{"v": append([]byte("#!/bin/sh\n"), make([]byte, imdsv1alpha1.MaxDataBytes)...)}}
		create(ctx, big)
		for _, tc := range []struct {
			vendor *imdsv1alpha1.DataSource
			reason string
			field  string
		}{
			{&imdsv1alpha1.DataSource{ConfigMapRef: &imdsv1alpha1.KeyReference{Name: "big", Key: "v"}}, imdsv1alpha1.ReasonSourceTooLarge, "spec.vendorData"},
			{&imdsv1alpha1.DataSource{Inline: ptr("just some text")}, imdsv1alpha1.ReasonInvalidUserData, "spec.vendorData"},
			{&imdsv1alpha1.DataSource{Inline: ptr("#cloud-config\n- a list\n")}, imdsv1alpha1.ReasonInvalidUserData, "spec.vendorData"},
			{&imdsv1alpha1.DataSource{ConfigMapRef: &imdsv1alpha1.KeyReference{Name: "big", Key: "missing"}}, imdsv1alpha1.ReasonSourceNotFound, `ConfigMap "big" has no key "missing"`},
		} {
			By(tc.reason)
			updateMDS(ctx, mds, func(m *imdsv1alpha1.MetadataService) { m.Spec.VendorData = tc.vendor })
			Eventually(func(g Gomega) {
				c := condition(getMDS(ctx, ns, "mds"), imdsv1alpha1.ConditionDegraded)
				g.Expect(c.Reason).To(Equal(tc.reason))
				g.Expect(c.Message).To(ContainSubstring(tc.field))
			}).Should(Succeed())
			doc, err := payloadOf(ctx, ns, "vm")
			Expect(err).NotTo(HaveOccurred())
			Expect(doc.VendorData).To(BeEmpty())
		}
	})

	It("lets the highest priority, then the oldest, then the first name serve a VMI; the others report Conflict", func() {
		create(ctx, newVMI(ns, "vm", map[string]string{"app": "x"}))
		older := newMDS(ns, "zz-older", imdsv1alpha1.MetadataServiceSpec{})
		create(ctx, older)
		Eventually(func() (string, error) {
			doc, err := payloadOf(ctx, ns, "vm")
			if err != nil {
				return "", err
			}
			return doc.Source.MetadataService, nil
		}).Should(Equal("zz-older"))

		By("a newer service with the same priority loses on age, though its name sorts first")
		// Creation timestamps have one-second resolution: wait for the clock
		// to pass the older one's second so that age, not the name, decides.
		Eventually(func() bool { return time.Now().After(older.CreationTimestamp.Add(time.Second)) }).Should(BeTrue())
		create(ctx, newMDS(ns, "aa-newer", imdsv1alpha1.MetadataServiceSpec{}))
		Eventually(func(g Gomega) {
			c := condition(getMDS(ctx, ns, "aa-newer"), imdsv1alpha1.ConditionDegraded)
			g.Expect(c.Reason).To(Equal(imdsv1alpha1.ReasonConflict))
			g.Expect(c.Message).To(ContainSubstring("vm is served by MetadataService zz-older"))
		}).Should(Succeed())
		Expect(getMDS(ctx, ns, "aa-newer").Status.SelectedInstances).To(BeEquivalentTo(0))

		By("a higher priority wins over age")
		create(ctx, newMDS(ns, "urgent", imdsv1alpha1.MetadataServiceSpec{
			Priority: 10,
			Selector: metav1.LabelSelector{MatchLabels: map[string]string{"app": "x"}},
			Hostname: "{name}-{namespace}",
		}))
		Eventually(func(g Gomega) {
			doc, err := payloadOf(ctx, ns, "vm")
			g.Expect(err).NotTo(HaveOccurred())
			g.Expect(doc.Source.MetadataService).To(Equal("urgent"))
			g.Expect(doc.Instance.Hostname).To(Equal("vm-" + ns))
		}).Should(Succeed())
		Eventually(func(g Gomega) {
			for _, loser := range []string{"zz-older", "aa-newer"} {
				m := getMDS(ctx, ns, loser)
				c := condition(m, imdsv1alpha1.ConditionDegraded)
				g.Expect(c.Reason).To(Equal(imdsv1alpha1.ReasonConflict), loser)
				g.Expect(c.Message).To(ContainSubstring("vm is served by MetadataService urgent"), loser)
				g.Expect(condition(m, imdsv1alpha1.ConditionReady).Status).To(Equal(metav1.ConditionTrue), loser)
			}
			g.Expect(getMDS(ctx, ns, "urgent").Status.SelectedInstances).To(BeEquivalentTo(1))
		}).Should(Succeed())

		By("deleting the winner hands the VMI back without the payload ever vanishing")
		Expect(k8sClient.Delete(ctx, getMDS(ctx, ns, "urgent"))).To(Succeed())
		Eventually(func() (string, error) {
			doc, err := payloadOf(ctx, ns, "vm")
			if err != nil {
				return "", err
			}
			return doc.Source.MetadataService, nil
		}).Should(Equal("zz-older"))
	})

	It("removes payloads when the MetadataService goes and no other selects the VMI", func() {
		create(ctx, newVMI(ns, "vm", nil))
		mds := newMDS(ns, "mds", imdsv1alpha1.MetadataServiceSpec{})
		create(ctx, mds)
		Eventually(func() map[string]corev1.Secret { return payloadSecrets(ctx, ns) }).Should(HaveLen(1))
		Expect(k8sClient.Delete(ctx, mds)).To(Succeed())
		Eventually(func() map[string]corev1.Secret { return payloadSecrets(ctx, ns) }).Should(BeEmpty())
	})

	It("repairs a payload Secret someone edited or deleted", func() {
		create(ctx, newVMI(ns, "vm", nil), newMDS(ns, "mds", imdsv1alpha1.MetadataServiceSpec{}))
		var s corev1.Secret
		key := types.NamespacedName{Namespace: ns, Name: "imds-vm"}
		Eventually(func() error { return k8sClient.Get(ctx, key, &s) }).Should(Succeed())
		good := s.Data[payload.SecretKey]
		s.Data[payload.SecretKey] = []byte("{}")
		Expect(k8sClient.Update(ctx, &s)).To(Succeed())
		Eventually(func() []byte {
			Expect(k8sClient.Get(ctx, key, &s)).To(Succeed())
			return s.Data[payload.SecretKey]
		}).Should(Equal(good))
		Expect(k8sClient.Delete(ctx, &s)).To(Succeed())
		Eventually(func() error { return k8sClient.Get(ctx, key, &s) }).Should(Succeed())
	})

	DescribeTable("Auto network configuration matches the golden files",
		func(name string) {
			data, err := os.ReadFile(filepath.Join("testdata", name+".vmi.yaml"))
			Expect(err).NotTo(HaveOccurred())
			var vmi kubevirtv1.VirtualMachineInstance
			Expect(yaml.UnmarshalStrict(data, &vmi)).To(Succeed())
			vmi.Namespace = ns
			// KubeVirt's VMI CRD has no status subresource: the status is
			// stored as written, as virt-handler writes it.
			create(ctx, &vmi)
			create(ctx, newMDS(ns, "mds", imdsv1alpha1.MetadataServiceSpec{
				NetworkData: &imdsv1alpha1.NetworkDataSpec{Mode: imdsv1alpha1.NetworkDataAuto},
			}))
			golden := filepath.Join("testdata", name+".network.golden.json")
			Eventually(func(g Gomega) {
				doc, err := payloadOf(ctx, ns, vmi.Name)
				g.Expect(err).NotTo(HaveOccurred())
				got := mustJSON(doc.Network) + "\n"
				if *updateGolden {
					g.Expect(os.WriteFile(golden, []byte(got), 0o644)).To(Succeed())
				}
				want, err := os.ReadFile(golden)
				g.Expect(err).NotTo(HaveOccurred())
				g.Expect(got).To(Equal(string(want)))
			}).Should(Succeed())
		},
		Entry("masquerade on the pod network", "masquerade"),
		Entry("bridge on the pod network plus Multus secondaries", "bridge-multus"),
	)

	It("serves inline network-config v2 and reports one that does not parse", func() {
		create(ctx, newVMI(ns, "vm", nil))
		v2 := "network:\n  version: 2\n  ethernets:\n    nic0:\n      match: {macaddress: '02:00:00:00:00:01'}\n      addresses: [192.0.2.10/24]\n      routes: [{to: default, via: 192.0.2.1}]\n"
		mds := newMDS(ns, "mds", imdsv1alpha1.MetadataServiceSpec{
			NetworkData: &imdsv1alpha1.NetworkDataSpec{Mode: imdsv1alpha1.NetworkDataInline, Config: ptr(v2)},
		})
		create(ctx, mds)
		Eventually(func(g Gomega) {
			doc, err := payloadOf(ctx, ns, "vm")
			g.Expect(err).NotTo(HaveOccurred())
			g.Expect(doc.Network.NetplanV2).To(Equal(v2))
			g.Expect(doc.Network.Interfaces).To(ConsistOf(MatchFields(IgnoreExtras, Fields{
				"MACAddress": Equal("02:00:00:00:00:01"),
				"Addresses":  ConsistOf("192.0.2.10/24"),
				"Routes":     ConsistOf(payload.Route{To: "0.0.0.0/0", Via: "192.0.2.1"}),
			})))
		}).Should(Succeed())

		updateMDS(ctx, mds, func(m *imdsv1alpha1.MetadataService) {
			m.Spec.NetworkData.Config = ptr(strings.Replace(v2, "192.0.2.10/24", "192.0.2.300/24", 1))
		})
		Eventually(func(g Gomega) {
			c := condition(getMDS(ctx, ns, "mds"), imdsv1alpha1.ConditionDegraded)
			g.Expect(c.Reason).To(Equal(imdsv1alpha1.ReasonInvalidNetworkData))
			g.Expect(c.Message).To(ContainSubstring("spec.networkData.config: network.ethernets.nic0.addresses[0]"))
		}).Should(Succeed())
	})
})

// updateMDS changes a MetadataService's spec as a user would, retrying when
// the controller's status patch got in first.
func updateMDS(ctx context.Context, mds *imdsv1alpha1.MetadataService, change func(*imdsv1alpha1.MetadataService)) {
	ExpectWithOffset(1, retry.RetryOnConflict(retry.DefaultRetry, func() error {
		if err := k8sClient.Get(ctx, client.ObjectKeyFromObject(mds), mds); err != nil {
			return err
		}
		change(mds)
		return k8sClient.Update(ctx, mds)
	})).To(Succeed())
}

func relabel(ctx context.Context, vmi *kubevirtv1.VirtualMachineInstance, app string) {
	ExpectWithOffset(1, k8sClient.Get(ctx, client.ObjectKeyFromObject(vmi), vmi)).To(Succeed())
	vmi.Labels = map[string]string{"app": app}
	ExpectWithOffset(1, k8sClient.Update(ctx, vmi)).To(Succeed())
}

// warningEvents lists the reasons of Warning Events in a namespace.
func warningEvents(ctx context.Context, namespace string) []string {
	var list corev1.EventList
	if err := k8sClient.List(ctx, &list, client.InNamespace(namespace)); err != nil && !apierrors.IsNotFound(err) {
		return nil
	}
	var reasons []string
	for _, e := range list.Items {
		if e.Type == corev1.EventTypeWarning {
			reasons = append(reasons, e.Reason)
		}
	}
	return reasons
}

package controllers

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	kubevirtv1 "kubevirt.io/api/core/v1"

	"github.com/kubevirt-imds/kubevirt-imds/api/payload"
	imdsv1alpha1 "github.com/kubevirt-imds/kubevirt-imds/api/v1alpha1"
	"github.com/kubevirt-imds/kubevirt-imds/controllers/instanceidentity"
	"github.com/kubevirt-imds/kubevirt-imds/test/controlplane"
)

// opensslVerifies reports whether openssl verifies an identity document's
// PKCS #7 against a PEM bundle of trusted certificates at time at, as
// docs/ec2.md shows.
func opensslVerifies(id *payload.IdentityDocument, bundle string, at time.Time) bool {
	GinkgoHelper()
	dir := GinkgoT().TempDir()
	p7 := "-----BEGIN PKCS7-----\n" + id.PKCS7 + "\n-----END PKCS7-----\n"
	for name, data := range map[string]string{"document": id.Document, "pkcs7.pem": p7, "certs.pem": bundle} {
		Expect(os.WriteFile(filepath.Join(dir, name), []byte(data), 0o600)).To(Succeed())
	}
	cmd := exec.Command("openssl", "smime", "-verify", "-inform", "PEM", "-in", "pkcs7.pem", "-content", "document",
		"-certfile", "certs.pem", "-CAfile", "certs.pem", "-attime", strconv.FormatInt(at.Unix(), 10), "-out", "/dev/null")
	cmd.Dir = dir
	out, err := cmd.CombinedOutput()
	GinkgoWriter.Printf("openssl: %v\n%s", err, out)
	return err == nil
}

var _ = Describe("EC2 identity documents", func() {
	var ctx context.Context
	BeforeEach(func() {
		ctx = context.Background()
		if _, err := exec.LookPath("openssl"); err != nil {
			controlplane.Unavailable("openssl not installed")
		}
	})

	It("keeps a rotated key's documents verifiable for the overlap, and no longer", func() {
		ns := newNamespace(ctx)
		t0 := time.Now()
		now := t0
		keys := &IdentityKeys{Client: k8sClient, Namespace: ns, Rotation: 90 * 24 * time.Hour, Overlap: 30 * 24 * time.Hour,
			Now: func() time.Time { return now }}
		bundle := func() string {
			var cm corev1.ConfigMap
			Expect(k8sClient.Get(ctx, types.NamespacedName{Namespace: ns, Name: IdentityConfigMapName}, &cm)).To(Succeed())
			return cm.Data[IdentityCertificatesKey]
		}

		By("creating the key, its Secret and the ConfigMap")
		first, err := keys.Ensure(ctx)
		Expect(err).NotTo(HaveOccurred())
		Expect(first.published).To(HaveLen(1))
		old, err := first.current.Sign(&instanceidentity.Document{InstanceID: "i-1", Region: "r", AvailabilityZone: "z", Namespace: ns, Name: "vm", UID: "u", Version: instanceidentity.Version})
		Expect(err).NotTo(HaveOccurred())
		Expect(opensslVerifies(old, bundle(), now)).To(BeTrue())
		again, err := keys.Ensure(ctx)
		Expect(err).NotTo(HaveOccurred())
		Expect(again.current.Cert.Equal(first.current.Cert)).To(BeTrue(), "a key not due is kept")

		By("replacing it when due: both certificates are published")
		now = t0.Add(90*24*time.Hour + 2*time.Minute)
		second, err := keys.Ensure(ctx)
		Expect(err).NotTo(HaveOccurred())
		Expect(second.current.Cert.Equal(first.current.Cert)).To(BeFalse())
		Expect(second.published).To(HaveLen(2))
		Expect(opensslVerifies(old, bundle(), now)).To(BeTrue(), "the previous key's document verifies during the overlap")
		Expect(opensslVerifies(old, bundle(), t0.Add(119*24*time.Hour))).To(BeTrue(), "and until the overlap's end")
		fresh, err := second.current.Sign(&instanceidentity.Document{InstanceID: "i-1", Region: "r", AvailabilityZone: "z", Namespace: ns, Name: "vm", UID: "u", Version: instanceidentity.Version})
		Expect(err).NotTo(HaveOccurred())
		Expect(opensslVerifies(fresh, bundle(), now)).To(BeTrue())

		By("dropping the previous certificate once the overlap has passed")
		now = t0.Add(120*24*time.Hour + time.Hour)
		third, err := keys.Ensure(ctx)
		Expect(err).NotTo(HaveOccurred())
		Expect(third.published).To(HaveLen(1))
		Expect(third.current.Cert.Equal(second.current.Cert)).To(BeTrue())
		Expect(opensslVerifies(old, bundle(), now)).To(BeFalse(), "a document of a retired key no longer verifies")
		Expect(opensslVerifies(fresh, bundle(), now)).To(BeTrue())
	})

	It("signs each VM's document with its Node's placement and publishes the certificate in the status", func() {
		ns := newNamespace(ctx)
		node := &corev1.Node{ObjectMeta: metav1.ObjectMeta{GenerateName: "node-", Labels: map[string]string{
			corev1.LabelTopologyRegion: "eu-west-9", corev1.LabelTopologyZone: "eu-west-9b",
		}}}
		create(ctx, node)
		DeferCleanup(func() { _ = k8sClient.Delete(context.Background(), node) })
		vmi := newVMI(ns, "web-1", map[string]string{"app": "web"})
		vmi.Annotations = map[string]string{kubevirtv1.InstancetypeAnnotation: "u1.medium"}
		create(ctx, vmi)
		vmi.Status.NodeName = node.Name
		vmi.Status.Interfaces = []kubevirtv1.VirtualMachineInstanceNetworkInterface{{Name: "default", IP: "10.244.3.9", MAC: "52:54:00:00:00:01"}}
		// The test API server has KubeVirt's CRD without a status
		// subresource: the status is written with the object.
		Expect(k8sClient.Update(ctx, vmi)).To(Succeed())
		create(ctx, newMDS(ns, "web", imdsv1alpha1.MetadataServiceSpec{
			EC2: &imdsv1alpha1.EC2Spec{HTTPTokens: imdsv1alpha1.HTTPTokensRequired, HTTPPutResponseHopLimit: 2},
		}))

		var doc *payload.Document
		Eventually(func(g Gomega) {
			var err error
			doc, err = payloadOf(ctx, ns, "web-1")
			g.Expect(err).NotTo(HaveOccurred())
			g.Expect(doc.EC2).NotTo(BeNil())
			g.Expect(doc.EC2.Region).To(Equal("eu-west-9"))
			g.Expect(doc.EC2.Identity).NotTo(BeNil())
		}).Should(Succeed())
		Expect(doc.EC2.HTTPTokens).To(Equal(payload.HTTPTokensRequired))
		Expect(doc.EC2.HopLimit).To(Equal(2))
		Expect(doc.EC2.AvailabilityZone).To(Equal("eu-west-9b"))
		Expect(doc.EC2.InstanceType).To(Equal("u1.medium"))
		Expect(doc.EC2.Interfaces).To(Equal([]payload.EC2Interface{{MACAddress: "52:54:00:00:00:01", IPv4: []string{"10.0.2.2/24"}}}))
		Expect(doc.EC2.Identity.Document).To(SatisfyAll(
			ContainSubstring(`"region": "eu-west-9"`), ContainSubstring(`"availabilityZone": "eu-west-9b"`),
			ContainSubstring(`"privateIp": "10.244.3.9"`), ContainSubstring(`"namespace": "`+ns+`"`),
			ContainSubstring(`"name": "web-1"`), ContainSubstring(`"uid": "`+string(vmi.UID)+`"`),
			ContainSubstring(`"instanceType": "u1.medium"`)))

		By("relabelling the Node: the document follows")
		Expect(k8sClient.Get(ctx, types.NamespacedName{Name: node.Name}, node)).To(Succeed())
		node.Labels[corev1.LabelTopologyZone] = "eu-west-9c"
		Expect(k8sClient.Update(ctx, node)).To(Succeed())
		Eventually(func(g Gomega) {
			d, err := payloadOf(ctx, ns, "web-1")
			g.Expect(err).NotTo(HaveOccurred())
			g.Expect(d.EC2.AvailabilityZone).To(Equal("eu-west-9c"))
			g.Expect(d.EC2.Identity.Document).To(ContainSubstring(`"availabilityZone": "eu-west-9c"`))
		}).Should(Succeed())

		var certs []string
		Eventually(func(g Gomega) {
			certs = getMDS(ctx, ns, "web").Status.IdentityCertificates
			g.Expect(certs).NotTo(BeEmpty())
		}).Should(Succeed())
		Expect(opensslVerifies(doc.EC2.Identity, certs[0], time.Now())).To(BeTrue())
		parsed, err := instanceidentity.ParseCertificates([]byte(certs[0]))
		Expect(err).NotTo(HaveOccurred())
		_, err = instanceidentity.Verify([]byte(doc.EC2.Identity.Document), doc.EC2.Identity.Signature, parsed, time.Now())
		Expect(err).NotTo(HaveOccurred())
		sig, err := base64.StdEncoding.DecodeString(doc.EC2.Identity.Signature)
		Expect(err).NotTo(HaveOccurred())
		Expect(sig).To(HaveLen(256), "an RSA 2048 signature")

		var secret corev1.Secret
		Expect(k8sClient.Get(ctx, types.NamespacedName{Namespace: identityNamespace, Name: IdentitySecretName}, &secret)).To(Succeed())
		Expect(secret.Data).To(HaveKey("tls.key"))
		payloadSecret := payloadSecrets(ctx, ns)["imds-web-1"]
		Expect(string(payloadSecret.Data[payload.SecretKey])).NotTo(ContainSubstring("PRIVATE KEY"), "the key never reaches a payload")
	})

	It("writes the document unsigned where the service serves the EC2 tree without the ec2 dialect", func() {
		ns := newNamespace(ctx)
		vmi := newVMI(ns, "os-1", map[string]string{"app": "os"})
		create(ctx, vmi)
		create(ctx, newMDS(ns, "os", imdsv1alpha1.MetadataServiceSpec{
			Dialects: []imdsv1alpha1.Dialect{"nocloud", "openstack"},
		}))
		var doc *payload.Document
		Eventually(func(g Gomega) {
			var err error
			doc, err = payloadOf(ctx, ns, "os-1")
			g.Expect(err).NotTo(HaveOccurred())
			g.Expect(doc.EC2).NotTo(BeNil())
			g.Expect(doc.EC2.Identity).NotTo(BeNil())
		}).Should(Succeed())
		Expect(doc.EC2.Identity.Signature).To(BeEmpty())
		Expect(doc.EC2.Identity.PKCS7).To(BeEmpty())
		Expect(doc.EC2.Identity.CertificateSHA256).To(BeEmpty())
		var got instanceidentity.Document
		Expect(json.Unmarshal([]byte(doc.EC2.Identity.Document), &got)).To(Succeed())
		Expect(got).To(And(HaveField("InstanceID", doc.Instance.ID), HaveField("Region", "kubevirt"),
			HaveField("Namespace", ns), HaveField("Name", "os-1"), HaveField("UID", string(vmi.UID))))
	})
})

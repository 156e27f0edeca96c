package controllers

import (
	"context"
	"strings"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/kubevirt-imds/kubevirt-imds/api/payload"
	imdsv1alpha1 "github.com/kubevirt-imds/kubevirt-imds/api/v1alpha1"
	"github.com/kubevirt-imds/kubevirt-imds/test/fixtures"
)

var _ = Describe("Shared payloads", func() {
	var (
		ctx context.Context
		ns  string
	)
	BeforeEach(func() {
		ctx = context.Background()
		ns = newNamespace(ctx)
	})

	// cloudConfig is a 16 KiB cloud-config, as the scale goal names it.
	cloudConfig := func(marker string) string {
		return "#cloud-config\n# " + marker + "\nwrite_files:\n- path: /etc/big\n  content: " + strings.Repeat("x", 16<<10) + "\n"
	}

	It("stores a service's user-data once, each instance's document small, and an edit of it is one write", func() {
		const n = 5
		for i := range n {
			create(ctx, newVMI(ns, "vm-"+string(rune('a'+i)), map[string]string{"app": "web"}))
		}
		mds := newMDS(ns, "web", imdsv1alpha1.MetadataServiceSpec{
			Selector:   selector("app", "web"),
			UserData:   &imdsv1alpha1.DataSource{Inline: ptr(cloudConfig("one"))},
			VendorData: &imdsv1alpha1.DataSource{Inline: ptr("#cloud-config\npackages: [jq]\n")},
		})
		create(ctx, mds)

		served := func(vmi string) string {
			doc, err := payloadOf(ctx, ns, vmi)
			if err != nil {
				return err.Error()
			}
			return string(doc.UserData) + string(doc.VendorData)
		}
		for i := range n {
			Eventually(served).WithArguments("vm-" + string(rune('a'+i))).Should(Equal(cloudConfig("one") + "#cloud-config\npackages: [jq]\n"))
		}

		By("each instance's Secret refers to the shared document and holds no copy")
		secrets := payloadSecrets(ctx, ns)
		Expect(secrets).To(HaveLen(n))
		versions := map[string]string{}
		total := 0
		for name, s := range secrets {
			doc, err := payload.Parse(s.Data[payload.SecretKey])
			Expect(err).NotTo(HaveOccurred())
			Expect(doc.Shared).To(Equal(&payload.SharedRef{MetadataService: "web"}), name)
			Expect(doc.UserData).To(BeEmpty(), name)
			Expect(len(s.Data[payload.SecretKey])).To(BeNumerically("<", 4<<10), name)
			versions[name] = s.ResourceVersion
			total += len(s.Data[payload.SecretKey])
		}
		var shared corev1.Secret
		Expect(k8sClient.Get(ctx, types.NamespacedName{Namespace: ns, Name: imdsv1alpha1.SharedPayloadSecretName("web")}, &shared)).To(Succeed())
		Expect(shared.Type).To(Equal(PayloadSecretType))
		Expect(shared.OwnerReferences).To(HaveLen(1))
		Expect(shared.OwnerReferences[0].Name).To(Equal("web"))
		total += len(shared.Data[payload.SharedKey])
		GinkgoWriter.Printf("payload bytes per instance: %d\n", total/n)

		By("an edit of the user-data rewrites the shared Secret alone")
		Expect(k8sClient.Get(ctx, client.ObjectKeyFromObject(mds), mds)).To(Succeed())
		mds.Spec.UserData.Inline = ptr(cloudConfig("two"))
		Expect(k8sClient.Update(ctx, mds)).To(Succeed())
		for i := range n {
			Eventually(served).WithArguments("vm-" + string(rune('a'+i))).Should(HavePrefix(cloudConfig("two")))
		}
		Eventually(func() int64 { return getMDS(ctx, ns, "web").Status.ObservedGeneration }).Should(Equal(mds.Generation))
		for name, s := range payloadSecrets(ctx, ns) {
			Expect(s.ResourceVersion).To(Equal(versions[name]), "%s was rewritten", name)
		}
	})

	It("gives an instance its own copy while a launcher Pod's sidecar does not mount the shared Secret", func() {
		vmi := newVMI(ns, "vm", map[string]string{"app": "web"})
		create(ctx, vmi)
		create(ctx, newMDS(ns, "web", imdsv1alpha1.MetadataServiceSpec{
			Selector: selector("app", "web"),
			UserData: &imdsv1alpha1.DataSource{Inline: ptr("#cloud-config\n")},
		}))
		stored := func() *payload.Document {
			s, ok := payloadSecrets(ctx, ns)[imdsv1alpha1.PayloadSecretName("vm")]
			if !ok {
				return nil
			}
			doc, err := payload.Parse(s.Data[payload.SecretKey])
			if err != nil {
				return nil
			}
			return doc
		}
		Eventually(stored).Should(HaveField("Shared", Not(BeNil())))

		By("a Pod injected by an earlier version: its sidecar mounts the instance's Secret only")
		pod := fixtures.LauncherPod(vmi)
		pod.Spec.InitContainers = append(pod.Spec.InitContainers, corev1.Container{
			Name: SidecarContainerName, Image: "kubevirt-imds:v0.1", RestartPolicy: ptr(corev1.ContainerRestartPolicyAlways)})
		pod.Spec.Volumes = append(pod.Spec.Volumes, corev1.Volume{Name: "imds-payload", VolumeSource: corev1.VolumeSource{
			Secret: &corev1.SecretVolumeSource{SecretName: imdsv1alpha1.PayloadSecretName("vm")}}})
		create(ctx, pod)
		Eventually(stored).Should(SatisfyAll(HaveField("Shared", BeNil()), HaveField("UserData", Equal([]byte("#cloud-config\n")))))

		By("the Pod ends: the next Pod is injected with the shared Secret")
		pod.Status.Phase = corev1.PodSucceeded
		Expect(k8sClient.Status().Update(ctx, pod)).To(Succeed())
		Eventually(stored).Should(SatisfyAll(HaveField("Shared", Not(BeNil())), HaveField("UserData", BeEmpty())))
	})
})

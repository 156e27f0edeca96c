package kubelet_test

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"

	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/kubevirt-imds/kubevirt-imds/api/payload"
	imdsv1alpha1 "github.com/kubevirt-imds/kubevirt-imds/api/v1alpha1"
	"github.com/kubevirt-imds/kubevirt-imds/sidecar/store/storetest"
)

const (
	payloadDir = "/var/run/kubevirt-imds/payload"
	tokenDir   = "/var/run/kubevirt-imds/tokens"
	itemsDir   = "/var/run/items"
	sidecar    = "kubevirt-imds"
	saName     = "vm1-sa"
)

// sealed returns storetest's document for hostname, sealed.
func sealed(hostname string) []byte {
	GinkgoHelper()
	doc := storetest.Document()
	doc.Instance.Hostname = hostname
	doc.Tokens = []payload.Token{{Audience: "vault", ExpirationSeconds: 600, Path: payload.TokenPath("vault")}}
	raw, err := doc.Seal()
	Expect(err).NotTo(HaveOccurred())
	return raw
}

// sidecarPod is a virt-launcher-like Pod whose sidecar init container mounts
// the payload Secret, an items/defaultMode view of it, and a projected
// "vault" token of 600 s with the Pod's name beside it.
func sidecarPod(ns string) *corev1.Pod {
	tokenVol := payload.TokenVolumeName("vault")
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "virt-launcher-vm1-abcde", Namespace: ns, Labels: map[string]string{"kubevirt.io/domain": "vm1"}},
		Spec: corev1.PodSpec{
			ServiceAccountName: saName,
			Volumes: []corev1.Volume{
				{Name: "imds-payload", VolumeSource: corev1.VolumeSource{Secret: &corev1.SecretVolumeSource{
					SecretName: imdsv1alpha1.PayloadSecretName("vm1"), Optional: new(false),
				}}},
				{Name: "items", VolumeSource: corev1.VolumeSource{Secret: &corev1.SecretVolumeSource{
					SecretName:  imdsv1alpha1.PayloadSecretName("vm1"),
					DefaultMode: new(int32(0o440)),
					Items: []corev1.KeyToPath{
						{Key: payload.SecretKey, Path: "sub/doc.json", Mode: new(int32(0o400))},
						{Key: "note", Path: "note"},
					},
				}}},
				{Name: tokenVol, VolumeSource: corev1.VolumeSource{Projected: &corev1.ProjectedVolumeSource{
					Sources: []corev1.VolumeProjection{
						{ServiceAccountToken: &corev1.ServiceAccountTokenProjection{Audience: "vault", ExpirationSeconds: new(int64(600)), Path: payload.TokenFileName}},
						{DownwardAPI: &corev1.DownwardAPIProjection{Items: []corev1.DownwardAPIVolumeFile{
							{Path: "pod-name", FieldRef: &corev1.ObjectFieldSelector{FieldPath: "metadata.name"}},
						}}},
					},
				}}},
			},
			InitContainers: []corev1.Container{{
				Name:          sidecar,
				Image:         "kubevirt-imds:test",
				RestartPolicy: new(corev1.ContainerRestartPolicyAlways),
				Command:       []string{"/kubevirt-imds-sidecar"},
				Args: []string{"serve",
					"--payload-dir=" + payloadDir,
					"--token-dir=" + tokenDir,
					"--admin-address=127.0.0.2:8081",
					"--log-level=debug",
				},
				Env: []corev1.EnvVar{
					{Name: "GOMEMLIMIT", ValueFrom: &corev1.EnvVarSource{ResourceFieldRef: &corev1.ResourceFieldSelector{Resource: "limits.memory"}}},
					{Name: "POD_NAME", ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{FieldPath: "metadata.name"}}},
					{Name: "POD_IP", ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{FieldPath: "status.podIP"}}},
					{Name: "GREETING", Value: "hello $(POD_NAME)"},
				},
				Resources: corev1.ResourceRequirements{Limits: corev1.ResourceList{
					corev1.ResourceMemory: mustQuantity("64Mi"), corev1.ResourceCPU: mustQuantity("100m"),
				}},
				VolumeMounts: []corev1.VolumeMount{
					{Name: "imds-payload", MountPath: payloadDir, ReadOnly: true},
					{Name: "items", MountPath: itemsDir, ReadOnly: true},
					{Name: tokenVol, MountPath: tokenDir + "/" + tokenVol, ReadOnly: true},
				},
				SecurityContext: &corev1.SecurityContext{
					RunAsUser:                new(int64(0)),
					AllowPrivilegeEscalation: new(false),
					Capabilities: &corev1.Capabilities{
						Drop: []corev1.Capability{"ALL"},
						Add:  []corev1.Capability{"NET_ADMIN", "NET_RAW", "NET_BIND_SERVICE"},
					},
				},
			}},
			Containers: []corev1.Container{{Name: "compute", Image: "virt-launcher:test"}},
		},
	}
}

// createPayloadSecret creates the payload Secret for hostname.
func createPayloadSecret(ctx context.Context, ns, hostname string) {
	GinkgoHelper()
	_, err := clientset.CoreV1().Secrets(ns).Create(ctx, &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Name: imdsv1alpha1.PayloadSecretName("vm1"), Namespace: ns},
		Data:       map[string][]byte{payload.SecretKey: sealed(hostname), "note": []byte("v1")},
	}, metav1.CreateOptions{})
	Expect(err).NotTo(HaveOccurred())
}

// createPod creates pod and returns it as stored (with its UID).
func createPod(ctx context.Context, pod *corev1.Pod) *corev1.Pod {
	GinkgoHelper()
	out, err := clientset.CoreV1().Pods(pod.Namespace).Create(ctx, pod, metav1.CreateOptions{})
	Expect(err).NotTo(HaveOccurred())
	return out
}

// claims decodes a JWT's claims without verifying it: the TokenReview does
// that.
func claims(tok []byte) map[string]any {
	GinkgoHelper()
	parts := strings.Split(string(tok), ".")
	Expect(parts).To(HaveLen(3))
	raw, err := base64.RawURLEncoding.DecodeString(parts[1])
	Expect(err).NotTo(HaveOccurred())
	var c map[string]any
	Expect(json.Unmarshal(raw, &c)).To(Succeed())
	return c
}

// hostname reads the payload document's hostname through dir's visible file.
func hostname(dir string) (string, error) {
	raw, err := os.ReadFile(filepath.Join(dir, payload.SecretKey))
	if err != nil {
		return "", err
	}
	doc, err := payload.Parse(raw)
	if err != nil {
		return "", err
	}
	return doc.Instance.Hostname, nil
}

var _ = Describe("volumes", func() {
	It("materialises Secret and token volumes in kubelet's layout and keeps them fresh", func(ctx SpecContext) {
		ns := newNamespace(ctx, saName)
		createPayloadSecret(ctx, ns, "vm1")
		pod := createPod(ctx, sidecarPod(ns))
		kl := newKubelet(nil)

		vols, err := kl.MountVolumes(ctx, pod, sidecar)
		Expect(err).NotTo(HaveOccurred())
		tokenMount := tokenDir + "/" + payload.TokenVolumeName("vault")
		Expect(vols).To(HaveKey(payloadDir))
		Expect(vols).To(HaveKey(itemsDir))
		Expect(vols).To(HaveKey(tokenMount))
		Expect(vols[payloadDir]).To(HaveSuffix(filepath.Join("pods", string(pod.UID), "volumes", "kubernetes.io~secret", "imds-payload")))

		By("laying the payload out as kubelet does")
		pdir := vols[payloadDir]
		data, err := os.Readlink(filepath.Join(pdir, "..data"))
		Expect(err).NotTo(HaveOccurred())
		Expect(data).To(HavePrefix(".." + time.Now().UTC().Format("2006_01_02")))
		Expect(os.Readlink(filepath.Join(pdir, payload.SecretKey))).To(Equal("..data/" + payload.SecretKey))
		Expect(os.Readlink(filepath.Join(pdir, "note"))).To(Equal("..data/note"))
		Expect(hostname(pdir)).To(Equal("vm1"))
		st, err := os.Stat(filepath.Join(pdir, payload.SecretKey))
		Expect(err).NotTo(HaveOccurred())
		Expect(st.Mode().Perm()).To(Equal(fs.FileMode(0o644)))
		versions, err := (&storetest.Dir{Path: pdir}).Versions()
		Expect(err).NotTo(HaveOccurred())
		Expect(versions).To(Equal([]string{data}))

		By("honouring items and modes")
		idir := vols[itemsDir]
		Expect(os.Readlink(filepath.Join(idir, "sub"))).To(Equal("..data/sub"))
		st, err = os.Stat(filepath.Join(idir, "sub", "doc.json"))
		Expect(err).NotTo(HaveOccurred())
		Expect(st.Mode().Perm()).To(Equal(fs.FileMode(0o400)))
		st, err = os.Stat(filepath.Join(idir, "note"))
		Expect(err).NotTo(HaveOccurred())
		Expect(st.Mode().Perm()).To(Equal(fs.FileMode(0o440)))
		_, err = os.Lstat(filepath.Join(idir, payload.SecretKey))
		Expect(errors.Is(err, fs.ErrNotExist)).To(BeTrue(), "a key not in items was projected")

		By("projecting a real token from the TokenRequest API, bound to the Pod")
		tdir := vols[tokenMount]
		Expect(os.ReadFile(filepath.Join(tdir, "pod-name"))).To(BeEquivalentTo(pod.Name))
		tok, err := os.ReadFile(filepath.Join(tdir, payload.TokenFileName))
		Expect(err).NotTo(HaveOccurred())
		c := claims(tok)
		Expect(c["aud"]).To(ConsistOf("vault"))
		Expect(c["sub"]).To(Equal("system:serviceaccount:" + ns + ":" + saName))
		Expect(c["exp"].(float64) - c["iat"].(float64)).To(BeNumerically("==", 600))
		Expect(c["kubernetes.io"]).To(HaveKeyWithValue("pod", HaveKeyWithValue("uid", string(pod.UID))))

		review := func(audience string) *authenticationv1.TokenReview {
			GinkgoHelper()
			r, err := clientset.AuthenticationV1().TokenReviews().Create(ctx, &authenticationv1.TokenReview{
				Spec: authenticationv1.TokenReviewSpec{Token: string(tok), Audiences: []string{audience}},
			}, metav1.CreateOptions{})
			Expect(err).NotTo(HaveOccurred())
			return r
		}
		r := review("vault")
		Expect(r.Status.Authenticated).To(BeTrue(), r.Status.Error)
		Expect(r.Status.Audiences).To(ConsistOf("vault"))
		Expect(r.Status.User.Username).To(Equal("system:serviceaccount:" + ns + ":" + saName))
		Expect(r.Status.User.Extra).To(HaveKeyWithValue("authentication.kubernetes.io/pod-name", ConsistOf(pod.Name)))
		Expect(r.Status.User.Extra).To(HaveKeyWithValue("authentication.kubernetes.io/pod-uid", ConsistOf(string(pod.UID))))
		Expect(review("another-audience").Status.Authenticated).To(BeFalse())

		By("following a Secret update with one atomic swap")
		run(kl)
		held, err := os.Open(filepath.Join(pdir, payload.SecretKey))
		Expect(err).NotTo(HaveOccurred())
		DeferCleanup(held.Close)
		// A reader going through the visible path sees either the whole
		// old document or the whole new one; payload.Parse checks its
		// hash. It may lose the race against the old version's removal
		// (ENOENT) and retry, as with kubelet.
		var torn atomic.Value
		seenNew := make(chan struct{})
		go func() {
			defer GinkgoRecover()
			for {
				h, err := hostname(pdir)
				switch {
				case errors.Is(err, fs.ErrNotExist):
				case err != nil:
					torn.Store(err.Error())
					close(seenNew)
					return
				case h == "vm1-renamed":
					close(seenNew)
					return
				}
				select {
				case <-ctx.Done():
					return
				default:
				}
			}
		}()
		s, err := clientset.CoreV1().Secrets(ns).Get(ctx, imdsv1alpha1.PayloadSecretName("vm1"), metav1.GetOptions{})
		Expect(err).NotTo(HaveOccurred())
		s.Data[payload.SecretKey] = sealed("vm1-renamed")
		s.Data["note"] = []byte("v2")
		_, err = clientset.CoreV1().Secrets(ns).Update(ctx, s, metav1.UpdateOptions{})
		Expect(err).NotTo(HaveOccurred())
		Eventually(seenNew).WithTimeout(10 * time.Second).Should(BeClosed())
		Expect(torn.Load()).To(BeNil(), "a reader saw a torn document")

		newData, err := os.Readlink(filepath.Join(pdir, "..data"))
		Expect(err).NotTo(HaveOccurred())
		Expect(newData).NotTo(Equal(data))
		// The old version goes right after the swap the reader saw.
		Eventually((&storetest.Dir{Path: pdir}).Versions).Should(Equal([]string{newData}), "the old version is gone")
		oldRaw, err := io.ReadAll(held)
		Expect(err).NotTo(HaveOccurred())
		oldDoc, err := payload.Parse(oldRaw)
		Expect(err).NotTo(HaveOccurred(), "the held file changed under its reader")
		Expect(oldDoc.Instance.Hostname).To(Equal("vm1"))
		Eventually(func() ([]byte, error) { return os.ReadFile(filepath.Join(idir, "note")) }).Should(BeEquivalentTo("v2"))
		st, err = os.Stat(filepath.Join(idir, "sub", "doc.json"))
		Expect(err).NotTo(HaveOccurred())
		Expect(st.Mode().Perm()).To(Equal(fs.FileMode(0o400)))

		By("keeping the token: it is not due")
		Expect(os.ReadFile(filepath.Join(tdir, payload.TokenFileName))).To(Equal(tok))
	})

	It("fills an optional volume whose Secret appears later", func(ctx SpecContext) {
		ns := newNamespace(ctx, "default")
		pod := &corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{Name: "p", Namespace: ns},
			Spec: corev1.PodSpec{
				Volumes: []corev1.Volume{{Name: "later", VolumeSource: corev1.VolumeSource{Secret: &corev1.SecretVolumeSource{
					SecretName: "later", Optional: new(true),
				}}}},
				Containers: []corev1.Container{{Name: "c", Image: "x", VolumeMounts: []corev1.VolumeMount{{Name: "later", MountPath: "/later"}}}},
			},
		}
		pod = createPod(ctx, pod)
		kl := newKubelet(nil)
		vols, err := kl.MountVolumes(ctx, pod, "c")
		Expect(err).NotTo(HaveOccurred())
		entries, err := os.ReadDir(vols["/later"])
		Expect(err).NotTo(HaveOccurred())
		for _, e := range entries {
			Expect(e.Name()).To(HavePrefix(".."), "an optional missing Secret gives an empty volume")
		}
		run(kl)
		_, err = clientset.CoreV1().Secrets(ns).Create(ctx, &corev1.Secret{
			ObjectMeta: metav1.ObjectMeta{Name: "later"}, Data: map[string][]byte{"k": []byte("v")},
		}, metav1.CreateOptions{})
		Expect(err).NotTo(HaveOccurred())
		Eventually(func() ([]byte, error) { return os.ReadFile(filepath.Join(vols["/later"], "k")) }).Should(BeEquivalentTo("v"))
	})

	It("waits for a non-optional Secret, as kubelet holds the Pod", func(ctx SpecContext) {
		ns := newNamespace(ctx, "default")
		pod := &corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{Name: "p", Namespace: ns},
			Spec: corev1.PodSpec{
				Volumes: []corev1.Volume{{Name: "needed", VolumeSource: corev1.VolumeSource{Secret: &corev1.SecretVolumeSource{
					SecretName: "needed",
				}}}},
				Containers: []corev1.Container{{Name: "c", Image: "x", VolumeMounts: []corev1.VolumeMount{{Name: "needed", MountPath: "/needed"}}}},
			},
		}
		pod = createPod(ctx, pod)
		kl := newKubelet(nil)

		short, cancel := context.WithTimeout(ctx, 500*time.Millisecond)
		defer cancel()
		_, err := kl.MountVolumes(short, pod, "c")
		Expect(err).To(MatchError(ContainSubstring("does not exist")))

		type result struct {
			vols map[string]string
			err  error
		}
		done := make(chan result, 1)
		go func() {
			vols, err := kl.MountVolumes(ctx, pod, "c")
			done <- result{vols, err}
		}()
		Consistently(done).WithTimeout(300 * time.Millisecond).ShouldNot(Receive())
		_, err = clientset.CoreV1().Secrets(ns).Create(ctx, &corev1.Secret{
			ObjectMeta: metav1.ObjectMeta{Name: "needed"}, Data: map[string][]byte{"k": []byte("v")},
		}, metav1.CreateOptions{})
		Expect(err).NotTo(HaveOccurred())
		var res result
		Eventually(done).WithTimeout(10 * time.Second).Should(Receive(&res))
		Expect(res.err).NotTo(HaveOccurred())
		Expect(os.ReadFile(filepath.Join(res.vols["/needed"], "k"))).To(BeEquivalentTo("v"))
	})
})

package kubelet_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/kubevirt-imds/kubevirt-imds/api/payload"
	imdsv1alpha1 "github.com/kubevirt-imds/kubevirt-imds/api/v1alpha1"
	"github.com/kubevirt-imds/kubevirt-imds/test/controlplane"
	"github.com/kubevirt-imds/kubevirt-imds/test/kubelet"
	"github.com/kubevirt-imds/kubevirt-imds/test/output"
	"github.com/kubevirt-imds/kubevirt-imds/test/podnet"
)

var (
	buildOnce sync.Once
	binary    string
	buildErr  error
)

// buildBinary builds the repository's binaries once and returns the
// sidecar's.
func buildBinary() string {
	GinkgoHelper()
	buildOnce.Do(func() {
		dir, err := os.MkdirTemp("", "imds-kubelet-")
		if err != nil {
			buildErr = err
			return
		}
		var bins controlplane.Binaries
		bins, buildErr = controlplane.BuildBinaries(context.Background(), dir)
		binary = bins.Sidecar
	})
	Expect(buildErr).NotTo(HaveOccurred())
	return binary
}

var _ = AfterSuite(func() {
	if binary != "" {
		Expect(os.RemoveAll(filepath.Dir(binary))).To(Succeed())
	}
})

// procStatus returns a field of /proc/<pid>/status.
func procStatus(pid int, key string) string {
	GinkgoHelper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	Expect(err).NotTo(HaveOccurred())
	for _, line := range strings.Split(string(b), "\n") {
		if k, v, ok := strings.Cut(line, ":"); ok && k == key {
			return strings.TrimSpace(v)
		}
	}
	return ""
}

var _ = Describe("running a container", func() {
	It("runs the real sidecar from its Pod spec in a virt-launcher-like namespace, serving the materialised payload and token", func(ctx SpecContext) {
		if err := podnet.Available(); err != nil {
			controlplane.Unavailable(err.Error())
		}
		for _, tool := range []string{"setpriv", "unshare", "mount"} {
			if _, err := exec.LookPath(tool); err != nil {
				controlplane.Unavailable(tool + " is needed (util-linux)")
			}
		}
		bin := buildBinary()

		ns := newNamespace(ctx, saName)
		createPayloadSecret(ctx, ns, "vm1")
		pod := createPod(ctx, sidecarPod(ns))
		// No CNI either: the Pod's address is podnet's.
		pod.Status.PodIP = podnet.PodIP.Addr().String()
		pod.Status.PodIPs = []corev1.PodIP{{IP: pod.Status.PodIP}}
		pod, err := clientset.CoreV1().Pods(ns).UpdateStatus(ctx, pod, metav1.UpdateOptions{})
		Expect(err).NotTo(HaveOccurred())

		kl := newKubelet(map[string]string{"/" + controlplane.SidecarBinary: bin})
		vols, err := kl.MountVolumes(ctx, pod, sidecar)
		Expect(err).NotTo(HaveOccurred())
		run(kl)

		netns := podnet.NewPod(GinkgoT())
		netns.Plumb(GinkgoT(), podnet.Masquerade)
		cmd, err := kl.Command(context.Background(), pod, sidecar, vols, netns.NS)
		Expect(err).NotTo(HaveOccurred())
		logs := &output.Buffer{}
		cmd.Stdout, cmd.Stderr = logs, logs
		Expect(cmd.Start()).To(Succeed())
		exited := make(chan error, 1)
		go func() { exited <- cmd.Wait() }()
		DeferCleanup(func() {
			_ = cmd.Process.Signal(syscall.SIGTERM)
			Eventually(exited).WithTimeout(10 * time.Second).Should(Receive())
			if CurrentSpecReport().Failed() {
				GinkgoWriter.Printf("sidecar logs:\n%s\n", logs.String())
			}
		})

		By("the sidecar reporting ready: payload loaded, network applied")
		Eventually(func(g Gomega) {
			code, body, err := netns.AdminGet(ctx, "http://127.0.0.2:8081/readyz")
			g.Expect(err).NotTo(HaveOccurred())
			g.Expect(code).To(Equal(http.StatusOK), body)
		}).WithContext(ctx).WithTimeout(20 * time.Second).WithPolling(50 * time.Millisecond).Should(Succeed())

		By("the process running with the container's identity, capabilities and environment")
		pid := cmd.Process.Pid
		Expect(procStatus(pid, "Uid")).To(HavePrefix("0\t"))
		// NET_BIND_SERVICE (10), NET_ADMIN (12), NET_RAW (13).
		Expect(procStatus(pid, "CapEff")).To(Equal("0000000000003400"))
		Expect(procStatus(pid, "CapBnd")).To(Equal("0000000000003400"))
		Expect(procStatus(pid, "NoNewPrivs")).To(Equal("1"))
		environ, err := os.ReadFile(fmt.Sprintf("/proc/%d/environ", pid))
		Expect(err).NotTo(HaveOccurred())
		env := strings.Split(string(environ), "\x00")
		Expect(env).To(ContainElements(
			"POD_NAME="+pod.Name,
			"POD_IP="+podnet.PodIP.Addr().String(),
			"GOMEMLIMIT=67108864",
			"GREETING=hello "+pod.Name,
			"HOSTNAME="+pod.Name,
		))

		By("the guest getting the API server's token through the sidecar")
		token, err := os.ReadFile(filepath.Join(vols[tokenDir+"/"+payload.TokenVolumeName("vault")], payload.TokenFileName))
		Expect(err).NotTo(HaveOccurred())
		Eventually(func(g Gomega) {
			req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://169.254.169.254/v1/token?audience=vault", nil)
			g.Expect(err).NotTo(HaveOccurred())
			req.Header.Set("Metadata", "true")
			resp, err := netns.Guest.HTTPClient(2 * time.Second).Do(req)
			g.Expect(err).NotTo(HaveOccurred())
			defer resp.Body.Close()
			body, err := io.ReadAll(resp.Body)
			g.Expect(err).NotTo(HaveOccurred())
			g.Expect(resp.StatusCode).To(Equal(http.StatusOK), string(body))
			var got struct{ Audience, Token string }
			g.Expect(json.Unmarshal(body, &got)).To(Succeed())
			g.Expect(got.Token).To(Equal(string(token)))
		}).WithContext(ctx).WithTimeout(10 * time.Second).WithPolling(50 * time.Millisecond).Should(Succeed())

		By("the sidecar following a Secret update written by the stand-in kubelet")
		s, err := clientset.CoreV1().Secrets(ns).Get(ctx, imdsv1alpha1.PayloadSecretName("vm1"), metav1.GetOptions{})
		Expect(err).NotTo(HaveOccurred())
		s.Data[payload.SecretKey] = sealed("vm1-renamed")
		_, err = clientset.CoreV1().Secrets(ns).Update(ctx, s, metav1.UpdateOptions{})
		Expect(err).NotTo(HaveOccurred())
		Eventually(func(g Gomega) {
			code, body, err := netns.GuestGet(ctx, "http://169.254.169.254/nocloud/meta-data")
			g.Expect(err).NotTo(HaveOccurred())
			g.Expect(code).To(Equal(http.StatusOK))
			g.Expect(body).To(ContainSubstring("local-hostname: vm1-renamed"))
		}).WithContext(ctx).WithTimeout(10 * time.Second).WithPolling(50 * time.Millisecond).Should(Succeed())

		By("the read-only mount refusing the container's writes")
		_, err = os.Stat(filepath.Join(vols[payloadDir], payload.SecretKey))
		Expect(err).NotTo(HaveOccurred())
		out, err := exec.CommandContext(ctx, "nsenter", "-t", fmt.Sprint(pid), "-m", "touch", filepath.Join(vols[payloadDir], "x")).CombinedOutput()
		Expect(err).To(HaveOccurred(), "wrote to a read-only volume: %s", out)
		Expect(string(out)).To(ContainSubstring("Read-only file system"))
	})
})

var _ = Describe("running a container without a network namespace", func() {
	It("runs a shell container as nobody with its ConfigMap volume and environment", func(ctx SpecContext) {
		if os.Geteuid() != 0 {
			controlplane.Unavailable("running containers needs root (mount namespaces, setpriv)")
		}
		for _, tool := range []string{"setpriv", "unshare", "mount"} {
			if _, err := exec.LookPath(tool); err != nil {
				controlplane.Unavailable(tool + " is needed (util-linux)")
			}
		}
		ns := newNamespace(ctx, "default")
		_, err := clientset.CoreV1().ConfigMaps(ns).Create(ctx, &corev1.ConfigMap{
			ObjectMeta: metav1.ObjectMeta{Name: "cfg"}, Data: map[string]string{"greeting": "hi"},
		}, metav1.CreateOptions{})
		Expect(err).NotTo(HaveOccurred())
		pod := createPod(ctx, &corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{Name: "p", Namespace: ns},
			Spec: corev1.PodSpec{
				Volumes: []corev1.Volume{{Name: "config", VolumeSource: corev1.VolumeSource{ConfigMap: &corev1.ConfigMapVolumeSource{
					LocalObjectReference: corev1.LocalObjectReference{Name: "cfg"},
				}}}},
				Containers: []corev1.Container{{
					Name:    "c",
					Image:   "shell",
					Command: []string{"sh", "-c"},
					Args:    []string{`cat /etc/config/greeting; echo; echo "$GREETING"; id -u; grep ^CapEff /proc/self/status`},
					EnvFrom: []corev1.EnvFromSource{{Prefix: "CFG_", ConfigMapRef: &corev1.ConfigMapEnvSource{
						LocalObjectReference: corev1.LocalObjectReference{Name: "cfg"},
					}}},
					Env:          []corev1.EnvVar{{Name: "GREETING", Value: "$(CFG_greeting) from $(HOSTNAME)"}},
					VolumeMounts: []corev1.VolumeMount{{Name: "config", MountPath: "/etc/config", ReadOnly: true}},
					SecurityContext: &corev1.SecurityContext{
						RunAsUser:  new(int64(65534)),
						RunAsGroup: new(int64(65534)),
						// Capabilities reach root only, as with containerd.
						Capabilities: &corev1.Capabilities{Add: []corev1.Capability{"NET_ADMIN"}},
					},
				}},
			},
		})
		// The container's user walks the stand-in root from /.
		root, err := os.MkdirTemp("", "imds-kubelet-root-")
		Expect(err).NotTo(HaveOccurred())
		DeferCleanup(os.RemoveAll, root)
		Expect(os.Chmod(root, 0o755)).To(Succeed())
		kl := kubelet.New(kubelet.Config{Client: clientset, Root: root, Log: GinkgoLogr})

		vols, err := kl.MountVolumes(ctx, pod, "c")
		Expect(err).NotTo(HaveOccurred())
		cmd, err := kl.Command(ctx, pod, "c", vols, podnet.NS{})
		Expect(err).NotTo(HaveOccurred())
		out, err := cmd.CombinedOutput()
		Expect(err).NotTo(HaveOccurred(), string(out))
		Expect(string(out)).To(Equal("hi\nhi from p\n65534\nCapEff:\t0000000000000000\n"))
	})
})

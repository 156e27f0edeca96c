//go:build linux

package vm_test

// The real sidecar for the VM to boot against: the repository's binary, run
// in the virt-launcher-like Pod namespace as test/guest and test/sidecar run
// it (as nobody, with only NET_ADMIN, NET_RAW and NET_BIND_SERVICE, and
// /proc/sys read-only), serving a payload document shaped as the operator
// renders it for a masquerade VMI.

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
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
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	kubevirtv1 "kubevirt.io/api/core/v1"

	"github.com/kubevirt-imds/kubevirt-imds/api/payload"
	"github.com/kubevirt-imds/kubevirt-imds/controllers/netconfig"
	"github.com/kubevirt-imds/kubevirt-imds/sidecar/store/storetest"
	"github.com/kubevirt-imds/kubevirt-imds/test/output"
	"github.com/kubevirt-imds/kubevirt-imds/test/podnet"
)

// sidecarCaps are the sidecar's capabilities: exactly what its Pod spec grants.
const sidecarCaps = "-all,+net_admin,+net_raw,+net_bind_service"

// sidecarAdmin is the sidecar's admin endpoint, on the Pod's loopback.
const sidecarAdmin = "http://127.0.0.1:8081"

// sidecarBinary is the kubevirt-imds binary, built once per suite.
var sidecarBinary struct {
	sync.Mutex
	dir, path string
}

// buildSidecar returns the path of the kubevirt-imds binary, building it once.
func buildSidecar(ctx context.Context) string {
	GinkgoHelper()
	sidecarBinary.Lock()
	defer sidecarBinary.Unlock()
	if sidecarBinary.path != "" {
		return sidecarBinary.path
	}
	dir, err := os.MkdirTemp("", "kubevirt-imds-vm-sidecar-")
	Expect(err).NotTo(HaveOccurred())
	// The sidecar's unprivileged user must reach the binary.
	Expect(os.Chmod(dir, 0o755)).To(Succeed())
	bin := filepath.Join(dir, "kubevirt-imds")
	start := time.Now()
	out, err := exec.CommandContext(ctx, "go", "build", "-o", bin, "github.com/kubevirt-imds/kubevirt-imds").CombinedOutput()
	if err != nil {
		_ = os.RemoveAll(dir)
	}
	Expect(err).NotTo(HaveOccurred(), "building the binary: %s", out)
	GinkgoWriter.Printf("sidecar binary built in %v\n", time.Since(start).Round(time.Millisecond))
	sidecarBinary.dir, sidecarBinary.path = dir, bin
	return bin
}

// removeSidecarBinary deletes the binary buildSidecar built, if any.
func removeSidecarBinary() {
	sidecarBinary.Lock()
	defer sidecarBinary.Unlock()
	if sidecarBinary.dir != "" {
		_ = os.RemoveAll(sidecarBinary.dir)
		sidecarBinary.dir, sidecarBinary.path = "", ""
	}
}

// sidecar is one running sidecar process.
type sidecar struct {
	logs *output.Buffer
}

// startSidecar writes doc in kubelet's atomic layout and runs the sidecar on
// it in pod's namespace, unprivileged as in its Pod. It waits until /readyz
// answers 200, and stops the sidecar (SIGTERM) when the spec ends.
func startSidecar(ctx context.Context, pod *podnet.Pod, doc *payload.Document) *sidecar {
	GinkgoHelper()
	bin := buildSidecar(ctx)
	root, err := os.MkdirTemp("", "kubevirt-imds-vm-payload-")
	Expect(err).NotTo(HaveOccurred())
	DeferCleanup(os.RemoveAll, root)
	Expect(os.Chmod(root, 0o755)).To(Succeed())
	dir, err := storetest.NewDir(filepath.Join(root, "payload"))
	Expect(err).NotTo(HaveOccurred())
	Expect(dir.WriteDocument(doc)).To(Succeed())

	args := []string{"sidecar", "--payload-dir", dir.Path, "--token-dir", dir.Path, "--log-level", "debug"}
	script := `mount --bind /proc/sys /proc/sys && mount -o remount,bind,ro /proc/sys && ` +
		`exec setpriv --reuid=65534 --regid=65534 --clear-groups --inh-caps=` + sidecarCaps +
		` --ambient-caps=` + sidecarCaps + ` --bounding-set=` + sidecarCaps + ` -- "$@"`
	cmd := pod.Command(context.Background(), "sh", append([]string{"-c", script, "sh", bin}, args...)...)
	s := &sidecar{logs: &output.Buffer{}}
	done := make(chan struct{})
	cmd.Stdout, cmd.Stderr = s.logs, s.logs
	Expect(cmd.Start()).To(Succeed())
	go func() {
		_ = cmd.Wait()
		close(done)
	}()
	DeferCleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			_ = cmd.Process.Kill()
			<-done
		}
		if CurrentSpecReport().Failed() {
			GinkgoWriter.Printf("sidecar logs:\n%s\n", s.logs.String())
		}
	})

	Eventually(func(g Gomega) {
		select {
		case <-done:
			StopTrying("the sidecar exited").Wrap(fmt.Errorf("%s", s.logs.String())).Now()
		default:
		}
		code, body, err := pod.AdminGet(ctx, sidecarAdmin+"/readyz")
		g.Expect(err).NotTo(HaveOccurred())
		g.Expect(code).To(Equal(http.StatusOK), body)
	}).WithContext(ctx).WithTimeout(30*time.Second).WithPolling(20*time.Millisecond).Should(Succeed(), "sidecar ready")
	return s
}

// Answered returns the URIs the sidecar answered 200 to the guest at addr,
// from its request log.
func (s *sidecar) Answered(addr string) []string {
	var out []string
	sc := bufio.NewScanner(strings.NewReader(s.logs.String()))
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
	for sc.Scan() {
		var line struct {
			Msg    string `json:"msg"`
			URI    string `json:"uri"`
			Remote string `json:"remote"`
			Status int    `json:"status"`
		}
		if json.Unmarshal(sc.Bytes(), &line) != nil || line.Msg != "request" {
			continue
		}
		if host, _, _ := strings.Cut(line.Remote, ":"); host == addr && line.Status == http.StatusOK {
			out = append(out, line.URI)
		}
	}
	return out
}

// operatorDocument is the payload document the operator renders for a VMI
// named name with one masquerade interface on the Pod network whose MAC is
// the guest's, a firmware UUID as instance id, userData as user-data, and
// every dialect served.
func operatorDocument(name, mac string, userData func(instanceID string) string) *payload.Document {
	GinkgoHelper()
	firmwareUUID := newUUID()
	vmi := &kubevirtv1.VirtualMachineInstance{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "tenant-a", UID: types.UID(newUUID())},
		Spec: kubevirtv1.VirtualMachineInstanceSpec{
			Domain: kubevirtv1.DomainSpec{
				Firmware: &kubevirtv1.Firmware{UUID: types.UID(firmwareUUID)},
				Devices: kubevirtv1.Devices{Interfaces: []kubevirtv1.Interface{{
					Name:                   "default",
					MacAddress:             mac,
					InterfaceBindingMethod: kubevirtv1.InterfaceBindingMethod{Masquerade: &kubevirtv1.InterfaceMasquerade{}},
				}}},
			},
			Networks: []kubevirtv1.Network{{Name: "default", NetworkSource: kubevirtv1.NetworkSource{Pod: &kubevirtv1.PodNetwork{}}}},
		},
	}
	network := netconfig.FromVMI(vmi)
	Expect(network.Interfaces).To(HaveLen(1))
	nic := network.Interfaces[0]
	return &payload.Document{
		Instance: payload.Instance{
			ID:                 firmwareUUID,
			UID:                string(vmi.UID),
			Name:               vmi.Name,
			Namespace:          vmi.Namespace,
			Hostname:           vmi.Name,
			ServiceAccountName: "default",
		},
		UserData: []byte(userData(firmwareUUID)),
		Network:  network,
		Dialects: append([]payload.Dialect(nil), payload.AllDialects...),
		Serve:    payload.Serve{Interface: nic.Name, Bridge: nic.Bridge},
		Source:   payload.Source{MetadataService: "default"},
	}
}

// newUUID returns a random version 4 UUID.
func newUUID() string {
	b := make([]byte, 16)
	_, _ = rand.Read(b)
	h := hex.EncodeToString(b)
	return h[0:8] + "-" + h[8:12] + "-4" + h[13:16] + "-a" + h[17:20] + "-" + h[20:32]
}

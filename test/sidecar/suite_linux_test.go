// Package sidecar_test runs the real kubevirt-imds-sidecar binary inside
// network namespaces shaped like virt-launcher Pods (test/podnet), with only
// NET_ADMIN, NET_RAW and NET_BIND_SERVICE, as an unprivileged user, and with
// /proc/sys read-only. It needs root to build the namespaces and skips
// otherwise.
package sidecar_test

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"

	"github.com/kubevirt-imds/kubevirt-imds/api/payload"
	"github.com/kubevirt-imds/kubevirt-imds/sidecar/store/storetest"
	"github.com/kubevirt-imds/kubevirt-imds/test/controlplane"
	"github.com/kubevirt-imds/kubevirt-imds/test/output"
	"github.com/kubevirt-imds/kubevirt-imds/test/podnet"
)

func TestSidecarNetns(t *testing.T) {
	RegisterFailHandler(Fail)
	RunSpecs(t, "sidecar in virt-launcher-like network namespaces")
}

// binary is the kubevirt-imds-sidecar binary built from the repository root,
// with kubevirt-imds-sidecar-netadmin beside it.
var binary string

var _ = BeforeSuite(func(ctx SpecContext) {
	if err := podnet.Available(); err != nil {
		controlplane.Unavailable(err.Error())
	}
	for _, tool := range []string{"setpriv", "sysctl"} {
		if _, err := exec.LookPath(tool); err != nil {
			controlplane.Unavailable(tool + " is needed (util-linux, procps)")
		}
	}
	dir := worldReadableTempDir()
	if os.Getenv("IMDS_SIDECAR_RACE") != "1" {
		bins, err := controlplane.BuildBinaries(ctx, dir)
		Expect(err).NotTo(HaveOccurred())
		binary = bins.Sidecar
		return
	}
	binary = filepath.Join(dir, controlplane.SidecarBinary)
	// The sidecar's goroutines under the race detector, on demand: it makes
	// the binaries slow to build, and needs cgo, which the image's build
	// leaves out. Both go in one directory, as in the image: the sidecar runs
	// the netadmin binary beside it in mode "sidecar".
	out, err := exec.CommandContext(ctx, "go", "build", "-race", "-o", dir+"/",
		"github.com/kubevirt-imds/kubevirt-imds/sidecar/cmd/"+controlplane.SidecarBinary,
		"github.com/kubevirt-imds/kubevirt-imds/sidecar/cmd/"+controlplane.SidecarNetAdminBinary).CombinedOutput()
	Expect(err).NotTo(HaveOccurred(), "building the binaries: %s", out)
})

// worldReadableTempDir is a temporary directory the sidecar's unprivileged
// user can read.
func worldReadableTempDir() string {
	dir, err := os.MkdirTemp("", "imds-sidecar-")
	Expect(err).NotTo(HaveOccurred())
	Expect(os.Chmod(dir, 0o755)).To(Succeed())
	DeferCleanup(os.RemoveAll, dir)
	return dir
}

// sidecarProc is one running sidecar process.
type sidecarProc struct {
	cmd  *exec.Cmd
	logs *output.Buffer
	done chan struct{}
	err  error
}

// capabilities the sidecar runs with: exactly what its Pod spec grants.
const caps = "-all,+net_admin,+net_raw,+net_bind_service"

// writePayload writes storetest's document in kubelet's layout and returns
// the payload directory.
func writePayload() string {
	return writeDocument(storetest.Document())
}

// writeDocument writes doc in kubelet's layout and returns the directory.
func writeDocument(doc *payload.Document) string {
	root := worldReadableTempDir()
	d, err := storetest.NewDir(filepath.Join(root, "payload"))
	Expect(err).NotTo(HaveOccurred())
	Expect(d.WriteDocument(doc)).To(Succeed())
	return d.Path
}

// startSidecar runs the sidecar in pod's namespace as nobody with only the
// three capabilities, in a mount namespace where /proc/sys is read-only: a
// write there would fail loudly.
func startSidecar(pod *podnet.Pod, payloadDir string, extra ...string) *sidecarProc {
	return startSidecarWithCaps(pod, payloadDir, caps, extra...)
}

// startSidecarWithCaps is startSidecar with the capability set capSet
// (setpriv's syntax, e.g. "-all" for none).
func startSidecarWithCaps(pod *podnet.Pod, payloadDir, capSet string, extra ...string) *sidecarProc {
	args := append([]string{"serve", "--payload-dir", payloadDir, "--token-dir", payloadDir, "--log-level", "debug"}, extra...)
	script := `mount --bind /proc/sys /proc/sys && mount -o remount,bind,ro /proc/sys && ` +
		`exec setpriv --reuid=65534 --regid=65534 --clear-groups --inh-caps=` + capSet +
		` --ambient-caps=` + capSet + ` --bounding-set=` + capSet + ` -- "$@"`
	cmd := pod.Command(context.Background(), "sh", append([]string{"-c", script, "sh", binary}, args...)...)
	p := &sidecarProc{cmd: cmd, logs: &output.Buffer{}, done: make(chan struct{})}
	cmd.Stdout, cmd.Stderr = p.logs, p.logs
	Expect(cmd.Start()).To(Succeed())
	go func() {
		p.err = cmd.Wait()
		close(p.done)
	}()
	DeferCleanup(func() {
		_ = p.stop()
		if CurrentSpecReport().Failed() {
			GinkgoWriter.Printf("sidecar logs:\n%s\n", p.logs.String())
		}
		Expect(p.logs.String()).NotTo(ContainSubstring("DATA RACE"), "the race detector fired (IMDS_SIDECAR_RACE=1)")
	})
	return p
}

// stop sends SIGTERM and waits for a graceful exit.
func (p *sidecarProc) stop() error {
	select {
	case <-p.done:
		return p.err
	default:
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(10 * time.Second):
		_ = p.cmd.Process.Kill()
		<-p.done
		return fmt.Errorf("sidecar ignored SIGTERM")
	}
	return p.err
}

// status returns a line of /proc/<pid>/status of the running sidecar.
func (p *sidecarProc) status(key string) string {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", p.cmd.Process.Pid))
	Expect(err).NotTo(HaveOccurred())
	for _, line := range strings.Split(string(b), "\n") {
		if k, v, ok := strings.Cut(line, ":"); ok && k == key {
			return strings.TrimSpace(v)
		}
	}
	return ""
}

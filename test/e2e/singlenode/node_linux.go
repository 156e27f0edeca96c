package singlenode

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"time"

	"github.com/go-logr/logr"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"

	"github.com/kubevirt-imds/kubevirt-imds/controllers"
	"github.com/kubevirt-imds/kubevirt-imds/test/controlplane"
	"github.com/kubevirt-imds/kubevirt-imds/test/kubelet"
	"github.com/kubevirt-imds/kubevirt-imds/test/podnet"
)

// SidecarImage is the image the manager injects. There are no images here:
// the kubelet stand-in runs the built binary for its command.
const SidecarImage = "kubevirt-imds:dev"

// managerStartTimeout bounds the manager's start: its cache sync and the
// webhook server. Seconds normally; generous for a busy two-core machine.
const managerStartTimeout = 2 * time.Minute

// Options configure a Node.
type Options struct {
	// WorkDir holds everything the node writes: the binary, kubeconfig,
	// kubelet's volumes and the processes' logs. It must exist.
	WorkDir string
	// Binaries are the built image binaries; empty builds them into
	// WorkDir.
	Binaries controlplane.Binaries
	// Log receives kubelet's and the harness's structured logs.
	Log logr.Logger
}

// Node is a single KubeVirt node on this machine: a real control plane with
// the KubeVirt CRDs and the webhook configurations from config/webhook, the
// real manager binary serving the controller and the webhooks, and a kubelet
// that materialises volumes and runs containers in network namespaces.
type Node struct {
	// Env is the control plane.
	Env *envtest.Environment
	// Config reaches the API server as an administrator.
	Config *rest.Config
	// Client reads and writes uncached, as kubectl does.
	Client client.Client
	// Clientset is Client's typed counterpart (TokenReview, Pod status).
	Clientset kubernetes.Interface
	// Kubeconfig is the path of a kubeconfig for Config's user.
	Kubeconfig string
	// Binaries are the executables the manager, the node agent and the
	// sidecars run.
	Binaries controlplane.Binaries
	// Kubelet materialises the Pods' volumes and runs their containers.
	Kubelet *kubelet.Kubelet
	// WorkDir is Options.WorkDir.
	WorkDir string

	log     logr.Logger
	manager *Process
	agent   *Process
}

// Start builds what is needed and starts the node. Everything stops in tb's
// Cleanup, in reverse order.
func Start(tb podnet.TB, o Options) *Node {
	tb.Helper()
	n := &Node{WorkDir: o.WorkDir, Binaries: o.Binaries, log: o.Log}
	if n.Binaries == (controlplane.Binaries{}) {
		var err error
		if n.Binaries, err = controlplane.BuildBinaries(context.Background(), o.WorkDir); err != nil {
			tb.Fatalf("%v", err)
		}
	}
	webhookDir := filepath.Join(o.WorkDir, "webhook-config")
	if err := renderKustomization(filepath.Join(controlplane.RepoRoot(), "config", "webhook"), filepath.Join(webhookDir, "webhooks.yaml")); err != nil {
		tb.Fatalf("%v", err)
	}
	env, cfg, err := controlplane.Start(controlplane.Options{
		// A host name: the certificates envtest makes name localhost.
		Webhooks: envtest.WebhookInstallOptions{Paths: []string{webhookDir}, LocalServingHostExternalName: "localhost"},
	})
	if err != nil {
		tb.Fatalf("starting the control plane: %v", err)
	}
	n.Env, n.Config = env, cfg
	tb.Cleanup(func() {
		if err := env.Stop(); err != nil {
			tb.Logf("stopping the control plane: %v", err)
		}
	})
	scheme, err := controllers.NewScheme()
	if err != nil {
		tb.Fatalf("%v", err)
	}
	if n.Client, err = client.New(cfg, client.Options{Scheme: scheme}); err != nil {
		tb.Fatalf("%v", err)
	}
	if n.Clientset, err = kubernetes.NewForConfig(cfg); err != nil {
		tb.Fatalf("%v", err)
	}
	user, err := env.AddUser(envtest.User{Name: "admin", Groups: []string{"system:masters"}}, nil)
	if err != nil {
		tb.Fatalf("adding the admin user: %v", err)
	}
	kubeconfig, err := user.KubeConfig()
	if err != nil {
		tb.Fatalf("%v", err)
	}
	n.Kubeconfig = filepath.Join(o.WorkDir, "kubeconfig")
	if err := os.WriteFile(n.Kubeconfig, kubeconfig, 0o600); err != nil {
		tb.Fatalf("%v", err)
	}

	kubeletRoot := filepath.Join(o.WorkDir, "kubelet")
	// Containers run as other users and walk the volumes from /.
	if err := os.MkdirAll(kubeletRoot, 0o755); err != nil {
		tb.Fatalf("%v", err)
	}
	if err := os.Chmod(o.WorkDir, 0o755); err != nil {
		tb.Fatalf("%v", err)
	}
	n.Kubelet = kubelet.New(kubelet.Config{
		Client: n.Clientset, Root: kubeletRoot, Log: o.Log.WithName("kubelet"),
		Executables: map[string]string{
			"/" + controlplane.OperatorBinary: n.Binaries.Operator,
			"/" + controlplane.SidecarBinary:  n.Binaries.Sidecar,
		},
	})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- n.Kubelet.Run(ctx) }()
	tb.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			tb.Logf("kubelet: %v", err)
		}
	})
	// The manager and the node agent stop with the node, however often
	// they were restarted.
	tb.Cleanup(func() { n.stopManager(tb) })
	tb.Cleanup(func() { n.stopNodeAgent(tb) })
	n.StartNodeAgent(tb)
	n.StartManager(tb)
	return n
}

// NodeAgentLog is the path of the node agent's log.
func (n *Node) NodeAgentLog() string { return filepath.Join(n.WorkDir, "node-agent.log") }

// StartNodeAgent runs `kubevirt-imds node-agent` as its DaemonSet would on
// this node, limited to this node's binary so that sidecars of other test
// nodes on the machine are left to their own agents.
func (n *Node) StartNodeAgent(tb podnet.TB) {
	tb.Helper()
	if n.agent != nil {
		tb.Fatalf("the node agent is already running")
	}
	p, err := StartProcess(n.NodeAgentLog(), n.Binaries.Operator, []string{
		"node-agent", "--sidecar-executable=" + n.Binaries.Sidecar,
	})
	if err != nil {
		tb.Fatalf("%v", err)
	}
	n.agent = p
}

// StopNodeAgent stops the node agent, as when its DaemonSet Pod is deleted.
func (n *Node) StopNodeAgent(tb podnet.TB) {
	tb.Helper()
	n.stopNodeAgent(tb)
}

func (n *Node) stopNodeAgent(tb podnet.TB) {
	if n.agent == nil {
		return
	}
	if err := n.agent.Stop(); err != nil {
		tb.Logf("node agent: %v", err)
	}
	n.agent = nil
}

// Kubectl is the control plane's kubectl, built with the envtest assets.
func Kubectl() string {
	return filepath.Join(os.Getenv("KUBEBUILDER_ASSETS"), "kubectl")
}

// renderKustomization writes `kubectl kustomize dir` to file.
func renderKustomization(dir, file string) error {
	out, err := exec.Command(Kubectl(), "kustomize", dir).Output()
	if err != nil {
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			return fmt.Errorf("kubectl kustomize %s: %w: %s", dir, err, ee.Stderr)
		}
		return fmt.Errorf("kubectl kustomize %s: %w", dir, err)
	}
	if err := os.MkdirAll(filepath.Dir(file), 0o755); err != nil {
		return err
	}
	return os.WriteFile(file, out, 0o644)
}

// ManagerLog is the path of the manager's log.
func (n *Node) ManagerLog() string { return filepath.Join(n.WorkDir, "manager.log") }

// StartManager runs `kubevirt-imds manager` as a Deployment would, with the
// webhooks on envtest's port and certificates, and waits until it is ready.
// Its log goes to ManagerLog (appended across restarts). It runs until
// StopManager or the end of the node.
func (n *Node) StartManager(tb podnet.TB) {
	tb.Helper()
	if n.manager != nil {
		tb.Fatalf("the manager is already running")
	}
	probe, err := freeLoopbackPort()
	if err != nil {
		tb.Fatalf("%v", err)
	}
	w := &n.Env.WebhookInstallOptions
	p, err := StartProcess(n.ManagerLog(), n.Binaries.Operator, []string{
		"manager",
		"--webhook-host=" + w.LocalServingHost,
		"--webhook-port=" + strconv.Itoa(w.LocalServingPort),
		"--webhook-cert-dir=" + w.LocalServingCertDir,
		"--health-probe-bind-address=127.0.0.1:" + strconv.Itoa(probe),
		"--metrics-bind-address=0",
		"--sidecar-image=" + SidecarImage,
		"--zap-devel=false",
	}, "KUBECONFIG="+n.Kubeconfig)
	if err != nil {
		tb.Fatalf("%v", err)
	}
	n.manager = p
	readyz := "http://127.0.0.1:" + strconv.Itoa(probe) + "/readyz"
	ctx, cancel := context.WithTimeout(context.Background(), managerStartTimeout)
	defer cancel()
	err = p.WaitReady(ctx, 100*time.Millisecond, func(ctx context.Context) bool {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, readyz, nil)
		if err != nil {
			return false
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	})
	if err != nil {
		tb.Fatalf("waiting for the manager to be ready (log: %s): %v", n.ManagerLog(), err)
	}
}

// ManagerRunning says whether the manager runs.
func (n *Node) ManagerRunning() bool { return n.manager != nil }

// StopManager stops the manager, as when its Deployment is scaled to zero.
func (n *Node) StopManager(tb podnet.TB) {
	tb.Helper()
	n.stopManager(tb)
}

func (n *Node) stopManager(tb podnet.TB) {
	if n.manager == nil {
		return
	}
	if err := n.manager.Stop(); err != nil {
		tb.Logf("manager: %v", err)
	}
	n.manager = nil
}

// NewNamespace creates a namespace and its default ServiceAccount: there is
// no controller-manager to create it, and launcher Pods run as it.
func (n *Node) NewNamespace(tb podnet.TB, ctx context.Context, name string) {
	tb.Helper()
	if err := n.Client.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name}}); err != nil && !apierrors.IsAlreadyExists(err) {
		tb.Fatalf("creating namespace %s: %v", name, err)
	}
	sa := &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Namespace: name, Name: "default"}}
	if err := n.Client.Create(ctx, sa); err != nil && !apierrors.IsAlreadyExists(err) {
		tb.Fatalf("creating ServiceAccount %s/default: %v", name, err)
	}
}

// freeLoopbackPort returns a TCP port free on 127.0.0.1 right now.
func freeLoopbackPort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

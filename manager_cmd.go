package main

import (
	"crypto/tls"
	"errors"
	"flag"
	"fmt"
	"net/http"
	"os"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/healthz"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"
	"sigs.k8s.io/controller-runtime/pkg/metrics/filters"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"
	"sigs.k8s.io/controller-runtime/pkg/webhook"

	"github.com/kubevirt-imds/kubevirt-imds/controllers"
	"github.com/kubevirt-imds/kubevirt-imds/webhooks"
)

// sidecarImageEnv names the environment variable that defaults
// --sidecar-image: the deployment sets it to the manager's own image, which a
// process cannot otherwise learn.
const sidecarImageEnv = "KUBEVIRT_IMDS_IMAGE"

// leaderElectionID is the Lease the manager replicas compete for.
const leaderElectionID = "kubevirt-imds.imds.kubevirt.io"

// runManager wires the operator: the controller and the webhooks in a
// controller-runtime manager.
func runManager(args []string) error {
	fs := flag.NewFlagSet("manager", flag.ExitOnError)
	var (
		metricsAddr, probeAddr string
		leaderElect, secure    bool
		enableHTTP2            bool
		qps                    float64
		burst                  int
		enableWebhooks         bool
		webhookHost            string
		webhookPort            int
		webhookCertDir         string
		certs                  certFlags
		sidecarImage           string
		sidecarPullPolicy      string
		sidecarNetworkSetup    string
		podSecurityDefault     string
		sidecarCPU, sidecarMem quantityFlag
		sidecarCPUReq          quantityFlag
		sidecarMemReq          quantityFlag
		identityNamespace      string
		identityRotation       time.Duration
		identityOverlap        time.Duration
	)
	defaults := webhooks.DefaultSidecarResources()
	sidecarCPU.q, sidecarMem.q = defaults.Limits[corev1.ResourceCPU], defaults.Limits[corev1.ResourceMemory]
	sidecarCPUReq.q, sidecarMemReq.q = defaults.Requests[corev1.ResourceCPU], defaults.Requests[corev1.ResourceMemory]
	fs.StringVar(&metricsAddr, "metrics-bind-address", "0", "address of the metrics endpoint (:8443 for HTTPS, :8080 for HTTP, 0 disables it)")
	fs.StringVar(&probeAddr, "health-probe-bind-address", ":8081", "address of the health and readiness probes")
	fs.BoolVar(&leaderElect, "leader-elect", false, "elect a leader so that only one replica reconciles")
	fs.BoolVar(&secure, "metrics-secure", true, "serve metrics over HTTPS, authenticated and authorised by the API server")
	fs.BoolVar(&enableHTTP2, "enable-http2", false, "allow HTTP/2 on the metrics and webhook servers (off: CVE-2023-44487, CVE-2023-39325)")
	fs.Float64Var(&qps, "kube-api-qps", controllers.DefaultKubeAPIQPS, "sustained requests per second to the API server")
	fs.IntVar(&burst, "kube-api-burst", controllers.DefaultKubeAPIBurst, "burst of requests to the API server")
	fs.BoolVar(&enableWebhooks, "enable-webhooks", true, "serve the Pod, VMI and MetadataService admission webhooks")
	fs.StringVar(&webhookHost, "webhook-host", "", "address the webhook server listens on (default: every address)")
	fs.IntVar(&webhookPort, "webhook-port", 9443, "port of the webhook server")
	fs.StringVar(&webhookCertDir, "webhook-cert-dir", defaultWebhookCertDir, "directory with tls.crt and tls.key for the webhook server")
	certs.addFlags(fs)
	fs.StringVar(&sidecarImage, "sidecar-image", os.Getenv(sidecarImageEnv), "image of the injected metadata sidecar (default: $"+sidecarImageEnv+", the manager's own image)")
	fs.StringVar(&sidecarPullPolicy, "sidecar-image-pull-policy", "", "imagePullPolicy of the sidecar (Always, IfNotPresent, Never; default: the API server's)")
	fs.Var(&sidecarCPU, "sidecar-cpu", "CPU limit of the sidecar (its request too in Guaranteed launcher Pods)")
	fs.Var(&sidecarMem, "sidecar-memory", "memory limit of the sidecar (its request too in Guaranteed launcher Pods)")
	fs.Var(&sidecarCPUReq, "sidecar-cpu-request", "CPU request of the sidecar in launcher Pods that are not Guaranteed")
	fs.Var(&sidecarMemReq, "sidecar-memory-request", "memory request of the sidecar in launcher Pods that are not Guaranteed")
	fs.StringVar(&sidecarNetworkSetup, "sidecar-network-setup", string(webhooks.NetworkSetupNode),
		"who plumbs 169.254.169.254 into a launcher Pod: node (the node agent DaemonSet; the sidecar is unprivileged and passes every Pod Security level) or sidecar (the sidecar itself, as root with NET_ADMIN/NET_RAW; injected only where the Pod Security level is privileged)")
	fs.StringVar(&podSecurityDefault, "pod-security-default-level", webhooks.PodSecurityPrivileged,
		"the Pod Security level the API server enforces in namespaces without the "+webhooks.PodSecurityEnforceLabel+" label (its AdmissionConfiguration's defaults.enforce); consulted with --sidecar-network-setup=sidecar")
	fs.StringVar(&identityNamespace, "identity-namespace", operatorNamespace(),
		"namespace of the Secret keeping the key that signs EC2 instance identity documents, and of the ConfigMap publishing its certificates (default: $POD_NAMESPACE, else the ServiceAccount's namespace; empty serves no identity documents)")
	fs.DurationVar(&identityRotation, "identity-key-rotation", controllers.DefaultIdentityKeyRotation, "how long an identity signing key signs before a new one replaces it")
	fs.DurationVar(&identityOverlap, "identity-key-overlap", controllers.DefaultIdentityKeyOverlap, "how long a replaced identity key's certificate stays published and valid")
	zapOpts := zap.Options{Development: false}
	zapOpts.BindFlags(fs)
	if err := fs.Parse(args); err != nil {
		return err
	}
	ctrl.SetLogger(zap.New(zap.UseFlagOptions(&zapOpts)))
	if err := certs.validate(); err != nil {
		return err
	}
	if enableWebhooks && sidecarImage == "" {
		return fmt.Errorf("--sidecar-image (or $%s) is required with the webhooks enabled", sidecarImageEnv)
	}
	switch corev1.PullPolicy(sidecarPullPolicy) {
	case "", corev1.PullAlways, corev1.PullIfNotPresent, corev1.PullNever:
	default:
		return fmt.Errorf("--sidecar-image-pull-policy %q: want Always, IfNotPresent or Never", sidecarPullPolicy)
	}
	switch webhooks.NetworkSetup(sidecarNetworkSetup) {
	case webhooks.NetworkSetupNode, webhooks.NetworkSetupSidecar:
	default:
		return fmt.Errorf("--sidecar-network-setup %q: want node or sidecar", sidecarNetworkSetup)
	}
	switch podSecurityDefault {
	case webhooks.PodSecurityPrivileged, "baseline", "restricted":
	default:
		return fmt.Errorf("--pod-security-default-level %q: want privileged, baseline or restricted", podSecurityDefault)
	}
	if sidecarCPUReq.q.Cmp(sidecarCPU.q) > 0 || sidecarMemReq.q.Cmp(sidecarMem.q) > 0 {
		return errors.New("the sidecar's requests (--sidecar-cpu-request, --sidecar-memory-request) must not exceed its limits (--sidecar-cpu, --sidecar-memory)")
	}
	log := ctrl.Log.WithName("setup")

	scheme, err := controllers.NewScheme()
	if err != nil {
		return err
	}
	var tlsOpts []func(*tls.Config)
	if !enableHTTP2 {
		tlsOpts = append(tlsOpts, func(c *tls.Config) { c.NextProtos = []string{"http/1.1"} })
	}
	metricsOpts := metricsserver.Options{BindAddress: metricsAddr, SecureServing: secure, TLSOpts: tlsOpts}
	if secure {
		metricsOpts.FilterProvider = filters.WithAuthenticationAndAuthorization
	}
	restConfig, err := ctrl.GetConfig()
	if err != nil {
		return fmt.Errorf("loading the kubeconfig: %w", err)
	}
	restConfig.QPS, restConfig.Burst = float32(qps), burst
	mgr, err := ctrl.NewManager(restConfig, ctrl.Options{
		Scheme:        scheme,
		Metrics:       metricsOpts,
		WebhookServer: webhook.NewServer(webhook.Options{Host: webhookHost, Port: webhookPort, CertDir: webhookCertDir, TLSOpts: tlsOpts}),
		// Only virt-launcher Pods and the operator's own Secrets and
		// ConfigMaps are cached, not every one of the cluster.
		Cache:                         controllers.CacheOptions(),
		HealthProbeBindAddress:        probeAddr,
		LeaderElection:                leaderElect,
		LeaderElectionID:              leaderElectionID,
		LeaderElectionReleaseOnCancel: true,
	})
	if err != nil {
		return fmt.Errorf("creating manager: %w", err)
	}
	reconciler := &controllers.MetadataServiceReconciler{
		Client:                  mgr.GetClient(),
		Recorder:                mgr.GetEventRecorder("kubevirt-imds"),
		PrivilegedSidecar:       webhooks.NetworkSetup(sidecarNetworkSetup) == webhooks.NetworkSetupSidecar,
		PodSecurityDefaultLevel: podSecurityDefault,
	}
	if identityNamespace != "" {
		reconciler.Identity = &controllers.IdentityKeys{Client: mgr.GetClient(), Live: mgr.GetAPIReader(), Namespace: identityNamespace,
			Rotation: identityRotation, Overlap: identityOverlap}
	} else {
		log.Info("no --identity-namespace: EC2 instance identity documents are not signed")
	}
	if err := reconciler.SetupWithManager(mgr); err != nil {
		return fmt.Errorf("setting up the MetadataService controller: %w", err)
	}
	if err := mgr.AddHealthzCheck("healthz", healthz.Ping); err != nil {
		return err
	}
	readyz := healthz.Ping
	if enableWebhooks {
		setup := func() error {
			return webhooks.SetupWithManager(mgr, webhooks.Options{Sidecar: webhooks.SidecarOptions{
				Image: sidecarImage, ImagePullPolicy: corev1.PullPolicy(sidecarPullPolicy),
				Resources: corev1.ResourceRequirements{
					Requests: corev1.ResourceList{corev1.ResourceCPU: sidecarCPUReq.q, corev1.ResourceMemory: sidecarMemReq.q},
					Limits:   corev1.ResourceList{corev1.ResourceCPU: sidecarCPU.q, corev1.ResourceMemory: sidecarMem.q},
				},
				NetworkSetup:            webhooks.NetworkSetup(sidecarNetworkSetup),
				PodSecurityDefaultLevel: podSecurityDefault,
			},
				// The controller's own reconciler, so that it leaves the
				// payloads the webhook writes to it.
				Payload: reconciler,
			})
		}
		webhooksReady, err := startWebhooks(mgr, certs, webhookCertDir, setup)
		if err != nil {
			return err
		}
		// Admission answers from the cache: not ready before it has synced.
		cacheSynced := webhooks.CacheSynced(mgr)
		readyz = func(req *http.Request) error {
			if err := webhooksReady(req); err != nil {
				return err
			}
			return cacheSynced(req)
		}
	}
	if err := mgr.AddReadyzCheck("readyz", readyz); err != nil {
		return err
	}
	log.Info("starting manager")
	return mgr.Start(ctrl.SetupSignalHandler())
}

// quantityFlag is a resource quantity flag ("100m", "64Mi").
type quantityFlag struct{ q resource.Quantity }

func (f *quantityFlag) String() string { return f.q.String() }

func (f *quantityFlag) Set(v string) error {
	q, err := resource.ParseQuantity(v)
	if err != nil {
		return err
	}
	if q.Sign() <= 0 {
		return errors.New("must be positive")
	}
	f.q = q
	return nil
}

// serviceAccountNamespaceFile holds the namespace of a Pod's ServiceAccount.
const serviceAccountNamespaceFile = "/var/run/secrets/kubernetes.io/serviceaccount/namespace"

// operatorNamespace is $POD_NAMESPACE, else the namespace of the Pod's
// ServiceAccount, else "" (out of cluster).
func operatorNamespace() string {
	if ns := os.Getenv("POD_NAMESPACE"); ns != "" {
		return ns
	}
	if b, err := os.ReadFile(serviceAccountNamespaceFile); err == nil {
		return strings.TrimSpace(string(b))
	}
	return ""
}

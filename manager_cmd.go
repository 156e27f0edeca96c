package main

import (
	"crypto/tls"
	"flag"
	"fmt"

	"k8s.io/apimachinery/pkg/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	kubevirtv1 "kubevirt.io/api/core/v1"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/healthz"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"
	"sigs.k8s.io/controller-runtime/pkg/metrics/filters"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"
	"sigs.k8s.io/controller-runtime/pkg/webhook"

	imdsv1alpha1 "github.com/kubevirt-imds/kubevirt-imds/api/v1alpha1"
	"github.com/kubevirt-imds/kubevirt-imds/controllers"
)

// leaderElectionID is the Lease the manager replicas compete for.
const leaderElectionID = "kubevirt-imds.imds.kubevirt.io"

// newScheme registers the API types the manager uses.
func newScheme() (*runtime.Scheme, error) {
	s := runtime.NewScheme()
	for _, add := range []func(*runtime.Scheme) error{clientgoscheme.AddToScheme, imdsv1alpha1.AddToScheme, kubevirtv1.AddToScheme} {
		if err := add(s); err != nil {
			return nil, err
		}
	}
	return s, nil
}

// runManager wires the operator: controllers (and, later, webhooks) in a
// controller-runtime manager.
func runManager(args []string) error {
	fs := flag.NewFlagSet("manager", flag.ExitOnError)
	var (
		metricsAddr, probeAddr string
		leaderElect, secure    bool
		enableHTTP2            bool
		qps                    float64
		burst                  int
	)
	fs.StringVar(&metricsAddr, "metrics-bind-address", "0", "address of the metrics endpoint (:8443 for HTTPS, :8080 for HTTP, 0 disables it)")
	fs.StringVar(&probeAddr, "health-probe-bind-address", ":8081", "address of the health and readiness probes")
	fs.BoolVar(&leaderElect, "leader-elect", false, "elect a leader so that only one replica reconciles")
	fs.BoolVar(&secure, "metrics-secure", true, "serve metrics over HTTPS, authenticated and authorised by the API server")
	fs.BoolVar(&enableHTTP2, "enable-http2", false, "allow HTTP/2 on the metrics and webhook servers (off: CVE-2023-44487, CVE-2023-39325)")
	fs.Float64Var(&qps, "kube-api-qps", 50, "sustained requests per second to the API server")
	fs.IntVar(&burst, "kube-api-burst", 100, "burst of requests to the API server")
	zapOpts := zap.Options{Development: false}
	zapOpts.BindFlags(fs)
	if err := fs.Parse(args); err != nil {
		return err
	}
	ctrl.SetLogger(zap.New(zap.UseFlagOptions(&zapOpts)))
	log := ctrl.Log.WithName("setup")

	scheme, err := newScheme()
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
		Scheme:                        scheme,
		Metrics:                       metricsOpts,
		WebhookServer:                 webhook.NewServer(webhook.Options{TLSOpts: tlsOpts}),
		HealthProbeBindAddress:        probeAddr,
		LeaderElection:                leaderElect,
		LeaderElectionID:              leaderElectionID,
		LeaderElectionReleaseOnCancel: true,
	})
	if err != nil {
		return fmt.Errorf("creating manager: %w", err)
	}
	if err := (&controllers.MetadataServiceReconciler{
		Client:   mgr.GetClient(),
		Recorder: mgr.GetEventRecorder("kubevirt-imds"),
	}).SetupWithManager(mgr); err != nil {
		return fmt.Errorf("setting up the MetadataService controller: %w", err)
	}
	if err := mgr.AddHealthzCheck("healthz", healthz.Ping); err != nil {
		return err
	}
	if err := mgr.AddReadyzCheck("readyz", healthz.Ping); err != nil {
		return err
	}
	log.Info("starting manager")
	return mgr.Start(ctrl.SetupSignalHandler())
}

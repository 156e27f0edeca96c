package main

import (
	"errors"
	"flag"
	"fmt"
	"net/http"
	"os"

	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/healthz"

	"github.com/kubevirt-imds/kubevirt-imds/webhooks"
)

// defaultWebhookCertDir is controller-runtime's default, and where the
// manifests mount the certificate Secret.
const defaultWebhookCertDir = "/tmp/k8s-webhook-server/serving-certs"

// Webhook certificate modes.
const (
	// certModeExternal reads the certificate another party (cert-manager)
	// keeps in --webhook-cert-dir, and its CA in the webhook configurations.
	certModeExternal = "external"
	// certModeBuiltin issues and rotates them in the manager.
	certModeBuiltin = "builtin"
)

// certFlags configure the webhook certificates.
type certFlags struct {
	mode, namespace, secret, service, mutating, validating string
}

func (c *certFlags) addFlags(fs *flag.FlagSet) {
	fs.StringVar(&c.mode, "webhook-cert-mode", certModeExternal, "webhook certificates: external (cert-manager or another party keeps them in --webhook-cert-dir) or builtin (the manager issues and rotates them)")
	fs.StringVar(&c.namespace, "webhook-cert-namespace", os.Getenv("POD_NAMESPACE"), "builtin mode: the operator's namespace, holding the Secret and the Service (default: $POD_NAMESPACE)")
	fs.StringVar(&c.secret, "webhook-cert-secret", "webhook-server-cert", "builtin mode: the Secret that keeps the certificates; the manager writes the serving pair from it into --webhook-cert-dir")
	fs.StringVar(&c.service, "webhook-service", "kubevirt-imds-webhook-service", "builtin mode: the webhook Service the certificate is issued for")
	fs.StringVar(&c.mutating, "mutating-webhook-configuration", "kubevirt-imds-mutating-webhook-configuration", "builtin mode: the MutatingWebhookConfiguration whose CA is kept current")
	fs.StringVar(&c.validating, "validating-webhook-configuration", "kubevirt-imds-validating-webhook-configuration", "builtin mode: the ValidatingWebhookConfiguration whose CA is kept current")
}

func (c *certFlags) validate() error {
	switch c.mode {
	case certModeExternal:
		return nil
	case certModeBuiltin:
		if c.namespace == "" {
			return errors.New("--webhook-cert-mode=builtin needs --webhook-cert-namespace (or $POD_NAMESPACE)")
		}
		return nil
	}
	return fmt.Errorf("--webhook-cert-mode %q: want %s or %s", c.mode, certModeExternal, certModeBuiltin)
}

// startWebhooks registers the webhooks through setup, at once with external
// certificates, or once the built-in rotator has issued them (the webhook
// server cannot start without). It returns the readiness check: ready once
// the webhook server serves, so that a rolling update never routes
// admissions to a replica that cannot answer them.
func startWebhooks(mgr ctrl.Manager, c certFlags, certDir string, setup func() error) (healthz.Checker, error) {
	if c.mode == certModeExternal {
		if err := setup(); err != nil {
			return nil, fmt.Errorf("setting up the webhooks: %w", err)
		}
		return mgr.GetWebhookServer().StartedChecker(), nil
	}
	ready, err := webhooks.AddCertRotator(mgr, webhooks.CertOptions{
		Namespace: c.namespace, SecretName: c.secret, ServiceName: c.service, CertDir: certDir,
		MutatingConfiguration: c.mutating, ValidatingConfiguration: c.validating,
	})
	if err != nil {
		return nil, err
	}
	registered := make(chan struct{})
	go func() {
		<-ready
		if err := setup(); err != nil {
			// Without webhooks the operator still reconciles; readiness
			// stays false so that the failure shows.
			ctrl.Log.WithName("setup").Error(err, "setting up the webhooks")
			return
		}
		close(registered)
	}()
	return func(req *http.Request) error {
		select {
		case <-registered:
			return mgr.GetWebhookServer().StartedChecker()(req)
		default:
			return errors.New("webhook certificates are not ready yet")
		}
	}, nil
}

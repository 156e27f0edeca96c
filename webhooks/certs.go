package webhooks

import (
	"fmt"

	"github.com/open-policy-agent/cert-controller/pkg/rotator"
	"k8s.io/apimachinery/pkg/types"
	ctrl "sigs.k8s.io/controller-runtime"
)

// The built-in certificate mode keeps the webhook server's CA and
// certificate in a Secret and the CA in the webhook configurations, for
// clusters without cert-manager. Its rights are generated into their own
// role (config/overlays/builtin-certs/rbac, `make manifests`) so that an
// installation with cert-manager does not grant them; the webhooks' own
// reads (live, from the API server) use the controller's rights.
// cert-controller watches the configurations and the namespace's Secrets
// (list and watch cannot be narrowed by name) and writes with update only,
// and only its own objects.
// +kubebuilder:rbac:groups=admissionregistration.k8s.io,resources=mutatingwebhookconfigurations;validatingwebhookconfigurations,verbs=get;list;watch
// +kubebuilder:rbac:groups=admissionregistration.k8s.io,resources=mutatingwebhookconfigurations,resourceNames=kubevirt-imds-mutating-webhook-configuration,verbs=update
// +kubebuilder:rbac:groups=admissionregistration.k8s.io,resources=validatingwebhookconfigurations,resourceNames=kubevirt-imds-validating-webhook-configuration,verbs=update
// +kubebuilder:rbac:groups="",namespace=system,resources=secrets,verbs=get;list;watch
// +kubebuilder:rbac:groups="",namespace=system,resources=secrets,resourceNames=webhook-server-cert,verbs=update

// CertOptions configure the built-in certificate mode.
type CertOptions struct {
	// Namespace holds the Secret and the webhook Service: the operator's.
	Namespace string
	// SecretName is the Secret the certificates are kept in. It must exist
	// (the manifests create it empty) and be mounted at CertDir.
	SecretName string
	// ServiceName is the webhook Service the certificate is issued for.
	ServiceName string
	// ExtraDNSNames are further names the certificate is valid for.
	ExtraDNSNames []string
	// CertDir is where the kubelet projects the Secret, and where the
	// webhook server reads tls.crt and tls.key.
	CertDir string
	// MutatingConfiguration and ValidatingConfiguration are the webhook
	// configurations whose caBundle is kept current.
	MutatingConfiguration, ValidatingConfiguration string
}

// AddCertRotator adds a certificate rotator to mgr. The returned channel is
// closed once the certificates are in CertDir and the CA is in both webhook
// configurations: register the webhooks (SetupWithManager) only then, since
// the webhook server cannot start without its certificate.
func AddCertRotator(mgr ctrl.Manager, o CertOptions) (<-chan struct{}, error) {
	ready := make(chan struct{})
	dns := fmt.Sprintf("%s.%s.svc", o.ServiceName, o.Namespace)
	err := rotator.AddRotator(mgr, &rotator.CertRotator{
		SecretKey:      types.NamespacedName{Namespace: o.Namespace, Name: o.SecretName},
		CertDir:        o.CertDir,
		CAName:         "kubevirt-imds-webhook-ca",
		CAOrganization: "kubevirt-imds",
		DNSName:        dns,
		ExtraDNSNames:  append([]string{dns + ".cluster.local"}, o.ExtraDNSNames...),
		IsReady:        ready,
		Webhooks: []rotator.WebhookInfo{
			{Name: o.MutatingConfiguration, Type: rotator.Mutating},
			{Name: o.ValidatingConfiguration, Type: rotator.Validating},
		},
		// Every replica serves the webhooks, so every replica keeps the
		// certificate current, not only the leader.
		RequireLeaderElection: false,
		ControllerName:        "webhook-cert-rotator",
	})
	if err != nil {
		return nil, fmt.Errorf("adding the webhook certificate rotator: %w", err)
	}
	return ready, nil
}

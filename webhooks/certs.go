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
	// (the manifests create it empty).
	SecretName string
	// ServiceName is the webhook Service the certificate is issued for.
	ServiceName string
	// ExtraDNSNames are further names the certificate is valid for.
	ExtraDNSNames []string
	// CertDir is where the webhook server reads tls.crt and tls.key. The
	// manager writes them there from the Secret (certFileWriter says why),
	// so it is a directory of its own (the manifests: an emptyDir). A
	// read-only CertDir is left to the kubelet, for a Secret mounted there.
	CertDir string
	// MutatingConfiguration and ValidatingConfiguration are the webhook
	// configurations whose caBundle is kept current.
	MutatingConfiguration, ValidatingConfiguration string
}

// AddCertRotator adds a certificate rotator to mgr, and the writer of its
// certificate into CertDir. The returned channel is closed once the
// certificates are in CertDir and the CA is in both webhook configurations:
// register the webhooks (SetupWithManager) only then, since the webhook
// server cannot start without its certificate.
func AddCertRotator(mgr ctrl.Manager, o CertOptions) (<-chan struct{}, error) {
	ready := make(chan struct{})
	dns := fmt.Sprintf("%s.%s.svc", o.ServiceName, o.Namespace)
	secret := types.NamespacedName{Namespace: o.Namespace, Name: o.SecretName}
	err := rotator.AddRotator(mgr, &rotator.CertRotator{
		SecretKey:      secret,
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
	files, err := newCertFileWriter(mgr, secret, o.CertDir)
	if err != nil {
		return nil, err
	}
	if err := mgr.Add(files); err != nil {
		return nil, fmt.Errorf("adding the webhook certificate writer: %w", err)
	}
	return ready, nil
}

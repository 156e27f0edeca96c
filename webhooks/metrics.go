package webhooks

import (
	"context"

	"github.com/prometheus/client_golang/prometheus"
	"sigs.k8s.io/controller-runtime/pkg/metrics"

	"github.com/kubevirt-imds/kubevirt-imds/controllers"
)

// Outcomes of a virt-launcher Pod's admission, the outcome label of
// kubevirt_imds_manager_sidecar_injections_total.
const (
	// OutcomeInjected: the Pod got the sidecar.
	OutcomeInjected = "injected"
	// OutcomeAlreadyInjected: the Pod had it already (a reinvocation).
	OutcomeAlreadyInjected = "already_injected"
	// OutcomeNotSelected: no MetadataService serves the Pod's VMI.
	OutcomeNotSelected = "not_selected"
	// OutcomeUnservable: the serving MetadataService cannot reach the
	// guest (status.unservableInstances says why).
	OutcomeUnservable = "unservable"
	// OutcomePodSecurityForbidden: the namespace's Pod Security level
	// rejects the privileged sidecar of --sidecar-network-setup=sidecar.
	OutcomePodSecurityForbidden = "pod_security_forbidden"
	// OutcomePayloadNotReady: the payload Secret was not there in time; the
	// VM starts without the sidecar and is reported SidecarMissing.
	OutcomePayloadNotReady = "payload_not_ready"
	// OutcomeError: a read failed; the Pod is admitted without the sidecar.
	OutcomeError = "error"
)

var sidecarInjections = prometheus.NewCounterVec(prometheus.CounterOpts{
	Name: controllers.MetricsPrefix + "sidecar_injections_total",
	Help: "virt-launcher Pod admissions by the Pod webhook, by outcome: injected, already_injected, not_selected, unservable, pod_security_forbidden, payload_not_ready, error. Every outcome but the first two admits the Pod without the sidecar.",
}, []string{"outcome"})

func init() {
	metrics.Registry.MustRegister(Collectors()...)
	// Every outcome is exported from the start, so that rates and alerts
	// over them have a series before the first such admission.
	for _, o := range []string{OutcomeInjected, OutcomeAlreadyInjected, OutcomeNotSelected, OutcomeUnservable,
		OutcomePodSecurityForbidden, OutcomePayloadNotReady, OutcomeError} {
		sidecarInjections.WithLabelValues(o)
	}
}

// outcomeKey carries an admission's *string outcome through Default.
type outcomeKey struct{}

// withOutcome returns a context in which Default notes its outcome into out.
func withOutcome(ctx context.Context, out *string) context.Context {
	return context.WithValue(ctx, outcomeKey{}, out)
}

// noteOutcome records how Default ended, for Handle to count.
func noteOutcome(ctx context.Context, outcome string) {
	if out, ok := ctx.Value(outcomeKey{}).(*string); ok {
		*out = outcome
	}
}

// Collectors are the webhooks' collectors, which init registers with
// controller-runtime's registry; tests read their names from them.
func Collectors() []prometheus.Collector {
	return []prometheus.Collector{sidecarInjections}
}

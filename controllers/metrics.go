package controllers

import (
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"sigs.k8s.io/controller-runtime/pkg/metrics"

	kubevirtv1 "kubevirt.io/api/core/v1"

	"github.com/kubevirt-imds/kubevirt-imds/api/payload"
	imdsv1alpha1 "github.com/kubevirt-imds/kubevirt-imds/api/v1alpha1"
)

// MetricsPrefix starts the name of every series the manager adds to
// controller-runtime's registry (served on the manager's metrics endpoint
// beside controller_runtime_* and workqueue_*). The sidecar's series start
// with kubevirt_imds_sidecar_.
const MetricsPrefix = "kubevirt_imds_manager_"

// Skip reasons of kubevirt_imds_manager_skipped_instances besides the
// unservable reasons of api/v1alpha1 (status.unservableInstances): a VMI
// another service wins, and a served VMI whose launcher Pod runs without the
// sidecar.
const (
	SkipConflict       = imdsv1alpha1.ReasonConflict
	SkipSidecarMissing = imdsv1alpha1.ReasonSidecarMissing
)

// Results of kubevirt_imds_manager_payload_write_duration_seconds.
const (
	WriteCreated = "created"
	WriteUpdated = "updated"
	WriteCurrent = "current"
	WriteFailed  = "failed"
)

var (
	selectedInstances = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: MetricsPrefix + "selected_instances",
		Help: "VMIs a MetadataService selects and wins (status.selectedInstances), by namespace and metadataservice.",
	}, []string{"namespace", "metadataservice"})
	servedInstances = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: MetricsPrefix + "served_instances",
		Help: "Selected VMIs that are served: servable, and no active launcher Pod without the sidecar.",
	}, []string{"namespace", "metadataservice"})
	skippedInstances = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: MetricsPrefix + "skipped_instances",
		Help: "VMIs a MetadataService selects but does not serve, by reason: Conflict (another service wins), SidecarMissing, or the unservable reason (NoServableInterface, UnsupportedBinding, ServeInterfaceNotFound, PodSecurityForbidsSidecar).",
	}, []string{"namespace", "metadataservice", "reason"})
	serviceConditions = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: MetricsPrefix + "metadataservice_condition",
		Help: "1 for each condition a MetadataService has, with its type (Ready, Degraded, InstancesConfigured), status (true, false, unknown) and reason.",
	}, []string{"namespace", "metadataservice", "type", "status", "reason"})
	renderSeconds = prometheus.NewHistogram(prometheus.HistogramOpts{
		Name:    MetricsPrefix + "payload_render_duration_seconds",
		Help:    "Time to render one VMI's payload document from its MetadataService and resolved sources (sealing it is part of the write).",
		Buckets: []float64{0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.1},
	})
	writeSeconds = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    MetricsPrefix + "payload_write_duration_seconds",
		Help:    "Time to bring one payload Secret up to date, by result: created, updated, current (nothing to write) or failed.",
		Buckets: []float64{0.0005, 0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5},
	}, []string{"result"})
)

func init() {
	metrics.Registry.MustRegister(Collectors()...)
}

// Collectors are the manager's own collectors, which init registers with
// controller-runtime's registry; tests read their names from them.
func Collectors() []prometheus.Collector {
	return []prometheus.Collector{selectedInstances, servedInstances, skippedInstances, serviceConditions, renderSeconds, writeSeconds}
}

// recordConditions publishes mds's conditions, replacing what an earlier
// reconcile published.
func recordConditions(mds *imdsv1alpha1.MetadataService) {
	serviceConditions.DeletePartialMatch(prometheus.Labels{"namespace": mds.Namespace, "metadataservice": mds.Name})
	for _, c := range mds.Status.Conditions {
		serviceConditions.WithLabelValues(mds.Namespace, mds.Name, c.Type, strings.ToLower(string(c.Status)), c.Reason).Set(1)
	}
}

// recordInstances publishes what one reconcile found about mds's VMIs. It
// needs both the selection and the inspection; a reconcile that ended before
// either leaves the previous values.
func recordInstances(mds *imdsv1alpha1.MetadataService, in statusInput) {
	if in.Selection == nil || in.Inspection == nil {
		return
	}
	ns, name := mds.Namespace, mds.Name
	skipped := map[string]int{SkipConflict: len(in.Selection.Conflicts), SkipSidecarMissing: len(in.Inspection.Missing)}
	for _, u := range in.Inspection.Unservable {
		skipped[u.Reason]++
	}
	// Reasons that no longer apply go to zero, not away, so that a rate or
	// an alert sees the drop.
	for _, reason := range skipReasons() {
		if _, ok := skipped[reason]; !ok {
			skipped[reason] = 0
		}
	}
	served := in.Selection.Served - len(in.Inspection.Unservable) - len(in.Inspection.Missing)
	selectedInstances.WithLabelValues(ns, name).Set(float64(in.Selection.Served))
	servedInstances.WithLabelValues(ns, name).Set(float64(max(served, 0)))
	for reason, n := range skipped {
		skippedInstances.WithLabelValues(ns, name, reason).Set(float64(n))
	}
}

// skipReasons are the reasons every service reports, zero or not.
func skipReasons() []string {
	return []string{SkipConflict, SkipSidecarMissing, imdsv1alpha1.ReasonNoPodNetwork, imdsv1alpha1.ReasonUnsupportedBinding,
		imdsv1alpha1.ReasonServeInterfaceNotFound, imdsv1alpha1.ReasonPodSecurityForbidsSidecar}
}

// forgetInstances drops the series of a deleted MetadataService.
func forgetInstances(namespace, name string) {
	l := map[string]string{"namespace": namespace, "metadataservice": name}
	selectedInstances.DeletePartialMatch(l)
	servedInstances.DeletePartialMatch(l)
	skippedInstances.DeletePartialMatch(l)
	serviceConditions.DeletePartialMatch(l)
}

// observeWrite records one payload Secret write's duration.
func observeWrite(start time.Time, wrote bool, existed bool, err error) {
	result := WriteCurrent
	switch {
	case err != nil:
		result = WriteFailed
	case wrote && existed:
		result = WriteUpdated
	case wrote:
		result = WriteCreated
	}
	writeSeconds.WithLabelValues(result).Observe(time.Since(start).Seconds())
}

// timedRender is renderPayload, timed.
func timedRender(mds *imdsv1alpha1.MetadataService, src *resolvedSources, vmi *kubevirtv1.VirtualMachineInstance, ec2 ec2Inputs) *payload.Document {
	start := time.Now()
	doc := renderPayload(mds, src, vmi, ec2)
	renderSeconds.Observe(time.Since(start).Seconds())
	return doc
}

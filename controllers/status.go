package controllers

import (
	"fmt"
	"slices"
	"strings"

	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	imdsv1alpha1 "github.com/kubevirt-imds/kubevirt-imds/api/v1alpha1"
)

// conflict records a VMI this service selects but another one serves.
type conflict struct {
	Instance string
	Winner   string
}

// problem is something that keeps payloads from being rendered or written:
// its reason is one of the api's condition reasons.
type problem struct {
	Reason  string
	Message string
}

func (p *problem) Error() string { return p.Reason + ": " + p.Message }

// statusInput is everything the status is computed from.
type statusInput struct {
	Generation int64
	Served     int
	// Source is set when spec sources could not be resolved; payloads then
	// keep their last good content.
	Source *problem
	// Write is set when a payload Secret could not be written or removed.
	Write      *problem
	Conflicts  []conflict
	Unrendered int // served VMIs without a payload from the current spec
}

// maxListedConflicts bounds condition messages on large namespaces.
const maxListedConflicts = 5

// computeStatus derives the status from the reconcile's findings. It is pure:
// the caller merges the conditions, so unchanged conditions keep their
// transition times.
func computeStatus(in statusInput) imdsv1alpha1.MetadataServiceStatus {
	ready := metav1.Condition{Type: imdsv1alpha1.ConditionReady, Status: metav1.ConditionTrue, ObservedGeneration: in.Generation}
	degraded := metav1.Condition{Type: imdsv1alpha1.ConditionDegraded, Status: metav1.ConditionFalse, ObservedGeneration: in.Generation,
		Reason: imdsv1alpha1.ReasonAsExpected, Message: "nothing needs attention"}

	switch {
	case in.Source != nil:
		ready.Status, ready.Reason = metav1.ConditionFalse, in.Source.Reason
		ready.Message = fmt.Sprintf("%d of %d instances keep their last good payload: %s", in.Unrendered, in.Served, in.Source.Message)
	case in.Write != nil:
		ready.Status, ready.Reason, ready.Message = metav1.ConditionFalse, in.Write.Reason, in.Write.Message
	case in.Served == 0:
		ready.Reason, ready.Message = imdsv1alpha1.ReasonNoInstances, "no VirtualMachineInstance is served by this MetadataService"
	default:
		ready.Reason, ready.Message = imdsv1alpha1.ReasonReconciled, fmt.Sprintf("payloads of %d instances are up to date", in.Served)
	}

	switch {
	case in.Source != nil:
		degraded.Status, degraded.Reason, degraded.Message = metav1.ConditionTrue, in.Source.Reason, in.Source.Message
	case in.Write != nil:
		degraded.Status, degraded.Reason, degraded.Message = metav1.ConditionTrue, in.Write.Reason, in.Write.Message
	case len(in.Conflicts) > 0:
		degraded.Status, degraded.Reason, degraded.Message = metav1.ConditionTrue, imdsv1alpha1.ReasonConflict, conflictMessage(in.Conflicts)
	}

	return imdsv1alpha1.MetadataServiceStatus{
		Conditions:         []metav1.Condition{ready, degraded},
		SelectedInstances:  int32(in.Served),
		ObservedGeneration: in.Generation,
	}
}

func conflictMessage(cs []conflict) string {
	cs = slices.Clone(cs)
	slices.SortFunc(cs, func(a, b conflict) int { return strings.Compare(a.Instance, b.Instance) })
	parts := make([]string, 0, maxListedConflicts)
	for i, c := range cs {
		if i == maxListedConflicts {
			parts = append(parts, fmt.Sprintf("and %d more", len(cs)-maxListedConflicts))
			break
		}
		parts = append(parts, fmt.Sprintf("%s is served by MetadataService %s", c.Instance, c.Winner))
	}
	return fmt.Sprintf("%d selected instances are served by a MetadataService with higher precedence: %s",
		len(cs), strings.Join(parts, "; "))
}

// applyStatus merges computed into status, keeping transition times of
// conditions whose status did not change.
func applyStatus(status *imdsv1alpha1.MetadataServiceStatus, computed imdsv1alpha1.MetadataServiceStatus) {
	for _, c := range computed.Conditions {
		meta.SetStatusCondition(&status.Conditions, c)
	}
	status.SelectedInstances = computed.SelectedInstances
	status.ObservedGeneration = computed.ObservedGeneration
}

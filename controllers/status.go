package controllers

import (
	"fmt"
	"slices"
	"strings"
	"time"

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

// statusInput is everything the status is computed from: what one reconcile
// found, phase by phase. A phase that did not run leaves its part nil, and the
// status keeps what it said before about that part.
type statusInput struct {
	Generation int64
	// Now stamps the conditions that change.
	Now metav1.Time
	// Err is the error that ended the reconcile early, nil when it ran to
	// the end. Unless Write says it was a write, it was a read: a List or a
	// source that failed with an API error.
	Err error
	// Selection is what selectInstances found; nil when it did not run.
	Selection *selection
	// Inspection is what inspectInstances found; nil when it did not run.
	Inspection *inspection
	// Source is set when spec sources could not be resolved; payloads then
	// keep their last good content.
	Source *problem
	// Write is set when a payload Secret could not be written or removed.
	Write      *problem
	Unrendered int // served VMIs without a payload from the current spec
	// IdentityCertificates are the published identity certificates; nil
	// leaves the status's as they were.
	IdentityCertificates []string
	// RotateAt is when the identity signing key is due; zero without one.
	RotateAt time.Time
}

// selection is which VMIs the service serves and which it loses.
type selection struct {
	Served    int
	Conflicts []conflict
}

// inspection is the state of the served VMIs and their virt-launcher Pods.
type inspection struct {
	Mode imdsv1alpha1.GuestDiscovery
	// Missing are served VMIs with an active virt-launcher Pod (a migration
	// target included) that runs without the sidecar.
	Missing []string
	// Undiscovered are servable VMIs without the SMBIOS value of Mode.
	Undiscovered []string
	// Unservable are served VMIs the sidecar cannot reach (Unservable).
	Unservable []imdsv1alpha1.UnservableInstance
}

// maxListedConflicts bounds condition messages on large namespaces.
const maxListedConflicts = 5

// maxListedUnservable bounds status.unservableInstances, as the CRD does.
const maxListedUnservable = 20

// computeStatus derives the new status from the previous one and what the
// reconcile found. It is pure. Conditions whose status does not change keep
// their transition times; parts of the status that the reconcile did not get
// to (a List failed first) keep their previous value. observedGeneration
// moves only when the reconcile read everything and wrote every payload, so
// that a client waiting for observedGeneration == generation and Ready=True
// never takes a failed attempt for success. A problem in the spec itself (a
// missing source) is a success in that sense: the status then describes the
// current generation.
func computeStatus(prev imdsv1alpha1.MetadataServiceStatus, in statusInput) imdsv1alpha1.MetadataServiceStatus {
	out := *prev.DeepCopy()
	set := func(c metav1.Condition) {
		c.ObservedGeneration, c.LastTransitionTime = in.Generation, in.Now
		meta.SetStatusCondition(&out.Conditions, c)
	}
	set(readyCondition(in))
	set(degradedCondition(in))
	if in.Selection != nil {
		out.SelectedInstances = int32(in.Selection.Served)
	}
	if in.Inspection != nil {
		set(instancesConfiguredCondition(in.Inspection))
		out.UnservableInstances = listUnservable(in.Inspection.Unservable)
	}
	if in.IdentityCertificates != nil {
		out.IdentityCertificates = in.IdentityCertificates
	}
	if in.Err == nil && in.Write == nil && in.Selection != nil && in.Inspection != nil {
		out.ObservedGeneration = in.Generation
	}
	return out
}

func readyCondition(in statusInput) metav1.Condition {
	c := metav1.Condition{Type: imdsv1alpha1.ConditionReady, Status: metav1.ConditionTrue}
	switch {
	case in.Write != nil:
		c.Status, c.Reason, c.Message = metav1.ConditionFalse, in.Write.Reason, in.Write.Message
	case in.Source != nil && in.Selection != nil:
		c.Status, c.Reason = metav1.ConditionFalse, in.Source.Reason
		c.Message = fmt.Sprintf("%d of %d instances keep their last good payload: %s", in.Unrendered, in.Selection.Served, in.Source.Message)
	case in.Err != nil || in.Selection == nil:
		c.Status, c.Reason, c.Message = metav1.ConditionUnknown, imdsv1alpha1.ReasonReadFailed, readFailedMessage(in.Err)
	case in.Selection.Served == 0:
		c.Reason, c.Message = imdsv1alpha1.ReasonNoInstances, "no VirtualMachineInstance is served by this MetadataService"
	default:
		c.Reason, c.Message = imdsv1alpha1.ReasonReconciled, fmt.Sprintf("payloads of %d instances are up to date", in.Selection.Served)
	}
	return c
}

func degradedCondition(in statusInput) metav1.Condition {
	c := metav1.Condition{Type: imdsv1alpha1.ConditionDegraded, Status: metav1.ConditionFalse,
		Reason: imdsv1alpha1.ReasonAsExpected, Message: "nothing needs attention"}
	switch {
	case in.Write != nil:
		c.Status, c.Reason, c.Message = metav1.ConditionTrue, in.Write.Reason, in.Write.Message
	case in.Source != nil:
		c.Status, c.Reason, c.Message = metav1.ConditionTrue, in.Source.Reason, in.Source.Message
	case in.Err != nil || in.Selection == nil:
		// An API error is mostly transient: Unknown rather than True keeps
		// a passing hiccup from raising a Warning Event.
		c.Status, c.Reason, c.Message = metav1.ConditionUnknown, imdsv1alpha1.ReasonReadFailed, readFailedMessage(in.Err)
	case len(in.Selection.Conflicts) > 0:
		c.Status, c.Reason, c.Message = metav1.ConditionTrue, imdsv1alpha1.ReasonConflict, conflictMessage(in.Selection.Conflicts)
	}
	return c
}

func readFailedMessage(err error) string {
	msg := "the reconcile ended early"
	if err != nil {
		msg = err.Error()
	}
	return msg + "; payloads keep their last content, retrying"
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

// instancesConfiguredCondition states the findings of inspectInstances. A
// missing sidecar outranks an unservable VMI, which outranks missing
// discovery data: a missing sidecar is fixed by a restart, an unservable VMI
// needs a change to its spec or the service's, and without the sidecar
// discovery data does not matter. An unservable VMI sets the condition's
// reason to its own (of the first by name).
func instancesConfiguredCondition(in *inspection) metav1.Condition {
	c := metav1.Condition{Type: imdsv1alpha1.ConditionInstancesConfigured, Status: metav1.ConditionTrue,
		Reason: imdsv1alpha1.ReasonInstancesConfigured, Message: "every served instance has the metadata sidecar and its guest discovery data"}
	var parts []string
	fail := func(reason string) {
		if c.Status == metav1.ConditionTrue {
			c.Status, c.Reason = metav1.ConditionFalse, reason
		}
	}
	if len(in.Missing) > 0 {
		fail(imdsv1alpha1.ReasonSidecarMissing)
		parts = append(parts, fmt.Sprintf("%d instances run without the metadata sidecar (restart or live-migrate them): %s",
			len(in.Missing), nameList(in.Missing)))
	}
	if len(in.Unservable) > 0 {
		us := sortedUnservable(in.Unservable)
		fail(us[0].Reason)
		names := make([]string, 0, len(us))
		for _, u := range us {
			names = append(names, fmt.Sprintf("%s (%s)", u.Name, u.Reason))
		}
		parts = append(parts, fmt.Sprintf("%d instances cannot be served and start without the metadata sidecar (see status.unservableInstances): %s",
			len(us), nameList(names)))
	}
	if len(in.Undiscovered) > 0 {
		fail(imdsv1alpha1.ReasonGuestDiscoveryNotApplied)
		parts = append(parts, fmt.Sprintf("%d instances lack the %s guest discovery data: %s", len(in.Undiscovered), in.Mode, nameList(in.Undiscovered)))
	}
	if len(parts) > 0 {
		c.Message = strings.Join(parts, "; ")
	}
	return c
}

func sortedUnservable(us []imdsv1alpha1.UnservableInstance) []imdsv1alpha1.UnservableInstance {
	us = slices.Clone(us)
	slices.SortFunc(us, func(a, b imdsv1alpha1.UnservableInstance) int { return strings.Compare(a.Name, b.Name) })
	return us
}

// listUnservable is status.unservableInstances: sorted, bounded, nil when
// empty so that the field disappears.
func listUnservable(us []imdsv1alpha1.UnservableInstance) []imdsv1alpha1.UnservableInstance {
	if len(us) == 0 {
		return nil
	}
	us = sortedUnservable(us)
	return us[:min(len(us), maxListedUnservable)]
}

// nameList lists names sorted, at most maxListedConflicts of them, so that the
// message is stable and bounded.
func nameList(names []string) string {
	names = slices.Clone(names)
	slices.Sort(names)
	if len(names) > maxListedConflicts {
		return strings.Join(names[:maxListedConflicts], ", ") + fmt.Sprintf(" and %d more", len(names)-maxListedConflicts)
	}
	return strings.Join(names, ", ")
}

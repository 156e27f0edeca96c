package controllers

import (
	"errors"
	"fmt"
	"reflect"
	"strings"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	imdsv1alpha1 "github.com/kubevirt-imds/kubevirt-imds/api/v1alpha1"
)

func TestComputeStatus(t *testing.T) {
	missing := &problem{Reason: imdsv1alpha1.ReasonSourceNotFound, Message: `spec.userData.secretRef: Secret "s" not found`}
	writeFail := &problem{Reason: imdsv1alpha1.ReasonPayloadWriteFailed, Message: "payload of vm: forbidden"}
	listFail := errors.New("listing VirtualMachineInstances: the server is currently unable to handle the request")
	served := func(n int, conflicts ...conflict) *selection { return &selection{Served: n, Conflicts: conflicts} }
	inspected := &inspection{Mode: imdsv1alpha1.GuestDiscoveryNoCloud}
	sriov := &inspection{Mode: imdsv1alpha1.GuestDiscoveryNoCloud, Unservable: []imdsv1alpha1.UnservableInstance{
		{Name: "hpc", Reason: imdsv1alpha1.ReasonNoPodNetwork, Message: "no pod network"}}}
	const (
		prevGeneration = 6
		generation     = 7
	)
	// prev is the status of a converged service at the previous generation.
	prev := imdsv1alpha1.MetadataServiceStatus{
		Conditions: []metav1.Condition{
			{Type: imdsv1alpha1.ConditionReady, Status: metav1.ConditionTrue, Reason: imdsv1alpha1.ReasonReconciled, ObservedGeneration: prevGeneration},
			{Type: imdsv1alpha1.ConditionDegraded, Status: metav1.ConditionFalse, Reason: imdsv1alpha1.ReasonAsExpected, ObservedGeneration: prevGeneration},
			{Type: imdsv1alpha1.ConditionInstancesConfigured, Status: metav1.ConditionTrue, Reason: imdsv1alpha1.ReasonInstancesConfigured, ObservedGeneration: prevGeneration},
		},
		SelectedInstances:  3,
		ObservedGeneration: prevGeneration,
	}
	for _, tc := range []struct {
		name                        string
		in                          statusInput
		ready                       metav1.ConditionStatus
		readyReason, degradedReason string
		degraded                    metav1.ConditionStatus
		configuredReason            string
		selected                    int32
		observedGeneration          int64
	}{
		{"all rendered", statusInput{Selection: served(3), Inspection: inspected},
			metav1.ConditionTrue, imdsv1alpha1.ReasonReconciled, imdsv1alpha1.ReasonAsExpected, metav1.ConditionFalse, imdsv1alpha1.ReasonInstancesConfigured, 3, generation},
		{"nothing selected", statusInput{Selection: served(0), Inspection: inspected},
			metav1.ConditionTrue, imdsv1alpha1.ReasonNoInstances, imdsv1alpha1.ReasonAsExpected, metav1.ConditionFalse, imdsv1alpha1.ReasonInstancesConfigured, 0, generation},
		{"missing source is a verdict on this generation", statusInput{Selection: served(2), Inspection: inspected, Unrendered: 2, Source: missing},
			metav1.ConditionFalse, imdsv1alpha1.ReasonSourceNotFound, imdsv1alpha1.ReasonSourceNotFound, metav1.ConditionTrue, imdsv1alpha1.ReasonInstancesConfigured, 2, generation},
		{"write failure", statusInput{Selection: served(1), Inspection: inspected, Write: writeFail, Err: writeFail},
			metav1.ConditionFalse, imdsv1alpha1.ReasonPayloadWriteFailed, imdsv1alpha1.ReasonPayloadWriteFailed, metav1.ConditionTrue, imdsv1alpha1.ReasonInstancesConfigured, 1, prevGeneration},
		{"conflict only", statusInput{Selection: served(1, conflict{"vm", "other"}), Inspection: inspected},
			metav1.ConditionTrue, imdsv1alpha1.ReasonReconciled, imdsv1alpha1.ReasonConflict, metav1.ConditionTrue, imdsv1alpha1.ReasonInstancesConfigured, 1, generation},
		{"source problem outranks conflict", statusInput{Selection: served(1, conflict{"vm", "other"}), Inspection: inspected, Source: missing},
			metav1.ConditionFalse, imdsv1alpha1.ReasonSourceNotFound, imdsv1alpha1.ReasonSourceNotFound, metav1.ConditionTrue, imdsv1alpha1.ReasonInstancesConfigured, 1, generation},
		{"failed VMI List keeps what it could not see", statusInput{Err: listFail},
			metav1.ConditionUnknown, imdsv1alpha1.ReasonReadFailed, imdsv1alpha1.ReasonReadFailed, metav1.ConditionUnknown, imdsv1alpha1.ReasonInstancesConfigured, 3, prevGeneration},
		{"failed Pod List", statusInput{Selection: served(5), Err: listFail},
			metav1.ConditionUnknown, imdsv1alpha1.ReasonReadFailed, imdsv1alpha1.ReasonReadFailed, metav1.ConditionUnknown, imdsv1alpha1.ReasonInstancesConfigured, 5, prevGeneration},
		{"failed source read", statusInput{Selection: served(2), Inspection: inspected, Err: errors.New("reading Secret s for spec.userData.secretRef: timeout")},
			metav1.ConditionUnknown, imdsv1alpha1.ReasonReadFailed, imdsv1alpha1.ReasonReadFailed, metav1.ConditionUnknown, imdsv1alpha1.ReasonInstancesConfigured, 2, prevGeneration},
		{"failed List after a source problem", statusInput{Selection: served(2), Inspection: inspected, Source: missing, Err: listFail},
			metav1.ConditionFalse, imdsv1alpha1.ReasonSourceNotFound, imdsv1alpha1.ReasonSourceNotFound, metav1.ConditionTrue, imdsv1alpha1.ReasonInstancesConfigured, 2, prevGeneration},
		{"a reconcile that ended without an error or a selection", statusInput{},
			metav1.ConditionUnknown, imdsv1alpha1.ReasonReadFailed, imdsv1alpha1.ReasonReadFailed, metav1.ConditionUnknown, imdsv1alpha1.ReasonInstancesConfigured, 3, prevGeneration},
		{"unservable instance", statusInput{Selection: served(4), Inspection: sriov},
			metav1.ConditionTrue, imdsv1alpha1.ReasonReconciled, imdsv1alpha1.ReasonAsExpected, metav1.ConditionFalse, imdsv1alpha1.ReasonNoPodNetwork, 4, generation},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tc.in.Generation = generation
			got := computeStatus(prev, tc.in)
			ready := meta.FindStatusCondition(got.Conditions, imdsv1alpha1.ConditionReady)
			degraded := meta.FindStatusCondition(got.Conditions, imdsv1alpha1.ConditionDegraded)
			configured := meta.FindStatusCondition(got.Conditions, imdsv1alpha1.ConditionInstancesConfigured)
			if len(got.Conditions) != 3 || ready == nil || degraded == nil || configured == nil {
				t.Fatalf("conditions: %+v", got.Conditions)
			}
			if ready.Status != tc.ready || ready.Reason != tc.readyReason {
				t.Errorf("Ready = %s/%s, want %s/%s", ready.Status, ready.Reason, tc.ready, tc.readyReason)
			}
			if degraded.Status != tc.degraded || degraded.Reason != tc.degradedReason {
				t.Errorf("Degraded = %s/%s, want %s/%s", degraded.Status, degraded.Reason, tc.degraded, tc.degradedReason)
			}
			if configured.Reason != tc.configuredReason {
				t.Errorf("InstancesConfigured reason %s, want %s", configured.Reason, tc.configuredReason)
			}
			if got.SelectedInstances != tc.selected || got.ObservedGeneration != tc.observedGeneration {
				t.Errorf("selected %d, observedGeneration %d; want %d, %d", got.SelectedInstances, got.ObservedGeneration, tc.selected, tc.observedGeneration)
			}
			if ready.ObservedGeneration != generation || degraded.ObservedGeneration != generation {
				t.Errorf("conditions computed now carry generation %d and %d", ready.ObservedGeneration, degraded.ObservedGeneration)
			}
			if tc.in.Inspection == nil && configured.ObservedGeneration != prevGeneration {
				t.Errorf("InstancesConfigured was not inspected but moved to generation %d", configured.ObservedGeneration)
			}
			if tc.in.Err != nil && tc.in.Write == nil && tc.in.Source == nil && !strings.Contains(ready.Message, tc.in.Err.Error()) {
				t.Errorf("Ready message %q does not say what failed", ready.Message)
			}
		})
	}
	if !reflect.DeepEqual(prev.Conditions[0], metav1.Condition{Type: imdsv1alpha1.ConditionReady, Status: metav1.ConditionTrue,
		Reason: imdsv1alpha1.ReasonReconciled, ObservedGeneration: prevGeneration}) {
		t.Errorf("computeStatus modified its input: %+v", prev.Conditions[0])
	}
}

func TestComputeStatusListsUnservableInstances(t *testing.T) {
	var us []imdsv1alpha1.UnservableInstance
	for i := range 25 {
		us = append(us, imdsv1alpha1.UnservableInstance{Name: fmt.Sprintf("vm-%02d", 24-i), Reason: imdsv1alpha1.ReasonUnsupportedBinding})
	}
	got := computeStatus(imdsv1alpha1.MetadataServiceStatus{}, statusInput{Selection: &selection{Served: 25},
		Inspection: &inspection{Unservable: us}})
	if len(got.UnservableInstances) != maxListedUnservable || got.UnservableInstances[0].Name != "vm-00" || got.UnservableInstances[19].Name != "vm-19" {
		t.Errorf("unservableInstances %+v", got.UnservableInstances)
	}
	c := meta.FindStatusCondition(got.Conditions, imdsv1alpha1.ConditionInstancesConfigured)
	if c == nil || !strings.Contains(c.Message, "25 instances cannot be served") || !strings.Contains(c.Message, "vm-00 (UnsupportedBinding)") {
		t.Errorf("InstancesConfigured %+v", c)
	}
	// Once they are gone, so is the field.
	got = computeStatus(got, statusInput{Selection: &selection{Served: 25}, Inspection: &inspection{}})
	if got.UnservableInstances != nil {
		t.Errorf("unservableInstances %+v after they became servable", got.UnservableInstances)
	}
}

func TestConflictMessageIsBoundedAndStable(t *testing.T) {
	var cs []conflict
	for _, n := range []string{"g", "f", "e", "d", "c", "b", "a"} {
		cs = append(cs, conflict{Instance: n, Winner: "w"})
	}
	want := "7 selected instances are served by a MetadataService with higher precedence: a is served by MetadataService w; " +
		"b is served by MetadataService w; c is served by MetadataService w; d is served by MetadataService w; " +
		"e is served by MetadataService w; and 2 more"
	if got := conflictMessage(cs); got != want {
		t.Errorf("got %q", got)
	}
}

func TestComputeStatusKeepsTransitionTimes(t *testing.T) {
	old := metav1.NewTime(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
	st := imdsv1alpha1.MetadataServiceStatus{Conditions: []metav1.Condition{
		{Type: imdsv1alpha1.ConditionReady, Status: metav1.ConditionTrue, Reason: imdsv1alpha1.ReasonReconciled, LastTransitionTime: old},
	}}
	now := metav1.NewTime(old.Add(time.Hour))
	st = computeStatus(st, statusInput{Selection: &selection{Served: 1}, Inspection: &inspection{}, Now: now})
	if c := meta.FindStatusCondition(st.Conditions, imdsv1alpha1.ConditionReady); !c.LastTransitionTime.Equal(&old) {
		t.Errorf("Ready transition time changed to %v", c.LastTransitionTime)
	}
	if c := meta.FindStatusCondition(st.Conditions, imdsv1alpha1.ConditionDegraded); !c.LastTransitionTime.Equal(&now) {
		t.Errorf("a new condition got transition time %v, want %v", c.LastTransitionTime, now)
	}
	st = computeStatus(st, statusInput{Err: errors.New("boom"), Now: metav1.NewTime(now.Add(time.Hour))})
	if c := meta.FindStatusCondition(st.Conditions, imdsv1alpha1.ConditionReady); c.Status != metav1.ConditionUnknown || c.LastTransitionTime.Equal(&old) {
		t.Errorf("Ready after a failed read: %+v", c)
	}
}

func TestPrecedence(t *testing.T) {
	t0 := metav1.NewTime(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
	t1 := metav1.NewTime(t0.Add(time.Second))
	mk := func(name string, prio int32, created metav1.Time) imdsv1alpha1.MetadataService {
		m := imdsv1alpha1.MetadataService{}
		m.Name, m.UID, m.Spec.Priority, m.CreationTimestamp = name, types.UID(name), prio, created
		return m
	}
	for _, tc := range []struct {
		name       string
		candidates []imdsv1alpha1.MetadataService
		want       string
	}{
		{"priority beats age", []imdsv1alpha1.MetadataService{mk("old", 0, t0), mk("new", 5, t1)}, "new"},
		{"age beats name", []imdsv1alpha1.MetadataService{mk("b", 0, t0), mk("a", 0, t1)}, "b"},
		{"name breaks a tie", []imdsv1alpha1.MetadataService{mk("b", 0, t0), mk("a", 0, t0)}, "a"},
		{"negative priorities", []imdsv1alpha1.MetadataService{mk("low", -5, t0), mk("zero", 0, t1)}, "zero"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := winnerFor(tc.candidates, nil); got == nil || got.Name != tc.want {
				t.Errorf("winner %v, want %s", got, tc.want)
			}
			// The order of the list must not matter.
			reversed := []imdsv1alpha1.MetadataService{tc.candidates[1], tc.candidates[0]}
			if got := winnerFor(reversed, nil); got == nil || got.Name != tc.want {
				t.Errorf("reversed: winner %v, want %s", got, tc.want)
			}
		})
	}
	deleting := mk("gone", 100, t0)
	deleting.DeletionTimestamp = &t1
	if got := winnerFor([]imdsv1alpha1.MetadataService{deleting}, nil); got != nil {
		t.Errorf("a service being deleted won")
	}
}

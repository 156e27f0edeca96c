package controllers

import (
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	imdsv1alpha1 "github.com/kubevirt-imds/kubevirt-imds/api/v1alpha1"
)

func TestComputeStatus(t *testing.T) {
	missing := &problem{Reason: imdsv1alpha1.ReasonSourceNotFound, Message: `spec.userData.secretRef: Secret "s" not found`}
	writeFail := &problem{Reason: imdsv1alpha1.ReasonPayloadWriteFailed, Message: "payload of vm: forbidden"}
	for _, tc := range []struct {
		name                        string
		in                          statusInput
		ready                       metav1.ConditionStatus
		readyReason, degradedReason string
		degraded                    metav1.ConditionStatus
		selected                    int32
	}{
		{"all rendered", statusInput{Served: 3}, metav1.ConditionTrue, imdsv1alpha1.ReasonReconciled, imdsv1alpha1.ReasonAsExpected, metav1.ConditionFalse, 3},
		{"nothing selected", statusInput{}, metav1.ConditionTrue, imdsv1alpha1.ReasonNoInstances, imdsv1alpha1.ReasonAsExpected, metav1.ConditionFalse, 0},
		{"missing source", statusInput{Served: 2, Unrendered: 2, Source: missing}, metav1.ConditionFalse, imdsv1alpha1.ReasonSourceNotFound, imdsv1alpha1.ReasonSourceNotFound, metav1.ConditionTrue, 2},
		{"write failure", statusInput{Served: 1, Write: writeFail}, metav1.ConditionFalse, imdsv1alpha1.ReasonPayloadWriteFailed, imdsv1alpha1.ReasonPayloadWriteFailed, metav1.ConditionTrue, 1},
		{"conflict only", statusInput{Served: 1, Conflicts: []conflict{{"vm", "other"}}}, metav1.ConditionTrue, imdsv1alpha1.ReasonReconciled, imdsv1alpha1.ReasonConflict, metav1.ConditionTrue, 1},
		{"source problem outranks conflict", statusInput{Served: 1, Source: missing, Conflicts: []conflict{{"vm", "other"}}}, metav1.ConditionFalse, imdsv1alpha1.ReasonSourceNotFound, imdsv1alpha1.ReasonSourceNotFound, metav1.ConditionTrue, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tc.in.Generation = 7
			got := computeStatus(tc.in)
			if len(got.Conditions) != 2 {
				t.Fatalf("conditions: %+v", got.Conditions)
			}
			ready, degraded := got.Conditions[0], got.Conditions[1]
			if ready.Status != tc.ready || ready.Reason != tc.readyReason {
				t.Errorf("Ready = %s/%s, want %s/%s", ready.Status, ready.Reason, tc.ready, tc.readyReason)
			}
			if degraded.Status != tc.degraded || degraded.Reason != tc.degradedReason {
				t.Errorf("Degraded = %s/%s, want %s/%s", degraded.Status, degraded.Reason, tc.degraded, tc.degradedReason)
			}
			if got.SelectedInstances != tc.selected || got.ObservedGeneration != 7 || ready.ObservedGeneration != 7 {
				t.Errorf("selected %d generation %d", got.SelectedInstances, got.ObservedGeneration)
			}
		})
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

func TestApplyStatusKeepsTransitionTimes(t *testing.T) {
	old := metav1.NewTime(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
	st := imdsv1alpha1.MetadataServiceStatus{Conditions: []metav1.Condition{
		{Type: imdsv1alpha1.ConditionReady, Status: metav1.ConditionTrue, Reason: imdsv1alpha1.ReasonReconciled, LastTransitionTime: old},
	}}
	applyStatus(&st, computeStatus(statusInput{Served: 1}))
	if !st.Conditions[0].LastTransitionTime.Equal(&old) {
		t.Errorf("Ready transition time changed to %v", st.Conditions[0].LastTransitionTime)
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

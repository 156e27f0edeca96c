package controllers

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"

	imdsv1alpha1 "github.com/kubevirt-imds/kubevirt-imds/api/v1alpha1"
)

// precedes reports whether a takes precedence over b for a VMI both select:
// the higher priority wins, then the older, then the name that sorts first.
func precedes(a, b *imdsv1alpha1.MetadataService) bool {
	if a.Spec.Priority != b.Spec.Priority {
		return a.Spec.Priority > b.Spec.Priority
	}
	if !a.CreationTimestamp.Equal(&b.CreationTimestamp) {
		return a.CreationTimestamp.Before(&b.CreationTimestamp)
	}
	return a.Name < b.Name
}

// selectorFor converts a MetadataService's selector. An invalid selector
// selects nothing (the API server's schema admits only valid operators, so
// this is a safety net, not a user-facing path).
func selectorFor(mds *imdsv1alpha1.MetadataService) labels.Selector {
	sel, err := metav1.LabelSelectorAsSelector(&mds.Spec.Selector)
	if err != nil {
		return labels.Nothing()
	}
	return sel
}

// winnerFor returns the MetadataService among candidates that serves a VMI
// with the given labels, or nil when none selects it. Services being deleted
// never win.
func winnerFor(candidates []imdsv1alpha1.MetadataService, vmiLabels map[string]string) *imdsv1alpha1.MetadataService {
	var winner *imdsv1alpha1.MetadataService
	set := labels.Set(vmiLabels)
	for i := range candidates {
		c := &candidates[i]
		if !c.DeletionTimestamp.IsZero() || !selectorFor(c).Matches(set) {
			continue
		}
		if winner == nil || precedes(c, winner) {
			winner = c
		}
	}
	return winner
}

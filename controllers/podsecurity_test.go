package controllers

import (
	"context"
	"testing"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/tools/events"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"

	imdsv1alpha1 "github.com/kubevirt-imds/kubevirt-imds/api/v1alpha1"
	"github.com/kubevirt-imds/kubevirt-imds/test/fixtures"
)

func TestPrivilegedSidecarForbidden(t *testing.T) {
	for _, tc := range []struct {
		name         string
		labels       map[string]string
		defaultLevel string
		forbidden    bool
	}{
		{"no label, no default: privileged", nil, "", false},
		{"labelled privileged", map[string]string{PodSecurityEnforceLabel: "privileged"}, "restricted", false},
		{"labelled baseline", map[string]string{PodSecurityEnforceLabel: "baseline"}, "", true},
		{"labelled restricted", map[string]string{PodSecurityEnforceLabel: "restricted"}, "privileged", true},
		{"no label, a baseline default", nil, "baseline", true},
		{"an unknown level, which PodSecurity treats as restricted", map[string]string{PodSecurityEnforceLabel: "strict"}, "", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := PrivilegedSidecarForbidden("ns", tc.labels, tc.defaultLevel)
			if (got != "") != tc.forbidden {
				t.Fatalf("forbidden %q, want forbidden %v", got, tc.forbidden)
			}
		})
	}
}

// TestPodSecurityForbidsSidecarStatus drives Reconcile as the manager wires
// it with --sidecar-network-setup=sidecar: a VMI in a namespace enforcing
// baseline, whose launcher Pod the webhook left without the sidecar, is
// reported unservable for Pod Security, not as missing its sidecar; in a
// privileged namespace the same Pod is SidecarMissing.
func TestPodSecurityForbidsSidecarStatus(t *testing.T) {
	for _, tc := range []struct {
		level      string
		wantReason string
	}{
		{"baseline", imdsv1alpha1.ReasonPodSecurityForbidsSidecar},
		{"privileged", imdsv1alpha1.ReasonSidecarMissing},
	} {
		t.Run(tc.level, func(t *testing.T) {
			ctx := context.Background()
			s, err := NewScheme()
			if err != nil {
				t.Fatal(err)
			}
			ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "ns", Labels: map[string]string{PodSecurityEnforceLabel: tc.level}}}
			vmi := fixtures.VMI("ns", "vm", nil)
			vmi.UID = "vm-uid"
			mds := fixtures.MetadataService("ns", "mds", imdsv1alpha1.MetadataServiceSpec{GuestDiscovery: imdsv1alpha1.GuestDiscoveryNone})
			pod := fixtures.LauncherPod(vmi)
			c := fake.NewClientBuilder().WithScheme(s).WithObjects(ns, mds, vmi, pod).
				WithStatusSubresource(&imdsv1alpha1.MetadataService{}).Build()
			r := &MetadataServiceReconciler{Client: c, Recorder: events.NewFakeRecorder(100), PrivilegedSidecar: true}
			req := ctrl.Request{NamespacedName: client.ObjectKeyFromObject(mds)}
			if _, err := r.Reconcile(ctx, req); err != nil {
				t.Fatal(err)
			}
			var m imdsv1alpha1.MetadataService
			if err := c.Get(ctx, req.NamespacedName, &m); err != nil {
				t.Fatal(err)
			}
			c2 := meta.FindStatusCondition(m.Status.Conditions, imdsv1alpha1.ConditionInstancesConfigured)
			if c2 == nil || c2.Status != metav1.ConditionFalse || c2.Reason != tc.wantReason {
				t.Fatalf("InstancesConfigured %+v, want False/%s", c2, tc.wantReason)
			}
			forbidden := tc.wantReason == imdsv1alpha1.ReasonPodSecurityForbidsSidecar
			if got := len(m.Status.UnservableInstances); forbidden != (got == 1) {
				t.Fatalf("unservableInstances %+v", m.Status.UnservableInstances)
			}
			if forbidden && m.Status.UnservableInstances[0].Reason != imdsv1alpha1.ReasonPodSecurityForbidsSidecar {
				t.Fatalf("unservableInstances %+v", m.Status.UnservableInstances)
			}
		})
	}
}

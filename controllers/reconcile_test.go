package controllers

import (
	"context"
	"sync/atomic"
	"testing"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/tools/events"
	kubevirtv1 "kubevirt.io/api/core/v1"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"
	"sigs.k8s.io/controller-runtime/pkg/client/interceptor"

	imdsv1alpha1 "github.com/kubevirt-imds/kubevirt-imds/api/v1alpha1"
	"github.com/kubevirt-imds/kubevirt-imds/test/fixtures"
)

// TestReconcileAfterAFailedRead drives Reconcile itself (the envtest suite's
// manager would repair the status before a spec could look) over a client
// whose reads fail on demand: the status a user sees after each failure is
// not Ready=True and keeps the last observedGeneration; the next good
// reconcile makes it Ready and current.
func TestReconcileAfterAFailedRead(t *testing.T) {
	unavailable := apierrors.NewServiceUnavailable("etcd is unhappy")
	for _, tc := range []struct {
		name string
		// fails reports whether a read of obj (a list, or the object named
		// name) fails.
		fails func(obj runtime.Object, name string) bool
	}{
		{"listing MetadataServices", func(o runtime.Object, _ string) bool { _, ok := o.(*imdsv1alpha1.MetadataServiceList); return ok }},
		{"listing VirtualMachineInstances", func(o runtime.Object, _ string) bool { _, ok := o.(*kubevirtv1.VirtualMachineInstanceList); return ok }},
		{"listing virt-launcher Pods", func(o runtime.Object, _ string) bool { _, ok := o.(*corev1.PodList); return ok }},
		{"reading the user-data Secret", func(o runtime.Object, name string) bool {
			_, ok := o.(*corev1.Secret)
			return ok && name == "cloud-config"
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx := context.Background()
			s, err := NewScheme()
			if err != nil {
				t.Fatal(err)
			}
			vmi := fixtures.VMI("ns", "vm", nil)
			vmi.UID = "vm-uid"
			vmi.Spec.Domain.Firmware = &kubevirtv1.Firmware{Serial: NoCloudSerial}
			mds := fixtures.MetadataService("ns", "mds", imdsv1alpha1.MetadataServiceSpec{
				UserData: &imdsv1alpha1.DataSource{SecretRef: &imdsv1alpha1.KeyReference{Name: "cloud-config", Key: "user-data"}},
			})
			mds.Generation = 1 // the fake client does not count generations
			source := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "cloud-config"},
				Data: map[string][]byte{"user-data": []byte("#cloud-config\n")}}
			var failing atomic.Bool
			failRead := func(obj runtime.Object, name string) error {
				if failing.Load() && tc.fails(obj, name) {
					return unavailable
				}
				return nil
			}
			c := fake.NewClientBuilder().WithScheme(s).WithObjects(mds, vmi, source).
				WithStatusSubresource(&imdsv1alpha1.MetadataService{}).
				WithInterceptorFuncs(interceptor.Funcs{
					List: func(ctx context.Context, c client.WithWatch, list client.ObjectList, opts ...client.ListOption) error {
						if err := failRead(list, ""); err != nil {
							return err
						}
						return c.List(ctx, list, opts...)
					},
					Get: func(ctx context.Context, c client.WithWatch, key client.ObjectKey, obj client.Object, opts ...client.GetOption) error {
						if err := failRead(obj, key.Name); err != nil {
							return err
						}
						return c.Get(ctx, key, obj, opts...)
					},
				}).Build()
			r := &MetadataServiceReconciler{Client: c, Recorder: events.NewFakeRecorder(100)}
			req := ctrl.Request{NamespacedName: client.ObjectKeyFromObject(mds)}
			status := func() *imdsv1alpha1.MetadataService {
				t.Helper()
				var m imdsv1alpha1.MetadataService
				if err := c.Get(ctx, req.NamespacedName, &m); err != nil {
					t.Fatal(err)
				}
				return &m
			}

			if _, err := r.Reconcile(ctx, req); err != nil {
				t.Fatal(err)
			}
			good := status()
			if ready := meta.FindStatusCondition(good.Status.Conditions, imdsv1alpha1.ConditionReady); ready == nil || ready.Status != metav1.ConditionTrue ||
				good.Status.ObservedGeneration != good.Generation {
				t.Fatalf("first reconcile: %+v", good.Status)
			}

			// The user edits the spec; the next reconcile's read fails.
			good.Spec.Hostname = "{name}.example"
			good.Generation++
			if err := c.Update(ctx, good); err != nil {
				t.Fatal(err)
			}
			failing.Store(true)
			if _, err := r.Reconcile(ctx, req); !apierrors.IsServiceUnavailable(err) {
				t.Fatalf("Reconcile with a failing read returned %v", err)
			}
			failed := status()
			ready := meta.FindStatusCondition(failed.Status.Conditions, imdsv1alpha1.ConditionReady)
			if ready == nil || ready.Status == metav1.ConditionTrue || ready.Reason != imdsv1alpha1.ReasonReadFailed {
				t.Errorf("Ready after a failed read: %+v", ready)
			}
			if failed.Status.ObservedGeneration != good.Status.ObservedGeneration || failed.Status.ObservedGeneration == failed.Generation {
				t.Errorf("observedGeneration %d after a failed read of generation %d (was %d)",
					failed.Status.ObservedGeneration, failed.Generation, good.Status.ObservedGeneration)
			}
			if failed.Status.SelectedInstances != 1 {
				t.Errorf("selectedInstances %d: a failed read must not zero it", failed.Status.SelectedInstances)
			}

			failing.Store(false)
			if _, err := r.Reconcile(ctx, req); err != nil {
				t.Fatal(err)
			}
			recovered := status()
			ready = meta.FindStatusCondition(recovered.Status.Conditions, imdsv1alpha1.ConditionReady)
			if ready == nil || ready.Status != metav1.ConditionTrue || recovered.Status.ObservedGeneration != recovered.Generation {
				t.Errorf("after recovery: Ready %+v, observedGeneration %d of %d", ready, recovered.Status.ObservedGeneration, recovered.Generation)
			}
		})
	}
}

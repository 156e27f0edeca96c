package webhooks_test

import (
	"context"

	. "github.com/onsi/gomega"

	corev1 "k8s.io/api/core/v1"
	eventsv1 "k8s.io/api/events/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	kubevirtv1 "kubevirt.io/api/core/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	imdsv1alpha1 "github.com/kubevirt-imds/kubevirt-imds/api/v1alpha1"
	"github.com/kubevirt-imds/kubevirt-imds/test/fixtures"
)

// newVMI, newMDS and launcherPod keep the specs short.
var (
	newVMI      = fixtures.VMI
	newMDS      = fixtures.MetadataService
	launcherPod = fixtures.LauncherPod
)

func create(ctx context.Context, objs ...client.Object) {
	for _, o := range objs {
		ExpectWithOffset(1, k8sClient.Create(ctx, o)).To(Succeed())
	}
}

// serve creates the MetadataService "web" in namespace and waits until the
// controller has reconciled it, so that a spec goes on from a settled service
// rather than racing its first reconcile.
func serve(ctx context.Context, namespace string, spec imdsv1alpha1.MetadataServiceSpec) {
	mds := newMDS(namespace, "web", spec)
	ExpectWithOffset(1, k8sClient.Create(ctx, mds)).To(Succeed())
	EventuallyWithOffset(1, func(g Gomega) {
		var m imdsv1alpha1.MetadataService
		g.Expect(k8sClient.Get(ctx, client.ObjectKeyFromObject(mds), &m)).To(Succeed())
		g.Expect(m.Status.ObservedGeneration).To(Equal(m.Generation))
	}).Should(Succeed())
}

// waitPayload waits for the payload Secret of vmi.
func waitPayload(ctx context.Context, vmi *kubevirtv1.VirtualMachineInstance) {
	EventuallyWithOffset(1, func() error {
		return k8sClient.Get(ctx, types.NamespacedName{Namespace: vmi.Namespace, Name: imdsv1alpha1.PayloadSecretName(vmi.Name)}, &corev1.Secret{})
	}).Should(Succeed())
}

// condition returns a condition of a MetadataService, or nil.
func condition(ctx context.Context, namespace, name, t string) *metav1.Condition {
	var m imdsv1alpha1.MetadataService
	ExpectWithOffset(1, k8sClient.Get(ctx, types.NamespacedName{Namespace: namespace, Name: name}, &m)).To(Succeed())
	return meta.FindStatusCondition(m.Status.Conditions, t)
}

// eventsFor lists the events.k8s.io Events regarding an object by name.
func eventsFor(ctx context.Context, namespace, name string) []eventsv1.Event {
	var list eventsv1.EventList
	ExpectWithOffset(1, k8sClient.List(ctx, &list, client.InNamespace(namespace))).To(Succeed())
	var out []eventsv1.Event
	for _, e := range list.Items {
		if e.Regarding.Name == name {
			out = append(out, e)
		}
	}
	return out
}

func reasons(events []eventsv1.Event) []string {
	out := make([]string, 0, len(events))
	for _, e := range events {
		out = append(out, e.Reason)
	}
	return out
}

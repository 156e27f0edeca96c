package controllers

import (
	"context"
	"encoding/json"

	. "github.com/onsi/gomega"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	kubevirtv1 "kubevirt.io/api/core/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/kubevirt-imds/kubevirt-imds/api/payload"
	imdsv1alpha1 "github.com/kubevirt-imds/kubevirt-imds/api/v1alpha1"
)

// newVMI is a minimal masquerade VMI as a user would write it.
func newVMI(namespace, name string, labels map[string]string) *kubevirtv1.VirtualMachineInstance {
	return &kubevirtv1.VirtualMachineInstance{
		ObjectMeta: metav1.ObjectMeta{Namespace: namespace, Name: name, Labels: labels},
		Spec: kubevirtv1.VirtualMachineInstanceSpec{
			Domain: kubevirtv1.DomainSpec{
				Resources: kubevirtv1.ResourceRequirements{
					Requests: corev1.ResourceList{corev1.ResourceMemory: resource.MustParse("128Mi")},
				},
				Devices: kubevirtv1.Devices{
					Interfaces: []kubevirtv1.Interface{{
						Name:                   "default",
						InterfaceBindingMethod: kubevirtv1.InterfaceBindingMethod{Masquerade: &kubevirtv1.InterfaceMasquerade{}},
					}},
				},
			},
			Networks: []kubevirtv1.Network{{Name: "default", NetworkSource: kubevirtv1.NetworkSource{Pod: &kubevirtv1.PodNetwork{}}}},
		},
	}
}

func newMDS(namespace, name string, spec imdsv1alpha1.MetadataServiceSpec) *imdsv1alpha1.MetadataService {
	return &imdsv1alpha1.MetadataService{ObjectMeta: metav1.ObjectMeta{Namespace: namespace, Name: name}, Spec: spec}
}

func ptr[T any](v T) *T { return &v }

func create(ctx context.Context, objs ...client.Object) {
	for _, o := range objs {
		ExpectWithOffset(1, k8sClient.Create(ctx, o)).To(Succeed())
	}
}

// payloadSecrets lists the payload Secrets in a namespace, by name.
func payloadSecrets(ctx context.Context, namespace string) map[string]corev1.Secret {
	var list corev1.SecretList
	ExpectWithOffset(1, k8sClient.List(ctx, &list, client.InNamespace(namespace),
		client.MatchingLabels{imdsv1alpha1.LabelManagedBy: imdsv1alpha1.ManagedByValue})).To(Succeed())
	out := map[string]corev1.Secret{}
	for _, s := range list.Items {
		out[s.Name] = s
	}
	return out
}

// payloadOf reads and verifies the payload document of a VMI, or returns nil
// if its Secret does not exist.
func payloadOf(ctx context.Context, namespace, vmi string) (*payload.Document, error) {
	var s corev1.Secret
	err := k8sClient.Get(ctx, types.NamespacedName{Namespace: namespace, Name: imdsv1alpha1.PayloadSecretName(vmi)}, &s)
	if err != nil {
		return nil, err
	}
	return payload.Parse(s.Data[payload.SecretKey])
}

func getMDS(ctx context.Context, namespace, name string) *imdsv1alpha1.MetadataService {
	var m imdsv1alpha1.MetadataService
	ExpectWithOffset(1, k8sClient.Get(ctx, types.NamespacedName{Namespace: namespace, Name: name}, &m)).To(Succeed())
	return &m
}

func condition(m *imdsv1alpha1.MetadataService, t string) metav1.Condition {
	for _, c := range m.Status.Conditions {
		if c.Type == t {
			return c
		}
	}
	return metav1.Condition{}
}

func mustJSON(v any) string {
	b, err := json.MarshalIndent(v, "", "  ")
	Expect(err).NotTo(HaveOccurred())
	return string(b)
}

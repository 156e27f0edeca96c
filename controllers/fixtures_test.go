package controllers

import (
	"context"
	"encoding/json"

	. "github.com/onsi/gomega"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/kubevirt-imds/kubevirt-imds/api/payload"
	imdsv1alpha1 "github.com/kubevirt-imds/kubevirt-imds/api/v1alpha1"
	"github.com/kubevirt-imds/kubevirt-imds/test/fixtures"
)

// newVMI and newMDS keep the specs short.
var (
	newVMI = fixtures.VMI
	newMDS = fixtures.MetadataService
)

func ptr[T any](v T) *T { return &v }

func create(ctx context.Context, objs ...client.Object) {
	for _, o := range objs {
		ExpectWithOffset(1, k8sClient.Create(ctx, o)).To(Succeed())
	}
}

// payloadSecrets lists the payload Secrets of instances in a namespace, by
// name (not the services' shared ones).
func payloadSecrets(ctx context.Context, namespace string) map[string]corev1.Secret {
	var list corev1.SecretList
	ExpectWithOffset(1, k8sClient.List(ctx, &list, client.InNamespace(namespace),
		client.MatchingLabels{imdsv1alpha1.LabelManagedBy: imdsv1alpha1.ManagedByValue},
		client.HasLabels{imdsv1alpha1.LabelInstanceUID})).To(Succeed())
	out := map[string]corev1.Secret{}
	for _, s := range list.Items {
		out[s.Name] = s
	}
	return out
}

// payloadOf reads and verifies the payload document of a VMI as its sidecar
// serves it (with its service's shared document when it refers to one), or
// returns an error if a Secret does not exist.
func payloadOf(ctx context.Context, namespace, vmi string) (*payload.Document, error) {
	var s corev1.Secret
	err := k8sClient.Get(ctx, types.NamespacedName{Namespace: namespace, Name: imdsv1alpha1.PayloadSecretName(vmi)}, &s)
	if err != nil {
		return nil, err
	}
	doc, err := payload.Parse(s.Data[payload.SecretKey])
	if err != nil || doc.Shared == nil {
		return doc, err
	}
	shared, err := sharedOf(ctx, namespace, doc.Shared.MetadataService)
	if err != nil {
		return nil, err
	}
	return doc.WithShared(shared)
}

// sharedOf reads and verifies the shared payload document of a service.
func sharedOf(ctx context.Context, namespace, service string) (*payload.SharedDocument, error) {
	var s corev1.Secret
	err := k8sClient.Get(ctx, types.NamespacedName{Namespace: namespace, Name: imdsv1alpha1.SharedPayloadSecretName(service)}, &s)
	if err != nil {
		return nil, err
	}
	return payload.ParseShared(s.Data[payload.SharedKey])
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

package webhooks_test

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"testing"
	"time"

	admissionv1 "k8s.io/api/admission/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"
	"sigs.k8s.io/controller-runtime/pkg/webhook/admission"

	"github.com/kubevirt-imds/kubevirt-imds/api/payload"
	imdsv1alpha1 "github.com/kubevirt-imds/kubevirt-imds/api/v1alpha1"
	"github.com/kubevirt-imds/kubevirt-imds/controllers"
	"github.com/kubevirt-imds/kubevirt-imds/webhooks"
)

// BenchmarkPodAdmission measures the Pod webhook's handler, decoding,
// mutation and patch computation included, over 1,000 virt-launcher Pod
// admissions per iteration, against an in-memory reader that stands in for
// the API server (the webhook's live reads), so that it measures the handler
// alone. It reports the p50 and p99 latency of one admission; the target is
// p99 < 10 ms.
func BenchmarkPodAdmission(b *testing.B) {
	const pods = 1000
	s, err := controllers.NewScheme()
	if err != nil {
		b.Fatal(err)
	}
	const ns = "bench"
	objs := []client.Object{
		newMDS(ns, "web", imdsv1alpha1.MetadataServiceSpec{
			Selector: metav1.LabelSelector{MatchLabels: map[string]string{"app": "web"}},
			Identity: &imdsv1alpha1.IdentitySpec{ServiceAccountTokens: []imdsv1alpha1.ServiceAccountTokenSpec{{Audience: "vault", ExpirationSeconds: 3600}}},
		}),
		// Competing services, so that selection does real work.
		newMDS(ns, "db", imdsv1alpha1.MetadataServiceSpec{Selector: metav1.LabelSelector{MatchLabels: map[string]string{"app": "db"}}}),
		newMDS(ns, "batch", imdsv1alpha1.MetadataServiceSpec{Selector: metav1.LabelSelector{MatchLabels: map[string]string{"app": "batch"}}}),
	}
	raws := make([][]byte, pods)
	for i := range pods {
		vmi := newVMI(ns, fmt.Sprintf("vm-%04d", i), map[string]string{"app": "web"})
		vmi.UID = types.UID(fmt.Sprintf("00000000-0000-0000-0000-%012d", i))
		secret := &corev1.Secret{
			ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: imdsv1alpha1.PayloadSecretName(vmi.Name),
				Labels: map[string]string{imdsv1alpha1.LabelInstanceUID: string(vmi.UID)}},
			Type: controllers.PayloadSecretType,
			Data: map[string][]byte{payload.SecretKey: []byte(`{}`)},
		}
		objs = append(objs, vmi, secret)
		raw, err := json.Marshal(launcherPod(vmi))
		if err != nil {
			b.Fatal(err)
		}
		raws[i] = raw
	}
	reader := fake.NewClientBuilder().WithScheme(s).WithObjects(objs...).Build()
	h := &webhooks.PodInjector{Reader: reader, Sidecar: webhooks.SidecarOptions{Image: "kubevirt-imds:bench"}}
	ctx := context.Background()

	latencies := make([]time.Duration, 0, pods*b.N)
	b.ResetTimer()
	for range b.N {
		for i := range pods {
			req := admission.Request{AdmissionRequest: admissionv1.AdmissionRequest{
				UID: types.UID(fmt.Sprint(i)), Operation: admissionv1.Create, Namespace: ns,
				Kind: metav1.GroupVersionKind{Version: "v1", Kind: "Pod"}, Object: runtime.RawExtension{Raw: raws[i]},
			}}
			start := time.Now()
			resp := h.Handle(ctx, req)
			latencies = append(latencies, time.Since(start))
			if !resp.Allowed || len(resp.Patches) == 0 {
				b.Fatalf("pod %d: not injected: %+v", i, resp.Result)
			}
		}
	}
	b.StopTimer()
	slices.Sort(latencies)
	pct := func(p float64) float64 {
		return float64(latencies[int(p*float64(len(latencies)-1))].Microseconds()) / 1000
	}
	b.ReportMetric(pct(0.50), "p50-ms")
	b.ReportMetric(pct(0.99), "p99-ms")
	b.ReportMetric(0, "ns/op")
}

package webhooks_test

import (
	"context"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/metrics"

	imdsv1alpha1 "github.com/kubevirt-imds/kubevirt-imds/api/v1alpha1"
	"github.com/kubevirt-imds/kubevirt-imds/webhooks"
)

// injections reads kubevirt_imds_manager_sidecar_injections_total by outcome
// from controller-runtime's registry, which the manager's metrics endpoint
// serves.
func injections() map[string]float64 {
	GinkgoHelper()
	families, err := metrics.Registry.Gather()
	Expect(err).NotTo(HaveOccurred())
	out := map[string]float64{}
	for _, f := range families {
		if f.GetName() != "kubevirt_imds_manager_sidecar_injections_total" {
			continue
		}
		for _, m := range f.GetMetric() {
			out[m.GetLabel()[0].GetValue()] = m.GetCounter().GetValue()
		}
	}
	return out
}

var _ = Describe("Pod webhook metrics", func() {
	It("count launcher Pod admissions by outcome", func() {
		ctx := context.Background()
		ns := newNamespace(ctx)
		before := injections()
		Expect(before).To(HaveKey(webhooks.OutcomePayloadNotReady), "every outcome is exported before it happens")

		serve(ctx, ns, imdsv1alpha1.MetadataServiceSpec{Selector: metav1.LabelSelector{MatchLabels: map[string]string{"app": "web"}}})
		web := newVMI(ns, "web", map[string]string{"app": "web"})
		db := newVMI(ns, "db", map[string]string{"app": "db"})
		create(ctx, web, db)
		waitPayload(ctx, web)
		create(ctx, launcherPod(web), launcherPod(db))

		after := injections()
		Expect(after[webhooks.OutcomeInjected] - before[webhooks.OutcomeInjected]).To(BeNumerically(">=", 1))
		Expect(after[webhooks.OutcomeNotSelected] - before[webhooks.OutcomeNotSelected]).To(BeNumerically(">=", 1))
	})
})

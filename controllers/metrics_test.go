package controllers

import (
	"context"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"

	dto "github.com/prometheus/client_model/go"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	kubevirtv1 "kubevirt.io/api/core/v1"
	"sigs.k8s.io/controller-runtime/pkg/metrics"

	imdsv1alpha1 "github.com/kubevirt-imds/kubevirt-imds/api/v1alpha1"
	"github.com/kubevirt-imds/kubevirt-imds/test/fixtures"
)

// scrape gathers controller-runtime's registry, which the manager's metrics
// endpoint serves, as name → series (labels joined, "k=v,k=v") → value; a
// histogram's value is its sample count.
func scrape() map[string]map[string]float64 {
	GinkgoHelper()
	families, err := metrics.Registry.Gather()
	Expect(err).NotTo(HaveOccurred())
	out := map[string]map[string]float64{}
	for _, f := range families {
		series := map[string]float64{}
		for _, m := range f.GetMetric() {
			key := ""
			for _, l := range m.GetLabel() {
				if key != "" {
					key += ","
				}
				key += l.GetName() + "=" + l.GetValue()
			}
			series[key] = value(f.GetType(), m)
		}
		out[f.GetName()] = series
	}
	return out
}

func value(t dto.MetricType, m *dto.Metric) float64 {
	switch t {
	case dto.MetricType_GAUGE:
		return m.GetGauge().GetValue()
	case dto.MetricType_COUNTER:
		return m.GetCounter().GetValue()
	case dto.MetricType_HISTOGRAM:
		return float64(m.GetHistogram().GetSampleCount())
	}
	return 0
}

var _ = Describe("The manager's metrics", func() {
	It("count each service's selected, served and skipped VMIs by reason, and time payload renders and writes", func() {
		ctx := context.Background()
		ns := newNamespace(ctx)
		before := scrape()

		served := newVMI(ns, "served", map[string]string{"app": "web"})
		missing := newVMI(ns, "missing", map[string]string{"app": "web"})
		passt := newVMI(ns, "passt", map[string]string{"app": "web"})
		passt.Spec.Domain.Devices.Interfaces[0].InterfaceBindingMethod = kubevirtv1.InterfaceBindingMethod{PasstBinding: &kubevirtv1.InterfacePasstBinding{}}
		taken := newVMI(ns, "taken", map[string]string{"app": "web", "tier": "front"})
		create(ctx, served, missing, passt, taken)
		create(ctx, withSidecar(fixtures.LauncherPod(served), "web"), fixtures.LauncherPod(missing))
		create(ctx,
			newMDS(ns, "web", imdsv1alpha1.MetadataServiceSpec{Selector: selector("app", "web")}),
			newMDS(ns, "front", imdsv1alpha1.MetadataServiceSpec{Selector: selector("tier", "front"), Priority: 10}))

		web := "metadataservice=web,namespace=" + ns
		Eventually(func(g Gomega) {
			m := scrape()
			g.Expect(m["kubevirt_imds_manager_selected_instances"]).To(HaveKeyWithValue(web, 3.0))
			g.Expect(m["kubevirt_imds_manager_served_instances"]).To(HaveKeyWithValue(web, 1.0))
			skipped := m["kubevirt_imds_manager_skipped_instances"]
			g.Expect(skipped).To(HaveKeyWithValue(web+",reason=Conflict", 1.0))
			g.Expect(skipped).To(HaveKeyWithValue(web+",reason=SidecarMissing", 1.0))
			g.Expect(skipped).To(HaveKeyWithValue(web+",reason=UnsupportedBinding", 1.0))
			g.Expect(skipped).To(HaveKeyWithValue(web+",reason=PodSecurityForbidsSidecar", 0.0))
			g.Expect(m["kubevirt_imds_manager_selected_instances"]).To(HaveKeyWithValue("metadataservice=front,namespace="+ns, 1.0))
			g.Expect(m["kubevirt_imds_manager_metadataservice_condition"]).To(HaveKeyWithValue(web+",reason=Conflict,status=true,type=Degraded", 1.0))
			g.Expect(m["kubevirt_imds_manager_metadataservice_condition"]).NotTo(HaveKey(web + ",reason=AsExpected,status=false,type=Degraded"))
		}).Should(Succeed())
		after := scrape()
		// Four payloads rendered and created, at least (web's three, front's one).
		Expect(after["kubevirt_imds_manager_payload_render_duration_seconds"][""] -
			before["kubevirt_imds_manager_payload_render_duration_seconds"][""]).To(BeNumerically(">=", 4))
		Expect(after["kubevirt_imds_manager_payload_write_duration_seconds"]["result=created"] -
			before["kubevirt_imds_manager_payload_write_duration_seconds"]["result=created"]).To(BeNumerically(">=", 4))

		By("a deleted service's series go")
		Expect(k8sClient.Delete(ctx, getMDS(ctx, ns, "web"))).To(Succeed())
		Eventually(func() map[string]float64 { return scrape()["kubevirt_imds_manager_served_instances"] }).
			ShouldNot(HaveKey(web))
		Expect(scrape()["kubevirt_imds_manager_skipped_instances"]).NotTo(HaveKey(web + ",reason=Conflict"))
	})
})

func selector(key, value string) metav1.LabelSelector {
	return metav1.LabelSelector{MatchLabels: map[string]string{key: value}}
}

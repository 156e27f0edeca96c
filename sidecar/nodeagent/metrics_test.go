package nodeagent

import (
	"strings"
	"testing"

	dto "github.com/prometheus/client_model/go"
)

func TestRelabelAndMerge(t *testing.T) {
	a, err := relabel(strings.NewReader(`# HELP kubevirt_imds_sidecar_requests_total Requests.
# TYPE kubevirt_imds_sidecar_requests_total counter
kubevirt_imds_sidecar_requests_total{dialect="nocloud",vmi_name="spoofed"} 3
# TYPE kubevirt_imds_sidecar_shared gauge
kubevirt_imds_sidecar_shared 1
# TYPE go_goroutines gauge
go_goroutines 19
`), Request{MACSeed: "uid-a", Instance: "ns-a/vm-a"})
	if err != nil {
		t.Fatal(err)
	}
	b, err := relabel(strings.NewReader(`# TYPE kubevirt_imds_sidecar_requests_total counter
kubevirt_imds_sidecar_requests_total{dialect="ec2"} 5
# TYPE kubevirt_imds_sidecar_shared counter
kubevirt_imds_sidecar_shared 2
`), Request{MACSeed: "uid-b"})
	if err != nil {
		t.Fatal(err)
	}
	merged := mergeFamilies([][]*dto.MetricFamily{a, nil, b})
	// The sidecar's runtime series stay behind: the agent serves its own
	// under the same names.
	if len(merged) != 2 || merged[0].GetName() != "kubevirt_imds_sidecar_requests_total" || merged[1].GetName() != "kubevirt_imds_sidecar_shared" {
		t.Fatalf("families %v", merged)
	}
	var series []string
	for _, m := range merged[0].Metric {
		var labels []string
		for _, l := range m.Label {
			labels = append(labels, l.GetName()+"="+l.GetValue())
		}
		series = append(series, strings.Join(labels, ","))
	}
	want := []string{
		"dialect=nocloud,vmi_namespace=ns-a,vmi_name=vm-a,vmi_uid=uid-a",
		"dialect=ec2,vmi_namespace=,vmi_name=,vmi_uid=uid-b",
	}
	if strings.Join(series, " ") != strings.Join(want, " ") {
		t.Errorf("series\n got %v\nwant %v", series, want)
	}
	if n := len(merged[1].Metric); n != 1 {
		t.Errorf("a family of another type was merged: %d series of kubevirt_imds_sidecar_shared, want the first sidecar's only", n)
	}
	if _, err := relabel(strings.NewReader("not metrics {"), Request{}); err == nil {
		t.Error("malformed metrics parsed")
	}
}

package promtext

import (
	"strings"
	"sync"
	"testing"

	"github.com/VictoriaMetrics/metrics"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

func TestSeries(t *testing.T) {
	f := Family{Name: "x_total", Type: Counter, Help: "X.", Labels: []string{"a", "b"}}
	for _, tt := range []struct {
		values []string
		want   string
	}{
		{[]string{"1", "v1"}, `x_total{a="1",b="v1"}`},
		{[]string{`q"uote`, `back\slash` + "\nnewline"}, `x_total{a="q\"uote",b="back\\slash\nnewline"}`},
		{[]string{"", "…"}, `x_total{a="",b="…"}`},
	} {
		got := f.Series(tt.values...)
		if got != tt.want {
			t.Errorf("Series(%q) = %s, want %s", tt.values, got, tt.want)
			continue
		}
		// The library takes it, and the values read back unchanged.
		set := metrics.NewSet()
		set.NewCounter(got).Inc()
		var b strings.Builder
		if err := Write(&b, set, []Family{f}); err != nil {
			t.Fatal(err)
		}
		parser := expfmt.NewTextParser(model.UTF8Validation)
		fams, err := parser.TextToMetricFamilies(strings.NewReader(b.String()))
		if err != nil {
			t.Fatalf("%v\n%s", err, b.String())
		}
		labels := fams["x_total"].GetMetric()[0].GetLabel()
		if len(labels) != 2 || labels[0].GetValue() != tt.values[0] || labels[1].GetValue() != tt.values[1] {
			t.Errorf("%s reads back as %v", got, labels)
		}
	}
	if got := (Family{Name: "up"}).Series(); got != "up" {
		t.Errorf("Series() = %s", got)
	}
	defer func() {
		if recover() == nil {
			t.Error("Series with a missing value did not panic")
		}
	}()
	f.Series("1")
}

func TestWrite(t *testing.T) {
	// The library's metadata, if on, makes no difference.
	metrics.ExposeMetadata(true)
	t.Cleanup(func() { metrics.ExposeMetadata(false) })

	reqs := Family{Name: "app_requests_total", Type: Counter, Help: "Requests,\nby \\ code.", Labels: []string{"code"}}
	reloads := Family{Name: "app_reloads_total", Type: Counter, Help: "Reloads.", Labels: []string{"result"}}
	latency := Family{Name: "app_duration_seconds", Type: Histogram, Help: "Latency.", Labels: []string{"dialect"}}
	unused := Family{Name: "app_unused", Type: Gauge, Help: "Never set."}
	set := metrics.NewSet()
	codes := NewCounterVec(set, reqs)
	codes.With("200").Inc()
	codes.With("200").Inc()
	codes.With("404").Inc()
	set.NewGauge(reloads.Series("loaded"), func() float64 { return 3 })
	h := set.NewPrometheusHistogramExt(latency.Series("v1"), []float64{0.001, 0.25, 1})
	h.Update(0.0005)
	h.Update(0.5)
	set.NewCounter("app_undescribed_total").Inc()

	var b strings.Builder
	if err := Write(&b, set, []Family{reqs, reloads, latency, unused}); err != nil {
		t.Fatal(err)
	}
	want := `# HELP app_duration_seconds Latency.
# TYPE app_duration_seconds histogram
app_duration_seconds_bucket{dialect="v1",le="0.001"} 1
app_duration_seconds_bucket{dialect="v1",le="0.25"} 1
app_duration_seconds_bucket{dialect="v1",le="1"} 2
app_duration_seconds_bucket{dialect="v1",le="+Inf"} 2
app_duration_seconds_sum{dialect="v1"} 0.5005
app_duration_seconds_count{dialect="v1"} 2
# HELP app_reloads_total Reloads.
# TYPE app_reloads_total counter
app_reloads_total{result="loaded"} 3
# HELP app_requests_total Requests,\nby \\ code.
# TYPE app_requests_total counter
app_requests_total{code="200"} 2
app_requests_total{code="404"} 1
app_undescribed_total 1
`
	if b.String() != want {
		t.Errorf("got\n%s\nwant\n%s", b.String(), want)
	}
	parser := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := parser.TextToMetricFamilies(strings.NewReader(b.String()))
	if err != nil {
		t.Fatal(err)
	}
	if got := fams["app_requests_total"].GetHelp(); got != reqs.Help {
		t.Errorf("HELP reads back as %q", got)
	}
}

func TestVec(t *testing.T) {
	var mu sync.Mutex
	made := map[int]int{}
	v := NewVec(func(k int) *int {
		mu.Lock()
		defer mu.Unlock()
		made[k]++
		return new(k)
	})
	var wg sync.WaitGroup
	got := make([]*int, 16)
	for i := range got {
		wg.Go(func() { got[i] = v.With(i % 2) })
	}
	wg.Wait()
	for i, p := range got {
		if p != got[i%2] || *p != i%2 {
			t.Errorf("With(%d) = %d at %p, want the first", i%2, *p, p)
		}
	}
	if made[0] != 1 || made[1] != 1 {
		t.Errorf("series made %v, want once each", made)
	}
}

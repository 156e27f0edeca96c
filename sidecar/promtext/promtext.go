// Package promtext is what the sidecar's series need on top of
// github.com/VictoriaMetrics/metrics, which it uses rather than the
// Prometheus client: that client's protobuf dependencies cost a process that
// runs once per VM megabytes of memory. The library knows series by name
// only, so a Family keeps what Prometheus' registry kept (the HELP text, the
// TYPE, the label names), and Write adds the metadata lines to the text
// exposition.
package promtext

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"strings"
	"sync"

	"github.com/VictoriaMetrics/metrics"
)

// Type is a family's TYPE in the text exposition format.
type Type string

// The types the sidecar's families have.
const (
	Counter   Type = "counter"
	Gauge     Type = "gauge"
	Histogram Type = "histogram"
)

// Family is a metric family as /metrics describes it. Tests that check
// dashboards and alert rules read the names and labels of the sidecar's
// series from its families.
type Family struct {
	Name string
	Type Type
	Help string
	// Labels are the label names of every series, in the order Series
	// takes their values.
	Labels []string
}

// labelValue escapes a label value as the text format quotes it.
var labelValue = strings.NewReplacer(`\`, `\\`, `"`, `\"`, "\n", `\n`)

// helpText escapes a HELP text as the text format reads it.
var helpText = strings.NewReplacer(`\`, `\\`, "\n", `\n`)

// Series is the name the library takes for f's series with values, the
// label values in the order of f.Labels, quoted so that any value reads
// back unchanged. It panics when values do not match f.Labels, as a
// Prometheus vector does: that is a bug in the caller, not an input.
func (f Family) Series(values ...string) string {
	if len(values) != len(f.Labels) {
		panic(fmt.Sprintf("promtext: %s has %d labels, got %d values", f.Name, len(f.Labels), len(values)))
	}
	if len(values) == 0 {
		return f.Name
	}
	var b strings.Builder
	b.WriteString(f.Name)
	for i, l := range f.Labels {
		if i == 0 {
			b.WriteByte('{')
		} else {
			b.WriteByte(',')
		}
		b.WriteString(l)
		b.WriteString(`="`)
		labelValue.WriteString(&b, values[i]) //nolint:errcheck // a strings.Builder does not fail
		b.WriteByte('"')
	}
	b.WriteByte('}')
	return b.String()
}

// Vec holds a family's series by K, what tells them apart (their label
// values, or what those are formatted from), and creates each on first use:
// as with a Prometheus vector, a series appears once it has a value. Looking
// one up builds no name, which would cost allocations on every request.
type Vec[K comparable, M any] struct {
	create func(K) M

	mu     sync.RWMutex
	series map[K]M
}

// NewVec returns a Vec whose series create makes, once per key.
func NewVec[K comparable, M any](create func(K) M) *Vec[K, M] {
	return &Vec[K, M]{create: create, series: map[K]M{}}
}

// NewCounterVec returns the counters of f, a family with one label, in set
// by that label's value.
func NewCounterVec(set *metrics.Set, f Family) *Vec[string, *metrics.Counter] {
	return NewVec(func(value string) *metrics.Counter { return set.GetOrCreateCounter(f.Series(value)) })
}

// With returns k's series, creating it on first use.
func (v *Vec[K, M]) With(k K) M {
	v.mu.RLock()
	m, ok := v.series[k]
	v.mu.RUnlock()
	if ok {
		return m
	}
	v.mu.Lock()
	defer v.mu.Unlock()
	if m, ok := v.series[k]; ok {
		return m
	}
	m = v.create(k)
	v.series[k] = m
	return m
}

// Write writes set's series to w in the text exposition format, each
// family of fams preceded by its HELP and TYPE lines; a family without
// series is left out, as Prometheus' registry leaves it. The library's own
// metadata lines, written while its process-wide metrics.ExposeMetadata is
// on, are dropped: their HELP has no text, and their TYPE is the library's
// kind of series, so a counter read through a gauge function would say
// gauge.
func Write(w io.Writer, set *metrics.Set, fams []Family) error {
	var in bytes.Buffer
	set.WritePrometheus(&in)
	byName := make(map[string]*Family, len(fams))
	for i := range fams {
		byName[fams[i].Name] = &fams[i]
	}
	out := bufio.NewWriter(w)
	var prev *Family
	for line := range bytes.Lines(in.Bytes()) {
		if line[0] == '#' {
			continue
		}
		// The library groups a family's series: its metadata goes once,
		// before the first.
		if f := familyOf(line, byName); f != nil && f != prev {
			fmt.Fprintf(out, "# HELP %s %s\n# TYPE %s %s\n", f.Name, helpText.Replace(f.Help), f.Name, f.Type)
			prev = f
		}
		out.Write(line) //nolint:errcheck // Flush returns the error
	}
	return out.Flush()
}

// familyOf returns the family of the series on line, one of byName, or nil.
func familyOf(line []byte, byName map[string]*Family) *Family {
	name := line
	if i := bytes.IndexAny(line, "{ "); i >= 0 {
		name = line[:i]
	}
	if f := byName[string(name)]; f != nil {
		return f
	}
	for _, suffix := range []string{"_bucket", "_sum", "_count"} {
		if base, ok := bytes.CutSuffix(name, []byte(suffix)); ok {
			if f := byName[string(base)]; f != nil && f.Type == Histogram {
				return f
			}
		}
	}
	return nil
}

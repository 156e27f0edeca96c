// Package measure holds what the load tools and benchmarks share to report
// their numbers: latency percentiles and counts of the API requests a
// client makes. hack/loadtest measures an HTTP endpoint with it, the
// webhooks' storm benchmark a control plane under a boot storm.
package measure

import (
	"fmt"
	"net/http"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"
)

// Percentile of sorted durations, nearest-rank; 0 for none.
func Percentile(sorted []time.Duration, p float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	i := int(float64(len(sorted))*p+0.999999) - 1
	return sorted[max(0, min(i, len(sorted)-1))]
}

// Millis is d in milliseconds, to the microsecond.
func Millis(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

// Latencies collects durations from concurrent goroutines.
type Latencies struct {
	mu sync.Mutex
	d  []time.Duration
}

// Add records one duration.
func (l *Latencies) Add(d time.Duration) {
	l.mu.Lock()
	l.d = append(l.d, d)
	l.mu.Unlock()
}

// Sorted returns the durations recorded so far, sorted.
func (l *Latencies) Sorted() []time.Duration {
	l.mu.Lock()
	defer l.mu.Unlock()
	s := slices.Clone(l.d)
	slices.Sort(s)
	return s
}

// Summary is p50, p99 and max of what was recorded, in milliseconds.
func (l *Latencies) Summary() (n int, p50, p99, maxMs float64) {
	s := l.Sorted()
	if len(s) == 0 {
		return 0, 0, 0, 0
	}
	return len(s), Millis(Percentile(s, 0.50)), Millis(Percentile(s, 0.99)), Millis(s[len(s)-1])
}

// Requests counts a client's API requests by verb and resource: wrap the
// client's transport with Wrap (rest.Config.Wrap).
type Requests struct {
	mu     sync.Mutex
	counts map[string]int
	only   string
}

// Only counts from now on the requests in namespace alone (all when empty).
func (r *Requests) Only(namespace string) {
	r.mu.Lock()
	r.only = namespace
	r.mu.Unlock()
}

// Wrap counts every request rt sends.
func (r *Requests) Wrap(rt http.RoundTripper) http.RoundTripper {
	return roundTripFunc(func(req *http.Request) (*http.Response, error) {
		key := verbOf(req) + " " + ResourceOf(req.URL.Path)
		r.mu.Lock()
		if r.only != "" && !strings.Contains(req.URL.Path, "/namespaces/"+r.only+"/") {
			r.mu.Unlock()
			return rt.RoundTrip(req)
		}
		if r.counts == nil {
			r.counts = map[string]int{}
		}
		r.counts[key]++
		r.mu.Unlock()
		return rt.RoundTrip(req)
	})
}

// Reset forgets what was counted.
func (r *Requests) Reset() {
	r.mu.Lock()
	r.counts = nil
	r.mu.Unlock()
}

// Writes is the number of requests that change something (not GET, LIST or
// WATCH), and Reads those that do not, watches excluded.
func (r *Requests) Writes() (writes, reads int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for k, n := range r.counts {
		switch verb, _, _ := strings.Cut(k, " "); verb {
		case "get", "list":
			reads += n
		case "watch":
		default:
			writes += n
		}
	}
	return writes, reads
}

// String lists the counts, sorted: "create secrets=1000 patch metadataservices/status=12".
func (r *Requests) String() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	parts := make([]string, 0, len(r.counts))
	for k, n := range r.counts {
		parts = append(parts, fmt.Sprintf("%s=%d", k, n))
	}
	sort.Strings(parts)
	return strings.Join(parts, " ")
}

type roundTripFunc func(*http.Request) (*http.Response, error)

func (f roundTripFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

// verbOf is the Kubernetes verb of req, as audit logs name it.
func verbOf(req *http.Request) string {
	q := req.URL.Query()
	switch req.Method {
	case http.MethodGet:
		switch {
		case q.Get("watch") == "true" || q.Get("watch") == "1":
			return "watch"
		case isCollection(req.URL.Path):
			return "list"
		}
		return "get"
	case http.MethodPost:
		return "create"
	case http.MethodPut:
		return "update"
	}
	return strings.ToLower(req.Method)
}

// isCollection reports whether path names a collection (…/namespaces/x/pods)
// rather than an object (…/namespaces/x/pods/y).
func isCollection(path string) bool {
	return len(resourcePath(path)) == 1
}

// ResourceOf turns /api/v1/namespaces/x/secrets/y into "secrets" and
// …/metadataservices/y/status into "metadataservices/status".
func ResourceOf(path string) string {
	rest := resourcePath(path)
	switch len(rest) {
	case 0:
		return path
	case 1, 2:
		return rest[0]
	}
	return rest[0] + "/" + rest[2]
}

// resourcePath is path from the resource on: [resource, name, subresource]
// as far as present.
func resourcePath(path string) []string {
	parts := strings.Split(strings.Trim(path, "/"), "/")
	switch {
	case len(parts) >= 2 && parts[0] == "api":
		parts = parts[2:]
	case len(parts) >= 3 && parts[0] == "apis":
		parts = parts[3:]
	default:
		return nil
	}
	if len(parts) >= 3 && parts[0] == "namespaces" {
		parts = parts[2:]
	}
	return parts
}

// String is "p50 1.2 ms, p99 3.4 ms, max 5.6 ms (n 1000)".
func (l *Latencies) String() string {
	n, p50, p99, maxMs := l.Summary()
	return fmt.Sprintf("p50 %.1f ms, p99 %.1f ms, max %.1f ms (n %d)", p50, p99, maxMs, n)
}

// Reset forgets what was recorded.
func (l *Latencies) Reset() {
	l.mu.Lock()
	l.d = nil
	l.mu.Unlock()
}

package controllers

import (
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/util/workqueue"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"
)

// recordingQueue records what the throttle hands the work queue.
type recordingQueue struct {
	workqueue.TypedRateLimitingInterface[reconcile.Request]
	added int
	after []time.Duration
}

func (q *recordingQueue) Add(reconcile.Request) { q.added++ }
func (q *recordingQueue) AddAfter(_ reconcile.Request, d time.Duration) {
	q.after = append(q.after, d)
}

// An isolated event reconciles at once; the events that follow within the
// interval share one reconcile at its end.
func TestThrottleSharesReconciles(t *testing.T) {
	const interval = time.Hour // nothing here waits for it
	th := newThrottle(interval)
	q := &recordingQueue{}
	req := reconcile.Request{NamespacedName: types.NamespacedName{Namespace: "ns", Name: "web"}}
	th.add(q, req)
	if q.added != 1 || len(q.after) != 0 {
		t.Fatalf("first event: added %d, after %v; want at once", q.added, q.after)
	}
	for range 100 {
		th.add(q, req)
	}
	if q.added != 1 || len(q.after) != 100 {
		t.Fatalf("a storm of events: added %d, after %d; want every event scheduled after the first", q.added, len(q.after))
	}
	for _, d := range q.after {
		// The queue merges them into one reconcile.
		if d <= 0 || d > interval || d > q.after[0] {
			t.Fatalf("scheduled after %v, the first after %v; want all at the interval's end", d, q.after[0])
		}
	}
	other := reconcile.Request{NamespacedName: types.NamespacedName{Namespace: "ns", Name: "db"}}
	th.add(q, other)
	if q.added != 2 {
		t.Fatal("another service's event waited for this one's interval")
	}
	th.due[req] = time.Now().Add(-interval)
	th.add(q, req)
	if q.added != 3 {
		t.Fatal("an event after a quiet interval did not reconcile at once")
	}
}

package controllers

import (
	"context"
	"sync"
	"time"

	"k8s.io/client-go/util/workqueue"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"
)

// instanceEventInterval is the shortest time between two reconciles of one
// MetadataService that events of its VMIs, their launcher Pods and their
// payload Secrets start. A reconcile reads every VMI and launcher Pod of the
// namespace, so in a boot storm — three such events per VM — reconciling on
// each would cost the manager CPU quadratic in the VMs and patch the status
// on nearly every one of them, taking both from the API server the VMs are
// being created on. An isolated event still reconciles at once; those that
// follow within the interval share one reconcile at its end. Payloads do not
// wait for it: the Pod webhook renders the payload of a launcher Pod that
// arrives first (docs/webhooks.md).
const instanceEventInterval = time.Second

// throttledEnqueue is handler.EnqueueRequestsFromMapFunc(fn), but a request
// is reconciled at once only when its last reconcile from these events was
// scheduled at least interval ago; otherwise interval after that one, and an
// event that arrives while one is scheduled joins it. Every event is
// followed by a reconcile that starts after it (and so reads the cache with
// it).
//
// Handlers that share t share its reconciles.
func throttledEnqueue(fn handler.MapFunc, t *throttle) handler.EventHandler {
	inner := handler.EnqueueRequestsFromMapFunc(fn)
	wrap := func(q workqueue.TypedRateLimitingInterface[reconcile.Request]) workqueue.TypedRateLimitingInterface[reconcile.Request] {
		return throttledQueue{TypedRateLimitingInterface: q, t: t}
	}
	return handler.Funcs{
		CreateFunc: func(ctx context.Context, e event.CreateEvent, q workqueue.TypedRateLimitingInterface[reconcile.Request]) {
			inner.Create(ctx, e, wrap(q))
		},
		UpdateFunc: func(ctx context.Context, e event.UpdateEvent, q workqueue.TypedRateLimitingInterface[reconcile.Request]) {
			inner.Update(ctx, e, wrap(q))
		},
		DeleteFunc: func(ctx context.Context, e event.DeleteEvent, q workqueue.TypedRateLimitingInterface[reconcile.Request]) {
			inner.Delete(ctx, e, wrap(q))
		},
		GenericFunc: func(ctx context.Context, e event.GenericEvent, q workqueue.TypedRateLimitingInterface[reconcile.Request]) {
			inner.Generic(ctx, e, wrap(q))
		},
	}
}

// throttledQueue hands the requests of a mapped handler to its throttle.
// It is not a priority queue, so the handler calls Add.
type throttledQueue struct {
	workqueue.TypedRateLimitingInterface[reconcile.Request]
	t *throttle
}

func (q throttledQueue) Add(req reconcile.Request) { q.t.add(q.TypedRateLimitingInterface, req) }

// maxThrottled bounds the memory of due times; entries older than the
// interval say nothing and go first.
const maxThrottled = 4096

// newThrottle returns a throttle of at most one reconcile per interval.
func newThrottle(interval time.Duration) *throttle {
	return &throttle{interval: interval, due: map[reconcile.Request]time.Time{}}
}

// throttle remembers when each request was last scheduled.
type throttle struct {
	interval time.Duration
	mu       sync.Mutex
	due      map[reconcile.Request]time.Time
}

func (t *throttle) add(q workqueue.TypedRateLimitingInterface[reconcile.Request], req reconcile.Request) {
	now := time.Now()
	t.mu.Lock()
	last, ok := t.due[req]
	switch {
	case ok && last.After(now):
		// A reconcile is scheduled after this event. Scheduled again all the
		// same: controller-runtime's priority queue merges a delayed add
		// into the item already waiting, which may be reconciled before
		// this event; the queue keeps the earlier time either way.
		t.mu.Unlock()
		q.AddAfter(req, last.Sub(now))
	case !ok || now.Sub(last) >= t.interval:
		t.due[req] = now
		t.prune(now)
		t.mu.Unlock()
		q.Add(req)
	default:
		next := last.Add(t.interval)
		t.due[req] = next
		t.mu.Unlock()
		q.AddAfter(req, next.Sub(now))
	}
}

// prune forgets due times older than the interval once there are many
// (services deleted, or many namespaces).
func (t *throttle) prune(now time.Time) {
	if len(t.due) <= maxThrottled {
		return
	}
	for req, at := range t.due {
		if now.Sub(at) >= t.interval {
			delete(t.due, req)
		}
	}
}

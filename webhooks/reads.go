package webhooks

import (
	"context"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"
	toolscache "k8s.io/client-go/tools/cache"
	crcache "sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"

	imdsv1alpha1 "github.com/kubevirt-imds/kubevirt-imds/api/v1alpha1"
	"github.com/kubevirt-imds/kubevirt-imds/controllers"
)

// Admission reads from the manager's cache: a boot storm of thousands of VMs
// then costs the API server nothing beyond the watches the controller keeps
// anyway. A cache lags the API server by milliseconds, and the objects
// admission needs are often created just before the object admitted (kubectl
// apply of a MetadataService with its VMs; virt-controller creating the Pod
// on the VMI's event; the controller writing the payload on that same
// event), so a miss is asked again of the API server, and the payload Secret
// is waited for on the cache's own events.

// liveTimeout bounds one live read made on a cache miss.
const liveTimeout = time.Second

// servingService returns the MetadataService serving a VMI with labels in
// namespace: from the cache, and, when no cached service selects it, from
// the API server through services (a service created moments ago may not be
// cached yet). nil when none serves it.
func servingService(ctx context.Context, cache client.Reader, services *liveServices, live client.Reader, namespace string, labels map[string]string) (*imdsv1alpha1.MetadataService, error) {
	var cached imdsv1alpha1.MetadataServiceList
	if err := cache.List(ctx, &cached, client.InNamespace(namespace)); err != nil {
		return nil, err
	}
	if mds := controllers.ServingMetadataService(cached.Items, labels); mds != nil || live == nil {
		return mds, nil
	}
	items, err := services.list(ctx, live, namespace)
	if err != nil {
		return nil, err
	}
	return controllers.ServingMetadataService(items, labels), nil
}

// liveServices lists a namespace's MetadataServices live, sharing one list
// among the admissions that miss the cache at once (a storm of VMs in a
// namespace no service selects misses on every VM). A caller shares only a
// list that started after it asked, so that it sees every service created
// before its object: per namespace one list runs and at most one waits.
type liveServices struct {
	mu     sync.Mutex
	flying map[string]*nsFlights
}

type nsFlights struct{ running, next *flight }

type flight struct {
	done  chan struct{}
	items []imdsv1alpha1.MetadataService
	err   error
	// callers share the flight: what coalescing saves.
	callers int
}

func (l *liveServices) list(ctx context.Context, live client.Reader, namespace string) ([]imdsv1alpha1.MetadataService, error) {
	l.mu.Lock()
	if l.flying == nil {
		l.flying = map[string]*nsFlights{}
	}
	s := l.flying[namespace]
	if s == nil {
		s = &nsFlights{}
		l.flying[namespace] = s
	}
	var f *flight
	switch {
	case s.running == nil:
		f = &flight{done: make(chan struct{})}
		s.running = f
		go l.fly(live, namespace, f)
	case s.next != nil:
		f = s.next
	default:
		f = &flight{done: make(chan struct{})}
		s.next = f
	}
	f.callers++
	l.mu.Unlock()
	select {
	case <-f.done:
		return f.items, f.err
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// fly runs f, then the flight that queued behind it, until none is left.
func (l *liveServices) fly(live client.Reader, namespace string, f *flight) {
	for f != nil {
		// Not the caller's context: the list serves every caller of f.
		ctx, cancel := context.WithTimeout(context.Background(), liveTimeout)
		var list imdsv1alpha1.MetadataServiceList
		f.err = live.List(ctx, &list, client.InNamespace(namespace))
		cancel()
		f.items = list.Items
		close(f.done)
		l.mu.Lock()
		s := l.flying[namespace]
		f, s.running, s.next = s.next, s.next, nil
		if f == nil {
			delete(l.flying, namespace)
		}
		l.mu.Unlock()
	}
}

// CacheEvents wakes admissions waiting for an object to reach the manager's
// cache (a payload Secret, a VMI) when the cache sees it added or changed:
// waiting on the cache costs the API server nothing, where asking it again
// adds a request to a server that, in a boot storm, is the bottleneck.
type CacheEvents struct {
	keep    func(client.Object) bool
	mu      sync.Mutex
	waiters map[types.NamespacedName]map[chan struct{}]struct{}
}

// NewCacheEvents returns CacheEvents fed by an informer's events of the
// objects keep passes (all when nil).
func NewCacheEvents(informer crcache.Informer, keep func(client.Object) bool) (*CacheEvents, error) {
	e := &CacheEvents{keep: keep, waiters: map[types.NamespacedName]map[chan struct{}]struct{}{}}
	_, err := informer.AddEventHandler(toolscache.ResourceEventHandlerFuncs{
		AddFunc:    e.notify,
		UpdateFunc: func(_, obj any) { e.notify(obj) },
	})
	return e, err
}

// isPayloadSecret passes the payload Secrets the operator writes.
func isPayloadSecret(o client.Object) bool {
	_, ok := o.(*corev1.Secret)
	return ok && o.GetLabels()[imdsv1alpha1.LabelManagedBy] == imdsv1alpha1.ManagedByValue
}

// subscribe returns a channel that receives after each change of the object
// key; call cancel when done.
func (e *CacheEvents) subscribe(key types.NamespacedName) (<-chan struct{}, func()) {
	ch := make(chan struct{}, 1)
	e.mu.Lock()
	if e.waiters[key] == nil {
		e.waiters[key] = map[chan struct{}]struct{}{}
	}
	e.waiters[key][ch] = struct{}{}
	e.mu.Unlock()
	return ch, func() {
		e.mu.Lock()
		delete(e.waiters[key], ch)
		if len(e.waiters[key]) == 0 {
			delete(e.waiters, key)
		}
		e.mu.Unlock()
	}
}

// notify runs on the informer's goroutine after its store holds obj, so a
// woken waiter reads the new object from the cache.
func (e *CacheEvents) notify(obj any) {
	o, ok := obj.(client.Object)
	if !ok || (e.keep != nil && !e.keep(o)) {
		return
	}
	key := types.NamespacedName{Namespace: o.GetNamespace(), Name: o.GetName()}
	e.mu.Lock()
	defer e.mu.Unlock()
	for ch := range e.waiters[key] {
		select {
		case ch <- struct{}{}:
		default: // already pending
		}
	}
}

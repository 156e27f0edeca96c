package webhooks

import (
	"context"
	"fmt"
	"runtime"
	"sync/atomic"
	"testing"

	"sigs.k8s.io/controller-runtime/pkg/client"

	imdsv1alpha1 "github.com/kubevirt-imds/kubevirt-imds/api/v1alpha1"
)

// gatedLister answers each List with one service named after the call's
// number, once the test lets the call through.
type gatedLister struct {
	client.Reader
	calls   atomic.Int32
	started chan int32
	release chan struct{}
}

func (g *gatedLister) List(_ context.Context, list client.ObjectList, _ ...client.ListOption) error {
	n := g.calls.Add(1)
	g.started <- n
	<-g.release
	l := list.(*imdsv1alpha1.MetadataServiceList)
	l.Items = []imdsv1alpha1.MetadataService{{}}
	l.Items[0].Name = fmt.Sprint(n)
	return nil
}

// A storm of cache misses in one namespace costs the API server two lists,
// not one per admission, and no admission is answered by a list that
// started before it asked (it could miss a service created just before its
// object).
func TestLiveServicesShareOnlyLaterLists(t *testing.T) {
	g := &gatedLister{started: make(chan int32, 10), release: make(chan struct{})}
	var l liveServices
	ask := func() <-chan string {
		got := make(chan string, 1)
		go func() {
			items, err := l.list(context.Background(), g, "ns")
			if err != nil || len(items) != 1 {
				t.Errorf("list: %v, %d items", err, len(items))
			}
			got <- items[0].Name
		}()
		return got
	}

	first := ask()
	if n := <-g.started; n != 1 {
		t.Fatalf("first list is call %d", n)
	}
	// 50 admissions arrive while the first list runs.
	var later []<-chan string
	for range 50 {
		later = append(later, ask())
	}
	// Every one of them has queued before the first list ends.
	waitQueued(t, &l, "ns", 50)
	close(g.release)
	if got := <-first; got != "1" {
		t.Errorf("the first caller got list %s", got)
	}
	for _, ch := range later {
		if got := <-ch; got != "2" {
			t.Errorf("a caller that asked during list 1 got list %s, want 2", got)
		}
	}
	if n := g.calls.Load(); n != 2 {
		t.Errorf("%d lists for 51 admissions, want 2", n)
	}
}

// waitQueued waits until n callers have queued behind namespace's running
// list.
func waitQueued(t *testing.T, l *liveServices, namespace string, n int) {
	t.Helper()
	for {
		l.mu.Lock()
		s := l.flying[namespace]
		queued := s != nil && s.next != nil && s.next.callers == n
		l.mu.Unlock()
		if queued {
			return
		}
		runtime.Gosched()
	}
}

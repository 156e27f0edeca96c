package sidecar

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-logr/logr"
)

func TestWatchLiveness(t *testing.T) {
	errDown := errors.New("down")
	t.Run("ends the sidecar after failures in a row", func(t *testing.T) {
		var calls atomic.Int32
		err := watchLiveness(context.Background(), func(context.Context) error { calls.Add(1); return errDown },
			time.Millisecond, time.Second, 3, logr.Discard())
		if !errors.Is(err, errDown) || calls.Load() != 3 {
			t.Fatalf("err %v after %d checks, want errDown after 3", err, calls.Load())
		}
	})
	t.Run("a success resets the count", func(t *testing.T) {
		var calls atomic.Int32
		// fail, fail, ok, fail, fail, ok, fail, fail, then fail: three in a row at the 9th.
		err := watchLiveness(context.Background(), func(context.Context) error {
			n := calls.Add(1)
			if n%3 == 0 && n < 9 {
				return nil
			}
			return errDown
		}, time.Millisecond, time.Second, 3, logr.Discard())
		if err == nil || calls.Load() != 9 {
			t.Fatalf("err %v after %d checks, want an error after 9", err, calls.Load())
		}
	})
	t.Run("stops without error when the sidecar stops", func(t *testing.T) {
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() {
			done <- watchLiveness(ctx, func(context.Context) error { return nil }, time.Millisecond, time.Second, 3, logr.Discard())
		}()
		cancel()
		if err := <-done; err != nil {
			t.Fatal(err)
		}
	})
	t.Run("a check that hangs fails by its timeout", func(t *testing.T) {
		err := watchLiveness(context.Background(), func(ctx context.Context) error { <-ctx.Done(); return ctx.Err() },
			time.Millisecond, 5*time.Millisecond, 2, logr.Discard())
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("err %v, want the check's deadline", err)
		}
	})
}

func TestHealthzCheck(t *testing.T) {
	var status atomic.Int32
	status.Store(http.StatusOK)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(int(status.Load())) }))
	defer srv.Close()
	check := healthzCheck(srv.Listener.Addr().String())
	if err := check(context.Background()); err != nil {
		t.Fatal(err)
	}
	status.Store(http.StatusInternalServerError)
	if err := check(context.Background()); err == nil {
		t.Fatal("a 500 passed")
	}
}

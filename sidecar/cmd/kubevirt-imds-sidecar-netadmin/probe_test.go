package main

import (
	"net/http"
	"net/http/httptest"
	"testing"
	"time"
)

func TestProbe(t *testing.T) {
	ok := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {}))
	defer ok.Close()
	bad := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		http.Error(w, "not ready", http.StatusServiceUnavailable)
	}))
	defer bad.Close()
	if err := probe(ok.URL+"/healthz", time.Second); err != nil {
		t.Errorf("200: %v", err)
	}
	if err := probe(bad.URL+"/readyz", time.Second); err == nil {
		t.Error("503: no error")
	}
	if err := probe("http://192.0.2.1/healthz", time.Second); err == nil {
		t.Error("non-loopback URL accepted")
	}
}

package measure

import (
	"net/http"
	"net/url"
	"testing"
	"time"
)

func TestPercentile(t *testing.T) {
	d := []time.Duration{1, 2, 3, 4, 5, 6, 7, 8, 9, 10}
	if Percentile(d, 0.5) != 5 || Percentile(d, 0.99) != 10 || Percentile(d[:1], 0.99) != 1 || Percentile(nil, 0.5) != 0 {
		t.Fatal("percentile")
	}
}

func TestRequests(t *testing.T) {
	var r Requests
	rt := r.Wrap(roundTripFunc(func(*http.Request) (*http.Response, error) { return &http.Response{Body: http.NoBody}, nil }))
	for _, c := range []struct{ method, url string }{
		{"POST", "/api/v1/namespaces/a/secrets"},
		{"GET", "/api/v1/namespaces/a/secrets/s"},
		{"GET", "/apis/imds.kubevirt.io/v1alpha1/namespaces/a/metadataservices"},
		{"GET", "/apis/imds.kubevirt.io/v1alpha1/namespaces/a/metadataservices?watch=true"},
		{"PATCH", "/apis/imds.kubevirt.io/v1alpha1/namespaces/a/metadataservices/m/status"},
		{"GET", "/api/v1/namespaces/a"},
	} {
		u, _ := url.Parse(c.url)
		resp, err := rt.RoundTrip(&http.Request{Method: c.method, URL: u})
		if err != nil {
			t.Fatal(err)
		}
		_ = resp.Body.Close()
	}
	writes, reads := r.Writes()
	if writes != 2 || reads != 3 {
		t.Errorf("writes %d, reads %d: %s", writes, reads, r.String())
	}
	want := "create secrets=1 get namespaces=1 get secrets=1 list metadataservices=1 patch metadataservices/status=1 watch metadataservices=1"
	if got := r.String(); got != want {
		t.Errorf("got %q, want %q", got, want)
	}
}

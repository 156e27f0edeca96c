package server

import (
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/kubevirt-imds/kubevirt-imds/sidecar/store/storetest"
)

// discard is a ResponseWriter that keeps nothing, so the benchmarks measure
// the handler rather than a recorder.
type discard struct {
	h    http.Header
	code int
}

func (d *discard) Header() http.Header         { return d.h }
func (d *discard) Write(b []byte) (int, error) { return len(b), nil }
func (d *discard) WriteHeader(code int)        { d.code = code }

func benchHandler(b *testing.B, target string, hdr ...string) {
	e := newEnv(b, storetest.Document(), nil)
	h := e.srv.Handler()
	req := httptest.NewRequest(http.MethodGet, target, nil)
	req.Host = Address
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	w := &discard{h: http.Header{}}
	h.ServeHTTP(w, req)
	want := w.code
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		clear(w.h)
		h.ServeHTTP(w, req)
	}
	b.StopTimer()
	if w.code != want || (want != http.StatusOK && want != http.StatusNotFound) {
		b.Fatalf("status %d", w.code)
	}
}

func BenchmarkHandlerNoCloudMetaData(b *testing.B) { benchHandler(b, "/nocloud/meta-data") }
func BenchmarkHandlerNoCloudUserData(b *testing.B) { benchHandler(b, "/nocloud/user-data") }
func BenchmarkHandlerOpenStackMetaData(b *testing.B) {
	benchHandler(b, "/openstack/latest/meta_data.json")
}
func BenchmarkHandlerEC2Leaf(b *testing.B)    { benchHandler(b, "/latest/meta-data/instance-id") }
func BenchmarkHandlerV1Identity(b *testing.B) { benchHandler(b, "/v1/identity", "Metadata", "true") }
func BenchmarkHandlerV1Token(b *testing.B) {
	benchHandler(b, "/v1/token?audience=vault", "Metadata", "true")
}
func BenchmarkHandlerNotFound(b *testing.B) { benchHandler(b, "/nope") }

// BenchmarkHandlerParallel runs the NoCloud meta-data route from every
// GOMAXPROCS goroutine at once: the shared limiter and snapshot are the
// contended parts.
func BenchmarkHandlerParallel(b *testing.B) {
	e := newEnv(b, storetest.Document(), nil)
	h := e.srv.Handler()
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		req := httptest.NewRequest(http.MethodGet, "/nocloud/meta-data", nil)
		req.Host = Address
		w := &discard{h: http.Header{}}
		for pb.Next() {
			clear(w.h)
			h.ServeHTTP(w, req)
			if w.code != http.StatusOK {
				b.Errorf("status %d", w.code)
				return
			}
		}
	})
}

// BenchmarkEC2PlainGet is an IMDSv1 GET of a leaf (tokens optional): the
// baseline of BenchmarkEC2TokenPair.
func BenchmarkEC2PlainGet(b *testing.B) {
	doc := ec2Document(b, "optional")
	e := newEnv(b, doc, nil)
	h := e.srv.Handler()
	get := httptest.NewRequest(http.MethodGet, "/latest/meta-data/instance-id", nil)
	get.Host = Address
	w := &discard{h: http.Header{}}
	b.ReportAllocs()
	for b.Loop() {
		clear(w.h)
		h.ServeHTTP(w, get)
	}
	if w.code != http.StatusOK {
		b.Fatalf("status %d", w.code)
	}
}

// BenchmarkEC2TokenPair is what an IMDSv2 client pays per value when it
// asks for a token each time (the AWS CLI's habit): a token PUT and a GET
// carrying it, tokens required.
func BenchmarkEC2TokenPair(b *testing.B) {
	doc := ec2Document(b, "required")
	e := newEnv(b, doc, nil)
	h := e.srv.Handler()
	put := httptest.NewRequest(http.MethodPut, TokenPath, nil)
	put.Host = Address
	put.Header.Set(TokenTTLHeader, "21600")
	get := httptest.NewRequest(http.MethodGet, "/latest/meta-data/instance-id", nil)
	get.Host = Address
	rec := httptest.NewRecorder()
	w := &discard{h: http.Header{}}
	b.ReportAllocs()
	for b.Loop() {
		rec.Body.Reset()
		h.ServeHTTP(rec, put)
		get.Header.Set(TokenHeader, rec.Body.String())
		clear(w.h)
		h.ServeHTTP(w, get)
	}
	if rec.Code != http.StatusOK || w.code != http.StatusOK {
		b.Fatalf("status %d, %d", rec.Code, w.code)
	}
}

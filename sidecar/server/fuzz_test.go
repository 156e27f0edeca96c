package server

import (
	"bufio"
	"bytes"
	"net/http"
	"net/http/httptest"
	"path"
	"strings"
	"testing"

	"github.com/kubevirt-imds/kubevirt-imds/sidecar/store/storetest"
)

// FuzzRouting sends arbitrary request lines and headers through the handler,
// parsed by net/http exactly as the server would. It must never panic, never
// answer 5xx except 503 before a document is loaded, never answer 200 to a
// method other than GET and HEAD, and never serve a body under a path that
// is not that body's own canonical path.
func FuzzRouting(f *testing.F) {
	seeds := []string{
		"/nocloud/meta-data", "/nocloud/", "/nocloud", "/openstack", "/openstack/latest/meta_data.json",
		"/latest/meta-data/public-keys/0/openssh-key", "/2009-04-04/meta-data/", "/", "/v1/identity",
		"/v1/token?audience=vault", "/v1/network-config?format=v2", "/v1/identity?wait_for_change=true&last_etag=x",
		"//nocloud/meta-data", "/nocloud/../openstack", "/%2e%2e/nocloud/meta-data", "/nocloud%2fmeta-data",
		"/nocloud/meta-data%00", "/openstack/latest/./meta_data.json", "http://x/nocloud/meta-data", "*",
	}
	for _, s := range seeds {
		f.Add("GET", s, "Metadata", "true", true)
		f.Add("HEAD", s, "X-Forwarded-For", "1.2.3.4", false)
	}
	f.Add("POST", "/openstack/latest/password", "Content-Length", "0", true)

	loaded := newEnv(f, storetest.Document(), nil)
	unloaded := newEnv(f, nil, nil)
	// Long polls would park the fuzzer for minutes: a stopping server
	// answers them at once with the current value.
	for _, e := range []*env{loaded, unloaded} {
		e.srv.stopOnce.Do(func() { close(e.srv.stopping) })
	}
	sn := loaded.srv.current()

	f.Fuzz(func(t *testing.T, method, target, hname, hvalue string, isLoaded bool) {
		raw := method + " " + target + " HTTP/1.1\r\nHost: 169.254.169.254\r\n" + hname + ": " + hvalue + "\r\n\r\n"
		req, err := http.ReadRequest(bufio.NewReader(strings.NewReader(raw)))
		if err != nil {
			t.Skip()
		}
		e := loaded
		if !isLoaded {
			e = unloaded
		}
		w := httptest.NewRecorder()
		e.srv.Handler().ServeHTTP(w, req)

		switch {
		case w.Code == http.StatusServiceUnavailable && !isLoaded:
		case w.Code == http.StatusServiceUnavailable && strings.HasPrefix(req.URL.Path, "/v1/token"):
			// No token file configured in this test for such audiences.
		case w.Code >= 500:
			t.Fatalf("%q: %d %s", raw, w.Code, w.Body)
		}
		if w.Code != http.StatusOK && w.Code != http.StatusNotModified {
			return
		}
		if req.Method != http.MethodGet && req.Method != http.MethodHead {
			t.Fatalf("%q: %d for method %q", raw, w.Code, req.Method)
		}
		p := req.URL.Path
		clean := path.Clean(p)
		if strings.HasSuffix(p, "/") && clean != "/" {
			clean += "/"
		}
		if req.URL.RawPath != "" || clean != p {
			t.Fatalf("%q: %d under non-canonical path %q (raw %q)", raw, w.Code, p, req.URL.RawPath)
		}
		if w.Code != http.StatusOK {
			return
		}
		if res, ok := sn.files[p]; ok {
			if req.Method == http.MethodGet && !bytes.Equal(w.Body.Bytes(), res.body) {
				t.Fatalf("%q: body differs from the document at %s", raw, p)
			}
			return
		}
		if p != "/v1/token" && p != "/v1/network-config" {
			t.Fatalf("%q: 200 for %s, which is no document", raw, p)
		}
	})
}

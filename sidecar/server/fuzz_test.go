package server

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"net"
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

// chunkConn is a connection whose reads return at most chunk bytes of data.
type chunkConn struct {
	net.Conn
	data  []byte
	chunk int
}

func (c *chunkConn) Read(p []byte) (int, error) {
	if len(c.data) == 0 {
		return 0, io.EOF
	}
	n := copy(p[:min(len(p), c.chunk)], c.data)
	c.data = c.data[n:]
	return n, nil
}

// FuzzFraming streams arbitrary bytes, split into arbitrary reads, through
// a connection's gate and reads what it delivers as net/http's server
// would. What the gate passes must be the guest's bytes unchanged, parse
// into requests one for one with the heads it accepted, carry no
// Transfer-Encoding and at most one Content-Length, and be followed, after
// a refusal, only by the refusal's stand-in request; the gate never buffers
// more than one head allows.
func FuzzFraming(f *testing.F) {
	for _, s := range []string{
		"GET /nocloud/meta-data HTTP/1.1\r\nHost: 169.254.169.254\r\n\r\n",
		"POST /openstack/latest/password HTTP/1.1\r\nHost: 169.254.169.254\r\nContent-Length: 4\r\n\r\nabcdGET / HTTP/1.1\r\nHost: a\r\n\r\n",
		"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /v1/token HTTP/1.1\r\nHost: a\r\n\r\n",
		"GET / HTTP/1.1\r\nHost: a\r\nX: a\r\n b\r\n\r\n",
		"GET / HTTP/1.1\r\nHost: a\nContent-Length: 1\r\n\r\nx",
		"GET / HTTP/1.0\r\nHost: a\r\nContent-Length: 0\r\nContent-Length: 0\r\n\r\n",
		"GET / HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\nab",
		"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
		"GET http://evil/ HTTP/1.1\r\nHost: 169.254.169.254\r\n\r\n",
		"GET / HTTP/1.1\r\nHost: a\r\nX: " + strings.Repeat("x", maxHeaderBytes) + "\r\n\r\n",
	} {
		f.Add([]byte(s), uint16(1))
		f.Add([]byte(s), uint16(4096))
	}
	f.Fuzz(func(t *testing.T, data []byte, chunk uint16) {
		c := &gateConn{Conn: &chunkConn{data: data, chunk: max(1, int(chunk))}}
		var out bytes.Buffer
		p := make([]byte, 4096)
		for {
			n, err := c.Read(p)
			out.Write(p[:n])
			if len(c.buf) > maxHeaderBytes+1 {
				t.Fatalf("buffered %d bytes", len(c.buf))
			}
			if err != nil {
				break
			}
		}
		delivered := out.Bytes()
		if c.refused.Load() != 0 {
			if !bytes.HasSuffix(delivered, refusedHead) {
				t.Fatalf("a refusal not delivered last: %q", delivered)
			}
			delivered = delivered[:len(delivered)-len(refusedHead)]
		}
		if !bytes.HasPrefix(data, delivered) {
			t.Fatalf("delivered bytes the guest did not send: %q of %q", delivered, data)
		}
		br := bufio.NewReader(bytes.NewReader(delivered))
		var requests int64
		for {
			if _, err := br.Peek(1); err != nil {
				break
			}
			req, err := http.ReadRequest(br)
			if err != nil {
				t.Fatalf("net/http cannot read an accepted request: %v in %q", err, delivered)
			}
			requests++
			if len(req.TransferEncoding) > 0 || len(req.Header.Values("Content-Length")) > 1 {
				t.Fatalf("ambiguous framing passed: %q", delivered)
			}
			// A body cut short by the end of the input is fine; one
			// that runs into the next head is not.
			if _, err := io.Copy(io.Discard, req.Body); err != nil && !errors.Is(err, io.ErrUnexpectedEOF) {
				t.Fatalf("body: %v", err)
			}
		}
		accepted := c.heads
		if c.refused.Load() != 0 {
			accepted--
		}
		if requests != accepted {
			t.Fatalf("%d requests read from %d accepted heads: %q", requests, accepted, delivered)
		}
	})
}

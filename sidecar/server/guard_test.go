package server

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-logr/logr"

	"github.com/kubevirt-imds/kubevirt-imds/sidecar/store/storetest"
)

// serve runs e's server on a loopback listener until the test ends and
// returns its address.
func serve(t *testing.T, e *env) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- e.srv.Serve(ctx, ln) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
	return ln.Addr().String()
}

// rawConn is a client connection that writes bytes as given.
type rawConn struct {
	net.Conn
	r *bufio.Reader
}

func newRawConn(t *testing.T, addr string) *rawConn {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	return &rawConn{Conn: c, r: bufio.NewReader(c)}
}

// roundTrip writes raw and reads one response.
func (c *rawConn) roundTrip(t *testing.T, raw string) (int, *http.Response) {
	t.Helper()
	if _, err := io.WriteString(c, raw); err != nil {
		t.Fatal(err)
	}
	return c.read(t)
}

func (c *rawConn) read(t *testing.T) (int, *http.Response) {
	t.Helper()
	resp, err := http.ReadResponse(c.r, nil)
	if err != nil {
		t.Fatalf("reading the response: %v", err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body = io.NopCloser(bytes.NewReader(b))
	return resp.StatusCode, resp
}

// closed reports whether the server closed the connection: the next read
// ends without data.
func (c *rawConn) closed() bool {
	b, err := c.r.ReadByte()
	_ = b
	return err != nil && !isTimeout(err)
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// counter reads a counter's value by one label.
func counter(t *testing.T, e *env, name, label, value string) float64 {
	t.Helper()
	for _, m := range gather(t, e)[name].GetMetric() {
		for _, l := range m.GetLabel() {
			if l.GetName() == label && l.GetValue() == value {
				return m.GetCounter().GetValue()
			}
		}
	}
	return 0
}

const get = "GET /nocloud/meta-data HTTP/1.1\r\nHost: 169.254.169.254\r\n\r\n"

func TestVetHead(t *testing.T) {
	ok := func(lines ...string) string { return strings.Join(lines, "\r\n") + "\r\n\r\n" }
	for _, tt := range []struct {
		name, head string
		code       int
		body       int64
	}{
		{"plain", ok("GET / HTTP/1.1", "Host: 169.254.169.254"), 0, 0},
		{"http/1.0", ok("GET / HTTP/1.0", "Host: 169.254.169.254"), 0, 0},
		{"body", ok("POST /openstack/latest/password HTTP/1.1", "Host: a", "Content-Length: 12"), 0, 12},
		{"zero length", ok("GET / HTTP/1.1", "Host: a", "Content-Length: 0"), 0, 0},
		{"continue", ok("POST / HTTP/1.1", "Host: a", "Content-Length: 1", "Expect: 100-continue"), 0, 1},
		{"te and cl", ok("POST / HTTP/1.1", "Host: a", "Content-Length: 4", "Transfer-Encoding: chunked"), 400, 0},
		{"te", ok("POST / HTTP/1.1", "Host: a", "Transfer-Encoding: chunked"), 400, 0},
		{"te on 1.0", ok("POST / HTTP/1.0", "Host: a", "Transfer-Encoding: chunked"), 400, 0},
		{"te identity", ok("GET / HTTP/1.1", "Host: a", "Transfer-Encoding: identity"), 400, 0},
		{"te mixed case", ok("GET / HTTP/1.1", "Host: a", "tRANSFER-eNCODING: chunked"), 400, 0},
		{"duplicate cl", ok("POST / HTTP/1.1", "Host: a", "Content-Length: 4", "Content-Length: 4"), 400, 0},
		{"cl list", ok("POST / HTTP/1.1", "Host: a", "Content-Length: 4, 4"), 400, 0},
		{"cl sign", ok("POST / HTTP/1.1", "Host: a", "Content-Length: +4"), 400, 0},
		{"cl hex", ok("POST / HTTP/1.1", "Host: a", "Content-Length: 0x4"), 400, 0},
		{"cl huge", ok("POST / HTTP/1.1", "Host: a", "Content-Length: 99999999999999999999"), 400, 0},
		{"body too large", ok("POST / HTTP/1.1", "Host: a", "Content-Length: 65537"), 413, 0},
		{"obs-fold", ok("GET / HTTP/1.1", "Host: a", "X-A: b", " c"), 400, 0},
		{"obs-fold framing", ok("POST / HTTP/1.1", "Host: a", "Content-Length:", " 4"), 400, 0},
		{"tab fold", ok("GET / HTTP/1.1", "Host: a", "X-A: b", "\tc"), 400, 0},
		{"space before colon", ok("GET / HTTP/1.1", "Host: a", "Content-Length : 4"), 400, 0},
		{"bare lf", "GET / HTTP/1.1\r\nHost: a\nX: y\r\n\r\n", 400, 0},
		{"bare cr", "GET / HTTP/1.1\r\nHost: a\rX: y\r\n\r\n", 400, 0},
		{"no host", ok("GET / HTTP/1.1"), 400, 0},
		{"no host 1.0", ok("GET / HTTP/1.0"), 400, 0},
		{"two hosts", ok("GET / HTTP/1.1", "Host: a", "Host: b"), 400, 0},
		{"bad host", ok("GET / HTTP/1.1", "Host: a b"), 400, 0},
		{"nul in value", ok("GET / HTTP/1.1", "Host: a", "X: a\x00b"), 400, 0},
		{"http/2", ok("GET / HTTP/2.0", "Host: a"), 505, 0},
		{"h2 preface", "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", 505, 0},
		{"http/0.9", "GET /\r\n\r\n", 400, 0},
		{"lower version", ok("GET / http/1.1", "Host: a"), 400, 0},
		{"double space", ok("GET  / HTTP/1.1", "Host: a"), 400, 0},
		{"space in target", ok("GET /a b HTTP/1.1", "Host: a"), 400, 0},
		{"non-ascii target", ok("GET /\xe9 HTTP/1.1", "Host: a"), 400, 0},
		{"leading crlf", "\r\n" + ok("GET / HTTP/1.1", "Host: a"), 400, 0},
		{"expect other", ok("GET / HTTP/1.1", "Host: a", "Expect: 200-ok"), 417, 0},
		{"8 KiB", ok("GET / HTTP/1.1", "Host: a", "X: "+strings.Repeat("x", maxHeaderBytes-len("GET / HTTP/1.1\r\nHost: a\r\nX: \r\n\r\n"))), 0, 0},
		{"8 KiB + 1", ok("GET / HTTP/1.1", "Host: a", "X: "+strings.Repeat("x", maxHeaderBytes+1-len("GET / HTTP/1.1\r\nHost: a\r\nX: \r\n\r\n"))), 431, 0},
	} {
		t.Run(tt.name, func(t *testing.T) {
			n, ref := vetHead([]byte(tt.head))
			switch {
			case tt.code == 0 && ref != nil:
				t.Fatalf("refused: %+v", ref)
			case tt.code == 0 && n != tt.body:
				t.Fatalf("body %d, want %d", n, tt.body)
			case tt.code != 0 && (ref == nil || ref.code != tt.code):
				t.Fatalf("got %+v, want %d", ref, tt.code)
			}
		})
	}
}

// TestFramingOnTheWire: a refused head is answered with its status, the
// connection is closed, and nothing sent after it is served.
func TestFramingOnTheWire(t *testing.T) {
	var logs syncBuffer
	e := newEnv(t, storetest.Document(), func(c *Config) {
		c.Log = logr.FromSlogHandler(slog.NewJSONHandler(&logs, nil))
	})
	base := serve(t, e)
	smuggled := "GET /v1/token HTTP/1.1\r\nHost: 169.254.169.254\r\nMetadata: true\r\n\r\n"
	for _, tt := range []struct {
		name, raw string
		code      int
		reason    string
	}{
		{"te and cl", "POST /openstack/latest/password HTTP/1.1\r\nHost: 169.254.169.254\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n" + smuggled, 400, "framing"},
		{"chunked with trailer", "GET /nocloud/meta-data HTTP/1.1\r\nHost: 169.254.169.254\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nX-Forwarded-For: 1.2.3.4\r\n\r\n", 400, "framing"},
		{"duplicate cl", "POST /openstack/latest/password HTTP/1.1\r\nHost: 169.254.169.254\r\nContent-Length: 0\r\nContent-Length: 0\r\n\r\n" + smuggled, 400, "framing"},
		{"obs-folded te", "GET /nocloud/meta-data HTTP/1.1\r\nHost: 169.254.169.254\r\nX-A: a\r\n Transfer-Encoding: chunked\r\n\r\n" + smuggled, 400, "framing"},
		{"head over 8 KiB", "GET /nocloud/meta-data HTTP/1.1\r\nHost: 169.254.169.254\r\nX: " + strings.Repeat("x", maxHeaderBytes) + "\r\n\r\n", 431, "header-size"},
		{"http/2", "GET /nocloud/meta-data HTTP/2.0\r\nHost: 169.254.169.254\r\n\r\n", 505, "version"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			c := newRawConn(t, base)
			if code, _ := c.roundTrip(t, get); code != 200 {
				t.Fatalf("first request: %d", code)
			}
			code, resp := c.roundTrip(t, tt.raw)
			if code != tt.code || !resp.Close {
				t.Fatalf("%d (close %v), want %d and close", code, resp.Close, tt.code)
			}
			if !c.closed() {
				t.Fatal("connection left open after the refusal")
			}
			if got := counter(t, e, "kubevirt_imds_sidecar_refused_requests_total", "reason", tt.reason); got < 1 {
				t.Fatalf("not counted under %s", tt.reason)
			}
		})
	}
	if strings.Contains(logs.String(), `"uri":"/v1/token"`) {
		t.Fatalf("a smuggled request reached the handler:\n%s", logs.String())
	}
	if !strings.Contains(logs.String(), `"msg":"request refused","reason":"framing","status":400`) {
		t.Fatalf("no refusal log line:\n%s", logs.String())
	}

	t.Run("a body framed by Content-Length is passed through", func(t *testing.T) {
		c := newRawConn(t, base)
		code, _ := c.roundTrip(t, "POST /openstack/latest/password HTTP/1.1\r\nHost: 169.254.169.254\r\nContent-Length: 4\r\n\r\nabcd")
		if code != 409 {
			t.Fatalf("password POST: %d", code)
		}
		if code, _ := c.roundTrip(t, get); code != 200 {
			t.Fatalf("next request on the connection: %d", code)
		}
	})
	t.Run("pipelined requests are answered in order", func(t *testing.T) {
		c := newRawConn(t, base)
		if _, err := io.WriteString(c, get+"GET /nocloud/nope HTTP/1.1\r\nHost: 169.254.169.254\r\n\r\n"+get); err != nil {
			t.Fatal(err)
		}
		for _, want := range []int{200, 404, 200} {
			if code, _ := c.read(t); code != want {
				t.Fatalf("%d, want %d", code, want)
			}
		}
	})
	t.Run("a head of exactly 8 KiB is served", func(t *testing.T) {
		c := newRawConn(t, base)
		pre := "GET /nocloud/meta-data HTTP/1.1\r\nHost: 169.254.169.254\r\nX: "
		head := pre + strings.Repeat("x", maxHeaderBytes-len(pre)-4) + "\r\n\r\n"
		if code, _ := c.roundTrip(t, head); code != 200 {
			t.Fatalf("%d bytes: %d", len(head), code)
		}
	})
}

func TestHost(t *testing.T) {
	e := newEnv(t, storetest.Document(), func(c *Config) { c.Hosts = []string{"Instance-Data."} })
	base := serve(t, e)
	_, port, _ := net.SplitHostPort(base)
	for _, tt := range []struct {
		target, host string
		hdr          string
		code         int
	}{
		{"/nocloud/meta-data", "169.254.169.254", "", 200},
		{"/nocloud/meta-data", "169.254.169.254:" + port, "", 200},
		{"/nocloud/meta-data", "instance-data", "", 200},
		{"/nocloud/meta-data", "INSTANCE-DATA.", "", 200},
		{"/nocloud/meta-data", "169.254.169.254:1", "", 421},
		{"/nocloud/meta-data", "evil.example", "", 421},
		{"/openstack/latest/meta_data.json", "evil.example", "", 421},
		{"/latest/meta-data/instance-id", "evil.example:80", "", 421},
		{"/v1/token", "evil.example", "Metadata: true\r\n", 421},
		{"/nope", "169.254.169.254.nip.io", "", 421},
		{"http://169.254.169.254/nocloud/meta-data", "169.254.169.254", "", 200},
		{"http://evil.example/nocloud/meta-data", "169.254.169.254", "", 421},
		{"https://169.254.169.254/nocloud/meta-data", "169.254.169.254", "", 421},
		{"http://u@169.254.169.254/nocloud/meta-data", "169.254.169.254", "", 421},
	} {
		c := newRawConn(t, base)
		code, _ := c.roundTrip(t, "GET "+tt.target+" HTTP/1.1\r\nHost: "+tt.host+"\r\n"+tt.hdr+"\r\n")
		if code != tt.code {
			t.Errorf("%s Host %s: %d, want %d", tt.target, tt.host, code, tt.code)
		}
	}
	if got := counter(t, e, "kubevirt_imds_sidecar_refused_requests_total", "reason", "host"); got != 9 {
		t.Errorf("refused for host: %v", got)
	}
}

// TestConnectionCap: at the cap, a new connection replaces the one waiting
// longest without a request; requests already complete are answered; when
// every connection is busy the new one is refused.
func TestConnectionCap(t *testing.T) {
	e := newEnv(t, storetest.Document(), func(c *Config) { c.MaxConns, c.MaxLongPolls = 3, 3 })
	base := serve(t, e)
	var holders []*rawConn
	for range 3 {
		c := newRawConn(t, base)
		// Half a head: the server holds the connection.
		if _, err := io.WriteString(c, "GET /nocloud/meta-data HTTP/1.1\r\n"); err != nil {
			t.Fatal(err)
		}
		holders = append(holders, c)
		waitConns(t, e, 0, len(holders))
	}
	c := newRawConn(t, base)
	if code, _ := c.roundTrip(t, get); code != 200 {
		t.Fatalf("a new connection at the cap: %d", code)
	}
	if !holders[0].closed() {
		t.Fatal("the oldest incomplete connection was kept")
	}
	if got := counter(t, e, "kubevirt_imds_sidecar_shed_connections_total", "reason", "incomplete"); got != 1 {
		t.Fatalf("shed incomplete: %v", got)
	}
	// The others finish their requests and are answered.
	for _, h := range holders[1:] {
		if code, _ := h.roundTrip(t, "Host: 169.254.169.254\r\n\r\n"); code != 200 {
			t.Fatalf("held connection: %d", code)
		}
	}

	// Three long polls fill the cap with busy connections.
	for _, h := range append(holders[1:], c) {
		if _, err := io.WriteString(h, "GET /v1/identity?wait_for_change=true HTTP/1.1\r\nHost: 169.254.169.254\r\nMetadata: true\r\n\r\n"); err != nil {
			t.Fatal(err)
		}
	}
	waitPolling(t, e.srv, 3)
	// The reset may reach the client before its connect returns.
	if refused, err := net.DialTimeout("tcp", base, 5*time.Second); err == nil {
		defer refused.Close()
		_ = refused.SetDeadline(time.Now().Add(5 * time.Second))
		if _, err := refused.Read(make([]byte, 1)); err == nil || isTimeout(err) {
			t.Fatal("a connection beyond the cap of busy connections was kept")
		}
	}
	if got := counter(t, e, "kubevirt_imds_sidecar_shed_connections_total", "reason", "full"); got != 1 {
		t.Fatalf("refused full: %v", got)
	}
}

// waitConns waits until the server tracks n connections in phase p.
func waitConns(t *testing.T, e *env, p phase, n int) {
	t.Helper()
	tick := time.NewTicker(time.Millisecond)
	defer tick.Stop()
	for deadline := time.Now().Add(5 * time.Second); ; <-tick.C {
		e.srv.conns.mu.Lock()
		got := e.srv.conns.lists[p].Len()
		e.srv.conns.mu.Unlock()
		if got == n {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d connections in phase %d, want %d", got, p, n)
		}
	}
}

func TestLongPollCap(t *testing.T) {
	e := newEnv(t, storetest.Document(), func(c *Config) { c.MaxLongPolls = 2 })
	base := serve(t, e)
	poll := "GET /v1/identity?wait_for_change=true HTTP/1.1\r\nHost: 169.254.169.254\r\nMetadata: true\r\n\r\n"
	for range 2 {
		c := newRawConn(t, base)
		if _, err := io.WriteString(c, poll); err != nil {
			t.Fatal(err)
		}
	}
	waitPolling(t, e.srv, 2)
	c := newRawConn(t, base)
	code, resp := c.roundTrip(t, poll)
	if code != 429 || resp.Header.Get("Retry-After") != retryAfterLongPolls {
		t.Fatalf("a poll beyond the cap: %d, Retry-After %q", code, resp.Header.Get("Retry-After"))
	}
	if code, _ := c.roundTrip(t, "GET /v1/token HTTP/1.1\r\nHost: 169.254.169.254\r\nMetadata: true\r\n\r\n"); code != 200 {
		t.Fatalf("the token beside full long polls: %d", code)
	}
}

// TestRefusalLogRateLimited: a flood of refusals leaves a few lines, the
// later one counting what it dropped, and the counter has them all.
func TestRefusalLogRateLimited(t *testing.T) {
	var logs syncBuffer
	e := newEnv(t, storetest.Document(), func(c *Config) {
		c.Log = logr.FromSlogHandler(slog.NewJSONHandler(&logs, nil))
	})
	h := e.srv.Handler()
	for range 200 {
		do(h, "GET", "/nocloud/meta-data", "Via", "1.1 proxy")
	}
	lines := strings.Count(logs.String(), `"msg":"request refused"`)
	if lines < 1 || lines > 15 {
		t.Fatalf("%d log lines for 200 refusals", lines)
	}
	if !strings.Contains(logs.String(), `"reason":"proxy","status":403`) || !strings.Contains(logs.String(), `"detail":"Via"`) {
		t.Fatalf("log lines lack the reason:\n%s", logs.String())
	}
	if got := counter(t, e, "kubevirt_imds_sidecar_refused_requests_total", "reason", "proxy"); got != 200 {
		t.Fatalf("counted %v", got)
	}
}

// syncBuffer is a bytes.Buffer safe for the server's goroutines.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// Package server is the sidecar's guest-facing HTTP side. One handler serves
// every dialect of the current payload document:
//
//   - /v1/…: kubevirt-imds' own JSON API (header "Metadata: true" required),
//     with ETag long polling and ServiceAccount tokens;
//   - /nocloud/…: cloud-init's NoCloud seed;
//   - /openstack/…: nova's metadata API, and the EC2-compatible tree nova
//     serves beside it under /, /latest/ and /2009-04-04/.
//
// Every response body derives from the document (or a token file) alone, and
// its ETag from the body, so what a guest sees never depends on when the
// sidecar started.
//
// Routes (GET and HEAD; every 200 carries an ETag, If-None-Match gives 304):
//
//	/nocloud/ (also /nocloud)          listing of the files below
//	/nocloud/meta-data                 YAML: instance-id, local-hostname, hostname, public-keys, network-interfaces
//	/nocloud/user-data                 verbatim; empty 200 when there is none (cloud-init fails NoCloud on an error)
//	/nocloud/vendor-data               verbatim; empty 200 when there is none (cloud-init retries an error for 10 s)
//	/nocloud/network-config            version 2 YAML (or the user's own verbatim); empty 200 without network configuration (likewise)
//
// The EC2 paths (/, /latest, /2009-04-04) are served with the openstack or
// the ec2 dialect, IMDSv2 tokens with either; tokens are required only with
// ec2 and httpTokens "required" (see serveEC2).
//
//	/openstack (also /openstack/)      the versions, one per line
//	/openstack/<v>/ (also without /)   the files of <v>, by nova's history
//	/openstack/<v>/meta_data.json      nova's meta_data.json
//	/openstack/<v>/network_data.json   nova's network_data.json (2015-10-15 and later)
//	/openstack/<v>/user_data           verbatim; 404 when there is none
//	/openstack/<v>/vendor_data.json    {"cloud-init": vendor data} (2013-10-17 and later)
//	/openstack/<v>/vendor_data2.json   {} (2016-10-06 and later)
//	/openstack/<v>/password            empty (2013-04-04 and later); POST gets 409
//	/                                  EC2 versions: 2009-04-04, latest
//	/<2009-04-04|latest>/              dynamic, meta-data and, when present, user-data
//	/<2009-04-04|latest>/meta-data/…   EC2 tree; directories list children, also without the trailing slash; leaves also with one
//	/<2009-04-04|latest>/user-data     verbatim; 404 when there is none
//	/<…>/dynamic/instance-identity/    document, pkcs7, rsa2048, signature: the identity document the operator signed; the document alone where it does not sign
//	/latest/api/token                  PUT only: an IMDSv2 session token (see ec2.go)
//	/v1/ (also /v1)                    the endpoints below
//	/v1/identity                       JSON: instanceId, uid, name, namespace, hostname, serviceAccountName
//	/v1/metadata                       JSON: the whole payload.Instance
//	/v1/user-data, /v1/vendor-data     verbatim; 404 when there is none
//	/v1/network-config                 ?format=json (default, payload.Network), v1, v2 (YAML) or eni; 404 without network configuration, 400 for another format
//	/v1/token                          ?audience=A → {"audience","token","expirationTimestamp"}, exp read from the JWT
//
// /v1/token: with one audience configured it is the default; with several,
// leaving ?audience= out gets 400 listing them; no audience configured, or an
// unknown one, gets 404; a token file kubelet has not written yet gets 503.
//
// Long polling on every /v1 endpoint: ?wait_for_change=true&last_etag=E&
// timeout_sec=N answers at once when the ETag differs from E (the current
// ETag when E is absent), otherwise when the document changes so that it
// does, after N seconds (default and cap 300) with the current value, or when
// the server shuts down. A token's rotation is seen at the timeout or the next
// document change, as token files are not watched.
//
// /v1 requires the header "Metadata: true" (400 otherwise) and answers errors
// as {"error":{"code":N,"message":"…"}}; the other dialects answer errors as a
// plain status line, since their clients cannot send headers or parse JSON
// errors.
//
// Before net/http parses a request, its head is vetted (vetHead): a head
// whose framing two HTTP implementations could read differently
// (Transfer-Encoding, several Content-Length fields, obs-fold, bare CR or
// LF), a malformed one, one over 8 KiB or of another HTTP version is
// refused (400, 431, 505), and the connection closed without reading what
// follows. Requests are then screened before routing, in this order: a Host
// other than 169.254.169.254 or a configured name gets 421, any proxy header
// 403, the connection's token bucket answers 429 with Retry-After, a
// request URI over 2 KiB gets 414, a path that is not canonical gets 400,
// and methods other than GET and HEAD get 405 with Allow. The exceptions
// are IMDSv2's token PUT to /latest/api/token, and a POST to OpenStack's
// password file, answered 409: nova's "already set", which cloudbase-init
// accepts, where any other error makes it retry and fail. Canonical means: only letters, digits and "-._~/:" (":" for
// the MAC addresses of EC2's network tree), no
// percent-encoding at all, no empty, "." or ".." segment, i.e. unchanged by
// path.Clean apart from one trailing slash. Such paths are refused rather
// than redirected or cleaned, so no spelling of a path can reach a document
// other than by its one canonical name. Unknown paths, and paths of dialects
// the document does not enable, get 404. Every refusal is counted by reason
// and logged, rate-limited, at info level.
//
// Connections are capped; at the cap a new one replaces the one waiting
// longest without a request being answered (see connTracker). Long polls
// are capped on their own (429 beyond).
//
// Before the first document is loaded, every path of a known dialect gets
// 503 with Retry-After.
package server

import (
	"context"
	"errors"
	"fmt"
	"log"
	"math"
	"net"
	"net/http"
	"path"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	vmetrics "github.com/VictoriaMetrics/metrics"
	"github.com/go-logr/logr"
	"golang.org/x/net/http/httpguts"
	"golang.org/x/time/rate"

	"github.com/kubevirt-imds/kubevirt-imds/api/payload"
	"github.com/kubevirt-imds/kubevirt-imds/sidecar/store"
)

const (
	// DefaultRateLimit is a connection's sustained request rate, per
	// second.
	DefaultRateLimit = 5
	// DefaultBurst is a connection's token bucket. One cloud-init boot with
	// the OpenStack datasource makes about 20 requests back to back (version
	// list, five OpenStack files, the EC2 crawl of /latest/meta-data/ with
	// its listings and leaves, user-data); NoCloud makes four. cloud-init
	// opens a connection per request, but a client keeping one alive may
	// crawl as much on it: 100 covers several such crawls while 5/s still
	// caps a runaway loop. The bucket is the connection's own, so a busy
	// client never spends another's (a new connection gets a full one; the
	// connection cap bounds how many there are).
	DefaultBurst = 100

	// MaxWait caps a long poll's timeout_sec.
	MaxWait = 300 * time.Second
	// maxURIBytes caps the request URI (414 beyond it).
	maxURIBytes = 2048
	// maxHeaderBytes caps a request head: the request line, the header
	// fields and the blank line ending them (431 beyond it, enforced by
	// vetHead; net/http's own limit lets 4 KiB more pass).
	maxHeaderBytes = 8 << 10
	// retryAfterUnloaded is the Retry-After of a 503 before the first
	// document: kubelet mounts the Secret within seconds.
	retryAfterUnloaded = "1"
	// retryAfterLongPolls is the Retry-After of a long poll refused
	// because too many wait: one of them ends within its timeout.
	retryAfterLongPolls = "5"

	// Address is the service's address, always accepted as Host.
	Address = "169.254.169.254"
)

// Config configures a Server.
type Config struct {
	// Store provides the document. Required.
	Store *store.Store
	// RateLimit is a connection's sustained rate in requests per second;
	// 0 means DefaultRateLimit.
	RateLimit float64
	// Burst is a connection's token bucket size; 0 means DefaultBurst.
	Burst int
	// MaxConns caps the guest's open connections; 0 means
	// DefaultMaxConns.
	MaxConns int
	// MaxLongPolls caps the long polls waiting at once; 0 means
	// DefaultMaxLongPolls.
	MaxLongPolls int
	// Hosts are the names the guest may use in Host besides
	// 169.254.169.254 (e.g. "instance-data"), matched without case and
	// without a trailing dot.
	Hosts []string
	// Metrics receives the server's series (MetricFamilies); nil keeps
	// none.
	Metrics *vmetrics.Set
	// Log receives request and error logs.
	Log logr.Logger
}

// Server serves the payload document to the guest.
type Server struct {
	store *store.Store
	log   logr.Logger
	// rateLimit and burst size each connection's token bucket.
	rateLimit rate.Limit
	burst     int
	// retryAfter is the 429 Retry-After value: the time one token takes.
	retryAfter   string
	metrics      *metrics
	handler      http.Handler
	conns        *connTracker
	maxLongPolls int64
	hosts        map[string]bool
	refusals     *refusalLog
	// tokens mints and checks the EC2 dialect's IMDSv2 session tokens.
	tokens *tokenIssuer

	snapMu sync.Mutex
	snap   atomic.Pointer[snapshot]

	// polling counts the long polls waiting for a change.
	polling atomic.Int64

	// stopping is closed when Serve begins shutting down, ending long polls.
	stopping chan struct{}
	stopOnce sync.Once

	readHeaderTimeout, readTimeout, writeTimeout, idleTimeout, shutdownGrace time.Duration
}

// New returns a Server for c.
func New(c Config) (*Server, error) {
	if c.Store == nil {
		return nil, errors.New("server: Config.Store is required")
	}
	if c.RateLimit < 0 || math.IsNaN(c.RateLimit) || math.IsInf(c.RateLimit, 0) {
		return nil, fmt.Errorf("server: invalid rate limit %v", c.RateLimit)
	}
	if c.Burst < 0 || c.MaxConns < 0 || c.MaxLongPolls < 0 {
		return nil, fmt.Errorf("server: invalid limits: burst %d, connections %d, long polls %d", c.Burst, c.MaxConns, c.MaxLongPolls)
	}
	if c.RateLimit == 0 {
		c.RateLimit = DefaultRateLimit
	}
	if c.Burst == 0 {
		c.Burst = DefaultBurst
	}
	if c.MaxConns == 0 {
		c.MaxConns = DefaultMaxConns
	}
	if c.MaxLongPolls == 0 {
		c.MaxLongPolls = DefaultMaxLongPolls
	}
	hosts := map[string]bool{Address: true}
	for _, h := range c.Hosts {
		h = normalHost(h)
		if h == "" || !httpguts.ValidHostHeader(h) || strings.Contains(h, ":") && !strings.HasPrefix(h, "[") {
			return nil, fmt.Errorf("server: invalid host name %q", h)
		}
		hosts[h] = true
	}
	s := &Server{
		store:             c.Store,
		log:               c.Log,
		rateLimit:         rate.Limit(c.RateLimit),
		burst:             c.Burst,
		conns:             &connTracker{max: c.MaxConns},
		maxLongPolls:      int64(c.MaxLongPolls),
		hosts:             hosts,
		refusals:          newRefusalLog(),
		retryAfter:        strconv.Itoa(max(1, int(math.Ceil(1/c.RateLimit)))),
		stopping:          make(chan struct{}),
		readHeaderTimeout: 5 * time.Second,
		readTimeout:       10 * time.Second,
		writeTimeout:      10 * time.Second,
		idleTimeout:       60 * time.Second,
		shutdownGrace:     5 * time.Second,
	}
	tokens, err := newTokenIssuer()
	if err != nil {
		return nil, fmt.Errorf("server: %w", err)
	}
	s.tokens = tokens
	m, err := newMetrics(c.Metrics, c.Store, func() float64 { return float64(s.polling.Load()) },
		func() float64 { return float64(s.conns.count()) })
	if err != nil {
		return nil, err
	}
	s.metrics = m
	s.handler = http.HandlerFunc(s.serveHTTP)
	return s, nil
}

// Handler returns the guest-facing handler for all dialects.
func (s *Server) Handler() http.Handler { return s.handler }

// Serve serves Handler on ln until ctx is done, then shuts down gracefully:
// long polls return their current value, in-flight requests get a few
// seconds to finish. It returns nil after a shutdown caused by ctx. Serve may
// run on several listeners at once; the first to stop ends all long polls.
// Connections on every listener share the connection cap; each gets its own
// request budget, and its request heads are vetted before net/http reads
// them (see vetHead).
func (s *Server) Serve(ctx context.Context, ln net.Listener) error {
	srv := &http.Server{
		Handler:           s.handler,
		ConnState:         s.connState,
		ConnContext:       connContext,
		ReadHeaderTimeout: s.readHeaderTimeout,
		ReadTimeout:       s.readTimeout,
		// Long polls extend their own deadline; everything else is small.
		WriteTimeout:   s.writeTimeout,
		IdleTimeout:    s.idleTimeout,
		MaxHeaderBytes: maxHeaderBytes,
		ErrorLog:       log.New(logWriter{s.log}, "", 0),
	}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(newGuardedListener(ln, s)) }()
	select {
	case err := <-errc:
		return fmt.Errorf("serving metadata: %w", err)
	case <-ctx.Done():
	}
	s.stopOnce.Do(func() { close(s.stopping) })
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), s.shutdownGrace)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil {
		_ = srv.Close()
		return fmt.Errorf("shutting down metadata server: %w", err)
	}
	if err := <-errc; err != nil && !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("serving metadata: %w", err)
	}
	return nil
}

// dialect classifies a path for routing and metrics; "" is no dialect.
func dialectOf(p string) payload.Dialect {
	first, _, _ := strings.Cut(strings.TrimPrefix(p, "/"), "/")
	switch first {
	case "v1":
		return payload.DialectV1
	case "nocloud":
		return payload.DialectNoCloud
	case "openstack":
		return payload.DialectOpenStack
	case "latest", "2009-04-04":
		return payload.DialectEC2
	case "":
		if p == "/" {
			return payload.DialectEC2
		}
	}
	return ""
}

func (s *Server) serveHTTP(rw http.ResponseWriter, r *http.Request) {
	start := time.Now()
	w := &recorder{ResponseWriter: rw}
	d := dialectOf(r.URL.Path)
	longPoll := false
	defer func() {
		s.metrics.observe(d, w.code(), time.Since(start), longPoll)
		if s.log.V(1).Enabled() {
			s.log.V(1).Info("request", "method", r.Method, "uri", r.RequestURI, "remote", r.RemoteAddr, "status", w.code(), "duration", time.Since(start))
		}
	}()

	gc := connOf(r)
	if gc != nil {
		if ref := gc.refusalOf(); ref != nil {
			// Its request line is ours, not the guest's: no dialect.
			d = ""
			w.Header().Set("Connection", "close")
			s.refuse(w, r, d, ref.code, ref.reason, ref.detail)
			return
		}
	}
	if !s.hostAllowed(r) {
		s.refuse(w, r, d, http.StatusMisdirectedRequest, reasonHost, "")
		return
	}
	if name, ok := proxyHeader(r.Header); ok {
		s.refuse(w, r, d, http.StatusForbidden, reasonProxy, name)
		return
	}
	if gc != nil {
		if gc.limiter == nil {
			gc.limiter = rate.NewLimiter(s.rateLimit, s.burst)
		}
		if !gc.limiter.Allow() {
			w.Header().Set("Retry-After", s.retryAfter)
			s.refuse(w, r, d, http.StatusTooManyRequests, reasonRate, "")
			return
		}
	}
	if len(r.RequestURI) > maxURIBytes {
		s.refuse(w, r, d, http.StatusRequestURITooLong, reasonURISize, "")
		return
	}
	if !canonical(r) {
		s.refuse(w, r, d, http.StatusBadRequest, reasonPath, "")
		return
	}
	if r.Method != http.MethodGet && r.Method != http.MethodHead && !passwordPost(r) && !tokenPut(r) {
		w.Header().Set("Allow", "GET, HEAD")
		s.refuse(w, r, d, http.StatusMethodNotAllowed, reasonMethod, "")
		return
	}
	switch d {
	case payload.DialectV1:
		longPoll = r.URL.Query().Get("wait_for_change") == "true"
		s.serveV1(w, r)
	case payload.DialectNoCloud, payload.DialectOpenStack:
		s.serveStatic(w, r, d)
	case payload.DialectEC2:
		s.serveEC2(w, r)
	default:
		s.fail(w, d, http.StatusNotFound, "not found")
	}
}

// hostAllowed reports whether r names the service: its Host (or, in
// absolute form, its target's authority, which net/http puts in r.Host) is
// 169.254.169.254 or one of the configured names, with at most the port the
// request arrived on. A web page that rebinds its own name to the address
// sends its own name and is refused.
func (s *Server) hostAllowed(r *http.Request) bool {
	if r.URL.Scheme != "" && r.URL.Scheme != "http" || r.URL.User != nil {
		return false
	}
	host, port := r.Host, ""
	if i := strings.LastIndexByte(host, ':'); i >= 0 && !strings.HasSuffix(host, "]") {
		host, port = host[:i], host[i+1:]
	}
	if !s.hosts[normalHost(host)] {
		return false
	}
	if port == "" {
		return true
	}
	local, _ := r.Context().Value(http.LocalAddrContextKey).(net.Addr)
	if local == nil {
		// Not served from a listener (tests calling the handler).
		return port == "80"
	}
	_, lport, err := net.SplitHostPort(local.String())
	return err == nil && port == lport
}

// normalHost lower-cases a host name and drops a trailing dot.
func normalHost(h string) string {
	return strings.TrimSuffix(strings.ToLower(h), ".")
}

// canonical reports whether r's path is its own canonical spelling; see the
// package documentation.
func canonical(r *http.Request) bool {
	if r.URL.RawPath != "" || r.URL.Opaque != "" {
		return false
	}
	p := r.URL.Path
	if p == "" || p[0] != '/' {
		return false
	}
	for i := 0; i < len(p); i++ {
		c := p[i]
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9',
			c == '-', c == '.', c == '_', c == '~', c == '/', c == ':':
		default:
			return false
		}
	}
	clean := path.Clean(p)
	if strings.HasSuffix(p, "/") && clean != "/" {
		clean += "/"
	}
	return clean == p
}

// current returns the snapshot of the current document, or nil before the
// first document.
func (s *Server) current() *snapshot {
	doc := s.store.Current()
	if doc == nil {
		return nil
	}
	if sn := s.snap.Load(); sn != nil && sn.doc == doc {
		return sn
	}
	s.snapMu.Lock()
	defer s.snapMu.Unlock()
	if sn := s.snap.Load(); sn != nil && sn.doc == doc {
		return sn
	}
	sn, err := buildSnapshot(doc)
	if err != nil {
		// Logged once per document; those files answer 500.
		s.log.Error(err, "some files cannot be rendered")
	}
	s.snap.Store(sn)
	return sn
}

func (s *Server) serveStatic(w http.ResponseWriter, r *http.Request, d payload.Dialect) {
	sn := s.current()
	if sn == nil {
		w.Header().Set("Retry-After", retryAfterUnloaded)
		s.fail(w, d, http.StatusServiceUnavailable, "metadata not available yet")
		return
	}
	res, ok := sn.files[r.URL.Path]
	if !ok {
		s.fail(w, d, http.StatusNotFound, "not found")
		return
	}
	if r.Method == http.MethodPost {
		// Nova accepts one password POST and answers 409 once a password
		// is set. Passwords are never stored here, so every POST gets the
		// 409 that cloudbase-init treats as "already set" and moves on
		// from; any other error makes it retry and fail its plugin.
		w.Header().Set("Allow", "GET, HEAD")
		s.fail(w, d, http.StatusConflict, "the password cannot be set")
		return
	}
	writeResource(w, r, res)
}

// passwordPost reports a POST to an OpenStack version's password file.
func passwordPost(r *http.Request) bool {
	return r.Method == http.MethodPost && dialectOf(r.URL.Path) == payload.DialectOpenStack &&
		strings.HasPrefix(r.URL.Path, "/openstack/") && path.Base(r.URL.Path) == "password"
}

// writeResource writes res, or 304 when If-None-Match names its ETag.
func writeResource(w http.ResponseWriter, r *http.Request, res *resource) {
	h := w.Header()
	if res.failed {
		h.Set("Content-Type", contentText)
		h.Set("X-Content-Type-Options", "nosniff")
		w.WriteHeader(http.StatusInternalServerError)
		_, _ = w.Write([]byte(http.StatusText(http.StatusInternalServerError) + "\n"))
		return
	}
	h.Set("ETag", res.etag)
	if res.noStore {
		h.Set("Cache-Control", "no-store")
	}
	if etagMatches(r.Header.Get("If-None-Match"), res.etag) {
		w.WriteHeader(http.StatusNotModified)
		return
	}
	h.Set("Content-Type", res.contentType)
	h.Set("Content-Length", strconv.Itoa(len(res.body)))
	h.Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(http.StatusOK)
	if r.Method != http.MethodHead {
		_, _ = w.Write(res.body)
	}
}

// etagMatches implements If-None-Match's weak comparison.
func etagMatches(header, etag string) bool {
	if header == "" {
		return false
	}
	for _, t := range strings.Split(header, ",") {
		t = strings.TrimPrefix(strings.TrimSpace(t), "W/")
		if t == "*" || t == etag {
			return true
		}
	}
	return false
}

// fail writes an error: JSON on /v1, a plain line elsewhere.
func (s *Server) fail(w http.ResponseWriter, d payload.Dialect, code int, msg string) {
	if d == payload.DialectV1 {
		writeJSONError(w, code, msg)
		return
	}
	h := w.Header()
	h.Set("Content-Type", contentText)
	h.Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(code)
	_, _ = w.Write([]byte(http.StatusText(code) + "\n"))
}

// recorder notes the status code for metrics and logs. Unwrap keeps
// http.ResponseController working through it.
type recorder struct {
	http.ResponseWriter
	status int
}

func (r *recorder) WriteHeader(code int) {
	if r.status == 0 {
		r.status = code
	}
	r.ResponseWriter.WriteHeader(code)
}

func (r *recorder) Write(b []byte) (int, error) {
	if r.status == 0 {
		r.status = http.StatusOK
	}
	return r.ResponseWriter.Write(b)
}

func (r *recorder) Unwrap() http.ResponseWriter { return r.ResponseWriter }

func (r *recorder) code() int {
	if r.status == 0 {
		// The handler wrote nothing: the client went away during a long
		// poll. 499 is the conventional "client closed request".
		return 499
	}
	return r.status
}

// logWriter sends net/http's own messages (malformed requests, handler
// panics) to the structured log.
type logWriter struct{ log logr.Logger }

func (l logWriter) Write(p []byte) (int, error) {
	l.log.Info("http server", "message", strings.TrimSpace(string(p)))
	return len(p), nil
}

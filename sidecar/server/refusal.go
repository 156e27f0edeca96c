package server

import (
	"net"
	"net/http"
	"strings"
	"sync"

	"golang.org/x/time/rate"

	"github.com/kubevirt-imds/kubevirt-imds/api/payload"
)

// Reasons for refusing a request or shedding a connection: the values of
// the reason label of kubevirt_imds_sidecar_refused_requests_total and
// kubevirt_imds_sidecar_shed_connections_total, and of the log lines.
const (
	reasonFraming    = "framing"     // Transfer-Encoding, several or invalid Content-Length, obs-fold, bare CR/LF
	reasonMalformed  = "malformed"   // a head net/http or RFC 9112 would not accept
	reasonHeaderSize = "header-size" // head over 8 KiB
	reasonBodySize   = "body-size"   // body over 64 KiB
	reasonVersion    = "version"     // HTTP/x.y other than 1.0 and 1.1
	reasonHost       = "host"        // Host (or absolute-form target) not a name the service answers to
	reasonProxy      = "proxy"       // a header only proxies add
	reasonRate       = "rate"        // the connection's request budget is spent
	reasonLongPolls  = "long-polls"  // too many long polls waiting
	reasonURISize    = "uri-size"    // request target over 2 KiB
	reasonPath       = "path"        // path not canonical
	reasonMethod     = "method"      // method other than GET and HEAD
	reasonMetadata   = "metadata"    // /v1 without "Metadata: true"

	reasonConnIdle       = "idle"       // a kept-alive connection made room for a new one
	reasonConnIncomplete = "incomplete" // a connection still sending its first head made room
	reasonConnStalled    = "stalled"    // a connection not reading its response made room
	reasonConnFull       = "full"       // every connection was busy: the new one was refused
)

// refusal is why a request head was refused before net/http parsed it.
type refusal struct {
	code   int
	reason string
	detail string
}

// proxyHeaders are headers that proxies and load balancers add, never a
// client talking to the service directly: a request carrying one was
// forwarded, and may come from someone other than the guest. Lower case,
// with "-" for "_" (some proxies accept either).
var proxyHeaders = map[string]bool{
	"forwarded": true, "via": true, "x-real-ip": true, "x-client-ip": true, "client-ip": true,
	"true-client-ip": true, "x-cluster-client-ip": true, "x-originating-ip": true, "x-remote-ip": true,
	"x-remote-addr": true, "x-proxyuser-ip": true, "cf-connecting-ip": true, "fastly-client-ip": true,
	"x-envoy-external-address": true, "x-original-forwarded-for": true, "x-original-host": true,
	"x-original-url": true, "x-host": true,
}

// proxyHeader returns the first proxy header of h: any of proxyHeaders or
// X-Forwarded and X-Forwarded-* (-For, -Host, -Proto, -Port, …).
func proxyHeader(h http.Header) (string, bool) {
	for k := range h {
		n := strings.ToLower(strings.ReplaceAll(k, "_", "-"))
		if proxyHeaders[n] || n == "x-forwarded" || strings.HasPrefix(n, "x-forwarded-") {
			return k, true
		}
	}
	return "", false
}

// refusalLog rate-limits the refusal log lines per reason: a guest refused
// in a tight loop must not flood the Pod's log, nor hide refusals of
// another kind. Lines dropped are counted into the next one of their
// reason ("suppressed").
type refusalLog struct {
	mu      sync.Mutex
	reasons map[string]*reasonLog
}

type reasonLog struct {
	limiter    *rate.Limiter
	suppressed int64
}

func newRefusalLog() *refusalLog {
	return &refusalLog{reasons: map[string]*reasonLog{}}
}

// allow reports whether to log a refusal for reason now, and how many lines
// of that reason were dropped since the last one.
func (l *refusalLog) allow(reason string) (bool, int64) {
	l.mu.Lock()
	defer l.mu.Unlock()
	r := l.reasons[reason]
	if r == nil {
		// One line a second, bursts of five: an operator sees what
		// happened and how often (the counters have every refusal).
		r = &reasonLog{limiter: rate.NewLimiter(1, 5)}
		l.reasons[reason] = r
	}
	if !r.limiter.Allow() {
		r.suppressed++
		return false, 0
	}
	dropped := r.suppressed
	r.suppressed = 0
	return true, dropped
}

// refuse answers a refused request with code, counts it under reason and
// logs it (rate-limited, at info level).
func (s *Server) refuse(w http.ResponseWriter, r *http.Request, d payload.Dialect, code int, reason, detail string) {
	s.metrics.refused(reason)
	if ok, dropped := s.refusals.allow(reason); ok {
		kv := []any{"reason", reason, "status", code, "remote", r.RemoteAddr}
		if detail != "" {
			kv = append(kv, "detail", detail)
		}
		if reason != reasonFraming && reason != reasonMalformed && reason != reasonHeaderSize &&
			reason != reasonBodySize && reason != reasonVersion {
			// The request line is the guest's own only when its head was
			// accepted.
			kv = append(kv, "method", r.Method, "uri", truncate(r.RequestURI, 256), "host", truncate(r.Host, 256))
		}
		if dropped > 0 {
			kv = append(kv, "suppressed", dropped)
		}
		s.log.Info("request refused", kv...)
	}
	msg := reasonMessages[reason]
	if detail != "" {
		msg += ": " + detail
	}
	s.fail(w, d, code, msg)
}

// reasonMessages are the /v1 error messages of refusals.
var reasonMessages = map[string]string{
	reasonFraming:    "ambiguous request framing",
	reasonMalformed:  "malformed request",
	reasonHeaderSize: "request head over 8 KiB",
	reasonBodySize:   "request body over 64 KiB",
	reasonVersion:    "HTTP version not supported",
	reasonHost:       "Host is not a name of this service",
	reasonProxy:      "forwarded requests are refused",
	reasonRate:       "rate limit exceeded",
	reasonLongPolls:  "too many long polls",
	reasonURISize:    "request URI too long",
	reasonPath:       "path is not canonical",
	reasonMethod:     "method not allowed",
	reasonMetadata:   `header "Metadata: true" is required`,
	reasonToken:      "a valid session token is required",
	reasonTokenTTL:   TokenTTLHeader + " must be 1 to 21600",
}

// shedConn counts and logs (rate-limited) a connection closed to keep the
// guest within the connection cap.
func (s *Server) shedConn(reason string, remote net.Addr) {
	s.metrics.shed(reason)
	if ok, dropped := s.refusals.allow("connection " + reason); ok {
		kv := []any{"reason", reason, "remote", remote.String(), "limit", s.conns.max}
		if dropped > 0 {
			kv = append(kv, "suppressed", dropped)
		}
		s.log.Info("connection shed", kv...)
	}
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}

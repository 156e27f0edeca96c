package server

import (
	"net/http"
	"strconv"

	"golang.org/x/net/ipv4"

	"github.com/kubevirt-imds/kubevirt-imds/api/payload"
)

// Refusal reasons of the EC2 dialect.
const (
	reasonToken    = "token"     // an EC2 request without a valid session token where one is needed
	reasonTokenTTL = "token-ttl" // a token PUT without a TTL of 1 to 21600 seconds
)

// tokenPut reports a PUT to the token path, the one PUT the service takes.
func tokenPut(r *http.Request) bool {
	return r.Method == http.MethodPut && r.URL.Path == TokenPath
}

// servesEC2 reports whether doc enables the EC2 paths: nova serves the tree
// beside OpenStack's, so either dialect does.
func servesEC2(doc *payload.Document) bool {
	return doc.Serves(payload.DialectEC2) || doc.Serves(payload.DialectOpenStack)
}

// tokensRequired reports whether EC2 requests need a session token: only
// where the document asks for it and enables the ec2 dialect, so a service
// serving the tree only as part of OpenStack's (whose clients, cloud-init's
// OpenStack datasource and cloudbase-init, never send a token) keeps working.
func tokensRequired(doc *payload.Document) bool {
	return doc.Serves(payload.DialectEC2) && doc.EC2 != nil && doc.EC2.HTTPTokens == payload.HTTPTokensRequired
}

// hopLimit is the IP TTL of a token response.
func hopLimit(doc *payload.Document) int {
	if doc.EC2 != nil && doc.EC2.HopLimit > 0 && doc.EC2.HopLimit <= 255 {
		return doc.EC2.HopLimit
	}
	return 1
}

// serveEC2 serves the EC2 paths as IMDS does:
//
//   - PUT /latest/api/token with X-aws-ec2-metadata-token-ttl-seconds 1 to
//     21600 issues a token (400 for a missing or other TTL), its TTL echoed
//     in the same header; the response's packets leave with the document's
//     hop limit as IP TTL, so a token cannot travel further than that many
//     hops (a container inside the guest routed through its own bridge is
//     one more). Other methods on the token path get 405. A PUT carrying
//     X-Forwarded-For never gets here: every proxy header is refused (403)
//     before routing.
//   - A request carrying X-aws-ec2-metadata-token gets 401 unless the token
//     is valid and unexpired, whatever httpTokens says; one without it gets
//     401 when tokens are required, and the document otherwise (IMDSv1).
func (s *Server) serveEC2(w http.ResponseWriter, r *http.Request) {
	d := payload.DialectEC2
	sn := s.current()
	if sn == nil {
		w.Header().Set("Retry-After", retryAfterUnloaded)
		s.fail(w, d, http.StatusServiceUnavailable, "metadata not available yet")
		return
	}
	if !servesEC2(sn.doc) {
		s.fail(w, d, http.StatusNotFound, "not found")
		return
	}
	if r.URL.Path == TokenPath {
		if r.Method != http.MethodPut {
			w.Header().Set("Allow", http.MethodPut)
			s.refuse(w, r, d, http.StatusMethodNotAllowed, reasonMethod, "")
			return
		}
		s.issueToken(w, r, sn.doc)
		return
	}
	if vals, ok := r.Header[http.CanonicalHeaderKey(TokenHeader)]; ok {
		if len(vals) != 1 || !s.tokens.valid(vals[0]) {
			s.refuse(w, r, d, http.StatusUnauthorized, reasonToken, "")
			return
		}
		w.Header().Set(TokenTTLHeader, strconv.Itoa(s.tokens.remaining(vals[0])))
	} else if tokensRequired(sn.doc) {
		s.refuse(w, r, d, http.StatusUnauthorized, reasonToken, "")
		return
	}
	res, ok := sn.files[r.URL.Path]
	if !ok {
		s.fail(w, d, http.StatusNotFound, "not found")
		return
	}
	writeResource(w, r, res)
}

// issueToken answers a token PUT.
func (s *Server) issueToken(w http.ResponseWriter, r *http.Request, doc *payload.Document) {
	vals := r.Header.Values(TokenTTLHeader)
	ttl, ok := 0, len(vals) == 1
	if ok {
		ttl, ok = parseTTL(vals[0])
	}
	if !ok {
		s.refuse(w, r, payload.DialectEC2, http.StatusBadRequest, reasonTokenTTL, "")
		return
	}
	if gc := connOf(r); gc != nil && gc.tcp != nil {
		// Best effort: a socket whose TTL cannot be set still answers, as
		// the hop limit guards against forwarding, not the guest itself.
		if err := ipv4.NewConn(gc.tcp).SetTTL(hopLimit(doc)); err != nil {
			s.log.V(1).Info("cannot set the token response's hop limit", "error", err.Error())
		}
	}
	tok := s.tokens.issue(ttl)
	h := w.Header()
	h.Set(TokenTTLHeader, strconv.Itoa(ttl))
	h.Set("Content-Type", contentText)
	h.Set("Content-Length", strconv.Itoa(len(tok)))
	h.Set("Cache-Control", "no-store")
	h.Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write([]byte(tok))
}

// parseTTL reads a token TTL: decimal digits only, 1 to MaxTokenTTL.
func parseTTL(v string) (int, bool) {
	if v == "" || len(v) > 5 {
		return 0, false
	}
	for i := 0; i < len(v); i++ {
		if v[i] < '0' || v[i] > '9' {
			return 0, false
		}
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < MinTokenTTL || n > MaxTokenTTL {
		return 0, false
	}
	return n, true
}

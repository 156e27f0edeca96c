package server

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"io/fs"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/kubevirt-imds/kubevirt-imds/api/payload"
	"github.com/kubevirt-imds/kubevirt-imds/sidecar/store"
)

// longPollSlack is added to a long poll's own timeout for its read and write
// deadlines.
const longPollSlack = 10 * time.Second

// apiError is an error response of the /v1 API.
type apiError struct {
	code       int
	msg        string
	retryAfter string
}

// errorBody is the shape of every /v1 error.
type errorBody struct {
	Error struct {
		Code    int    `json:"code"`
		Message string `json:"message"`
	} `json:"error"`
}

func writeJSONError(w http.ResponseWriter, code int, msg string) {
	var e errorBody
	e.Error.Code, e.Error.Message = code, msg
	body, err := json.Marshal(e)
	if err != nil {
		// Two plain fields always encode.
		body = []byte(`{"error":{"code":500,"message":"internal error"}}`)
	}
	h := w.Header()
	h.Set("Content-Type", contentJSON)
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Content-Length", strconv.Itoa(len(body)))
	w.WriteHeader(code)
	_, _ = w.Write(body)
}

// serveV1 serves /v1/…, including the long poll: with wait_for_change=true
// the answer waits until the resource's ETag differs from last_etag (the
// current one when absent), timeout_sec passes (default and cap MaxWait), the
// client goes away (no answer) or the server shuts down; it then carries the
// current value.
func (s *Server) serveV1(w http.ResponseWriter, r *http.Request) {
	if !strings.EqualFold(r.Header.Get("Metadata"), "true") {
		s.refuse(w, r, payload.DialectV1, http.StatusBadRequest, reasonMetadata, "")
		return
	}
	q := r.URL.Query()
	wait, lastETag, timeout, aerr := parseWait(q)
	if aerr != nil {
		s.writeAPIError(w, aerr)
		return
	}
	// Subscribe before resolving so that a change in between is not missed.
	changed := s.store.Changed()
	res, aerr := s.resolveV1(r.URL.Path, q)
	if wait && aerr == nil {
		if lastETag == "" {
			lastETag = res.etag
		}
		if sameETag(res.etag, lastETag) {
			// Long polls have their own budget: the many a guest may
			// park never hold back its other requests, nor other
			// clients' polls beyond the cap.
			if s.polling.Add(1) > s.maxLongPolls {
				s.polling.Add(-1)
				w.Header().Set("Retry-After", retryAfterLongPolls)
				s.refuse(w, r, payload.DialectV1, http.StatusTooManyRequests, reasonLongPolls, "")
				return
			}
			defer s.polling.Add(-1)
			if gc := connOf(r); gc != nil {
				// A parked poll is not a stalled connection.
				s.conns.setLongPoll(gc, true)
				defer s.conns.setLongPoll(gc, false)
			}
			deadline := time.Now().Add(timeout + longPollSlack)
			rc := http.NewResponseController(w)
			// Both deadlines matter: net/http cancels the request when
			// its read deadline passes while it watches for the client
			// closing. Errors mean the writer has no deadlines to move.
			_ = rc.SetReadDeadline(deadline)
			_ = rc.SetWriteDeadline(deadline)
			timer := time.NewTimer(timeout)
			defer timer.Stop()
		poll:
			for aerr == nil && sameETag(res.etag, lastETag) {
				select {
				case <-changed:
					changed = s.store.Changed()
					res, aerr = s.resolveV1(r.URL.Path, q)
				case <-timer.C:
					break poll
				case <-s.stopping:
					break poll
				case <-r.Context().Done():
					return
				}
			}
		}
	}
	if aerr != nil {
		s.writeAPIError(w, aerr)
		return
	}
	writeResource(w, r, res)
}

// sameETag compares ETags ignoring quotes and a weak prefix, since a client
// may pass last_etag as it appears in the header or unquoted.
func sameETag(a, b string) bool {
	norm := func(e string) string { return strings.Trim(strings.TrimPrefix(e, "W/"), `"`) }
	return norm(a) == norm(b)
}

func (s *Server) writeAPIError(w http.ResponseWriter, e *apiError) {
	if e.retryAfter != "" {
		w.Header().Set("Retry-After", e.retryAfter)
	}
	writeJSONError(w, e.code, e.msg)
}

// parseWait reads the long-poll parameters.
func parseWait(q url.Values) (wait bool, lastETag string, timeout time.Duration, _ *apiError) {
	switch v := q.Get("wait_for_change"); v {
	case "", "false":
		return false, "", 0, nil
	case "true":
	default:
		return false, "", 0, &apiError{code: http.StatusBadRequest, msg: "wait_for_change must be true or false"}
	}
	timeout = MaxWait
	if v := q.Get("timeout_sec"); v != "" {
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil || n <= 0 {
			return false, "", 0, &apiError{code: http.StatusBadRequest, msg: "timeout_sec must be a positive integer"}
		}
		if n < int64(MaxWait/time.Second) {
			timeout = time.Duration(n) * time.Second
		}
	}
	return true, q.Get("last_etag"), timeout, nil
}

// resolveV1 renders the /v1 resource at p for the current document.
func (s *Server) resolveV1(p string, q url.Values) (*resource, *apiError) {
	res, aerr := s.lookupV1(p, q)
	if aerr == nil && res.failed {
		return nil, &apiError{code: http.StatusInternalServerError, msg: "document cannot be rendered"}
	}
	return res, aerr
}

func (s *Server) lookupV1(p string, q url.Values) (*resource, *apiError) {
	sn := s.current()
	switch {
	case sn == nil:
		return nil, &apiError{code: http.StatusServiceUnavailable, msg: "metadata not available yet", retryAfter: retryAfterUnloaded}
	case !sn.doc.Serves(payload.DialectV1):
		return nil, &apiError{code: http.StatusNotFound, msg: "not found"}
	}
	switch p {
	case "/v1/token":
		return s.token(sn.doc, q)
	case "/v1/network-config":
		if sn.v1NetworkConfig == nil {
			return nil, &apiError{code: http.StatusNotFound, msg: "no network configuration"}
		}
		format := q.Get("format")
		if format == "" {
			format = "json"
		}
		res, ok := sn.v1NetworkConfig[format]
		if !ok {
			return nil, &apiError{code: http.StatusBadRequest, msg: "format must be one of json, v1, v2, eni"}
		}
		return res, nil
	}
	if res, ok := sn.files[p]; ok {
		return res, nil
	}
	switch p {
	case "/v1/user-data":
		return nil, &apiError{code: http.StatusNotFound, msg: "no user-data"}
	case "/v1/vendor-data":
		return nil, &apiError{code: http.StatusNotFound, msg: "no vendor-data"}
	}
	return nil, &apiError{code: http.StatusNotFound, msg: "not found"}
}

// tokenBody is the /v1/token response.
type tokenBody struct {
	Audience string `json:"audience"`
	Token    string `json:"token"`
	// ExpirationTimestamp is the token's exp claim (RFC 3339, UTC); empty
	// when the token carries none.
	ExpirationTimestamp string `json:"expirationTimestamp,omitempty"`
}

// token serves /v1/token?audience=A. With one audience configured it is the
// default; with several the caller must choose.
func (s *Server) token(doc *payload.Document, q url.Values) (*resource, *apiError) {
	audience := q.Get("audience")
	if audience == "" {
		switch len(doc.Tokens) {
		case 0:
			return nil, &apiError{code: http.StatusNotFound, msg: "no token audiences are configured"}
		case 1:
			audience = doc.Tokens[0].Audience
		default:
			auds := make([]string, 0, len(doc.Tokens))
			for _, t := range doc.Tokens {
				auds = append(auds, strconv.Quote(t.Audience))
			}
			return nil, &apiError{code: http.StatusBadRequest, msg: "audience is required, one of: " + strings.Join(auds, ", ")}
		}
	}
	tok, err := s.store.Token(audience)
	switch {
	case errors.Is(err, store.ErrUnknownAudience):
		return nil, &apiError{code: http.StatusNotFound, msg: "audience " + strconv.Quote(audience) + " is not configured"}
	case errors.Is(err, store.ErrNotLoaded):
		return nil, &apiError{code: http.StatusServiceUnavailable, msg: "metadata not available yet", retryAfter: retryAfterUnloaded}
	case errors.Is(err, fs.ErrNotExist):
		// kubelet writes the projected token shortly after Pod start.
		return nil, &apiError{code: http.StatusServiceUnavailable, msg: "token not available yet", retryAfter: retryAfterUnloaded}
	case err != nil:
		s.log.Error(err, "cannot read token", "audience", audience)
		return nil, &apiError{code: http.StatusInternalServerError, msg: "token cannot be read"}
	}
	body := tokenBody{Audience: audience, Token: string(tok)}
	if exp, ok := jwtExpiry(tok); ok {
		body.ExpirationTimestamp = exp.UTC().Format(time.RFC3339)
	}
	b, err := jsonBody(body)
	if err != nil {
		return nil, &apiError{code: http.StatusInternalServerError, msg: "token cannot be encoded"}
	}
	res := newResource(b, contentJSON)
	res.noStore = true
	return res, nil
}

// jwtExpiry reads the exp claim of a JWT without verifying it: the sidecar
// only reports when kubelet's token expires, the token's consumer verifies.
func jwtExpiry(tok []byte) (time.Time, bool) {
	parts := bytes.Split(tok, []byte("."))
	if len(parts) != 3 {
		return time.Time{}, false
	}
	raw := bytes.TrimRight(parts[1], "=")
	claims := make([]byte, base64.RawURLEncoding.DecodedLen(len(raw)))
	n, err := base64.RawURLEncoding.Decode(claims, raw)
	if err != nil {
		return time.Time{}, false
	}
	var c struct {
		Exp *json.Number `json:"exp"`
	}
	if err := json.Unmarshal(claims[:n], &c); err != nil || c.Exp == nil {
		return time.Time{}, false
	}
	f, err := c.Exp.Float64()
	if err != nil || f <= 0 || f > 1e11 {
		return time.Time{}, false
	}
	return time.Unix(int64(f), 0), true
}

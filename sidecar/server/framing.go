package server

import (
	"bufio"
	"bytes"
	"net/http"
	"strconv"

	"golang.org/x/net/http/httpguts"
)

// maxBodyBytes caps a request body. Only nova's password POST carries one:
// cloudbase-init posts the encrypted password, a few hundred bytes.
const maxBodyBytes = 64 << 10

// headEnd is the blank line that ends a request head.
var headEnd = []byte("\r\n\r\n")

// vetHead checks one request head, from the request line up to and
// including its blank line, before net/http sees it. It accepts only heads
// whose framing every HTTP/1.1 implementation reads the same way, so that
// nothing a proxy in the guest forwards can be split into requests other
// than the ones it meant (RFC 9112 §11.2): lines end in CRLF, no line is
// folded (obs-fold, §5.2), field names are tokens followed directly by the
// colon (§5.1), there is no Transfer-Encoding at all (bodies, which only the
// password POST has, are framed by Content-Length), at most one
// Content-Length field with one decimal value, exactly one Host field, and
// net/http parses it without error. It returns the body's length, or the
// refusal.
func vetHead(head []byte) (int64, *refusal) {
	if len(head) > maxHeaderBytes {
		return 0, &refusal{code: http.StatusRequestHeaderFieldsTooLarge, reason: reasonHeaderSize}
	}
	if !bytes.HasSuffix(head, headEnd) {
		return 0, &refusal{code: http.StatusBadRequest, reason: reasonMalformed, detail: "unterminated head"}
	}
	lines := bytes.Split(head[:len(head)-len(headEnd)], []byte("\r\n"))
	if r := vetRequestLine(lines[0]); r != nil {
		return 0, r
	}
	var hosts, lengths int
	var bodyLen int64
	for _, line := range lines[1:] {
		if len(line) == 0 {
			return 0, &refusal{code: http.StatusBadRequest, reason: reasonMalformed, detail: "empty line inside the head"}
		}
		if line[0] == ' ' || line[0] == '\t' {
			return 0, &refusal{code: http.StatusBadRequest, reason: reasonFraming, detail: "folded header line (obs-fold)"}
		}
		if bytes.IndexByte(line, '\r') >= 0 || bytes.IndexByte(line, '\n') >= 0 {
			return 0, &refusal{code: http.StatusBadRequest, reason: reasonFraming, detail: "bare CR or LF"}
		}
		name, value, ok := bytes.Cut(line, []byte(":"))
		if !ok || !httpguts.ValidHeaderFieldName(string(name)) {
			return 0, &refusal{code: http.StatusBadRequest, reason: reasonMalformed, detail: "invalid header field name"}
		}
		value = bytes.Trim(value, " \t")
		if !httpguts.ValidHeaderFieldValue(string(value)) {
			return 0, &refusal{code: http.StatusBadRequest, reason: reasonMalformed, detail: "invalid header field value"}
		}
		switch {
		case asciiEqualFold(name, "transfer-encoding"):
			return 0, &refusal{code: http.StatusBadRequest, reason: reasonFraming, detail: "Transfer-Encoding"}
		case asciiEqualFold(name, "content-length"):
			lengths++
			if lengths > 1 {
				return 0, &refusal{code: http.StatusBadRequest, reason: reasonFraming, detail: "more than one Content-Length"}
			}
			n, ok := parseLength(value)
			if !ok {
				return 0, &refusal{code: http.StatusBadRequest, reason: reasonFraming, detail: "invalid Content-Length"}
			}
			if n > maxBodyBytes {
				return 0, &refusal{code: http.StatusRequestEntityTooLarge, reason: reasonBodySize}
			}
			bodyLen = n
		case asciiEqualFold(name, "host"):
			hosts++
		case asciiEqualFold(name, "expect"):
			if !asciiEqualFold(value, "100-continue") {
				return 0, &refusal{code: http.StatusExpectationFailed, reason: reasonMalformed, detail: "unsupported Expect"}
			}
		}
	}
	if hosts != 1 {
		return 0, &refusal{code: http.StatusBadRequest, reason: reasonMalformed, detail: "not exactly one Host field"}
	}
	// What net/http's server would refuse on its own, without a word to
	// the logs: refused here instead, with the reason.
	req, err := http.ReadRequest(bufio.NewReaderSize(bytes.NewReader(head), len(head)))
	if err != nil {
		return 0, &refusal{code: http.StatusBadRequest, reason: reasonMalformed, detail: "unparsable request"}
	}
	if !httpguts.ValidHostHeader(req.Host) {
		return 0, &refusal{code: http.StatusBadRequest, reason: reasonMalformed, detail: "invalid Host"}
	}
	return bodyLen, nil
}

// vetRequestLine checks method SP request-target SP HTTP-version.
func vetRequestLine(line []byte) *refusal {
	method, rest, ok1 := bytes.Cut(line, []byte(" "))
	target, version, ok2 := bytes.Cut(rest, []byte(" "))
	if !ok1 || !ok2 || len(method) == 0 || len(target) == 0 {
		return &refusal{code: http.StatusBadRequest, reason: reasonMalformed, detail: "invalid request line"}
	}
	for _, c := range method {
		if !httpguts.IsTokenRune(rune(c)) {
			return &refusal{code: http.StatusBadRequest, reason: reasonMalformed, detail: "invalid method"}
		}
	}
	for _, c := range target {
		// Visible ASCII only (RFC 9112 §3.2): no spaces, controls or
		// raw non-ASCII bytes.
		if c <= ' ' || c >= 0x7f {
			return &refusal{code: http.StatusBadRequest, reason: reasonMalformed, detail: "invalid request target"}
		}
	}
	switch string(version) {
	case "HTTP/1.1", "HTTP/1.0":
		return nil
	}
	if len(version) == len("HTTP/x.y") && bytes.HasPrefix(version, []byte("HTTP/")) && version[6] == '.' &&
		isDigit(version[5]) && isDigit(version[7]) {
		return &refusal{code: http.StatusHTTPVersionNotSupported, reason: reasonVersion}
	}
	return &refusal{code: http.StatusBadRequest, reason: reasonMalformed, detail: "invalid HTTP version"}
}

// parseLength reads a Content-Length value: digits only, no sign, no list.
func parseLength(v []byte) (int64, bool) {
	if len(v) == 0 || len(v) > 18 {
		return 0, false
	}
	for _, c := range v {
		if !isDigit(c) {
			return 0, false
		}
	}
	n, err := strconv.ParseInt(string(v), 10, 64)
	return n, err == nil
}

func isDigit(c byte) bool { return c >= '0' && c <= '9' }

// asciiEqualFold compares b with the lower-case ASCII s, ignoring case.
func asciiEqualFold(b []byte, s string) bool {
	if len(b) != len(s) {
		return false
	}
	for i := range b {
		c := b[i]
		if c >= 'A' && c <= 'Z' {
			c += 'a' - 'A'
		}
		if c != s[i] {
			return false
		}
	}
	return true
}

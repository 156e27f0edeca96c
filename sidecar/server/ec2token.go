package server

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"fmt"
	"time"
)

// IMDSv2 session tokens are stateless: a token is its expiry and an HMAC of
// it under a key this process draws at start. Validating one is a MAC check
// and a clock read, so the memory tokens take is zero however many a guest
// asks for (a store of issued tokens grows with the guest's PUT rate and needs
// locking that a known mock of this API got wrong); a restarted sidecar has a
// new key and every earlier token is invalid, as on EC2 after a stop/start.
// A token cannot be revoked before its expiry, which AWS offers no way to do
// either.

const (
	// TokenTTLHeader carries the requested lifetime of a token on PUT and
	// echoes the granted one on the response (and on every answer to a
	// request that carried a token, as EC2 does).
	TokenTTLHeader = "X-aws-ec2-metadata-token-ttl-seconds"
	// TokenHeader carries a session token on a request.
	TokenHeader = "X-aws-ec2-metadata-token"
	// MinTokenTTL and MaxTokenTTL bound a token's lifetime in seconds, as
	// on EC2 (400 outside).
	MinTokenTTL = 1
	MaxTokenTTL = 21600
	// TokenPath is where tokens are issued (PUT only).
	TokenPath = "/latest/api/token"

	tokenMACBytes = 20
	tokenRawBytes = 8 + tokenMACBytes
)

// tokenIssuer mints and checks session tokens. Its key never changes after
// newTokenIssuer, so it is safe for concurrent use without locks.
type tokenIssuer struct {
	key [32]byte
	now func() time.Time
}

func newTokenIssuer() (*tokenIssuer, error) {
	t := &tokenIssuer{now: time.Now}
	if _, err := rand.Read(t.key[:]); err != nil {
		return nil, fmt.Errorf("drawing the IMDSv2 token key: %w", err)
	}
	return t, nil
}

// issue returns a token valid for ttl seconds.
func (t *tokenIssuer) issue(ttl int) string {
	var raw [tokenRawBytes]byte
	exp := t.now().Add(time.Duration(ttl) * time.Second).UnixMilli()
	binary.BigEndian.PutUint64(raw[:8], uint64(exp))
	copy(raw[8:], t.mac(raw[:8]))
	return base64.RawURLEncoding.EncodeToString(raw[:])
}

// valid reports whether tok is a token this process issued that has not
// expired.
func (t *tokenIssuer) valid(tok string) bool {
	if base64.RawURLEncoding.DecodedLen(len(tok)) != tokenRawBytes {
		return false
	}
	var raw [tokenRawBytes]byte
	if n, err := base64.RawURLEncoding.Decode(raw[:], []byte(tok)); err != nil || n != tokenRawBytes {
		return false
	}
	if !hmac.Equal(raw[8:], t.mac(raw[:8])) {
		return false
	}
	exp := int64(binary.BigEndian.Uint64(raw[:8])) //nolint:gosec // written by issue from a positive UnixMilli
	return t.now().UnixMilli() < exp
}

// remaining is the whole seconds left of a valid token (at least 1).
func (t *tokenIssuer) remaining(tok string) int {
	var raw [tokenRawBytes]byte
	if _, err := base64.RawURLEncoding.Decode(raw[:], []byte(tok)); err != nil {
		return 0
	}
	ms := int64(binary.BigEndian.Uint64(raw[:8])) - t.now().UnixMilli() //nolint:gosec // see valid
	return max(1, int(ms/1000))
}

func (t *tokenIssuer) mac(b []byte) []byte {
	m := hmac.New(sha256.New, t.key[:])
	m.Write(b)
	return m.Sum(nil)[:tokenMACBytes]
}

package controllers

import (
	"errors"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/types"
)

// A payload write is claimed by one writer in the process at a time, until
// its Secret reaches the cache, the write ends without writing, or the
// claim expires.
func TestPayloadClaims(t *testing.T) {
	r := &MetadataServiceReconciler{}
	const uid = types.UID("a")
	if !r.claim(uid) {
		t.Fatal("a free write was not claimed")
	}
	if r.claim(uid) {
		t.Fatal("a claimed write was claimed twice")
	}
	r.endClaim(uid, true, nil)
	if r.claim(uid) {
		t.Fatal("a write that wrote was released before its Secret reached the cache")
	}
	r.claimed.Delete(uid) // what servicesForPayloadSecret does on the Secret's event
	if !r.claim(uid) {
		t.Fatal("not claimable after the Secret's event")
	}
	r.endClaim(uid, false, errors.New("conflict"))
	if !r.claim(uid) {
		t.Fatal("not claimable after a failed write")
	}
	r.endClaim(uid, false, nil)
	r.claimed.Store(uid, time.Now().Add(-payloadClaimTTL))
	if !r.claim(uid) {
		t.Fatal("an expired claim was not taken over")
	}
}

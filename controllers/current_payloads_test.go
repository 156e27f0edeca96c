package controllers

import (
	"testing"

	"k8s.io/apimachinery/pkg/types"
)

func TestCurrentPayloads(t *testing.T) {
	const uid, other = types.UID("a"), types.UID("b")
	tests := []struct {
		name string
		// between runs after since and before remember: a Secret event.
		between func(c *currentPayloads)
		want    bool
	}{
		{name: "no event: remembered", between: func(*currentPayloads) {}, want: true},
		{name: "its Secret changed while it was compared: not remembered", between: func(c *currentPayloads) { c.forget(uid) }, want: false},
		{name: "another Secret changed meanwhile: not remembered, rendered again next time", between: func(c *currentPayloads) { c.forget(other) }, want: false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var c currentPayloads
			seq := c.since()
			tt.between(&c)
			c.remember(uid, "k1", seq)
			if got := c.isCurrent(uid, "k1"); got != tt.want {
				t.Fatalf("isCurrent = %v, want %v", got, tt.want)
			}
			if c.isCurrent(uid, "k2") {
				t.Fatal("current for inputs it was not compared with")
			}
		})
	}
	t.Run("an event after remember forgets", func(t *testing.T) {
		var c currentPayloads
		c.remember(uid, "k1", c.since())
		c.forget(uid)
		if c.isCurrent(uid, "k1") {
			t.Fatal("still current after its Secret's event")
		}
	})
}

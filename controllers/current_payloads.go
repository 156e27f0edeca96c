package controllers

import (
	"sync"

	"k8s.io/apimachinery/pkg/types"
)

// currentPayloads remembers, per VMI UID, the inputs its payload Secret was
// last found current for, so that a reconcile renders only the VMIs whose
// inputs changed: in a boot storm each VMI event would otherwise re-render
// every instance of the service.
//
// A payload Secret's event forgets its entry. A reconcile that compared the
// Secret before that event must not put the entry back after it, or the
// reconcile the event queued would skip an edited or deleted Secret: every
// forget moves a sequence number, and remember stores only if the number is
// still the one taken before the Secret was read. The number is global, not
// per VMI, so that forgetting never leaves an entry behind for a VMI that is
// gone; a concurrent event only costs the next reconcile a render.
type currentPayloads struct {
	mu     sync.Mutex
	seq    uint64
	inputs map[types.UID]string
}

// since returns the sequence number to hand to remember, taken before the
// Secret is read.
func (c *currentPayloads) since() uint64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.seq
}

// isCurrent reports whether uid's Secret was found current for inputs and
// not changed since.
func (c *currentPayloads) isCurrent(uid types.UID, inputs string) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	have, ok := c.inputs[uid]
	return ok && have == inputs
}

// remember records that uid's Secret is current for inputs, unless a Secret
// event came after seq (from since).
func (c *currentPayloads) remember(uid types.UID, inputs string, seq uint64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.seq != seq {
		return
	}
	if c.inputs == nil {
		c.inputs = make(map[types.UID]string)
	}
	c.inputs[uid] = inputs
}

// forget drops uid's entry: its Secret changed or is gone.
func (c *currentPayloads) forget(uid types.UID) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.seq++
	delete(c.inputs, uid)
}

// Package output collects what test processes print.
package output

import (
	"bytes"
	"sync"
)

// Buffer collects a process's output while it runs and can be read at any
// time: exec.Cmd writes to it from its own goroutines.
type Buffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

// Write appends p.
func (s *Buffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

// String returns everything written so far.
func (s *Buffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

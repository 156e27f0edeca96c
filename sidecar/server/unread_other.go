//go:build !linux

package server

// unread cannot tell elsewhere: every connection without a request is as
// good a choice as another.
func (c *gateConn) unread() int { return 0 }

package server

import "golang.org/x/sys/unix"

// unread is how many bytes wait in the connection's socket, not yet read
// by its goroutine (0 when it cannot tell).
func (c *gateConn) unread() int {
	if c.tcp == nil {
		return 0
	}
	raw, err := c.tcp.SyscallConn()
	if err != nil {
		return 0
	}
	n := 0
	_ = raw.Control(func(fd uintptr) {
		n, _ = unix.IoctlGetInt(int(fd), unix.SIOCINQ)
	})
	return n
}

//go:build unix

package proxy

import "syscall"

// idleCheck peeks at an idle connection without blocking and without taking
// anything from it.
type idleCheck struct {
	rc    syscall.RawConn // nil: the connection cannot be checked, so it is never reused
	peek  func(fd uintptr) bool
	clear bool // what peek found: nothing to read, not closed
	one   [1]byte
}

func (c *upConn) initIdleCheck() {
	if sc, ok := c.Conn.(syscall.Conn); ok {
		c.rc, _ = sc.SyscallConn()
	}
	c.peek = c.peekFD // once: a method value made per check would allocate
}

// peekFD is a MSG_PEEK|MSG_DONTWAIT recv of one byte: EAGAIN means nothing has
// arrived; a byte, an end of file (0) or any other error make the connection unusable.
func (c *upConn) peekFD(fd uintptr) bool {
	_, _, err := syscall.Recvfrom(int(fd), c.one[:], syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
	c.clear = err == syscall.EAGAIN
	return true // done: never wait for the connection to become readable
}

// quiet reports whether nothing has arrived on the idle connection c (no bytes,
// no close) since its last answer ended.
func (c *upConn) quiet() bool {
	if c.rc == nil {
		return false
	}
	c.clear = false
	if err := c.rc.Read(c.peek); err != nil {
		return false
	}
	return c.clear
}

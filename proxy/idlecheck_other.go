//go:build !unix

package proxy

// idleCheck: without a non-blocking peek, no connection of the fast path is reused
// (http.Transport's are).
type idleCheck struct{}

func (c *upConn) initIdleCheck() {}

func (c *upConn) quiet() bool { return false }

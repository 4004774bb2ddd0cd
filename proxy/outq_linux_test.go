package proxy

import (
	"syscall"
	"testing"
	"time"
	"unsafe"
)

// waitDelivered waits until everything written on c has reached its peer's socket:
// the kernel's send queue (SIOCOUTQ: bytes not yet acknowledged) is empty.
func waitDelivered(t testing.TB, c syscall.Conn) {
	t.Helper()
	rc, err := c.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		var n int32
		var errno syscall.Errno
		if err := rc.Control(func(fd uintptr) {
			_, _, errno = syscall.Syscall(syscall.SYS_IOCTL, fd, syscall.TIOCOUTQ, uintptr(unsafe.Pointer(&n)))
		}); err != nil {
			t.Fatal(err)
		}
		if errno != 0 {
			t.Fatalf("SIOCOUTQ: %v", errno)
		}
		if n == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d bytes still unacknowledged after 5s", n)
		}
		time.Sleep(time.Millisecond)
	}
}

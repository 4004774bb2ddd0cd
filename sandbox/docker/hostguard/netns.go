package hostguard

import (
	"fmt"
	"net"
	"runtime"
	"slices"

	"golang.org/x/sys/unix"
)

// linkExists reports whether the interface is in the namespace the rules go to. Rules
// for a bridge that is not there would match nothing: the promise would be broken
// without a word.
func linkExists(o options, name string) (bool, error) {
	var found bool
	err := inNetNS(o, func() error {
		ifs, err := net.Interfaces()
		found = slices.ContainsFunc(ifs, func(i net.Interface) bool { return i.Name == name })
		return err
	})
	return found, err
}

// inNetNS runs fn on an OS thread that is in o's namespace (the caller's without
// WithNetNS). The thread is locked for fn; if it cannot be put back into its own
// namespace it stays locked, so Go retires it rather than reuse it there.
func inNetNS(o options, fn func() error) error {
	if !o.hasNetNS {
		return fn()
	}
	runtime.LockOSThread()
	self, err := unix.Open("/proc/thread-self/ns/net", unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		runtime.UnlockOSThread()
		return fmt.Errorf("open own network namespace: %w", err)
	}
	defer func() { _ = unix.Close(self) }()
	if err := unix.Setns(o.netns, unix.CLONE_NEWNET); err != nil {
		runtime.UnlockOSThread()
		return fmt.Errorf("enter network namespace: %w", err)
	}
	defer func() {
		if unix.Setns(self, unix.CLONE_NEWNET) == nil {
			runtime.UnlockOSThread()
		}
	}()
	return fn()
}

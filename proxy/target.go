package proxy

import (
	"errors"
	"io"
	"math/rand/v2"
	"net"
	"sync"
	"sync/atomic"
	"syscall"
)

// Target is one instance of a plugin: where its requests can go.
type Target struct {
	// ID names the instance (its container ID). It is the target's identity across
	// SetReady calls: a target that stays in a plugin's set keeps its connections and
	// its in-flight count; one that leaves it is retired and drains.
	ID      string
	Network string // "tcp" (Address is host:port) or "unix" (Address is a socket path)
	Address string
}

// ejectAfter consecutive connection failures take a target out of the balancing until
// the runner reports a good health probe of it (Alive).
const ejectAfter = 3

// target is one instance's transport and counters, shared by the successive backends
// of its plugin for as long as it stays in the set.
type target struct {
	Target
	transport *fastTransport
	host      string // the Host header of requests to it
	maxHeader int64  // the bound of its response headers

	active   atomic.Int64 // requests in flight
	retired  atomic.Bool  // out of the plugin's set: nothing new is sent to it
	failures atomic.Int32 // consecutive connection failures
	ejected  atomic.Bool  // out of the balancing after ejectAfter failures

	releaseOnce sync.Once
	released    chan struct{} // closed once retired with nothing in flight
}

func newTarget(t Target, maxIdle int, maxHeader int64, noFast bool) *target {
	tg := &target{Target: t, released: make(chan struct{}), host: t.Address, maxHeader: maxHeader}
	if t.Network == "unix" {
		tg.host = "localhost"
	}
	tg.transport = newUpstream(t.Network, t.Address, maxIdle, maxHeader)
	tg.transport.noFast = noFast
	return tg
}

// acquireResult is what acquire decided.
type acquireResult int

const (
	acquired acquireResult = iota
	overCapacity
	retiredTarget // retired meanwhile: look the route up again
)

// acquire counts a request in, unless limit (> 0) are in flight. Never blocks. It
// refuses a retired target: the runner stops an instance once its target has nothing
// in flight, so a request that looked the route up just before the swap must not slip
// in after that check. Both sides write their own flag before reading the other's, so
// either the request sees retired or the drainer sees it in flight.
func (t *target) acquire(limit int64) acquireResult {
	for {
		n := t.active.Load()
		if limit > 0 && n >= limit {
			return overCapacity
		}
		if t.active.CompareAndSwap(n, n+1) {
			break
		}
	}
	if t.retired.Load() {
		t.release()
		return retiredTarget
	}
	return acquired
}

// release counts a request out; the last one out of a retired target closes its idle
// connections and signals that it drained.
func (t *target) release() {
	if t.active.Add(-1) == 0 && t.retired.Load() {
		t.drained()
	}
}

// retire takes t out of service. Its idle connections are closed and Released fires now
// if nothing is in flight, else after the last release. Either order of a racing
// acquire/release and retire ends with exactly one drained() after the last use.
func (t *target) retire() {
	t.retired.Store(true)
	if t.active.Load() == 0 {
		t.drained()
	}
}

func (t *target) drained() {
	t.releaseOnce.Do(func() {
		t.transport.CloseIdleConnections()
		close(t.released)
	})
}

// isReleased reports whether t drained after its retirement.
func (t *target) isReleased() bool {
	select {
	case <-t.released:
		return true
	default:
		return false
	}
}

// connFailed counts a failure to connect; the ejectAfter-th in a row ejects t.
func (t *target) connFailed() {
	if t.failures.Add(1) >= ejectAfter {
		t.ejected.Store(true)
	}
}

// answered resets the failure count: t answered a request.
func (t *target) answered() {
	if t.failures.Load() != 0 {
		t.failures.Store(0)
	}
}

// pick chooses a target for a request: two random choices among the targets that are
// not ejected (all of them if every one is), the one with fewer requests in flight
// (the "power of two choices": nearly as good as the least loaded of all, without a
// scan or a lock). Full targets are skipped; when the pair is full, the rest are
// tried in order. except, if not nil, is left out (the target a retry moves away from).
func pick(ts []*target, limit int64, except *target) (*target, acquireResult) {
	if len(ts) == 1 && except == nil {
		return ts[0], ts[0].acquire(limit)
	}
	if n := len(ts); n >= 2 {
		i, j := rand.IntN(n), rand.IntN(n-1)
		if j >= i {
			j++ // two distinct indexes
		}
		a, b := ts[i], ts[j]
		if b.active.Load() < a.active.Load() {
			a, b = b, a
		}
		for _, c := range [2]*target{a, b} {
			if c != except && !c.ejected.Load() && c.acquire(limit) == acquired {
				return c, acquired
			}
		}
	}
	// The pair was full, ejected or retired: any usable one, then an ejected one (a
	// plugin whose every instance failed to connect still gets tried).
	sawRetired := false
	for _, ejectedToo := range [2]bool{false, true} {
		for _, c := range ts {
			if c == except || c.ejected.Load() != ejectedToo {
				continue
			}
			switch c.acquire(limit) {
			case acquired:
				return c, acquired
			case retiredTarget:
				sawRetired = true
			}
		}
	}
	if sawRetired {
		return nil, retiredTarget
	}
	return nil, overCapacity
}

// connectFailed reports whether err means nothing reached the plugin: the connection
// could not be made. Such a request can go to another instance, whatever its method.
func connectFailed(err error) bool {
	var op *net.OpError
	return errors.As(err, &op) && op.Op == "dial"
}

// connBroke reports whether err is the connection failing (refused, reset, closed)
// rather than the plugin answering something unreadable.
func connBroke(err error) bool {
	return connectFailed(err) || errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) ||
		errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.ECONNREFUSED) || errors.Is(err, syscall.EPIPE)
}

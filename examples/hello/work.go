package main

import (
	"fmt"
	"net/http"
	"runtime"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

// Bounds of /work: a request costs at most maxWorkMS of CPU, whatever the client asks.
const (
	defaultWorkMS = 2
	maxWorkMS     = 100
)

// work serves GET /work?ms=<n>: n milliseconds of CPU work (default 2, at most 100,
// fractions allowed), for benchmarks of a CPU-bound plugin. The work is a number of
// loop iterations (spinFor), not a spin until a wall clock says n ms passed: a request
// that waits for a core (other requests, the container's cpus limit) must not count the
// wait as work, or an instance limited to one core would answer as fast as one with two.
func work(greeting, name string) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			w.Header().Set("Allow", "GET, HEAD")
			http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
			return
		}
		ms := float64(defaultWorkMS)
		if v := r.URL.Query().Get("ms"); v != "" {
			f, err := strconv.ParseFloat(v, 64)
			if err != nil || !(f >= 0 && f <= maxWorkMS) {
				http.Error(w, fmt.Sprintf("ms: want a number of milliseconds, 0…%d", maxWorkMS), http.StatusBadRequest)
				return
			}
			ms = f
		}
		spinFor(time.Duration(ms * float64(time.Millisecond)))
		fmt.Fprintf(w, "%s from %s: %g ms of work\n", greeting, name, ms)
	}
}

// spinFor keeps the CPU busy for d of CPU time: a number of loop iterations measured
// once, so that a request costs the same work however many others run — and no clock
// is read per request.
func spinFor(d time.Duration) {
	spin(uint64(d.Seconds() * float64(itersPerSecond())))
}

// Calibration, on the first /work: the fastest of calibrateTrials runs of calibrateFor
// of CPU each. A run that a preempted or descheduled core (a shared VM's steal time
// shows up as CPU time of the thread) made slow would make every request do less.
const (
	calibrateFor    = 4 * time.Millisecond
	calibrateTrials = 5
)

var (
	calibrated sync.Once
	perSecond  uint64
)

// itersPerSecond is how many spin iterations take a second of CPU here, measured on the
// first call against the calling thread's own CPU clock (the goroutine locked to it):
// other requests running meanwhile count neither as its time nor as its work.
func itersPerSecond() uint64 {
	calibrated.Do(func() {
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
		const chunk = 1 << 12
		for range calibrateTrials {
			var n uint64
			begin := threadCPU()
			for {
				spin(chunk)
				n += chunk
				if used := threadCPU() - begin; used >= calibrateFor {
					perSecond = max(perSecond, uint64(float64(n)/used.Seconds()))
					break
				}
			}
		}
		perSecond = max(perSecond, 1)
	})
	return perSecond
}

var sink atomic.Uint64 // the loop's result, so that the compiler keeps the loop

// spin runs n iterations of a xorshift generator.
func spin(n uint64) {
	x := uint64(88172645463325252)
	for range n {
		x ^= x << 13
		x ^= x >> 7
		x ^= x << 17
	}
	sink.Add(x)
}

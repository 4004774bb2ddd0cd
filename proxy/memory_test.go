package proxy

import (
	"net/http"
	"os"
	"runtime"
	"runtime/metrics"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// TestOversizedHeadersBoundMemory: many plugin answers with endless headers at
// once, on each path, hold at most about max_response_header each: neither the heap
// nor (without -race, whose shadow memory counts) the RSS grows by more than
// concurrency × 2 × the limit. With a limit of 10 MiB the heap grew by 1.2–1.5 GiB.
// Not parallel: it measures the process.
func TestOversizedHeadersBoundMemory(t *testing.T) {
	if testing.Short() {
		t.Skip("moves 128 × 1 MiB of headers per path")
	}
	const concurrency = 128
	for _, path := range upstreamPaths {
		t.Run(path.name, func(t *testing.T) {
			plugin := newRawPlugin(t, endlessHeaders)
			h := rawHarness(t, path.noFast, plugin.addr)
			h.client.Transport.(*http.Transport).MaxIdleConnsPerHost = concurrency

			runtime.GC()
			base := heapObjects()
			resetPeakRSS()
			baseRSS := rss("VmHWM") // the RSS now, after the reset
			peak := sampleHeap(t)
			var wg sync.WaitGroup
			statuses := make(chan int, concurrency)
			for range concurrency {
				wg.Go(func() {
					res, err := h.client.Get(h.srv.URL + "/plugins/raw/")
					if err != nil {
						t.Error(err)
						return
					}
					res.Body.Close()
					statuses <- res.StatusCode
				})
			}
			wg.Wait()
			close(statuses)
			grew := peak() - base
			for s := range statuses {
				if s != http.StatusBadGateway {
					t.Fatalf("status %d, want 502", s)
				}
			}
			bound := uint64(concurrency * 2 << 20) // twice the default limit, 1 MiB, per answer
			rssGrew := rss("VmHWM") - baseRSS
			t.Logf("%d oversized answers at once: heap grew by at most %.1f MiB, RSS by %.1f MiB (race detector: %v); bound %.0f MiB",
				concurrency, mib(grew), mib(rssGrew), raceEnabled, mib(bound))
			if grew > bound {
				t.Errorf("heap grew by %.1f MiB, over %.0f MiB", mib(grew), mib(bound))
			}
			if !raceEnabled && rssGrew > bound {
				t.Errorf("RSS grew by %.1f MiB, over %.0f MiB", mib(rssGrew), mib(bound))
			}
			eventually(t, "every plugin connection closed", func() bool { return plugin.hungUp.Load() == concurrency })
		})
	}
}

// heapObjects is the bytes of heap objects, live or not yet swept.
func heapObjects() uint64 {
	s := []metrics.Sample{{Name: "/memory/classes/heap/objects:bytes"}}
	metrics.Read(s)
	return s[0].Value.Uint64()
}

// sampleHeap samples heapObjects every 200µs until the returned func is called,
// which returns the highest sample.
func sampleHeap(t *testing.T) func() uint64 {
	stop, done := make(chan struct{}), make(chan uint64)
	go func() {
		var peak uint64
		tick := time.NewTicker(200 * time.Microsecond)
		defer tick.Stop()
		for {
			peak = max(peak, heapObjects())
			select {
			case <-stop:
				done <- peak
				return
			case <-tick.C:
			}
		}
	}()
	var once sync.Once
	var peak uint64
	get := func() uint64 {
		once.Do(func() { close(stop); peak = <-done })
		return peak
	}
	t.Cleanup(func() { get() })
	return get
}

// resetPeakRSS resets the process's VmHWM (Linux: clear_refs 5), when it may.
func resetPeakRSS() { _ = os.WriteFile("/proc/self/clear_refs", []byte("5"), 0) }

// rss is a size from /proc/self/status in bytes, e.g. VmHWM (the peak RSS since
// resetPeakRSS); 0 when unknown.
func rss(field string) uint64 {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, field+":"); ok {
			if f := strings.Fields(v); len(f) == 2 && f[1] == "kB" {
				kb, _ := strconv.ParseUint(f[0], 10, 64)
				return kb << 10
			}
		}
	}
	return 0
}

func mib(b uint64) float64 { return float64(b) / (1 << 20) }

package admin

import (
	"encoding/json"
	"math"
	"net/http"
	"slices"
	"sync/atomic"
	"testing"
	"time"
)

func TestLatBins(t *testing.T) {
	t.Parallel()
	tests := []struct {
		us   uint64
		want int
	}{
		{0, 0}, {63, 0}, {64, 1}, {79, 1}, {80, 2}, {127, 4}, {128, 5}, {1000, 16},
		{1 << 25, latBins - 4}, {1<<26 - 1, latBins - 1}, {1 << 40, latBins - 1},
	}
	for _, tt := range tests {
		if got := latBin(tt.us); got != tt.want {
			t.Errorf("latBin(%d µs) = %d, want %d", tt.us, got, tt.want)
		}
	}
	// Every duration's bin middle is within 12.5 % of it (bins are ≤ 25 % wide), and
	// bins follow the durations' order.
	prev := 0
	for us := uint64(64); us < 1<<26; us = us*21/20 + 1 {
		b := latBin(us)
		if b < prev {
			t.Fatalf("latBin(%d) = %d after %d: out of order", us, b, prev)
		}
		prev = b
		if mid := float64(latBinMid(b)); math.Abs(mid-float64(us))/float64(us) > 0.125 {
			t.Errorf("%d µs: bin %d middle %v µs, more than 12.5 %% off", us, b, mid)
		}
	}
}

// fakeClock makes Metrics' rates read a clock the test moves.
func fakeClock(m *Metrics, start time.Time) *atomic.Int64 {
	var now atomic.Int64
	now.Store(start.UnixNano())
	m.now = func() time.Time { return time.Unix(0, now.Load()) }
	return &now
}

func TestRatesPerSecond(t *testing.T) {
	t.Parallel()
	m := newTestMetrics()
	t0 := time.Unix(1_750_000_000, 0)
	clock := fakeClock(m, t0)
	at := func(d time.Duration) { clock.Store(t0.Add(d).UnixNano()) }

	// Second 0: 200 requests of 1…200 ms, 4 of them 5xx. Second 1: none. Second 2: three.
	for i := 1; i <= 200; i++ {
		status := 200
		if i%50 == 0 {
			status = 503
		}
		m.RequestDone("hello", status, time.Duration(i)*time.Millisecond)
	}
	at(2*time.Second + 300*time.Millisecond)
	for range 3 {
		m.RequestDone("hello", 200, 3*time.Millisecond)
	}
	m.RequestDone("slow", 200, 2*time.Second)
	at(3*time.Second + 100*time.Millisecond)
	m.RequestDone("hello", 200, time.Millisecond) // in the second not finished yet: not reported

	r := m.Rates(m.now(), 0, "")
	if r.End != t0.Unix()+2 || len(r.Plugins) != 2 || r.Plugins[0].Plugin != "hello" || r.Plugins[1].Plugin != "slow" {
		t.Fatalf("Rates = end %d (want %d), plugins %+v", r.End, t0.Unix()+2, r.Plugins)
	}
	h := r.Plugins[0]
	if h.Start != t0.Unix() || !slices.Equal(h.Requests, []uint32{200, 0, 3}) || !slices.Equal(h.Errors, []uint32{4, 0, 0}) {
		t.Errorf("hello from %d: requests %v errors %v, want from %d [200 0 3] [4 0 0]", h.Start, h.Requests, h.Errors, t0.Unix())
	}
	near := func(what string, got, want float64) {
		if math.Abs(got-want)/want > 0.125 {
			t.Errorf("%s = %v ms, want %v ms ± 12.5 %%", what, got, want)
		}
	}
	near("p50 of 1…200 ms", h.P50MS[0], 100)
	near("p99 of 1…200 ms", h.P99MS[0], 198)
	near("p99 of three 3 ms requests", h.P99MS[2], 3)
	if h.P99MS[1] != 0 || h.P50MS[1] != 0 {
		t.Errorf("a second without requests has latencies %v, %v", h.P50MS[1], h.P99MS[1])
	}
	if s := r.Plugins[1]; s.Start != t0.Unix()+2 || !slices.Equal(s.Requests, []uint32{1}) || s.P99MS[0] != 2000 {
		t.Errorf("slow = %+v: want only its own second, p99 = its one request", s)
	}

	// since: only what came after; the request of second 3 shows once it is finished.
	at(5 * time.Second)
	r = m.Rates(m.now(), t0.Unix()+2, "hello")
	if len(r.Plugins) != 1 || r.Plugins[0].Start != t0.Unix()+3 || !slices.Equal(r.Plugins[0].Requests, []uint32{1, 0}) {
		t.Errorf("since the previous end, plugin hello: %+v, want seconds 3 and 4: [1 0]", r.Plugins)
	}
	if r := m.Rates(m.now(), t0.Unix()+4, ""); len(r.Plugins) != 2 || len(r.Plugins[0].Requests) != 0 {
		t.Errorf("nothing new since the end: %+v", r.Plugins)
	}
}

// Requests of more than rateWindow seconds: the answer spans the window, and a second
// that was not counted again shows nothing of the second rateWindow before it.
func TestRatesWindow(t *testing.T) {
	t.Parallel()
	m := newTestMetrics()
	t0 := time.Unix(1_750_000_000, 0)
	clock := fakeClock(m, t0)
	for s := range 400 {
		if s == 350 {
			continue // same slot as second 50
		}
		clock.Store(t0.Add(time.Duration(s) * time.Second).UnixNano())
		m.RequestDone("hello", 200, time.Millisecond)
	}
	clock.Store(t0.Add(400 * time.Second).UnixNano())
	h := m.Rates(m.now(), 0, "").Plugins[0]
	if len(h.Requests) != rateWindow-1 || h.Start != t0.Unix()+400-rateWindow+1 {
		t.Fatalf("%d seconds from %d, want %d from %d", len(h.Requests), h.Start-t0.Unix(), rateWindow-1, 400-rateWindow+1)
	}
	for i, n := range h.Requests {
		want := uint32(1)
		if h.Start+int64(i) == t0.Unix()+350 {
			want = 0
		}
		if n != want {
			t.Errorf("second %d: %d requests, want %d", h.Start+int64(i)-t0.Unix(), n, want)
		}
	}
}

func TestRatesRoute(t *testing.T) {
	t.Parallel()
	m := newTestMetrics()
	clock := fakeClock(m, time.Unix(1_750_000_009, 0))
	m.RequestDone("hello", 200, 2*time.Millisecond)
	clock.Store(time.Unix(1_750_000_010, 0).UnixNano())
	h := newHarness(t, Options{Metrics: m})

	resp := h.do("GET", "/v1/rates?since=0", nil)
	if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "application/json" {
		t.Fatalf("GET /v1/rates: %d %s", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	var r struct {
		End     int64 `json:"end"`
		Step    int   `json:"step_s"`
		Plugins []struct {
			Plugin   string    `json:"plugin"`
			Start    int64     `json:"start"`
			Requests []int     `json:"requests"`
			P99MS    []float64 `json:"p99_ms"`
		} `json:"plugins"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&r); err != nil {
		t.Fatal(err)
	}
	if r.End != 1_750_000_009 || r.Step != 1 || len(r.Plugins) != 1 || r.Plugins[0].Plugin != "hello" ||
		r.Plugins[0].Start != 1_750_000_009 || len(r.Plugins[0].Requests) != 1 || r.Plugins[0].Requests[0] != 1 {
		t.Errorf("GET /v1/rates = %+v", r)
	}
	if resp := h.do("GET", "/v1/rates?plugin=nope", nil); !json.Valid([]byte(readAll(t, resp))) || resp.StatusCode != 200 {
		t.Errorf("GET /v1/rates?plugin=nope: %d", resp.StatusCode)
	}
	wantProblem(t, h.do("GET", "/v1/rates?since=yesterday", nil), http.StatusBadRequest)
	wantProblem(t, newHarness(t, Options{}).do("GET", "/v1/rates", nil), http.StatusNotFound)
}

// The rates cost no allocation per request (RequestDone runs on every proxied request).
func TestRequestDoneDoesNotAllocate(t *testing.T) {
	m := newTestMetrics()
	m.RequestDone("hello", 200, time.Millisecond)
	m.RequestDone("hello", 503, time.Millisecond)
	if n := testing.AllocsPerRun(1000, func() { m.RequestDone("hello", 200, 3*time.Millisecond) }); n != 0 {
		t.Errorf("RequestDone allocates %v times per request", n)
	}
}

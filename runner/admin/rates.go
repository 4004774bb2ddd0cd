package admin

import (
	"encoding/json"
	"math/bits"
	"net/http"
	"slices"
	"strconv"
	"sync"
	"time"
)

// The status page's charts: requests/s and latency quantiles of each plugin, second by
// second over the last rateWindow seconds. Prometheus keeps the history for anyone who
// scrapes it; these numbers are for the person looking at the page, who should not need a
// Prometheus to see that a plugin is busy or slow. They come from the same calls as the
// request metrics (Metrics.RequestDone) and cost one uncontended lock and a few adds per
// request, no allocation.

// rateWindow is how many seconds the charts span at most.
const rateWindow = 300

// Latency bins: four per octave of microseconds (≤ 19 % wide), from 64 µs to 2^26 µs
// (67 s, beyond any request_timeout that makes sense); bin 0 holds everything faster.
const (
	latMinExp  = 6
	latMaxExp  = 25
	latPerOct  = 4
	latBins    = 1 + (latMaxExp-latMinExp+1)*latPerOct
	latSubBits = 2 // log2(latPerOct)
)

// latBin is the bin of a duration of us microseconds.
func latBin(us uint64) int {
	if us < 1<<latMinExp {
		return 0
	}
	e := bits.Len64(us) - 1
	if e > latMaxExp {
		return latBins - 1
	}
	sub := int(us>>(e-latSubBits)) & (latPerOct - 1)
	return 1 + (e-latMinExp)*latPerOct + sub
}

// latBinMid is the middle of bin i, in microseconds.
func latBinMid(i int) uint64 {
	if i == 0 {
		return 1 << (latMinExp - 1)
	}
	i--
	e, sub := uint(i/latPerOct+latMinExp), uint64(i%latPerOct)
	lo := (latPerOct + sub) << (e - latSubBits)
	return lo + (1<<(e-latSubBits))/2
}

// rateSample is one second of one plugin.
type rateSample struct {
	sec      int64 // the unix second it counts; another one means no request in that second
	requests uint32
	errors   uint32 // answered 5xx (including the proxy's own 502, 503, 504)
	p50, p99 uint32 // microseconds
}

// rateRing is one plugin's samples: the second being counted (hist) and the finished
// ones (ring, indexed by second modulo rateWindow).
type rateRing struct {
	mu    sync.Mutex
	first int64 // the first second with a request
	cur   int64 // the second hist counts
	n     uint32
	errs  uint32
	max   uint32 // µs, the slowest request of cur
	hist  [latBins]uint32
	ring  [rateWindow]rateSample
}

func (r *rateRing) record(sec int64, status int, d time.Duration) {
	us := uint64(max(d, 0) / time.Microsecond)
	r.mu.Lock()
	if sec > r.cur {
		r.closeLocked()
		r.cur = sec
	}
	if r.first == 0 {
		r.first = r.cur
	}
	// A request that read the clock just before another one closed its second counts in
	// the next: the charts do not need that precision, and it keeps the ring in order.
	r.n++
	if status >= 500 {
		r.errs++
	}
	r.max = max(r.max, uint32(min(us, 1<<32-1)))
	r.hist[latBin(us)]++
	r.mu.Unlock()
}

// closeLocked turns the second being counted into a sample.
func (r *rateRing) closeLocked() {
	if r.n == 0 {
		return
	}
	r.ring[r.cur%rateWindow] = rateSample{
		sec: r.cur, requests: r.n, errors: r.errs,
		p50: r.quantileLocked(0.50), p99: r.quantileLocked(0.99),
	}
	r.n, r.errs, r.max = 0, 0, 0
	clear(r.hist[:])
}

// quantileLocked is the q-quantile of the second being counted: the middle of the bin
// holding the ⌈q·n⌉-th fastest request, never above the slowest one — which it is
// exactly when that rank is the last (a p99 of fewer than 100 requests).
func (r *rateRing) quantileLocked(q float64) uint32 {
	rank := uint32(q*float64(r.n) + 0.999999)
	if rank >= r.n {
		return r.max
	}
	var seen uint32
	for i, c := range r.hist {
		seen += c
		if seen >= rank {
			return uint32(min(latBinMid(i), uint64(r.max)))
		}
	}
	return r.max
}

// PluginRates is one plugin's series in GET /v1/rates: one value per second from Start
// to the answer's End, both included.
type PluginRates struct {
	Plugin   string    `json:"plugin"`
	Start    int64     `json:"start"` // unix seconds
	Requests []uint32  `json:"requests"`
	Errors   []uint32  `json:"errors"` // 5xx answers
	P50MS    []float64 `json:"p50_ms"` // 0 in a second without requests
	P99MS    []float64 `json:"p99_ms"`
}

// Rates is the body of GET /v1/rates.
type Rates struct {
	// End is the last second reported (unix): the one before the answer's, the last
	// finished one. Ask again with since=End for what came after.
	End     int64         `json:"end"`
	Step    int           `json:"step_s"` // 1
	Window  int           `json:"window_s"`
	Plugins []PluginRates `json:"plugins"`
}

// series returns the seconds after since (and after the plugin's first request, at most
// rateWindow-1 of them) up to end, which the caller has closed.
func (r *rateRing) series(name string, since, end int64) (PluginRates, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if end >= r.cur {
		r.closeLocked()
		r.cur = end + 1 // requests still counting in end's second go to the next
	}
	if r.first == 0 {
		return PluginRates{}, false
	}
	start := max(since+1, r.first, end-rateWindow+2)
	if start > end {
		return PluginRates{Plugin: name, Start: end + 1, Requests: []uint32{}, Errors: []uint32{}, P50MS: []float64{}, P99MS: []float64{}}, true
	}
	n := int(end - start + 1)
	out := PluginRates{Plugin: name, Start: start,
		Requests: make([]uint32, n), Errors: make([]uint32, n), P50MS: make([]float64, n), P99MS: make([]float64, n)}
	for i := range n {
		s := r.ring[(start+int64(i))%rateWindow]
		if s.sec != start+int64(i) {
			continue
		}
		out.Requests[i], out.Errors[i] = s.requests, s.errors
		out.P50MS[i], out.P99MS[i] = float64(s.p50)/1000, float64(s.p99)/1000
	}
	return out, true
}

// Rates returns the plugins' seconds after since (unix; 0: all that are kept) up to the
// last finished second before now. plugin, if not "", picks one plugin. Plugins that
// never had a request are left out.
func (m *Metrics) Rates(now time.Time, since int64, plugin string) Rates {
	end := now.Unix() - 1
	out := Rates{End: end, Step: 1, Window: rateWindow, Plugins: []PluginRates{}}
	m.perPlugin.Range(func(k, v any) bool {
		name := k.(string)
		if plugin != "" && name != plugin {
			return true
		}
		if pr, ok := v.(*requestSeries).rates.series(name, since, end); ok {
			out.Plugins = append(out.Plugins, pr)
		}
		return true
	})
	slices.SortFunc(out.Plugins, func(a, b PluginRates) int {
		switch {
		case a.Plugin < b.Plugin:
			return -1
		case a.Plugin > b.Plugin:
			return 1
		}
		return 0
	})
	return out
}

// rates serves GET /v1/rates?since=<unix seconds>&plugin=<name>.
func (s *server) rates(w http.ResponseWriter, r *http.Request) {
	if s.metrics == nil {
		writeProblem(w, http.StatusNotFound, "metrics are not enabled")
		return
	}
	var since int64
	if v := r.URL.Query().Get("since"); v != "" {
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil || n < 0 {
			writeProblem(w, http.StatusBadRequest, "since: want unix seconds, e.g. the end of the previous answer")
			return
		}
		since = n
	}
	// Compact: the page polls this every few seconds, and indented arrays of 300 numbers
	// are one line per number.
	body, err := json.Marshal(s.metrics.Rates(s.metrics.now(), since, r.URL.Query().Get("plugin")))
	if err != nil {
		writeProblem(w, http.StatusInternalServerError, "encode response: "+err.Error())
		return
	}
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("Cache-Control", "no-store")
	_, _ = w.Write(append(body, '\n'))
}

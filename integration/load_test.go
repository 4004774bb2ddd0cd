package integration

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"slices"
	"sync"
	"testing"
	"time"
)

// loadResult is what clients saw during a load run.
type loadResult struct {
	requests, failed int
	bodies           map[string]int // body → count (to see which generations answered)
	errs             []string       // first few failures
	latencies        []time.Duration
}

func (l *loadResult) max() time.Duration { return slices.Max(l.latencies) }

func (l *loadResult) p(q float64) time.Duration {
	s := slices.Clone(l.latencies)
	slices.Sort(s)
	return s[int(float64(len(s)-1)*q)]
}

func (l *loadResult) String() string {
	if l.requests == 0 {
		return "no requests"
	}
	return fmt.Sprintf("%d requests, %d failed, p50 %s, p99 %s, max %s", l.requests, l.failed,
		l.p(0.5).Round(time.Microsecond), l.p(0.99).Round(time.Microsecond), l.max().Round(time.Microsecond))
}

// loader runs clients concurrent keep-alive GET loops on url until stop is called, at
// most maxDuration and maxRequests in all (the traffic rule: bounded in count and time).
// Any transport error or non-200 is a failure.
type loader struct {
	stop  func() *loadResult
	count func() int // requests answered so far (failed ones included)
}

// waitRequests waits until n more requests than now have been answered: traffic on
// what serves at this point, counted rather than timed.
func (l *loader) waitRequests(t *testing.T, n int) {
	t.Helper()
	target := l.count() + n
	eventually(t, 30*time.Second, fmt.Sprintf("%d more requests", n), func() bool { return l.count() >= target })
}

func startLoad(t *testing.T, url string, clients int, maxDuration time.Duration) *loader {
	t.Helper()
	const maxRequests = 200_000
	ctx, cancel := context.WithTimeout(context.Background(), maxDuration)
	tr := &http.Transport{MaxIdleConnsPerHost: clients, Proxy: nil}
	client := &http.Client{Transport: tr, Timeout: 10 * time.Second}
	var mu sync.Mutex
	res := &loadResult{bodies: map[string]int{}}
	var wg sync.WaitGroup
	for range clients {
		wg.Go(func() {
			for ctx.Err() == nil {
				begin := time.Now()
				resp, err := client.Get(url)
				var body []byte
				status := 0
				if err == nil {
					body, err = io.ReadAll(resp.Body)
					resp.Body.Close()
					status = resp.StatusCode
				}
				took := time.Since(begin)
				mu.Lock()
				if ctx.Err() != nil && err != nil {
					mu.Unlock()
					return // our own deadline cut it: not the runner's failure
				}
				res.requests++
				res.latencies = append(res.latencies, took)
				if err != nil || status != 200 {
					res.failed++
					if len(res.errs) < 5 {
						res.errs = append(res.errs, fmt.Sprintf("status %d err %v body %.200s", status, err, body))
					}
				} else {
					res.bodies[string(body)]++
				}
				done := res.requests >= maxRequests
				mu.Unlock()
				if done {
					return
				}
			}
		})
	}
	return &loader{stop: func() *loadResult {
		cancel()
		wg.Wait()
		tr.CloseIdleConnections()
		return res
	}, count: func() int {
		mu.Lock()
		defer mu.Unlock()
		return res.requests
	}}
}

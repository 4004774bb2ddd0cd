package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"regexp"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Load shape: keep-alive clients, each a loop of GET; bounded in count and time.
const (
	clients          = 8
	clientTimeout    = 10 * time.Second
	maxPerClient     = 100_000          // requests per client, the count bound
	maxLoad          = 40 * time.Second // the time bound: no new version by then is an error
	pollNewVersion   = 20 * time.Millisecond
	firstErrsToKeep  = 3
	latencyPrealloc  = 16 << 10
	bodyLimit        = 1 << 16
	idleConnsPerHost = clients
)

// Timing of a replacement run (-smoke: shorter).
var (
	minLoad       = 6 * time.Second
	triggerAfter  = 1500 * time.Millisecond
	newServingFor = time.Second // keep loading this long after the first new answer
)

// clientStats is what one client saw; merged after the run.
type clientStats struct {
	requests, failed    int
	latencies           []time.Duration
	bodies              map[string]int
	errs                []string
	firstFail, lastFail time.Time
	capped              bool
}

// load is a running load generator.
type load struct {
	start   time.Time
	stopped chan struct{}
	wg      sync.WaitGroup
	tr      *http.Transport
	stats   []*clientStats
	want    string       // the new version's body
	firstNw atomic.Int64 // unix ns of the first completed answer with want; 0: none yet
}

// startLoad starts the clients on url. They stop issuing requests on stop() (in-flight
// ones finish, bounded by the client timeout), when ctx ends (aborting: in-flight ones are
// cancelled and not counted), or after maxPerClient requests each.
func startLoad(ctx context.Context, url, want string) *load {
	l := &load{start: time.Now(), stopped: make(chan struct{}), want: want,
		tr: &http.Transport{Proxy: nil, MaxIdleConnsPerHost: idleConnsPerHost, DisableCompression: true}}
	client := &http.Client{Transport: l.tr, Timeout: clientTimeout}
	for range clients {
		s := &clientStats{bodies: map[string]int{}, latencies: make([]time.Duration, 0, latencyPrealloc)}
		l.stats = append(l.stats, s)
		l.wg.Go(func() { l.client(ctx, client, url, s) })
	}
	return l
}

func (l *load) client(ctx context.Context, client *http.Client, url string, s *clientStats) {
	for {
		select {
		case <-l.stopped:
			return
		case <-ctx.Done():
			return
		default:
		}
		if s.requests >= maxPerClient {
			s.capped = true
			return
		}
		begin := time.Now()
		status, body, err := get(ctx, client, url)
		end := time.Now()
		if ctx.Err() != nil {
			return // the bench is aborting: not the contender's failure
		}
		s.requests++
		s.latencies = append(s.latencies, end.Sub(begin))
		if err != nil || status != http.StatusOK {
			s.failed++
			if s.firstFail.IsZero() {
				s.firstFail = end
			}
			s.lastFail = end
			if len(s.errs) < firstErrsToKeep {
				if err != nil {
					s.errs = append(s.errs, err.Error())
				} else {
					s.errs = append(s.errs, fmt.Sprintf("status %d: %.120q", status, body))
				}
			}
			continue
		}
		s.bodies[body]++
		if body == l.want {
			l.firstNw.CompareAndSwap(0, end.UnixNano())
		}
	}
}

func get(ctx context.Context, client *http.Client, url string) (int, string, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return 0, "", err
	}
	resp, err := client.Do(req)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, bodyLimit))
	return resp.StatusCode, string(b), err
}

// firstNew is when the first answer of the new version completed (zero if none yet).
func (l *load) firstNew() time.Time {
	if ns := l.firstNw.Load(); ns != 0 {
		return time.Unix(0, ns)
	}
	return time.Time{}
}

// stop ends the load and merges what the clients saw.
func (l *load) stop() *result {
	close(l.stopped)
	l.wg.Wait()
	l.tr.CloseIdleConnections()
	r := &result{bodies: map[string]int{}, duration: time.Since(l.start)}
	for _, s := range l.stats {
		r.requests += s.requests
		r.failed += s.failed
		r.latencies = append(r.latencies, s.latencies...)
		for b, n := range s.bodies {
			r.bodies[b] += n
		}
		for _, e := range s.errs {
			e = localAddrRE.ReplaceAllString(e, "")
			if !slices.Contains(r.errs, e) && len(r.errs) < firstErrsToKeep {
				r.errs = append(r.errs, e)
			}
		}
		if !s.firstFail.IsZero() && (r.firstFail.IsZero() || s.firstFail.Before(r.firstFail)) {
			r.firstFail = s.firstFail
		}
		if s.lastFail.After(r.lastFail) {
			r.lastFail = s.lastFail
		}
		r.capped = r.capped || s.capped
	}
	slices.Sort(r.latencies)
	return r
}

// localAddrRE matches the client side of "read tcp 127.0.0.1:41812->127.0.0.1:39119", which
// would make every error message distinct.
var localAddrRE = regexp.MustCompile(`[0-9.]+:[0-9]+->`)

// result is one contender's row.
type result struct {
	name, label         string // label: short, for the lines under the table
	requests, failed    int
	latencies           []time.Duration // sorted; every request, failed or not
	bodies              map[string]int
	errs                []string
	firstFail, lastFail time.Time
	capped              bool
	duration            time.Duration // of the load
	editToNew           time.Duration // edit → first answer of the new version
}

func (r *result) quantile(q float64) time.Duration {
	if len(r.latencies) == 0 {
		return 0
	}
	return r.latencies[int(float64(len(r.latencies)-1)*q)]
}

func (r *result) max() time.Duration {
	if len(r.latencies) == 0 {
		return 0
	}
	return r.latencies[len(r.latencies)-1]
}

// failWindow is the time from the first to the last failed request (0 if none failed).
func (r *result) failWindow() time.Duration {
	if r.failed == 0 {
		return 0
	}
	return r.lastFail.Sub(r.firstFail)
}

// measure runs the scenario against url: load, trigger the change after triggerAfter,
// keep loading until the new version (body want) has answered for newServingFor and the
// load has lasted minLoad, then stop. trigger returns the moment the change was made.
func measure(ctx context.Context, name, label, url, want string, trigger func(context.Context) (time.Time, error)) (*result, error) {
	l := startLoad(ctx, url, want)
	stopped := false
	defer func() {
		if !stopped {
			l.stop()
		}
	}()
	if err := sleep(ctx, triggerAfter); err != nil {
		return nil, err
	}
	edit, err := trigger(ctx)
	if err != nil {
		return nil, err
	}
	progress("  change made %s into the load", edit.Sub(l.start).Round(time.Millisecond))
	tick := time.NewTicker(pollNewVersion)
	defer tick.Stop()
	for {
		first, now := l.firstNew(), time.Now()
		if !first.IsZero() && now.Sub(first) >= newServingFor && now.Sub(l.start) >= minLoad {
			break
		}
		if now.Sub(l.start) > maxLoad {
			return nil, fmt.Errorf("%s: the new version (%q) did not answer within %s of load", name, want, maxLoad)
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-tick.C:
		}
	}
	stopped = true
	r := l.stop()
	r.name, r.label = name, label
	r.editToNew = l.firstNew().Sub(edit)
	if r.capped {
		progress("  WARNING: a client reached the bound of %d requests; its load stopped early", maxPerClient)
	}
	var answers []string
	for b, n := range r.bodies {
		answers = append(answers, fmt.Sprintf("%q×%d", b, n))
	}
	slices.Sort(answers)
	progress("  %d requests in %s, %d failed %q; answers %s; new version %s after the change",
		r.requests, r.duration.Round(time.Millisecond), r.failed, r.errs, strings.Join(answers, " "), r.editToNew.Round(time.Millisecond))
	return r, nil
}

func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

package main

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"time"
)

const (
	coldStartIn   = 3 * time.Minute // runner up → `serving` with 50 plugins
	coldAllWithin = 3 * time.Minute // runner up → every plugin answers
	rawParallel   = 8
	pollParallel  = 8
)

var coldSizes = []int{10, 50}

type coldRow struct {
	n              int
	raw, rawRemove time.Duration
	allOK          time.Duration // runner: exec → every plugin answered 200 (or the time waited)
	answered       int           // plugins that answered 200 by then
	serving        time.Duration // exec → `serving` line; 0: not seen
	readyAtServing string
	runnerStop     time.Duration
}

func (r coldRow) complete() bool { return r.answered == r.n }

// coldSection: cold start of N plugins, rawParallel-way raw runs first, then the runner.
// If the budget ends while the runner is starting, its row says how many plugins answered
// by then: a lower bound.
func coldSection(ctx context.Context, e *env) (string, error) {
	var rows []coldRow
	var err error
	for _, n := range coldSizes {
		row := coldRow{n: n}
		progress("%d plugins: raw, %d-way parallel", n, rawParallel)
		if row.raw, row.rawRemove, err = rawCold(ctx, e, n); err != nil {
			err = fmt.Errorf("raw, %d plugins: %w", n, err)
			break
		}
		progress("  all 200 %s, removed in %s", ms(row.raw), ms(row.rawRemove))
		progress("%d plugins: runner", n)
		err = runnerCold(ctx, e, &row)
		progress("  %d/%d answered 200 after %s; serving line %s (%s ready); SIGTERM → exit %s",
			row.answered, n, ms(row.allOK), ms(row.serving), row.readyAtServing, ms(row.runnerStop))
		if row.answered > 0 || err == nil {
			rows = append(rows, row)
		}
		if err != nil {
			err = fmt.Errorf("runner, %d plugins: %w", n, err)
			break
		}
	}
	if len(rows) == 0 {
		return "", err
	}
	return renderCold(rows), err
}

func renderCold(rows []coldRow) string {
	var b strings.Builder
	fmt.Fprintf(&b, "| plugins | raw %d-way parallel → all answer 200 | **runner: up → all answer 200** | runner/raw | runner: up → `serving` line (ready) | runner: SIGTERM → exited | raw: remove all (%d-way) |\n", rawParallel, rawParallel)
	b.WriteString("|---:|---:|---:|---:|---:|---:|---:|\n")
	for _, r := range rows {
		all, rat := ms(r.allOK), ratio(float64(r.allOK), float64(r.raw))+"×"
		if !r.complete() {
			all = fmt.Sprintf("> %s (%d/%d answered)", ms(r.allOK), r.answered, r.n)
			rat = "> " + rat
		}
		serving := "not printed"
		if r.serving > 0 {
			serving = fmt.Sprintf("%s (%s)", ms(r.serving), r.readyAtServing)
		}
		fmt.Fprintf(&b, "| %d | %s | %s | %s | %s | %s | %s |\n", r.n, ms(r.raw), all, rat, serving, ms(r.runnerStop), ms(r.rawRemove))
	}
	for _, r := range rows {
		if r.n != 50 {
			continue
		}
		rat := float64(r.allOK) / float64(r.raw)
		verdict := metOrMissed(rat <= 1.2)
		if !r.complete() {
			verdict = "not determined (out of time; at least " + ratio(float64(r.allOK), float64(r.raw)) + "×)"
			if rat > 1.2 {
				verdict = metOrMissed(false) + " (at least " + ratio(float64(r.allOK), float64(r.raw)) + "×)"
			}
		} else {
			verdict += " (" + ratio(float64(r.allOK), float64(r.raw)) + "×)"
		}
		fmt.Fprintf(&b, "\nGoal (issue 9): 50 plugins ≤ 1.2× the parallel raw floor: %s.\n", verdict)
	}
	fmt.Fprintf(&b, `
Raw first: N hello containers (same image, limits and hardening as the runner's,
`+"`-p 127.0.0.1::8080`"+`, Docker's default bridge), %d at a time, each created, started and
inspected over the Engine API (what `+"`docker run -d`"+` does, without a CLI process), then
polled until it answers 200; timed from the first create to the last 200. Then the runner:
`+"`runner up`"+` (reach = "published") on a config of the same N plugins (hello-01…, health {
path = "/healthz" }), timed from the exec until every /plugins/<name>/ has answered 200 (%d
workers polling them round-robin from the exec on, a GET and a 5 ms pause per turn); this includes the runner's own start
(network, image resolve). Its `+"`serving … k/N plugins ready`"+` line comes when each plugin is
ready or has failed its start (it restarts those). A row with "> t (k/N answered)" ran out
of the section's time budget: t is a lower bound. Both are stopped and removed after each
row: the last two columns.
`, rawParallel, pollParallel)
	return b.String()
}

func runnerCold(ctx context.Context, e *env, row *coldRow) (err error) {
	n := row.n
	plugins := make([]pluginConf, n)
	for i := range plugins {
		plugins[i] = pluginConf{name: fmt.Sprintf("hello-%02d", i+1), greeting: "c"}
	}
	// A fixed port, so that the plugins can be polled from the exec on, before the
	// `serving` line tells the address (the proxy listens before it starts plugins).
	port, err := freePort()
	if err != nil {
		return err
	}
	listen := fmt.Sprintf("127.0.0.1:%d", port)
	p, err := spawnRunner(e.bin, runnerConfig(e.image, "", listen, plugins...))
	if err != nil {
		return err
	}
	defer func() {
		err = p.finish(err)
		row.runnerStop = p.stopTook
	}()
	serving := make(chan error, 1)
	go func() { serving <- p.waitServing(ctx, coldStartIn) }()

	urls := make([]string, n)
	for i, pc := range plugins {
		urls[i] = "http://" + listen + "/plugins/" + pc.name + "/"
	}
	answered, last, err := pollAll(ctx, urls, func(i int) string { return "c from " + plugins[i].name + "\n" }, coldAllWithin)
	row.answered = answered
	row.allOK = time.Since(p.began)
	if err == nil {
		row.allOK = last.Sub(p.began)
	}
	serr := <-serving // bounded by ctx and coldStartIn
	if serr == nil {
		row.serving = p.servingAt.Sub(p.began)
		row.readyAtServing = fmt.Sprintf("%d/%d", p.ready, p.total)
	}
	if err != nil {
		return fmt.Errorf("%d/%d plugins answered 200 within %s: %w", row.answered, n, ms(row.allOK), err)
	}
	if serr != nil {
		return serr
	}
	// Not cut by the section's budget: the reading is what the wait was for.
	if err := sleep(context.WithoutCancel(ctx), idleSettle); err != nil {
		return err
	}
	rss, err := p.rss()
	if err != nil {
		return err
	}
	e.rss.add(fmt.Sprintf("idle, %d plugins, reach = \"published\"", n), n, rss, "")
	return nil
}

func rawCold(ctx context.Context, e *env, n int) (all, removed time.Duration, err error) {
	api, err := newEngineAPI()
	if err != nil {
		return 0, 0, err
	}
	defer removeByLabel()
	names := make([]string, n)
	for i := range names {
		names[i] = fmt.Sprintf("hello-%02d", i+1)
	}
	var mu sync.Mutex
	var ids []string
	begin := time.Now()
	last, err := parallel(ctx, rawParallel, names, func(ctx context.Context, name string) (time.Time, error) {
		id, addr, err := api.rawRun(ctx, e.image, name, "c")
		if id != "" {
			mu.Lock()
			ids = append(ids, id)
			mu.Unlock()
		}
		if err != nil {
			return time.Time{}, err
		}
		return waitStatus200(ctx, pollClient(), "http://"+addr+"/", "c from "+name+"\n", answerWithin)
	})
	if err != nil {
		return 0, 0, err
	}
	all = last.Sub(begin)
	t0 := time.Now()
	if _, err := parallel(ctx, rawParallel, ids, func(ctx context.Context, id string) (time.Time, error) {
		return time.Now(), api.remove(ctx, id)
	}); err != nil {
		return 0, 0, err
	}
	return all, time.Since(t0), nil
}

// pollAll polls every url round-robin with pollParallel workers (one GET each turn, a
// url that did not answer 200 with want(i) goes back to the end of the queue) until all
// have answered, bounded by within. It returns how many answered and when the last did.
func pollAll(ctx context.Context, urls []string, want func(int) string, within time.Duration) (int, time.Time, error) {
	ctx, cancel := context.WithTimeout(ctx, within)
	defer cancel()
	queue := make(chan int, len(urls))
	for i := range urls {
		queue <- i
	}
	var (
		mu       sync.Mutex
		answered int
		last     time.Time
		wg       sync.WaitGroup
		done     = make(chan struct{})
	)
	client := pollClient()
	for range pollParallel {
		wg.Go(func() {
			for {
				var i int
				select {
				case i = <-queue:
				case <-done:
					return
				case <-ctx.Done():
					return
				}
				status, body, err := get(ctx, client, urls[i])
				if err == nil && status == http.StatusOK && body == want(i) {
					mu.Lock()
					answered++
					last = time.Now()
					if answered == len(urls) {
						close(done)
					}
					mu.Unlock()
					continue
				}
				queue <- i
				if sleep(ctx, 5*time.Millisecond) != nil {
					return
				}
			}
		})
	}
	wg.Wait()
	if answered < len(urls) {
		return answered, last, fmt.Errorf("%d of %d did not answer 200: %w", len(urls)-answered, len(urls), context.Cause(ctx))
	}
	return answered, last, nil
}

// parallel runs f over items with k workers and returns the latest time f returned; the
// first error cancels the rest.
func parallel[T any](ctx context.Context, k int, items []T, f func(context.Context, T) (time.Time, error)) (time.Time, error) {
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	work := make(chan T)
	var mu sync.Mutex
	var last time.Time
	var wg sync.WaitGroup
	for range k {
		wg.Go(func() {
			for it := range work {
				at, err := f(ctx, it)
				if err != nil {
					cancel(err)
					continue
				}
				mu.Lock()
				if at.After(last) {
					last = at
				}
				mu.Unlock()
			}
		})
	}
feed:
	for _, it := range items {
		select {
		case work <- it:
		case <-ctx.Done():
			break feed
		}
	}
	close(work)
	wg.Wait()
	if err := context.Cause(ctx); err != nil {
		return time.Time{}, err
	}
	return last, nil
}

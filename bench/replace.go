package main

import (
	"context"
	"fmt"
	"strings"
)

// replaceSection is "replacement under load": what clients see while a plugin's
// configuration changes, for the runner and for the usual alternative.
//
// Load: 8 keep-alive clients, each a loop of GET with a 10s timeout; a transport error or
// a non-200 is a failed request. Each contender gets about 6s of load; ~1.5s in, the
// greeting of the hello example plugin changes from "v1" to "v2", and the load goes on
// until "v2 from hello" has answered for at least 1s. Contenders:
//
//   - xcore runner, start-first: `bin/runner up` on a temp plugins.hcl with watch = true;
//     the change is an atomic rewrite of that file (the runner starts the new generation,
//     waits until it is healthy, swaps the proxy backend, then drains and removes the old
//     one). Twice: reach = "published" and reach = "address".
//   - stop-first recreate on a fixed port, what `docker compose up -d` does: docker stop
//     -t 2, docker rm, docker run of the new container on the same 127.0.0.1 port.
//
// Reported per contender: requests, failed requests, latency p50/p99/max over all
// requests, and the time from the change to the first answer of the new version. Failed
// counts depend on how fast clients retry (a refused connection fails in microseconds), so
// the failure window (first to last failed request) is printed too.
func replaceSection(ctx context.Context, e *env) (string, error) {
	contenders := []struct {
		title string
		run   func(context.Context) (*result, error)
	}{
		{"runner start-first (published)", func(ctx context.Context) (*result, error) {
			return runnerStartFirst(ctx, e.bin, e.image, "")
		}},
		{"runner start-first (address)", func(ctx context.Context) (*result, error) {
			return runnerStartFirst(ctx, e.bin, e.image, "address")
		}},
		{"stop-first recreate (docker stop + rm + run)", func(ctx context.Context) (*result, error) {
			return stopFirst(ctx, e.image)
		}},
	}
	var results []*result
	for _, c := range contenders {
		progress("%s…", c.title)
		r, err := c.run(ctx)
		if err != nil {
			return "", fmt.Errorf("%s: %w", c.title, err)
		}
		results = append(results, r)
	}
	var broken []string
	for _, r := range results[:len(results)-1] { // the runner's contenders
		if r.failed > 0 {
			broken = append(broken, fmt.Sprintf("%s: %d failed request(s), e.g. %q", r.name, r.failed, r.errs))
		}
	}
	var err error
	if len(broken) > 0 {
		err = brokenf("requests failed during a start-first replacement: %s", strings.Join(broken, "; "))
	}
	return renderReplace(results) + fmt.Sprintf(`
%d keep-alive clients, each a loop of GET with a %s timeout (a transport error or a non-200
is a failure), ~%s of load per contender; the plugin's GREETING changes v1 → v2 %s in; the
load goes on until v2 has answered for %s. Latencies are over all requests, failed ones
included. "edit→new version serving" runs from the config rewrite (runner) or from the
start of `+"`docker stop`"+` (stop-first) to the first completed v2 answer. Goal (issue 9): 0
failed requests during a replacement.
`, clients, clientTimeout, minLoad, triggerAfter, newServingFor), err
}

func renderReplace(rs []*result) string {
	var b strings.Builder
	b.WriteString("| contender | requests | failed | failed % | p50 | p99 | max latency | edit→new version serving |\n")
	b.WriteString("|---|---:|---:|---:|---:|---:|---:|---:|\n")
	for _, r := range rs {
		fmt.Fprintf(&b, "| %s | %d | %d | %.2f %% | %s | %s | %s | %s |\n", r.name, r.requests, r.failed,
			pct(r.failed, r.requests), ms(r.quantile(0.5)), ms(r.quantile(0.99)), ms(r.max()), ms(r.editToNew))
	}
	base := rs[len(rs)-1] // stop-first
	var failed, maxLat, window []string
	zero := true
	for _, r := range rs[:len(rs)-1] {
		zero = zero && r.failed == 0
		failed = append(failed, fmt.Sprintf("%s %d/%d = %s", r.label, r.failed, base.failed, ratio(float64(r.failed), float64(base.failed))))
		maxLat = append(maxLat, fmt.Sprintf("%s %s×", r.label, ratio(float64(r.max()), float64(base.max()))))
	}
	for _, r := range rs {
		w := "none"
		if r.failed > 0 {
			w = ms(r.failWindow())
		}
		window = append(window, fmt.Sprintf("%s %s", r.label, w))
	}
	fmt.Fprintf(&b, "\nRatio of failed requests runner/stop-first: %s (goal 0 failed: %s). Max latency runner/stop-first: %s.\n",
		strings.Join(failed, ", "), metOrMissed(zero), strings.Join(maxLat, ", "))
	fmt.Fprintf(&b, "Failure window (first → last failed request): %s.\n", strings.Join(window, "; "))
	return b.String()
}

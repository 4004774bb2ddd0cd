package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"slices"
	"strings"
	"sync"
	"time"
)

// throughput requests: a tiny answer, ~1 KiB and ~1 MiB. hello has no endpoint that
// returns a large body by itself; /echo/ reflects the request (query and up to 1 MiB of
// body) as JSON, so the 1 KiB case is a GET with a 1000-byte query and the 1 MiB case a
// POST of 1 MiB, echoed back (~1 MiB each way).
var throughputRequests = []struct {
	label string
	req   request
}{
	{"GET / (14 B answer)", request{method: http.MethodGet}},
	{"GET /echo/?q=<1000 B> (~1 KiB answer)", request{method: http.MethodGet, path: "echo/?q=" + strings.Repeat("a", 1000)}},
	{"POST /echo/ 1 MiB (~1 MiB answer)", request{method: http.MethodPost, path: "echo/", body: bytes.Repeat([]byte("x"), 1<<20)}},
}

type proxyRow struct {
	mode, request, target string
	answer                int // bytes of the check request's answer
	res                   *loadResult
	cpu                   time.Duration // the proxy's CPU time per request; 0: not measured (direct)
}

// proxyBudget is section 1's time budget: each reach mode has 3 requests × 4 targets
// (5 with -baseline) of 5 s load, their warm-ups and SSE runs.
func proxyBudget(baseline bool) time.Duration {
	if baseline {
		return 300 * time.Second
	}
	return 240 * time.Second
}

// target is one way to the plugin: a base URL, and the processes whose CPU time a
// request through it costs (nil: none measured, direct).
type target struct {
	name, base string
	procs      func() ([]int, error)
}

// cpu returns t's processes and the CPU time they have used so far; no processes for a
// target without any (direct).
func (t target) cpu() ([]int, time.Duration, error) {
	if t.procs == nil {
		return nil, 0, nil
	}
	pids, err := t.procs()
	if err != nil {
		return nil, 0, fmt.Errorf("%s: CPU time: %w", t.name, err)
	}
	used, err := cpuOf(pids)
	if err != nil {
		return nil, 0, fmt.Errorf("%s: CPU time: %w", t.name, err)
	}
	return pids, used, nil
}

// proxySection measures the proxy in both reach modes.
func proxySection(ctx context.Context, e *env) (string, error) {
	tmp, err := mkTemp("load-")
	if err != nil {
		return "", err
	}
	defer os.RemoveAll(tmp)
	var rows []proxyRow
	var sse []sseRow
	for _, mode := range []string{"published", "address"} {
		progress("reach = %q", mode)
		r, s, err := proxyMode(ctx, e, tmp, mode)
		if err != nil {
			err = fmt.Errorf("reach = %q: %w", mode, err)
			if len(rows) == 0 {
				return "", err
			}
			return renderProxy(rows, e) + renderSSE(sse, e.tools), err
		}
		rows, sse = append(rows, r...), append(sse, s...)
	}
	return renderProxy(rows, e) + renderSSE(sse, e.tools), nil
}

func proxyMode(ctx context.Context, e *env, tmp, mode string) (rows []proxyRow, sse []sseRow, err error) {
	p, err := startRunner(ctx, e.bin, runnerConfig(e.image, mode, "", pluginConf{name: "hello", greeting: "v1"}), runnerStartIn)
	if err != nil {
		return nil, nil, err
	}
	defer func() {
		if err = p.finish(err); err != nil {
			rows, sse = nil, nil
		}
	}()
	if err := waitAnswer(ctx, p.url("hello"), oldBody); err != nil {
		return nil, nil, err
	}
	if err := sleep(ctx, idleSettle); err != nil {
		return nil, nil, err
	}
	if rss, err := p.rss(); err == nil {
		e.rss.add(fmt.Sprintf("idle, 1 plugin, reach = %q", mode), 1, rss, "")
	} else {
		return nil, nil, err
	}

	ids, err := p.containers(ctx, "hello")
	if err != nil || len(ids) != 1 {
		return nil, nil, fmt.Errorf("the runner's hello container: %v %v", ids, err)
	}
	direct, err := directAddr(ctx, ids[0], mode)
	if err != nil {
		return nil, nil, err
	}
	runnerPids := func(p *runnerProc) func() ([]int, error) {
		return func() ([]int, error) {
			pid, err := p.pid()
			return []int{pid}, err
		}
	}
	targets := []target{{"direct", "http://" + direct + "/", nil}, {"runner", p.url("hello"), runnerPids(p)}}
	if e.baseline != "" {
		// The runner at -baseline's revision, with a hello container of its own (the same
		// image and config).
		bp, err := startRunner(ctx, e.baseline, runnerConfig(e.image, mode, "", pluginConf{name: "hello", greeting: "v1"}), runnerStartIn)
		if err != nil {
			return nil, nil, fmt.Errorf("the runner at %s: %w", e.baselineName, err)
		}
		defer func() { err = errors.Join(err, bp.finish(nil)) }()
		if err := waitAnswer(ctx, bp.url("hello"), oldBody); err != nil {
			return nil, nil, err
		}
		targets = append(targets, target{baselineTarget(e), bp.url("hello"), runnerPids(bp)})
	}
	if e.tools.nginx != "" {
		ng, err := startNginx(ctx, e.tools.nginx, direct)
		if err != nil {
			return nil, nil, err
		}
		defer ng.stop()
		targets = append(targets, target{"nginx", "http://" + ng.addr() + "/plugins/hello/",
			func() ([]int, error) { return procTree(ng.cmd.Process.Pid), nil }})
	}
	rp, err := startReverseProxy(ctx, direct)
	if err != nil {
		return nil, nil, err
	}
	defer rp.stop()
	targets = append(targets, target{"httputil", "http://" + rp.addr() + "/plugins/hello/",
		func() ([]int, error) { return []int{rp.cmd.Process.Pid}, nil }})
	progress("  direct %s, runner %s", direct, p.addr)

	answers := map[string]int{}
	for _, t := range targets {
		for _, tr := range throughputRequests {
			n, err := checkAnswer(ctx, t.base, tr.req)
			if err != nil {
				return nil, nil, fmt.Errorf("%s %s: %w", t.name, tr.label, err)
			}
			answers[t.name+tr.label] = n
		}
		// Warm-up: connections, pools, caches.
		if _, err := e.tools.load(ctx, tmp, t.base, throughputRequests[0].req, warmUp); err != nil {
			return nil, nil, fmt.Errorf("warm-up %s: %w", t.name, err)
		}
	}
	for _, tr := range throughputRequests {
		for _, t := range targets {
			var sampler *rssSampler
			if t.name == "runner" {
				pid, err := p.pid()
				if err != nil {
					return nil, nil, err
				}
				sampler = sampleRSS(pid)
			}
			pids, cpu0, err := t.cpu()
			if err != nil {
				return nil, nil, err
			}
			res, err := e.tools.load(ctx, tmp, t.base, tr.req, e.loadFor)
			if sampler != nil {
				peak := sampler.stop()
				e.rss.loadPeak(mode, tr.label, peak)
			}
			if err != nil {
				return nil, nil, fmt.Errorf("%s %s: %w", t.name, tr.label, err)
			}
			row := proxyRow{mode: mode, request: tr.label, target: t.name, answer: answers[t.name+tr.label], res: res}
			if pids != nil && res.requests > 0 {
				cpu1, err := cpuOf(pids)
				if err != nil {
					return nil, nil, fmt.Errorf("%s: CPU time: %w", t.name, err)
				}
				row.cpu = (cpu1 - cpu0) / time.Duration(res.requests)
			}
			progress("  %-14s %-40s %8.0f req/s  p50 %-9s p99 %-9s CPU/req %-8s errors %d", t.name, tr.label, res.rps, ms(res.p50), ms(res.p99), us(row.cpu), res.errors)
			rows = append(rows, row)
		}
	}
	for _, t := range targets {
		res, err := sseTTFB(ctx, t.base, sseRequests)
		if err != nil {
			return nil, nil, fmt.Errorf("SSE %s: %w", t.name, err)
		}
		progress("  %-14s SSE time-to-first-byte  p50 %-9s p99 %-9s (whole stream p50 %s)", t.name, ms(res.p50), ms(res.p99), ms(res.whole))
		sse = append(sse, sseRow{mode: mode, target: t.name, res: res})
	}
	return rows, sse, nil
}

// -smoke: shorter.
var (
	warmUp     = time.Second
	idleSettle = 2 * time.Second // after the last request, before an idle RSS reading
)

// directAddr is how a client reaches the container without the runner: its published
// loopback port (published mode) or its address on the runner network (address mode).
func directAddr(ctx context.Context, id, mode string) (string, error) {
	if mode == "address" {
		out, err := docker(ctx, "inspect", "-f", "{{range .NetworkSettings.Networks}}{{.IPAddress}} {{end}}", id)
		if err != nil {
			return "", err
		}
		f := strings.Fields(out)
		if len(f) == 0 {
			return "", fmt.Errorf("container %.12s has no address", id)
		}
		return f[0] + ":8080", nil
	}
	out, err := docker(ctx, "port", id, "8080/tcp")
	if err != nil {
		return "", err
	}
	for _, line := range strings.Fields(out) {
		if strings.HasPrefix(line, "127.0.0.1:") {
			return line, nil
		}
	}
	return "", fmt.Errorf("container %.12s: no 127.0.0.1 port in %q", id, out)
}

// checkAnswer sends req once and checks that the answer is the plugin's: the greeting for
// /, the echo of the request for /echo/. It returns the answer's size.
func checkAnswer(ctx context.Context, base string, req request) (int, error) {
	ctx, cancel := context.WithTimeout(ctx, loadTimeout)
	defer cancel()
	hr, err := http.NewRequestWithContext(ctx, req.method, base+req.path, bytes.NewReader(req.body))
	if err != nil {
		return 0, err
	}
	resp, err := (&http.Client{Transport: &http.Transport{Proxy: nil, DisableKeepAlives: true}}).Do(hr)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 4<<20))
	if err != nil {
		return 0, err
	}
	if resp.StatusCode != http.StatusOK {
		return 0, fmt.Errorf("status %d: %.200q", resp.StatusCode, body)
	}
	if req.path == "" {
		if string(body) != oldBody {
			return 0, fmt.Errorf("answer %q, want %q", body, oldBody)
		}
		return len(body), nil
	}
	var echo struct {
		Method, Path, Query, Body string
	}
	if err := json.Unmarshal(body, &echo); err != nil {
		return 0, fmt.Errorf("echo answer: %w", err)
	}
	if echo.Method != req.method || echo.Path != "/echo/" || len(echo.Body) != len(req.body) {
		return 0, fmt.Errorf("echo answer: %s %s with %d body bytes, want %s /echo/ with %d", echo.Method, echo.Path, len(echo.Body), req.method, len(req.body))
	}
	return len(body), nil
}

// baselineTarget is the name of the -baseline runner's rows.
func baselineTarget(e *env) string { return "runner@" + e.baselineName }

// targetLabel is how a target appears in the tables.
func targetLabel(name string) string {
	switch {
	case name == "runner":
		return "**runner**"
	case name == "httputil":
		return "httputil.ReverseProxy"
	case strings.HasPrefix(name, "runner@"):
		return "runner at `" + strings.TrimPrefix(name, "runner@") + "` (-baseline)"
	}
	return name
}

// us formats a CPU time per request in microseconds; "—" for none.
func us(d time.Duration) string {
	if d <= 0 {
		return "—"
	}
	return fmt.Sprintf("%.0f µs", float64(d)/float64(time.Microsecond))
}

func renderProxy(rows []proxyRow, e *env) string {
	var b strings.Builder
	b.WriteString("| reach | request | target | answer | req/s | p50 | p99 | CPU/req | runner/direct | runner/nginx | errors |\n")
	b.WriteString("|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|\n")
	find := func(mode, req, target string) *proxyRow {
		return findRow(rows, func(r proxyRow) bool { return r.mode == mode && r.request == req && r.target == target })
	}
	for _, r := range rows {
		vsDirect, vsNginx := "", ""
		if r.target == "runner" {
			if d := find(r.mode, r.request, "direct"); d != nil {
				vsDirect = ratio(r.res.rps, d.res.rps) + "×"
			}
			vsNginx = "skipped"
			if n := find(r.mode, r.request, "nginx"); n != nil {
				vsNginx = ratio(r.res.rps, n.res.rps) + "×"
			}
		}
		fmt.Fprintf(&b, "| %s | %s | %s | %s | %.0f | %s | %s | %s | %s | %s | %d |\n", r.mode, r.request, targetLabel(r.target),
			size(r.answer), r.res.rps, ms(r.res.p50), ms(r.res.p99), us(r.cpu), vsDirect, vsNginx, r.res.errors)
		if r.target == "runner" && e.tools.nginx == "" {
			fmt.Fprintf(&b, "| %s | %s | nginx | skipped: %s | | | | | | | |\n", r.mode, r.request, e.tools.nginxSkip)
		}
	}
	b.WriteString("\nGoals (issue 9, on the 14 B GET): runner req/s ≥ nginx's and ≥ 0.8× direct; p99 added over direct ≤ nginx's.\n")
	small := throughputRequests[0].label
	for _, mode := range []string{"published", "address"} {
		d, r, n := find(mode, small, "direct"), find(mode, small, "runner"), find(mode, small, "nginx")
		if d == nil || r == nil {
			continue
		}
		line := fmt.Sprintf("- reach = %q: runner/direct %s× (≥ 0.8: %s)", mode, ratio(r.res.rps, d.res.rps), metOrMissed(r.res.rps >= 0.8*d.res.rps))
		if n != nil {
			addR, addN := r.res.p99-d.res.p99, n.res.p99-d.res.p99
			line += fmt.Sprintf(", runner/nginx %s× (≥ 1: %s), added p99 runner %s vs nginx %s (%s)",
				ratio(r.res.rps, n.res.rps), metOrMissed(r.res.rps >= n.res.rps), signedMS(addR), signedMS(addN), metOrMissed(addR <= addN))
		} else {
			line += "; nginx skipped: " + e.tools.nginxSkip
		}
		b.WriteString(line + ".\n")
	}
	b.WriteString("\nCPU time of the proxy per request (the " + small + "):\n")
	for _, mode := range []string{"published", "address"} {
		var parts []string
		for _, r := range rows {
			if r.mode == mode && r.request == small && r.cpu > 0 {
				parts = append(parts, fmt.Sprintf("%s %s", targetLabel(r.target), us(r.cpu)))
			}
		}
		if len(parts) > 0 {
			fmt.Fprintf(&b, "- reach = %q: %s.\n", mode, strings.Join(parts, ", "))
		}
	}
	baseline := ""
	if e.baseline != "" {
		baseline = fmt.Sprintf(` "runner at %s" is the runner built from git revision %s (-baseline), with
a hello container of its own, measured in the same run with the same loads.`, "`"+e.baselineName+"`", "`"+e.baselineName+"`")
	}
	fmt.Fprintf(&b, `
Each row is one load run of %s against one target, one target after the other (after a
%s warm-up of each); ratios are of req/s. "direct" is the hello container itself: its
published port on 127.0.0.1 (through Docker's userland docker-proxy) with reach =
"published", its address on the runner network (container IP:8080) with reach = "address".
"runner" is the runner's proxy at %s in the same reach mode; "nginx" is
nginx with worker_processes 2, an upstream of that same direct address with keepalive 64,
proxy_http_version 1.1, Connection "", and bodies buffered in memory;
"httputil.ReverseProxy" is a stock one (the bench itself in a mode of its own: prefix
stripped, an http.Transport keeping 64 idle connections, nothing else) to that same
address.%s "answer" is the size of the answer body to one check request through that
target (the echo reflects request headers, which each proxy adds to). errors = socket
errors + non-2xx answers. CPU/req is the user + system time the proxy's processes (the
runner; nginx's master and workers; the ReverseProxy) used during the load run, from
/proc/<pid>/stat in ticks of 1/%d s, divided by the requests it served. Load, proxy,
plugin and docker-proxy share the machine's cores.
`, e.tools.loadShape(e.loadFor), warmUp, "`/plugins/hello/`", baseline, ticksPerSecond())
	return b.String()
}

func (t *tools) loadShape(d time.Duration) string {
	if t.wrk != "" {
		return fmt.Sprintf("`wrk -t%d -c%d -d%s --latency`", loadThreads, loadConns, d)
	}
	return fmt.Sprintf("the Go load generator (%d keep-alive connections, %s)", loadConns, d)
}

func signedMS(d time.Duration) string {
	if d < 0 {
		return "−" + ms(-d)
	}
	return "+" + ms(d)
}

func size(n int) string {
	switch {
	case n >= 1<<20:
		return fmt.Sprintf("%.2f MiB", float64(n)/(1<<20))
	case n >= 1<<10:
		return fmt.Sprintf("%.2f KiB", float64(n)/(1<<10))
	default:
		return fmt.Sprintf("%d B", n)
	}
}

// rssSampler polls a process's VmRSS and keeps the peak.
type rssSampler struct {
	done chan struct{}
	wg   sync.WaitGroup
	peak int64
}

func sampleRSS(pid int) *rssSampler {
	s := &rssSampler{done: make(chan struct{})}
	s.wg.Go(func() {
		t := time.NewTicker(100 * time.Millisecond)
		defer t.Stop()
		for {
			if v, err := vmRSS(pid); err == nil && v > s.peak {
				s.peak = v
			}
			select {
			case <-s.done:
				return
			case <-t.C:
			}
		}
	})
	return s
}

func (s *rssSampler) stop() int64 {
	close(s.done)
	s.wg.Wait()
	return s.peak
}

// findRow returns the first row that match accepts, or nil.
func findRow[T any](rows []T, match func(T) bool) *T {
	if i := slices.IndexFunc(rows, match); i >= 0 {
		return &rows[i]
	}
	return nil
}

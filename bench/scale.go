package main

import (
	"context"
	"errors"
	"fmt"
	"os/exec"
	"strconv"
	"strings"
	"time"
)

// Section 6: many plugins running. A runner with scaleSize plugins and one with 1, both
// with reach = "address" (no docker-proxy process per plugin: with "published", 200
// plugins would add 200 userland proxies to the host) and both kept up: up → every plugin
// answered 200, the idle CPU of both over the same idleCPUFor (utime + stime from
// /proc/<pid>/stat), their VmRSS, then proxy throughput to one plugin of each in
// alternating rounds with the load of section 1 (see scaleSection).
const (
	scaleReach      = "address"
	scaleStartAfter = "3m"            // the plugins' start_timeout: a slow engine is not a failed start
	scaleAllWithin  = 4 * time.Minute // up → every plugin answered (also bounded by the budget)
	scaleExitIn     = 3 * time.Minute // SIGTERM → exit: the runner stops and removes every container
	scaleGoalRatio  = 0.9             // the bench's own threshold for "the table scales"
	idleCPUGoal     = 1.0             // % of one core (issue 9)
)

var (
	scaleSize  = 200
	idleCPUFor = 10 * time.Second
)

type scaleRow struct {
	plugins, answered int
	serving           time.Duration // runner exec → its `serving` line
	readyAtServing    int           // plugins ready by then (the others failed a start and are restarting)
	upToAll           time.Duration // runner exec → every plugin answered 200
	cpu               float64       // idle CPU, % of one core
	cpuTicks          int64
	cpuWindow         time.Duration
	rss               int64
	target            string
	loads             []*loadResult // one per round
	stopTook          time.Duration
}

// rps, p50 and p99 are the means over the rounds.
func (r *scaleRow) rps() float64 {
	return meanOf(r.loads, func(l *loadResult) float64 { return l.rps })
}

func (r *scaleRow) p50() time.Duration {
	return time.Duration(meanOf(r.loads, func(l *loadResult) float64 { return float64(l.p50) }))
}

func (r *scaleRow) p99() time.Duration {
	return time.Duration(meanOf(r.loads, func(l *loadResult) float64 { return float64(l.p99) }))
}

func (r *scaleRow) errors() (n int) {
	for _, l := range r.loads {
		n += l.errors
	}
	return n
}

func meanOf(ls []*loadResult, f func(*loadResult) float64) float64 {
	if len(ls) == 0 {
		return 0
	}
	var sum float64
	for _, l := range ls {
		sum += f(l)
	}
	return sum / float64(len(ls))
}

// scaleRunner is one of the section's runners, up and answering.
type scaleRunner struct {
	p      *runnerProc
	row    *scaleRow
	pid    int
	target string // URL of the last plugin of the table
}

// scaleSection: the many-plugin runner first (it takes long to start), then the
// 1-plugin one, both kept up so that they are measured in the same minutes: the idle CPU
// of both over the same window, then load rounds in the order 1, N, N, 1, 1, N, N, 1 (each
// half the section-1 duration), so that a drift of the shared host's load falls on both
// alike.
func scaleSection(ctx context.Context, e *env) (out string, err error) {
	tmp, err := mkTemp("scale-")
	if err != nil {
		return "", err
	}
	many, one := &scaleRow{plugins: scaleSize}, &scaleRow{plugins: 1}
	var runners []*scaleRunner
	defer func() {
		// Stop both (the big one takes a while: it removes every container).
		for _, r := range runners {
			err = errors.Join(err, r.p.finish(nil))
			r.row.stopTook = r.p.stopTook
			progress("  %d plugin(s): SIGTERM → exit %s", r.row.plugins, ms(r.row.stopTook))
		}
		if len(one.loads) > 0 && len(many.loads) > 0 {
			out = renderScale([]*scaleRow{one, many}, e)
		}
	}()
	for _, row := range []*scaleRow{many, one} {
		progress("%d plugin(s), reach = %q", row.plugins, scaleReach)
		r, err := scaleUp(ctx, e, row)
		if r != nil {
			runners = append(runners, r)
		}
		if err != nil {
			return "", fmt.Errorf("%d plugin(s): %w", row.plugins, err)
		}
		progress("  up → serving line %s (%d/%d ready), all answered %s", ms(row.serving), row.readyAtServing, row.plugins, ms(row.upToAll))
	}
	if err := sleep(ctx, idleSettle); err != nil {
		return "", err
	}
	// Idle CPU of both runners over the same window.
	t0 := make([]int64, len(runners))
	for i, r := range runners {
		if t0[i], err = cpuTicks(r.pid); err != nil {
			return "", err
		}
	}
	begin := time.Now()
	if err := sleep(ctx, idleCPUFor); err != nil {
		return "", err
	}
	window := time.Since(begin)
	for i, r := range runners {
		t1, err := cpuTicks(r.pid)
		if err != nil {
			return "", err
		}
		r.row.cpuTicks, r.row.cpuWindow = t1-t0[i], window
		r.row.cpu = 100 * float64(r.row.cpuTicks) / float64(clockTicks()) / window.Seconds()
		if r.row.rss, err = vmRSS(r.pid); err != nil {
			return "", err
		}
		progress("  %d plugin(s): idle CPU %.2f %% (%d ticks in %s); VmRSS %s", r.row.plugins, r.row.cpu, r.row.cpuTicks, ms(window), mib(r.row.rss))
	}
	e.rss.add(fmt.Sprintf("idle, %d plugins, reach = %q (section 6)", scaleSize, scaleReach), scaleSize, many.rss, "")

	// Throughput: warm-up of each, then rounds 1, N, N, 1.
	rm, r1 := runners[0], runners[1]
	round := scaleRound(e)
	for _, r := range []*scaleRunner{r1, rm} {
		if _, err := e.tools.load(ctx, tmp, r.target, throughputRequests[0].req, warmUp); err != nil {
			return "", fmt.Errorf("warm-up %d plugin(s): %w", r.row.plugins, err)
		}
	}
	for _, r := range []*scaleRunner{r1, rm, rm, r1, r1, rm, rm, r1} {
		res, err := e.tools.load(ctx, tmp, r.target, throughputRequests[0].req, round)
		if err != nil {
			return "", fmt.Errorf("%d plugin(s): %w", r.row.plugins, err)
		}
		r.row.loads = append(r.row.loads, res)
		progress("  %3d plugin(s) %s: %.0f req/s p50 %s p99 %s errors %d", r.row.plugins, r.row.target, res.rps, ms(res.p50), ms(res.p99), res.errors)
	}
	return "", nil // rendered by the deferred function, after the runners are stopped
}

// scaleUp starts a runner with row.plugins hello plugins and waits until its `serving`
// line (no polling meanwhile: 200 starting plugins are what the host is busy with), then
// until every plugin answered 200 through the proxy. The runner is returned once started,
// also with an error, so that the caller stops it.
func scaleUp(ctx context.Context, e *env, row *scaleRow) (*scaleRunner, error) {
	n := row.plugins
	plugins := make([]pluginConf, n)
	for i := range plugins {
		name := "hello"
		if n > 1 {
			name = fmt.Sprintf("hello-%03d", i+1)
		}
		plugins[i] = pluginConf{name: name, greeting: "s", startTimeout: scaleStartAfter}
	}
	p, err := spawnRunner(e.bin, runnerConfig(e.image, scaleReach, "", plugins...))
	if err != nil {
		return nil, err
	}
	p.exitIn = scaleExitIn
	r := &scaleRunner{p: p, row: row}
	if err := p.waitServing(ctx, scaleAllWithin); err != nil {
		return r, p.withLogs(err)
	}
	row.serving, row.readyAtServing = p.servingAt.Sub(p.began), p.ready
	urls := make([]string, n)
	for i, pc := range plugins {
		urls[i] = p.url(pc.name)
	}
	answered, last, err := pollAll(ctx, urls, func(i int) string { return "s from " + plugins[i].name + "\n" }, scaleAllWithin-time.Since(p.began))
	row.answered = answered
	if err != nil {
		return r, p.withLogs(fmt.Errorf("%d/%d plugins answered 200 within %s: %w", answered, n, ms(time.Since(p.began)), err))
	}
	row.upToAll = last.Sub(p.began)
	row.target = plugins[n-1].name
	r.target = p.url(row.target)
	if r.pid, err = p.pid(); err != nil {
		return r, err
	}
	return r, nil
}

// cpuTicks is utime + stime (fields 14 and 15) of /proc/<pid>/stat: every thread's.
func cpuTicks(pid int) (int64, error) {
	f, err := procStatFields(pid)
	if err != nil {
		return 0, err
	}
	if len(f) < 13 {
		return 0, fmt.Errorf("/proc/%d/stat: %d fields", pid, len(f))
	}
	u, err1 := strconv.ParseInt(f[11], 10, 64)
	s, err2 := strconv.ParseInt(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		return 0, fmt.Errorf("/proc/%d/stat: utime %q stime %q", pid, f[11], f[12])
	}
	return u + s, nil
}

// clockTicks per second (USER_HZ, the unit of /proc/<pid>/stat times): 100 on Linux,
// asked from getconf when it is there.
func clockTicks() int64 {
	if out, err := exec.Command("getconf", "CLK_TCK").Output(); err == nil {
		if n, err := strconv.ParseInt(strings.TrimSpace(string(out)), 10, 64); err == nil && n > 0 {
			return n
		}
	}
	return 100
}

func renderScale(rows []*scaleRow, e *env) string {
	var b strings.Builder
	b.WriteString("| plugins | reach | up → `serving` line | up → all answer 200 | idle CPU (% of one core) | VmRSS idle | target | req/s | p50 | p99 | errors | req/s vs 1 plugin |\n")
	b.WriteString("|---:|---|---:|---:|---:|---:|---|---:|---:|---:|---:|---:|\n")
	one := rows[0]
	for _, r := range rows {
		vs := ""
		if r.plugins > 1 {
			vs = ratio(r.rps(), one.rps()) + "×"
		}
		fmt.Fprintf(&b, "| %d | %s | %s (%d/%d ready) | %s | %.2f %% (%d ticks / %s) | %s | `/plugins/%s/` | %.0f | %s | %s | %d | %s |\n",
			r.plugins, scaleReach, ms(r.serving), r.readyAtServing, r.plugins, ms(r.upToAll), r.cpu, r.cpuTicks, ms(r.cpuWindow), mib(r.rss), r.target,
			r.rps(), ms(r.p50()), ms(r.p99()), r.errors(), vs)
	}
	b.WriteString("\nGoals:\n")
	for _, r := range rows {
		fmt.Fprintf(&b, "- idle CPU with %d plugin(s) < %.0f %% of one core (issue 9): %s (%.2f %%).\n", r.plugins, idleCPUGoal, metOrMissed(r.cpu < idleCPUGoal), r.cpu)
	}
	for _, r := range rows[1:] {
		rat := r.rps() / one.rps()
		fmt.Fprintf(&b, "- throughput to one of %d plugins ≥ %.1f× the 1-plugin figure (the bench's threshold; the issue asks \"does the table scale?\"): %s (%.3g×; p99 %s vs %s).\n",
			r.plugins, scaleGoalRatio, metOrMissed(rat >= scaleGoalRatio), rat, ms(r.p99()), ms(one.p99()))
	}
	fmt.Fprintf(&b, `
Two runners, both `+"`runner up`"+` with reach = %q (the proxy dials each container's
address on the runner network; nothing is published, so no docker-proxy process per
plugin), on configs of hello plugins (health { path = "/healthz" } at the default
interval of 5s; start_timeout %s so that a slow engine does not turn into restarts):
first %d plugins (hello-001…), then 1, both kept up. "up → `+"`serving`"+` line" runs from the
exec to the runner's `+"`serving … k/N plugins ready`"+` line, printed when each plugin is ready
or has failed a start (it restarts those; not polled meanwhile), "up → all answer 200"
until each has also answered through the proxy. Then, %s later, both
runners' CPU time over the same %s with no requests (utime + stime of all threads,
/proc/<pid>/stat, ticks of 1/%d s): health probes and whatever else a runner does on its
own; then their VmRSS. Then GET /plugins/<name>/ (14 B answer) to the last plugin of each
table: a %s warm-up of each, then %s in eight rounds, 1 plugin, %[9]d, %[9]d, 1, 1, %[9]d,
%[9]d, 1 (so that a drift of the shared host's load falls on both alike); req/s, p50 and
p99 are the means of each runner's four rounds.
`, scaleReach, scaleStartAfter, scaleSize, idleSettle, idleCPUFor, clockTicks(), warmUp,
		e.tools.loadShape(scaleRound(e)), scaleSize)
	return b.String()
}

// scaleRound is the length of one load round: half of section 1's duration (wrk's are
// whole seconds).
func scaleRound(e *env) time.Duration {
	if e.tools.wrk != "" {
		return max(e.loadFor/2, time.Second)
	}
	return e.loadFor / 2
}

package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"time"
)

// Section 8: replicas (issue 16), in one runner (reach = "address", every instance
// limited to cpus = 1) with three plugins of the hello image:
//
//   - work1 (1 replica) and work2 (2 replicas): throughput of GET /work?ms=2, 2 ms of CPU
//     per request, with the load of section 1, in rounds 1, 2, 2, 1 (-smoke: 1, 2) so
//     that a drift of the shared host's load falls on both alike, with the CPU their
//     instances and the whole host used meanwhile;
//   - kill3 (3 replicas): 8 keep-alive clients (the load of section 2) while one instance
//     is `docker kill`ed: failed requests (goal 0: a request that broke on the dead
//     instance is retried on another), and kill → a fresh instance in its slot, ready;
//   - then work1 scaled 1 → 4: config save → 4/4 ready, in the same generation.
const (
	replicasReach  = "address"
	workRequest    = "work?ms=2"
	replicasWithin = time.Minute // kill → fresh instance ready; save → 4/4 ready
	adminPoll      = 20 * time.Millisecond
	scaledTo       = 4
)

var replicaRounds = 4 // -smoke: 2

// replicaPlugin is one plugin block of the section's config.
type replicaPlugin struct {
	name     string
	replicas int
}

// replicasConfig renders the section's plugins.hcl: health probed every second and a
// short restart backoff, so that the time to replace a killed instance is mostly the
// engine's.
func replicasConfig(image string, plugins ...replicaPlugin) string {
	var b strings.Builder
	fmt.Fprintf(&b, "runner {\n  listen       = \"127.0.0.1:0\"\n  admin_listen = \"127.0.0.1:0\"\n  watch        = true\n  reach        = %q\n}\n", replicasReach)
	for _, p := range plugins {
		fmt.Fprintf(&b, `
plugin %q {
  image = %q
  port  = 8080
  env   = { GREETING = "r" }
  supervisor {
    replicas      = %d
    cpus          = 1
    drain_timeout = "%s"
    stop_timeout  = "2s"
    health {
      path     = "/healthz"
      interval = "1s"
    }
    restart {
      backoff     = "100ms"
      max_backoff = "1s"
    }
  }
}
`, p.name, image, p.replicas, drainTimeout)
	}
	return b.String()
}

type workRow struct {
	plugin   string
	replicas int
	loads    []*loadResult
	cpu      []float64 // per round: cores its instances used (their cgroups); nil if unknown
	busy     []float64 // per round: cores the whole host used (/proc/stat)
}

type killRow struct {
	res        *result
	killedRepl int
	back       time.Duration // docker kill → a fresh instance in the slot, ready (3/3)
}

type growRow struct {
	took       time.Duration // config save → 4/4 ready
	generation [2]int        // before, after
}

func replicasSection(ctx context.Context, e *env) (out string, err error) {
	tmp, err := mkTemp("replicas-")
	if err != nil {
		return "", err
	}
	plugins := []replicaPlugin{{"work1", 1}, {"work2", 2}, {"kill3", 3}}
	p, err := startRunner(ctx, e.bin, replicasConfig(e.image, plugins...), runnerStartIn)
	if err != nil {
		return "", err
	}
	defer func() { err = p.finish(err) }()
	admin, err := adminOf(p)
	if err != nil {
		return "", err
	}
	for _, pl := range plugins {
		if _, _, err := admin.wait(ctx, pl.name, replicasWithin, func(st pluginStatus) bool { return st.Ready == pl.replicas }); err != nil {
			return "", err
		}
	}
	progress("  runner serving on %s: work1 ×1, work2 ×2, kill3 ×3", p.addr)

	works := []*workRow{{plugin: "work1", replicas: 1}, {plugin: "work2", replicas: 2}}
	if err := workRounds(ctx, e, tmp, p, admin, works); err != nil {
		return "", err
	}
	var parts []string
	parts = append(parts, renderWork(works, e))

	kill, err := killOne(ctx, p, admin)
	if err != nil {
		return strings.Join(parts, ""), err
	}
	parts = append(parts, renderKill(kill))

	grow, err := scaleUp1To4(ctx, e, p, admin, plugins)
	if err != nil {
		return strings.Join(parts, ""), err
	}
	parts = append(parts, renderGrow(grow))
	out = strings.Join(parts, "")
	if kill.res.failed > 0 {
		return out, brokenf("%d request(s) failed while one replica of three was killed, e.g. %q", kill.res.failed, kill.res.errs)
	}
	return out, nil
}

// workRounds warms both plugins up (which also calibrates /work in every instance) and
// loads them in alternating rounds, reading meanwhile how much CPU the plugin's
// instances and the whole host used: a second replica can only help with a core to
// spare.
func workRounds(ctx context.Context, e *env, tmp string, p *runnerProc, admin *adminClient, rows []*workRow) error {
	req := request{method: http.MethodGet, path: workRequest}
	for _, r := range rows {
		if _, err := e.tools.load(ctx, tmp, p.url(r.plugin), req, warmUp); err != nil {
			return fmt.Errorf("warm-up %s: %w", r.plugin, err)
		}
	}
	for i := range replicaRounds {
		r := rows[[]int{0, 1, 1, 0}[i%4]]
		st, err := admin.plugin(ctx, r.plugin)
		if err != nil {
			return err
		}
		var ids []string
		for _, in := range st.Instances {
			ids = append(ids, in.Container)
		}
		cpu0, cpuErr := containersCPU(ids)
		host0, hostErr := hostCPU()
		begin := time.Now()
		res, err := e.tools.load(ctx, tmp, p.url(r.plugin), req, e.loadFor)
		if err != nil {
			return fmt.Errorf("%s: %w", r.plugin, err)
		}
		took := time.Since(begin)
		cpu1, cpuErr1 := containersCPU(ids)
		host1, hostErr1 := hostCPU()
		r.loads = append(r.loads, res)
		cores, busy := "?", "?"
		if cpuErr == nil && cpuErr1 == nil {
			c := (cpu1 - cpu0).Seconds() / took.Seconds()
			r.cpu, cores = append(r.cpu, c), fmt.Sprintf("%.2f", c)
		} else {
			r.cpu = nil
		}
		if hostErr == nil && hostErr1 == nil {
			b := host1.busyCores(host0)
			r.busy, busy = append(r.busy, b), fmt.Sprintf("%.2f", b)
		}
		progress("  %s (%d replica(s)) GET /%s: %.0f req/s p50 %s p99 %s errors %d; its instances used %s cores, the host %s",
			r.plugin, r.replicas, workRequest, res.rps, ms(res.p50), ms(res.p99), res.errors, cores, busy)
	}
	return nil
}

// killOne loads kill3 with 8 clients, docker-kills its replica 1 after triggerAfter, and
// goes on until a fresh instance is ready in that slot and has served for newServingFor
// (and the load lasted minLoad).
func killOne(ctx context.Context, p *runnerProc, admin *adminClient) (*killRow, error) {
	const plugin, victimReplica = "kill3", 1
	st, err := admin.plugin(ctx, plugin)
	if err != nil {
		return nil, err
	}
	victim := ""
	for _, in := range st.Instances {
		if in.Replica == victimReplica {
			victim = in.Container
		}
	}
	if victim == "" {
		return nil, fmt.Errorf("%s has no instance in slot %d: %+v", plugin, victimReplica, st.Instances)
	}
	api, err := newEngineAPI()
	if err != nil {
		return nil, err
	}
	l := startLoad(ctx, p.url(plugin), "")
	stopped := false
	defer func() {
		if !stopped {
			l.stop()
		}
	}()
	if err := sleep(ctx, triggerAfter); err != nil {
		return nil, err
	}
	// What `docker kill` does (SIGKILL), without the CLI's start-up between the decision
	// and the kill. The engine answers once the process is gone: timed from the request.
	killed := time.Now()
	if err := api.do(ctx, http.MethodPost, "/containers/"+victim+"/kill", nil, nil); err != nil {
		return nil, err
	}
	progress("  docker kill %.12s (kill3 replica %d) %s into the load, done in %s", victim, victimReplica,
		killed.Sub(l.start).Round(time.Millisecond), ms(time.Since(killed)))
	back, _, err := admin.wait(ctx, plugin, replicasWithin, func(st pluginStatus) bool {
		fresh := false
		for _, in := range st.Instances {
			fresh = fresh || (in.Replica == victimReplica && in.Container != "" && in.Container != victim)
		}
		return fresh && st.Ready == 3
	})
	if err != nil {
		return nil, p.withLogs(fmt.Errorf("no fresh instance of %s ready after the kill: %w", plugin, err))
	}
	if err := sleep(ctx, max(newServingFor, minLoad-time.Since(l.start))); err != nil {
		return nil, err
	}
	stopped = true
	res := l.stop()
	res.name, res.label = "one of 3 replicas killed", "kill"
	row := &killRow{res: res, killedRepl: victimReplica, back: back.Sub(killed)}
	progress("  %d requests in %s, %d failed %q; fresh instance ready %s after the kill", res.requests, res.duration.Round(time.Millisecond), res.failed, res.errs, ms(row.back))
	return row, nil
}

// scaleUp1To4 rewrites the config with work1 at scaledTo replicas and times the save to
// scaledTo/scaledTo ready; the generation must stay (scaled in place, not replaced).
func scaleUp1To4(ctx context.Context, e *env, p *runnerProc, admin *adminClient, plugins []replicaPlugin) (*growRow, error) {
	before, err := admin.plugin(ctx, "work1")
	if err != nil {
		return nil, err
	}
	grown := append([]replicaPlugin(nil), plugins...)
	grown[0].replicas = scaledTo
	if err := writeAtomic(p.cfg, replicasConfig(e.image, grown...)); err != nil {
		return nil, err
	}
	saved := time.Now()
	at, after, err := admin.wait(ctx, "work1", replicasWithin, func(st pluginStatus) bool {
		return st.Replicas == scaledTo && st.Ready == scaledTo
	})
	if err != nil {
		return nil, p.withLogs(fmt.Errorf("work1 not %d/%d ready after the config save: %w", scaledTo, scaledTo, err))
	}
	row := &growRow{took: at.Sub(saved), generation: [2]int{before.Generation, after.Generation}}
	progress("  work1 scaled 1 → %d: %s from the save to %d/%d ready (generation %d → %d)", scaledTo, ms(row.took), scaledTo, scaledTo, before.Generation, after.Generation)
	if before.Generation != after.Generation {
		return row, fmt.Errorf("scaling work1 replaced its generation (%d → %d) instead of adding instances", before.Generation, after.Generation)
	}
	return row, nil
}

func renderWork(rows []*workRow, e *env) string {
	var b strings.Builder
	b.WriteString("| plugin | replicas (cpus = 1 each) | rounds | req/s | p50 | p99 | errors | its instances' CPU (cores) | host CPU busy (cores of " + nproc() + ") | req/s vs 1 replica |\n")
	b.WriteString("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n")
	for _, r := range rows {
		vs := ""
		if r.replicas > 1 {
			vs = ratio(meanOf(r.loads, rps), meanOf(rows[0].loads, rps)) + "×"
		}
		p50 := time.Duration(meanOf(r.loads, func(l *loadResult) float64 { return float64(l.p50) }))
		p99 := time.Duration(meanOf(r.loads, func(l *loadResult) float64 { return float64(l.p99) }))
		errs := 0
		for _, l := range r.loads {
			errs += l.errors
		}
		fmt.Fprintf(&b, "| %s `GET /%s` | %d | %d | %.0f | %s | %s | %d | %s | %s | %s |\n", r.plugin, workRequest, r.replicas, len(r.loads),
			meanOf(r.loads, rps), ms(p50), ms(p99), errs, meanCores(r.cpu), meanCores(r.busy), vs)
	}
	order := "1, 2, 2, 1"
	if replicaRounds < 4 {
		order = "1, 2"
	}
	fmt.Fprintf(&b, `
A CPU-bound plugin: hello's `+"`GET /work?ms=2`"+` does 2 ms of CPU work per request (a loop
count calibrated against its thread's CPU clock, so that waiting for a core is not counted
as work). Both plugins run in one runner (reach = %q), each instance limited to one core
(cpus = 1); the load is %s per round, rounds in the order %s (replicas), after a %s
warm-up of each; req/s, p50 and p99 are the means of each plugin's rounds. The CPU
columns are means over the rounds: what the plugin's containers used (their cgroups'
cpuacct), and what the whole host used (/proc/stat, all processes: the load generator,
the runner, the engine and whatever else runs here). A second replica can only add
throughput with a core to spare: on these %s cores the load generator and the runner
share them with the plugin.
`, replicasReach, e.tools.loadShape(e.loadFor), order, warmUp, nproc())
	return b.String()
}

func meanCores(v []float64) string {
	if len(v) == 0 {
		return "n/a"
	}
	var sum float64
	for _, x := range v {
		sum += x
	}
	return fmt.Sprintf("%.2f", sum/float64(len(v)))
}

func nproc() string { return strconv.Itoa(runtime.NumCPU()) }

// containersCPU is the CPU time the containers used, from their cgroups: cgroup v1's
// cpuacct.usage or v2's cpu.stat, under Docker's cgroupfs or systemd layout.
func containersCPU(ids []string) (time.Duration, error) {
	var sum time.Duration
	for _, id := range ids {
		d, err := containerCPU(id)
		if err != nil {
			return 0, err
		}
		sum += d
	}
	return sum, nil
}

func containerCPU(id string) (time.Duration, error) {
	for _, dir := range []string{"docker/" + id, "system.slice/docker-" + id + ".scope"} {
		for _, v1 := range []string{"/sys/fs/cgroup/cpuacct/", "/sys/fs/cgroup/cpu,cpuacct/"} {
			if b, err := os.ReadFile(v1 + dir + "/cpuacct.usage"); err == nil {
				ns, err := strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64)
				return time.Duration(ns), err
			}
		}
		if b, err := os.ReadFile("/sys/fs/cgroup/" + dir + "/cpu.stat"); err == nil {
			for _, line := range strings.Split(string(b), "\n") {
				if v, ok := strings.CutPrefix(line, "usage_usec "); ok {
					us, err := strconv.ParseInt(strings.TrimSpace(v), 10, 64)
					return time.Duration(us) * time.Microsecond, err
				}
			}
		}
	}
	return 0, fmt.Errorf("no cgroup CPU account found for container %.12s", id)
}

// cpuSample is the first line of /proc/stat: jiffies of every CPU, all and idle.
type cpuSample struct{ total, idle int64 }

func hostCPU() (cpuSample, error) {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return cpuSample{}, err
	}
	line, _, _ := strings.Cut(string(b), "\n")
	f := strings.Fields(line)
	if len(f) < 6 || f[0] != "cpu" {
		return cpuSample{}, fmt.Errorf("/proc/stat: %q", line)
	}
	var s cpuSample
	for i, v := range f[1:] {
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil {
			return cpuSample{}, err
		}
		if i >= 8 { // guest and guest_nice are already in user and nice
			break
		}
		s.total += n
		if i == 3 || i == 4 { // idle, iowait
			s.idle += n
		}
	}
	return s, nil
}

// busyCores is how many of the host's cores were busy between before and s.
func (s cpuSample) busyCores(before cpuSample) float64 {
	total := s.total - before.total
	if total <= 0 {
		return 0
	}
	return float64(total-(s.idle-before.idle)) / float64(total) * float64(runtime.NumCPU())
}

func rps(l *loadResult) float64 { return l.rps }

func renderKill(k *killRow) string {
	r := k.res
	var b strings.Builder
	b.WriteString("\n| scenario | requests | failed | p50 | p99 | max latency | kill → fresh instance ready |\n")
	b.WriteString("|---|---:|---:|---:|---:|---:|---:|\n")
	fmt.Fprintf(&b, "| kill3: 1 of 3 replicas `docker kill`ed under %d clients | %d | %d | %s | %s | %s | %s |\n",
		clients, r.requests, r.failed, ms(r.quantile(0.5)), ms(r.quantile(0.99)), ms(r.max()), ms(k.back))
	fmt.Fprintf(&b, `
Goal (issue 16): 0 failed requests while one replica of three is killed: %s. %d keep-alive
clients, each a loop of GET /plugins/kill3/ with a %s timeout (a transport error or a
non-200 is a failure), for at least %s; %s in, `+"`docker kill`"+` (SIGKILL, through the Engine
API) of the container in replica slot %d. The proxy retries a request whose connection to the dead instance broke
before any answer (a GET) on another instance, and takes the instance out of the rotation
when the engine reports it dead. "Kill → fresh instance ready" runs until the admin API
shows a new container in that slot and 3/3 ready (restart backoff 100ms, health probe
every 1s); the load goes on %s after that.
`, metOrMissed(r.failed == 0), clients, clientTimeout, minLoad, triggerAfter, k.killedRepl, newServingFor)
	return b.String()
}

func renderGrow(g *growRow) string {
	return fmt.Sprintf(`
| change | config save → all ready | generation |
|---|---:|---|
| work1: replicas 1 → %d | %s | %d → %d (scaled in place) |

An atomic rewrite of plugins.hcl with work1's replicas = %d (the config watcher reloads it;
`+"`runner plan`"+` would say `+"`~ work1: scale 1 → %d`"+`), timed to the admin API's %d/%d ready (polled every
%s): the runner starts the %d new instances at once (start_concurrency) next to the one
that keeps serving, probes them, and adds them to the rotation.
`, scaledTo, ms(g.took), g.generation[0], g.generation[1], scaledTo, scaledTo, scaledTo, scaledTo, adminPoll, scaledTo-1)
}

// adminClient reads a runner's admin API: the address and token file it printed.
type adminClient struct {
	base, token string
	c           *http.Client
}

var adminRE = regexp.MustCompile(`(?m)^admin (http://[0-9.:]+)/ \(token in (.+)\)$`)

func adminOf(p *runnerProc) (*adminClient, error) {
	m := adminRE.FindStringSubmatch(p.stdout())
	if m == nil {
		return nil, p.withLogs(errors.New("no `admin http://…` line in the runner's output"))
	}
	file := m[2]
	if !filepath.IsAbs(file) {
		file = filepath.Join(p.dir, file)
	}
	tok, err := os.ReadFile(file)
	if err != nil {
		return nil, fmt.Errorf("admin token: %w", err)
	}
	return &adminClient{base: m[1], token: strings.TrimSpace(string(tok)), c: pollClient()}, nil
}

// pluginStatus is what the section reads of GET /v1/plugins/{name}.
type pluginStatus struct {
	Generation int `json:"generation"`
	Ready      int `json:"ready"`
	Replicas   int `json:"replicas"`
	Instances  []struct {
		Replica   int    `json:"replica"`
		Container string `json:"container"`
		State     string `json:"state"`
	} `json:"instances"`
}

func (a *adminClient) plugin(ctx context.Context, name string) (pluginStatus, error) {
	var st pluginStatus
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, a.base+"/v1/plugins/"+name, nil)
	if err != nil {
		return st, err
	}
	req.Header.Set("Authorization", "Bearer "+a.token)
	resp, err := a.c.Do(req)
	if err != nil {
		return st, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return st, fmt.Errorf("GET /v1/plugins/%s: %s", name, resp.Status)
	}
	return st, json.NewDecoder(resp.Body).Decode(&st)
}

// wait polls name's status every adminPoll until cond holds (bounded by within) and
// returns when it first did.
func (a *adminClient) wait(ctx context.Context, name string, within time.Duration, cond func(pluginStatus) bool) (time.Time, pluginStatus, error) {
	ctx, cancel := context.WithTimeout(ctx, within)
	defer cancel()
	var last pluginStatus
	var lastErr error
	for {
		st, err := a.plugin(ctx, name)
		if err == nil && cond(st) {
			return time.Now(), st, nil
		}
		if err != nil {
			lastErr = err
		} else {
			last = st
		}
		select {
		case <-ctx.Done():
			return time.Time{}, last, fmt.Errorf("%s: %w (last status %+v, last error %v)", name, ctx.Err(), last, lastErr)
		case <-time.After(adminPoll):
		}
	}
}

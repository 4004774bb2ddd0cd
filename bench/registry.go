package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"github.com/xcore/runner/registry/registrytest"
)

// Section 7: plugins shipped through a registry. A registry of our own
// (go-containerregistry's, in this process, on 127.0.0.1: dockerd pulls from it over
// HTTP) and a runner following a tag with registry_poll = "1s": each push of a new image
// to the tag is timed to the first answer of the new generation through the proxy, next
// to the floor measured right after it: the engine pulling a new image of the same size
// from the same registry, then create + start + first 200. The CPU a poll costs is
// measured in section 6, on its runner of scaleSize plugins (pollCPU).

var (
	registryPushes = 5 // -smoke: fewer
	registryPoll   = time.Second
)

// registrySection: tag moved → new generation serving, registryPushes times.
func registrySection(ctx context.Context, e *env) (out string, err error) {
	reg, err := registrytest.Start()
	if err != nil {
		return "", err
	}
	defer func() {
		reg.Close()
		removeRegistryImages(reg.Host)
	}()
	api, err := newEngineAPI()
	if err != nil {
		return "", err
	}
	defer removeByLabel()
	bin := filepath.Join(e.root, "examples", "hello", "bin", "hello")
	push := func(ref, greeting string) (string, error) {
		img, err := registrytest.Build(registrytest.Image{Binary: bin, Env: map[string]string{"GREETING": greeting}, Labels: map[string]string{benchLabelKey: runID}})
		if err != nil {
			return "", err
		}
		return registrytest.Push(ctx, ref, img, "", "")
	}
	followed := reg.Host + "/bench/hello:live"
	if _, err := push(followed, "m0"); err != nil {
		return "", err
	}
	cfg := fmt.Sprintf(`runner {
  listen        = "127.0.0.1:0"
  admin_listen  = "127.0.0.1:0"
  registry_poll = %q
}

plugin "hello" {
  image = %q
  port  = 8080
  supervisor {
    health { path = "/healthz" }
    drain_timeout = "%s"
    stop_timeout  = "2s"
  }
}
`, registryPoll, followed, drainTimeout)
	p, err := startRunner(ctx, e.bin, cfg, runnerStartIn)
	if err != nil {
		return "", err
	}
	defer func() { err = p.finish(err) }()
	client := pollClient()
	if _, err := waitStatus200(ctx, client, p.url("hello"), "m0 from hello\n", answerWithin); err != nil {
		return "", err
	}
	var moves, floor []time.Duration
	var moveErr error
	for i := 1; i <= registryPushes; i++ {
		g := fmt.Sprintf("m%d", i)
		if _, err := push(followed, g); err != nil {
			moveErr = err
			break
		}
		pushed := time.Now() // the tag moved when the push ended (its manifest PUT)
		at, err := waitStatus200(ctx, client, p.url("hello"), g+" from hello\n", answerWithin)
		if err != nil {
			moveErr = fmt.Errorf("push %d: %w", i, err)
			break
		}
		move := at.Sub(pushed)
		if err := waitOldGone(ctx, p, "hello"); err != nil {
			moveErr = fmt.Errorf("push %d: %w", i, err)
			break
		}
		// The floor: a new image of the same size, pulled by the engine from the same
		// registry, then run.
		fref := fmt.Sprintf("%s/bench/floor:f%d", reg.Host, i)
		if _, err := push(fref, "f"); err != nil {
			moveErr = err
			break
		}
		fl, err := pullAndRunOnce(ctx, api, fref, fmt.Sprintf("f%d", i), client)
		if err != nil {
			moveErr = fmt.Errorf("floor %d: %w", i, err)
			break
		}
		moves, floor = append(moves, move), append(floor, fl)
		progress("  %2d: tag moved → new generation serving %s; floor (pull + create + start + first 200) %s", i, ms(move), ms(fl))
	}
	if len(moves) == 0 {
		return "", moveErr
	}
	counts := reg.Counts()
	slices.Sort(moves)
	slices.Sort(floor)
	var b strings.Builder
	b.WriteString("| what | runs | median | p95 | min | max |\n|---|---:|---:|---:|---:|---:|\n")
	row := func(name string, d []time.Duration) {
		fmt.Fprintf(&b, "| %s | %d | %s | %s | %s | %s |\n", name, len(d), ms(quantile(d, 0.5)), ms(quantile(d, 0.95)), ms(d[0]), ms(d[len(d)-1]))
	}
	row(fmt.Sprintf("**runner**: registry tag moved → new generation serving (registry_poll = %q)", registryPoll), moves)
	row("floor: engine pull of a new image + create + start + first 200", floor)
	mm, fm := quantile(moves, 0.5), quantile(floor, 0.5)
	fmt.Fprintf(&b, "\nRunner − floor: median %s (the poll interval is %s: a move waits for the next poll, half of it on average). Goal (issue 14): median ≤ poll interval + floor + 500 ms: %s.\n",
		signedMS(mm-fm), ms(registryPoll), metOrMissed(mm <= registryPoll+fm+500*time.Millisecond))
	fmt.Fprintf(&b, `
Runner: `+"`runner up`"+` following %s/bench/hello:live (health { path = "/healthz" },
drain_timeout %s). Each run pushes a new image (examples/hello FROM scratch, another
GREETING) to the tag with go-containerregistry and times from the end of the push (its
manifest PUT: the tag has moved) to the first answer of the new greeting at
/plugins/hello/ (a GET every 5 ms, new connection each): the next poll (a manifest HEAD),
the pull through the engine, create, start, the health probe and the route swap,
start-first. After each, the bench waits until the old generation is removed, then
measures one floor run: an image of the same size pushed to another tag, pulled by the
engine (POST /images/create, the call `+"`docker pull`"+` makes) and run as in section 3
(create + start + inspect over the Engine API, first 200 at its published port). Runs and
floors alternate, so both see the same host. Registry requests over the section: %s.
`, "127.0.0.1:<port>", drainTimeout, counts)
	return b.String(), moveErr
}

// waitOldGone waits until plugin has one container left (the old generation drained).
func waitOldGone(ctx context.Context, p *runnerProc, plugin string) error {
	deadline := time.Now().Add(oldGoneWithin)
	for {
		ids, err := p.containers(ctx, plugin)
		if err != nil {
			return err
		}
		if len(ids) <= 1 {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("old generation still running %s later", oldGoneWithin)
		}
		if err := sleep(ctx, 100*time.Millisecond); err != nil {
			return err
		}
	}
}

// pullAndRunOnce: the engine pulls ref (POST /images/create), then create + start +
// inspect and the first 200, as floorOnce; removed after.
func pullAndRunOnce(ctx context.Context, api *engineAPI, ref, greeting string, client *http.Client) (time.Duration, error) {
	begin := time.Now()
	if err := api.pull(ctx, ref); err != nil {
		return 0, err
	}
	id, addr, err := api.rawRun(ctx, ref, "hello", greeting)
	if id != "" {
		defer func() {
			rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Minute)
			defer cancel()
			_ = api.remove(rctx, id)
		}()
	}
	if err != nil {
		return 0, err
	}
	at, err := waitStatus200(ctx, client, "http://"+addr+"/", greeting+" from hello\n", answerWithin)
	if err != nil {
		return 0, err
	}
	return at.Sub(begin), nil
}

// pull has the engine pull ref (anonymously) and waits for the end of its stream.
func (a *engineAPI) pull(ctx context.Context, ref string) error {
	r, err := name.NewTag(ref)
	if err != nil {
		return err
	}
	q := url.Values{"fromImage": {r.Context().Name()}, "tag": {r.TagStr()}}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, a.base+"/images/create?"+q.Encode(), nil)
	if err != nil {
		return err
	}
	req.Header.Set("X-Registry-Auth", "e30=") // {}: anonymous
	resp, err := a.client.Do(req)
	if err != nil {
		return fmt.Errorf("engine pull %s: %w", ref, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode >= 300 {
		return fmt.Errorf("engine pull %s: %d", ref, resp.StatusCode)
	}
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		var m struct {
			Error string `json:"error"`
		}
		if json.Unmarshal(sc.Bytes(), &m) == nil && m.Error != "" {
			return fmt.Errorf("engine pull %s: %s", ref, m.Error)
		}
	}
	return sc.Err()
}

// removeRegistryImages removes the names the engine has from the bench's registry,
// then the images the bench built (its label; once a tag moved, the previous image is
// nameless). The image of section 6's plugins, tagged under the registry's names, only
// loses those names.
func removeRegistryImages(host string) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	out, _ := exec.CommandContext(ctx, "docker", "images", "--format", "{{.Repository}}:{{.Tag}}", host+"/*/*").Output()
	var refs []string
	for _, r := range strings.Fields(string(out)) {
		if !strings.HasSuffix(r, ":<none>") {
			refs = append(refs, r)
		}
	}
	if len(refs) > 0 {
		_ = exec.CommandContext(ctx, "docker", append([]string{"rmi"}, refs...)...).Run()
	}
	out, _ = exec.CommandContext(ctx, "docker", "images", "-q", "--filter", "label="+benchLabel()).Output()
	if ids := strings.Fields(string(out)); len(ids) > 0 {
		_ = exec.CommandContext(ctx, "docker", append([]string{"rmi", "-f"}, ids...)...).Run()
	}
}

// pollStats is what pollCPU measured.
type pollStats struct {
	tags             int
	window           time.Duration
	ticks, idleTicks int64 // runner CPU over the window, following and before
	idleWindow       time.Duration
	counts           registrytest.Counts
}

// pollCPU measures the CPU a poll costs on the runner r of section 6: its plugins are
// moved (by a config edit) onto tags of a registry holding the very image they run — the
// same image ID, so nothing is replaced — with registry_poll = "1s"; once the runner
// polls them all, its CPU over idleCPUFor is compared with its idle CPU measured before.
// The engine has every tag already (pushed once, tagged locally: the image carries the
// registry digest), so nothing is pulled: what is measured is polling alone.
//
// The registry and its names stay until cleanup is called, after the runner stopped
// (removed from under it, they would make it pull).
func pollCPU(ctx context.Context, e *env, r *scaleRunner) (st *pollStats, cleanup func(), err error) {
	plugins := make([]pluginConf, r.row.plugins) // as scaleUp made them
	for i := range plugins {
		plugins[i] = pluginConf{name: fmt.Sprintf("hello-%03d", i+1), greeting: "s", startTimeout: scaleStartAfter}
	}
	reg, err := registrytest.Start()
	if err != nil {
		return nil, func() {}, err
	}
	cleanup = func() {
		reg.Close()
		removeRegistryImages(reg.Host)
	}
	st, err = followTags(ctx, e, r, reg, plugins)
	return st, cleanup, err
}

func followTags(ctx context.Context, e *env, r *scaleRunner, reg *registrytest.Server, plugins []pluginConf) (*pollStats, error) {
	base := reg.Host + "/bench/followed:base"
	if _, err := docker(ctx, "tag", e.image, base); err != nil {
		return nil, err
	}
	if _, err := docker(ctx, "push", base); err != nil {
		return nil, err
	}
	src, err := name.NewTag(base)
	if err != nil {
		return nil, err
	}
	desc, err := remote.Get(src, remote.WithContext(ctx))
	if err != nil {
		return nil, err
	}
	api, err := newEngineAPI()
	if err != nil {
		return nil, err
	}
	id, err := docker(ctx, "image", "inspect", "-f", "{{.Id}}", base)
	if err != nil {
		return nil, err
	}
	var b strings.Builder
	fmt.Fprintf(&b, "runner {\n  listen = \"127.0.0.1:0\"\n  admin_listen = \"127.0.0.1:0\"\n  watch = true\n  reach = %q\n  registry_poll = %q\n}\n", scaleReach, registryPoll)
	for i, pc := range plugins {
		tag := fmt.Sprintf("%s/bench/followed:t%03d", reg.Host, i+1)
		dst, err := name.NewTag(tag)
		if err != nil {
			return nil, err
		}
		if err := remote.Tag(dst, desc, remote.WithContext(ctx)); err != nil {
			return nil, err
		}
		q := url.Values{"repo": {dst.Context().Name()}, "tag": {dst.TagStr()}}
		if err := api.do(ctx, http.MethodPost, "/images/"+id+"/tag?"+q.Encode(), nil, nil); err != nil {
			return nil, err
		}
		fmt.Fprintf(&b, `
plugin %q {
  image = %q
  port  = 8080
  env   = { GREETING = %q }
  supervisor {
    health { path = "/healthz" }
    drain_timeout = "%s"
    stop_timeout  = "2s"
    start_timeout = %q
  }
}
`, pc.name, tag, pc.greeting, drainTimeout, pc.startTimeout)
	}
	c0 := reg.Counts()
	if err := writeAtomic(r.p.cfg, b.String()); err != nil {
		return nil, err
	}
	// The runner follows every tag (one round of HEADs), nothing pulled nor replaced.
	deadline := time.Now().Add(time.Minute)
	for reg.Counts().Since(c0).ManifestHead < int64(len(plugins)) {
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("%d/%d tags polled after 1m", reg.Counts().Since(c0).ManifestHead, len(plugins))
		}
		if err := sleep(ctx, 100*time.Millisecond); err != nil {
			return nil, err
		}
	}
	if err := sleep(ctx, idleSettle+registryPoll); err != nil {
		return nil, err
	}
	if log := r.p.stderr(); strings.Contains(log, `msg="replacing plugin"`) || strings.Contains(log, `msg="pulling image"`) {
		return nil, fmt.Errorf("following tags of the image the plugins run pulled or replaced something")
	}
	st := &pollStats{tags: len(plugins), idleTicks: r.row.cpuTicks, idleWindow: r.row.cpuWindow}
	var begin time.Time
	t0, err := cpuTicks(r.pid)
	if err != nil {
		return nil, err
	}
	c0, begin = reg.Counts(), time.Now()
	if err := sleep(ctx, idleCPUFor); err != nil {
		return nil, err
	}
	t1, err := cpuTicks(r.pid)
	if err != nil {
		return nil, err
	}
	st.window, st.ticks, st.counts = time.Since(begin), t1-t0, reg.Counts().Since(c0)
	return st, nil
}

// render is the poll-cost paragraph of section 6.
func (s *pollStats) render() string {
	hz := float64(clockTicks())
	cpu := float64(s.ticks) / hz / s.window.Seconds()
	idle := float64(s.idleTicks) / hz / s.idleWindow.Seconds()
	polls := float64(s.counts.ManifestHead)
	perPoll := "n/a"
	if polls > 0 {
		perPoll = fmt.Sprintf("%.0f µs", max(cpu-idle, 0)*s.window.Seconds()/polls*1e6)
	}
	perTag := polls / float64(s.tags) / (s.window.Seconds() / registryPoll.Seconds())
	return fmt.Sprintf(`
**Polling a registry** (issue 14): the %d plugins then moved, by a config edit, onto %d
tags of a registry on 127.0.0.1 holding the image they run (same image ID: nothing was
replaced), registry_poll = %q. Over %s: %s; runner CPU %.2f %% of one core (%d ticks)
against %.2f %% idle before → **%s of CPU per poll**, %.2f HEAD per followed tag per
interval (goal ≤ 1: %s), no manifest or blob GET while nothing moved: %s.
`, s.tags, s.tags, registryPoll, ms(s.window), s.counts, 100*cpu, s.ticks, 100*idle, perPoll, perTag,
		metOrMissed(perTag <= 1.05), metOrMissed(s.counts.ManifestGet == 0 && s.counts.BlobGet == 0))
}

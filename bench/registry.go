package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/google/go-containerregistry/pkg/name"

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
	registryPushes     = 5 // -smoke: fewer
	registryPoll       = time.Second
	registryPollTags   = 200 // followed tags of the poll-cost benchmark; -smoke: fewer
	registryPollWindow = 5 * time.Second
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
	pollLine, pollErr := pollBench(ctx, e)
	if moveErr == nil {
		moveErr = pollErr
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
	if pollLine != "" {
		fmt.Fprintf(&b, `
**The CPU a poll costs**, %d followed tags, registry_poll = "1s": **%s µs of runner CPU per
poll**, %s HEAD per tag per second (goal: ≤ 1 HEAD per plugin per interval: %s); the
runner's CPU %s %% of one core following them, %s %% with registry_poll = "0".

`+"`go test -bench BenchmarkRegistryPoll ./runner/`"+` (runner/poll_bench_test.go): a runner
whose %d plugins each follow their own tag of an image the engine has (so nothing is
pulled), on a fake engine whose containers are httptest servers (health probes once an
hour), against a registry served by another process; its CPU (getrusage) over %s, minus
the same runner's with polling off, divided by the HEADs it sent. What a poll is: a timer,
a manifest HEAD on a kept-alive connection, a comparison with the engine's digests.
%s
`, registryPollTags, pollMetric(pollLine, "cpu-µs/poll"), pollMetric(pollLine, "HEAD/tag/s"),
			metOrMissed(headsPerTag(pollLine) <= 1.05),
			pollMetric(pollLine, "%cpu-following"), pollMetric(pollLine, "%cpu-idle"),
			registryPollTags, registryPollWindow, "`"+pollLine+"`")
	}
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
	pulled := time.Since(begin)
	run, err := floorOnce(ctx, api, ref, greeting, client)
	return pulled + run, err
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

// pollBench runs BenchmarkRegistryPoll (runner/poll_bench_test.go): the runner's CPU per
// poll with registryPollTags followed tags, over registryPollWindow. It returns the
// `go test` result line.
func pollBench(ctx context.Context, e *env) (string, error) {
	cmd := exec.CommandContext(ctx, "go", "test", "-run", "^$", "-bench", "^BenchmarkRegistryPoll$", "-benchtime", "1x", "-count", "1", "./runner/")
	cmd.Dir = e.root
	cmd.Env = append(os.Environ(), fmt.Sprintf("XCORE_POLL_TAGS=%d", registryPollTags), "XCORE_POLL_WINDOW="+registryPollWindow.String())
	out, err := cmd.CombinedOutput()
	for _, line := range strings.Split(string(out), "\n") {
		if strings.HasPrefix(line, "BenchmarkRegistryPoll") {
			return strings.Join(strings.Fields(line), " "), nil
		}
	}
	if err == nil {
		err = errors.New("no result line")
	}
	return "", fmt.Errorf("go test -bench BenchmarkRegistryPoll: %w\n%s", err, out)
}

// headsPerTag is the HEADs per tag per second of a BenchmarkRegistryPoll line (∞ when
// unreadable).
func headsPerTag(line string) float64 {
	v, err := strconv.ParseFloat(pollMetric(line, "HEAD/tag/s"), 64)
	if err != nil {
		return math.Inf(1)
	}
	return v
}

// pollMetric is the value of unit in a benchmark result line.
func pollMetric(line, unit string) string {
	f := strings.Fields(line)
	for i := 1; i < len(f); i++ {
		if f[i] == unit {
			return f[i-1]
		}
	}
	return "?"
}

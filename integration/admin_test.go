package integration

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
)

// The operating surface against a real runner: the CLI commands (ps, call, logs,
// events, restart, reload) driving the binary, and the admin API's JSON.
func TestAdminCLI(t *testing.T) {
	t.Parallel()
	cfg := hcl("",
		helloPlugin(images["hello"], "hi"),
		plugin("ghost", "xcore-test/does-not-exist:"+testRunID, "  pull = \"never\" # a local test image: no registry to ask\n"),
	)
	rp := startRunner(t, cfg)
	api := rp.adminAPI(t)

	t.Run("ps", func(t *testing.T) {
		code, out, errb := rp.cli(t, "ps")
		if code != 0 {
			t.Fatalf("exit %d: %s", code, errb)
		}
		lines := strings.Split(strings.TrimSpace(out), "\n")
		if len(lines) != 4 || !regexp.MustCompile(`^NAME +STATE +READY +GEN +UPTIME +RESTARTS +IMAGE +LAST ERROR$`).MatchString(lines[0]) {
			t.Fatalf("ps output:\n%s", out)
		}
		// The last line says what plugins can reach of the host (on, off or unavailable).
		if !strings.Contains(lines[3], "host protection") {
			t.Errorf("ps does not end with the host protection line: %q", lines[3])
		}
		if !regexp.MustCompile(`^ghost +failed +- +- +- +0 +- +.*does-not-exist`).MatchString(lines[1]) {
			t.Errorf("ghost line: %q", lines[1])
		}
		if !regexp.MustCompile(`^hello +healthy +1/1 +1 +[0-9]+s +0 +` + regexp.QuoteMeta(images["hello"]) + `\s*$`).MatchString(lines[2]) {
			t.Errorf("hello line: %q", lines[2])
		}
		// Columns are aligned: STATE starts at the same offset on every line.
		col := strings.Index(lines[0], "STATE")
		for _, l := range lines[1:3] {
			if l[col-2:col] != "  " || l[col] == ' ' {
				t.Errorf("column STATE not aligned at %d in %q", col, l)
			}
		}

		code, out, _ = rp.cli(t, "ps", "--json")
		var list []struct {
			Name       string `json:"name"`
			State      string `json:"state"`
			Generation int    `json:"generation"`
			Container  string `json:"container"`
			TookMS     int64  `json:"took_ms"`
		}
		if err := json.Unmarshal([]byte(out), &list); err != nil || code != 0 || len(list) != 2 {
			t.Fatalf("ps --json (exit %d): %v\n%s", code, err, out)
		}
		if h := list[1]; h.Name != "hello" || h.State != "healthy" || h.Generation != 1 || h.Container != rp.containerFull("hello") ||
			h.TookMS <= 0 || h.TookMS > 60_000 {
			t.Errorf("hello = %+v; container running is %s, want took_ms in (0, 60000]", h, rp.containerFull("hello"))
		}
		// The README's filter finds it: labels are io.xcore.*.
		if got := docker(t, "ps", "-q", "--no-trunc", "--filter", "label=io.xcore.plugin=hello", "--filter", "label=io.xcore.runner="+rp.runnerID); got != rp.containerFull("hello") {
			t.Errorf("docker ps --filter label=io.xcore.plugin=hello --filter label=io.xcore.runner=%s: %q, want %s", rp.runnerID, got, rp.containerFull("hello"))
		}
	})

	t.Run("API JSON", func(t *testing.T) {
		resp := api.request(t, "GET", "/v1/plugins/hello")
		var st map[string]any
		if err := json.NewDecoder(resp.Body).Decode(&st); err != nil || resp.StatusCode != 200 {
			t.Fatalf("status %d: %v", resp.StatusCode, err)
		}
		for _, k := range []string{"name", "state", "generation", "container", "image", "image_id", "snapshot", "started_at", "restarts", "last_error", "endpoint"} {
			if _, ok := st[k]; !ok {
				t.Errorf("GET /v1/plugins/hello lacks %q: %v", k, st)
			}
		}
		if resp := api.request(t, "GET", "/v1/plugins/nope"); resp.StatusCode != 404 || resp.Header.Get("Content-Type") != "application/problem+json" {
			t.Errorf("unknown plugin: %d %s", resp.StatusCode, resp.Header.Get("Content-Type"))
		}
		for _, tok := range []string{"", "wrong"} {
			req, _ := http.NewRequest("GET", api.url+"/v1/plugins", nil)
			if tok != "" {
				req.Header.Set("Authorization", "Bearer "+tok)
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != 401 || resp.Header.Get("Content-Type") != "application/problem+json" {
				t.Errorf("token %q: %d %s", tok, resp.StatusCode, resp.Header.Get("Content-Type"))
			}
		}
	})

	t.Run("call", func(t *testing.T) {
		code, out, errb := rp.cli(t, "call", "hello", "GET", "/")
		if code != 0 || out != "hi from hello\n" {
			t.Fatalf("call hello GET /: exit %d, %q, %s", code, out, errb)
		}
		code, out, _ = rp.cli(t, "call", "-i", "hello", "POST", "/echo/x?y=1", "-d", "body!", "-H", "X-Test: yes")
		if code != 0 || !strings.HasPrefix(out, "HTTP/1.1 200 OK\n") || !strings.Contains(out, "Content-Type: application/json\n") {
			t.Fatalf("call -i: exit %d\n%s", code, out)
		}
		var echo struct {
			Method, Path, Query, Body string
			Headers                   map[string][]string
		}
		if err := json.Unmarshal([]byte(out[strings.Index(out, "\n\n")+2:]), &echo); err != nil {
			t.Fatal(err)
		}
		if echo.Method != "POST" || echo.Path != "/echo/x" || echo.Query != "y=1" || echo.Body != "body!" || strings.Join(echo.Headers["X-Test"], ",") != "yes" {
			t.Errorf("the plugin saw %+v", echo)
		}
		// A 5xx (the ghost plugin is failed: 503) exits 1 and still prints the body.
		code, out, _ = rp.cli(t, "call", "ghost", "/")
		if code != 1 || !strings.Contains(out, "does-not-exist") {
			t.Errorf("call ghost: exit %d, %s", code, out)
		}
	})

	t.Run("logs", func(t *testing.T) {
		code, out, errb := rp.cli(t, "logs", "hello")
		if code != 0 || !strings.Contains(out, "hello listening on") {
			t.Fatalf("logs hello: exit %d\n%s\n%s", code, out, errb)
		}
		if code, _, errb := rp.cli(t, "logs", "nope"); code != 1 || !strings.Contains(errb, `unknown plugin "nope"`) {
			t.Errorf("logs nope: exit %d, %s", code, errb)
		}
	})

	t.Run("events, logs -f and restart", func(t *testing.T) {
		events := rp.cliBackground(t, "events")
		follow := rp.cliBackground(t, "logs", "-f", "hello")
		eventually(t, 20*time.Second, "runner events to connect", func() bool { return strings.Contains(events.stderr(), "connected to") })
		eventually(t, 20*time.Second, "logs -f to print the log", func() bool { return strings.Contains(follow.stdout(), "listening") })
		before := rp.containerFull("hello")

		code, out, errb := rp.cli(t, "restart", "hello")
		if code != 0 || !strings.Contains(out, "restarting hello") {
			t.Fatalf("restart: exit %d, %s %s", code, out, errb)
		}
		eventually(t, 60*time.Second, "runner events to show the replacement", func() bool {
			return regexp.MustCompile(`(?m) replaced +hello +in .*restart requested$`).MatchString(events.stdout())
		})
		if !regexp.MustCompile(`(?m) replacing +hello +reason: restart requested$`).MatchString(events.stdout()) {
			t.Errorf("no replacing event:\n%s", events.stdout())
		}
		if after := rp.containerFull("hello"); after == before {
			t.Error("restart kept the same container")
		}
		// logs -f follows the new container: its own "listening" line arrives too.
		eventually(t, 20*time.Second, "logs -f to follow the new container", func() bool {
			return strings.Count(follow.stdout(), "listening") >= 2
		})
		if !events.running() || !follow.running() {
			t.Error("a stream ended by itself")
		}
		if code, _, errb := rp.cli(t, "restart", "nope"); code != 1 || !strings.Contains(errb, "unknown plugin") {
			t.Errorf("restart nope: exit %d %s", code, errb)
		}
	})

	t.Run("reload", func(t *testing.T) {
		// ghost's image is missing: the rest applies, and the reload says so and fails.
		code, out, errb := rp.cli(t, "reload")
		if code != 1 || !strings.Contains(out, "= hello: unchanged") || !strings.Contains(out, "! ghost: error") || !strings.Contains(errb, "cannot apply: ghost: ") {
			t.Fatalf("reload: exit %d\n%s\n%s", code, out, errb)
		}
		gen := rp.containerFull("hello")
		good, err := os.ReadFile(rp.config())
		if err != nil {
			t.Fatal(err)
		}
		writeFile(t, rp.config(), string(good)+"\nplugin \"bad\" {\n  image = \"x\"\n  port = 1\n  colour = \"red\"\n}\n")
		code, _, errb = rp.cli(t, "reload")
		if code != 1 || !strings.Contains(errb, "colour") || !strings.Contains(errb, "nothing changed") {
			t.Errorf("reload of a bad config: exit %d\n%s", code, errb)
		}
		// ps keeps working on an invalid config, and nothing changed.
		code, out, _ = rp.cli(t, "ps")
		if code != 0 || !strings.Contains(out, "hello") || strings.Contains(out, "bad") || rp.containerFull("hello") != gen {
			t.Errorf("after a rejected reload: exit %d\n%s", code, out)
		}
		writeFile(t, rp.config(), string(good))
	})

	t.Run("actionable errors", func(t *testing.T) {
		wrong := filepath.Join(t.TempDir(), "token")
		if err := os.WriteFile(wrong, []byte("not-the-token\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		if code, _, errb := rp.cli(t, "ps", "--token-file", wrong); code != 1 || !strings.Contains(errb, "admin token rejected: check "+wrong) {
			t.Errorf("wrong token: exit %d, %s", code, errb)
		}
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		out, _ := exec.CommandContext(ctx, runnerBin, "ps", "-c", rp.config(), "--admin", "http://127.0.0.1:1").CombinedOutput()
		if want := "runner not reachable at 127.0.0.1:1: is `runner up` running?"; !strings.Contains(string(out), want) {
			t.Errorf("nothing listening: %s", out)
		}
	})
}

// containerFull is the full ID of the one running container of plugin.
func (rp *runnerProc) containerFull(plugin string) string {
	rp.t.Helper()
	return docker(rp.t, "inspect", "-f", "{{.Id}}", rp.container(plugin))
}

// /metrics, parsed with the Prometheus text parser: the request counter rises by exactly
// the number of requests sent, the restart counter counts a crash.
func TestAdminMetrics(t *testing.T) {
	t.Parallel()
	rp := startRunner(t, hcl("",
		helloPlugin(images["hello"], "hi"),
		plugin("crashy", images["crashy"], "  supervisor {\n    health { path = \"/healthz\" }\n"+restartBlock(5, "250ms", "1s")+"  }\n"),
	))
	api := rp.adminAPI(t)
	hello2xx := map[string]string{"plugin": "hello", "code_class": "2xx"}

	before := metricValue(api.metrics(t), "xcore_requests_total", hello2xx)
	const n = 40
	for range n {
		if resp, body := get(t, rp.url("/plugins/hello/")); resp.StatusCode != 200 {
			t.Fatalf("GET hello: %d %s", resp.StatusCode, body)
		}
	}
	get(t, rp.url("/plugins/hello/no-such-page")) // a 404 of the plugin's own
	// The proxy counts a request once its handler returns, which may be just after the
	// client read the answer: poll until the counts arrive, and never past them.
	hello4xx := map[string]string{"plugin": "hello", "code_class": "4xx"}
	var fams map[string]*dto.MetricFamily
	eventually(t, 10*time.Second, "the requests counted", func() bool {
		fams = api.metrics(t)
		rose, notFound := metricValue(fams, "xcore_requests_total", hello2xx)-before, metricValue(fams, "xcore_requests_total", hello4xx)
		if rose > n || notFound > 1 {
			t.Fatalf("xcore_requests_total{plugin=hello} rose by %v (2xx) and %v (4xx) after %d + 1 requests", rose, notFound, n)
		}
		return rose == n && notFound == 1
	})
	if got := metricValue(fams, "xcore_plugin_state", map[string]string{"plugin": "hello", "state": "healthy"}); got != 1 {
		t.Errorf("xcore_plugin_state{hello,healthy} = %v", got)
	}
	if fams["xcore_request_duration_seconds"] == nil || fams["go_goroutines"] == nil || fams["process_resident_memory_bytes"] == nil {
		t.Error("request duration histogram, Go or process collector missing")
	}
	if got := metricValue(fams, "xcore_plugin_restarts_total", map[string]string{"plugin": "crashy"}); got != 0 {
		t.Fatalf("crashy restarts before any crash = %v", got)
	}

	get(t, rp.url("/plugins/crashy/crash?code=3"))
	eventually(t, 60*time.Second, "crashy restarted and healthy", func() bool {
		fams := api.metrics(t)
		return metricValue(fams, "xcore_plugin_restarts_total", map[string]string{"plugin": "crashy"}) == 1 &&
			metricValue(fams, "xcore_plugin_state", map[string]string{"plugin": "crashy", "state": "healthy"}) == 1
	})
	if got := metricValue(api.metrics(t), "xcore_plugin_restarts_total", map[string]string{"plugin": "hello"}); got != 0 {
		t.Errorf("hello restarts = %v, want 0", got)
	}

	req, _ := http.NewRequest("GET", api.url+"/metrics", nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 401 {
		t.Errorf("/metrics without the token: %d", resp.StatusCode)
	}
}

// chromium finds a headless browser; without one the test fails in CI and is skipped
// elsewhere.
func chromium(t *testing.T) string {
	t.Helper()
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	if os.Getenv("CI") != "" {
		t.Fatal("CI is set and no chromium is installed (.ci/run installs it)")
	}
	t.Skip("no chromium: apt-get install chromium")
	return ""
}

// chromiumFlags run chromium headless with a fresh profile and no traffic of its own (no
// updates, sync or metrics: only the runner on 127.0.0.1 is contacted).
func chromiumFlags(t *testing.T) []string {
	return []string{
		"--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
		"--user-data-dir=" + t.TempDir(),
		"--no-first-run", "--no-default-browser-check", "--disable-background-networking",
		"--disable-component-update", "--disable-sync", "--disable-default-apps", "--disable-extensions",
		"--disable-domain-reliability", "--metrics-recording-only", "--no-pings",
		"--disable-dev-shm-usage",
	}
}

// headless runs chromium (chromiumFlags) with args on url.
func headless(t *testing.T, bin string, url string, args ...string) []byte {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, append(append(chromiumFlags(t), args...), url)...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("chromium %s: %v\n%s", strings.Join(args, " "), err, stderr.String())
	}
	return out
}

// The status page in a real headless browser: the plugins are in the DOM, the script
// runs, a plugin of three replicas shows its instances, and its chart of requests/s and
// p99 is drawn and then kept live (the page polls the runner's rates and redraws; an
// instance killed while the page is open shows up through the event stream). The
// screenshots are taken then (XCORE_STATUS_SCREENSHOT=docs/status.png also writes them
// there, and the plugin's page next to it as docs/status-plugin.png: that is how the
// README's pictures are made).
func TestStatusPage(t *testing.T) {
	t.Parallel()
	bin := chromium(t)
	rp := startRunner(t, hcl("",
		replicated(images["hello"], 3, "hi"),
		plugin("crashy", images["crashy"], "  supervisor {\n    health { path = \"/healthz\" }\n"+restartBlock(5, "250ms", "1s")+"  }\n"),
		plugin("slow", images["slow"], ""),
		plugin("reports", "xcore-test/reports-does-not-exist:"+testRunID, "  pull = \"never\" # a local test image: no registry to ask\n"),
	))
	api := rp.adminAPI(t)
	// Traffic for the charts, all along: a rate that rises and falls, CPU-bound requests.
	load, loadBegan := pacedLoad(t, rp.url("/plugins/hello/work"), 3*time.Minute), time.Now()
	defer load()
	// Something to show: a crash and restart, a replacement.
	get(t, rp.url("/plugins/crashy/crash"))
	if code, _, errb := rp.cli(t, "restart", "hello"); code != 0 {
		t.Fatalf("restart: %s", errb)
	}
	eventually(t, 60*time.Second, "crashy restarted and hello replaced", func() bool {
		fams := api.metrics(t)
		return metricValue(fams, "xcore_plugin_restarts_total", map[string]string{"plugin": "crashy"}) == 1 &&
			metricValue(fams, "xcore_plugin_state", map[string]string{"plugin": "crashy", "state": "healthy"}) == 1 &&
			metricValue(fams, "xcore_plugin_state", map[string]string{"plugin": "hello", "state": "healthy"}) == 1 &&
			metricValue(fams, "xcore_plugin_ready_instances", map[string]string{"plugin": "hello"}) == 3 &&
			strings.Contains(rp.errOut(), `msg="replaced plugin" plugin=hello`)
	})

	// The one-time ?token= sets the cookie and redirects: the browser then follows
	// with the cookie, like a person who used the login form.
	dom := string(headless(t, bin, api.url+"/?token="+api.token, "--dump-dom"))
	for _, name := range []string{"hello", "crashy", "slow", "reports"} {
		if !strings.Contains(dom, `<tr data-plugin="`+name+`">`) {
			t.Errorf("plugin %s is not in the DOM", name)
		}
	}
	for _, want := range []string{"state-healthy", "state-failed", "reports-does-not-exist", "restart requested", `data-field="ready">3/3</span>`} {
		if !strings.Contains(dom, want) {
			t.Errorf("the DOM lacks %q", want)
		}
	}
	if n := strings.Count(dom, `class="dot dot-healthy"`); n != 5 { // hello's 3, crashy's, slow's
		t.Errorf("%d healthy instance dots, want 5", n)
	}
	if strings.Contains(dom, api.token) {
		t.Error("the token is in the page")
	}

	page := string(headless(t, bin, api.url+"/plugins/hello?token="+api.token, "--dump-dom"))
	if !strings.Contains(page, "hello listening on") || !strings.Contains(page, "restart requested") {
		t.Errorf("the plugin page lacks its logs or last change:\n%s", page)
	}

	// (A wrong token gets the login form: runner/admin's TestTokenQueryParam.)

	// The list, open for a while: its charts drawn, redrawn as seconds pass, and an
	// instance that dies and comes back shown as it happens.
	br := openBrowser(t, bin, 1200, 640)
	br.navigate(api.url + "/?token=" + api.token)
	const helloSpark = `document.querySelector('tr[data-plugin="hello"] svg.spark')`
	br.waitFor(10*time.Second, "the event stream to connect", `document.getElementById("live").classList.contains("on")`)
	br.waitFor(10*time.Second, "hello's chart", helloSpark+`.querySelector("path.area-rps").getAttribute("d").length > 100`)
	var first int64
	br.eval(`+`+helloSpark+`.getAttribute("data-end")`, &first)
	br.waitFor(20*time.Second, "the chart redrawn with newer seconds", `+`+helloSpark+`.getAttribute("data-end") >= `+fmt.Sprint(first+3))
	var rate string
	br.eval(`document.querySelector('tr[data-plugin="hello"] [data-field=rps]').textContent`, &rate)
	if !regexp.MustCompile(`^[1-9][0-9]*/s$`).MatchString(rate) {
		t.Errorf("hello's rate reads %q, want n/s under load", rate)
	}

	dst := os.Getenv("XCORE_STATUS_SCREENSHOT")
	if dst != "" {
		// The pictures: a chart with a minute of traffic rather than a few seconds.
		eventually(t, 2*time.Minute, "a minute of traffic for the pictures", func() bool { return time.Since(loadBegan) > 65*time.Second })
	}
	victim := rp.runningOf("hello")[0]
	if out, err := exec.Command("docker", "kill", victim).CombinedOutput(); err != nil {
		t.Fatalf("docker kill: %v %s", err, out)
	}
	br.waitFor(60*time.Second, "the killed instance restarted, live on the page",
		`[...document.querySelectorAll('tr[data-plugin="hello"] .dot-healthy')].filter(d => d.title.includes("1 restarts")).length === 1 && `+
			`document.querySelector('tr[data-plugin="hello"] [data-field=ready]').textContent === "3/3"`)
	list := br.screenshot()

	br.resize(1200, 968)
	br.navigate(api.url + "/plugins/hello")
	br.waitFor(10*time.Second, "the event stream to connect", `document.getElementById("live").classList.contains("on")`)
	br.waitFor(10*time.Second, "hello's big chart", `document.querySelector("#chart path.line-p99").getAttribute("d").length > 100`)
	var rows []string
	br.eval(`[...document.querySelectorAll("tbody[data-field=instance_rows] tr")].map(tr => tr.textContent.replace(/\s+/g, " ").trim())`, &rows)
	if len(rows) != 3 || !strings.Contains(strings.Join(rows, "\n"), "healthy") {
		t.Errorf("hello's instance rows: %q, want 3", rows)
	}
	var readout string
	br.eval(`document.getElementById("readout").textContent`, &readout)
	if !regexp.MustCompile(`requests, 0 5xx, p50 [0-9.]+ ms, p99 [0-9.]+ ms`).MatchString(readout) {
		t.Errorf("the chart's readout: %q", readout)
	}
	plugin := br.screenshot()

	if dst != "" {
		second := strings.TrimSuffix(dst, ".png") + "-plugin.png"
		for path, png := range map[string][]byte{dst: list, second: plugin} {
			if err := os.WriteFile(path, png, 0o644); err != nil {
				t.Fatal(err)
			}
			t.Logf("screenshot written to %s", path)
		}
	}
}

// pacedLoad sends GET url?ms=<0.5…2.5> (hello's /work) at a rate that swings between
// 40 and 200 requests/s over 20s, from 8 workers, until the returned stop is called or
// maxDuration passes. A tick that finds every worker busy drops its request: the rate
// is an upper bound, and the load never piles up on a slow host.
func pacedLoad(t *testing.T, url string, maxDuration time.Duration) (stop func()) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), maxDuration)
	jobs := make(chan string)
	client := &http.Client{Transport: &http.Transport{Proxy: nil, MaxIdleConnsPerHost: 8}, Timeout: 10 * time.Second}
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			for {
				select {
				case <-ctx.Done():
					return
				case u := <-jobs:
					req, _ := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
					if resp, err := client.Do(req); err == nil {
						_, _ = io.Copy(io.Discard, resp.Body)
						resp.Body.Close()
					}
				}
			}
		})
	}
	wg.Go(func() {
		tick := time.NewTicker(10 * time.Millisecond)
		defer tick.Stop()
		begin, due, i := time.Now(), 0.0, 0
		for {
			select {
			case <-ctx.Done():
				return
			case now := <-tick.C:
				rate := 120 + 80*math.Sin(2*math.Pi*now.Sub(begin).Seconds()/20)
				for due += rate / 100; due >= 1; due-- {
					i++
					select {
					case jobs <- fmt.Sprintf("%s?ms=%.1f", url, 0.5+float64(i%5)/2):
					default:
					}
				}
			}
		}
	})
	var once sync.Once
	return func() {
		once.Do(func() {
			cancel()
			wg.Wait()
			client.CloseIdleConnections()
		})
	}
}

// `runner down` after the runner was killed: every labelled container and the network
// are removed, through Docker, without the runner; a second run finds nothing.
func TestDownAfterKill(t *testing.T) {
	t.Parallel()
	rp := startRunner(t, hcl("", helloPlugin(images["hello"], "hi"), plugin("slow", images["slow"], "")))
	rp.kill()
	if n := len(rp.containers()); n != 2 {
		t.Fatalf("%d containers after kill -9, want 2 left behind", n)
	}

	down := func() (int, string, string) {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		cmd := exec.CommandContext(ctx, runnerBin, "down", "-c", rp.config())
		var out, errb bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &errb
		err := cmd.Run()
		code := 0
		if err != nil {
			code = cmd.ProcessState.ExitCode()
		}
		return code, out.String(), errb.String()
	}
	begin := time.Now()
	code, out, errb := down()
	if code != 0 {
		t.Fatalf("down: exit %d\n%s\n%s", code, out, errb)
	}
	t.Logf("runner down took %s:\n%s", time.Since(begin).Round(time.Millisecond), out)
	for _, want := range []string{"removed container xcore-hello-1-" + rp.runnerID, "removed container xcore-slow-1-" + rp.runnerID, "network xcore-" + rp.runnerID + " removed"} {
		if !strings.Contains(out, want) {
			t.Errorf("down does not say %q:\n%s", want, out)
		}
	}
	if ids := rp.containers(); len(ids) != 0 {
		t.Errorf("containers left: %v", ids)
	}
	if err := exec.Command("docker", "network", "inspect", "xcore-"+rp.runnerID).Run(); err == nil {
		t.Error("the network is still there")
	}

	code, out, errb = down()
	if code != 0 || !strings.Contains(out, "no containers of runner "+rp.runnerID) {
		t.Errorf("second down: exit %d\n%s\n%s", code, out, errb)
	}

	// A config whose state_dir no runner ever used: nothing to do.
	fresh := filepath.Join(t.TempDir(), "plugins.hcl")
	writeFile(t, fresh, hcl("", helloPlugin(images["hello"], "hi")))
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	b, err := exec.CommandContext(ctx, runnerBin, "down", "-c", fresh).CombinedOutput()
	if err != nil || !strings.Contains(string(b), "nothing to remove") {
		t.Errorf("down on an unused state_dir: %v\n%s", err, b)
	}
}

package integration

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os/exec"
	"strings"
	"testing"
	"time"
)

func plugin(name, image, extra string) string {
	return fmt.Sprintf("plugin %q {\n  image = %q\n  port = 8080\n%s}\n", name, image, extra)
}

type problem struct {
	Status int    `json:"status"`
	Title  string `json:"title"`
	Detail string `json:"detail"`
}

func get(t *testing.T, url string) (*http.Response, string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp, string(b)
}

func httpPost(url, body string) (int, error) {
	resp, err := http.Post(url, "text/plain", strings.NewReader(body))
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, resp.Body)
	return resp.StatusCode, nil
}

func wantProblem(t *testing.T, resp *http.Response, body string, status int) problem {
	t.Helper()
	if resp.StatusCode != status {
		t.Fatalf("status = %d, want %d; body %s", resp.StatusCode, status, body)
	}
	if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "application/problem+json") {
		t.Fatalf("Content-Type = %q, want application/problem+json", ct)
	}
	var p problem
	if err := json.Unmarshal([]byte(body), &p); err != nil || p.Status != status {
		t.Fatalf("problem body %q: %v", body, err)
	}
	return p
}

// TestEndToEnd runs one runner with hello, two slow plugins and a plugin whose image does
// not exist, and checks what a user of the proxy and an operator with `docker inspect`
// see; then SIGTERM with a request in flight.
func TestEndToEnd(t *testing.T) {
	t.Parallel()
	cfg := hcl("",
		plugin("hello", images["hello"], `  env = { GREETING = "hi" }
  supervisor {
    cpus = 0.5
    memory = "64MiB"
    pids = 64
    health { path = "/healthz" }
  }
`),
		plugin("slow", images["slow"], "  supervisor {\n    request_timeout = \"1s\"\n  }\n"),
		plugin("deaf", images["slow"], ""),
		plugin("ghost", "xcore-test/does-not-exist:"+testRunID, "  pull = \"never\" # a local test image: no registry to ask\n"),
	)
	rp := startRunner(t, cfg)
	t.Logf("runner up → all plugins ready or failed: %s", rp.startup)

	t.Run("greeting", func(t *testing.T) {
		resp, body := get(t, rp.url("/plugins/hello/"))
		if resp.StatusCode != 200 || body != "hi from hello\n" {
			t.Fatalf("GET /plugins/hello/ = %d %q", resp.StatusCode, body)
		}
	})

	t.Run("echo with prefix stripped and forwarded headers", func(t *testing.T) {
		resp, body := get(t, rp.url("/plugins/hello/echo/a/b?x=1"))
		if resp.StatusCode != 200 {
			t.Fatalf("status %d: %s", resp.StatusCode, body)
		}
		var e struct {
			Method, Path, Query string
			Headers             map[string][]string
		}
		if err := json.Unmarshal([]byte(body), &e); err != nil {
			t.Fatal(err)
		}
		if e.Path != "/echo/a/b" || e.Query != "x=1" || e.Method != "GET" {
			t.Errorf("plugin saw %s %s?%s, want GET /echo/a/b?x=1", e.Method, e.Path, e.Query)
		}
		for h, want := range map[string]string{"X-Forwarded-Prefix": "/plugins/hello", "X-Forwarded-Proto": "http", "X-Forwarded-For": "127.0.0.1"} {
			if got := strings.Join(e.Headers[h], ","); got != want {
				t.Errorf("%s = %q, want %q", h, got, want)
			}
		}
		if len(e.Headers["X-Request-Id"]) != 1 || e.Headers["X-Request-Id"][0] == "" {
			t.Errorf("X-Request-Id missing: %v", e.Headers)
		}
	})

	t.Run("unknown plugin is 404", func(t *testing.T) {
		resp, body := get(t, rp.url("/plugins/nope/"))
		wantProblem(t, resp, body, 404)
	})

	t.Run("missing image is reported and 503, others serve", func(t *testing.T) {
		if !strings.Contains(rp.out(), "FAILED") || !strings.Contains(rp.out(), "does-not-exist") {
			t.Errorf("runner did not report the missing image:\n%s", rp.out())
		}
		resp, body := get(t, rp.url("/plugins/ghost/"))
		p := wantProblem(t, resp, body, 503)
		if !strings.Contains(p.Detail, "not found") {
			t.Errorf("detail %q does not say the image was not found", p.Detail)
		}
		// Failed: it will not serve until its config changes, so no Retry-After that
		// would invite a client to hammer the runner every second.
		if ra := resp.Header.Get("Retry-After"); ra != "" {
			t.Errorf("a failed plugin's 503 has Retry-After %q", ra)
		}
	})

	t.Run("request_timeout is 504 within timeout+10%", func(t *testing.T) {
		begin := time.Now()
		resp, body := get(t, rp.url("/plugins/slow/?delay=5s"))
		took := time.Since(begin)
		wantProblem(t, resp, body, 504)
		if took > 1100*time.Millisecond {
			t.Errorf("504 after %s, want ≤ 1.1s (request_timeout 1s + 10%%)", took)
		}
	})

	t.Run("plugin not listening is 502", func(t *testing.T) {
		resp, _ := get(t, rp.url("/plugins/deaf/stop-listening"))
		if resp.StatusCode != 200 {
			t.Fatalf("stop-listening: %d", resp.StatusCode)
		}
		resp, body := get(t, rp.url("/plugins/deaf/"))
		wantProblem(t, resp, body, 502)
	})

	t.Run("container limits and hardening", func(t *testing.T) {
		var insp []struct {
			Name   string
			Config struct {
				User   string
				Labels map[string]string
			}
			HostConfig struct {
				NanoCpus       int64
				Memory         int64
				MemorySwap     int64
				PidsLimit      int64
				ReadonlyRootfs bool
				Tmpfs          map[string]string
				CapDrop        []string
				CapAdd         []string
				SecurityOpt    []string
				Privileged     bool
				NetworkMode    string
				PidMode        string
				IpcMode        string
				Binds          []string
				PortBindings   map[string][]struct{ HostIp, HostPort string }
			}
			Mounts []struct{ Type, Source, Destination string }
		}
		raw := docker(t, "inspect", rp.container("hello"))
		if err := json.Unmarshal([]byte(raw), &insp); err != nil || len(insp) != 1 {
			t.Fatalf("inspect: %v", err)
		}
		c, hc := insp[0], insp[0].HostConfig
		if want := "/xcore-hello-1-" + rp.runnerID; c.Name != want {
			t.Errorf("name %q, want %s", c.Name, want)
		}
		if hc.NanoCpus != 5e8 || hc.Memory != 64<<20 || hc.MemorySwap != 64<<20 || hc.PidsLimit != 64 {
			t.Errorf("limits: NanoCpus=%d Memory=%d MemorySwap=%d PidsLimit=%d", hc.NanoCpus, hc.Memory, hc.MemorySwap, hc.PidsLimit)
		}
		if !hc.ReadonlyRootfs || hc.Tmpfs["/tmp"] == "" {
			t.Errorf("rootfs: ReadonlyRootfs=%v Tmpfs=%v", hc.ReadonlyRootfs, hc.Tmpfs)
		}
		if len(hc.CapDrop) != 1 || hc.CapDrop[0] != "ALL" || len(hc.CapAdd) != 0 || hc.Privileged {
			t.Errorf("caps: drop=%v add=%v privileged=%v", hc.CapDrop, hc.CapAdd, hc.Privileged)
		}
		if len(hc.SecurityOpt) != 1 || hc.SecurityOpt[0] != "no-new-privileges" {
			t.Errorf("SecurityOpt = %v", hc.SecurityOpt)
		}
		if c.Config.User != "65532:65532" {
			t.Errorf("User = %q", c.Config.User)
		}
		if hc.NetworkMode != "xcore-"+rp.runnerID || hc.PidMode == "host" || hc.IpcMode == "host" {
			t.Errorf("namespaces: network=%q pid=%q ipc=%q", hc.NetworkMode, hc.PidMode, hc.IpcMode)
		}
		if len(hc.Binds) != 0 || len(c.Mounts) != 0 {
			t.Errorf("mounts: binds=%v mounts=%v", hc.Binds, c.Mounts)
		}
		for port, bs := range hc.PortBindings {
			for _, b := range bs {
				if b.HostIp != "127.0.0.1" {
					t.Errorf("port %s bound on %q, want 127.0.0.1 only", port, b.HostIp)
				}
			}
		}
		if len(hc.PortBindings) != 1 {
			t.Errorf("PortBindings = %v, want exactly the plugin port", hc.PortBindings)
		}
		for k, want := range map[string]string{"io.xcore.runner": rp.runnerID, "io.xcore.plugin": "hello", "io.xcore.generation": "1"} {
			if got := c.Config.Labels[k]; got != want {
				t.Errorf("label %s = %q, want %q", k, got, want)
			}
		}
		if !strings.HasPrefix(c.Config.Labels["io.xcore.image"], "sha256:") {
			t.Errorf("label io.xcore.image = %q", c.Config.Labels["io.xcore.image"])
		}
		// The network has inter-container traffic disabled.
		if icc := docker(t, "network", "inspect", "-f", `{{index .Options "com.docker.network.bridge.enable_icc"}}`, "xcore-"+rp.runnerID); icc != "false" {
			t.Errorf("network enable_icc = %q, want false", icc)
		}
	})

	t.Run("plugins cannot reach each other", func(t *testing.T) {
		ipOf := func(plugin string) string {
			return docker(t, "inspect", "-f", `{{(index .NetworkSettings.Networks "xcore-`+rp.runnerID+`").IPAddress}}`, rp.container(plugin))
		}
		helloIP, slowIP := ipOf("hello"), ipOf("slow")
		// The probe works: slow reaches its own port on its own address.
		if _, body := get(t, rp.url("/plugins/slow/dial?timeout=500ms&addr="+slowIP+":8080")); !strings.HasPrefix(body, "connected") {
			t.Fatalf("slow cannot even reach itself (%s): %s", slowIP, body)
		}
		// From inside slow, hello's address on the shared network is unreachable.
		if _, body := get(t, rp.url("/plugins/slow/dial?timeout=500ms&addr="+helloIP+":8080")); !strings.HasPrefix(body, "error") {
			t.Errorf("slow reached hello at %s:8080: %s", helloIP, body)
		}
	})

	t.Run("SIGTERM drains in-flight requests and removes everything", func(t *testing.T) {
		type result struct {
			status int
			body   string
			err    error
		}
		inflight := make(chan result, 1)
		go func() {
			resp, err := http.Get(rp.url("/plugins/slow/?delay=700ms"))
			if err != nil {
				inflight <- result{err: err}
				return
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			inflight <- result{status: resp.StatusCode, body: string(b)}
		}()
		// Wait until the request is at the plugin, not merely sent.
		ctr := rp.container("slow")
		eventually(t, 5*time.Second, "request in flight at the plugin", func() bool {
			out, _ := exec.Command("docker", "logs", ctr).CombinedOutput()
			return strings.Contains(string(out), "sleeping 700ms")
		})
		if err := rp.terminate(time.Minute); err != nil {
			t.Errorf("runner exit after SIGTERM: %v\n%s", err, rp.errOut())
		}
		r := <-inflight
		if r.err != nil || r.status != 200 || !strings.HasPrefix(r.body, "slept") {
			t.Errorf("in-flight request: status=%d body=%q err=%v", r.status, r.body, r.err)
		}
		if ids := rp.containers(); len(ids) != 0 {
			t.Errorf("containers left after SIGTERM: %v", ids)
		}
		if out := docker(t, "network", "ls", "-q", "--filter", "name=xcore-"+rp.runnerID); out != "" {
			t.Errorf("network left after SIGTERM: %s", out)
		}
	})
}

// TestReachAddress serves hello by dialling the container's address on the runner
// network: nothing is published on the host.
func TestReachAddress(t *testing.T) {
	t.Parallel()
	rp := startRunner(t, hcl("  reach = \"address\"\n", plugin("hello", images["hello"], "")))
	resp, body := get(t, rp.url("/plugins/hello/"))
	if resp.StatusCode != 200 || !strings.Contains(body, "from hello") {
		t.Fatalf("GET /plugins/hello/ = %d %q", resp.StatusCode, body)
	}
	if ports := docker(t, "inspect", "-f", "{{json .HostConfig.PortBindings}}", rp.container("hello")); ports != "{}" && ports != "null" {
		t.Errorf("reach=address published ports: %s", ports)
	}
	if err := rp.terminate(time.Minute); err != nil {
		t.Errorf("exit: %v", err)
	}
	if ids := rp.containers(); len(ids) != 0 {
		t.Errorf("containers left: %v", ids)
	}
}

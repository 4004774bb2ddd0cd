package integration

import (
	"encoding/json"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// TestSlowlorisPublicListener checks the limits of the runner's public listener: a
// 100 KiB header is refused with 431, and 50 connections trickling a header are all
// closed at ReadHeaderTimeout (10s) while other clients are served.
func TestSlowlorisPublicListener(t *testing.T) {
	t.Parallel()
	rp := startRunner(t, hcl("", plugin("hello", images["hello"], "")))

	req, _ := http.NewRequest(http.MethodGet, rp.url("/plugins/hello/"), nil)
	req.Header.Set("X-Big", strings.Repeat("a", 100<<10))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusRequestHeaderFieldsTooLarge {
		t.Errorf("100 KiB header: %d, want 431", resp.StatusCode)
	}

	const conns = 50
	const readHeaderTimeout = 10 * time.Second
	begin := time.Now()
	closedAfter := make([]time.Duration, conns)
	var wg sync.WaitGroup
	for i := range conns {
		c, err := net.Dial("tcp", rp.addr)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		_ = c.SetDeadline(time.Now().Add(16 * time.Second)) // the test's own bound
		wg.Go(func() {
			_, _ = io.Copy(io.Discard, c) // returns when the runner closes the connection
			closedAfter[i] = time.Since(begin)
		})
		wg.Go(func() {
			if _, err := io.WriteString(c, "GET /plugins/hello/ HTTP/1.1\r\nHost: x\r\n"); err != nil {
				return
			}
			for n := 0; n < 30; n++ { // a header line every 500ms: at most 15s
				if _, err := fmt.Fprintf(c, "X-Slow-%d: %d\r\n", n, n); err != nil {
					return
				}
				time.Sleep(500 * time.Millisecond)
			}
		})
	}
	if resp, body := get(t, rp.url("/plugins/hello/")); resp.StatusCode != 200 {
		t.Errorf("while 50 slow clients hold connections: %d %s", resp.StatusCode, body)
	}
	wg.Wait()
	var latest time.Duration
	for i, d := range closedAfter {
		latest = max(latest, d)
		if d < readHeaderTimeout-time.Second || d > readHeaderTimeout+3*time.Second {
			t.Errorf("slow connection %d closed after %v, want about %v", i, d.Round(time.Millisecond), readHeaderTimeout)
		}
	}
	t.Logf("%d slowloris connections closed by the runner within %v", conns, latest.Round(time.Millisecond))
}

// TestReachFromInsidePlugin dials, from inside a bridge plugin, every runner listener
// and the other plugin: only the plugin's sidecar endpoint (and itself) answer. The
// public listener, from the host, serves no admin route.
func TestReachFromInsidePlugin(t *testing.T) {
	t.Parallel()
	rp := startRunner(t, hcl("", plugin("slow", images["slow"], ""), plugin("hello", images["hello"], "")))
	netw := "xcore-" + rp.runnerID
	gw, docker0 := hdGateway(t, netw), hdGateway(t, "bridge")
	ipOf := func(plugin string) string {
		return docker(t, "inspect", "-f", `{{(index .NetworkSettings.Networks "`+netw+`").IPAddress}}`, rp.container(plugin))
	}
	helloIP, slowIP := ipOf("hello"), ipOf("slow")
	helloPublished := docker(t, "inspect", "-f", `{{(index (index .NetworkSettings.Ports "8080/tcp") 0).HostPort}}`, rp.container("hello"))
	sidecar, err := os.ReadFile(filepath.Join(rp.dir, ".runner", "sidecar-port"))
	if err != nil {
		t.Fatal(err)
	}
	proxyPort := hdPort(t, rp.addr)

	type target struct {
		what, addr string
		reachable  bool
	}
	targets := []target{
		{"own address (control)", slowIP + ":8080", true},
		{"sidecar on the gateway (control)", gw + ":" + strings.TrimSpace(string(sidecar)), true},
		{"public proxy on the gateway", gw + ":" + proxyPort, false},
		{"public proxy on 127.0.0.1 (the container's own loopback)", "127.0.0.1:" + proxyPort, false},
		{"public proxy on docker0", docker0 + ":" + proxyPort, false},
		{"other plugin's container address", helloIP + ":8080", false},
		{"other plugin's published port on the gateway", gw + ":" + helloPublished, false},
	}
	if admin := hdAdminAddr(rp); admin != "" {
		ap := hdPort(t, admin)
		targets = append(targets,
			target{"admin API on the gateway", gw + ":" + ap, false},
			target{"admin API on 127.0.0.1", "127.0.0.1:" + ap, false},
			target{"admin API on docker0", docker0 + ":" + ap, false})
	} else {
		t.Log("this runner build serves no admin API: nothing to dial")
	}
	// From the host: the public listener has no admin routes.
	for _, path := range []string{"/", "/v1/plugins", "/v1/runner", "/metrics", "/plugins/"} {
		resp, body := get(t, rp.url(path))
		wantProblem(t, resp, body, http.StatusNotFound)
	}
	for _, tc := range targets {
		t.Run(tc.what, func(t *testing.T) {
			t.Parallel()
			_, body := get(t, rp.url("/plugins/slow/dial?timeout=1s&addr="+url.QueryEscape(tc.addr)))
			if got := strings.HasPrefix(body, "connected"); got != tc.reachable {
				t.Errorf("from inside slow, %s (%s): %q, want reachable=%v", tc.what, tc.addr, strings.TrimSpace(body), tc.reachable)
			}
		})
	}
}

// hdInspect is what TestSurfaceContainers reads of `docker inspect`.
type hdInspect struct {
	ID     string
	Name   string
	Config struct {
		User   string
		Env    []string
		Labels map[string]string
	}
	HostConfig struct {
		NanoCpus       int64
		Memory         int64
		MemorySwap     int64
		PidsLimit      *int64
		ReadonlyRootfs bool
		Tmpfs          map[string]string
		CapDrop        []string
		CapAdd         []string
		SecurityOpt    []string
		Privileged     bool
		NetworkMode    string
		PidMode        string
		IpcMode        string
		UTSMode        string
		UsernsMode     string
		Binds          []string
		Devices        []any
		OomKillDisable *bool
		Runtime        string
		PortBindings   map[string][]struct{ HostIp, HostPort string }
		LogConfig      struct {
			Type   string
			Config map[string]string
		}
	}
	Mounts []struct{ Type, Source, Destination string }
}

// TestSurfaceContainers asserts the hardening of every container the runner creates:
// a default plugin, a network = "none" plugin with a service, and one running as root
// with allow_root = true.
func TestSurfaceContainers(t *testing.T) {
	t.Parallel()
	rp := startRunner(t, hcl("",
		"service \"kv\" {\n  builtin = \"kv\"\n}\n",
		plugin("hello", images["hello"], ""),
		notesPlugin("notes", "    network = \"none\"\n", "kv"),
		plugin("rooted", images["slow"], "  supervisor {\n    user = \"0\"\n    allow_root = true\n  }\n"),
	))
	for _, path := range []string{"/plugins/hello/", "/plugins/notes/healthz", "/plugins/rooted/healthz"} {
		if resp, body := get(t, rp.url(path)); resp.StatusCode != 200 {
			t.Fatalf("GET %s: %d %s", path, resp.StatusCode, body)
		}
	}
	if !strings.Contains(strings.ToLower(rp.errOut()), "runs as root") {
		t.Errorf("no warning about the root plugin on the runner's stderr:\n%s", rp.errOut())
	}

	ids := rp.containers()
	if len(ids) != 3 {
		t.Fatalf("containers %v, want 3", ids)
	}
	raw := docker(t, append([]string{"inspect"}, ids...)...)
	// (The engine's own paths — LogPath, HostsPath, SandboxKey — are under /var/lib/docker
	// and /var/run/docker; the mounts are checked one by one below.)
	for _, bad := range []string{"docker.sock", "DOCKER_HOST", "DOCKER_CERT_PATH"} {
		if strings.Contains(raw, bad) {
			t.Errorf("docker inspect of the plugins mentions %q", bad)
		}
	}
	var all []hdInspect
	if err := json.Unmarshal([]byte(raw), &all); err != nil {
		t.Fatal(err)
	}
	for _, c := range all {
		plugin, hc := c.Config.Labels["io.xcore.plugin"], c.HostConfig
		t.Run(plugin, func(t *testing.T) {
			if len(hc.CapDrop) != 1 || hc.CapDrop[0] != "ALL" || len(hc.CapAdd) != 0 {
				t.Errorf("CapDrop %v CapAdd %v, want [ALL] and none", hc.CapDrop, hc.CapAdd)
			}
			if len(hc.SecurityOpt) != 1 || hc.SecurityOpt[0] != "no-new-privileges" {
				t.Errorf("SecurityOpt %v, want [no-new-privileges] (nothing unconfined)", hc.SecurityOpt)
			}
			if hc.Privileged || len(hc.Devices) != 0 || (hc.OomKillDisable != nil && *hc.OomKillDisable) {
				t.Errorf("Privileged %v Devices %v OomKillDisable %v", hc.Privileged, hc.Devices, hc.OomKillDisable)
			}
			if !hc.ReadonlyRootfs || !strings.Contains(hc.Tmpfs["/tmp"], "noexec") || !strings.Contains(hc.Tmpfs["/tmp"], "nosuid") {
				t.Errorf("ReadonlyRootfs %v Tmpfs %v", hc.ReadonlyRootfs, hc.Tmpfs)
			}
			switch user := c.Config.User; {
			case plugin == "rooted":
				if user != "0" {
					t.Errorf("User %q, want 0 (allow_root)", user)
				}
			case user == "" || user == "0" || user == "root" || strings.HasPrefix(user, "0:") || strings.HasPrefix(user, "root:"):
				t.Errorf("User %q: root", user)
			}
			if hc.PidsLimit == nil || *hc.PidsLimit <= 0 {
				t.Errorf("PidsLimit %v", hc.PidsLimit)
			}
			if hc.Memory <= 0 || hc.MemorySwap != hc.Memory || hc.NanoCpus <= 0 {
				t.Errorf("Memory %d MemorySwap %d NanoCpus %d", hc.Memory, hc.MemorySwap, hc.NanoCpus)
			}
			for mode, v := range map[string]string{"NetworkMode": hc.NetworkMode, "PidMode": hc.PidMode, "IpcMode": hc.IpcMode, "UTSMode": hc.UTSMode, "UsernsMode": hc.UsernsMode} {
				if v == "host" || strings.HasPrefix(v, "container:") {
					t.Errorf("%s %q", mode, v)
				}
			}
			if hc.Runtime != "runc" && hc.Runtime != "" {
				t.Errorf("Runtime %q without a runtime configured", hc.Runtime)
			}
			if len(hc.Binds) != 0 {
				t.Errorf("Binds %v", hc.Binds)
			}
			if plugin == "notes" {
				if hc.NetworkMode != "none" {
					t.Errorf("NetworkMode %q, want none", hc.NetworkMode)
				}
				if len(c.Mounts) != 1 || c.Mounts[0].Destination != "/run/xcore" || c.Mounts[0].Type != "bind" ||
					!strings.HasPrefix(c.Mounts[0].Source, rp.dir+string(os.PathSeparator)) {
					t.Errorf("Mounts %+v, want only the runner's own folder at /run/xcore", c.Mounts)
				}
				if len(hc.PortBindings) != 0 {
					t.Errorf("PortBindings %v without a network", hc.PortBindings)
				}
			} else {
				if hc.NetworkMode != "xcore-"+rp.runnerID {
					t.Errorf("NetworkMode %q, want the runner network", hc.NetworkMode)
				}
				if len(c.Mounts) != 0 {
					t.Errorf("Mounts %+v, want none", c.Mounts)
				}
				if len(hc.PortBindings) != 1 {
					t.Errorf("PortBindings %v, want the plugin port only", hc.PortBindings)
				}
				for p, bs := range hc.PortBindings {
					for _, b := range bs {
						if b.HostIp != "127.0.0.1" {
							t.Errorf("port %s published on %q, want 127.0.0.1 only", p, b.HostIp)
						}
					}
				}
			}
			if lc := hc.LogConfig; lc.Type != "json-file" || lc.Config["max-size"] == "" || lc.Config["max-file"] == "" {
				t.Errorf("LogConfig %+v, want json-file with max-size and max-file", lc)
			}
		})
	}
}

// TestRuntimeRefused: runtime = "runsc" on an engine without gVisor fails that plugin
// with a message naming the runtime; the other plugins serve.
func TestRuntimeRefused(t *testing.T) {
	t.Parallel()
	if runtimes := docker(t, "info", "-f", "{{json .Runtimes}}"); strings.Contains(runtimes, `"runsc"`) {
		t.Skip("this engine has runsc: nothing to refuse")
	}
	rp := startRunner(t, hcl("",
		plugin("gvisor", images["hello"], "  supervisor {\n    runtime = \"runsc\"\n    restart {\n      policy = \"never\"\n    }\n  }\n"),
		plugin("hello", images["hello"], "")))
	var failed string
	for _, line := range strings.Split(rp.out(), "\n") {
		if strings.Contains(line, "FAILED") && strings.Contains(line, "gvisor") {
			failed = line
		}
	}
	if !strings.Contains(failed, "runsc") {
		t.Errorf("no FAILED line for gvisor naming the runtime runsc:\n%s", rp.out())
	}
	t.Logf("runner says: %s", strings.TrimSpace(failed))
	resp, body := get(t, rp.url("/plugins/gvisor/"))
	if p := wantProblem(t, resp, body, 503); !strings.Contains(p.Detail, "runsc") {
		t.Errorf("503 detail %q does not name the runtime", p.Detail)
	}
	if resp, _ := get(t, rp.url("/plugins/hello/")); resp.StatusCode != 200 {
		t.Errorf("hello: %d", resp.StatusCode)
	}
}

// TestSecretsNeverLeak runs a url service whose headers come from env() and file(),
// exercises it (success, upstream down, a rejected reload), and greps every output
// for the values: the runner's stdout and stderr (debug level), `runner plan`,
// `runner ps --json`, the admin API and status page, docker inspect of every container
// and of the network, and the state_dir's files. Then the modes of the state files.
func TestSecretsNeverLeak(t *testing.T) {
	t.Parallel()
	envSecret := "env-s3cret-" + testRunID
	fileSecret := "file-s3cret-" + testRunID
	var mu sync.Mutex
	var seen []string
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		seen = append(seen, r.Header.Get("Authorization")+"|"+r.Header.Get("X-Api-Key"))
		mu.Unlock()
		fmt.Fprint(w, "a quote")
	}))
	defer up.Close()
	svc := func(keyFile string) string {
		return fmt.Sprintf("service \"quotes\" {\n  url = %q\n  headers = {\n    Authorization = \"Bearer ${env(\"XCORE_TEST_SECRET\")}\"\n    X-Api-Key = trimspace(file(%q))\n  }\n}\n", up.URL, keyFile)
	}
	cfg := func(svcBlock string) string {
		return hcl("  watch = true\n", svcBlock, notesPlugin("notes", "", "quotes"), plugin("hello", images["hello"], ""))
	}
	env := []string{"XCORE_TEST_SECRET=" + envSecret}
	rp := startRunnerWithEnv(t, cfg(svc("key.txt")), env,
		map[string]string{"key.txt": fileSecret + "\n", "key-nl.txt": fileSecret + "\n\n"}, "--log-level", "debug")

	if code, body := do(t, "GET", rp.url("/plugins/notes/quote"), ""); code != 200 || body != "a quote" {
		t.Fatalf("GET /quote: %d %q", code, body)
	}
	mu.Lock()
	if len(seen) != 1 || seen[0] != "Bearer "+envSecret+"|"+fileSecret {
		t.Errorf("upstream saw %q: the credentials were not added", seen)
	}
	mu.Unlock()

	// A reload the config rejects, its diagnostics logged: a header value with a line
	// break (file() without trimspace).
	writeFile(t, rp.config(), cfg(strings.Replace(svc("key-nl.txt"), "trimspace(file(\"key-nl.txt\"))", "file(\"key-nl.txt\")", 1)))
	rp.waitLog(30*time.Second, "config reload rejected")
	writeFile(t, rp.config(), cfg(svc("key.txt")))
	rp.waitLog(30*time.Second, "config reloaded")

	// The upstream down: the sidecar's 502 must not carry the credentials either.
	up.Close()
	code, errBody := do(t, "GET", rp.url("/plugins/notes/quote"), "")
	if code != 502 {
		t.Errorf("upstream down: %d %s, want 502", code, errBody)
	}

	outputs := map[string]string{"502 body": errBody}
	plan, err := hdCLI(t, rp.dir, env, "plan", "-c", rp.config())
	if err != nil && !strings.Contains(plan, "unchanged") {
		t.Errorf("runner plan: %v\n%s", err, plan)
	}
	outputs["runner plan"] = plan
	if admin := hdAdminAddr(rp); admin != "" {
		tokenFile := filepath.Join(rp.dir, ".runner", "admin.token")
		ps, err := hdCLI(t, rp.dir, env, "ps", "--json", "-c", rp.config(), "--admin", "http://"+admin, "--token-file", tokenFile)
		if err != nil {
			t.Errorf("runner ps --json: %v\n%s", err, ps)
		}
		outputs["runner ps --json"] = ps
		token, err := os.ReadFile(tokenFile)
		if err != nil {
			t.Fatal(err)
		}
		for _, path := range []string{"/", "/plugins/notes", "/v1/plugins", "/v1/plugins/notes", "/v1/runner", "/metrics"} {
			code, body := do(t, "GET", "http://"+admin+path, "", "Authorization", "Bearer "+strings.TrimSpace(string(token)))
			if code != 200 {
				t.Errorf("admin GET %s: %d", path, code)
			}
			outputs["admin "+path] = body
		}
	} else {
		t.Log("this runner build serves no admin API: ps --json and the status page not checked")
	}
	for _, id := range rp.containers() {
		outputs["docker inspect "+id] = docker(t, "inspect", id)
		outputs["docker logs "+id] = hdDockerLogs(t, id)
	}
	outputs["docker network inspect"] = docker(t, "network", "inspect", "xcore-"+rp.runnerID)
	stateDir := filepath.Join(rp.dir, ".runner")
	_ = filepath.WalkDir(stateDir, func(path string, d fs.DirEntry, err error) error {
		if err == nil && d.Type().IsRegular() {
			if b, err := os.ReadFile(path); err == nil {
				outputs["state file "+strings.TrimPrefix(path, rp.dir)] = string(b)
			}
		}
		return nil
	})
	if err := rp.terminate(time.Minute); err != nil {
		t.Errorf("terminate: %v", err)
	}
	outputs["runner stdout"] = rp.out()
	outputs["runner stderr"] = rp.errOut()
	for what, text := range outputs {
		for _, secret := range []string{envSecret, fileSecret} {
			if strings.Contains(text, secret) {
				t.Errorf("%s contains a secret header value", what)
			}
		}
	}
	t.Logf("grepped %d outputs for the env() and file() values", len(outputs))

	// Modes: state_dir 0700, its secrets 0600.
	for path, want := range map[string]os.FileMode{
		".runner":             0o700 | os.ModeDir,
		".runner/secret":      0o600,
		".runner/runner-id":   0o600,
		".runner/admin.token": 0o600,
	} {
		fi, err := os.Stat(filepath.Join(rp.dir, path))
		if os.IsNotExist(err) && path == ".runner/admin.token" && hdAdminAddr(rp) == "" {
			continue
		}
		if err != nil {
			t.Errorf("%s: %v", path, err)
			continue
		}
		if got := fi.Mode() & (os.ModeDir | os.ModePerm); got != want {
			t.Errorf("%s mode %v, want %v", path, got, want)
		}
	}
}

// hdDockerLogs returns a container's stdout and stderr as the engine logged them.
func hdDockerLogs(t *testing.T, id string) string {
	t.Helper()
	out, err := exec.Command("docker", "logs", id).CombinedOutput()
	if err != nil {
		t.Errorf("docker logs %s: %v\n%s", id, err, out)
	}
	return string(out)
}

// TestFloodLogs makes a plugin write over 100 MB of log lines (slow logs each request
// path; 50 KB paths) and checks that the runner's memory does not follow and that the
// engine keeps the log bounded (json-file max-size × max-file).
func TestFloodLogs(t *testing.T) {
	t.Parallel()
	rp := startRunner(t, hcl("", plugin("slow", images["slow"], "")))
	pid := rp.cmd.Process.Pid
	before := hdRSSKiB(t, pid)

	const (
		pathLen  = 50 << 10
		requests = 2100 // × ~50 KiB ≈ 105 MB of log lines
		workers  = 8
	)
	long := "/plugins/slow/" + strings.Repeat("f", pathLen)
	var next, failed atomic.Int64
	var peak atomic.Int64
	var wg sync.WaitGroup
	client := &http.Client{Timeout: 30 * time.Second}
	for range workers {
		wg.Go(func() {
			for next.Add(1) <= requests {
				resp, err := client.Get(rp.url(long))
				if err != nil {
					failed.Add(1)
					continue
				}
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.StatusCode != 200 {
					failed.Add(1)
				}
			}
		})
	}
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	deadline := time.After(5 * time.Minute)
sample:
	for {
		select {
		case <-done:
			break sample
		case <-deadline:
			t.Fatal("flood not done within 5m")
		case <-time.After(200 * time.Millisecond):
			peak.Store(max(peak.Load(), hdRSSKiB(t, pid)))
		}
	}
	after := hdRSSKiB(t, pid)
	peak.Store(max(peak.Load(), after))
	if n := failed.Load(); n != 0 {
		t.Errorf("%d of %d flood requests failed", n, requests)
	}
	growth := peak.Load() - before
	t.Logf("runner VmRSS %d KiB before, peak %d KiB, after %d KiB (+%d KiB) for %d MB of plugin logs",
		before, peak.Load(), after, growth, int64(requests)*pathLen/1e6)
	if growth >= 20<<10 {
		t.Errorf("runner RSS grew by %d KiB while a plugin flooded its log, want < 20 MiB", growth)
	}
	// The engine keeps at most max-file files of max-size.
	id := rp.container("slow")
	var total int64
	if logPath := docker(t, "inspect", "-f", "{{.LogPath}}", id); logPath != "" {
		matches, _ := filepath.Glob(logPath + "*")
		for _, m := range matches {
			if fi, err := os.Stat(m); err == nil {
				total += fi.Size()
			}
		}
		if len(matches) == 0 {
			t.Logf("log files of %s not readable here (%s): size not checked", id, logPath)
		} else if total > 3*10<<20+(1<<20) {
			t.Errorf("plugin log files take %d bytes, want ≤ max-file × max-size (30 MiB)", total)
		} else {
			t.Logf("plugin log files: %d bytes in %d files", total, len(matches))
		}
	}
}

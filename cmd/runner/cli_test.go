package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/xcore/runner/runner"
	"github.com/xcore/runner/runner/admin"
)

// fakeRunner is the runner behind an in-process admin API.
type fakeRunner struct {
	mu        sync.Mutex
	statuses  []runner.Status
	reload    runner.ReloadResult
	restarted []string
	subs      []chan runner.Event
}

func (f *fakeRunner) Statuses() []runner.Status { return f.statuses }
func (f *fakeRunner) Status(name string) (runner.Status, error) {
	for _, s := range f.statuses {
		if s.Name == name {
			return s, nil
		}
	}
	return runner.Status{}, fmt.Errorf("%s: %w", name, runner.ErrUnknownPlugin)
}
func (f *fakeRunner) Subscribe() (<-chan runner.Event, func()) {
	ch := make(chan runner.Event, 8)
	f.mu.Lock()
	f.subs = append(f.subs, ch)
	f.mu.Unlock()
	return ch, func() {}
}
func (f *fakeRunner) publish(ev runner.Event) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, ch := range f.subs {
		ch <- ev
	}
}
func (f *fakeRunner) subscribed() bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.subs) > 0
}
func (f *fakeRunner) ReloadNow(context.Context) (runner.ReloadResult, error) { return f.reload, nil }
func (f *fakeRunner) Restart(name string) error {
	if _, err := f.Status(name); err != nil {
		return err
	}
	f.mu.Lock()
	f.restarted = append(f.restarted, name)
	f.mu.Unlock()
	return nil
}
func (f *fakeRunner) Logs(ctx context.Context, name string, follow bool, tail int) (io.ReadCloser, error) {
	if _, err := f.Status(name); err != nil {
		return nil, err
	}
	return io.NopCloser(strings.NewReader(fmt.Sprintf("log of %s (follow=%v tail=%d)\n", name, follow, tail))), nil
}

func (f *fakeRunner) PreviousLogs(name string) (runner.PreviousLog, error) {
	if _, err := f.Status(name); err != nil {
		return runner.PreviousLog{}, err
	}
	return runner.PreviousLog{Container: "xcore-" + name + "-1-r", Generation: 1, Removed: time.Unix(0, 0), Text: "last words of " + name + "\n"}, nil
}

var _ admin.Runner = (*fakeRunner)(nil)

const cliToken = "cli-test-token"

// adminServer serves the admin API over f and returns the flags that point the CLI at it.
func adminServer(t *testing.T, f *fakeRunner) (*httptest.Server, []string) {
	t.Helper()
	srv := httptest.NewServer(admin.New(admin.Options{Runner: f, Token: cliToken, Logger: slog.New(slog.DiscardHandler)}))
	t.Cleanup(srv.Close)
	tokFile := filepath.Join(t.TempDir(), "admin.token")
	if err := os.WriteFile(tokFile, []byte(cliToken+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return srv, []string{"--admin", srv.URL, "--token-file", tokFile}
}

var fakeStatuses = []runner.Status{
	{Name: "hello", State: runner.StateHealthy, Generation: 12, Image: "xcore-examples/hello:latest", Container: "c1", StartedAt: time.Now().Add(-90 * time.Second), Took: 997 * time.Millisecond, Restarts: 2, Ready: 2, Replicas: 3},
	{Name: "reports-long-name", State: runner.StateFailed, LastError: "image \"x\" not found\nlocally"},
}

func TestPs(t *testing.T) {
	t.Parallel()
	_, flags := adminServer(t, &fakeRunner{statuses: fakeStatuses})
	code, out, errb := runCLI(t, append([]string{"ps"}, flags...)...)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errb)
	}
	lines := strings.Split(strings.TrimRight(out, "\n"), "\n")
	want := []string{
		"NAME               STATE    READY  GEN  UPTIME  RESTARTS  IMAGE                        LAST ERROR",
		"hello              healthy  2/3    12   1m30s   2         xcore-examples/hello:latest  ",
		"reports-long-name  failed   -      -    -       0         -                            image \"x\" not found locally",
	}
	if !reflect.DeepEqual(lines, want) {
		t.Errorf("ps:\n%s\nwant:\n%s", out, strings.Join(want, "\n"))
	}
	code, out, _ = runCLI(t, append([]string{"ps", "--json"}, flags...)...)
	if code != 0 || !strings.Contains(out, `"name": "reports-long-name"`) {
		t.Errorf("ps --json: %d\n%s", code, out)
	}
	// Durations say their unit, not a bare number of nanoseconds.
	if !strings.Contains(out, `"took_ms": 997`) || strings.Contains(out, `"took":`) {
		t.Errorf("ps --json: want took_ms 997 and no took:\n%s", out)
	}
}

func TestActionableErrors(t *testing.T) {
	t.Parallel()
	_, flags := adminServer(t, &fakeRunner{statuses: fakeStatuses})

	wrong := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(wrong, []byte("nope\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	code, _, errb := runCLI(t, "ps", "--admin", flags[1], "--token-file", wrong)
	if code != 1 || !strings.Contains(errb, "admin token rejected: check "+wrong) {
		t.Errorf("wrong token: exit %d, %s", code, errb)
	}

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close() // nothing listens there now
	code, _, errb = runCLI(t, "ps", "--admin", addr, "--token-file", flags[3])
	if want := "runner not reachable at " + addr + ": is `runner up` running?"; code != 1 || !strings.Contains(errb, want) {
		t.Errorf("nothing listening: exit %d, %s", code, errb)
	}

	// No token file yet: runner up was never run with this config.
	cfg := writeConfig(t, okPlugin)
	code, _, errb = runCLI(t, "ps", "-c", cfg)
	if code != 1 || !strings.Contains(errb, "is `runner up` running with this config") {
		t.Errorf("no token file: exit %d, %s", code, errb)
	}

	code, _, errb = runCLI(t, "restart", flags[0], flags[1], flags[2], flags[3], "nope")
	if code != 1 || !strings.Contains(errb, `unknown plugin "nope"`) {
		t.Errorf("restart nope: exit %d, %s", code, errb)
	}
	if code, _, _ := runCLI(t, "restart", flags[0], flags[1]); code != 2 {
		t.Errorf("restart without a plugin: exit %d, want 2 (usage)", code)
	}
}

func TestReloadAndRestart(t *testing.T) {
	t.Parallel()
	f := &fakeRunner{statuses: fakeStatuses, reload: runner.ReloadResult{Applied: true, Changes: true, Plan: "~ hello: replace (env GREETING changed)\n"}}
	_, flags := adminServer(t, f)
	code, out, _ := runCLI(t, append([]string{"reload"}, flags...)...)
	if code != 0 || !strings.HasPrefix(out, "~ hello: replace (env GREETING changed)\n") {
		t.Errorf("reload: exit %d\n%s", code, out)
	}

	f.reload = runner.ReloadResult{Diagnostics: []string{"plugins.hcl:4,3-9: Unsupported argument; An argument named \"colour\" is not expected here."}}
	code, _, errb := runCLI(t, append([]string{"reload"}, flags...)...)
	if code != 1 || !strings.Contains(errb, "plugins.hcl:4,3-9") || !strings.Contains(errb, "nothing changed") {
		t.Errorf("rejected reload: exit %d\n%s", code, errb)
	}

	// A plan whose change cannot be applied for a plugin: exit 1, naming it and why.
	f.reload = runner.ReloadResult{Applied: true, Changes: true, Plan: "! hello: error (image \"team/greeter:nope\" not found locally: ...)\n",
		Errors: []string{"hello: image \"team/greeter:nope\" not found locally: build it (docker build -t team/greeter:nope <dir>) or load it (docker load) first"}}
	code, _, errb = runCLI(t, append([]string{"reload"}, flags...)...)
	if code != 1 || !strings.Contains(errb, "cannot apply: hello: image \"team/greeter:nope\"") || strings.Contains(errb, "make images") {
		t.Errorf("reload with a plugin error: exit %d\n%s", code, errb)
	}

	// Flags after the plugin name work too.
	code, out, _ = runCLI(t, append([]string{"restart", "hello"}, flags...)...)
	if code != 0 || !strings.Contains(out, "restarting hello") || !reflect.DeepEqual(f.restarted, []string{"hello"}) {
		t.Errorf("restart: exit %d %q %v", code, out, f.restarted)
	}
}

func TestLogs(t *testing.T) {
	t.Parallel()
	_, flags := adminServer(t, &fakeRunner{statuses: fakeStatuses})
	code, out, _ := runCLI(t, append([]string{"logs", "--tail", "5", "hello"}, flags...)...)
	if code != 0 || out != "log of hello (follow=false tail=5)\n" {
		t.Errorf("logs: exit %d %q", code, out)
	}

	// --previous: the last lines of the container removed last.
	code, out, _ = runCLI(t, append([]string{"logs", "--previous", "hello"}, flags...)...)
	if code != 0 || out != "# xcore-hello-1-r (generation 1), removed 1970-01-01T00:00:00Z; its last lines:\nlast words of hello\n" {
		t.Errorf("logs --previous: exit %d %q", code, out)
	}

	// -f streams until the runner goes away (or Ctrl-C): here the server closes.
	srv, flags := adminServer(t, &fakeRunner{statuses: fakeStatuses})
	var stdout, stderr syncBuffer
	done := make(chan int, 1)
	go func() { done <- run(append([]string{"logs", "hello", "-f"}, flags...), &stdout, &stderr) }()
	// Followed, each line says which generation wrote it.
	waitFor(t, "the followed log", func() bool { return stdout.String() == "[gen 12] log of hello (follow=true tail=-1)\n" })
	select {
	case <-done:
		t.Fatal("logs -f ended while the runner still serves")
	default:
	}
	srv.CloseClientConnections()
	select {
	case code := <-done:
		if code != 1 || !strings.Contains(stderr.String(), "log stream ended") {
			t.Errorf("exit %d, %s", code, stderr.String())
		}
	case <-time.After(10 * time.Second):
		t.Fatal("logs -f did not end with the connection")
	}
}

// syncBuffer is a bytes.Buffer safe for a writer goroutine and a polling reader.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func TestEvents(t *testing.T) {
	t.Parallel()
	f := &fakeRunner{statuses: fakeStatuses}
	srv, flags := adminServer(t, f)
	var out, errb syncBuffer
	done := make(chan int, 1)
	go func() { done <- run(append([]string{"events"}, flags...), &out, &errb) }()
	waitFor(t, "the subscription", func() bool { return f.subscribed() && strings.Contains(errb.String(), "connected") })
	at := time.Date(2025, 1, 2, 3, 4, 5, 0, time.Local)
	f.publish(runner.Event{Time: at, Type: runner.EventReplaced, Plugin: "hello", Reason: "env GREETING changed", Duration: 1234 * time.Millisecond})
	waitFor(t, "the event line", func() bool {
		return strings.Contains(out.String(), "03:04:05.000  replaced       hello        in 1.234s, reason: env GREETING changed\n")
	})
	srv.CloseClientConnections() // the runner went away
	select {
	case code := <-done:
		if code != 1 || !strings.Contains(errb.String(), "event stream ended") {
			t.Errorf("exit %d, %s", code, errb.String())
		}
	case <-time.After(10 * time.Second):
		t.Fatal("runner events did not end with the stream")
	}
}

func TestCall(t *testing.T) {
	t.Parallel()
	var got *http.Request
	var gotBody string
	proxy := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		got, gotBody = r, string(b)
		if r.URL.Path == "/plugins/hello/fail" {
			w.WriteHeader(http.StatusServiceUnavailable)
		}
		w.Header().Set("X-Reply", "yes")
		fmt.Fprint(w, "answer\n")
	}))
	defer proxy.Close()
	cfg := writeConfig(t, okPlugin)

	code, out, errb := runCLI(t, "call", "-c", cfg, "--proxy", proxy.URL, "hello", "put", "/a/b?x=1", "-d", "data", "-H", "X-One: 1", "-i")
	if code != 0 || !strings.HasPrefix(out, "HTTP/1.1 200 OK\n") || !strings.Contains(out, "X-Reply: yes\n") || !strings.HasSuffix(out, "\n\nanswer\n") {
		t.Fatalf("call -i: exit %d\n%s\n%s", code, out, errb)
	}
	if got.Method != "PUT" || got.URL.Path != "/plugins/hello/a/b" || got.URL.RawQuery != "x=1" || gotBody != "data" || got.Header.Get("X-One") != "1" {
		t.Errorf("the proxy got %s %s (%q) %v", got.Method, got.URL, gotBody, got.Header)
	}
	if code, out, _ := runCLI(t, "call", "-c", cfg, "--proxy", proxy.URL, "hello", "/", "-d", "x"); code != 0 || got.Method != "POST" || out != "answer\n" {
		t.Errorf("-d without a method: exit %d, %s", code, got.Method)
	}
	if code, _, errb := runCLI(t, "call", "-c", cfg, "--proxy", proxy.URL, "hello", "/fail"); code != 1 || !strings.Contains(errb, "503") {
		t.Errorf("5xx: exit %d, %s", code, errb)
	}
	proxy.Close()
	if code, _, errb := runCLI(t, "call", "-c", cfg, "--proxy", proxy.URL, "hello", "/"); code != 1 || !strings.Contains(errb, "runner not reachable at") {
		t.Errorf("proxy down: exit %d, %s", code, errb)
	}
}

// The admin port is taken: `runner up` says so before it touches Docker.
func TestUpAdminPortTaken(t *testing.T) {
	t.Setenv("DOCKER_HOST", "unix:///nonexistent/docker.sock")
	t.Setenv(envAdminListen, "")
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	path := writeConfig(t, fmt.Sprintf("runner {\n  listen = \"127.0.0.1:0\"\n  admin_listen = %q\n}\n%s", ln.Addr(), okPlugin))
	code, _, errb := runCLI(t, "up", "-c", path)
	if code != 1 || !strings.Contains(errb, "admin API: listen "+ln.Addr().String()) || strings.Contains(errb, "docker") {
		t.Fatalf("exit %d\n%s", code, errb)
	}
	if st, err := os.Stat(filepath.Join(filepath.Dir(path), ".runner", "admin.token")); err != nil || st.Mode().Perm() != 0o600 {
		t.Errorf("admin token: %v", err)
	}
}

func TestRunnerSettingsOfAnInvalidConfig(t *testing.T) {
	t.Parallel()
	path := writeConfig(t, "runner {\n  admin_listen = \"127.0.0.1:9999\"\n  state_dir = \"st\"\n}\nplugin \"a\" {\n  image = \"x\"\n  port = 1\n  colour = \"red\"\n}\n")
	var errb bytes.Buffer
	r, cfg, err := runnerSettings(path, &errb, &errb)
	if err != nil || cfg != nil {
		t.Fatalf("%v %v", cfg, err)
	}
	dir := filepath.Dir(path)
	if r.AdminListen != "127.0.0.1:9999" || r.StateDir != filepath.Join(dir, "st") || r.AdminTokenFile != filepath.Join(dir, "st", "admin.token") || r.Listen != "127.0.0.1:8080" {
		t.Errorf("runner block: %+v", r)
	}
	if !strings.Contains(errb.String(), "does not validate") {
		t.Errorf("no warning: %q", errb.String())
	}
	// Not even parseable: the diagnostics, and an error.
	if _, _, err := runnerSettings(writeConfig(t, "runner {\n"), io.Discard, io.Discard); err == nil {
		t.Error("a config that does not parse was accepted")
	}
}

func TestParseArgsAndBaseURL(t *testing.T) {
	t.Parallel()
	fs, _ := newFlagsArgs("x", "", "", io.Discard)
	f := fs.Bool("f", false, "")
	n := fs.Int("n", 0, "")
	pos, err := parseArgs(fs, []string{"a", "-f", "b", "-n", "3", "--", "-c", "d"})
	if err != nil || !*f || *n != 3 || !reflect.DeepEqual(pos, []string{"a", "b", "-c", "d"}) {
		t.Errorf("parseArgs: %v %v %v %v", pos, *f, *n, err)
	}
	for in, want := range map[string]string{
		"127.0.0.1:8081":          "http://127.0.0.1:8081",
		":8081":                   "http://127.0.0.1:8081",
		"0.0.0.0:8081":            "http://127.0.0.1:8081",
		"http://10.0.0.1:9/":      "http://10.0.0.1:9",
		"https://admin.local:443": "https://admin.local:443",
	} {
		if got, _, err := baseURL(in); err != nil || got != want {
			t.Errorf("baseURL(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	if _, _, err := baseURL("ftp://x:1"); err == nil {
		t.Error("ftp accepted")
	}
}

func TestAdminHelp(t *testing.T) {
	t.Parallel()
	for _, cmd := range []string{"ps", "logs", "events", "reload", "restart", "call", "down"} {
		code, stdout, stderr := runCLI(t, cmd, "--help")
		if code != 0 || !strings.Contains(stdout+stderr, "Usage: runner "+cmd) {
			t.Errorf("%s --help: exit %d\n%s%s", cmd, code, stdout, stderr)
		}
	}
	if _, stdout, _ := runCLI(t, "help"); !strings.Contains(stdout, "down ") || !strings.Contains(stdout, "events ") {
		t.Errorf("usage does not list the new commands:\n%s", stdout)
	}
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// The admin commands read the runner block alone: an unterminated string in a plugin
// block, before or after it, costs them nothing. They say in one line what is wrong
// (the first problem, not its echoes) and go on.
func TestAdminCommandsPastASyntaxError(t *testing.T) {
	t.Parallel()
	f := &fakeRunner{statuses: fakeStatuses, reload: runner.ReloadResult{Applied: true, Plan: "= hello: unchanged\n"}}
	srv, flags := adminServer(t, f)
	proxy := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { fmt.Fprint(w, "answer\n") }))
	defer proxy.Close()
	block := fmt.Sprintf("runner {\n  listen = %q\n  admin_listen = %q\n  admin_token_file = %q\n}\n",
		strings.TrimPrefix(proxy.URL, "http://"), strings.TrimPrefix(srv.URL, "http://"), flags[3])
	const broken = "plugin \"greeter\" {\n  image = \"team/greeter:latest\n  port  = 8080\n  services = [\"kv\"]\n  supervisor {\n    memory = \"64MiB\"\n  }\n}\n"

	for name, src := range map[string]string{"after": block + broken, "before": broken + block} {
		path := writeConfig(t, src)
		wantWarning := path + ":2:31: Invalid multi-line string"
		if name == "after" {
			wantWarning = path + ":7:31: Invalid multi-line string"
		}
		for _, args := range [][]string{{"ps"}, {"logs", "hello"}, {"restart", "hello"}, {"reload"}, {"call", "hello", "/"}} {
			code, out, errb := runCLI(t, append(args, "-c", path)...)
			if code != 0 || out == "" {
				t.Errorf("%s, error %s the runner block: exit %d\nstdout: %s\nstderr: %s", args[0], name, code, out, errb)
				continue
			}
			if args[0] == "reload" { // it reports the config itself
				continue
			}
			if strings.Count(errb, "\n") != 1 || !strings.Contains(errb, "does not validate ("+wantWarning) {
				t.Errorf("%s, error %s the runner block: stderr\n%s\nwant one warning naming %s", args[0], name, errb, wantWarning)
			}
		}
	}

	// events streams: it got as far as subscribing.
	path := writeConfig(t, broken+block)
	var out, errb syncBuffer
	done := make(chan int, 1)
	go func() { done <- run([]string{"events", "-c", path}, &out, &errb) }()
	subscribed := make(chan struct{})
	go func() {
		waitFor(t, "the subscription", f.subscribed)
		close(subscribed)
	}()
	select {
	case code := <-done:
		t.Fatalf("events ended at once: exit %d\n%s", code, errb.String())
	case <-subscribed:
	}
	srv.CloseClientConnections()
	<-done
}

// When the runner block itself does not parse, the first error is shown with its
// source line, not the cascade after it.
func TestAdminCommandsRunnerBlockSyntaxError(t *testing.T) {
	t.Parallel()
	path := writeConfig(t, "runner {\n  admin_listen = \"127.0.0.1:1\n  state_dir = \"st\"\n}\nplugin \"a\" {\n  image = \"x\"\n  port = 1\n}\n")
	for _, cmd := range []string{"ps", "reload", "down"} {
		code, _, errb := runCLI(t, cmd, "-c", path)
		if code != 1 || strings.Count(errb, ": error: ") != 1 || !strings.Contains(errb, path+":2:") || !strings.Contains(errb, `admin_listen = "127.0.0.1:1`) {
			t.Errorf("%s: exit %d, want 1 and one error at line 2 with its source:\n%s", cmd, code, errb)
		}
	}
}

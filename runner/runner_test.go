package runner

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/xcore/runner/config"
	"github.com/xcore/runner/proxy"
	"github.com/xcore/runner/sandbox"
)

// folderHash is 12 hex digits of the names and contents of the files in dir.
func folderHash(dir string) (string, error) {
	h := sha256.New()
	err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := os.ReadFile(path)
		fmt.Fprintf(h, "%s\x00%d\x00", path, len(b))
		h.Write(b)
		return err
	})
	return hex.EncodeToString(h.Sum(nil))[:12], err
}

// fakeSandbox runs "containers" as httptest servers: enough to test orchestration
// without an engine. Only what the runner calls is implemented.
type fakeSandbox struct {
	mu          sync.Mutex
	images      map[string]string // ref → id
	dead        map[string]int    // image ID → exit code: its containers exit at once
	ctrs        map[string]*fakeCtr
	networkUp   bool
	leftovers   []sandbox.Instance
	lastSpec    map[string]sandbox.Spec
	nextID      int
	runs        int
	events      chan sandbox.Event
	slow        map[string]time.Duration // image ID → how long Run takes
	sick        map[string]bool          // container ID or image ID → its /healthz answers 500
	removeErrs  int                      // Remove fails this many more times
	held        chan struct{}            // a GET /hold arrived
	release     chan struct{}            // closed: the GET /holds answer
	networkErr  error                    // what RemoveNetwork fails with, once empty
	networkKept string                   // why RemoveNetwork keeps the network, once empty
	panicImage  string                   // Run panics for this image ID
	builds      int                      // images built
	inRun       int                      // Run calls under way
	maxInRun    int                      // the most Run calls ever under way at once
	guard       fakeGuard                // the host rules (protect_test.go)
}

type fakeCtr struct {
	c   sandbox.Instance
	srv *httptest.Server
}

func newFake() *fakeSandbox {
	return &fakeSandbox{images: map[string]string{}, dead: map[string]int{}, ctrs: map[string]*fakeCtr{}, lastSpec: map[string]sandbox.Spec{}, events: make(chan sandbox.Event), slow: map[string]time.Duration{}, sick: map[string]bool{},
		held: make(chan struct{}, 16), release: make(chan struct{})}
}

func (f *fakeSandbox) ResolveImage(_ context.Context, ref string) (string, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if id, ok := f.images[ref]; ok {
		return id, nil
	}
	return "", fmt.Errorf("image %q not found locally", ref)
}

func (f *fakeSandbox) EnsureNetwork(context.Context) (sandbox.Network, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.networkUp = true
	return sandbox.Network{Name: "xcore-test"}, nil
}

func (f *fakeSandbox) RemoveNetwork(context.Context) (string, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.ctrs) > 0 {
		return fmt.Sprintf("%d containers still attached", len(f.ctrs)), nil
	}
	if f.networkErr != nil {
		return "", f.networkErr
	}
	if f.networkKept != "" {
		return f.networkKept, nil
	}
	f.networkUp = false
	return "", nil
}

func (f *fakeSandbox) Run(_ context.Context, spec sandbox.Spec) (sandbox.Instance, error) {
	f.mu.Lock()
	f.runs++ // counted on entry: tests wait for "a start is under way"
	f.inRun++
	f.maxInRun = max(f.maxInRun, f.inRun)
	delay := f.slow[spec.ImageID]
	f.mu.Unlock()
	time.Sleep(delay)
	f.mu.Lock()
	defer f.mu.Unlock()
	f.inRun--
	f.nextID++
	if spec.ImageID == f.panicImage {
		panic("injected: the engine client blew up")
	}
	c := sandbox.Instance{ID: fmt.Sprintf("c%d", f.nextID), Name: fmt.Sprintf("xcore-%s-%d-%d-test", spec.Plugin, spec.Generation, spec.Replica), Plugin: spec.Plugin, Generation: spec.Generation, Replica: spec.Replica, ImageID: spec.ImageID, Snapshot: spec.Snapshot, SpecLabel: spec.SpecLabel, Running: true, Status: "running", Created: time.Now()}
	fc := &fakeCtr{c: c}
	if code, ok := f.dead[spec.ImageID]; ok {
		fc.c.Running, fc.c.Status, fc.c.ExitCode = false, "exited", code
		fc.c.Endpoint = sandbox.TCP("127.0.0.1:1") // nothing listens
	} else {
		greeting, id, image := spec.Env["GREETING"], c.ID, spec.ImageID
		fc.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			f.mu.Lock()
			sick := f.sick[id] || f.sick[image]
			f.mu.Unlock()
			if sick && r.URL.Path == "/healthz" {
				http.Error(w, "sick", 500)
				return
			}
			if r.URL.Path == "/sleep" {
				select {
				case <-time.After(300 * time.Millisecond):
				case <-r.Context().Done():
				}
			}
			if r.URL.Path == "/hold" {
				f.held <- struct{}{}
				select {
				case <-f.release:
				case <-r.Context().Done():
				}
			}
			fmt.Fprintf(w, "%s %s", greeting, r.URL.Path)
		}))
		fc.c.Endpoint = sandbox.TCP(strings.TrimPrefix(fc.srv.URL, "http://"))
	}
	f.ctrs[c.ID] = fc
	f.lastSpec[spec.Plugin] = spec
	return fc.c, nil
}

func (f *fakeSandbox) Inspect(_ context.Context, id string) (sandbox.Instance, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if fc, ok := f.ctrs[id]; ok {
		return fc.c, nil
	}
	return sandbox.Instance{}, fmt.Errorf("inspect %s: %w", id, sandbox.ErrNotFound)
}

func (f *fakeSandbox) Stop(context.Context, string, time.Duration) error { return nil }

func (f *fakeSandbox) Remove(_ context.Context, id string) error {
	f.mu.Lock()
	if f.removeErrs > 0 {
		f.removeErrs--
		f.mu.Unlock()
		return errors.New("injected: removal already in progress")
	}
	fc := f.ctrs[id]
	delete(f.ctrs, id)
	for i, l := range f.leftovers {
		if l.ID == id {
			f.leftovers = append(f.leftovers[:i], f.leftovers[i+1:]...)
			break
		}
	}
	f.mu.Unlock()
	// Closed unlocked: Close waits for the handlers, which take f.mu.
	if fc != nil && fc.srv != nil {
		fc.srv.Close()
	}
	return nil
}

func (f *fakeSandbox) List(context.Context) ([]sandbox.Instance, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := append([]sandbox.Instance(nil), f.leftovers...)
	for _, fc := range f.ctrs {
		out = append(out, fc.c)
	}
	return out, nil
}

func (f *fakeSandbox) Events(ctx context.Context) <-chan sandbox.Event {
	out := make(chan sandbox.Event)
	go func() {
		defer close(out)
		for {
			select {
			case <-ctx.Done():
				return
			case ev := <-f.events:
				select {
				case out <- ev:
				case <-ctx.Done():
					return
				}
			}
		}
	}()
	return out
}

func (f *fakeSandbox) Logs(_ context.Context, id string, _ bool, _ int) (io.ReadCloser, error) {
	return io.NopCloser(strings.NewReader("log of " + id + "\n")), nil
}

// BuildImage "builds" a folder: its tag and ID follow the folder's content hash.
func (f *fakeSandbox) BuildImage(_ context.Context, plugin, dir string, build bool, progress func(string)) (string, string, error) {
	hash, err := folderHash(dir)
	if err != nil {
		return "", "", err
	}
	ref := fmt.Sprintf("xcore-build/%s:%s", plugin, hash)
	f.mu.Lock()
	defer f.mu.Unlock()
	if id, ok := f.images[ref]; ok {
		return ref, id, nil
	}
	if !build {
		return ref, "unbuilt:" + hash, nil
	}
	f.builds++
	progress("Step 1/1 : FROM scratch")
	id := "sha256:built-" + hash
	f.images[ref] = id
	return ref, id, nil
}

// serve starts a fake container that answers like the plugin would, as a leftover of
// an earlier runner process.
func (f *fakeSandbox) leftover(c sandbox.Instance, body string) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { fmt.Fprint(w, body) }))
	c.Endpoint, c.Running, c.Status = sandbox.TCP(strings.TrimPrefix(srv.URL, "http://")), true, "running"
	f.mu.Lock()
	defer f.mu.Unlock()
	f.ctrs[c.ID] = &fakeCtr{c: c, srv: srv}
}

// kill makes container id exit (as if it crashed) and returns the die event for it.
func (f *fakeSandbox) kill(id string, code int, oom bool) sandbox.Event {
	f.mu.Lock()
	defer f.mu.Unlock()
	fc := f.ctrs[id]
	fc.c.Running, fc.c.Status, fc.c.ExitCode, fc.c.OOMKilled = false, "exited", code, oom
	fc.srv.CloseClientConnections()
	return sandbox.Event{Kind: sandbox.EventDie, InstanceID: id, Plugin: fc.c.Plugin, Generation: fc.c.Generation, ExitCode: code}
}

func (f *fakeSandbox) runCount() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.runs
}

func (f *fakeSandbox) buildCount() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.builds
}

func (f *fakeSandbox) count() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.ctrs) + len(f.leftovers)
}

var _ Sandbox = (*fakeSandbox)(nil)

func testPlugin(name, image string) *config.Plugin {
	return &config.Plugin{
		Name: name, Image: image, Port: 8080, Env: map[string]string{"GREETING": "hi"},
		Supervisor: config.Supervisor{
			CPUs: 1, Memory: 256 << 20, Pids: 256, Network: config.NetworkBridge, ReadOnly: true, User: "65532:65532",
			StartTimeout: 5 * time.Second, RequestTimeout: 5 * time.Second, StopTimeout: time.Second, DrainTimeout: 5 * time.Second,
			MaxConcurrent: 16, MaxBody: 1 << 20,
			Health:  config.Health{Path: "/healthz", Interval: time.Second, Timeout: time.Second, Failures: 3},
			Restart: config.Restart{Policy: config.RestartOnFailure, Attempts: 2, Window: time.Minute, Backoff: 10 * time.Millisecond, MaxBackoff: 10 * time.Millisecond},
		},
	}
}

func testConfig(plugins ...*config.Plugin) *config.Config {
	cfg := &config.Config{
		Runner:   config.Runner{Listen: "127.0.0.1:0", Reach: config.ReachPublished},
		Services: map[string]*config.Service{"settings": {Name: "settings", Env: map[string]string{"FEATURE_X": "on"}}},
		Plugins:  map[string]*config.Plugin{},
	}
	for _, p := range plugins {
		cfg.Plugins[p.Name] = p
	}
	return cfg
}

func startTest(t *testing.T, sb Sandbox, cfg *config.Config) *Runner {
	t.Helper()
	return startOpts(t, Options{Config: cfg, Sandbox: sb})
}

// startOpts starts a runner on o (a fresh proxy when o has no router), shut down with
// the test.
func startOpts(t *testing.T, o Options) *Runner {
	t.Helper()
	if o.Router == nil {
		o.Router = proxy.New(proxy.Options{})
	}
	r := New(o)
	t.Cleanup(func() { _ = r.Shutdown(context.Background()) })
	if err := r.Start(context.Background()); err != nil {
		t.Fatalf("Start: %v", err)
	}
	return r
}

func httpGet(t *testing.T, url string) (int, string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func TestStartServesHealthyAndReportsFailed(t *testing.T) {
	f := newFake()
	f.images["hello:1"] = "sha256:h"
	r := startTest(t, f, testConfig(testPlugin("hello", "hello:1"), testPlugin("ghost", "ghost:1")))

	if code, body := httpGet(t, "http://"+r.Addr().String()+"/plugins/hello/x"); code != 200 || body != "hi /x" {
		t.Errorf("hello: %d %q", code, body)
	}
	code, body := httpGet(t, "http://"+r.Addr().String()+"/plugins/ghost/")
	if code != 503 || !strings.Contains(body, `not found locally`) {
		t.Errorf("ghost: %d %q, want 503 naming the missing image", code, body)
	}
	st := r.Statuses()
	if st[0].Name != "ghost" || st[0].State != StateFailed || !strings.Contains(st[0].LastError, "ghost:1") {
		t.Errorf("ghost status %+v", st[0])
	}
	if st[1].Name != "hello" || st[1].State != StateHealthy || st[1].Generation != 1 || st[1].ImageID != "sha256:h" {
		t.Errorf("hello status %+v", st[1])
	}
}

// runner.start_concurrency caps the containers being started at once, and a plugin's
// start_timeout runs from its container running: 6 starts of 150 ms, 2 at a time, take
// 450 ms, more than the 400 ms start_timeout of the last ones, and all of them still
// start.
func TestStartConcurrencyBoundsStartsAndQueuedTimeDoesNotCount(t *testing.T) {
	f := newFake()
	f.images["hello:1"] = "sha256:h"
	f.slow["sha256:h"] = 150 * time.Millisecond
	var plugins []*config.Plugin
	for i := range 6 {
		p := testPlugin(fmt.Sprintf("p%d", i), "hello:1")
		p.Supervisor.StartTimeout = 400 * time.Millisecond
		plugins = append(plugins, p)
	}
	cfg := testConfig(plugins...)
	cfg.Runner.StartConcurrency = 2
	r := startTest(t, f, cfg)

	for _, st := range r.Statuses() {
		if st.State != StateHealthy || st.Restarts != 0 {
			t.Errorf("%s: %s after %d restarts (%s), want healthy at the first start", st.Name, st.State, st.Restarts, st.LastError)
		}
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.maxInRun != 2 || f.runs != 6 {
		t.Errorf("%d starts, at most %d at once; want 6, at most 2 (start_concurrency) and 2 reached", f.runs, f.maxInRun)
	}
}

func TestEnvIsRenderedForThePlugin(t *testing.T) {
	f := newFake()
	f.images["hello:1"] = "sha256:h"
	p := testPlugin("hello", "hello:1")
	p.Services = []string{"settings"}
	p.Env["PORT"] = "9999" // the runner's own variables win
	startTest(t, f, testConfig(p))
	env := f.lastSpec["hello"].Env
	for k, want := range map[string]string{"PORT": "8080", "XCORE_PLUGIN": "hello", "XCORE_PREFIX": "/plugins/hello", "FEATURE_X": "on", "GREETING": "hi"} {
		if env[k] != want {
			t.Errorf("env %s = %q, want %q", k, env[k], want)
		}
	}
}

// A plugin that exits at once is restarted within its budget (attempts 2 here), each
// start failing fast on the exit instead of waiting out start_timeout, then marked failed.
func TestCrashLoopEndsFailedWithReason(t *testing.T) {
	f := newFake()
	f.images["crash:1"] = "sha256:c"
	f.dead["sha256:c"] = 2
	p := testPlugin("crash", "crash:1")
	p.Supervisor.StartTimeout = 20 * time.Second
	begin := time.Now()
	r := startTest(t, f, testConfig(p))
	waitFor(t, "failed", func() bool { return r.Statuses()[0].State == StateFailed })
	if took := time.Since(begin); took > 5*time.Second {
		t.Errorf("crash loop took %s: an exited container must not wait out start_timeout", took)
	}
	st := r.Statuses()[0]
	if !strings.HasPrefix(st.LastError, "crashed 2 times in 1m0s:") || !strings.Contains(st.LastError, "exited with code 2") {
		t.Errorf("status %+v", st)
	}
	if f.runCount() != 2 {
		t.Errorf("%d starts, want 2 (attempts)", f.runCount())
	}
	code, body := httpGet(t, "http://"+r.Addr().String()+"/plugins/crash/")
	if code != 503 || !strings.Contains(body, "crashed 2 times") {
		t.Errorf("proxy: %d %q", code, body)
	}
	waitFor(t, "containers removed", func() bool { return f.count() == 0 })
}

func TestLeftoversAreRemovedAndGenerationsContinue(t *testing.T) {
	f := newFake()
	f.images["hello:1"] = "sha256:h"
	f.leftovers = []sandbox.Instance{{ID: "old", Name: "xcore-hello-4", Plugin: "hello", Generation: 4}}
	r := startTest(t, f, testConfig(testPlugin("hello", "hello:1")))
	if st := r.Statuses()[0]; st.Generation != 5 {
		t.Errorf("generation %d, want 5 (after leftover 4)", st.Generation)
	}
	if _, err := f.Inspect(context.Background(), "old"); err == nil {
		t.Error("leftover container still there")
	}
}

// A network the engine will not remove for phantom endpoints (moby/moby#42119) does not
// fail a shutdown that removed every container; any other failure to remove it does.
func TestShutdownNetworkLeftByTheEngine(t *testing.T) {
	for _, tc := range []struct {
		kept   string
		err    error
		wantOK bool
	}{
		{"network xcore-x left by the engine with stale endpoints", nil, true},
		{"", errors.New("remove network xcore-x: engine on fire"), false},
	} {
		f := newFake()
		f.images["hello:1"] = "sha256:h"
		f.networkErr, f.networkKept = tc.err, tc.kept
		r := New(Options{Config: testConfig(testPlugin("hello", "hello:1")), Sandbox: f, Router: proxy.New(proxy.Options{})})
		if err := r.Start(context.Background()); err != nil {
			t.Fatal(err)
		}
		err := r.Shutdown(context.Background())
		if (err == nil) != tc.wantOK || f.count() != 0 {
			t.Errorf("network error %q: Shutdown = %v with %d containers left, want ok = %v", tc.err, err, f.count(), tc.wantOK)
		}
	}
}

func TestShutdownRemovesContainersAndNetwork(t *testing.T) {
	before := runtime.NumGoroutine()
	f := newFake()
	f.images["hello:1"] = "sha256:h"
	r := New(Options{Config: testConfig(testPlugin("hello", "hello:1"), testPlugin("b", "hello:1")), Sandbox: f, Router: proxy.New(proxy.Options{})})
	if err := r.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	httpGet(t, "http://"+r.Addr().String()+"/plugins/hello/")
	if err := r.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
	if n := f.count(); n != 0 || f.networkUp {
		t.Errorf("after shutdown: %d containers, network up=%v", n, f.networkUp)
	}
	for _, s := range r.Statuses() {
		if s.State != StateStopped {
			t.Errorf("%s state %s after shutdown", s.Name, s.State)
		}
	}
	http.DefaultClient.CloseIdleConnections()
	deadline := time.Now().Add(5 * time.Second)
	for runtime.NumGoroutine() > before {
		if time.Now().After(deadline) {
			buf := make([]byte, 1<<16)
			t.Fatalf("goroutines: %d before, %d after shutdown\n%s", before, runtime.NumGoroutine(), buf[:runtime.Stack(buf, true)])
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestKeepLeavesContainersRunning(t *testing.T) {
	f := newFake()
	f.images["hello:1"] = "sha256:h"
	r := New(Options{Config: testConfig(testPlugin("hello", "hello:1")), Sandbox: f, Router: proxy.New(proxy.Options{}), Keep: true})
	if err := r.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	if err := r.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
	if n := f.count(); n != 1 {
		t.Errorf("%d containers after shutdown with keep, want 1", n)
	}
	for _, fc := range f.ctrs {
		fc.srv.Close()
	}
}

func TestListenConflictFailsBeforeAnyContainer(t *testing.T) {
	busy := httptest.NewServer(http.NotFoundHandler())
	defer busy.Close()
	f := newFake()
	f.images["hello:1"] = "sha256:h"
	cfg := testConfig(testPlugin("hello", "hello:1"))
	cfg.Runner.Listen = strings.TrimPrefix(busy.URL, "http://")
	r := New(Options{Config: cfg, Sandbox: f, Router: proxy.New(proxy.Options{})})
	if err := r.Start(context.Background()); err == nil || !strings.Contains(err.Error(), "listen") {
		t.Fatalf("Start on a busy port: %v", err)
	}
	if n := f.count(); n != 0 {
		t.Errorf("%d containers started although the runner cannot listen", n)
	}
}

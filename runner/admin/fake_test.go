package admin

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/xcore/runner/runner"
)

// fakeRunner is an in-memory Runner: statuses, a reload answer, a log per plugin and
// an event bus the test publishes on.
type fakeRunner struct {
	mu        sync.Mutex
	statuses  map[string]runner.Status
	reload    runner.ReloadResult
	reloadErr error
	restarted []string
	logs      map[string]string // plugin → whole log
	follow    map[string]*io.PipeWriter
	logCalls  []string // "name follow tail"
	logCtxs   []context.Context
	subs      map[chan runner.Event]struct{}
}

var _ Runner = (*fakeRunner)(nil)

func newFake(statuses ...runner.Status) *fakeRunner {
	f := &fakeRunner{statuses: map[string]runner.Status{}, logs: map[string]string{}, follow: map[string]*io.PipeWriter{}, subs: map[chan runner.Event]struct{}{}}
	for _, s := range statuses {
		f.statuses[s.Name] = s
	}
	return f
}

func (f *fakeRunner) Statuses() []runner.Status {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []runner.Status
	for _, name := range []string{"crashy", "hello", "slow"} { // sorted, like the runner
		if s, ok := f.statuses[name]; ok {
			out = append(out, s)
		}
	}
	return out
}

func (f *fakeRunner) Status(name string) (runner.Status, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	s, ok := f.statuses[name]
	if !ok {
		return runner.Status{}, fmt.Errorf("%s: %w", name, runner.ErrUnknownPlugin)
	}
	return s, nil
}

func (f *fakeRunner) setStatus(s runner.Status) {
	f.mu.Lock()
	f.statuses[s.Name] = s
	f.mu.Unlock()
}

func (f *fakeRunner) Subscribe() (<-chan runner.Event, func()) {
	ch := make(chan runner.Event, 16)
	f.mu.Lock()
	f.subs[ch] = struct{}{}
	f.mu.Unlock()
	var once sync.Once
	return ch, func() {
		once.Do(func() {
			f.mu.Lock()
			delete(f.subs, ch)
			f.mu.Unlock()
			close(ch)
		})
	}
}

func (f *fakeRunner) subscribers() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.subs)
}

func (f *fakeRunner) publish(ev runner.Event) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for ch := range f.subs {
		ch <- ev
	}
}

func (f *fakeRunner) ReloadNow(ctx context.Context) (runner.ReloadResult, error) {
	return f.reload, f.reloadErr
}

func (f *fakeRunner) Restart(name string) error {
	if _, err := f.Status(name); err != nil {
		return err
	}
	f.mu.Lock()
	f.restarted = append(f.restarted, name)
	f.mu.Unlock()
	return nil
}

// Logs returns the last tail lines of the plugin's log; with follow, a stream the test
// writes to through followWriter, ended by ctx.
// PreviousLogs: the fake's previous log of a plugin is its log with a "previous: " prefix.
func (f *fakeRunner) PreviousLogs(name string) (runner.PreviousLog, error) {
	if _, err := f.Status(name); err != nil {
		return runner.PreviousLog{}, err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.logs[name] == "" {
		return runner.PreviousLog{}, runner.ErrNoPrevious
	}
	return runner.PreviousLog{Container: "xcore-" + name + "-1-r", Generation: 1, Removed: time.Unix(0, 0), Text: "previous: " + f.logs[name]}, nil
}

func (f *fakeRunner) Logs(ctx context.Context, name string, follow bool, tail int) (io.ReadCloser, error) {
	if _, err := f.Status(name); err != nil {
		return nil, err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.logCalls = append(f.logCalls, fmt.Sprintf("%s %v %d", name, follow, tail))
	f.logCtxs = append(f.logCtxs, ctx)
	lines := strings.SplitAfter(f.logs[name], "\n")
	if lines[len(lines)-1] == "" {
		lines = lines[:len(lines)-1]
	}
	if tail >= 0 && tail < len(lines) {
		lines = lines[len(lines)-tail:]
	}
	past := strings.Join(lines, "")
	if !follow {
		return io.NopCloser(strings.NewReader(past)), nil
	}
	pr, pw := io.Pipe()
	f.follow[name] = pw
	go func() {
		_, _ = io.WriteString(pw, past)
		<-ctx.Done()
		pw.CloseWithError(ctx.Err())
	}()
	return pr, nil
}

func (f *fakeRunner) followWriter(name string) *io.PipeWriter {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.follow[name]
}

const testToken = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"

var (
	started = time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)
	hello   = runner.Status{
		Name: "hello", State: runner.StateHealthy, Generation: 3, Image: "xcore-examples/hello:latest",
		ImageID: "sha256:abcdef0123456789", Snapshot: "9f3e", Container: "c0ffee", Endpoint: "127.0.0.1:49153",
		StartedAt: started, Took: 997 * time.Millisecond, Restarts: 1, LastExit: "container exited with code 2",
	}
	crashy = runner.Status{
		Name: "crashy", State: runner.StateFailed, Generation: 5, Image: "xcore-examples/crashy:latest",
		Restarts: 5, LastError: "crashed 5 times in 5m0s: exit code 2",
	}
)

type harness struct {
	t   *testing.T
	f   *fakeRunner
	srv *httptest.Server
}

func newHarness(t *testing.T, o Options) *harness {
	t.Helper()
	f := newFake(hello, crashy)
	if o.Runner == nil {
		o.Runner = f
	}
	if o.Token == "" {
		o.Token = testToken
	}
	srv := httptest.NewServer(New(o))
	t.Cleanup(srv.Close)
	return &harness{t: t, f: f, srv: srv}
}

// do sends an authenticated request unless a header or cookie overrides it.
func (h *harness) do(method, path string, body io.Reader, mod ...func(*http.Request)) *http.Response {
	h.t.Helper()
	req, err := http.NewRequest(method, h.srv.URL+path, body)
	if err != nil {
		h.t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+testToken)
	for _, m := range mod {
		m(req)
	}
	resp, err := noRedirect.Do(req)
	if err != nil {
		h.t.Fatalf("%s %s: %v", method, path, err)
	}
	h.t.Cleanup(func() { resp.Body.Close() })
	return resp
}

var noRedirect = &http.Client{
	CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	Timeout:       10 * time.Second,
}

func readAll(t *testing.T, resp *http.Response) string {
	t.Helper()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// eventually polls cond every 10ms until it holds or 5s pass.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

package main

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/xcore/runner/runner"
	"github.com/xcore/runner/runner/admin"
)

// pullRunner is a fakeRunner that pulls.
type pullRunner struct {
	*fakeRunner
	asked [][]string
	res   []runner.PullResult
}

func (p *pullRunner) Pull(_ context.Context, names []string) ([]runner.PullResult, error) {
	p.asked = append(p.asked, names)
	for _, n := range names {
		if n == "nope" {
			return nil, fmt.Errorf("pull nope: %w", runner.ErrUnknownPlugin)
		}
	}
	return p.res, nil
}

func TestPullCommand(t *testing.T) {
	t.Parallel()
	const d1, d2 = "sha256:ab1200000000aaaa", "sha256:cd3400000000bbbb"
	pr := &pullRunner{fakeRunner: &fakeRunner{statuses: fakeStatuses}, res: []runner.PullResult{
		{Image: "127.0.0.1:5000/team/hello:1.4", Plugins: []string{"a", "b"}, Before: d1, After: d2, Changed: true},
		{Image: "team/other:2", Plugins: []string{"other"}, Before: d1, After: d1},
	}}
	srv := httptest.NewServer(admin.New(admin.Options{Runner: pr, Token: cliToken, Logger: slog.New(slog.DiscardHandler)}))
	t.Cleanup(srv.Close)
	tok := filepath.Join(t.TempDir(), "admin.token")
	if err := os.WriteFile(tok, []byte(cliToken), 0o600); err != nil {
		t.Fatal(err)
	}
	flags := []string{"--admin", srv.URL, "--token-file", tok}
	code, out, errb := runCLI(t, append([]string{"pull"}, append(flags, "a", "other")...)...)
	want := "changed    a,b  127.0.0.1:5000/team/hello:1.4 sha256:ab1200000000 → sha256:cd3400000000 (replacing start-first)\n" +
		"unchanged  other  team/other:2 sha256:ab1200000000\n"
	if code != 0 || out != want {
		t.Errorf("pull: exit %d\n%s%s\nwant\n%s", code, out, errb, want)
	}
	if fmt.Sprint(pr.asked) != "[[a other]]" {
		t.Errorf("the runner was asked for %v", pr.asked)
	}
	code, _, errb = runCLI(t, append([]string{"pull"}, append(flags, "nope")...)...)
	if code != 1 || !strings.Contains(errb, "unknown plugin") {
		t.Errorf("pull nope: exit %d %s", code, errb)
	}
	pr.res = []runner.PullResult{{Image: "x:1", Plugins: []string{"x"}, Error: "registry x denied access to x (check ~/.docker/config.json)"}}
	code, out, _ = runCLI(t, append([]string{"pull"}, flags...)...)
	if code != 1 || !strings.HasPrefix(out, "FAILED     x  x:1: registry x denied access") {
		t.Errorf("a failed pull: exit %d %q", code, out)
	}
}

func TestPsPulling(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		st   runner.Status
		want string
	}{
		{runner.Status{State: runner.StatePulling, Pull: &runner.PullStatus{Percent: 43}}, "pulling 43%"},
		{runner.Status{State: runner.StateHealthy, Pull: &runner.PullStatus{Percent: 7}}, "healthy, pulling 7%"},
		{runner.Status{State: runner.StateHealthy}, "healthy"},
	} {
		if got := psState(tc.st); got != tc.want {
			t.Errorf("psState(%s, %+v) = %q, want %q", tc.st.State, tc.st.Pull, got, tc.want)
		}
	}
}

// Without a terminal, `runner up` prints a progress line per tick while a pull runs,
// then the digest it got.
func TestPullPrinter(t *testing.T) {
	t.Parallel()
	var mu sync.Mutex
	var out bytes.Buffer
	w := &lockedBuf{mu: &mu, b: &out}
	events := make(chan runner.Event, 4)
	var pmu sync.Mutex
	pulls := []runner.PlugPull{{Plugin: "hello", PullStatus: runner.PullStatus{Image: "team/hello:1.4", Percent: 43, Done: 430 << 10, Total: 1000 << 10}}}
	p := &pullPrinter{w: w, mu: &sync.Mutex{}, every: 10 * time.Millisecond, stopCh: make(chan struct{}),
		pulls: func() []runner.PlugPull { pmu.Lock(); defer pmu.Unlock(); return pulls }}
	p.wg.Go(func() { p.run(events) })
	events <- runner.Event{Type: runner.EventPullStarted, Plugin: "hello", Image: "team/hello:1.4"}
	waitFor(t, "the live progress line", func() bool { return strings.Contains(w.String(), "pulling  hello 43% (430KiB/1000KiB)\n") })
	pmu.Lock()
	pulls = nil
	pmu.Unlock()
	events <- runner.Event{Type: runner.EventPullDone, Plugin: "hello", Image: "team/hello:1.4", Digest: "sha256:cd34", Bytes: 1000 << 10, Duration: 1234 * time.Millisecond}
	waitFor(t, "the final line", func() bool {
		return strings.Contains(w.String(), "pulled  hello  team/hello:1.4  sha256:cd34  1000KiB in 1.234s\n")
	})
	close(p.stopCh)
	p.wg.Wait()
}

type lockedBuf struct {
	mu *sync.Mutex
	b  *bytes.Buffer
}

func (l *lockedBuf) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuf) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

package runner

import (
	"context"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"sync"
	"testing"
	"time"
)

const watchTestDebounce = 150 * time.Millisecond

// watchHarness runs watchConfig on a temp dir holding plugins.hcl (and plugins.d when
// asked) and counts triggers.
type watchHarness struct {
	t          *testing.T
	root       string // plugins.hcl
	pluginsDir string // plugins.d
	cancel     context.CancelFunc
	done       chan error

	mu    sync.Mutex
	fired []time.Time
}

func startWatchHarness(t *testing.T, withPluginsDir bool, files ...string) *watchHarness {
	t.Helper()
	dir := t.TempDir()
	h := &watchHarness{t: t, root: filepath.Join(dir, "plugins.hcl"), pluginsDir: filepath.Join(dir, "plugins.d"), done: make(chan error, 1)}
	watchWrite(t, h.root, "runner {}\n")
	if withPluginsDir {
		if err := os.Mkdir(h.pluginsDir, 0o755); err != nil {
			t.Fatal(err)
		}
		for _, f := range files {
			watchWrite(t, filepath.Join(h.pluginsDir, f), "# drop-in\n")
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	h.cancel = cancel
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	go func() {
		h.done <- watchConfig(ctx, log, h.root, h.pluginsDir, watchTestDebounce, func() {
			h.mu.Lock()
			h.fired = append(h.fired, time.Now())
			h.mu.Unlock()
		})
	}()
	t.Cleanup(func() {
		cancel()
		select {
		case <-h.done:
		case <-time.After(5 * time.Second):
			t.Error("watchConfig did not return after cancel")
		}
	})
	h.sync()
	return h
}

// sync waits until the watcher is live: it touches the root file until a trigger comes,
// then forgets that trigger. No write follows the trigger, so no second one can come.
func (h *watchHarness) sync() {
	h.t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for h.count() == 0 {
		if time.Now().After(deadline) {
			h.t.Fatal("watcher never triggered on the root file")
		}
		watchWrite(h.t, h.root, "runner {}\n")
		h.waitFor(1, time.Second, false)
	}
	h.mu.Lock()
	h.fired = nil
	h.mu.Unlock()
}

func (h *watchHarness) count() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return len(h.fired)
}

func (h *watchHarness) last() time.Time {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.fired[len(h.fired)-1]
}

// waitFor polls until n triggers were counted; false when the deadline passed first
// (and fatal if must).
func (h *watchHarness) waitFor(n int, within time.Duration, must bool) bool {
	h.t.Helper()
	deadline := time.Now().Add(within)
	for time.Now().Before(deadline) {
		if h.count() >= n {
			return true
		}
		time.Sleep(10 * time.Millisecond)
	}
	if must {
		h.t.Fatalf("%d triggers after %v, want %d", h.count(), within, n)
	}
	return false
}

// expectCount checks that the count stays at n for a short bounded wait (debounce plus
// 300ms): the way to assert "no (further) trigger".
func (h *watchHarness) expectCount(n int) {
	h.t.Helper()
	time.Sleep(watchTestDebounce + 300*time.Millisecond)
	if got := h.count(); got != n {
		h.t.Fatalf("%d triggers, want %d", got, n)
	}
}

func watchWrite(t *testing.T, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

func TestWatchConfigRootWriteBurst(t *testing.T) {
	t.Parallel()
	h := startWatchHarness(t, false)
	var lastWrite time.Time
	for i := range 5 {
		watchWrite(t, h.root, "runner {}\n# edit "+string(rune('a'+i))+"\n")
		lastWrite = time.Now()
	}
	h.waitFor(1, 5*time.Second, true)
	h.expectCount(1)
	if d := h.last().Sub(lastWrite); d < watchTestDebounce-10*time.Millisecond {
		t.Errorf("trigger %v after the last write, want ≥ debounce %v", d, watchTestDebounce)
	}
}

func TestWatchConfigRenameOver(t *testing.T) {
	t.Parallel()
	h := startWatchHarness(t, true, "a.hcl")
	// How vim (backupcopy=no) and many IDEs save: write a temp file, rename it over.
	tmp := filepath.Join(filepath.Dir(h.root), "plugins.hcl.tmp123")
	watchWrite(t, tmp, "runner {}\n# saved\n")
	if err := os.Rename(tmp, h.root); err != nil {
		t.Fatal(err)
	}
	h.waitFor(1, 5*time.Second, true)
	h.expectCount(1)

	// The same in plugins.d: the new inode is picked up because the directory is watched.
	tmp = filepath.Join(h.pluginsDir, ".a.hcl.tmp")
	watchWrite(t, tmp, "# saved\n")
	if err := os.Rename(tmp, filepath.Join(h.pluginsDir, "a.hcl")); err != nil {
		t.Fatal(err)
	}
	h.waitFor(2, 5*time.Second, true)
	h.expectCount(2)
}

func TestWatchConfigPluginsDirCreatedLater(t *testing.T) {
	t.Parallel()
	h := startWatchHarness(t, false)
	if err := os.Mkdir(h.pluginsDir, 0o755); err != nil {
		t.Fatal(err)
	}
	h.expectCount(0) // an empty plugins.d changes nothing
	watchWrite(t, filepath.Join(h.pluginsDir, "x.hcl"), "# drop-in\n")
	h.waitFor(1, 5*time.Second, true)
	h.expectCount(1)

	// Removed and created again: watched again.
	if err := os.RemoveAll(h.pluginsDir); err != nil {
		t.Fatal(err)
	}
	h.waitFor(2, 5*time.Second, true)
	h.expectCount(2)
	if err := os.Mkdir(h.pluginsDir, 0o755); err != nil {
		t.Fatal(err)
	}
	h.expectCount(2)
	watchWrite(t, filepath.Join(h.pluginsDir, "y.hcl"), "# drop-in\n")
	h.waitFor(3, 5*time.Second, true)
	h.expectCount(3)
}

func TestWatchConfigIgnoresOtherFiles(t *testing.T) {
	t.Parallel()
	h := startWatchHarness(t, true, "a.hcl")
	dir := filepath.Dir(h.root)
	for _, p := range []string{
		filepath.Join(h.pluginsDir, "notes.txt"),
		filepath.Join(h.pluginsDir, ".a.hcl.swp"), // vim swap
		filepath.Join(h.pluginsDir, "4913"),       // vim's "can I write here" probe
		filepath.Join(h.pluginsDir, "a.hcl~"),     // backup
		filepath.Join(h.pluginsDir, ".hidden.hcl"),
		filepath.Join(dir, ".plugins.hcl.swp"),
		filepath.Join(dir, "other.hcl"), // not the root file, not in plugins.d
	} {
		watchWrite(t, p, "x")
		if err := os.Remove(p); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Mkdir(filepath.Join(h.pluginsDir, "sub.hcl"), 0o755); err != nil {
		t.Fatal(err)
	}
	watchWrite(t, filepath.Join(h.pluginsDir, "sub.hcl", "deep.hcl"), "x") // not read by the loader
	if err := os.Chmod(filepath.Join(h.pluginsDir, "a.hcl"), 0o600); err != nil {
		t.Fatal(err)
	}
	h.expectCount(0)

	// Still live: a relevant change right after counts once.
	watchWrite(t, filepath.Join(h.pluginsDir, "b.hcl"), "# drop-in\n")
	h.waitFor(1, 5*time.Second, true)
	h.expectCount(1)
}

func TestWatchConfigRemoveDropIn(t *testing.T) {
	t.Parallel()
	h := startWatchHarness(t, true, "a.hcl", "b.hcl")
	if err := os.Remove(filepath.Join(h.pluginsDir, "a.hcl")); err != nil {
		t.Fatal(err)
	}
	h.waitFor(1, 5*time.Second, true)
	h.expectCount(1)
}

// Not parallel: it counts goroutines.
func TestWatchConfigCancelReturns(t *testing.T) {
	baseline := runtime.NumGoroutine()
	dir := t.TempDir()
	root := filepath.Join(dir, "plugins.hcl")
	watchWrite(t, root, "runner {}\n")
	if err := os.Mkdir(filepath.Join(dir, "plugins.d"), 0o755); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	fired := make(chan struct{}, 16)
	go func() {
		done <- watchConfig(ctx, slog.New(slog.NewTextHandler(io.Discard, nil)), root, filepath.Join(dir, "plugins.d"), watchTestDebounce,
			func() { fired <- struct{}{} })
	}()
	// Make sure it is running (not just about to start) before cancelling.
	deadline := time.After(10 * time.Second)
	tick := time.NewTicker(200 * time.Millisecond)
	defer tick.Stop()
	watchWrite(t, root, "runner {}\n#1\n")
wait:
	for {
		select {
		case <-fired:
			break wait
		case <-tick.C:
			watchWrite(t, root, "runner {}\n#again\n")
		case <-deadline:
			cancel()
			t.Fatal("watcher never triggered")
		}
	}

	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("watchConfig = %v, want nil after cancel", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("watchConfig did not return after cancel")
	}
	end := time.Now().Add(5 * time.Second)
	for runtime.NumGoroutine() > baseline {
		if time.Now().After(end) {
			buf := make([]byte, 1<<16)
			t.Fatalf("%d goroutines, baseline %d:\n%s", runtime.NumGoroutine(), baseline, buf[:runtime.Stack(buf, true)])
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestWatchConfigStartError(t *testing.T) {
	t.Parallel()
	missing := filepath.Join(t.TempDir(), "nope", "plugins.hcl")
	err := watchConfig(context.Background(), nil, missing, "", watchTestDebounce, func() {})
	if err == nil {
		t.Fatal("watchConfig on a missing directory returned nil")
	}
}

package runner

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/xcore/runner/config"
	"github.com/xcore/runner/proxy"
	"github.com/xcore/runner/sandbox"
)

// hclRunner runs a Runner on a real config file, so Reload goes through config.Load.
type hclRunner struct {
	*Runner
	t    *testing.T
	path string
	f    *fakeSandbox
}

func startHCL(t *testing.T, f *fakeSandbox, body string) *hclRunner {
	t.Helper()
	path := filepath.Join(t.TempDir(), "plugins.hcl")
	h := &hclRunner{t: t, path: path, f: f}
	h.write(body)
	cfg, _, diags := config.Load(path)
	if diags.HasErrors() {
		t.Fatal(diags.Error())
	}
	h.Runner = New(Options{Config: cfg, ConfigPath: path, Sandbox: f, Router: proxy.New(proxy.Options{})})
	t.Cleanup(func() { _ = h.Shutdown(context.Background()) })
	if err := h.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	return h
}

func (h *hclRunner) write(body string) {
	h.t.Helper()
	full := "runner {\n  listen = \"127.0.0.1:0\"\n  watch = false\n}\n" + body
	// Atomically, as editors save: an async reload must never read a half-written file.
	if err := os.WriteFile(h.path+".tmp", []byte(full), 0o644); err != nil {
		h.t.Fatal(err)
	}
	if err := os.Rename(h.path+".tmp", h.path); err != nil {
		h.t.Fatal(err)
	}
}

func (h *hclRunner) get(path string) (int, string) {
	h.t.Helper()
	return httpGet(h.t, "http://"+h.Addr().String()+path)
}

func (h *hclRunner) status(name string) Status {
	for _, s := range h.Statuses() {
		if s.Name == name {
			return s
		}
	}
	return Status{}
}

// waitFor polls cond with a deadline.
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

const helloHCL = `plugin "hello" {
  image = "hello:1"
  port  = 8080
  env   = { GREETING = %q }
  supervisor {
    drain_timeout = "2s"
    request_timeout = %q
  }
}
`

func hello(greeting, timeout string) string { return fmt.Sprintf(helloHCL, greeting, timeout) }

func TestReloadReplacesChangedPluginStartFirst(t *testing.T) {
	f := newFake()
	f.images["hello:1"] = "sha256:h"
	h := startHCL(t, f, hello("hi", "5s"))
	first := h.status("hello")

	h.write(hello("hey", "5s"))
	h.Reload()
	waitFor(t, "generation 2 serving", func() bool { _, body := h.get("/plugins/hello/"); return strings.HasPrefix(body, "hey") })
	st := h.status("hello")
	if st.Generation != 2 || st.Container == first.Container || !strings.Contains(st.LastChange, "env GREETING changed") {
		t.Errorf("after replace: %+v", st)
	}
	if strings.Contains(st.LastChange, "hey") {
		t.Errorf("reason leaks an env value: %q", st.LastChange)
	}
	waitFor(t, "old generation removed", func() bool { _, err := f.Inspect(context.Background(), first.Container); return err != nil })
}

func TestFailedReplacementKeepsOldGeneration(t *testing.T) {
	f := newFake()
	f.images["hello:1"] = "sha256:h"
	f.images["hello:2"] = "sha256:broken"
	f.dead["sha256:broken"] = 3
	h := startHCL(t, f, hello("hi", "5s"))
	first := h.status("hello")

	h.write(strings.Replace(hello("hi", "5s"), "hello:1", "hello:2", 1))
	h.Reload()
	waitFor(t, "failure recorded", func() bool { return h.status("hello").LastError != "" })
	st := h.status("hello")
	if st.Container != first.Container || st.State != StateHealthy || !strings.Contains(st.LastError, "exited with code 3") {
		t.Errorf("after failed replacement: %+v", st)
	}
	if code, body := h.get("/plugins/hello/"); code != 200 || !strings.HasPrefix(body, "hi") {
		t.Errorf("old generation not serving: %d %q", code, body)
	}
	if n := f.count(); n != 1 {
		t.Errorf("%d containers, want only the old one (the failed one removed)", n)
	}
	// Reloads without a change do not retry the failed replacement.
	runs := f.runCount()
	for range 3 {
		h.Reload()
	}
	h.write(hello("hi", "6s")) // a runner-side change: still no retry
	h.Reload()
	waitFor(t, "timeout change applied", func() bool { return h.config().Plugins["hello"].Supervisor.RequestTimeout == 6*time.Second })
	h.write(strings.Replace(hello("hey", "5s"), "hello:1", "hello:2", 1)) // a real change: retried
	h.Reload()
	waitFor(t, "retry on change", func() bool { return f.runCount() == runs+1 })
	if f.runCount() != runs+1 {
		t.Errorf("%d starts after reloads, want exactly one retry on the real change", f.runCount()-runs)
	}
}

func TestRunnerSideSettingsApplyLive(t *testing.T) {
	f := newFake()
	f.images["hello:1"] = "sha256:h"
	h := startHCL(t, f, hello("hi", "5s"))
	before := h.status("hello")
	if code, _ := h.get("/plugins/hello/sleep"); code != 200 {
		t.Fatalf("slow request under the 5s timeout: %d", code)
	}
	h.write(hello("hi", "100ms"))
	h.Reload()
	waitFor(t, "the new request_timeout enforced", func() bool { code, _ := h.get("/plugins/hello/sleep"); return code == 504 })
	if st := h.status("hello"); st.Container != before.Container || f.runCount() != 1 {
		t.Errorf("a request_timeout change replaced the container: %+v, %d runs", st, f.runCount())
	}
}

func TestBrokenConfigChangesNothing(t *testing.T) {
	f := newFake()
	f.images["hello:1"] = "sha256:h"
	h := startHCL(t, f, hello("hi", "5s"))
	before := h.status("hello")
	h.write(hello("hey", "5s") + "\nplugin \"x\" { port = 0 }\n")
	h.Reload()
	// Then fix it: the intended change applies.
	h.write(hello("hey", "5s"))
	h.Reload()
	waitFor(t, "fixed config applied", func() bool { return h.status("hello").LastChange != "" })
	if _, body := h.get("/plugins/hello/"); !strings.HasPrefix(body, "hey") {
		t.Errorf("fixed config not serving: %q", body)
	}
	if st := h.status("hello"); st.Generation != before.Generation+1 {
		t.Errorf("generation %d, want %d: the broken config must not have applied anything", st.Generation, before.Generation+1)
	}
}

func TestPluginRemovedAndAdded(t *testing.T) {
	f := newFake()
	f.images["hello:1"] = "sha256:h"
	h := startHCL(t, f, hello("hi", "5s"))
	h.write(strings.ReplaceAll(hello("hi", "5s"), `plugin "hello"`, `plugin "hello2"`))
	h.Reload()
	waitFor(t, "hello gone, hello2 serving", func() bool {
		c1, _ := h.get("/plugins/hello/")
		c2, _ := h.get("/plugins/hello2/")
		return c1 == 404 && c2 == 200
	})
	waitFor(t, "one container left", func() bool { return f.count() == 1 })
}

func TestAdoptsMatchingContainerWithoutRestart(t *testing.T) {
	f := newFake()
	f.images["hello:1"] = "sha256:h"
	// What a previous runner process started for exactly this config.
	path := filepath.Join(t.TempDir(), "plugins.hcl")
	if err := os.WriteFile(path, []byte("runner {\n  listen = \"127.0.0.1:0\"\n  watch = false\n}\n"+hello("hi", "5s")), 0o644); err != nil {
		t.Fatal(err)
	}
	cfg, _, _ := config.Load(path)
	d := desiredFor(cfg, cfg.Plugins["hello"], "sha256:h", 0)
	spec := containerSpec(cfg.Plugins["hello"], d, 7)
	f.leftover(sandbox.Container{ID: "old", Plugin: "hello", Generation: 7, Snapshot: spec.Snapshot, SpecLabel: spec.SpecLabel, ImageID: "sha256:h"}, "adopted")
	f.leftover(sandbox.Container{ID: "older", Plugin: "hello", Generation: 6, Snapshot: "x"}, "stale")

	h := startHCL(t, f, hello("hi", "5s"))
	if f.runCount() != 0 {
		t.Errorf("%d containers started; a matching healthy one must be adopted", f.runCount())
	}
	st := h.status("hello")
	if st.Container != "old" || !st.Adopted || st.Generation != 7 {
		t.Errorf("status %+v", st)
	}
	if _, body := h.get("/plugins/hello/"); body != "adopted" {
		t.Errorf("served by %q", body)
	}
	waitFor(t, "stale generation removed", func() bool { _, err := f.Inspect(context.Background(), "older"); return err != nil })
	// The next generation continues above everything seen.
	h.write(hello("hey", "5s"))
	h.Reload()
	waitFor(t, "replacement", func() bool { return h.status("hello").Generation == 8 })
}

func TestImageEventTriggersReplacement(t *testing.T) {
	f := newFake()
	f.images["hello:1"] = "sha256:h"
	h := startHCL(t, f, hello("hi", "5s"))
	f.mu.Lock()
	f.images["hello:1"] = "sha256:h2"
	f.mu.Unlock()
	f.events <- sandbox.Event{Kind: sandbox.EventImage, Image: "hello:1"}
	waitFor(t, "replacement after image event", func() bool { return h.status("hello").ImageID == "sha256:h2" })
	if st := h.status("hello"); !strings.Contains(st.LastChange, "now resolves to") {
		t.Errorf("reason %q", st.LastChange)
	}
}

// Removing a plugin and adding it back while its old supervisor is still busy (here:
// mid-replacement) must end with the new one routed: the old supervisor's promotion and
// "remove route" must not land after the new route.
func TestRemoveThenReAddSameName(t *testing.T) {
	f := newFake()
	f.images["hello:1"] = "sha256:h"
	f.images["hello:slow"] = "sha256:slow"
	f.slow["sha256:slow"] = 400 * time.Millisecond
	h := startHCL(t, f, hello("hi", "5s"))

	h.write(strings.Replace(hello("slow", "5s"), "hello:1", "hello:slow", 1))
	h.Reload()
	waitFor(t, "slow replacement under way", func() bool { return f.runCount() == 2 })
	h.write("")
	h.Reload()
	waitFor(t, "removal applied", func() bool { return h.config().Plugins["hello"] == nil })
	h.write(hello("back", "5s"))
	h.Reload()
	waitFor(t, "hello back", func() bool { _, body := h.get("/plugins/hello/"); return strings.HasPrefix(body, "back") })
	waitFor(t, "only the new hello left", func() bool { return f.count() == 1 })
	if code, body := h.get("/plugins/hello/"); code != 200 || !strings.HasPrefix(body, "back") {
		t.Fatalf("after the old supervisor finished: %d %q", code, body)
	}
}

func TestBuildFromFolderRebuildsOnChange(t *testing.T) {
	f := newFake()
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "Dockerfile"), []byte("FROM scratch\nCOPY app /app\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "app"), []byte("v1"), 0o755); err != nil {
		t.Fatal(err)
	}
	h := startHCL(t, f, fmt.Sprintf("plugin \"built\" {\n  build = %q\n  port = 8080\n}\n", dir))
	st := h.status("built")
	if st.State != StateHealthy || !strings.HasPrefix(st.Image, "xcore-build/built:") || !strings.HasPrefix(st.ImageID, "sha256:built-") {
		t.Fatalf("status %+v", st)
	}
	// Nothing changed: a resync neither rebuilds nor replaces.
	h.Resync()
	if err := os.WriteFile(filepath.Join(dir, "app"), []byte("v2"), 0o755); err != nil {
		t.Fatal(err)
	}
	h.Resync()
	waitFor(t, "rebuilt and replaced", func() bool { return h.status("built").ImageID != st.ImageID })
	if got := h.status("built"); got.Generation != 2 || !strings.Contains(got.LastChange, "xcore-build/built:") {
		t.Errorf("after the change: %+v", got)
	}
}

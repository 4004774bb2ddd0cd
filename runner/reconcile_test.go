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

// reloadNow reloads the config and waits until every supervisor has decided on it.
func (h *hclRunner) reloadNow() ReloadResult {
	h.t.Helper()
	res, err := h.ReloadNow(context.Background())
	if err != nil || !res.Applied {
		h.t.Fatalf("reload: %+v %v", res, err)
	}
	h.mu.Lock()
	names := make([]string, 0, len(h.sups))
	for name := range h.sups {
		names = append(names, name)
	}
	h.mu.Unlock()
	for _, name := range names {
		h.caughtUp(name)
	}
	return res
}

// caughtUp waits until the supervisor of name has decided on every desired state.
func (h *hclRunner) caughtUp(name string) {
	h.t.Helper()
	h.mu.Lock()
	s := h.sups[name]
	h.mu.Unlock()
	waitFor(h.t, name+" decided", s.caughtUp)
}

// generations is how many generations of name were allocated (or seen).
func (h *hclRunner) generations(name string) int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.gens[name]
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
	h.reloadNow()
	waitFor(t, "failure recorded", func() bool { return h.status("hello").LastError != "" })
	st := h.status("hello")
	if st.Container != first.Container || st.State != StateHealthy || !strings.Contains(st.LastError, "exited with code 3") {
		t.Errorf("after failed replacement: %+v", st)
	}
	if code, body := h.get("/plugins/hello/"); code != 200 || !strings.HasPrefix(body, "hi") {
		t.Errorf("old generation not serving: %d %q", code, body)
	}
	waitFor(t, "the failed generation removed", func() bool { return f.count() == 1 })
	// Reloads without a change do not retry the failed replacement, nor does a
	// runner-side change: each reload is decided on by the supervisor, and no
	// generation is allocated for a retry.
	gens := h.generations("hello")
	for range 3 {
		h.reloadNow()
	}
	h.write(strings.Replace(hello("hi", "6s"), "hello:1", "hello:2", 1))
	h.reloadNow()
	if got := h.generations("hello"); got != gens {
		t.Fatalf("%d generations allocated by unchanged reloads, want none (a retry of the failed replacement)", got-gens)
	}
	h.write(strings.Replace(hello("hey", "5s"), "hello:1", "hello:2", 1)) // a real change: retried
	h.reloadNow()
	if got := h.generations("hello"); got != gens+1 {
		t.Errorf("%d generations allocated by a real change, want exactly one retry", got-gens)
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

// A config that fails validation changes nothing, even where the rest of it carries a
// change of its own; fixed, the intended change (another one) applies alone.
func TestBrokenConfigChangesNothing(t *testing.T) {
	f := newFake()
	f.images["hello:1"] = "sha256:h"
	h := startHCL(t, f, hello("hi", "5s"))
	before := h.status("hello")
	h.write(hello("broken", "5s") + "\nplugin \"x\" { port = 0 }\n")
	if res, err := h.ReloadNow(context.Background()); err != nil || res.Applied || len(res.Diagnostics) == 0 {
		t.Fatalf("broken config: %+v %v, want rejected with diagnostics", res, err)
	}
	h.caughtUp("hello")
	if got := h.generations("hello"); got != before.Generation {
		t.Fatalf("%d generations after a rejected config, want %d", got, before.Generation)
	}
	if _, body := h.get("/plugins/hello/"); !strings.HasPrefix(body, "hi") {
		t.Fatalf("serving %q after a rejected config, want the old generation", body)
	}
	h.write(hello("hey", "5s"))
	h.reloadNow()
	waitFor(t, "fixed config serving", func() bool { _, body := h.get("/plugins/hello/"); return strings.HasPrefix(body, "hey") })
	if st := h.status("hello"); st.Generation != before.Generation+1 || st.LastChange != "env GREETING changed" {
		t.Errorf("generation %d (%q), want %d: the broken config must not have applied anything", st.Generation, st.LastChange, before.Generation+1)
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
	d := desiredFor(cfg, cfg.Plugins["hello"], "sha256:h", 0, false)
	spec := containerSpec(cfg.Plugins["hello"], d, 7, 0)
	f.leftover(sandbox.Instance{ID: "old", Plugin: "hello", Generation: 7, Snapshot: spec.Snapshot, SpecLabel: spec.SpecLabel, ImageID: "sha256:h"}, "adopted")
	f.leftover(sandbox.Instance{ID: "older", Plugin: "hello", Generation: 6, Snapshot: "x"}, "stale")

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
	// Nothing changed: a resync neither rebuilds nor replaces. The supervisor has decided
	// on the pass's desired state before we count: a replacement would have allocated
	// generation 2 by then.
	if _, err := h.passNow(context.Background(), false); err != nil {
		t.Fatal(err)
	}
	h.caughtUp("built")
	if n, g := f.buildCount(), h.generations("built"); n != 1 || g != 1 {
		t.Fatalf("after a resync with nothing changed: %d builds, %d generations; want 1 and 1", n, g)
	}
	// Written whole (as an editor saves), so that the pass hashes either version.
	if err := os.WriteFile(filepath.Join(dir, "app.tmp"), []byte("v2"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(filepath.Join(dir, "app.tmp"), filepath.Join(dir, "app")); err != nil {
		t.Fatal(err)
	}
	if _, err := h.passNow(context.Background(), false); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "rebuilt and replaced", func() bool { return h.status("built").ImageID != st.ImageID })
	if got := h.status("built"); got.Generation != 2 || !strings.Contains(got.LastChange, "xcore-build/built:") || f.buildCount() != 2 {
		t.Errorf("after the change: %+v after %d builds, want generation 2 after 2 builds", got, f.buildCount())
	}
}

package runner

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/xcore/runner/config"
	"github.com/xcore/runner/proxy"
)

func TestRestartIsStartFirstAndPublishesEvents(t *testing.T) {
	f := newFake()
	f.images["hello:1"] = "sha256:h"
	h := startHCL(t, f, hello("hi", "5s"))
	events, unsubscribe := h.Subscribe()
	defer unsubscribe()
	before := h.status("hello")
	if err := h.Restart("hello"); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "new container", func() bool { return h.status("hello").Container != before.Container })
	if err := h.Restart("nope"); !errors.Is(err, ErrUnknownPlugin) {
		t.Errorf("Restart(nope) = %v", err)
	}
	seen := map[EventType]bool{}
	deadline := time.After(5 * time.Second)
	for !seen[EventReplaced] {
		select {
		case ev := <-events:
			seen[ev.Type] = true
			if ev.Type == EventReplaced && (ev.Reason != "restart requested" || ev.Duration <= 0) {
				t.Errorf("replaced event %+v", ev)
			}
		case <-deadline:
			t.Fatalf("events seen %v, no %q", seen, EventReplaced)
		}
	}
	if !seen[EventReplacing] || !seen[EventState] {
		t.Errorf("events seen %v", seen)
	}
}

func TestRestartOfFailedPluginGetsAFreshBudget(t *testing.T) {
	f := newFake()
	f.images["crash:1"] = "sha256:c"
	f.dead["sha256:c"] = 2
	r := startTest(t, f, testConfig(testPlugin("crash", "crash:1")))
	waitFor(t, "failed", func() bool { return r.Statuses()[0].State == StateFailed })
	runs := f.runCount()
	f.mu.Lock()
	delete(f.dead, "sha256:c") // "fixed"
	f.mu.Unlock()
	if err := r.Restart("crash"); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "healthy after restart", func() bool { return r.Statuses()[0].State == StateHealthy })
	if f.runCount() != runs+1 {
		t.Errorf("%d starts for one restart", f.runCount()-runs)
	}
}

func TestReloadNowRejectsBadConfigAndReportsPlan(t *testing.T) {
	f := newFake()
	f.images["hello:1"] = "sha256:h"
	h := startHCL(t, f, hello("hi", "5s"))
	h.write(hello("hi", "5s") + "plugin \"x\" {\n  port = 0\n}\n")
	res, err := h.ReloadNow(context.Background())
	if err != nil || res.Applied || len(res.Diagnostics) == 0 || !strings.Contains(res.Diagnostics[0], "plugins.hcl:") {
		t.Fatalf("bad config: %+v %v", res, err)
	}
	h.write(hello("hey", "5s"))
	res, err = h.ReloadNow(context.Background())
	if err != nil || !res.Applied || !res.Changes || res.Plan != "~ hello: replace (env GREETING changed)\n" {
		t.Fatalf("good config: %+v %v", res, err)
	}
	waitFor(t, "applied", func() bool { _, body := h.get("/plugins/hello/"); return strings.HasPrefix(body, "hey") })
}

func TestLogs(t *testing.T) {
	f := newFake()
	f.images["hello:1"] = "sha256:h"
	h := startHCL(t, f, hello("hi", "5s"))
	rc, err := h.Logs(context.Background(), "hello", false, 10)
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	b, _ := io.ReadAll(rc)
	if want := "log of " + h.status("hello").Container + "\n"; string(b) != want {
		t.Errorf("logs %q, want %q", b, want)
	}
	if _, err := h.Logs(context.Background(), "nope", false, 10); !errors.Is(err, ErrUnknownPlugin) {
		t.Errorf("Logs(nope) = %v", err)
	}
}

// trustRecorder is the proxy, recording what SetTrustedProxies is told.
type trustRecorder struct {
	*proxy.Proxy
	mu  sync.Mutex
	got [][]netip.Prefix
}

func (r *trustRecorder) SetTrustedProxies(p []netip.Prefix) {
	r.mu.Lock()
	r.got = append(r.got, p)
	r.mu.Unlock()
	r.Proxy.SetTrustedProxies(p)
}

// runner { trusted_proxies } applies on reload, to the proxy, without touching a plugin.
func TestTrustedProxiesApplyOnReload(t *testing.T) {
	f := newFake()
	f.images["hello:1"] = "sha256:h"
	path := filepath.Join(t.TempDir(), "plugins.hcl")
	write := func(trusted string) {
		body := fmt.Sprintf("runner {\n  listen = \"127.0.0.1:0\"\n  watch = false\n  trusted_proxies = [%s]\n}\n%s", trusted, hello("hi", "5s"))
		if err := os.WriteFile(path, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("")
	cfg, _, diags := config.Load(path)
	if diags.HasErrors() {
		t.Fatal(diags.Error())
	}
	rec := &trustRecorder{Proxy: proxy.New(proxy.Options{})}
	r := New(Options{Config: cfg, ConfigPath: path, Sandbox: f, Router: rec})
	t.Cleanup(func() { _ = r.Shutdown(context.Background()) })
	if err := r.Start(context.Background()); err != nil {
		t.Fatal(err)
	}

	// ReloadNow validates and plans; the reconcile loop applies it: wait for its event.
	events, unsubscribe := r.Subscribe()
	defer unsubscribe()
	reload := func() {
		t.Helper()
		if res, err := r.ReloadNow(context.Background()); err != nil || !res.Applied || res.Changes {
			t.Fatalf("reload: %+v %v, want applied without plugin changes", res, err)
		}
		deadline := time.After(5 * time.Second)
		for {
			select {
			case ev := <-events:
				if ev.Type == EventReload && ev.OK {
					return
				}
			case <-deadline:
				t.Fatal("no reload applied within 5s")
			}
		}
	}
	write(`"10.0.0.0/8"`)
	reload()
	reload()
	rec.mu.Lock()
	got := fmt.Sprint(rec.got)
	rec.mu.Unlock()
	if got != "[[10.0.0.0/8]]" {
		t.Errorf("SetTrustedProxies calls %s, want one with 10.0.0.0/8 (none for the unchanged reload)", got)
	}
	if st := r.Statuses()[0]; st.Generation != 1 || f.runCount() != 1 {
		t.Errorf("plugin touched: generation %d, %d starts", st.Generation, f.runCount())
	}
}

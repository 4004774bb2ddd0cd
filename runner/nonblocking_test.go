package runner

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/xcore/runner/config"
	"github.com/xcore/runner/proxy"
	"github.com/xcore/runner/sandbox"
)

// This file tests that a supervisor never blocks on long work: each test would wait for
// a start_timeout or a drain_timeout (30 s here, longer than waitFor's deadline) if the
// supervisor's loop did that work itself.

const slowHCL = `plugin "hello" {
  image = %q
  port  = 8080
  env   = { GREETING = %q }
  supervisor {
    start_timeout = "30s"
    drain_timeout = "30s"
    restart {
      backoff     = "10ms"
      max_backoff = "10ms"
    }
    health {
      path     = "/healthz"
      interval = "1h"
    }
  }
}
`

func slow(image, greeting string) string { return fmt.Sprintf(slowHCL, image, greeting) }

// holdRequest sends GET /hold to plugin and returns once the plugin holds it; the
// request answers when f.release is closed.
func holdRequest(t *testing.T, h *hclRunner, plugin string, f *fakeSandbox) <-chan int {
	t.Helper()
	code := make(chan int, 1)
	go func() {
		resp, err := http.Get("http://" + h.Addr().String() + "/plugins/" + plugin + "/hold")
		if err != nil {
			code <- 0
			return
		}
		resp.Body.Close()
		code <- resp.StatusCode
	}()
	select {
	case <-f.held:
	case <-time.After(10 * time.Second):
		t.Fatal("the plugin never got the held request")
	}
	return code
}

// While the old generation drains a request for up to 30 s, the new one's instance dies:
// it is restarted at once, and the old instance is still there, draining.
func TestNewGenerationDiesWhileOldDrains(t *testing.T) {
	f := newFake()
	f.images["hello:1"] = "sha256:h"
	h := startHCL(t, f, slow("hello:1", "hi"))
	first := h.status("hello")
	done := holdRequest(t, h, "hello", f)

	h.write(slow("hello:1", "hey"))
	h.reloadNow()
	waitFor(t, "generation 2 serving", func() bool { _, body := h.get("/plugins/hello/"); return strings.HasPrefix(body, "hey") })
	second := h.status("hello")
	f.events <- f.kill(second.Container, 1, false)
	waitFor(t, "generation 2 restarted", func() bool {
		st := h.status("hello")
		return st.Restarts == 1 && st.State == StateHealthy && st.Container != second.Container
	})
	if _, err := f.Inspect(context.Background(), first.Container); err != nil {
		t.Errorf("the old generation is gone before its request finished: %v", err)
	}
	close(f.release)
	if code := <-done; code != 200 {
		t.Errorf("the held request answered %d, want 200 (drained, not cut)", code)
	}
	waitFor(t, "old generation removed once drained", func() bool {
		_, err := f.Inspect(context.Background(), first.Container)
		return err != nil
	})
}

// A restart during a replacement that cannot finish before its start_timeout supersedes
// it at once: a new generation starts without waiting.
func TestRestartDuringReplacementActsAtOnce(t *testing.T) {
	f := newFake()
	f.images["hello:1"] = "sha256:h"
	f.images["hello:sick"] = "sha256:sick"
	f.sick["sha256:sick"] = true // never healthy: the replacement waits for 30 s
	h := startHCL(t, f, slow("hello:1", "hi"))

	h.write(slow("hello:sick", "hi"))
	h.reloadNow()
	waitFor(t, "the replacement started", func() bool { return f.runCount() == 2 })
	gens := h.generations("hello")
	if err := h.Restart("hello"); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "a new generation for the restart", func() bool { return h.generations("hello") == gens+1 && f.runCount() == 3 })
	waitFor(t, "the superseded start removed", func() bool { return f.count() == 2 }) // generation 1 serving + the restart's
	if code, body := h.get("/plugins/hello/"); code != 200 || !strings.HasPrefix(body, "hi") {
		t.Errorf("generation 1 must serve meanwhile: %d %q", code, body)
	}
}

// Removing a plugin from the config while its replacement waits for its start_timeout
// takes effect at once: 404, the start cancelled, every container removed.
func TestRemovalDuringReplacementActsAtOnce(t *testing.T) {
	f := newFake()
	f.images["hello:1"] = "sha256:h"
	f.images["hello:sick"] = "sha256:sick"
	f.sick["sha256:sick"] = true
	h := startHCL(t, f, slow("hello:1", "hi"))

	h.write(slow("hello:sick", "hi"))
	h.reloadNow()
	waitFor(t, "the replacement started", func() bool { return f.runCount() == 2 })
	h.write("")
	h.reloadNow()
	if code, _ := h.get("/plugins/hello/"); code != 404 {
		t.Errorf("removed plugin answers %d, want 404", code)
	}
	waitFor(t, "every container removed", func() bool { return f.count() == 0 })
}

// The mailbox keeps requests (edges) apart from the desired state (a level): a desired
// state submitted after a restart request or the engine's return does not erase them.
func TestMailboxKeepsRequestsApartFromDesiredState(t *testing.T) {
	t.Parallel()
	s := newSupervisor(&Runner{}, "hello", nil, nil)
	stopped := time.Now()
	s.engineBack(stopped)
	s.requestRestart()
	s.submit(work{d: Desired{Hash: "a"}}, nil)
	s.submit(work{d: Desired{Hash: "b"}}, &observation{at: stopped})
	s.submit(work{d: Desired{Hash: "c"}}, nil)
	m := s.take()
	if !m.restart || !m.engineStopped.Equal(stopped) {
		t.Errorf("restart %v, engine stopped %v: a later desired state erased a request", m.restart, m.engineStopped)
	}
	if m.desired == nil || m.desired.d.Hash != "c" || m.obs == nil {
		t.Errorf("desired %+v, observation %v: want the latest desired state and the latest observation", m.desired, m.obs)
	}
	if m := s.take(); m.restart || m.desired != nil || !m.engineStopped.IsZero() {
		t.Errorf("taken twice: %+v", m)
	}
}

// panicRouter is the proxy, but routing one plugin panics.
type panicRouter struct {
	*proxy.Proxy
	plugin string
}

func (p *panicRouter) SetReady(name string, b proxy.Backend) {
	if name == p.plugin {
		panic("injected: routing " + name)
	}
	p.Proxy.SetReady(name, b)
}

// A panic in a supervisor's loop (here: routing it) or in one of its goroutines (here:
// the engine client starting an instance) fails that plugin with "internal error", and
// the runner, the proxy and the other plugins go on.
func TestPanicsAreContained(t *testing.T) {
	f := newFake()
	f.images["hello:1"] = "sha256:h"
	f.images["boom:1"] = "sha256:boom"
	f.panicImage = "sha256:boom"
	cfg := testConfig(testPlugin("hello", "hello:1"), testPlugin("loop", "hello:1"), testPlugin("op", "boom:1"))
	r := New(Options{Config: cfg, Sandbox: f, Router: &panicRouter{Proxy: proxy.New(proxy.Options{}), plugin: "loop"}})
	t.Cleanup(func() { _ = r.Shutdown(context.Background()) })
	if err := r.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"loop", "op"} {
		st, _ := r.Status(name)
		if st.State != StateFailed || st.LastError != "internal error (see log)" {
			t.Errorf("%s: %s %q, want failed with internal error", name, st.State, st.LastError)
		}
		code, body := httpGet(t, "http://"+r.Addr().String()+"/plugins/"+name+"/")
		if code != 503 || !strings.Contains(body, "internal error") {
			t.Errorf("%s answers %d %q, want 503 naming the internal error", name, code, body)
		}
	}
	if code, body := httpGet(t, "http://"+r.Addr().String()+"/plugins/hello/x"); code != 200 || body != "hi /x" {
		t.Errorf("hello: %d %q", code, body)
	}
	// The runner goes on: a restart of the healthy plugin still works.
	before, _ := r.Status("hello")
	if err := r.Restart("hello"); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "hello restarted", func() bool {
		st, _ := r.Status("hello")
		return st.Generation > before.Generation && st.State == StateHealthy
	})
}

// The resync removes containers with the runner's labels that no supervisor holds, once
// they are older than the grace period, and tries again a removal the engine refused.
func TestResyncRemovesOrphansAfterGrace(t *testing.T) {
	f := newFake()
	f.images["hello:1"] = "sha256:h"
	h := startHCL(t, f, hello("hi", "5s"))
	f.mu.Lock()
	f.leftovers = append(f.leftovers,
		sandbox.Instance{ID: "old-orphan", Name: "xcore-hello-40", Plugin: "hello", Generation: 40, Created: time.Now().Add(-time.Hour)},
		sandbox.Instance{ID: "new-orphan", Name: "xcore-hello-41", Plugin: "hello", Generation: 41, Created: time.Now()},
		sandbox.Instance{ID: "gone-plugin", Name: "xcore-gone-1", Plugin: "gone", Generation: 1, Created: time.Now().Add(-time.Hour)},
	)
	f.removeErrs = 2
	f.mu.Unlock()
	if _, err := h.passNow(context.Background(), false); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "old orphans removed", func() bool {
		f.mu.Lock()
		defer f.mu.Unlock()
		return len(f.leftovers) == 1
	})
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.leftovers[0].ID != "new-orphan" {
		t.Errorf("left %v, want only the orphan younger than the grace period", f.leftovers)
	}
	if f.removeErrs != 0 {
		t.Errorf("%d injected removal failures unused: a refused removal was not retried", f.removeErrs)
	}
}

// runner plan before any runner used the state_dir: a plugin with services still plans
// (as an add), instead of an error about the services sidecar.
func TestDesireBeforeAnyRunner(t *testing.T) {
	t.Parallel()
	f := newFake()
	f.images["hello:1"] = "sha256:h"
	p := testPlugin("hello", "hello:1")
	p.Services = []string{"kv"}
	cfg := testConfig(p)
	cfg.Services["kv"] = &config.Service{Name: "kv", Builtin: "kv"}
	cfg.Runner.StateDir = t.TempDir()
	plan := MakePlan(Desire(context.Background(), cfg, f, nil), nil)
	if got := plan.String(); got != "+ hello: add\n" {
		t.Errorf("plan %q, want an add", got)
	}
}

package runner

import (
	"net/http"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/xcore/runner/config"
	"github.com/xcore/runner/sandbox"
)

func superviseTest(t *testing.T, edit func(*config.Plugin)) (*Runner, *fakeSandbox) {
	t.Helper()
	f := newFake()
	f.images["hello:1"] = "sha256:h"
	p := testPlugin("hello", "hello:1")
	p.Supervisor.Restart = config.Restart{Policy: config.RestartOnFailure, Attempts: 1000, Window: time.Minute, Backoff: 200 * time.Millisecond, MaxBackoff: 200 * time.Millisecond}
	if edit != nil {
		edit(p)
	}
	return startTest(t, f, testConfig(p)), f
}

func TestCrashIsRestartedWithA503Gap(t *testing.T) {
	r, f := superviseTest(t, nil)
	first := r.Statuses()[0]
	f.events <- f.kill(first.Container, 2, false)

	// During the backoff: 503 with Retry-After naming the crash, never a hang.
	waitFor(t, "503 during the restart gap", func() bool {
		resp, err := http.Get("http://" + r.Addr().String() + "/plugins/hello/")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == 503 && resp.Header.Get("Retry-After") != ""
	})
	waitFor(t, "restarted", func() bool { st := r.Statuses()[0]; return st.State == StateHealthy && st.Restarts == 1 })
	st := r.Statuses()[0]
	if st.Container == first.Container || st.LastExit != "exit code 2" {
		t.Errorf("after restart: %+v", st)
	}
	if code, _ := httpGet(t, "http://"+r.Addr().String()+"/plugins/hello/"); code != 200 {
		t.Errorf("restarted plugin answers %d", code)
	}
}

func TestOOMIsRecordedAsOOM(t *testing.T) {
	r, f := superviseTest(t, nil)
	f.events <- f.kill(r.Statuses()[0].Container, 137, true)
	waitFor(t, "restarted", func() bool { return r.Statuses()[0].Restarts == 1 })
	if st := r.Statuses()[0]; !strings.HasPrefix(st.LastExit, "OOM killed (memory limit 256MiB") {
		t.Errorf("LastExit %q", st.LastExit)
	}
}

func TestCleanExitWithOnFailureIsNotRestarted(t *testing.T) {
	r, f := superviseTest(t, nil)
	f.events <- f.kill(r.Statuses()[0].Container, 0, false)
	waitFor(t, "failed", func() bool { return r.Statuses()[0].State == StateFailed })
	if st := r.Statuses()[0]; !strings.Contains(st.LastError, "clean exit") || f.runCount() != 1 {
		t.Errorf("status %+v, %d runs", st, f.runCount())
	}
}

func TestFailingHealthChecksRestart(t *testing.T) {
	r, f := superviseTest(t, func(p *config.Plugin) {
		p.Supervisor.Health = config.Health{Path: "/healthz", Interval: 50 * time.Millisecond, Timeout: time.Second, Failures: 3}
	})
	first := r.Statuses()[0].Container
	f.mu.Lock()
	f.sick[first] = true
	f.mu.Unlock()
	waitFor(t, "restarted after failed probes", func() bool { return r.Statuses()[0].Restarts == 1 && r.Statuses()[0].State == StateHealthy })
	if st := r.Statuses()[0]; st.Container == first || !strings.HasPrefix(st.LastExit, "health check failed 3 times") {
		t.Errorf("status %+v", st)
	}
	waitFor(t, "sick container removed", func() bool { return f.count() == 1 })
}

func TestNoGoroutineLeakOver100Restarts(t *testing.T) {
	r, f := superviseTest(t, func(p *config.Plugin) {
		p.Supervisor.Restart.Backoff, p.Supervisor.Restart.MaxBackoff = time.Millisecond, time.Millisecond
	})
	http.DefaultClient.CloseIdleConnections()
	waitFor(t, "settled", func() bool { return r.Statuses()[0].State == StateHealthy })
	time.Sleep(50 * time.Millisecond) // let start-up goroutines (probe transports) wind down
	base := runtime.NumGoroutine()
	for i := range 100 {
		id := r.Statuses()[0].Container
		f.events <- f.kill(id, 1, false)
		waitFor(t, "restart", func() bool { st := r.Statuses()[0]; return st.Restarts == i+1 && st.State == StateHealthy })
	}
	waitFor(t, "dead containers removed", func() bool { return f.count() == 1 })
	deadline := time.Now().Add(5 * time.Second)
	for runtime.NumGoroutine() > base+5 {
		if time.Now().After(deadline) {
			t.Fatalf("goroutines: %d before 100 restarts, %d after", base, runtime.NumGoroutine())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// A container that died while the event stream was down (no die event) is noticed when
// the stream reconnects: the resync re-inspects it and restarts the plugin.
func TestResyncNoticesMissedDeath(t *testing.T) {
	r, f := superviseTest(t, nil)
	first := r.Statuses()[0].Container
	_ = f.kill(first, 1, false) // died; its die event is lost
	f.events <- sandbox.Event{Kind: sandbox.EventResync}
	waitFor(t, "restarted after resync", func() bool {
		st := r.Statuses()[0]
		return st.Restarts == 1 && st.State == StateHealthy && st.Container != first
	})
}

// A stopping dockerd stops every container: with restart = on-failure, the plugin's clean
// exit left it failed. When the engine's event stream comes back, such a plugin starts
// again; one that failed long before the engine went away stays failed.
func TestPluginStoppedByTheEngineStartsAgain(t *testing.T) {
	r, f := superviseTest(t, nil)
	first := r.Statuses()[0].Container
	f.events <- f.kill(first, 0, false) // dockerd's SIGTERM; the plugin exits 0
	waitFor(t, "failed (clean exit, on-failure)", func() bool { return r.Statuses()[0].State == StateFailed })

	// The engine stopped after the death: no verdict to undo. Once the supervisor has
	// taken that news (a decision made on its loop), the plugin is still failed.
	later := time.Now().Add(time.Minute)
	f.events <- sandbox.Event{Kind: sandbox.EventResync, EngineStopped: later}
	s := r.sups["hello"]
	waitFor(t, "the engine's return handled", func() bool { return s.engineSeen.Load() == later.UnixNano() })
	if st := r.Statuses()[0]; st.State != StateFailed || f.runCount() != 1 {
		t.Fatalf("engine stopped a minute after the death: %s after %d starts, want still failed", st.State, f.runCount())
	}

	f.events <- sandbox.Event{Kind: sandbox.EventResync, EngineStopped: time.Now().Add(-time.Minute)}
	waitFor(t, "serving again after the engine came back", func() bool {
		st := r.Statuses()[0]
		return st.State == StateHealthy && st.Container != first
	})
	if code, _ := httpGet(t, "http://"+r.Addr().String()+"/plugins/hello/"); code != 200 {
		t.Errorf("plugin answers %d", code)
	}
}

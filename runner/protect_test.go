package runner

import (
	"context"
	"net/netip"
	"reflect"
	"strings"
	"testing"

	"github.com/xcore/runner/config"
	"github.com/xcore/runner/proxy"
	"github.com/xcore/runner/sandbox"
)

// fakeGuard records what the runner asks of the backend's host rules.
type fakeGuard struct {
	unavailable string               // Protect reports this
	asked       []sandbox.Protection // every Protect
	runsBefore  int                  // Run calls made before the first Protect
	egress      []map[string]sandbox.Egress
	unprotected int // Unprotect calls
	leftAtExit  int // instances still there at the first Unprotect
}

func (f *fakeSandbox) Protect(_ context.Context, p sandbox.Protection) (sandbox.Protected, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.guard.asked) == 0 {
		f.guard.runsBefore = f.runs
	}
	f.guard.asked = append(f.guard.asked, p)
	if f.guard.unavailable != "" {
		return sandbox.Protected{Unavailable: f.guard.unavailable}, nil
	}
	return sandbox.Protected{Host: p.ProtectHost, Egress: true, Rules: "fake table"}, nil
}

func (f *fakeSandbox) SetEgress(_ context.Context, plugins map[string]sandbox.Egress) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.guard.egress = append(f.guard.egress, plugins)
	return nil
}

func (f *fakeSandbox) Unprotect(context.Context) (bool, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.guard.unprotected == 0 {
		f.guard.leftAtExit = len(f.ctrs)
	}
	f.guard.unprotected++
	return true, nil
}

func (f *fakeSandbox) guardState() fakeGuard {
	f.mu.Lock()
	defer f.mu.Unlock()
	g := f.guard
	g.asked = append([]sandbox.Protection(nil), g.asked...)
	g.egress = append([]map[string]sandbox.Egress(nil), g.egress...)
	return g
}

const egressHCL = `plugin "open" {
  image = "hello:1"
  port  = 8080
}
plugin "shut" {
  image = "hello:1"
  port  = 8080
  supervisor {
    egress = %s
  }
}
`

var (
	egressNone = sandbox.Egress{Restrict: true}
	egressTen  = sandbox.Egress{Restrict: true, Allow: []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")}}
)

// protectConfig is a config with plugin open (egress all) and shut (egress none).
func protectConfig() *config.Config {
	shut := testPlugin("shut", "hello:1")
	shut.Supervisor.Egress = config.Egress{Restrict: true}
	cfg := testConfig(testPlugin("open", "hello:1"), shut)
	cfg.Runner.ProtectHost = true
	return cfg
}

// TestProtectedBeforeAnyStart: Start asks for host protection and every plugin's
// egress before the first instance starts, and each instance's spec carries its
// plugin's egress. Shutdown removes the rules once every instance is gone.
func TestProtectedBeforeAnyStart(t *testing.T) {
	f := newFake()
	f.images["hello:1"] = "sha256:h"
	r := New(Options{Config: protectConfig(), Sandbox: f, Router: proxy.New(proxy.Options{})})
	if err := r.Start(context.Background()); err != nil {
		t.Fatal(err)
	}

	g := f.guardState()
	if len(g.asked) != 1 || g.runsBefore != 0 {
		t.Fatalf("Protect called %d times, after %d starts; want once, before any", len(g.asked), g.runsBefore)
	}
	want := map[string]sandbox.Egress{"open": {}, "shut": egressNone}
	if p := g.asked[0]; !p.ProtectHost || !reflect.DeepEqual(p.Egress, want) {
		t.Errorf("asked %+v, want protect_host and egress %v", p, want)
	}
	f.mu.Lock()
	spec := f.lastSpec["shut"]
	f.mu.Unlock()
	if !reflect.DeepEqual(spec.Egress, egressNone) {
		t.Errorf("spec of shut has egress %s, want none", spec.Egress)
	}
	if st, ok := r.Protected(); !ok || !st.Host || !st.Egress {
		t.Errorf("Protected() = %+v, %v", st, ok)
	}

	if err := r.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
	if g := f.guardState(); g.unprotected != 1 || g.leftAtExit != 0 {
		t.Errorf("Unprotect called %d times with %d instances left; want once, after all were removed", g.unprotected, g.leftAtExit)
	}
}

// TestKeepLeavesTheRules: with keep_on_exit the plugins go on running and so do their
// rules.
func TestKeepLeavesTheRules(t *testing.T) {
	f := newFake()
	f.images["hello:1"] = "sha256:h"
	r := New(Options{Config: protectConfig(), Sandbox: f, Router: proxy.New(proxy.Options{}), Keep: true})
	if err := r.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	if err := r.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
	if g := f.guardState(); g.unprotected != 0 {
		t.Errorf("Unprotect called %d times with keep_on_exit, want never", g.unprotected)
	}
}

// TestEgressUnenforceable: where the backend cannot enforce egress limits, a plugin
// that has one does not start and says why; the others serve.
func TestEgressUnenforceable(t *testing.T) {
	f := newFake()
	f.images["hello:1"] = "sha256:h"
	const why = "host protection unavailable: the runner lacks CAP_NET_ADMIN"
	f.guard.unavailable = why
	h := startHCL(t, f, strings.Replace(egressHCL, "%s", `["10.0.0.0/8"]`, 1))

	st := h.status("shut")
	if st.State != StateFailed || st.LastError != `egress = ["10.0.0.0/8"] cannot be enforced: `+why {
		t.Errorf("shut: %s %q, want failed saying why", st.State, st.LastError)
	}
	if st := h.status("open"); st.State != StateHealthy {
		t.Errorf("open (egress all): %s %q, want healthy", st.State, st.LastError)
	}
	f.mu.Lock()
	_, started := f.lastSpec["shut"]
	f.mu.Unlock()
	if started {
		t.Error("an instance of shut was started")
	}
	if p, ok := h.Protected(); !ok || p.Unavailable != why {
		t.Errorf("Protected() = %+v, %v; want the reason", p, ok)
	}
}

// TestEgressAppliesLive: a reload that changes only egress hands the new policies to
// the backend before the supervisors see the config, and replaces nothing.
func TestEgressAppliesLive(t *testing.T) {
	f := newFake()
	f.images["hello:1"] = "sha256:h"
	h := startHCL(t, f, strings.Replace(egressHCL, "%s", `"none"`, 1))
	before := h.status("shut")
	runs := f.runCount()

	h.write(strings.Replace(egressHCL, "%s", `["10.0.0.0/8"]`, 1))
	h.reloadNow()
	g := f.guardState()
	if n := len(g.egress); n != 1 {
		t.Fatalf("SetEgress called %d times, want once", n)
	}
	if want := map[string]sandbox.Egress{"open": {}, "shut": egressTen}; !reflect.DeepEqual(g.egress[0], want) {
		t.Errorf("SetEgress(%v), want %v", g.egress[0], want)
	}
	if st := h.status("shut"); st.Container != before.Container || st.Generation != before.Generation || f.runCount() != runs {
		t.Errorf("an egress change replaced the plugin: %+v (was %+v), %d starts", st, before, f.runCount()-runs)
	}
}

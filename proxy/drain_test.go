package proxy

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"
)

// A request that looked up the route just before a swap must not be counted in on the
// retired target after the runner saw it drained: acquire refuses, the caller retries.
func TestAcquireRefusesRetiredTarget(t *testing.T) {
	t.Parallel()
	tg := newTarget(Target{ID: "a", Network: "tcp", Address: "127.0.0.1:1"}, 1, DefaultMaxResponseHeader, false)
	if got := tg.acquire(0); got != acquired {
		t.Fatalf("acquire on live target = %v", got)
	}
	tg.retire()
	if got := tg.acquire(0); got != retiredTarget {
		t.Fatalf("acquire on retired target = %v, want retiredTarget", got)
	}
	if n := tg.active.Load(); n != 1 {
		t.Fatalf("active = %d after refused acquire, want 1 (only the first)", n)
	}
	if tg.isReleased() {
		t.Fatal("released with a request in flight")
	}
	tg.release()
	if !tg.isReleased() {
		t.Error("not released after the last release")
	}
}

// Released fires for a target that left the set once its last request finished, and
// not before; a target that stays is not released.
func TestReleasedAfterItsLastRequest(t *testing.T) {
	t.Parallel()
	hold := make(chan struct{})
	entered := make(chan struct{}, 1)
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		entered <- struct{}{}
		<-hold
	}))
	defer up.Close()
	other := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}))
	defer other.Close()
	p := New(Options{})
	defer p.Close()
	a, b := targetOf(t, up.URL), targetOf(t, other.URL)
	p.SetReady("x", Backend{Targets: []Target{a}, Generation: 1})
	front := httptest.NewServer(p)
	defer front.Close()

	done := make(chan struct{})
	go func() {
		defer close(done)
		resp, err := http.Get(front.URL + "/plugins/x/")
		if err == nil {
			resp.Body.Close()
		}
	}()
	<-entered
	p.SetReady("x", Backend{Targets: []Target{b}, Generation: 2})
	select {
	case <-p.Released("x", a.ID):
		t.Fatal("released with a request in flight")
	default:
	}
	if n := p.InFlight("x"); n != 1 {
		t.Errorf("in flight = %d, want 1", n)
	}
	close(hold)
	<-done
	select {
	case <-p.Released("x", a.ID):
	case <-time.After(10 * time.Second):
		t.Fatal("not released after its last request")
	}
	select {
	case <-p.Released("x", b.ID):
		t.Error("the serving target is released")
	default:
	}
	if n := p.InFlight("x"); n != 0 {
		t.Errorf("in flight = %d after the request, want 0", n)
	}
	p.Remove("x")
	select {
	case <-p.Released("x", b.ID):
	case <-time.After(10 * time.Second):
		t.Fatal("an idle target of a removed plugin is not released")
	}
}

type recordingObserver struct {
	mu    sync.Mutex
	calls []string
}

func (o *recordingObserver) RequestDone(plugin string, status int, d time.Duration) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.calls = append(o.calls, fmt.Sprintf("%s %d", plugin, status))
}

func TestObserverSeesConfiguredPluginsOnly(t *testing.T) {
	t.Parallel()
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/teapot" {
			w.WriteHeader(http.StatusTeapot)
		}
	}))
	defer up.Close()
	obs := &recordingObserver{}
	p := New(Options{Observer: obs})
	defer p.Close()
	p.SetReady("x", Backend{Targets: []Target{targetOf(t, up.URL)}, Generation: 1})
	p.SetNotReady("y", "starting")
	front := httptest.NewServer(p)
	defer front.Close()
	for _, path := range []string{"/plugins/x/", "/plugins/x/teapot", "/plugins/y/", "/plugins/random-scan/", "/other"} {
		resp, err := http.Get(front.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
	}
	eventually(t, "observed", func() bool { obs.mu.Lock(); defer obs.mu.Unlock(); return len(obs.calls) >= 3 })
	obs.mu.Lock()
	defer obs.mu.Unlock()
	if got := strings.Join(obs.calls, ","); got != "x 200,x 418,y 503" {
		t.Errorf("observed %q", got)
	}
}

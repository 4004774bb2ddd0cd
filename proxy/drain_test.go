package proxy

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"
)

// A request that looked up the route just before a swap must not be counted in on the
// retired backend after the runner saw it drained: acquire refuses, the caller retries.
func TestAcquireRefusesRetiredBackend(t *testing.T) {
	t.Parallel()
	p := New(Options{})
	u, _ := url.Parse("http://127.0.0.1:1")
	b := p.newBackend("x", Backend{URL: u, Generation: 1})
	if got := b.acquire(); got != acquired {
		t.Fatalf("acquire on live backend = %v", got)
	}
	b.retire()
	if got := b.acquire(); got != retiredBackend {
		t.Fatalf("acquire on retired backend = %v, want retiredBackend", got)
	}
	if n := b.active.Load(); n != 1 {
		t.Fatalf("active = %d after refused acquire, want 1 (only the first)", n)
	}
	b.release()
	if !b.drained() {
		t.Error("not drained after the last release")
	}
}

func TestInFlightGeneration(t *testing.T) {
	t.Parallel()
	hold := make(chan struct{})
	entered := make(chan struct{}, 1)
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		entered <- struct{}{}
		<-hold
	}))
	defer up.Close()
	u, _ := url.Parse(up.URL)
	p := New(Options{})
	defer p.Close()
	p.SetReady("x", Backend{URL: u, Generation: 1})
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
	p.SetReady("x", Backend{URL: u, Generation: 2})
	if n := p.InFlightGeneration("x", 1); n != 1 {
		t.Errorf("generation 1 in flight = %d, want 1", n)
	}
	if n := p.InFlightGeneration("x", 2); n != 0 {
		t.Errorf("generation 2 in flight = %d, want 0", n)
	}
	close(hold)
	<-done
	// The client can have its answer a moment before the proxy counts the request out.
	eventually(t, "generation 1 drained", func() bool { return p.InFlightGeneration("x", 1) == 0 })
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
	u, _ := url.Parse(up.URL)
	obs := &recordingObserver{}
	p := New(Options{Observer: obs})
	defer p.Close()
	p.SetReady("x", Backend{URL: u, Generation: 1})
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

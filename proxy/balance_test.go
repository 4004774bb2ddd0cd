package proxy

import (
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
)

// holding is an upstream that counts the requests it holds until release is closed.
type holding struct {
	mu      sync.Mutex
	n       int
	entered chan struct{}
	release chan struct{}
}

func newHolding() *holding {
	return &holding{entered: make(chan struct{}, 64), release: make(chan struct{})}
}

func (h *holding) handler(w http.ResponseWriter, r *http.Request) {
	h.mu.Lock()
	h.n++
	h.mu.Unlock()
	h.entered <- struct{}{}
	<-h.release
	io.WriteString(w, "ok")
}

func (h *holding) count() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.n
}

// A generation of two instances shares the requests: with the fewest in flight chosen
// from two, requests that each wait for the previous to arrive alternate exactly.
func TestBalancesByFewestInFlight(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	a, b := newHolding(), newHolding()
	ua, ub := upstream(t, a.handler), upstream(t, b.handler)
	h.p.SetReady("hello", Backend{Targets: []Target{targetOf(t, ua.URL), targetOf(t, ub.URL)}, Generation: 1})

	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() { h.get(t, "/plugins/hello/") })
		select { // the next request is sent once this one is held
		case <-a.entered:
		case <-b.entered:
		}
	}
	if a.count() != 4 || b.count() != 4 {
		t.Errorf("instances got %d and %d of 8 held requests, want 4 and 4", a.count(), b.count())
	}
	close(a.release)
	close(b.release)
	wg.Wait()
}

// max_concurrent is per instance: two instances with a limit of 1 hold two requests, and
// the third gets 503 at once.
func TestMaxConcurrentPerInstance(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	a, b := newHolding(), newHolding()
	ua, ub := upstream(t, a.handler), upstream(t, b.handler)
	h.p.SetReady("hello", Backend{Targets: []Target{targetOf(t, ua.URL), targetOf(t, ub.URL)}, MaxConcurrent: 1})

	var wg sync.WaitGroup
	for range 2 {
		wg.Go(func() { h.get(t, "/plugins/hello/") })
		select {
		case <-a.entered:
		case <-b.entered:
		}
	}
	if a.count() != 1 || b.count() != 1 {
		t.Fatalf("held %d and %d, want one on each instance", a.count(), b.count())
	}
	if resp := h.get(t, "/plugins/hello/"); resp.StatusCode != http.StatusServiceUnavailable {
		t.Errorf("third request: %d, want 503", resp.StatusCode)
	}
	close(a.release)
	close(b.release)
	wg.Wait()
}

// deadAddr is a loopback address nothing listens on: connecting is refused.
func deadAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}

// A request that could not connect to one instance goes to another, whatever its
// method: nothing was sent. The body arrives whole. The instance that refuses is ejected
// after three failures in a row, and balanced to again once the runner says it is alive.
func TestConnectFailureRetriedOnAnotherInstance(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	live := upstream(t, func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		w.Write(b)
	})
	dead := Target{ID: "dead", Network: "tcp", Address: deadAddr(t)}
	h.p.SetReady("hello", Backend{Targets: []Target{dead, targetOf(t, live.URL)}})

	for i := range 20 {
		resp := h.do(t, "POST", "/plugins/hello/", strings.NewReader("payload"), nil)
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || string(body) != "payload" {
			t.Fatalf("POST %d: %d %q, want 200 payload", i, resp.StatusCode, body)
		}
	}
	h.p.mu.Lock()
	tg := h.p.targets["hello"]["dead"]
	h.p.mu.Unlock()
	if !tg.ejected.Load() {
		t.Error("an instance refusing every connection is not ejected")
	}
	h.p.Alive("hello", "dead")
	if tg.ejected.Load() || tg.failures.Load() != 0 {
		t.Error("Alive did not bring the instance back")
	}
}

// resetting is an upstream that accepts connections and closes them without a word.
func resetting(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			buf := make([]byte, 4096)
			c.Read(buf) // the request arrived: something was sent
			c.Close()
		}
	}()
	return ln.Addr().String()
}

// A GET whose connection broke before any of the answer came can be repeated on
// another instance; a POST that reached the plugin cannot: 502.
func TestBrokenConnectionRetriedForGETOnly(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	live := upstream(t, func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok") })
	broken := Target{ID: "broken", Network: "tcp", Address: resetting(t)}
	h.p.SetReady("hello", Backend{Targets: []Target{broken, targetOf(t, live.URL)}})

	var posts502 int
	for i := range 20 {
		if resp := h.get(t, "/plugins/hello/"); resp.StatusCode != 200 {
			t.Fatalf("GET %d: %d, want 200 (retried on the live instance)", i, resp.StatusCode)
		}
		resp := h.do(t, "POST", "/plugins/hello/", strings.NewReader("x"), nil)
		resp.Body.Close()
		if resp.StatusCode == http.StatusBadGateway {
			posts502++
		}
	}
	if posts502 == 0 {
		t.Error("no POST sent to the instance that breaks connections answered 502: a POST that reached a plugin must not be repeated")
	}
}

// A connection that fails to an instance the runner confirms stopped is a restart
// under way: 503 with Retry-After, not the plugin's 502; one that is alive is a 502.
func TestStoppedInstanceIs503(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	dead := Target{ID: "dead", Network: "tcp", Address: deadAddr(t)}
	h.p.SetReady("hello", Backend{Targets: []Target{dead}})
	var asked []string
	var mu sync.Mutex
	stopped := true
	h.p.SetGoneCheck(func(plugin, id string) (string, bool) {
		mu.Lock()
		defer mu.Unlock()
		asked = append(asked, plugin+"/"+id)
		return "restarting after exit code 3", stopped
	})
	resp := h.get(t, "/plugins/hello/")
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 503 || resp.Header.Get("Retry-After") == "" || !strings.Contains(string(body), "restarting after exit code 3") {
		t.Errorf("stopped instance: %d %q (Retry-After %q), want 503 with Retry-After", resp.StatusCode, body, resp.Header.Get("Retry-After"))
	}
	mu.Lock()
	stopped = false
	mu.Unlock()
	if resp := h.get(t, "/plugins/hello/"); resp.StatusCode != 502 {
		t.Errorf("instance alive but refusing: %d, want 502", resp.StatusCode)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(asked) != 2 || asked[0] != "hello/dead" {
		t.Errorf("asked %v", asked)
	}
}

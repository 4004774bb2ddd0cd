package proxy

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"regexp"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

func TestRouting(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	h.p.SetReady("hello", backendOf(t, upstream(t, echo)))

	tests := []struct {
		name, path         string
		wantPath, wantEsc  string
		wantRaw, wantQuery string
	}{
		{"nested", "/plugins/hello/echo/a/b?x=1", "/echo/a/b", "/echo/a/b", "", "x=1"},
		{"bare name", "/plugins/hello", "/", "/", "", ""},
		{"trailing slash", "/plugins/hello/", "/", "/", "", ""},
		{"bare name with query", "/plugins/hello?q=a%20b&q=2", "/", "/", "", "q=a%20b&q=2"},
		{"encoded slash kept", "/plugins/hello/a%2Fb", "/a/b", "/a%2Fb", "/a%2Fb", ""},
		{"encoded space", "/plugins/hello/sp%20ace/x", "/sp ace/x", "/sp%20ace/x", "", ""},
		{"trailing slash kept", "/plugins/hello/dir/", "/dir/", "/dir/", "", ""},
		{"encoded name", "/plugins/hel%6Co/x", "/x", "/x", "", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			s := decodeSeen(t, h.get(t, tt.path))
			if s.Path != tt.wantPath || s.Escaped != tt.wantEsc || s.RawPath != tt.wantRaw || s.Query != tt.wantQuery {
				t.Errorf("upstream saw path %q escaped %q raw %q query %q; want %q %q %q %q",
					s.Path, s.Escaped, s.RawPath, s.Query, tt.wantPath, tt.wantEsc, tt.wantRaw, tt.wantQuery)
			}
		})
	}
}

func TestTargetHostAndEscapedPath(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	up := upstream(t, echo)
	h.p.SetReady("hello", Backend{Targets: []Target{targetOf(t, up.URL)}})

	s := decodeSeen(t, h.get(t, "/plugins/hello/a%2Fb?x=1"))
	if s.Escaped != "/a%2Fb" || s.Query != "x=1" {
		t.Errorf("upstream saw %q ? %q, want /a%%2Fb ? x=1", s.Escaped, s.Query)
	}
	if s.Host != strings.TrimPrefix(up.URL, "http://") {
		t.Errorf("Host %q, want the backend's %q", s.Host, up.URL)
	}
}

func TestForwardedHeaders(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	h.p.SetReady("hello", backendOf(t, upstream(t, echo)))
	hexID := regexp.MustCompile(`^[0-9a-f]{32}$`)

	tests := []struct {
		name   string
		sent   http.Header
		wantID string // "" = generated
	}{
		{"no id", http.Header{}, ""},
		{"valid id kept", http.Header{"X-Request-Id": {"abc-123_X.y"}}, "abc-123_X.y"},
		{"max length kept", http.Header{"X-Request-Id": {strings.Repeat("a", 128)}}, strings.Repeat("a", 128)},
		{"too long replaced", http.Header{"X-Request-Id": {strings.Repeat("a", 129)}}, ""},
		{"bad chars replaced", http.Header{"X-Request-Id": {"bad id!"}}, ""},
		{"fake forwarding ignored", http.Header{
			"X-Forwarded-For":    {"6.6.6.6"},
			"X-Forwarded-Proto":  {"https"},
			"X-Forwarded-Prefix": {"/evil"},
			"Forwarded":          {"for=6.6.6.6"},
		}, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			res := h.do(t, http.MethodGet, "/plugins/hello/x", nil, tt.sent)
			s := decodeSeen(t, res)
			want := map[string]string{
				"X-Forwarded-For":    "127.0.0.1",
				"X-Forwarded-Proto":  "http",
				"X-Forwarded-Prefix": "/plugins/hello",
				"X-Forwarded-Host":   strings.TrimPrefix(h.srv.URL, "http://"),
				"Forwarded":          "",
			}
			for k, v := range want {
				if got := strings.Join(s.Header[k], ","); got != v {
					t.Errorf("%s = %q, want %q", k, got, v)
				}
			}
			id := s.Header.Get("X-Request-Id")
			if tt.wantID != "" && id != tt.wantID {
				t.Errorf("X-Request-Id %q, want %q", id, tt.wantID)
			}
			if tt.wantID == "" && !hexID.MatchString(id) {
				t.Errorf("X-Request-Id %q, want 32 hex digits", id)
			}
			if got := res.Header.Values("X-Request-Id"); len(got) != 1 || got[0] != id {
				t.Errorf("response X-Request-Id %q, want [%q]", got, id)
			}
		})
	}
}

func TestUpstreamCannotForgeProxyHeaders(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	h.p.SetReady("hello", backendOf(t, upstream(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-Xcore-Error", "1")
		w.Header().Set("X-Request-Id", "forged")
		w.WriteHeader(http.StatusTeapot)
	})))
	res := h.do(t, http.MethodGet, "/plugins/hello/", nil, http.Header{"X-Request-Id": {"mine"}})
	if res.StatusCode != http.StatusTeapot {
		t.Fatalf("status %d, want the plugin's 418", res.StatusCode)
	}
	if res.Header.Get("X-Xcore-Error") != "" {
		t.Error("plugin response carries X-Xcore-Error")
	}
	if got := res.Header.Values("X-Request-Id"); len(got) != 1 || got[0] != "mine" {
		t.Errorf("X-Request-Id %q, want [mine]", got)
	}
}

func TestProxyErrors(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	called := atomic.Int32{}
	up := upstream(t, func(w http.ResponseWriter, r *http.Request) { called.Add(1) })
	h.p.SetReady("hello", backendOf(t, up))
	h.p.SetNotReady("starting", "starting")
	h.p.SetNotReady("broken", "image xyz not found")
	h.p.SetFailed("crashing", "crashed 5 times in 5m0s: exit code 2")
	h.p.SetReady("recovered", backendOf(t, up))
	h.p.SetFailed("recovered", "crashed")
	h.p.SetNotReady("recovered", "starting")
	h.p.SetReady("gone", backendOf(t, up))
	h.p.Remove("gone")

	tests := []struct {
		name, path string
		status     int
		detail     string
		plugin     string
		retryAfter string // for a 503
	}{
		{"unknown plugin", "/plugins/nope/x", 404, "unknown plugin", "nope", ""},
		{"removed plugin", "/plugins/gone/x", 404, "unknown plugin", "gone", ""},
		{"root", "/", 404, "", "", ""},
		{"outside", "/foo/bar", 404, "", "", ""},
		{"plugins alone", "/plugins", 404, "", "", ""},
		{"plugins slash", "/plugins/", 404, "", "", ""},
		{"dot dot", "/plugins/hello/../x", 400, "", "", ""},
		{"dot dot at end", "/plugins/hello/a/..", 400, "", "", ""},
		{"encoded dot dot", "/plugins/hello/%2e%2e/x", 400, "", "", ""},
		{"mixed encoded dot dot", "/plugins/hello/.%2E/x", 400, "", "", ""},
		{"encoded slash dot dot", "/plugins/hello/a%2F..%2Fb", 400, "", "", ""},
		{"double slash", "/plugins/hello//x", 400, "", "", ""},
		{"dot", "/plugins/hello/./x", 400, "", "", ""},
		{"traversal into name", "/plugins/../plugins/hello/x", 400, "", "", ""},
		{"not ready", "/plugins/starting/x", 503, "plugin not ready: starting", "starting", "1"},
		{"not ready with a reason", "/plugins/broken", 503, "plugin not ready: image xyz not found", "broken", "1"},
		// Failed until its config changes: retrying in a second would not help.
		{"failed", "/plugins/crashing/x", 503, "plugin failed: crashed 5 times in 5m0s: exit code 2", "crashing", ""},
		{"failed then restarting", "/plugins/recovered/x", 503, "plugin not ready: starting", "recovered", "1"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			res := h.get(t, tt.path)
			pb := problem(t, res, tt.status)
			if tt.detail != "" && pb.Detail != tt.detail {
				t.Errorf("detail %q, want %q", pb.Detail, tt.detail)
			}
			if pb.Plugin != tt.plugin {
				t.Errorf("plugin %q, want %q", pb.Plugin, tt.plugin)
			}
			if ra := res.Header.Get("Retry-After"); ra != tt.retryAfter {
				t.Errorf("Retry-After %q, want %q", ra, tt.retryAfter)
			}
		})
	}
	t.Cleanup(func() {
		if n := called.Load(); n != 0 {
			t.Errorf("upstream called %d times by failing requests", n)
		}
	})
}

func TestBadGateway(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		addr func(t *testing.T) string
	}{
		{"closed port", func(t *testing.T) string { return freePort(t) }},
		{"accept then close", func(t *testing.T) string { return hangUp(t) }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			h := newHarness(t)
			addr := tt.addr(t)
			h.p.SetReady("hello", Backend{Targets: []Target{targetOf(t, "http://"+addr)}})
			for _, method := range []string{http.MethodGet, http.MethodPost} {
				res := h.do(t, method, "/plugins/hello/x", strings.NewReader("body"), nil)
				pb := problem(t, res, http.StatusBadGateway)
				if pb.Detail != "plugin connection failed" || contains(pb.Detail, "127.0.0.1") {
					t.Errorf("detail %q", pb.Detail)
				}
			}
		})
	}
}

func TestGatewayTimeout(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	release := make(chan struct{})
	defer close(release)
	up := upstream(t, func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-r.Context().Done():
		case <-release:
		case <-time.After(2 * time.Second):
		}
	})
	b := backendOf(t, up)
	b.RequestTimeout = 200 * time.Millisecond
	h.p.SetReady("hello", b)

	start := time.Now()
	res := h.get(t, "/plugins/hello/slow")
	elapsed := time.Since(start)
	problem(t, res, http.StatusGatewayTimeout)
	if elapsed < b.RequestTimeout || elapsed > 330*time.Millisecond {
		t.Errorf("answered after %v, want within [200ms, 330ms)", elapsed)
	}
	eventually(t, "in-flight count back to 0", func() bool { return h.p.InFlight("hello") == 0 })
}

func TestSwapKeepsInFlightOnOldBackend(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	entered := make(chan struct{})
	release := make(chan struct{})
	var aConns atomic.Int32
	a := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/hold" {
			close(entered)
			<-release
		}
		io.WriteString(w, "A")
	}))
	a.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		switch s {
		case http.StateNew:
			aConns.Add(1)
		case http.StateClosed, http.StateHijacked:
			aConns.Add(-1)
		}
	}
	a.Start()
	t.Cleanup(a.Close)
	bSrv := upstream(t, func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "B") })

	h.p.SetReady("hello", Backend{Targets: []Target{targetOf(t, a.URL)}, Generation: 1})
	if got := body(t, h.get(t, "/plugins/hello/warm")); got != "A" { // leaves an idle conn to A
		t.Fatalf("before swap: %q", got)
	}

	held := make(chan string, 1)
	go func() {
		res, err := h.client.Get(h.srv.URL + "/plugins/hello/hold")
		if err != nil {
			held <- err.Error()
			return
		}
		defer res.Body.Close()
		b, _ := io.ReadAll(res.Body)
		held <- res.Status + " " + string(b)
	}()
	<-entered

	h.p.SetReady("hello", Backend{Targets: []Target{targetOf(t, bSrv.URL)}, Generation: 2})
	for range 3 {
		if got := body(t, h.get(t, "/plugins/hello/new")); got != "B" {
			t.Errorf("after swap: %q, want B", got)
		}
	}
	// 1: the request held on the old generation (the ones to B may still be
	// returning from the handler when their client already has the answer).
	eventually(t, "InFlight 1", func() bool { return h.p.InFlight("hello") == 1 })

	close(release)
	if got := <-held; got != "200 OK A" {
		t.Errorf("held request: %q, want 200 OK A", got)
	}
	eventually(t, "old backend drained", func() bool { return h.p.InFlight("hello") == 0 })
	// The old transport's connections are closed once it drained, without Close.
	eventually(t, "connections to the old backend closed", func() bool { return aConns.Load() == 0 })
}

func body(t testing.TB, res *http.Response) string {
	t.Helper()
	b, err := io.ReadAll(res.Body)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func TestUnixSocketBackend(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	sock := filepath.Join(t.TempDir(), "plugin.sock")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	up := httptest.NewUnstartedServer(http.HandlerFunc(echo))
	up.Listener = ln
	up.Start()
	t.Cleanup(up.Close)

	h.p.SetReady("hello", Backend{Targets: []Target{targetOf(t, "unix://"+sock)}})
	s := decodeSeen(t, h.get(t, "/plugins/hello/x?y=1"))
	if s.Path != "/x" || s.Query != "y=1" || s.Header.Get("X-Forwarded-Prefix") != "/plugins/hello" {
		t.Errorf("upstream saw %+v", s)
	}
}

func TestClientGoneWritesNothing(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	entered := make(chan struct{})
	up := upstream(t, func(w http.ResponseWriter, r *http.Request) {
		close(entered)
		<-r.Context().Done()
	})
	h.p.SetReady("hello", backendOf(t, up))

	ctx, cancel := context.WithCancel(context.Background())
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, h.srv.URL+"/plugins/hello/x", nil)
	errc := make(chan error, 1)
	go func() {
		res, err := h.client.Do(req)
		if err == nil {
			res.Body.Close()
		}
		errc <- err
	}()
	<-entered
	cancel()
	if err := <-errc; !errors.Is(err, context.Canceled) {
		t.Errorf("client error %v, want context.Canceled", err)
	}
	eventually(t, "in-flight count back to 0", func() bool { return h.p.InFlight("hello") == 0 })
}

func TestStatusOf(t *testing.T) {
	t.Parallel()
	tests := []struct {
		err  error
		want int
	}{
		{errNoRoute, 404},
		{errUnknownPlugin, 404},
		{errBadPath, 400},
		{&notReadyError{reason: "starting"}, 503},
		{errOverCapacity, 503},
		{errBodyTooLarge, 413},
		{errTimeout, 504},
		{errClientGone, 499},
		{&notReadyError{reason: "crashed", failed: true}, 503},
		{&upstreamError{err: io.EOF}, 502},
		{&headerLimitError{limit: 1 << 20}, 502},
		{errors.New("anything else"), 502},
	}
	for _, tt := range tests {
		if got := statusOf(tt.err); got != tt.want {
			t.Errorf("statusOf(%v) = %d, want %d", tt.err, got, tt.want)
		}
	}
}

func TestCleanPath(t *testing.T) {
	t.Parallel()
	tests := []struct {
		path string
		want bool
	}{
		{"/", true},
		{"/plugins/hello", true},
		{"/plugins/hello/", true},
		{"/plugins/hello/a.b/..c/...", true},
		{"/plugins/hello/%2e%2ex", true},
		{"", false},
		{"*", false},
		{"//", false},
		{"/a//b", false},
		{"/a/./b", false},
		{"/a/.", false},
		{"/a/..", false},
		{"/a/%2e%2e/b", false},
		{"/a/%2E./b", false},
		{"/a/%2e", false},
	}
	for _, tt := range tests {
		if got := cleanPath(tt.path); got != tt.want {
			t.Errorf("cleanPath(%q) = %v, want %v", tt.path, got, tt.want)
		}
	}
}

// TestNoGoroutineLeak is not parallel: it counts the process's goroutines.
func TestNoGoroutineLeak(t *testing.T) {
	base := runtime.NumGoroutine()
	func() {
		p := New(Options{})
		srv := httptest.NewServer(p)
		defer srv.Close()
		a := httptest.NewServer(http.HandlerFunc(echo))
		defer a.Close()
		b := httptest.NewServer(http.HandlerFunc(echo))
		defer b.Close()
		client := srv.Client()

		p.SetReady("hello", Backend{Targets: []Target{targetOf(t, a.URL)}, RequestTimeout: time.Second})
		for i := range 10 {
			if i == 5 {
				p.SetReady("hello", Backend{Targets: []Target{targetOf(t, b.URL)}, Generation: 2})
			}
			res, err := client.Get(srv.URL + "/plugins/hello/x")
			if err != nil {
				t.Fatal(err)
			}
			io.Copy(io.Discard, res.Body)
			res.Body.Close()
		}
		p.Remove("hello")
		p.Close()
		client.CloseIdleConnections()
	}()
	eventually(t, "goroutines back to baseline", func() bool {
		return runtime.NumGoroutine() <= base+1
	})
}

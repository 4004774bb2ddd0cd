package proxy

import (
	"bufio"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httptrace"
	"net/textproto"
	"strings"
	"sync/atomic"
	"testing"
)

// countingUpstream is an upstream that counts the connections it accepted.
func countingUpstream(t *testing.T, handler http.HandlerFunc) (*httptest.Server, *atomic.Int64) {
	t.Helper()
	var conns atomic.Int64
	srv := httptest.NewUnstartedServer(handler)
	srv.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		if s == http.StateNew {
			conns.Add(1)
		}
	}
	srv.Start()
	t.Cleanup(srv.Close)
	return srv, &conns
}

// TestFastPathKeepsConnectionsAlive: sequential GETs and HEADs, answered with a
// length, chunked or empty, reuse one upstream connection.
func TestFastPathKeepsConnectionsAlive(t *testing.T) {
	t.Parallel()
	up, conns := countingUpstream(t, func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/chunked":
			io.WriteString(w, "a")
			http.NewResponseController(w).Flush()
			io.WriteString(w, "b")
		case "/empty":
			w.WriteHeader(http.StatusNoContent)
		default:
			io.WriteString(w, "ab")
		}
	})
	h := newHarness(t)
	h.p.SetReady("hello", backendOf(t, up))
	for i := range 30 {
		method, path := http.MethodGet, []string{"/plugins/hello/", "/plugins/hello/chunked", "/plugins/hello/empty"}[i%3]
		if i%5 == 4 {
			method = http.MethodHead
		}
		res := h.do(t, method, path, nil, nil)
		body, err := io.ReadAll(res.Body)
		if err != nil {
			t.Fatal(err)
		}
		want := "ab"
		if method == http.MethodHead || strings.HasSuffix(path, "empty") {
			want = ""
		}
		if res.StatusCode >= 300 || string(body) != want {
			t.Fatalf("%s %s: %d %q, want %q", method, path, res.StatusCode, body, want)
		}
	}
	if n := conns.Load(); n != 1 {
		t.Errorf("upstream accepted %d connections for 30 sequential requests, want 1", n)
	}
}

// TestFastPathRetriesClosedIdleConnection: a plugin may close a kept-alive
// connection while it is idle; the next GET goes out on a new one instead of failing.
func TestFastPathRetriesClosedIdleConnection(t *testing.T) {
	t.Parallel()
	up, conns := countingUpstream(t, func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "ok")
	})
	h := newHarness(t)
	h.p.SetReady("hello", backendOf(t, up))
	for i := range 3 {
		res := h.get(t, "/plugins/hello/")
		if body, _ := io.ReadAll(res.Body); res.StatusCode != 200 || string(body) != "ok" {
			t.Fatalf("request %d: %d %q", i, res.StatusCode, body)
		}
		up.CloseClientConnections() // the proxy's idle connection is now closed
	}
	if n := conns.Load(); n != 3 {
		t.Errorf("upstream accepted %d connections, want 3", n)
	}
}

// TestFastPathEarlyHints: a 103 before the answer reaches the client, as it does
// through http.Transport.
func TestFastPathEarlyHints(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	h.p.SetReady("hello", backendOf(t, upstream(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Link", "</style.css>; rel=preload")
		w.WriteHeader(http.StatusEarlyHints)
		w.Header().Del("Link")
		io.WriteString(w, "ok")
	})))
	var hints []string
	trace := &httptrace.ClientTrace{Got1xxResponse: func(code int, hdr textproto.MIMEHeader) error {
		hints = append(hints, hdr.Get("Link"))
		return nil
	}}
	req, err := http.NewRequestWithContext(httptrace.WithClientTrace(t.Context(), trace), http.MethodGet, h.srv.URL+"/plugins/hello/", nil)
	if err != nil {
		t.Fatal(err)
	}
	res, err := h.client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	body, _ := io.ReadAll(res.Body)
	if res.StatusCode != 200 || string(body) != "ok" {
		t.Fatalf("%d %q", res.StatusCode, body)
	}
	if len(hints) != 1 || hints[0] != "</style.css>; rel=preload" {
		t.Errorf("103 hints seen by the client: %q", hints)
	}
}

// TestFastPathBoundsResponseHeaders: a plugin sending endless response headers
// gets 502, not the proxy's memory.
func TestFastPathBoundsResponseHeaders(t *testing.T) {
	t.Parallel()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		br := bufio.NewReader(c)
		if _, err := http.ReadRequest(br); err != nil {
			return
		}
		io.WriteString(c, "HTTP/1.1 200 OK\r\n")
		line := "X-Filler: " + strings.Repeat("a", 1000) + "\r\n"
		for range DefaultMaxResponseHeader/len(line) + 10 {
			if _, err := io.WriteString(c, line); err != nil {
				return
			}
		}
		io.WriteString(c, "Content-Length: 0\r\n\r\n")
	}()
	h := newHarness(t)
	h.p.SetReady("hello", Backend{Targets: []Target{targetOf(t, "http://"+ln.Addr().String())}, Generation: 1})
	problem(t, h.get(t, "/plugins/hello/"), http.StatusBadGateway)
}

// TestNewUpstreamForProbes: the transport the runner's health probes use on their
// own (no ReverseProxy) never reads what a plugin wrote on an idle connection as an
// answer either, and bounds response headers.
func TestNewUpstreamForProbes(t *testing.T) {
	t.Parallel()
	answered, written := make(chan struct{}), make(chan *rawConn, 1)
	plugin := newRawPlugin(t, answerEach(func(c *rawConn, req *http.Request) bool {
		switch req.URL.Path {
		case "/poison":
			if !c.send(ok("/poison")) {
				return false
			}
			<-answered
			if !c.send(smuggled) {
				return false
			}
			written <- c
			return true
		case "/endless":
			c.send("HTTP/1.1 200 OK\r\n")
			for c.send("X-Filler: " + strings.Repeat("a", 1000) + "\r\n") {
			}
			return false
		}
		return c.send(ok(req.URL.Path))
	}))
	rt := NewUpstream("tcp", plugin.addr, 1)
	t.Cleanup(rt.CloseIdleConnections)
	get := func(path string) (string, error) {
		req, err := http.NewRequestWithContext(t.Context(), http.MethodGet, "http://"+plugin.addr+path, nil)
		if err != nil {
			t.Fatal(err)
		}
		res, err := rt.RoundTrip(req)
		if err != nil {
			return "", err
		}
		defer res.Body.Close()
		b, err := io.ReadAll(res.Body)
		return string(b), err
	}
	if got, err := get("/poison"); got != "/poison" || err != nil {
		t.Fatalf("GET /poison: %q %v", got, err)
	}
	close(answered)
	waitDelivered(t, recv(t, written, "the unsolicited answer").Conn.(*net.TCPConn))
	if got, err := get("/next"); got != "/next" || err != nil {
		t.Errorf("GET /next: %q %v", got, err)
	}
	eventually(t, "the poisoned connection closed", func() bool { return plugin.hungUp.Load() == 1 })

	var limit *headerLimitError
	if _, err := get("/endless"); !errors.As(err, &limit) || limit.limit != DefaultMaxResponseHeader {
		t.Errorf("GET /endless: %v, want the %d-byte header limit", err, DefaultMaxResponseHeader)
	}
}

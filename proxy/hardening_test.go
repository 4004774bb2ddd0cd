package proxy

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// namedEcho is echo that also says which upstream answered.
func namedEcho(name string) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-Backend", name)
		echo(w, r)
	}
}

// TestPathCannotLeaveItsPlugin sends traversal and encoding tricks: each is refused by
// the proxy, or reaches exactly the plugin its first segment names with the rest of the
// path and nothing above it.
func TestPathCannotLeaveItsPlugin(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	h.p.SetReady("a", backendOf(t, upstream(t, namedEcho("a"))))
	h.p.SetReady("b", backendOf(t, upstream(t, namedEcho("b"))))

	tests := []struct {
		path    string
		status  int    // a proxy error, or 0: routed
		backend string // when routed
		want    string // path the plugin sees, decoded
	}{
		{"/plugins/a/../b/x", 400, "", ""},
		{"/plugins/a/%2e%2e/b/x", 400, "", ""},
		{"/plugins/a/%2E%2e/b/x", 400, "", ""},
		{"/plugins/a/.%2e/b/x", 400, "", ""},
		{"/plugins/a/..%2fb%2fx", 400, "", ""},
		{"/plugins/a/x%2f..%2f..%2fb", 400, "", ""},
		{"/plugins/a/x%2F%2E%2E", 400, "", ""},
		{"/plugins/a/%2f%2fb", 400, "", ""},
		{"/plugins/a//b", 400, "", ""},
		{"/plugins//a/x", 400, "", ""},
		{"/plugins/./a/x", 400, "", ""},
		{"/plugins/a/./x", 400, "", ""},
		{"/plugins/..", 400, "", ""},
		{"/plugins/%2e%2e/a", 400, "", ""},
		{"/plugins/a%2f..%2fb/x", 400, "", ""},      // the name itself decodes to a/../b
		{"/plugins/a%2fb/x", 404, "", ""},           // name "a/b": no such plugin
		{"/plugins/a%2f/x", 400, "", ""},            // decodes to /plugins/a//x
		{"/plugins/b%00/x", 404, "", ""},            // NUL in the name
		{"/plugins/%61/x", 0, "a", "/x"},            // %61 is "a"
		{"/plugins/a%20/x", 404, "", ""},            // "a "
		{"/plugins/A/x", 404, "", ""},               // names are case-sensitive
		{"/plugins/\u0430/x", 404, "", ""},          // Cyrillic a
		{"/plugins/a/%252e%252e/b", 400, "", ""},    // double-encoded dots: refused too
		{"/plugins/a/..;/b", 0, "a", "/..;/b"},      // still inside a
		{"/plugins/a/x/..%5cb", 0, "a", "/x/..\\b"}, // a backslash is no separator
		{"/plugins/a/%00", 0, "a", "/\x00"},
		{"/plugins/a/" + strings.Repeat("x", 4000), 0, "a", "/" + strings.Repeat("x", 4000)},
		{"/plugins/" + strings.Repeat("a", 4000) + "/x", 404, "", ""},
		{"/plugins/b", 0, "b", "/"},
		{"/plugins/b/100%25", 0, "b", "/100%"},
	}
	for _, tt := range tests {
		t.Run(tt.path[:min(len(tt.path), 60)], func(t *testing.T) {
			t.Parallel()
			res := h.get(t, tt.path)
			if tt.status != 0 {
				problem(t, res, tt.status)
				return
			}
			if got := res.Header.Get("X-Backend"); got != tt.backend {
				t.Fatalf("answered by %q, want %q", got, tt.backend)
			}
			if s := decodeSeen(t, res); s.Path != tt.want {
				t.Errorf("plugin saw %q, want %q", s.Path, tt.want)
			}
		})
	}
}

// TestNoAdminRoutesOnPublicHandler: the public handler serves /plugins/ only; the admin
// API lives on another listener.
func TestNoAdminRoutesOnPublicHandler(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	h.p.SetReady("hello", backendOf(t, upstream(t, echo)))
	for _, tc := range []struct{ method, path string }{
		{"GET", "/"},
		{"GET", "/v1/plugins"},
		{"GET", "/v1/plugins/hello"},
		{"POST", "/v1/reload"},
		{"POST", "/v1/plugins/hello/restart"},
		{"GET", "/v1/plugins/hello/logs?follow=1"},
		{"GET", "/v1/events"},
		{"GET", "/metrics"},
		{"GET", "/debug/pprof/"},
		{"GET", "/healthz"},
		{"GET", "/pluginsx/hello"},
		{"DELETE", "/"},
	} {
		t.Run(tc.method+" "+tc.path, func(t *testing.T) {
			t.Parallel()
			res := h.do(t, tc.method, tc.path, nil, nil)
			if pb := problem(t, res, http.StatusNotFound); pb.Plugin != "" {
				t.Errorf("plugin %q in the problem", pb.Plugin)
			}
		})
	}
}

func TestHopByHopHeadersStripped(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	h.p.SetReady("hello", backendOf(t, upstream(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Connection", "X-Internal")
		w.Header().Set("X-Internal", "plugin-private")
		w.Header().Set("Keep-Alive", "timeout=5")
		w.Header().Set("Proxy-Authenticate", "Basic")
		echo(w, r)
	})))
	res := h.do(t, http.MethodGet, "/plugins/hello/", nil, http.Header{
		"Connection":          {"X-Secret, Upgrade"},
		"X-Secret":            {"hop-only"},
		"Keep-Alive":          {"timeout=5"},
		"Te":                  {"gzip"},
		"Trailer":             {"X-T"},
		"Upgrade":             {"h2c"},
		"Proxy":               {"http://evil.example:3128"}, // httpoxy
		"Proxy-Authorization": {"Basic Zm9vOmJhcg=="},
		"Proxy-Connection":    {"keep-alive"},
		"Proxy-Custom":        {"x"},
		"X-Kept":              {"end-to-end"},
	})
	s := decodeSeen(t, res)
	for _, k := range []string{"X-Secret", "Keep-Alive", "Te", "Trailer", "Upgrade", "Proxy", "Proxy-Authorization",
		"Proxy-Connection", "Proxy-Custom"} {
		if v, ok := s.Header[k]; ok {
			t.Errorf("plugin got hop-by-hop %s: %q", k, v)
		}
	}
	if c := s.Header.Get("Connection"); strings.Contains(strings.ToLower(c), "upgrade") || strings.Contains(c, "X-Secret") {
		t.Errorf("plugin got Connection %q", c)
	}
	if s.Header.Get("X-Kept") != "end-to-end" {
		t.Error("an end-to-end header was dropped")
	}
	for _, k := range []string{"X-Internal", "Keep-Alive", "Proxy-Authenticate"} {
		if v := res.Header.Get(k); v != "" {
			t.Errorf("client got the plugin's hop-by-hop %s: %q", k, v)
		}
	}
}

// wsUpstream answers an upgrade with 101 and the protocol it is told to, then echoes
// one line.
func wsUpstream(t *testing.T, answer string, upgrades *atomic.Int32) *httptest.Server {
	return upstream(t, func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Upgrade") == "" {
			http.Error(w, "no upgrade", http.StatusBadRequest)
			return
		}
		upgrades.Add(1)
		conn, brw, err := http.NewResponseController(w).Hijack()
		if err != nil {
			return
		}
		defer conn.Close()
		fmt.Fprintf(brw, "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: %s\r\n\r\n", answer)
		brw.Flush()
		line, _ := brw.ReadString('\n')
		brw.WriteString("echo " + line)
		brw.Flush()
	})
}

func TestUpgradeOnlyWebSocket(t *testing.T) {
	t.Parallel()
	rawUpgrade := func(t *testing.T, addr, proto string) (*http.Response, *bufio.ReadWriter) {
		t.Helper()
		conn, err := net.DialTimeout("tcp", addr, 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { conn.Close() })
		_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
		fmt.Fprintf(conn, "GET /plugins/hello/ws HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: %s\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n", proto)
		brw := bufio.NewReadWriter(bufio.NewReader(conn), bufio.NewWriter(conn))
		res, err := http.ReadResponse(brw.Reader, nil)
		if err != nil {
			t.Fatal(err)
		}
		return res, brw
	}
	t.Run("websocket passes", func(t *testing.T) {
		t.Parallel()
		h := newHarness(t)
		var n atomic.Int32
		h.p.SetReady("hello", backendOf(t, wsUpstream(t, "websocket", &n)))
		res, brw := rawUpgrade(t, h.srv.Listener.Addr().String(), "websocket")
		if res.StatusCode != http.StatusSwitchingProtocols {
			t.Fatalf("status %d, want 101", res.StatusCode)
		}
		brw.WriteString("hi\n")
		brw.Flush()
		if line, _ := brw.ReadString('\n'); line != "echo hi\n" {
			t.Errorf("through the upgraded connection: %q", line)
		}
	})
	t.Run("h2c is not forwarded as an upgrade", func(t *testing.T) {
		t.Parallel()
		h := newHarness(t)
		var n atomic.Int32
		h.p.SetReady("hello", backendOf(t, wsUpstream(t, "h2c", &n)))
		res, _ := rawUpgrade(t, h.srv.Listener.Addr().String(), "h2c")
		if res.StatusCode == http.StatusSwitchingProtocols || n.Load() != 0 {
			t.Errorf("status %d, upgrades at the plugin %d: want a plain request", res.StatusCode, n.Load())
		}
	})
	t.Run("plugin switching to another protocol is 502", func(t *testing.T) {
		t.Parallel()
		h := newHarness(t)
		var n atomic.Int32
		h.p.SetReady("hello", backendOf(t, wsUpstream(t, "h2c", &n)))
		res, _ := rawUpgrade(t, h.srv.Listener.Addr().String(), "websocket")
		if res.StatusCode != http.StatusBadGateway || res.Header.Get("X-Xcore-Error") != "1" {
			t.Errorf("status %d marker %q, want a 502 problem", res.StatusCode, res.Header.Get("X-Xcore-Error"))
		}
	})
}

// TestPluginCannotSetRunnerHeaders: neither as headers (any status, streamed or not)
// nor as trailers, announced or not.
func TestPluginCannotSetRunnerHeaders(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	h.p.SetReady("hello", backendOf(t, upstream(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-Xcore-Error", "1")
		w.Header().Set("X-Request-Id", "forged")
		w.Header().Set("Trailer", "X-Xcore-Error")
		w.Header().Set("Content-Type", "application/problem+json")
		switch r.URL.Path {
		case "/500":
			w.WriteHeader(http.StatusInternalServerError)
		case "/stream":
			w.Header().Set("Content-Type", "text/event-stream")
		}
		io.WriteString(w, `{"status":500}`)
		http.NewResponseController(w).Flush()
		w.Header().Set("X-Xcore-Error", "1")                   // announced trailer
		w.Header().Set(http.TrailerPrefix+"X-Request-Id", "t") // unannounced trailer
	})))
	for _, path := range []string{"/ok", "/500", "/stream"} {
		t.Run(path, func(t *testing.T) {
			t.Parallel()
			res := h.do(t, http.MethodGet, "/plugins/hello"+path, nil, http.Header{"X-Request-Id": {"mine"}})
			io.Copy(io.Discard, res.Body)
			if res.Header.Get("X-Xcore-Error") != "" || res.Trailer.Get("X-Xcore-Error") != "" {
				t.Errorf("plugin set X-Xcore-Error: header %q trailer %q", res.Header.Get("X-Xcore-Error"), res.Trailer.Get("X-Xcore-Error"))
			}
			if got := res.Header.Values("X-Request-Id"); len(got) != 1 || got[0] != "mine" {
				t.Errorf("X-Request-Id %q, want [mine]", got)
			}
			if v := res.Trailer.Get("X-Request-Id"); v != "" {
				t.Errorf("trailer X-Request-Id %q", v)
			}
		})
	}
}

// chunkedUpload writes the headers of a chunked POST to path on addr, then up to total
// bytes of body in 64 KiB chunks until the server stops reading. It returns the response
// and the number of body bytes written when it arrived.
func chunkedUpload(t *testing.T, addr, path string, total int64) (*http.Response, int64) {
	t.Helper()
	conn, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	_ = conn.SetDeadline(time.Now().Add(20 * time.Second))
	fmt.Fprintf(conn, "POST %s HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nContent-Type: application/octet-stream\r\n\r\n", path)
	var written atomic.Int64
	writerDone := make(chan struct{})
	go func() {
		defer close(writerDone)
		chunk := fmt.Appendf(nil, "%x\r\n%s\r\n", 64<<10, strings.Repeat("z", 64<<10))
		for written.Load() < total {
			if _, err := conn.Write(chunk); err != nil {
				return // the server closed the connection: what we want
			}
			written.Add(64 << 10)
		}
		conn.Write([]byte("0\r\n\r\n"))
	}()
	res, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatalf("no response while uploading (%d bytes written): %v", written.Load(), err)
	}
	at := written.Load()
	t.Cleanup(func() { conn.Close(); <-writerDone })
	return res, at
}

func TestMaxBodyChunkedNeverReachesPlugin(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	var called atomic.Int32
	b := backendOf(t, upstream(t, func(w http.ResponseWriter, r *http.Request) {
		called.Add(1)
		echo(w, r)
	}))
	b.MaxBody = 1 << 20
	h.p.SetReady("hello", b)

	const total = 50 << 20
	res, at := chunkedUpload(t, h.srv.Listener.Addr().String(), "/plugins/hello/upload", total)
	problem(t, res, http.StatusRequestEntityTooLarge)
	if at >= total {
		t.Errorf("413 only after the whole %d-byte body was sent", at)
	}
	if !res.Close {
		t.Error("413 without Connection: close: the server would read on")
	}
	if n := called.Load(); n != 0 {
		t.Errorf("plugin called %d times for a body over max_body", n)
	}
	t.Logf("413 after %d KiB of a %d MiB chunked body", at>>10, total>>20)

	// Under the limit, the body is forwarded whole, with its length.
	req, _ := http.NewRequest(http.MethodPost, h.srv.URL+"/plugins/hello/upload", unsized{strings.NewReader(strings.Repeat("a", 1<<20))})
	ok, err := h.client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer ok.Body.Close()
	if s := decodeSeen(t, ok); s.BodyLen != 1<<20 || s.Header.Get("Content-Length") != "1048576" {
		t.Errorf("plugin got %d bytes, Content-Length %q", s.BodyLen, s.Header.Get("Content-Length"))
	}
}

// TestMaxBodyAboveBodyPeekStreams: with a max_body over bodyPeek a chunked body is
// streamed; over the limit it is cut off and the client gets 413.
func TestMaxBodyAboveBodyPeekStreams(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	b := backendOf(t, upstream(t, echo))
	b.MaxBody = 4 * bodyPeek
	h.p.SetReady("hello", b)
	send := func(n int) *http.Response {
		req, _ := http.NewRequest(http.MethodPost, h.srv.URL+"/plugins/hello/", unsized{strings.NewReader(strings.Repeat("b", n))})
		res, err := h.client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { res.Body.Close() })
		return res
	}
	if s := decodeSeen(t, send(3*bodyPeek)); s.BodyLen != 3*bodyPeek {
		t.Errorf("plugin got %d bytes, want %d", s.BodyLen, 3*bodyPeek)
	}
	res, at := chunkedUpload(t, h.srv.Listener.Addr().String(), "/plugins/hello/", 50<<20)
	problem(t, res, http.StatusRequestEntityTooLarge)
	if at >= 50<<20 {
		t.Errorf("413 only after the whole body was sent")
	}
}

// TestSlowChunkedBodyTimesOut: a client trickling a chunked body holds a slot only for
// request_timeout.
func TestSlowChunkedBodyTimesOut(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	var called atomic.Int32
	b := backendOf(t, upstream(t, func(w http.ResponseWriter, r *http.Request) { called.Add(1) }))
	b.MaxBody = 1 << 20
	b.RequestTimeout = 300 * time.Millisecond
	h.p.SetReady("hello", b)

	conn, err := net.Dial("tcp", h.srv.Listener.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
	begin := time.Now()
	fmt.Fprint(conn, "POST /plugins/hello/ HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n")
	res, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatal(err)
	}
	took := time.Since(begin)
	problem(t, res, http.StatusRequestTimeout)
	if took > 2*time.Second {
		t.Errorf("408 after %v, want about request_timeout (300ms)", took)
	}
	if called.Load() != 0 {
		t.Error("plugin called with an incomplete body")
	}
	eventually(t, "slot released", func() bool { return h.p.InFlight("hello") == 0 })
}

// TestDumpOutboundRequest documents, in one place, what the plugin receives for a
// request full of spoofed and hop-by-hop headers.
func TestDumpOutboundRequest(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	got := make(chan string, 1)
	h.p.SetReady("hello", backendOf(t, upstream(t, func(w http.ResponseWriter, r *http.Request) {
		b, _ := httputil.DumpRequest(r, false)
		got <- string(b)
	})))
	res := h.do(t, http.MethodGet, "/plugins/hello/x", nil, http.Header{
		"X-Forwarded-For": {"6.6.6.6"}, "Proxy": {"http://evil"}, "Connection": {"X-Drop"}, "X-Drop": {"1"},
	})
	res.Body.Close()
	dump := <-got
	for _, bad := range []string{"6.6.6.6", "evil", "X-Drop"} {
		if strings.Contains(dump, bad) {
			t.Errorf("outbound request contains %q:\n%s", bad, dump)
		}
	}
}

// TestSlowBodyBoundedByRequestTimeout: a client that stops sending its body half-way
// (Content-Length or chunked, with or without max_body) gets 504 at request_timeout and
// its connection closed: cancelling the context alone would leave the transport blocked
// on the body read for as long as the client likes.
func TestSlowBodyBoundedByRequestTimeout(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name    string
		maxBody int64
		header  string
		body    string
	}{
		{"content-length", 0, "Content-Length: 100", "0123456789"},
		{"content-length with max_body", 1 << 20, "Content-Length: 100", "0123456789"},
		{"chunked", 0, "Transfer-Encoding: chunked", "a\r\n0123456789\r\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			h := newHarness(t)
			b := backendOf(t, upstream(t, func(w http.ResponseWriter, r *http.Request) {
				io.Copy(io.Discard, r.Body) // fails when the proxy gives up
			}))
			b.RequestTimeout = 200 * time.Millisecond
			b.MaxBody = tc.maxBody
			h.p.SetReady("hello", b)

			conn, err := net.Dial("tcp", h.srv.Listener.Addr().String())
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
			begin := time.Now()
			fmt.Fprintf(conn, "POST /plugins/hello/ HTTP/1.1\r\nHost: x\r\n%s\r\n\r\n%s", tc.header, tc.body)
			br := bufio.NewReader(conn)
			res, err := http.ReadResponse(br, nil)
			if err != nil {
				t.Fatalf("no answer: %v", err)
			}
			status := http.StatusGatewayTimeout
			if tc.maxBody > 0 && strings.Contains(tc.header, "chunked") {
				status = http.StatusRequestTimeout // still in the body peek
			}
			problem(t, res, status)
			if d := time.Since(begin); d > 2*time.Second {
				t.Errorf("answered after %v, want about request_timeout (200ms)", d)
			}
			if !res.Close {
				t.Error("no Connection: close")
			}
			if _, err := br.ReadByte(); err != io.EOF {
				t.Errorf("connection not closed after the answer: %v", err)
			}
			eventually(t, "slot released", func() bool { return h.p.InFlight("hello") == 0 })
		})
	}
}

package proxy

import (
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptrace"
	"net/textproto"
	"slices"
	"strings"
	"testing"
	"time"
)

// The conformance suite: how the proxy copes with plugins that speak HTTP/1.1
// badly or strangely, each case against a raw-TCP plugin and on both upstream
// paths (upstreamPaths), with the same requests.

// recv waits for a value on ch, failing the test after 5 s.
func recv[T any](t testing.TB, ch <-chan T, what string) T {
	t.Helper()
	select {
	case v := <-ch:
		return v
	case <-time.After(5 * time.Second):
		t.Fatalf("timed out waiting for %s", what)
		panic("unreachable")
	}
}

// getBody sends GET path and returns the status and the whole body.
func getBody(t testing.TB, h *harness, path string) (int, string) {
	t.Helper()
	res := h.get(t, path)
	body, err := io.ReadAll(res.Body)
	if err != nil {
		t.Fatalf("GET %s: read body: %v", path, err)
	}
	return res.StatusCode, string(body)
}

// TestUnsolicitedBytesNeverAnswerAnotherRequest: bytes a plugin writes after a
// complete answer (a second answer, more body than its Content-Length), at once or
// while the connection is idle, are never read as the answer to a later request:
// the connection they arrived on is closed. The HTTP desync of issue 18.
func TestUnsolicitedBytesNeverAnswerAnotherRequest(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name   string
		method string // of the request to /poison; GET when ""
		// writes answer /poison; with idle, the last one waits until the client has
		// the answer, so that it reaches a connection idle in the proxy's pool.
		writes []string
		idle   bool
	}{
		{"second answer in the same write", "", []string{ok("/poison") + smuggled}, false},
		{"body longer than its Content-Length", "", []string{"HTTP/1.1 200 OK\r\nContent-Length: 7\r\n\r\n/poison and more"}, false},
		{"second answer in its own write", "", []string{ok("/poison"), smuggled}, false},
		{"second answer while idle", "", []string{ok("/poison"), smuggled}, true},
		{"more body while idle", "", []string{ok("/poison"), "and more"}, true},
		{"HEAD answered with a body", http.MethodHead, []string{ok("/poison")}, false},
		{"204 with a body", "", []string{"HTTP/1.1 204 No Content\r\nContent-Length: 7\r\n\r\n/poison"}, false},
	}
	for _, path := range upstreamPaths {
		for _, tc := range cases {
			t.Run(path.name+"/"+tc.name, func(t *testing.T) {
				t.Parallel()
				answered, checked := make(chan struct{}), make(chan struct{})
				written := make(chan *rawConn, 1)
				plugin := newRawPlugin(t, answerEach(func(c *rawConn, req *http.Request) bool {
					if req.URL.Path != "/poison" {
						return c.send(ok(req.URL.Path))
					}
					for i, w := range tc.writes {
						if tc.idle && i == len(tc.writes)-1 {
							<-answered
						}
						if !c.send(w) {
							return false
						}
					}
					written <- c
					<-checked // the connection stays open until the test has looked at it
					return true
				}))
				h := rawHarness(t, path.noFast, plugin.addr)

				method, wantCode, wantBody := tc.method, 200, "/poison"
				if method == "" {
					method = http.MethodGet
				}
				if method == http.MethodHead {
					wantBody = ""
				}
				if strings.Contains(tc.writes[0], " 204 ") {
					wantCode, wantBody = 204, ""
				}
				res := h.do(t, method, "/plugins/raw/poison", nil, nil)
				if body, err := io.ReadAll(res.Body); res.StatusCode != wantCode || string(body) != wantBody || err != nil {
					t.Fatalf("%s /poison: %d %q %v, want %d %q", method, res.StatusCode, body, err, wantCode, wantBody)
				}
				close(answered)
				c := recv(t, written, "the plugin's writes")
				// The bytes are in the proxy's socket before the next request. http.Transport
				// notices them on its connection's read goroutine: wait for it to hang up.
				// The fast path looks at an idle connection when it takes it.
				waitDelivered(t, c.Conn.(*net.TCPConn))
				close(checked)
				if path.noFast {
					eventually(t, "the proxy hangs up the poisoned connection", func() bool { return plugin.hungUp.Load() >= 1 })
				}
				for i := range 20 {
					want := fmt.Sprintf("/r%d", i)
					if code, body := getBody(t, h, "/plugins/raw"+want); code != 200 || body != want {
						t.Errorf("GET %s: %d %q, want 200 %q", want, code, body, want)
					}
				}
				eventually(t, "the proxy hangs up the poisoned connection", func() bool { return plugin.hungUp.Load() >= 1 })
			})
		}
	}
}

// forPaths runs f as a parallel subtest on each upstream path.
func forPaths(t *testing.T, f func(t *testing.T, noFast bool)) {
	t.Helper()
	for _, path := range upstreamPaths {
		t.Run(path.name, func(t *testing.T) {
			t.Parallel()
			f(t, path.noFast)
		})
	}
}

// sameConn answers every request of a connection with answer(path) and counts on
// plugin.accepted to tell whether the proxy kept its connection.
func wantConns(t *testing.T, plugin *rawPlugin, n int64) {
	t.Helper()
	if got := plugin.accepted.Load(); got != n {
		t.Errorf("plugin accepted %d connections, want %d", got, n)
	}
}

// TestCloseDelimitedBody: an answer without Content-Length or chunking ends when the
// plugin closes the connection; the client gets all of it, and the next request a
// new connection.
func TestCloseDelimitedBody(t *testing.T) {
	t.Parallel()
	forPaths(t, func(t *testing.T, noFast bool) {
		plugin := newRawPlugin(t, func(c *rawConn) {
			if c.next() != nil {
				c.send("HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\nuntil the end")
			}
		})
		h := rawHarness(t, noFast, plugin.addr)
		for range 2 {
			if code, body := getBody(t, h, "/plugins/raw/"); code != 200 || body != "until the end" {
				t.Fatalf("%d %q", code, body)
			}
		}
		wantConns(t, plugin, 2)
	})
}

// TestChunkedBodyWithTrailers: a chunked answer's body and trailers (announced or
// not) reach the client, and the connection carries the next request.
func TestChunkedBodyWithTrailers(t *testing.T) {
	t.Parallel()
	forPaths(t, func(t *testing.T, noFast bool) {
		plugin := newRawPlugin(t, answerEach(func(c *rawConn, req *http.Request) bool {
			return c.send("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTrailer: X-Sum\r\n\r\n" +
				"5\r\nhello\r\n6\r\n world\r\n0\r\nX-Sum: 42\r\nX-Late: yes\r\n\r\n")
		}))
		h := rawHarness(t, noFast, plugin.addr)
		for range 2 {
			res := h.get(t, "/plugins/raw/")
			body, err := io.ReadAll(res.Body)
			if err != nil || res.StatusCode != 200 || string(body) != "hello world" {
				t.Fatalf("%d %q %v", res.StatusCode, body, err)
			}
			if got := res.Trailer.Get("X-Sum"); got != "42" {
				t.Errorf("announced trailer X-Sum %q, want 42", got)
			}
			if got := res.Trailer.Get("X-Late"); got != "yes" {
				t.Errorf("unannounced trailer X-Late %q, want yes", got)
			}
		}
		wantConns(t, plugin, 1)
	})
}

// TestInformationalBeforeAnswer: 1xx answers before the final one reach the client
// in order, and the connection carries the next request.
func TestInformationalBeforeAnswer(t *testing.T) {
	t.Parallel()
	forPaths(t, func(t *testing.T, noFast bool) {
		plugin := newRawPlugin(t, answerEach(func(c *rawConn, req *http.Request) bool {
			return c.send("HTTP/1.1 102 Processing\r\n\r\n" +
				"HTTP/1.1 103 Early Hints\r\nLink: </a.css>; rel=preload\r\n\r\n" + ok("done"))
		}))
		h := rawHarness(t, noFast, plugin.addr)
		for range 2 {
			var got []string
			trace := &httptrace.ClientTrace{Got1xxResponse: func(code int, hdr textproto.MIMEHeader) error {
				got = append(got, fmt.Sprintf("%d %s", code, hdr.Get("Link")))
				return nil
			}}
			req, _ := http.NewRequestWithContext(httptrace.WithClientTrace(t.Context(), trace), http.MethodGet, h.srv.URL+"/plugins/raw/", nil)
			res, err := h.client.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(res.Body)
			res.Body.Close()
			if res.StatusCode != 200 || string(body) != "done" {
				t.Fatalf("%d %q", res.StatusCode, body)
			}
			if want := []string{"102 ", "103 </a.css>; rel=preload"}; !slices.Equal(got, want) {
				t.Errorf("1xx seen by the client %q, want %q", got, want)
			}
		}
		wantConns(t, plugin, 1)
	})
}

// TestHeadThenNextRequest: a HEAD answer announces a Content-Length and has no body;
// the next request on the same connection gets its own answer.
func TestHeadThenNextRequest(t *testing.T) {
	t.Parallel()
	forPaths(t, func(t *testing.T, noFast bool) {
		plugin := newRawPlugin(t, answerEach(func(c *rawConn, req *http.Request) bool {
			if req.Method == http.MethodHead {
				return c.send("HTTP/1.1 200 OK\r\nContent-Length: 1234\r\n\r\n")
			}
			return c.send(ok(req.URL.Path))
		}))
		h := rawHarness(t, noFast, plugin.addr)
		for i := range 3 {
			res := h.do(t, http.MethodHead, "/plugins/raw/h", nil, nil)
			if res.StatusCode != 200 || res.ContentLength != 1234 {
				t.Fatalf("HEAD: %d, length %d, want 200 and 1234", res.StatusCode, res.ContentLength)
			}
			want := fmt.Sprintf("/g%d", i)
			if code, body := getBody(t, h, "/plugins/raw"+want); code != 200 || body != want {
				t.Fatalf("GET after HEAD: %d %q, want %q", code, body, want)
			}
		}
		wantConns(t, plugin, 1)
	})
}

// TestNoContentAndNotModified: 204 and 304 have no body, whatever Content-Length
// says; the connection carries the next request.
func TestNoContentAndNotModified(t *testing.T) {
	t.Parallel()
	forPaths(t, func(t *testing.T, noFast bool) {
		plugin := newRawPlugin(t, answerEach(func(c *rawConn, req *http.Request) bool {
			switch req.URL.Path {
			case "/204":
				return c.send("HTTP/1.1 204 No Content\r\nX-A: 1\r\n\r\n")
			case "/304":
				return c.send("HTTP/1.1 304 Not Modified\r\nETag: \"v1\"\r\nContent-Length: 99\r\n\r\n")
			}
			return c.send(ok(req.URL.Path))
		}))
		h := rawHarness(t, noFast, plugin.addr)
		for _, path := range []string{"/204", "/x", "/304", "/y"} {
			res := h.get(t, "/plugins/raw"+path)
			body, err := io.ReadAll(res.Body)
			if err != nil {
				t.Fatalf("GET %s: %v", path, err)
			}
			switch path {
			case "/204", "/304":
				if want := path[1:]; fmt.Sprint(res.StatusCode) != want || len(body) != 0 {
					t.Errorf("GET %s: %d %q", path, res.StatusCode, body)
				}
			default:
				if res.StatusCode != 200 || string(body) != path {
					t.Errorf("GET %s: %d %q", path, res.StatusCode, body)
				}
			}
		}
		if got := h.get(t, "/plugins/raw/304").Header.Get("ETag"); got != `"v1"` {
			t.Errorf("304 ETag %q", got)
		}
		wantConns(t, plugin, 1)
	})
}

// endlessHeaders writes a status line and header fields until the proxy hangs up
// (or 16 MiB), then counts the hang-up.
func endlessHeaders(c *rawConn) {
	if c.next() == nil {
		return
	}
	line := "X-Filler: " + strings.Repeat("a", 1000) + "\r\n"
	block := "HTTP/1.1 200 OK\r\n" + strings.Repeat(line, 64)
	for sent := 0; sent < 16<<20; sent += len(block) {
		if !c.send(block) {
			c.p.hungUp.Add(1)
			return
		}
		block = strings.Repeat(line, 64)
	}
	c.send("Content-Length: 0\r\n\r\n")
}

// TestResponseHeaderLimit: response headers over max_response_header get 502 naming
// the limit, on both paths alike, and the connection to the plugin is closed;
// headers under it pass. 1xx answers count towards the limit of their own.
func TestResponseHeaderLimit(t *testing.T) {
	t.Parallel()
	const limit = 64 << 10
	fields := func(n int) string { // about n bytes of header fields
		return strings.Repeat("X-Filler: "+strings.Repeat("a", 990)+"\r\n", n/1002)
	}
	answer := func(n int) string { return "HTTP/1.1 200 OK\r\n" + fields(n) + "Content-Length: 2\r\n\r\nok" }
	hints := func(n int) string { return "HTTP/1.1 103 Early Hints\r\n" + fields(n) + "\r\n" }
	forPaths(t, func(t *testing.T, noFast bool) {
		t.Run("endless", func(t *testing.T) {
			plugin := newRawPlugin(t, endlessHeaders)
			h := rawHarness(t, noFast, plugin.addr, func(b *Backend) { b.MaxResponseHeader = limit })
			pb := problem(t, h.get(t, "/plugins/raw/"), http.StatusBadGateway)
			if want := "plugin response headers exceed max_response_header (64KiB)"; pb.Detail != want {
				t.Errorf("detail %q, want %q", pb.Detail, want)
			}
			eventually(t, "the plugin's connection closed", func() bool { return plugin.hungUp.Load() == 1 })
		})
		t.Run("default", func(t *testing.T) {
			plugin := newRawPlugin(t, endlessHeaders)
			h := rawHarness(t, noFast, plugin.addr)
			pb := problem(t, h.get(t, "/plugins/raw/"), http.StatusBadGateway)
			if want := "plugin response headers exceed max_response_header (1MiB)"; pb.Detail != want {
				t.Errorf("detail %q, want %q", pb.Detail, want)
			}
		})
		for _, tc := range []struct {
			name   string
			answer string
			status int
		}{
			{"under", answer(limit - 8<<10), 200},
			{"over", answer(limit + 8<<10), 502},
			{"1xx and answer each under", hints(limit-8<<10) + answer(limit-8<<10), 200},
			{"1xx over", hints(limit+8<<10) + answer(100), 502},
		} {
			t.Run(tc.name, func(t *testing.T) {
				plugin := newRawPlugin(t, answerEach(func(c *rawConn, req *http.Request) bool { return c.send(tc.answer) }))
				h := rawHarness(t, noFast, plugin.addr, func(b *Backend) { b.MaxResponseHeader = limit })
				res := h.get(t, "/plugins/raw/")
				if res.StatusCode != tc.status {
					b, _ := io.ReadAll(res.Body)
					t.Fatalf("status %d, want %d: %s", res.StatusCode, tc.status, b)
				}
			})
		}
	})
}

// TestTruncatedBody: a plugin that closes the connection before the end of its
// Content-Length: the client's read of the body fails at once (the proxy cannot
// send a status any more), and the next request is served.
func TestTruncatedBody(t *testing.T) {
	t.Parallel()
	forPaths(t, func(t *testing.T, noFast bool) {
		plugin := newRawPlugin(t, answerEach(func(c *rawConn, req *http.Request) bool {
			if req.URL.Path == "/cut" {
				c.send("HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly this")
				return false // and close
			}
			return c.send(ok(req.URL.Path))
		}))
		h := rawHarness(t, noFast, plugin.addr, func(b *Backend) { b.RequestTimeout = 30 * time.Second })
		// The proxy has said 200 and cannot take it back: the client sees the
		// connection end, before the headers when they were not flushed yet, else
		// before the end of the body.
		start := time.Now()
		res, err := h.client.Get(h.srv.URL + "/plugins/raw/cut")
		if err == nil {
			var body []byte
			body, err = io.ReadAll(res.Body)
			res.Body.Close()
			if !errors.Is(err, io.ErrUnexpectedEOF) {
				t.Errorf("read body: %q, %v; want io.ErrUnexpectedEOF", body, err)
			}
		} else if !errors.Is(err, io.EOF) {
			t.Errorf("request: %v, want EOF", err)
		}
		if d := time.Since(start); d > 2*time.Second {
			t.Errorf("the client learnt of the cut after %v", d)
		}
		if code, body := getBody(t, h, "/plugins/raw/next"); code != 200 || body != "/next" {
			t.Errorf("next request: %d %q", code, body)
		}
	})
}

// TestMalformedAnswers: answers that are not HTTP/1.1 get 502 and the connection is
// closed; the next request gets a new one.
func TestMalformedAnswers(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct{ name, answer string }{
		{"invalid status line", "HTTP/1.1 OK 200\r\nContent-Length: 2\r\n\r\nok"},
		{"not http", "SSH-2.0-OpenSSH_9.6\r\n"},
		{"two different Content-Lengths", "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\nok!"},
		{"switching protocols unasked", "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			forPaths(t, func(t *testing.T, noFast bool) {
				plugin := newRawPlugin(t, answerEach(func(c *rawConn, req *http.Request) bool {
					if req.URL.Path == "/bad" {
						return c.send(tc.answer)
					}
					return c.send(ok(req.URL.Path))
				}))
				h := rawHarness(t, noFast, plugin.addr)
				pb := problem(t, h.get(t, "/plugins/raw/bad"), http.StatusBadGateway)
				if pb.Detail != "plugin connection failed" {
					t.Errorf("detail %q", pb.Detail)
				}
				eventually(t, "the plugin's connection closed", func() bool { return plugin.hungUp.Load() == 1 })
				if code, body := getBody(t, h, "/plugins/raw/next"); code != 200 || body != "/next" {
					t.Errorf("next request: %d %q", code, body)
				}
				wantConns(t, plugin, 2)
			})
		})
	}
}

// TestHeadersNeverCome: a plugin that takes the request and sends no answer, or
// half of its headers, gets 504 at request_timeout; the connection is closed.
func TestHeadersNeverCome(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct{ name, partial string }{
		{"nothing", ""},
		{"half the headers", "HTTP/1.1 200 OK\r\nX-A: b\r\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			forPaths(t, func(t *testing.T, noFast bool) {
				plugin := newRawPlugin(t, func(c *rawConn) {
					if c.next() != nil && c.send(tc.partial) && c.next() == nil {
						return // next sees the proxy hang up
					}
				})
				const timeout = 200 * time.Millisecond
				h := rawHarness(t, noFast, plugin.addr, func(b *Backend) { b.RequestTimeout = timeout })
				start := time.Now()
				problem(t, h.get(t, "/plugins/raw/"), http.StatusGatewayTimeout)
				if d := time.Since(start); d < timeout || d > timeout+time.Second {
					t.Errorf("504 after %v, want at %v", d, timeout)
				}
				eventually(t, "the plugin's connection closed", func() bool { return plugin.hungUp.Load() == 1 })
			})
		})
	}
}

// TestPluginClosesConnection: a plugin that says Connection: close, that closes a
// kept-alive connection silently after an answer, or that closes it when the next
// request arrives: every request gets its answer, on a new connection.
func TestPluginClosesConnection(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name  string
		serve func(c *rawConn)
	}{
		{"Connection: close", func(c *rawConn) {
			if req := c.next(); req != nil {
				c.send("HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: " + fmt.Sprint(len(req.URL.Path)) + "\r\n\r\n" + req.URL.Path)
			}
		}},
		{"silent close after an answer", func(c *rawConn) {
			if req := c.next(); req != nil {
				c.send(ok(req.URL.Path))
			}
		}},
		{"close when the next request arrives", func(c *rawConn) {
			if req := c.next(); req != nil && c.send(ok(req.URL.Path)) {
				c.next()
			}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			forPaths(t, func(t *testing.T, noFast bool) {
				plugin := newRawPlugin(t, tc.serve)
				h := rawHarness(t, noFast, plugin.addr)
				for i := range 5 {
					want := fmt.Sprintf("/r%d", i)
					if code, body := getBody(t, h, "/plugins/raw"+want); code != 200 || body != want {
						t.Errorf("GET %s: %d %q", want, code, body)
					}
				}
			})
		})
	}
}

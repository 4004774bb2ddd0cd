package proxy

import (
	"bufio"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"
)

// rawPlugin is a plugin written by hand on raw TCP, so that it can misbehave in
// ways net/http's server never would. serve runs once per accepted connection;
// the connection is closed when it returns.
type rawPlugin struct {
	addr     string
	accepted atomic.Int64
	// hungUp counts the connections on which the proxy hung up: a read for the next
	// request saw EOF or an error.
	hungUp atomic.Int64
}

// rawConn is one connection of a rawPlugin.
type rawConn struct {
	net.Conn
	br *bufio.Reader
	p  *rawPlugin
	n  int // 0 for the first connection accepted, 1 for the next...
}

func newRawPlugin(t testing.TB, serve func(c *rawConn)) *rawPlugin {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &rawPlugin{addr: ln.Addr().String()}
	var (
		wg    sync.WaitGroup
		mu    sync.Mutex
		conns []net.Conn
	)
	wg.Go(func() {
		for {
			nc, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, nc)
			mu.Unlock()
			c := &rawConn{Conn: nc, br: bufio.NewReader(nc), p: p, n: int(p.accepted.Add(1) - 1)}
			wg.Go(func() {
				defer nc.Close()
				serve(c)
			})
		}
	})
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		for _, c := range conns {
			c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	return p
}

// next reads the next request and its body; nil once the proxy hung up.
func (c *rawConn) next() *http.Request {
	req, err := http.ReadRequest(c.br)
	if err != nil {
		c.p.hungUp.Add(1)
		return nil
	}
	if _, err := io.Copy(io.Discard, req.Body); err != nil {
		c.p.hungUp.Add(1)
		return nil
	}
	return req
}

// send writes raw bytes; false when the connection is gone.
func (c *rawConn) send(s string) bool {
	_, err := io.WriteString(c, s)
	return err == nil
}

// answerEach serves every request of a connection with answer, until answer
// returns false or the proxy hangs up.
func answerEach(answer func(c *rawConn, req *http.Request) bool) func(*rawConn) {
	return func(c *rawConn) {
		for {
			req := c.next()
			if req == nil || !answer(c, req) {
				return
			}
		}
	}
}

// ok is a complete 200 answer with body.
func ok(body string) string {
	return fmt.Sprintf("HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s", len(body), body)
}

// smuggled is a complete answer that no request asked for.
const smuggled = "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nSMUGG"

// upstreamPaths are the proxy's two ways to a plugin: the fast path (GET and HEAD
// written and read on the handler's goroutine) and http.Transport (everything
// else). Every conformance case runs on both, with the same requests.
var upstreamPaths = []struct {
	name   string
	noFast bool
}{{"fast", false}, {"transport", true}}

// rawHarness is a harness whose proxy sends name's requests to addr on one path.
func rawHarness(t testing.TB, noFast bool, addr string, mod ...func(*Backend)) *harness {
	t.Helper()
	p := New(Options{Logger: slog.New(slog.DiscardHandler)})
	p.noFast = noFast
	srv := httptest.NewServer(p)
	t.Cleanup(func() {
		srv.Close()
		p.Close()
	})
	b := Backend{Targets: []Target{targetOf(t, "http://"+addr)}, Generation: 1}
	for _, m := range mod {
		m(&b)
	}
	p.SetReady("raw", b)
	return &harness{p: p, srv: srv, client: srv.Client()}
}

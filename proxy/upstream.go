package proxy

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptrace"
	"net/textproto"
	"strings"
	"sync"
	"time"

	"github.com/docker/go-units"
)

// DefaultMaxResponseHeader bounds a plugin's response headers (status line, header
// fields and any 1xx answers before them) when Backend.MaxResponseHeader is 0: with
// max_concurrent requests in flight, a plugin can make the runner hold about
// max_concurrent times this much. http.Transport's own default is 10 MiB.
const DefaultMaxResponseHeader = 1 << 20

// fastTransport is a backend's http.RoundTripper. A GET or HEAD without a body
// and without a protocol upgrade (nearly every request) is written, and its
// response read, on a kept-alive connection by the calling goroutine, where
// http.Transport hands the request to a writer goroutine and the response back
// from a reader goroutine. Measured side by side with wrk through the runner
// (reach = address, 4 runs each): 75 → 62 µs of the runner's CPU per GET.
// Everything else (bodies, upgrades, https) goes to the http.Transport, whose
// 100-continue, retry and upgrade handling it needs.
//
// Nothing reads an idle connection, so anything a plugin writes on one after a
// complete answer (a second answer nobody asked for, more body than its
// Content-Length said) waits in the socket: a connection is reused only when
// nothing is left after its last answer (in the buffer, when the body ends) and
// nothing has arrived since (a non-blocking peek, when it is taken from the pool).
// Else those bytes would be read as the answer to the next request: the HTTP desync
// of issue 18. http.Transport reads every idle connection on a goroutine of its own
// instead, and closes one on which anything arrives, but only once that goroutine
// has run: a request sent meanwhile gets those bytes. The peek is synchronous, and
// costs one system call per request: ~2 µs of CPU (BenchmarkIdleCheck), where
// sending every GET through http.Transport cost ~20 µs more (the README's
// Benchmarks). A plugin that closed an idle connection is noticed by the same peek;
// if it closes one just after it, the request (GET or HEAD: replayable) is sent
// again on another connection, as http.Transport does for idempotent requests.
type fastTransport struct {
	tr        *http.Transport
	dial      func(ctx context.Context) (net.Conn, error)
	maxIdle   int
	maxHeader int64
	// noFast sends every request through tr: the conformance tests and benchmarks
	// run each case on both paths with it.
	noFast bool

	mu     sync.Mutex
	idle   []*upConn // most recently used last
	reaper *time.Timer
}

// Upstream is the proxy's transport to one plugin endpoint (fastTransport).
type Upstream interface {
	http.RoundTripper
	CloseIdleConnections()
}

// NewUpstream returns the transport the proxy uses to reach the plugin at addr on
// network ("tcp": host:port; "unix": a socket path, whatever the request's host),
// keeping at most maxIdle idle connections and accepting response headers up to
// DefaultMaxResponseHeader. The runner's health probes use it too, so that a probe
// costs what a proxied GET costs.
func NewUpstream(network, addr string, maxIdle int) Upstream {
	return newUpstream(network, addr, maxIdle, DefaultMaxResponseHeader)
}

func newUpstream(network, addr string, maxIdle int, maxHeader int64) *fastTransport {
	dialer := &net.Dialer{Timeout: dialTimeout, KeepAlive: 30 * time.Second}
	dial := func(ctx context.Context) (net.Conn, error) { return dialer.DialContext(ctx, network, addr) }
	return &fastTransport{
		tr: &http.Transport{
			Proxy:                  nil, // never from the environment
			DialContext:            func(ctx context.Context, _, _ string) (net.Conn, error) { return dial(ctx) },
			ForceAttemptHTTP2:      false,
			MaxIdleConns:           maxIdle,
			MaxIdleConnsPerHost:    maxIdle,
			IdleConnTimeout:        idleConnTimeout,
			ExpectContinueTimeout:  time.Second,
			DisableCompression:     true, // pass Accept-Encoding through untouched
			MaxResponseHeaderBytes: maxHeader,
		},
		dial:      dial,
		maxIdle:   maxIdle,
		maxHeader: maxHeader,
	}
}

// upConn is one kept-alive connection of the fast path.
type upConn struct {
	net.Conn
	br        *bufio.Reader
	bw        *bufio.Writer
	limit     int64 // bytes Read may still return while > 0; unlimited when < 0
	idleSince time.Time
	idleCheck // the peek at an idle connection (idlecheck_*.go)
}

var errHeaderLimit = errors.New("response header limit reached")

// Read enforces limit, which bounds the response headers.
func (c *upConn) Read(p []byte) (int, error) {
	if c.limit == 0 {
		return 0, errHeaderLimit
	}
	if c.limit > 0 && int64(len(p)) > c.limit {
		p = p[:c.limit]
	}
	n, err := c.Conn.Read(p)
	if c.limit > 0 {
		c.limit -= int64(n)
	}
	return n, err
}

func (u *fastTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	if u.noFast || !fastPath(req) {
		res, err := u.tr.RoundTrip(req)
		if err != nil && strings.Contains(err.Error(), "server response headers exceeded") {
			// net/http has no error value for its MaxResponseHeaderBytes; the
			// conformance suite fails if this text changes.
			err = &headerLimitError{limit: u.maxHeader}
		}
		return res, err
	}
	ctx := req.Context()
	for {
		c, reused := u.get()
		if c == nil {
			nc, err := u.dial(ctx)
			if err != nil {
				return nil, err
			}
			c = &upConn{Conn: nc, limit: -1}
			c.initIdleCheck()
			c.br = bufio.NewReaderSize(c, 4<<10)
			c.bw = bufio.NewWriterSize(nc, 4<<10)
		}
		res, retry, err := u.roundTrip(c, req)
		if err == nil {
			return res, nil
		}
		c.Close()
		if !reused || !retry || ctx.Err() != nil {
			return nil, err
		}
		// A kept-alive connection the plugin had closed: try the next one.
	}
}

// fastPath reports whether req can take the fast path: a GET or HEAD over plain
// HTTP, without a body, not asking for a protocol upgrade.
func fastPath(req *http.Request) bool {
	return (req.Method == http.MethodGet || req.Method == http.MethodHead) &&
		(req.Body == nil || req.Body == http.NoBody) &&
		req.URL.Scheme == "http" &&
		req.Header["Upgrade"] == nil
}

// roundTrip sends req on c and reads the response headers. retry reports that the
// request failed before any of the response arrived (a kept-alive connection the
// plugin had closed meanwhile). On success c belongs to the response's body.
func (u *fastTransport) roundTrip(c *upConn, req *http.Request) (res *http.Response, retry bool, err error) {
	// A cancelled request (request_timeout, client gone) interrupts the reads and
	// writes blocked on c.
	stop := context.AfterFunc(req.Context(), func() { _ = c.SetDeadline(time.Unix(1, 0)) })
	defer func() {
		if err != nil {
			stop()
		}
	}()
	if err := req.Write(c.bw); err != nil {
		return nil, true, fmt.Errorf("write request: %w", err)
	}
	if err := c.bw.Flush(); err != nil {
		return nil, true, fmt.Errorf("write request: %w", err)
	}
	// As http.Transport counts: every byte read until the final answer's header
	// ends, the limit starting again after each 1xx answer passed on.
	c.limit = u.maxHeader
	if _, err := c.br.Peek(1); err != nil {
		return nil, true, fmt.Errorf("read response: %w", err)
	}
	for {
		res, err = http.ReadResponse(c.br, req)
		if err != nil {
			if c.limit == 0 {
				return nil, false, &headerLimitError{limit: u.maxHeader}
			}
			return nil, false, fmt.Errorf("read response: %w", err)
		}
		if res.StatusCode == http.StatusSwitchingProtocols {
			// Not asked for (no Upgrade header takes this path): the connection now
			// speaks something else.
			return nil, false, errors.New("plugin switched protocols unasked")
		}
		if res.StatusCode >= 200 {
			break
		}
		// 1xx informational (103 Early Hints): passed on through the trace hook, as
		// http.Transport does; ReverseProxy forwards them to the client.
		if trace := httptrace.ContextClientTrace(req.Context()); trace != nil && trace.Got1xxResponse != nil {
			if err := trace.Got1xxResponse(res.StatusCode, textproto.MIMEHeader(res.Header)); err != nil {
				return nil, false, err
			}
			c.limit = u.maxHeader
		}
	}
	c.limit = -1
	res.Body = &upBody{rc: res.Body, c: c, u: u, stop: stop, keep: !res.Close}
	return res, false, nil
}

// upBody is a fast-path response body: read to its end, it gives its connection
// back to the pool; closed before, it closes it.
type upBody struct {
	rc     io.ReadCloser
	c      *upConn // nil once given back or closed
	u      *fastTransport
	stop   func() bool
	keep   bool // the plugin keeps the connection alive after this response
	eof    bool
	closed bool
}

var errBodyClosed = errors.New("read on a closed response body")

func (b *upBody) Read(p []byte) (int, error) {
	switch {
	case b.eof:
		return 0, io.EOF
	case b.closed:
		return 0, errBodyClosed
	}
	n, err := b.rc.Read(p)
	if err == io.EOF {
		b.eof = true
		b.release(b.keep)
	}
	return n, err
}

// Close before the end closes the connection rather than read the rest: the
// underlying body's Close would drain it, however long it is.
func (b *upBody) Close() error {
	b.closed = true
	if b.c != nil {
		b.release(false)
	}
	return nil
}

// release gives the connection back when keep holds and no cancellation has begun
// to interrupt it, else closes it.
func (b *upBody) release(keep bool) {
	c := b.c
	b.c = nil
	// Bytes already buffered past the response are not an answer to anything; those
	// still in the socket are seen by get.
	if b.stop() && keep && c.br.Buffered() == 0 {
		b.u.put(c)
		return
	}
	c.Close()
}

// get takes the most recently used idle connection that is not too old and on
// which nothing has arrived since its last answer: no bytes (they would be read as
// the next answer) and no close. It closes those it passes over.
func (u *fastTransport) get() (*upConn, bool) {
	for {
		u.mu.Lock()
		n := len(u.idle)
		if n == 0 {
			u.mu.Unlock()
			return nil, false
		}
		c := u.idle[n-1]
		u.idle[n-1] = nil
		u.idle = u.idle[:n-1]
		u.mu.Unlock()
		if time.Since(c.idleSince) < idleConnTimeout && c.quiet() {
			return c, true
		}
		c.Close()
	}
}

// put keeps c for the next request, unless maxIdle are kept already.
func (u *fastTransport) put(c *upConn) {
	c.idleSince = time.Now()
	u.mu.Lock()
	defer u.mu.Unlock()
	if len(u.idle) >= u.maxIdle {
		c.Close()
		return
	}
	u.idle = append(u.idle, c)
	if u.reaper == nil {
		u.reaper = time.AfterFunc(idleConnTimeout, u.reap)
	}
}

// reap closes the connections idle for idleConnTimeout; it runs while any are idle.
func (u *fastTransport) reap() {
	u.mu.Lock()
	defer u.mu.Unlock()
	u.reaper = nil
	n := 0
	for n < len(u.idle) && time.Since(u.idle[n].idleSince) >= idleConnTimeout {
		u.idle[n].Close()
		n++
	}
	u.idle = append(u.idle[:0], u.idle[n:]...)
	clear(u.idle[len(u.idle):cap(u.idle)])
	if len(u.idle) > 0 {
		u.reaper = time.AfterFunc(idleConnTimeout-time.Since(u.idle[0].idleSince), u.reap)
	}
}

// CloseIdleConnections closes the idle connections of both paths.
func (u *fastTransport) CloseIdleConnections() {
	u.mu.Lock()
	for _, c := range u.idle {
		c.Close()
	}
	clear(u.idle)
	u.idle = u.idle[:0]
	if u.reaper != nil {
		u.reaper.Stop()
		u.reaper = nil
	}
	u.mu.Unlock()
	u.tr.CloseIdleConnections()
}

// headerLimitError is a plugin's answer whose headers exceeded the backend's limit.
// Its text is the client's problem detail.
type headerLimitError struct{ limit int64 }

func (e *headerLimitError) Error() string {
	return "plugin response headers exceed max_response_header (" + units.BytesSize(float64(e.limit)) + ")"
}

package proxy

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"io"
	"net/http"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// reqState is what one request carries through the ReverseProxy to its hooks.
// It is the outbound request's context too: Value answers stateKey with it and
// everything else from the embedded parent, which saves a context.WithValue
// allocation per request.
type reqState struct {
	context.Context // the parent: the client's request's, or its request_timeout child

	id         string
	path       string // as the client sent it, for logs
	plugin     string
	generation int
	target     *target     // the instance the request went to (servePlugin acquired it)
	timer      *time.Timer // request_timeout; nil when none
	tooLarge   atomic.Bool // the body hit max_body (read by the transport's goroutine)
	body       *bodyGuard  // nil when the request has no body

	rec   statusRecorder // the status for the Observer, when there is one
	begin time.Time      // when the Observer started timing
}

// Value returns st for stateKey, else asks the parent context.
func (st *reqState) Value(key any) any {
	if key == (stateKey{}) {
		return st
	}
	return st.Context.Value(key)
}

// bodyGuard owns the read deadline of the client's connection while a request with a
// body is handled: the request_timeout timer, the body peek and the error path all
// set it, never after the handler has returned (the connection is the server's again).
// Its methods are nil-safe: a request without a body has none.
type bodyGuard struct {
	mu      sync.Mutex
	rc      *http.ResponseController
	expired bool // reads fail from now on: the rest of the body is never read
	done    bool // the handler returned
}

// setDeadline sets the read deadline unless the body expired or the handler returned.
func (g *bodyGuard) setDeadline(t time.Time) {
	if g == nil {
		return
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	if !g.done && !g.expired {
		_ = g.rc.SetReadDeadline(t)
	}
}

// expire makes every further read of the client's connection fail at once: a blocked
// body read returns, and net/http does not wait for the rest of the body before it
// closes the connection.
func (g *bodyGuard) expire() {
	if g == nil {
		return
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	if !g.done && !g.expired {
		g.expired = true
		_ = g.rc.SetReadDeadline(time.Now())
	}
}

func (g *bodyGuard) finish() {
	g.mu.Lock()
	g.done = true
	g.mu.Unlock()
}

type stateKey struct{}

// stateOf returns the request's state; an empty one outside servePlugin.
func stateOf(ctx context.Context) *reqState {
	if st, ok := ctx.Value(stateKey{}).(*reqState); ok {
		return st
	}
	return &reqState{}
}

// requestID keeps a client's id when it is 1..128 of [A-Za-z0-9._-], else
// makes a random one.
func requestID(in string) string {
	if validRequestID(in) {
		return in
	}
	var b [16]byte
	_, _ = rand.Read(b[:]) // never fails (crypto/rand, Go ≥ 1.24)
	return hex.EncodeToString(b[:])
}

func validRequestID(s string) bool {
	if len(s) == 0 || len(s) > 128 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9',
			c == '.', c == '_', c == '-':
		default:
			return false
		}
	}
	return true
}

// cleanPath reports whether path cleaning would leave p unchanged: absolute,
// no empty segment ("//") but a trailing slash, no "." or ".." segment.
// Called on both the decoded and the escaped path, so "%2e%2e" and "a%2F%2Fb"
// are caught as well.
func cleanPath(p string) bool {
	if p == "" || p[0] != '/' {
		return false
	}
	rest := p[1:]
	for rest != "" {
		seg := rest
		if i := strings.IndexByte(rest, '/'); i >= 0 {
			seg, rest = rest[:i], rest[i+1:]
			if seg == "" {
				return false // "//"
			}
		} else {
			rest = ""
		}
		if seg == "." || seg == ".." || isEncodedDots(seg) {
			return false
		}
	}
	return true
}

// isEncodedDots reports whether seg is "." or ".." with some dots written %2e.
func isEncodedDots(seg string) bool {
	if len(seg) < 3 || len(seg) > 6 || !strings.Contains(seg, "%") {
		return false
	}
	s := strings.ReplaceAll(strings.ToLower(seg), "%2e", ".")
	return s == "." || s == ".."
}

// limitedBody notes that http.MaxBytesReader cut the body off, so that the
// error the transport reports (whatever its wrapping) maps to 413.
type limitedBody struct {
	io.ReadCloser
	st *reqState
}

func (l *limitedBody) Read(p []byte) (int, error) {
	n, err := l.ReadCloser.Read(p)
	if err != nil {
		if _, ok := err.(*http.MaxBytesError); ok {
			l.st.tooLarge.Store(true)
		}
	}
	return n, err
}

// bodyPeek bounds how much of a body of unknown length (chunked) the proxy reads
// before it dials the plugin: min(max_body, bodyPeek) + 1 bytes, held in memory (a
// buffer of at most 2 × bodyPeek) per request in flight, max_concurrent of them per
// plugin.
//
// A body that ends within it is forwarded with a Content-Length; one longer than
// max_body within it is answered 413 and the plugin never sees the request. With a
// max_body above bodyPeek the rest is streamed, and a body found too large later is cut
// off (the plugin sees a truncated body, the client 413) — the price of not buffering
// large uploads.
const bodyPeek = 1 << 20

// peekBody reads the start of out.Body (see bodyPeek) and replaces it with a body the
// transport can send. Reading is bounded by timeout (request_timeout; 0: none), since a
// slow client holds one of the plugin's max_concurrent slots meanwhile.
func peekBody(out *http.Request, max int64, timeout time.Duration, st *reqState) error {
	if timeout > 0 {
		st.body.setDeadline(time.Now().Add(timeout))
	}
	in := out.Body
	// Over max the proxy answers 413 and closes the connection (fail expires the body).
	mbr := http.MaxBytesReader(nil, in, max)
	var buf bytes.Buffer
	_, err := io.CopyN(&buf, mbr, min(max, bodyPeek)+1)
	if err == nil || errors.Is(err, io.EOF) {
		st.body.setDeadline(time.Time{})
	}
	var tooLarge *http.MaxBytesError
	switch {
	case errors.Is(err, io.EOF): // the whole body, at most max bytes
		out.ContentLength = int64(buf.Len())
		out.TransferEncoding = nil
		out.Body = io.NopCloser(bytes.NewReader(buf.Bytes()))
		if buf.Len() == 0 {
			out.Body = http.NoBody
		}
		return nil
	case err == nil: // more than bodyPeek of a larger max_body: stream the rest
		out.Body = &limitedBody{ReadCloser: struct {
			io.Reader
			io.Closer
		}{io.MultiReader(&buf, mbr), in}, st: st}
		return nil
	case errors.As(err, &tooLarge):
		return errBodyTooLarge
	case errors.Is(err, os.ErrDeadlineExceeded), errors.Is(context.Cause(out.Context()), errRequestTimeout):
		return errBodyTimeout
	case out.Context().Err() != nil:
		return errClientGone
	default:
		return errBadBody
	}
}

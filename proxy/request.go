package proxy

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"io"
	"net/http"
	"strings"
	"sync/atomic"
	"time"
)

// reqState is what one request carries through chi and the ReverseProxy.
type reqState struct {
	id         string
	path       string // as the client sent it, for logs
	plugin     string
	generation int
	timer      *time.Timer // request_timeout; nil when none
	tooLarge   atomic.Bool // the body hit max_body (read by the transport's goroutine)
}

type stateKey struct{}

// stateOf returns the request's state; an empty one outside ServeHTTP.
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

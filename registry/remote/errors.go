package remote

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"sync"
	"time"

	"github.com/google/go-containerregistry/pkg/v1/remote/transport"

	"github.com/xcore/runner/registry"
)

// classify turns what remote returned into an *Error.
func (c *Client) classify(ref registry.Ref, err error) error {
	e := &registry.Error{Registry: ref.Registry(), Repo: ref.Path(), Ref: ref.Familiar(), Err: err}
	var te *transport.Error
	var rl *rateLimitedError
	var ne net.Error
	var ue *url.Error
	switch {
	case errors.As(err, &rl):
		e.Kind, e.RetryAfter = registry.ErrRateLimited, time.Until(rl.until)
	case errors.As(err, &te):
		switch {
		case te.StatusCode == http.StatusUnauthorized || te.StatusCode == http.StatusForbidden || hasCode(te, transport.UnauthorizedErrorCode, transport.DeniedErrorCode):
			e.Kind = registry.ErrDenied
			c.forget()
		case te.StatusCode == http.StatusTooManyRequests || hasCode(te, transport.TooManyRequestsErrorCode):
			e.Kind, e.RetryAfter = registry.ErrRateLimited, c.limits.wait(ref.Registry())
		case te.StatusCode == http.StatusNotFound || hasCode(te, transport.ManifestUnknownErrorCode, transport.NameUnknownErrorCode):
			e.Kind = registry.ErrNotFound
		}
	case errors.Is(err, context.DeadlineExceeded):
		e.Kind, e.Err = registry.ErrUnreachable, fmt.Errorf("no answer within %s", requestTimeout)
	case errors.As(err, &ne), errors.As(err, &ue):
		e.Kind = registry.ErrUnreachable
		var op *net.OpError
		if errors.As(err, &op) {
			e.Err = op // "dial tcp 127.0.0.1:5000: connect: connection refused", without the URL
		}
	}
	return e
}

func hasCode(te *transport.Error, codes ...transport.ErrorCode) bool {
	for _, d := range te.Errors {
		for _, c := range codes {
			if d.Code == c {
				return true
			}
		}
	}
	return false
}

// limiter is the innermost transport: it remembers, per registry host, until when a 429
// asked us to stay away, and refuses to send anything there before then — every
// request, token exchanges included, so nothing hammers a registry that said stop.
type limiter struct {
	next     http.RoundTripper
	fallback time.Duration // a 429 without a usable Retry-After
	now      func() time.Time

	mu    sync.Mutex
	until map[string]time.Time
}

type rateLimitedError struct {
	host  string
	until time.Time
}

func (e *rateLimitedError) Error() string {
	return fmt.Sprintf("registry %s asked us to wait until %s (429)", e.host, e.until.Format(time.TimeOnly))
}

func (l *limiter) check(host string) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if until, ok := l.until[host]; ok {
		if l.now().Before(until) {
			return &rateLimitedError{host: host, until: until}
		}
		delete(l.until, host)
	}
	return nil
}

// wait is how long host still asks us to wait.
func (l *limiter) wait(host string) time.Duration {
	l.mu.Lock()
	defer l.mu.Unlock()
	return max(l.until[host].Sub(l.now()), 0)
}

func (l *limiter) RoundTrip(req *http.Request) (*http.Response, error) {
	host := req.URL.Host
	if err := l.check(host); err != nil {
		return nil, err
	}
	resp, err := l.next.RoundTrip(req)
	if err != nil || resp.StatusCode != http.StatusTooManyRequests {
		return resp, err
	}
	d := retryAfter(resp.Header.Get("Retry-After"), l.now())
	if d <= 0 {
		d = l.fallback
	}
	l.mu.Lock()
	l.until[host] = l.now().Add(d)
	l.mu.Unlock()
	return resp, nil
}

// retryAfter parses a Retry-After header: delay-seconds or an HTTP date.
func retryAfter(v string, now time.Time) time.Duration {
	if v == "" {
		return 0
	}
	if s, err := strconv.Atoi(v); err == nil {
		return time.Duration(s) * time.Second
	}
	if t, err := http.ParseTime(v); err == nil {
		return t.Sub(now)
	}
	return 0
}

// registry.Credential is what a registry knows a user by, as Docker users keep it. It prints as
// "[redacted]" in every format a log or an error could use, so that it can travel to the

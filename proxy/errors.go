package proxy

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"net/http"
	"strconv"
)

const (
	headerRequestID = "X-Request-Id"
	// headerError marks a response made by the proxy, not by a plugin.
	headerError = "X-Xcore-Error"
	// StatusClientClosed is logged (never sent) when the client went away.
	StatusClientClosed = 499
)

// Errors made by the proxy. statusOf maps them to HTTP statuses; their text is
// the problem's detail. Upstream errors never reach a client verbatim: they
// may name internal addresses.
var (
	errNoRoute        = errors.New("not found: plugins are served under " + Prefix + "<name>/")
	errUnknownPlugin  = errors.New("unknown plugin")
	errBadPath        = errors.New("path is not canonical (empty, '.' or '..' segment)")
	errOverCapacity   = errors.New("plugin is at max_concurrent requests in flight")
	errBodyTooLarge   = errors.New("request body is larger than max_body")
	errBodyTimeout    = errors.New("request body not received within request_timeout")
	errBadBody        = errors.New("request body could not be read")
	errTimeout        = errors.New("plugin did not answer within request_timeout")
	errClientGone     = errors.New("client went away")
	errUpstream       = errors.New("plugin connection failed")
	errBadUpgrade     = errors.New("plugin switched to a protocol other than websocket")
	errRequestTimeout = errors.New("request_timeout exceeded") // context cause
)

// notReadyError is a known plugin without a ready backend; failed: one that will
// not be ready until its config changes.
type notReadyError struct {
	reason string
	failed bool
}

func (e *notReadyError) Error() string {
	what := "plugin not ready"
	if e.failed {
		what = "plugin failed"
	}
	if e.reason == "" {
		return what
	}
	return what + ": " + e.reason
}

// upstreamError wraps what the transport said; only the log sees it.
type upstreamError struct{ err error }

func (e *upstreamError) Error() string { return errUpstream.Error() + ": " + e.err.Error() }
func (e *upstreamError) Unwrap() []error {
	return []error{errUpstream, e.err}
}

// classify turns a ReverseProxy error into one of ours. ctx is the outbound
// request's: its cause tells a request_timeout from a client that went away.
func classify(ctx context.Context, err error) error {
	var tooLarge *http.MaxBytesError
	var headerLimit *headerLimitError
	var notReady *notReadyError
	switch {
	case errors.Is(context.Cause(ctx), errRequestTimeout):
		return errTimeout
	case ctx.Err() != nil:
		return errClientGone
	case stateOf(ctx).tooLarge.Load() || errors.As(err, &tooLarge):
		return errBodyTooLarge
	case errors.As(err, &headerLimit):
		return headerLimit // 502, with a detail the plugin's team can act on
	case errors.As(err, &notReady):
		return notReady // the instance stopped under the request (see SetGoneCheck)
	default:
		return &upstreamError{err: err}
	}
}

// statusOf is the one place mapping errors to statuses.
func statusOf(err error) int {
	var nr *notReadyError
	switch {
	case errors.Is(err, errNoRoute), errors.Is(err, errUnknownPlugin):
		return http.StatusNotFound
	case errors.Is(err, errBadPath):
		return http.StatusBadRequest
	case errors.As(err, &nr), errors.Is(err, errOverCapacity):
		return http.StatusServiceUnavailable
	case errors.Is(err, errBodyTooLarge):
		return http.StatusRequestEntityTooLarge
	case errors.Is(err, errBodyTimeout):
		return http.StatusRequestTimeout
	case errors.Is(err, errBadBody):
		return http.StatusBadRequest
	case errors.Is(err, errTimeout):
		return http.StatusGatewayTimeout
	case errors.Is(err, errClientGone):
		return StatusClientClosed
	default:
		return http.StatusBadGateway
	}
}

// Problem is the RFC 9457 body of an error made by the proxy.
type Problem struct {
	Type      string `json:"type"`
	Title     string `json:"title"`
	Status    int    `json:"status"`
	Detail    string `json:"detail,omitempty"`
	Plugin    string `json:"plugin,omitempty"`
	RequestID string `json:"request_id,omitempty"`
}

// fail logs err and answers it as problem+json, except to a client that went
// away, which gets nothing.
func (p *Proxy) fail(w http.ResponseWriter, r *http.Request, st *reqState, err error) {
	status := statusOf(err)

	// Only a plugin misbehaving is worth an operator's attention; 404/413/503 are the
	// client's or a state the runner already logs, and a scan or a retrying client
	// must not flood the log.
	level := slog.LevelDebug
	if status == http.StatusBadGateway || status == http.StatusGatewayTimeout {
		level = slog.LevelWarn
	}
	if p.log.Enabled(r.Context(), level) {
		p.log.LogAttrs(r.Context(), level, "proxy: request failed",
			slog.String("plugin", st.plugin),
			slog.Int("generation", st.generation),
			slog.String("request_id", st.id),
			slog.String("method", r.Method),
			slog.String("path", st.path),
			slog.Int("status", status),
			slog.String("error", err.Error()),
		)
	}
	if status == StatusClientClosed {
		return
	}

	detail := err.Error()
	if errors.Is(err, errUpstream) {
		detail = errUpstream.Error()
	}
	body, _ := json.Marshal(Problem{
		Type:      "about:blank",
		Title:     http.StatusText(status),
		Status:    status,
		Detail:    detail,
		Plugin:    st.plugin,
		RequestID: st.id,
	})
	h := w.Header()
	h.Set("Content-Type", "application/problem+json")
	h.Set("Content-Length", strconv.Itoa(len(body)))
	h.Set("Cache-Control", "no-store")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set(headerError, "1")
	if st.body != nil {
		// The rest of the request body is not for anyone: close the connection rather
		// than let net/http read on, without a deadline, from a possibly slow client.
		st.body.expire()
		h.Set("Connection", "close")
	}
	if nr := (*notReadyError)(nil); status == http.StatusServiceUnavailable && !(errors.As(err, &nr) && nr.failed) {
		h.Set("Retry-After", "1")
	}
	w.WriteHeader(status)
	_, _ = w.Write(body)
}

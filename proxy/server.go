package proxy

import (
	"log/slog"
	"net/http"
	"time"
)

// Limits of the public listener's http.Server (NewServer).
const (
	// ReadHeaderTimeout bounds the time from accepting a connection (or the end of the
	// previous request on it) to the end of the request headers: a slowloris client
	// trickling a header is disconnected after it.
	ReadHeaderTimeout = 10 * time.Second
	// IdleTimeout closes a kept-alive connection without a new request.
	IdleTimeout = 120 * time.Second
	// MaxHeaderBytes bounds the request line and headers; beyond it net/http answers
	// 431 Request Header Fields Too Large before any handler runs.
	MaxHeaderBytes = 64 << 10
)

// There is no ReadTimeout or WriteTimeout: request and response bodies are streamed
// (uploads, server-sent events, WebSockets) for as long as the plugin's
// request_timeout allows, which the Proxy enforces per request.

// serverLimits are the settings NewServer applies; tests shorten them.
type serverLimits struct {
	readHeaderTimeout time.Duration
	idleTimeout       time.Duration
	maxHeaderBytes    int
}

var defaultLimits = serverLimits{
	readHeaderTimeout: ReadHeaderTimeout,
	idleTimeout:       IdleTimeout,
	maxHeaderBytes:    MaxHeaderBytes,
}

// NewServer returns the http.Server of the public listener serving h (the Proxy),
// with the limits above. log receives net/http's own errors (TLS handshakes, bad
// requests) at debug level: a scanner must not flood the log.
func NewServer(h http.Handler, log *slog.Logger) *http.Server {
	return newServer(h, log, defaultLimits)
}

func newServer(h http.Handler, log *slog.Logger, l serverLimits) *http.Server {
	if log == nil {
		log = slog.Default()
	}
	return &http.Server{
		Handler:           h,
		ReadHeaderTimeout: l.readHeaderTimeout,
		IdleTimeout:       l.idleTimeout,
		MaxHeaderBytes:    l.maxHeaderBytes,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelDebug),
	}
}

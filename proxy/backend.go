package proxy

import (
	"context"
	"log/slog"
	"mime"
	"net"
	"net/http"
	"net/http/httputil"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

const (
	dialTimeout     = 5 * time.Second
	idleConnTimeout = 90 * time.Second
	defaultIdle     = 256
	bufferSize      = 32 << 10
)

// backend is one generation of one plugin: its transport, its ReverseProxy
// and its in-flight counter. Built once by SetReady, immutable afterwards but
// for the counters.
type backend struct {
	name      string
	cfg       Backend
	scheme    string // of the outbound URL
	host      string // of the outbound URL and its Host header
	basePath  string // the backend URL's path, without a trailing slash
	transport *http.Transport
	rp        *httputil.ReverseProxy

	active  atomic.Int64 // requests in flight
	retired atomic.Bool  // replaced or removed: close idle conns once active hits 0
}

func (p *Proxy) newBackend(name string, cfg Backend) *backend {
	b := &backend{name: name, cfg: cfg}

	idle := defaultIdle
	if cfg.MaxConcurrent > 0 {
		idle = cfg.MaxConcurrent
	}
	dialer := &net.Dialer{Timeout: dialTimeout, KeepAlive: 30 * time.Second}
	b.transport = &http.Transport{
		Proxy:                 nil, // never from the environment
		DialContext:           dialer.DialContext,
		ForceAttemptHTTP2:     false,
		MaxIdleConns:          idle,
		MaxIdleConnsPerHost:   idle,
		IdleConnTimeout:       idleConnTimeout,
		ExpectContinueTimeout: time.Second,
		DisableCompression:    true, // pass Accept-Encoding through untouched
	}

	switch cfg.URL.Scheme {
	case "unix":
		// network = "none": HTTP over the plugin's unix socket.
		sock := cfg.URL.Path
		b.scheme, b.host = "http", "localhost"
		b.transport.DialContext = func(ctx context.Context, _, _ string) (net.Conn, error) {
			return dialer.DialContext(ctx, "unix", sock)
		}
	default:
		b.scheme, b.host = cfg.URL.Scheme, cfg.URL.Host
		b.basePath = strings.TrimSuffix(cfg.URL.EscapedPath(), "/")
	}

	b.rp = &httputil.ReverseProxy{
		Rewrite:        b.rewrite,
		Transport:      b.transport,
		FlushInterval:  -1,
		BufferPool:     bufPool{},
		ModifyResponse: b.modifyResponse,
		ErrorHandler: func(w http.ResponseWriter, r *http.Request, err error) {
			p.fail(w, r, classify(r.Context(), err))
		},
		ErrorLog: slog.NewLogLogger(p.log.Handler(), slog.LevelWarn),
	}
	return b
}

// rewrite points the outbound request at the backend. The path was already
// stripped of /plugins/<name> by servePlugin.
func (b *backend) rewrite(pr *httputil.ProxyRequest) {
	st := stateOf(pr.In.Context())
	out := pr.Out
	out.URL.Scheme = b.scheme
	out.URL.Host = b.host
	out.Host = b.host
	if b.basePath != "" {
		// Join, never "resolve": /base + /a%2Fb = /base/a%2Fb.
		esc := b.basePath + out.URL.EscapedPath()
		out.URL.RawPath = esc
		out.URL.Path = strings.TrimSuffix(b.cfg.URL.Path, "/") + out.URL.Path
		if out.URL.EscapedPath() != esc {
			out.URL.RawPath = ""
		}
	}
	pr.SetXForwarded() // client-sent X-Forwarded-* were dropped: not trusted
	out.Header.Set("X-Forwarded-Prefix", Prefix+b.name)
	out.Header.Set(headerRequestID, st.id)
}

// modifyResponse keeps upstream headers from posing as ours, and lifts the
// request timeout from a stream that has answered.
func (b *backend) modifyResponse(res *http.Response) error {
	res.Header.Del(headerError)
	res.Header.Del(headerRequestID) // ours is already on the response
	if st := stateOf(res.Request.Context()); st.timer != nil && isStream(res) {
		st.timer.Stop()
	}
	return nil
}

// isStream reports whether res is a long-lived answer: a protocol upgrade or
// server-sent events (the media type is parsed: "; charset=utf-8" happens).
func isStream(res *http.Response) bool {
	if res.StatusCode == http.StatusSwitchingProtocols {
		return true
	}
	mt, _, _ := mime.ParseMediaType(res.Header.Get("Content-Type"))
	return mt == "text/event-stream"
}

// acquireResult is what acquire decided.
type acquireResult int

const (
	acquired acquireResult = iota
	overCapacity
	retiredBackend // replaced meanwhile: look the route up again
)

// acquire counts a request in. Never blocks. It refuses a retired backend: the
// runner stops a replaced container once its backend has nothing in flight, so a
// request that looked the route up just before the swap must not slip in after
// that check. Both sides write their own flag before reading the other's, so
// either the request sees retired or the drainer sees it in flight.
func (b *backend) acquire() acquireResult {
	limit := int64(b.cfg.MaxConcurrent)
	for {
		n := b.active.Load()
		if limit > 0 && n >= limit {
			return overCapacity
		}
		if b.active.CompareAndSwap(n, n+1) {
			break
		}
	}
	if b.retired.Load() {
		b.release()
		return retiredBackend
	}
	return acquired
}

// release counts a request out; the last one out of a retired backend closes
// its idle connections.
func (b *backend) release() {
	if b.active.Add(-1) == 0 && b.retired.Load() {
		b.transport.CloseIdleConnections()
	}
}

// retire marks b replaced. Its idle connections are closed now if nothing is in
// flight, else by the last release. Either order of a racing acquire/release
// and retire ends with a close after the last use: both sides check the other
// after writing their own flag.
func (b *backend) retire() {
	b.retired.Store(true)
	if b.active.Load() == 0 {
		b.transport.CloseIdleConnections()
	}
}

// drained reports whether b is retired with nothing in flight.
func (b *backend) drained() bool {
	return b.retired.Load() && b.active.Load() == 0
}

// bufPool recycles the ReverseProxy's copy buffers.
type bufPool struct{}

var buffers = sync.Pool{New: func() any { b := make([]byte, bufferSize); return &b }}

func (bufPool) Get() []byte  { return *buffers.Get().(*[]byte) }
func (bufPool) Put(b []byte) { buffers.Put(&b) }

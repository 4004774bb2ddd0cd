package proxy

import (
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httputil"
	"net/netip"
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
	trusted   *atomic.Pointer[[]netip.Prefix] // the Proxy's: read per request
	scheme    string                          // of the outbound URL
	host      string                          // of the outbound URL and its Host header
	basePath  string                          // the backend URL's path, without a trailing slash
	prefix    []string                        // X-Forwarded-Prefix: /plugins/<name>, built once
	transport *fastTransport
	rp        *httputil.ReverseProxy

	active  atomic.Int64 // requests in flight
	retired atomic.Bool  // replaced or removed: close idle conns once active hits 0
}

func (p *Proxy) newBackend(name string, cfg Backend) *backend {
	b := &backend{name: name, cfg: cfg, trusted: &p.trusted, prefix: []string{Prefix + name}}

	idle := defaultIdle
	if cfg.MaxConcurrent > 0 {
		idle = cfg.MaxConcurrent
	}
	maxHeader := cfg.MaxResponseHeader
	if maxHeader <= 0 {
		maxHeader = DefaultMaxResponseHeader
	}
	switch cfg.URL.Scheme {
	case "unix":
		// network = "none": HTTP over the plugin's unix socket.
		b.scheme, b.host = "http", "localhost"
		b.transport = newUpstream("unix", cfg.URL.Path, idle, maxHeader)
	default:
		b.scheme, b.host = cfg.URL.Scheme, cfg.URL.Host
		b.basePath = strings.TrimSuffix(cfg.URL.EscapedPath(), "/")
		addr := cfg.URL.Host
		if cfg.URL.Port() == "" {
			addr = net.JoinHostPort(cfg.URL.Hostname(), "80")
		}
		b.transport = newUpstream("tcp", addr, idle, maxHeader)
	}

	b.transport.noFast = p.noFast

	b.rp = &httputil.ReverseProxy{
		Rewrite:   b.rewrite,
		Transport: b.transport,
		// 0, not -1: ReverseProxy flushes server-sent events and bodies of unknown
		// length after every write anyway. A body of known length is left to
		// net/http's buffered writer, so that a small answer leaves in one write
		// with its headers, not in three (headers, body, end).
		FlushInterval:  0,
		BufferPool:     bufPool{},
		ModifyResponse: b.modifyResponse,
		ErrorHandler: func(w http.ResponseWriter, r *http.Request, err error) {
			p.fail(w, r, stateOf(r.Context()), classify(r.Context(), err))
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
	setForwarded(pr, *b.trusted.Load())
	// Shared by every request: net/http only reads header values, and a Set or Add
	// on the outbound header would replace the slice or outgrow its capacity of 1.
	out.Header["X-Forwarded-Prefix"] = b.prefix
	out.Header.Set(headerRequestID, st.id)
	stripHopByHop(out.Header)
}

// setForwarded sets X-Forwarded-For/Proto/Host on the outbound request. ReverseProxy
// has already dropped the client's X-Forwarded-For/Host/Proto and Forwarded from it.
// A peer in trusted is a reverse proxy of the operator's: its chain is extended and its
// Proto and Host kept. From any other peer, every X-Forwarded-* and X-Real-Ip header
// is a claim the runner cannot check: dropped.
func setForwarded(pr *httputil.ProxyRequest, trusted []netip.Prefix) {
	in, out := pr.In, pr.Out
	if !isTrusted(in.RemoteAddr, trusted) {
		for k := range out.Header {
			if strings.HasPrefix(k, "X-Forwarded-") || k == "X-Real-Ip" {
				delete(out.Header, k)
			}
		}
		pr.SetXForwarded()
		return
	}
	var chain []string
	for _, v := range in.Header.Values("X-Forwarded-For") {
		for _, hop := range strings.Split(v, ",") {
			if hop = strings.TrimSpace(hop); hop != "" {
				chain = append(chain, hop)
			}
		}
	}
	if len(chain) > 0 {
		out.Header.Set("X-Forwarded-For", strings.Join(chain, ", "))
	}
	pr.SetXForwarded() // appends the peer to the chain
	if v := in.Header.Get("X-Forwarded-Proto"); v == "http" || v == "https" {
		out.Header.Set("X-Forwarded-Proto", v)
	}
	if v := in.Header.Get("X-Forwarded-Host"); validHost(v) {
		out.Header.Set("X-Forwarded-Host", v)
	}
}

// isTrusted reports whether remoteAddr ("ip:port", as net/http sets it) is in trusted.
func isTrusted(remoteAddr string, trusted []netip.Prefix) bool {
	if len(trusted) == 0 {
		return false
	}
	ap, err := netip.ParseAddrPort(remoteAddr)
	if err != nil {
		return false
	}
	addr := ap.Addr().Unmap()
	for _, p := range trusted {
		if p.Contains(addr) {
			return true
		}
	}
	return false
}

// validHost accepts a host or host:port made of the characters a host name, an IPv4
// or a bracketed IPv6 address may have.
func validHost(h string) bool {
	if h == "" || len(h) > 255 {
		return false
	}
	for i := 0; i < len(h); i++ {
		c := h[i]
		switch {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9':
		case c == '.', c == '-', c == ':', c == '[', c == ']', c == '_':
		default:
			return false
		}
	}
	return true
}

// stripHopByHop removes what ReverseProxy leaves of the hop-by-hop headers: every
// Proxy-* header and "Proxy" itself (httpoxy: CGI-style code turns it into
// HTTP_PROXY), and a protocol upgrade other than WebSocket (h2c and friends would hand
// the plugin a connection the proxy no longer understands).
func stripHopByHop(h http.Header) {
	for k := range h {
		if k == "Proxy" || strings.HasPrefix(k, "Proxy-") {
			delete(h, k)
		}
	}
	if up := h.Get("Upgrade"); up != "" && !strings.EqualFold(strings.TrimSpace(up), "websocket") {
		h.Del("Upgrade")
		h.Del("Connection")
	}
}

// modifyResponse keeps upstream headers from posing as ours, and lifts the
// request timeout from a stream that has answered.
func (b *backend) modifyResponse(res *http.Response) error {
	if res.StatusCode == http.StatusSwitchingProtocols &&
		(res.Request.Header.Get("Upgrade") == "" ||
			!strings.EqualFold(strings.TrimSpace(res.Header.Get("Upgrade")), "websocket")) {
		// Only WebSocket upgrades the client asked for pass; ErrorHandler → 502. The
		// error also makes ReverseProxy close the body, i.e. the connection: for an
		// upgrade nobody asked for, its own check answers 502 and leaves it open.
		return errBadUpgrade
	}
	res.Header.Del(headerError)
	res.Header.Del(headerRequestID) // ours is already on the response
	if res.ContentLength < 0 && res.StatusCode != http.StatusSwitchingProtocols && res.Body != nil && res.Body != http.NoBody {
		// Trailers (announced or not) arrive with the end of a chunked body.
		delete(res.Trailer, headerError)
		delete(res.Trailer, headerRequestID)
		res.Body = &trailerScrub{ReadCloser: res.Body, res: res}
	}
	if st := stateOf(res.Request.Context()); st.timer != nil && isStream(res) {
		st.timer.Stop()
	}
	return nil
}

// isStream reports whether res is a long-lived answer: a protocol upgrade or
// server-sent events (the media type is compared, not the header: "; charset=utf-8"
// happens). The media type is what mime.ParseMediaType would return, without
// parsing (and allocating for) the parameters: this runs on every response.
func isStream(res *http.Response) bool {
	if res.StatusCode == http.StatusSwitchingProtocols {
		return true
	}
	mt, _, _ := strings.Cut(res.Header.Get("Content-Type"), ";")
	return strings.EqualFold(strings.TrimSpace(mt), "text/event-stream")
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

// trailerScrub removes the proxy's own headers from the trailers of a response once
// its body has been read: ReverseProxy copies them to the client after the body.
type trailerScrub struct {
	io.ReadCloser
	res *http.Response
}

func (t *trailerScrub) Read(p []byte) (int, error) {
	n, err := t.ReadCloser.Read(p)
	if err != nil {
		delete(t.res.Trailer, headerError)
		delete(t.res.Trailer, headerRequestID)
	}
	return n, err
}

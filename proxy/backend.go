package proxy

import (
	"io"
	"log/slog"
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

// backend is one generation of one plugin as SetReady gave it: its settings, its
// targets (the instances that serve) and the ReverseProxy in front of them. Immutable
// once built; the targets' counters are shared with the backends before and after it.
type backend struct {
	name    string
	cfg     Backend
	trusted *atomic.Pointer[[]netip.Prefix] // the Proxy's: read per request
	gone    *atomic.Pointer[GoneFunc]       // the Proxy's: read when a connection fails
	prefix  []string                        // X-Forwarded-Prefix: /plugins/<name>, built once
	targets []*target
	rp      *httputil.ReverseProxy
}

func (p *Proxy) newBackend(name string, cfg Backend, targets []*target) *backend {
	b := &backend{name: name, cfg: cfg, trusted: &p.trusted, gone: &p.gone, prefix: []string{Prefix + name}, targets: targets}
	b.rp = &httputil.ReverseProxy{
		Rewrite:   b.rewrite,
		Transport: b,
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

// maxHeader is the bound of a target's response headers.
func maxHeader(cfg Backend) int64 {
	if cfg.MaxResponseHeader > 0 {
		return cfg.MaxResponseHeader
	}
	return DefaultMaxResponseHeader
}

// maxIdle is how many idle connections a target keeps: as many as it may have requests
// in flight.
func maxIdle(cfg Backend) int {
	if cfg.MaxConcurrent > 0 {
		return cfg.MaxConcurrent
	}
	return defaultIdle
}

// RoundTrip sends the request to the target servePlugin acquired for it. A request that
// could not connect is sent once to another instance (nothing reached the first), and
// so is a GET or HEAD whose connection broke before any of the answer came (it can be
// repeated): what nginx's proxy_next_upstream error does.
func (b *backend) RoundTrip(req *http.Request) (*http.Response, error) {
	res, err := b.roundTrip(req)
	if err != nil && connBroke(err) && req.Context().Err() == nil {
		// The instance may be dying: the engine says so before its event reaches the
		// runner. Asked, the runner confirms: then it is a restart (503, retry), not a
		// plugin failing to answer (502).
		if gone := b.gone.Load(); gone != nil {
			if why, stopped := (*gone)(b.name, stateOf(req.Context()).target.ID); stopped {
				return nil, &notReadyError{reason: why}
			}
		}
	}
	return res, err
}

func (b *backend) roundTrip(req *http.Request) (*http.Response, error) {
	st := stateOf(req.Context())
	t := st.target
	var body *replayableBody
	if len(b.targets) > 1 && req.Body != nil && req.Body != http.NoBody {
		body = &replayableBody{ReadCloser: req.Body}
		req.Body = body
	}
	res, err := t.transport.RoundTrip(req)
	if err == nil {
		t.answered()
		return res, nil
	}
	dial := connectFailed(err)
	if dial {
		t.connFailed()
	}
	if len(b.targets) < 2 || req.Context().Err() != nil ||
		!(dial || (req.Method == http.MethodGet || req.Method == http.MethodHead) && connBroke(err)) ||
		(body != nil && body.started.Load()) {
		return nil, err
	}
	next, r := pick(b.targets, int64(b.cfg.MaxConcurrent), t)
	if r != acquired {
		return nil, err
	}
	t.release()
	st.target = next
	retry := req.Clone(req.Context())
	retry.URL.Host, retry.Host = next.host, next.host
	if body != nil {
		retry.Body = &replayableBody{ReadCloser: body.ReadCloser}
	}
	res, err = next.transport.RoundTrip(retry)
	if err == nil {
		next.answered()
	} else if connectFailed(err) {
		next.connFailed()
	}
	return res, err
}

// replayableBody lets a request body that nobody began to read go to a second
// instance: the transport closes the body when its connection fails, and a Close before
// any Read is remembered instead of done (the server closes the client's body when the
// handler returns). A Close after a Read began is done at once: it may be what unblocks
// that Read.
type replayableBody struct {
	io.ReadCloser
	started atomic.Bool
	closed  atomic.Bool
}

func (b *replayableBody) Read(p []byte) (int, error) {
	b.started.Store(true)
	if b.closed.Load() {
		return 0, http.ErrBodyReadAfterClose
	}
	return b.ReadCloser.Read(p)
}

func (b *replayableBody) Close() error {
	if b.started.Load() {
		return b.ReadCloser.Close()
	}
	b.closed.Store(true)
	return nil
}

// rewrite points the outbound request at the backend. The path was already
// stripped of /plugins/<name> by servePlugin.
func (b *backend) rewrite(pr *httputil.ProxyRequest) {
	st := stateOf(pr.In.Context())
	out := pr.Out
	out.URL.Scheme = "http"
	out.URL.Host = st.target.host
	out.Host = st.target.host
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

// Package proxy owns the public HTTP surface: /plugins/<name>/* routed to that
// plugin's current backend, with the /plugins/<name> prefix stripped.
//
// The route table is an immutable map swapped with an atomic pointer: the
// request path does one atomic load and one map lookup, no locks. Writers
// (SetReady, SetNotReady, Remove) copy the map under a mutex. Each ready route
// has its own httputil.ReverseProxy and transport, built when the route is set,
// never per request; the transport sends plain GETs and HEADs itself on kept-alive
// connections and everything else through an http.Transport (upstream.go). A
// replaced backend keeps serving the requests that already reached it; its idle
// upstream connections are closed once the last of them finishes.
//
// Errors the proxy itself makes are RFC 9457 problem+json bodies carrying the
// header X-Xcore-Error: 1, so a client can tell them from a plugin's own errors.
// The proxy knows URLs only; it never talks to Docker.
package proxy

import (
	"context"
	"log/slog"
	"maps"
	"net/http"
	"net/netip"
	"net/url"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Prefix is the path under which plugins are served: /plugins/<name>/...
const Prefix = "/plugins/"

// Backend is where a ready plugin's requests go, and the limits that apply to them.
type Backend struct {
	// Targets are the instances that serve, balanced by fewest requests in flight.
	Targets []Target
	// Generation is informational (logs).
	Generation int
	// RequestTimeout bounds a request until the plugin has answered it
	// (0 = none); exceeded → 504. A server-sent event stream or a protocol
	// upgrade (WebSocket) is no longer bounded once its response headers arrive.
	RequestTimeout time.Duration
	// MaxConcurrent caps the requests in flight on each target (0 = unlimited);
	// beyond it on every target → 503 + Retry-After at once, no queueing.
	MaxConcurrent int
	// MaxBody caps the request body in bytes (0 = unlimited); beyond it → 413.
	MaxBody int64
	// MaxResponseHeader caps the bytes of a plugin's response headers, 1xx answers
	// included, on every path (0 = DefaultMaxResponseHeader, 1 MiB); beyond it the
	// client gets 502 naming the limit and the connection to the plugin is closed.
	MaxResponseHeader int64
}

// Options configures a Proxy.
type Options struct {
	// Logger receives request errors; nil means slog.Default().
	Logger *slog.Logger
	// Observer, if set, is told about every request to a configured plugin (metrics).
	// Requests for unknown names are not observed: a scan must not create series.
	Observer Observer
	// TrustedProxies are the networks of reverse proxies in front of the runner
	// (runner { trusted_proxies }). When a request's direct peer is in one of them, its
	// X-Forwarded-For is kept and the peer appended, and its X-Forwarded-Proto and
	// X-Forwarded-Host are kept when well-formed. From any other peer every
	// X-Forwarded-* and X-Real-Ip header is dropped and the proxy's own are set. A
	// client's Forwarded (RFC 7239) header is never passed on. Empty: trust no one.
	TrustedProxies []netip.Prefix
}

// Observer receives one call per finished request to a configured plugin.
type Observer interface {
	RequestDone(plugin string, status int, d time.Duration)
}

// Proxy is an http.Handler routing /plugins/<name>/* to each plugin's backend.
// Its methods are safe for concurrent use.
type Proxy struct {
	log     *slog.Logger
	obs     Observer
	trusted atomic.Pointer[[]netip.Prefix] // replaced whole by SetTrustedProxies, never modified
	routes  atomic.Pointer[table]
	gone    atomic.Pointer[GoneFunc]

	mu sync.Mutex // serialises writers of routes, and guards targets
	// targets holds every target per plugin that may still have requests in flight:
	// the current ones and the retired ones still draining, by ID.
	targets map[string]map[string]*target

	noFast bool // every request through http.Transport (tests and benchmarks compare the paths)
}

// table is the immutable route table: never modified once published.
type table map[string]*route

// route is one plugin's entry: a ready backend, or the reason it is not ready.
type route struct {
	backend *backend // nil: known but not ready
	reason  string
	failed  bool // not ready until its config changes: no Retry-After
}

// New returns an empty Proxy: every plugin is unknown (404) until set.
func New(opts Options) *Proxy {
	p := &Proxy{
		log:     opts.Logger,
		obs:     opts.Observer,
		targets: make(map[string]map[string]*target),
	}
	if p.log == nil {
		p.log = slog.Default()
	}
	p.SetTrustedProxies(opts.TrustedProxies)
	empty := table{}
	p.routes.Store(&empty)
	return p
}

// ServeHTTP serves /plugins/<name>/* from name's backend and answers anything
// else with 404. The path is split by hand, not by a router: this is every
// request's path, and a router's context and path values cost allocations.
func (p *Proxy) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	st := &reqState{id: requestID(r.Header.Get(headerRequestID)), path: r.URL.Path}
	if r.Body != nil && r.Body != http.NoBody && r.ContentLength != 0 {
		st.body = &bodyGuard{rc: http.NewResponseController(w)}
		defer st.body.finish()
	}
	w.Header().Set(headerRequestID, st.id)
	esc := r.URL.EscapedPath()
	if !cleanPath(r.URL.Path) || !cleanPath(esc) {
		p.fail(w, r, st, errBadPath)
		return
	}
	rawName, restEsc, ok := splitPluginPath(esc)
	if !ok {
		p.fail(w, r, st, errNoRoute)
		return
	}
	p.servePlugin(w, r, st, rawName, restEsc)
}

// servePlugin is the hot path: look the plugin up, apply its limits, proxy.
func (p *Proxy) servePlugin(w http.ResponseWriter, r *http.Request, st *reqState, rawName, restEsc string) {
	name, err := url.PathUnescape(rawName)
	if err != nil || name == "" {
		p.fail(w, r, st, errNoRoute)
		return
	}
	st.plugin = name

	if p.obs != nil {
		if (*p.routes.Load())[name] != nil {
			rec := &st.rec
			rec.ResponseWriter, rec.status = w, http.StatusOK
			w = rec
			st.begin = time.Now()
			defer p.observe(st)
		}
	}
	var b *backend
	for attempt := 0; b == nil; attempt++ {
		rt := (*p.routes.Load())[name]
		switch {
		case rt == nil:
			p.fail(w, r, st, errUnknownPlugin)
			return
		case rt.backend == nil:
			p.fail(w, r, st, &notReadyError{reason: rt.reason, failed: rt.failed})
			return
		}
		if rt.backend.cfg.MaxBody > 0 && r.ContentLength > rt.backend.cfg.MaxBody {
			p.fail(w, r, st, errBodyTooLarge)
			return
		}
		t, res := pick(rt.backend.targets, int64(rt.backend.cfg.MaxConcurrent), nil)
		switch res {
		case acquired:
			b, st.target = rt.backend, t
		case overCapacity:
			p.fail(w, r, st, errOverCapacity)
			return
		case retiredTarget:
			// Swapped under us: the table already holds the successor. Bounded in
			// case a pathological stream of swaps keeps racing us.
			if attempt >= 8 {
				p.fail(w, r, st, &notReadyError{reason: "being replaced"})
				return
			}
		}
	}
	st.generation = b.cfg.Generation
	defer func() { st.target.release() }() // the target a retry moved to, if it did

	// The timeout is a timer rather than a context deadline so that it can be
	// stopped once a stream (SSE, WebSocket) has answered: see modifyResponse.
	// Cancelling the context alone does not end a request whose client is slow to
	// send its body: the transport waits for its read of that body, which only a read
	// deadline on the client's connection interrupts (st.body.expire).
	st.Context = r.Context()
	if b.cfg.RequestTimeout > 0 {
		var cancel context.CancelCauseFunc
		st.Context, cancel = context.WithCancelCause(st.Context)
		st.timer = time.AfterFunc(b.cfg.RequestTimeout, func() {
			cancel(errRequestTimeout)
			st.body.expire()
		})
		defer cancel(nil)
		defer st.timer.Stop()
	}
	// The one shallow copy of the request: its context is st (the state travels
	// to the ReverseProxy's hooks with it), its URL and Body are replaced below.
	out := r.WithContext(st)
	if b.cfg.MaxBody > 0 && r.Body != nil && r.Body != http.NoBody {
		if r.ContentLength < 0 {
			// Unknown length (chunked): read the start before the plugin is dialled, so
			// that a body over a small max_body never reaches it.
			if err := peekBody(out, b.cfg.MaxBody, b.cfg.RequestTimeout, st); err != nil {
				p.fail(w, r, st, err)
				return
			}
		} else {
			out.Body = &limitedBody{ReadCloser: http.MaxBytesReader(w, r.Body, b.cfg.MaxBody), st: st}
		}
	}

	// Strip the prefix from both the decoded and the escaped path, so that
	// percent-encoding (a%2Fb) reaches the plugin intact.
	u := *r.URL
	if restEsc == "" {
		restEsc = "/"
	}
	u.RawPath = restEsc
	if u.Path, err = url.PathUnescape(restEsc); err != nil {
		p.fail(w, r, st, errBadPath)
		return
	}
	if u.EscapedPath() != restEsc {
		// RawPath was the default encoding of Path (or not a valid one).
		u.RawPath = ""
	}
	out.URL = &u

	b.rp.ServeHTTP(w, out)
}

// observe tells the Observer about a finished request.
func (p *Proxy) observe(st *reqState) {
	status := st.rec.status
	if !st.rec.wroteHeader {
		status = StatusClientClosed // nothing was written: the client went away
	}
	p.obs.RequestDone(st.plugin, status, time.Since(st.begin))
}

// splitPluginPath splits an escaped /plugins/<name>/<rest> path into the
// escaped name and the escaped rest ("" or starting with "/"); ok is false
// for a path outside /plugins/ or without a name.
func splitPluginPath(esc string) (name, rest string, ok bool) {
	s, ok := strings.CutPrefix(esc, Prefix)
	if !ok {
		return "", "", false
	}
	name, rest = s, ""
	if i := strings.IndexByte(s, '/'); i >= 0 {
		name, rest = s[:i], s[i:]
	}
	return name, rest, name != ""
}

// GoneFunc reports whether instance id of plugin has stopped (the runner asks the
// engine), and why ("restarting after exit code 3"). It is called on a request's
// goroutine when a connection to the instance failed, so it must answer within a
// moment.
type GoneFunc func(plugin, id string) (why string, gone bool)

// SetGoneCheck installs the check that tells a dying instance (503, Retry-After: a new
// one is on its way) from a plugin failing to answer (502).
func (p *Proxy) SetGoneCheck(f GoneFunc) { p.gone.Store(&f) }

// SetTrustedProxies replaces the trusted proxies (Options.TrustedProxies) for the
// requests that arrive from now on: runner { trusted_proxies } applies on reload.
func (p *Proxy) SetTrustedProxies(prefixes []netip.Prefix) {
	t := slices.Clone(prefixes)
	p.trusted.Store(&t)
}

// SetReady routes name to b's targets, replacing the previous set atomically.
// Targets that stay (same ID) keep their connections and counts; those that leave
// finish their requests in flight and are released (see Released).
func (p *Proxy) SetReady(name string, b Backend) {
	if len(b.Targets) == 0 {
		p.log.Error("proxy: backend without targets", "plugin", name, "generation", b.Generation)
		p.SetNotReady(name, "no instance to route to")
		return
	}
	p.swap(name, func(known map[string]*target) *route {
		ts := make([]*target, 0, len(b.Targets))
		for _, spec := range b.Targets {
			t := known[spec.ID]
			if t == nil || t.isReleased() || t.Target != spec || t.maxHeader != maxHeader(b) {
				if t != nil {
					t.retire()
				}
				t = newTarget(spec, maxIdle(b), maxHeader(b), p.noFast)
				known[spec.ID] = t
			}
			// Back in the set: a target taken out (a failed probe) and put back
			// before it drained serves again.
			t.retired.Store(false)
			ts = append(ts, t)
		}
		return &route{backend: p.newBackend(name, b, ts)}
	})
}

// SetNotReady makes name known but unavailable: its requests get 503 with
// Retry-After and reason (e.g. "starting", "image xyz not found") in the detail.
func (p *Proxy) SetNotReady(name, reason string) {
	p.swap(name, func(map[string]*target) *route { return &route{reason: reason} })
}

// SetFailed makes name known but failed: it will not serve until its config
// changes (restart attempts exhausted, an image that cannot be found), so its
// requests get 503 with reason (e.g. "crashed 5 times in 5m0s: exit code 2") in the
// detail and no Retry-After: a client told to retry in a second would only hammer
// the runner.
func (p *Proxy) SetFailed(name, reason string) {
	p.swap(name, func(map[string]*target) *route { return &route{reason: reason, failed: true} })
}

// Remove forgets name: its next requests get 404. Requests in flight finish.
func (p *Proxy) Remove(name string) {
	p.swap(name, func(map[string]*target) *route { return nil })
}

// swap publishes a new table where name maps to the route build returns (nil:
// removed). build gets name's known targets to reuse or add to; every known target
// that is not in the new route is retired.
func (p *Proxy) swap(name string, build func(known map[string]*target) *route) {
	p.mu.Lock()
	defer p.mu.Unlock()
	known := p.targets[name]
	if known == nil {
		known = map[string]*target{}
		p.targets[name] = known
	}
	rt := build(known)
	cur := *p.routes.Load()
	next := maps.Clone(cur)
	if rt == nil {
		delete(next, name)
	} else {
		next[name] = rt
	}
	p.routes.Store(&next)
	in := map[*target]bool{}
	if rt != nil && rt.backend != nil {
		for _, t := range rt.backend.targets {
			in[t] = true
		}
	}
	for _, t := range known {
		if !in[t] {
			t.retire()
		}
	}
	p.pruneLocked(name)
}

// pruneLocked forgets name's targets that were retired and drained.
func (p *Proxy) pruneLocked(name string) {
	for id, t := range p.targets[name] {
		if t.isReleased() {
			delete(p.targets[name], id)
		}
	}
	if len(p.targets[name]) == 0 {
		delete(p.targets, name)
	}
}

// Released returns a channel closed once the target id of plugin name is out of the
// route and has nothing in flight: the instance can be stopped without cutting a
// request. An unknown target is released already.
func (p *Proxy) Released(name, id string) <-chan struct{} {
	p.mu.Lock()
	defer p.mu.Unlock()
	if t := p.targets[name][id]; t != nil {
		return t.released
	}
	return closedChan
}

var closedChan = func() chan struct{} { c := make(chan struct{}); close(c); return c }()

// Alive tells the proxy that the target id of plugin name passed a health probe: a
// target ejected for failing to connect is balanced to again.
func (p *Proxy) Alive(name, id string) {
	p.mu.Lock()
	t := p.targets[name][id]
	p.mu.Unlock()
	if t != nil && (t.ejected.Load() || t.failures.Load() != 0) {
		t.failures.Store(0)
		t.ejected.Store(false)
	}
}

// InFlight returns the number of requests being proxied to name's targets, the
// current ones and those still draining.
func (p *Proxy) InFlight(name string) int {
	p.mu.Lock()
	defer p.mu.Unlock()
	n := 0
	for _, t := range p.targets[name] {
		n += int(t.active.Load())
	}
	return n
}

// Close closes the idle upstream connections of every target's transport.
// The Proxy stays usable; a later request dials anew.
func (p *Proxy) Close() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for name, ts := range p.targets {
		for _, t := range ts {
			t.transport.CloseIdleConnections()
		}
		p.pruneLocked(name)
	}
}

// statusRecorder remembers the status written, for the Observer. Unwrap lets
// http.ResponseController (used by ReverseProxy to flush and hijack) reach the
// real writer.
type statusRecorder struct {
	http.ResponseWriter
	status      int
	wroteHeader bool
}

func (s *statusRecorder) WriteHeader(code int) {
	if !s.wroteHeader && code >= 200 {
		s.status, s.wroteHeader = code, true
	}
	s.ResponseWriter.WriteHeader(code)
}

func (s *statusRecorder) Write(b []byte) (int, error) {
	s.wroteHeader = true
	return s.ResponseWriter.Write(b)
}

func (s *statusRecorder) Unwrap() http.ResponseWriter { return s.ResponseWriter }

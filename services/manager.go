// Package services owns the service blocks of the config as a plugin sees them: the
// runner-hosted sidecar endpoint of every plugin (/services/<name>/...), its token
// authentication and per-plugin ACL, the builtin kv store (bbolt under state_dir, one
// namespace per plugin), and the forwarding of url services to their upstream with the
// configured credential headers, which stay in the runner. An env service has no endpoint:
// the runner puts its values in the container's environment.
//
// It never calls Docker: the runner tells it which tokens are valid (Allow, Revoke) and
// serves Handler on its network's gateway IP, or PluginHandler on a plugin's unix socket.
package services

import (
	"context"
	"errors"
	"fmt"
	"log"
	"log/slog"
	"net/http"
	"net/http/httputil"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/go-chi/chi/v5"
	bolt "go.etcd.io/bbolt"
	bolterrors "go.etcd.io/bbolt/errors"

	"github.com/xcore/runner/config"
)

// servicesPrefix is where a plugin's services live on its endpoint.
const servicesPrefix = "/services/"

// Options configures a Manager.
type Options struct {
	// StateDir holds the kv data in StateDir/kv.db (created 0600).
	StateDir string
	// Key is the secret tokens are derived from (at least 32 bytes).
	Key []byte
	// Logger gets one debug line per request; nil means slog.Default().
	Logger *slog.Logger
}

// limits are the timeouts of a Manager; tests shorten them.
type limits struct {
	dial   time.Duration // upstream connect: down → 502 after this
	header time.Duration // upstream response headers: slow → 504 after this
	lock   time.Duration // waiting for kv.db's file lock (a previous runner still exiting)
}

var defaultLimits = limits{dial: 5 * time.Second, header: 30 * time.Second, lock: 5 * time.Second}

// Manager serves the sidecar endpoints of all plugins. Its methods are safe for
// concurrent use.
type Manager struct {
	log *slog.Logger
	key []byte
	db  *bolt.DB

	// routes is the current configuration, immutable once published: a request loads
	// it once, so SetConfig applies from the next request on without locks.
	routes atomic.Pointer[routes]

	mu     sync.RWMutex
	tokens map[string]map[int]string // plugin → generation → token, the valid ones

	transport *http.Transport
	rp        *httputil.ReverseProxy
	mux       http.Handler
}

// routes is one SetConfig: what each service is and which plugin may call which.
type routes struct {
	services map[string]*route
	declared map[string]map[string]bool // plugin → service → declared
}

type kind int

const (
	kindEnv kind = iota
	kindKV
	kindURL
)

type route struct {
	name string
	kind kind
	up   *upstream // kindURL; nil if the url does not parse
}

// New opens the kv store under o.StateDir.
func New(o Options) (*Manager, error) { return newManager(o, defaultLimits) }

func newManager(o Options, lim limits) (*Manager, error) {
	if o.StateDir == "" {
		return nil, errors.New("new services manager: no state dir")
	}
	if len(o.Key) < 32 {
		return nil, fmt.Errorf("new services manager: key is %d bytes, want at least 32", len(o.Key))
	}
	lg := o.Logger
	if lg == nil {
		lg = slog.Default()
	}
	if err := os.MkdirAll(o.StateDir, 0o700); err != nil {
		return nil, fmt.Errorf("create state dir: %w", err)
	}
	path := filepath.Join(o.StateDir, "kv.db")
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: lim.lock})
	if errors.Is(err, bolterrors.ErrTimeout) {
		return nil, fmt.Errorf("open kv store %s: locked by another process (another runner on this state_dir?): %w", path, err)
	}
	if err != nil {
		return nil, fmt.Errorf("open kv store %s: %w", path, err)
	}

	m := &Manager{
		log:       lg,
		key:       append([]byte(nil), o.Key...),
		db:        db,
		tokens:    map[string]map[int]string{},
		transport: newTransport(lim),
	}
	m.routes.Store(&routes{})
	m.rp = &httputil.ReverseProxy{
		Rewrite:      rewrite,
		Transport:    m.transport,
		ErrorHandler: m.proxyError,
		// ReverseProxy's own complaints (a body copy cut short) go to our log, not stderr.
		ErrorLog: log.New(&slogWriter{lg}, "", 0),
	}

	r := chi.NewRouter()
	r.HandleFunc("/p/{plugin}/*", func(w http.ResponseWriter, r *http.Request) {
		plugin := chi.URLParam(r, "plugin")
		prefix := "/p/" + plugin
		p := r.URL.EscapedPath()
		if !strings.HasPrefix(p, prefix+"/") {
			writeProblem(w, http.StatusNotFound, "not found: services are served under /p/<plugin>/services/<name>/")
			return
		}
		m.serve(w, r, plugin, p[len(prefix):])
	})
	r.NotFound(func(w http.ResponseWriter, r *http.Request) {
		writeProblem(w, http.StatusNotFound, "not found: services are served under /p/<plugin>/services/<name>/")
	})
	r.MethodNotAllowed(r.NotFoundHandler())
	m.mux = r
	return m, nil
}

// Close closes the kv store and idle upstream connections.
func (m *Manager) Close() error {
	m.transport.CloseIdleConnections()
	if err := m.db.Close(); err != nil {
		return fmt.Errorf("close kv store: %w", err)
	}
	return nil
}

// SetConfig installs the services and which plugin declares which (plugin → service
// names). A url service's upstream and headers apply from the next request on.
func (m *Manager) SetConfig(services map[string]*config.Service, declared map[string][]string) {
	rt := &routes{
		services: make(map[string]*route, len(services)),
		declared: make(map[string]map[string]bool, len(declared)),
	}
	for name, s := range services {
		if s == nil {
			continue
		}
		r := &route{name: name}
		switch {
		case s.Builtin == config.BuiltinKV:
			r.kind = kindKV
		case s.URL != "":
			r.kind = kindURL
			up, err := newUpstream(s.URL, s.Headers)
			if err != nil {
				// The error names neither the URL (it may hold a password) nor a header.
				m.log.Error("services: bad upstream url; requests get 502", slog.String("service", name), slog.String("error", err.Error()))
			}
			r.up = up
		default:
			r.kind = kindEnv
		}
		rt.services[name] = r
	}
	for plugin, names := range declared {
		set := make(map[string]bool, len(names))
		for _, n := range names {
			set[n] = true
		}
		rt.declared[plugin] = set
	}
	m.routes.Store(rt)
}

// Handler serves every plugin's endpoint: /p/{plugin}/services/{name}/...
func (m *Manager) Handler() http.Handler { return m.mux }

// PluginHandler serves one plugin's endpoint without the /p/{plugin} prefix:
// /services/{name}/... (the unix socket of a network = "none" container).
func (m *Manager) PluginHandler(plugin string) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		m.serve(w, r, plugin, r.URL.EscapedPath())
	})
}

// EnvName is the environment variable holding a service's URL: "billing-v2" → "BILLING_V2_URL".
func EnvName(service string) string {
	return strings.ToUpper(strings.ReplaceAll(service, "-", "_")) + "_URL"
}

// serve answers one request of plugin; path is the escaped path below the plugin's
// prefix. Authentication comes first, so that without a valid token nothing (not even
// which paths or services exist) can be learnt.
func (m *Manager) serve(w http.ResponseWriter, r *http.Request, plugin, path string) {
	start := time.Now()
	rec := &recorder{ResponseWriter: w}
	var service string
	defer func() { m.logRequest(r, rec, plugin, service, time.Since(start)) }()

	if !m.authorized(plugin, r.Header.Get("Authorization")) {
		rec.Header().Set("WWW-Authenticate", `Bearer realm="xcore"`)
		writeProblem(rec, http.StatusUnauthorized, "missing or invalid token: send Authorization: Bearer $XCORE_TOKEN")
		return
	}
	rest, ok := strings.CutPrefix(path, servicesPrefix)
	if !ok {
		writeProblem(rec, http.StatusNotFound, "not found: services are served under /services/<name>/")
		return
	}
	service, rest, found := strings.Cut(rest, "/")
	if found {
		rest = "/" + rest
	}

	rt := m.routes.Load()
	svc := rt.services[service]
	// An unknown service looks like an undeclared one: a plugin learns nothing about
	// services it may not call.
	if svc == nil || !rt.declared[plugin][service] {
		writeProblem(rec, http.StatusForbidden, fmt.Sprintf("service %q is not declared by plugin %q", service, plugin))
		return
	}
	switch svc.kind {
	case kindKV:
		m.serveKV(rec, r, plugin, rest)
	case kindURL:
		m.forward(rec, r, svc, rest)
	default:
		writeProblem(rec, http.StatusNotFound, fmt.Sprintf("service %q has no endpoint: its values are in the environment", service))
	}
}

func (m *Manager) logRequest(r *http.Request, rec *recorder, plugin, service string, d time.Duration) {
	status := rec.status
	if status == 0 {
		status = http.StatusOK
	}
	level := slog.LevelDebug
	if status == http.StatusBadGateway || status == http.StatusGatewayTimeout || status == http.StatusInternalServerError {
		level = slog.LevelWarn // the upstream or the store misbehaves: an operator's business
	}
	ctx := r.Context()
	if !m.log.Enabled(ctx, level) {
		return
	}
	attrs := []slog.Attr{
		slog.String("plugin", plugin),
		slog.String("service", service),
		slog.String("method", r.Method),
		slog.Int("status", status),
		slog.Duration("duration", d),
	}
	if rec.err != nil {
		attrs = append(attrs, slog.String("error", rec.err.Error()))
	}
	m.log.LogAttrs(ctx, level, "services: request", attrs...)
}

// recorder remembers the status and the internal error of a request for its log line.
type recorder struct {
	http.ResponseWriter
	status int
	err    error
}

func (r *recorder) WriteHeader(code int) {
	if r.status == 0 && (code >= 200 || code == http.StatusSwitchingProtocols) {
		r.status = code
	}
	r.ResponseWriter.WriteHeader(code)
}

func (r *recorder) Write(p []byte) (int, error) {
	if r.status == 0 {
		r.status = http.StatusOK
	}
	return r.ResponseWriter.Write(p)
}

// Unwrap lets http.ResponseController (used by ReverseProxy to flush and to upgrade)
// reach the real writer.
func (r *recorder) Unwrap() http.ResponseWriter { return r.ResponseWriter }

// slogWriter adapts a *log.Logger's output to slog at debug level.
type slogWriter struct{ l *slog.Logger }

func (w *slogWriter) Write(p []byte) (int, error) {
	w.l.LogAttrs(context.Background(), slog.LevelDebug, "services: "+strings.TrimSpace(string(p)))
	return len(p), nil
}

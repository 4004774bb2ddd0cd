// Package admin serves the runner's operating surface on runner.admin_listen: a JSON API
// (plugins, reload, restart, logs, server-sent events), Prometheus metrics and an HTML
// status page. Every route needs the admin token, as `Authorization: Bearer <token>` or
// as the xcore_admin cookie that the status page's login sets. The CLI (`runner ps`,
// `logs`, `reload`, `restart`, `events`) is a client of this API.
package admin

import (
	"context"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"time"

	"github.com/go-chi/chi/v5"
	"github.com/go-chi/chi/v5/middleware"

	"github.com/xcore/runner/runner"
	"github.com/xcore/runner/sandbox"
)

// Runner is what the admin API needs of a runner; *runner.Runner implements it.
type Runner interface {
	Statuses() []runner.Status
	Status(name string) (runner.Status, error)
	Subscribe() (<-chan runner.Event, func())
	ReloadNow(ctx context.Context) (runner.ReloadResult, error)
	Restart(name string) error
	Logs(ctx context.Context, name string, follow bool, tail int) (io.ReadCloser, error)
	PreviousLogs(name string) (runner.PreviousLog, error)
}

var _ Runner = (*runner.Runner)(nil)

// Options configures the admin handler.
type Options struct {
	Runner Runner
	// Token is the admin token every request must carry. It must not be empty.
	Token string
	// Metrics is served at /metrics; nil answers 404 there.
	Metrics *Metrics
	// History, if set, fills the status page's event list with what happened before
	// the page was opened.
	History *History
	Logger  *slog.Logger
	// TokenFile is where the token is kept; the login page names it.
	TokenFile string
	// Version is reported by GET /v1/runner and on the status page.
	Version string
	// ProxyAddr returns the public proxy's address (host:port) once it listens, "" before.
	ProxyAddr func() string
	// Protection returns what the backend enforces of host protection and egress;
	// false before the runner asked (GET /v1/runner then leaves it out).
	Protection func() (sandbox.Protected, bool)
	// Heartbeat is the interval of the comment lines that keep an idle event stream
	// open through proxies; 0 means 15s.
	Heartbeat time.Duration
}

// CookieName holds the admin token in a browser (HttpOnly, SameSite=Strict).
const CookieName = "xcore_admin"

type server struct {
	rt        Runner
	token     []byte
	tokenFile string
	metrics   *Metrics
	history   *History
	log       *slog.Logger
	version   string
	proxyAddr func() string
	protected func() (sandbox.Protected, bool)
	heartbeat time.Duration
	started   time.Time
}

// New returns the admin handler: the JSON API under /v1/, /metrics, and the status
// page at / and /plugins/{name}.
func New(o Options) http.Handler {
	s := &server{
		rt: o.Runner, token: []byte(o.Token), tokenFile: o.TokenFile, metrics: o.Metrics, history: o.History, log: o.Logger,
		version: o.Version, proxyAddr: o.ProxyAddr, protected: o.Protection, heartbeat: o.Heartbeat, started: time.Now(),
	}
	if s.log == nil {
		s.log = slog.Default()
	}
	if s.heartbeat <= 0 {
		s.heartbeat = 15 * time.Second
	}
	if s.proxyAddr == nil {
		s.proxyAddr = func() string { return "" }
	}
	if s.protected == nil {
		s.protected = func() (sandbox.Protected, bool) { return sandbox.Protected{}, false }
	}

	r := chi.NewRouter()
	// The login form and the static assets are the only things served without the token.
	r.Post("/login", s.login)
	r.Get("/static/*", s.static)
	r.Group(func(r chi.Router) {
		r.Use(s.requirePage)
		r.Get("/", s.index)
		r.Get("/plugins/{name}", s.pluginPage)
	})
	r.Group(func(r chi.Router) {
		r.Use(s.requireToken)
		r.Post("/logout", s.logout)
		r.Get("/v1/runner", s.runnerInfo)
		r.Get("/v1/plugins", s.listPlugins)
		r.Get("/v1/plugins/{name}", s.getPlugin)
		r.Post("/v1/reload", s.reload)
		r.Post("/v1/plugins/{name}/restart", s.restart)
		r.Post("/v1/pull", s.pull)
		r.Get("/v1/plugins/{name}/logs", s.logs)
		r.Get("/v1/events", s.events)
		r.Get("/v1/rates", s.rates)
		r.Get("/metrics", s.serveMetrics)
		// The Go profiler, for the operator chasing CPU or memory, behind the token:
		// curl -H "Authorization: Bearer $(cat TOKEN_FILE)" ADMIN/debug/pprof/profile?seconds=30
		r.Mount("/debug", middleware.Profiler())
	})
	r.NotFound(func(w http.ResponseWriter, r *http.Request) {
		if !s.authorized(r) {
			writeProblem(w, http.StatusUnauthorized, errNoToken.Error())
			return
		}
		writeProblem(w, http.StatusNotFound, "no such route: "+r.URL.Path)
	})
	r.MethodNotAllowed(func(w http.ResponseWriter, r *http.Request) {
		if !s.authorized(r) {
			writeProblem(w, http.StatusUnauthorized, errNoToken.Error())
			return
		}
		writeProblem(w, http.StatusMethodNotAllowed, r.Method+" is not allowed on "+r.URL.Path)
	})
	return r
}

var errNoToken = errors.New("admin token missing or wrong: send Authorization: Bearer <token from runner.admin_token_file>")

// authorized reports whether r carries the token, as a bearer header or as the cookie.
// Comparisons take constant time.
func (s *server) authorized(r *http.Request) bool {
	if len(s.token) == 0 {
		return false
	}
	if h := r.Header.Get("Authorization"); h != "" {
		scheme, cred, ok := strings.Cut(h, " ")
		if ok && strings.EqualFold(scheme, "Bearer") && s.matches(strings.TrimSpace(cred)) {
			return true
		}
	}
	if c, err := r.Cookie(CookieName); err == nil && s.matches(c.Value) {
		return true
	}
	return false
}

func (s *server) matches(candidate string) bool {
	return subtle.ConstantTimeCompare([]byte(candidate), s.token) == 1
}

func (s *server) requireToken(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !s.authorized(r) {
			w.Header().Set("WWW-Authenticate", `Bearer realm="xcore runner"`)
			writeProblem(w, http.StatusUnauthorized, errNoToken.Error())
			return
		}
		next.ServeHTTP(w, r)
	})
}

// Problem is the RFC 9457 body of every error the admin API answers.
type Problem struct {
	Type   string `json:"type"`
	Title  string `json:"title"`
	Status int    `json:"status"`
	Detail string `json:"detail,omitempty"`
}

func writeProblem(w http.ResponseWriter, status int, detail string) {
	body, _ := json.Marshal(Problem{Type: "about:blank", Title: http.StatusText(status), Status: status, Detail: detail})
	h := w.Header()
	h.Set("Content-Type", "application/problem+json")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_, _ = w.Write(append(body, '\n'))
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	body, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		writeProblem(w, http.StatusInternalServerError, "encode response: "+err.Error())
		return
	}
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_, _ = w.Write(append(body, '\n'))
}

// Info is the body of GET /v1/runner.
type Info struct {
	Version   string    `json:"version"`
	Listen    string    `json:"listen"` // the public proxy's address; "" while starting
	StartedAt time.Time `json:"started_at"`
	Plugins   int       `json:"plugins"`
	// HostProtection is left out until the runner has asked the backend for it.
	HostProtection *HostProtection `json:"host_protection,omitempty"`
}

// HostProtection says what the runner's host rules enforce (README: What a plugin can
// reach).
type HostProtection struct {
	// Enforced: plugins reach the host only at their sidecar. False with
	// runner { protect_host = false } or where it is unavailable (see Unavailable).
	Enforced bool `json:"enforced"`
	// Egress: egress = "none" and CIDR lists are enforced; plugins with one do not
	// start where it is false.
	Egress      bool   `json:"egress"`
	Rules       string `json:"rules,omitempty"`       // where: "nftables table inet xcore-<id>"
	Unavailable string `json:"unavailable,omitempty"` // which promise cannot be kept here, and why
}

// NewHostProtection is the API's form of what the backend enforces.
func NewHostProtection(p sandbox.Protected) *HostProtection {
	return &HostProtection{Enforced: p.Host, Egress: p.Egress, Rules: p.Rules, Unavailable: p.Unavailable}
}

func (s *server) runnerInfo(w http.ResponseWriter, r *http.Request) {
	info := Info{Version: s.version, Listen: s.proxyAddr(), StartedAt: s.started, Plugins: len(s.rt.Statuses())}
	if p, ok := s.protected(); ok {
		info.HostProtection = NewHostProtection(p)
	}
	writeJSON(w, http.StatusOK, info)
}

func (s *server) listPlugins(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, pluginStatuses(s.rt.Statuses()))
}

func (s *server) getPlugin(w http.ResponseWriter, r *http.Request) {
	st, ok := s.status(w, chi.URLParam(r, "name"))
	if !ok {
		return
	}
	writeJSON(w, http.StatusOK, NewPluginStatus(st))
}

// status looks a plugin up, answering 404 itself when it is unknown.
func (s *server) status(w http.ResponseWriter, name string) (runner.Status, bool) {
	st, err := s.rt.Status(name)
	switch {
	case errors.Is(err, runner.ErrUnknownPlugin):
		writeProblem(w, http.StatusNotFound, "unknown plugin "+quote(name))
		return st, false
	case err != nil:
		writeProblem(w, http.StatusInternalServerError, err.Error())
		return st, false
	}
	return st, true
}

// reload answers 200 with the plan when the config was applied, 422 with its
// diagnostics when it was rejected (nothing changed).
func (s *server) reload(w http.ResponseWriter, r *http.Request) {
	res, err := s.rt.ReloadNow(r.Context())
	if err != nil {
		writeProblem(w, http.StatusInternalServerError, err.Error())
		return
	}
	status := http.StatusOK
	if !res.Applied {
		status = http.StatusUnprocessableEntity
	}
	writeJSON(w, status, res)
}

// RestartAccepted is the body of a 202 answer to POST /v1/plugins/{name}/restart.
type RestartAccepted struct {
	Plugin  string `json:"plugin"`
	Message string `json:"message"`
}

func (s *server) restart(w http.ResponseWriter, r *http.Request) {
	name := chi.URLParam(r, "name")
	err := s.rt.Restart(name)
	switch {
	case errors.Is(err, runner.ErrUnknownPlugin):
		writeProblem(w, http.StatusNotFound, "unknown plugin "+quote(name))
		return
	case err != nil:
		writeProblem(w, http.StatusInternalServerError, err.Error())
		return
	}
	s.log.Info("restart requested through the admin API", "plugin", name)
	writeJSON(w, http.StatusAccepted, RestartAccepted{
		Plugin:  name,
		Message: "restart requested: a fresh container replaces the current one start-first",
	})
}

func (s *server) serveMetrics(w http.ResponseWriter, r *http.Request) {
	if s.metrics == nil {
		writeProblem(w, http.StatusNotFound, "metrics are not enabled")
		return
	}
	s.metrics.Handler().ServeHTTP(w, r)
}

func quote(s string) string {
	b, _ := json.Marshal(s)
	return string(b)
}

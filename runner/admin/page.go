package admin

import (
	"bytes"
	"context"
	"embed"
	"fmt"
	"html/template"
	"io"
	"io/fs"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/go-chi/chi/v5"

	"github.com/xcore/runner/runner"
)

//go:embed web
var webFS embed.FS

var (
	funcs = template.FuncMap{
		"uptime": func(st runner.Status) string {
			if d, ok := Uptime(st, time.Now()); ok {
				return HumanDuration(d)
			}
			return "—"
		},
		// started is when the serving container started (RFC 3339), "" when none serves:
		// the page's script ticks the uptime from it.
		"started": func(st runner.Status) string {
			if _, ok := Uptime(st, time.Now()); ok {
				return st.StartedAt.UTC().Format(time.RFC3339Nano)
			}
			return ""
		},
		"short": func(s string, n int) string {
			s = strings.TrimPrefix(s, "sha256:")
			if len(s) > n {
				return s[:n]
			}
			return s
		},
		"stamp": func(t time.Time) string {
			if t.IsZero() {
				return "—"
			}
			return t.Local().Format("2006-01-02 15:04:05")
		},
		"eventText": eventText,
		// readyText is "ready/replicas" of the serving generation, — without one.
		"readyText": func(st runner.Status) string {
			if st.Replicas == 0 {
				return "—"
			}
			return fmt.Sprintf("%d/%d", st.Ready, st.Replicas)
		},
		"instanceTitle": instanceTitle,
		"eventBad":      eventBad,
		"clock": func(t time.Time) string {
			return t.Local().Format("15:04:05")
		},
		"dur": func(d time.Duration) string {
			if d <= 0 {
				return "—"
			}
			return d.Round(time.Millisecond).String()
		},
	}
	pages = map[string]*template.Template{
		"index":  parsePage("index.html"),
		"plugin": parsePage("plugin.html"),
		"login":  parsePage("login.html"),
		"error":  parsePage("error.html"),
	}
)

func parsePage(name string) *template.Template {
	return template.Must(template.New("layout.html").Funcs(funcs).ParseFS(webFS, "web/layout.html", "web/parts.html", "web/"+name))
}

// instanceTitle is the tooltip of an instance's dot (app.js says the same).
func instanceTitle(is runner.InstanceStatus) string {
	parts := []string{fmt.Sprintf("replica %d: %s", is.Replica, is.State)}
	if is.Container != "" {
		c := is.Container
		if len(c) > 12 {
			c = c[:12]
		}
		parts = append(parts, c)
	}
	if is.Endpoint != "" {
		parts = append(parts, is.Endpoint)
	}
	parts = append(parts, fmt.Sprintf("%d restarts", is.Restarts))
	if is.LastExit != "" {
		parts = append(parts, "last exit: "+is.LastExit)
	}
	return strings.Join(parts, " · ")
}

// Uptime is how long the plugin's current container has served; ok is false when no
// container serves it.
func Uptime(st runner.Status, now time.Time) (time.Duration, bool) {
	if st.Container == "" || st.StartedAt.IsZero() {
		return 0, false
	}
	switch st.State {
	case runner.StateHealthy, runner.StateUnhealthy:
		return max(0, now.Sub(st.StartedAt)), true
	}
	return 0, false
}

// HumanDuration prints a duration the way `runner ps` and the status page show
// uptimes: 42s, 5m12s, 3h04m, 2d07h.
func HumanDuration(d time.Duration) string {
	d = d.Truncate(time.Second)
	switch {
	case d < time.Minute:
		return fmt.Sprintf("%ds", int(d.Seconds()))
	case d < time.Hour:
		return fmt.Sprintf("%dm%02ds", int(d.Minutes()), int(d.Seconds())%60)
	case d < 48*time.Hour:
		return fmt.Sprintf("%dh%02dm", int(d.Hours()), int(d.Minutes())%60)
	default:
		return fmt.Sprintf("%dd%02dh", int(d.Hours())/24, int(d.Hours())%24)
	}
}

type pageData struct {
	Title     string
	Version   string
	Proxy     string
	Exposed   string // why plugins may reach the host, when they may
	TokenFile string
	Error     string
	Next      string
	Plugins   []runner.Status
	Events    []runner.Event
	Healthy   int
	Plugin    runner.Status
	Logs      string
	LogsError string
	Status    int
	Rates     *Rates // the charts' data when the page was rendered; nil without metrics
}

func (s *server) render(w http.ResponseWriter, status int, page string, d pageData) {
	d.Version, d.Proxy, d.TokenFile = s.version, s.proxyAddr(), s.tokenFile
	if p, ok := s.protected(); ok && !p.Host {
		d.Exposed = p.Unavailable
		if d.Exposed == "" {
			d.Exposed = "host protection off (runner { protect_host = false }): plugins can reach every service of the host"
		}
	}
	var buf bytes.Buffer
	if err := pages[page].Execute(&buf, d); err != nil {
		s.log.Error("admin: render page", "page", page, "err", err)
		writeProblem(w, http.StatusInternalServerError, "render page: "+err.Error())
		return
	}
	h := w.Header()
	h.Set("Content-Type", "text/html; charset=utf-8")
	h.Set("Cache-Control", "no-store")
	securityHeaders(h)
	w.WriteHeader(status)
	_, _ = w.Write(buf.Bytes())
}

func securityHeaders(h http.Header) {
	h.Set("Content-Security-Policy", "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self' data:; form-action 'self'; frame-ancestors 'none'; base-uri 'none'")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("X-Frame-Options", "DENY")
	h.Set("Referrer-Policy", "no-referrer")
}

// requirePage guards the HTML pages: without the token, the login form. GET /?token=T
// (or /plugins/NAME?token=T) with the right token sets the cookie and redirects to the
// page without it — for tools that cannot fill a form (a headless browser); the token
// then sits in that tool's history, so prefer the form otherwise.
func (s *server) requirePage(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if s.authorized(r) {
			next.ServeHTTP(w, r)
			return
		}
		if q := r.URL.Query(); q.Get("token") != "" && r.Method == http.MethodGet {
			if tok := q.Get("token"); s.matches(tok) {
				s.setCookie(w, r, tok)
				q.Del("token")
				u := url.URL{Path: r.URL.Path, RawQuery: q.Encode()}
				http.Redirect(w, r, localPath(u.String()), http.StatusSeeOther)
				return
			}
			s.render(w, http.StatusUnauthorized, "login", pageData{Title: "Sign in", Error: "That token is not the admin token.", Next: "/"})
			return
		}
		s.render(w, http.StatusUnauthorized, "login", pageData{Title: "Sign in", Next: r.URL.RequestURI()})
	})
}

func (s *server) setCookie(w http.ResponseWriter, r *http.Request, tok string) {
	http.SetCookie(w, &http.Cookie{
		Name: CookieName, Value: tok, Path: "/",
		HttpOnly: true, SameSite: http.SameSiteStrictMode, Secure: r.TLS != nil,
	})
}

// login checks the token of the login form and sets the cookie.
func (s *server) login(w http.ResponseWriter, r *http.Request) {
	r.Body = http.MaxBytesReader(w, r.Body, 16<<10)
	if err := r.ParseForm(); err != nil {
		writeProblem(w, http.StatusBadRequest, "bad form: "+err.Error())
		return
	}
	next := localPath(r.PostForm.Get("next"))
	tok := strings.TrimSpace(r.PostForm.Get("token"))
	if !s.matches(tok) {
		s.log.Warn("admin: login with a wrong token", "remote", r.RemoteAddr)
		s.render(w, http.StatusUnauthorized, "login", pageData{Title: "Sign in", Error: "That token is not the admin token.", Next: next})
		return
	}
	s.setCookie(w, r, tok)
	http.Redirect(w, r, next, http.StatusSeeOther)
}

func (s *server) logout(w http.ResponseWriter, r *http.Request) {
	http.SetCookie(w, &http.Cookie{Name: CookieName, Value: "", Path: "/", MaxAge: -1, HttpOnly: true, SameSite: http.SameSiteStrictMode})
	http.Redirect(w, r, "/", http.StatusSeeOther)
}

// localPath keeps a redirect target on this server: an absolute path, not //host.
func localPath(p string) string {
	u, err := url.Parse(p)
	if err != nil || p == "" || !strings.HasPrefix(p, "/") || strings.HasPrefix(p, "//") || strings.HasPrefix(p, "/\\") || u.Host != "" || u.Scheme != "" {
		return "/"
	}
	return p
}

func (s *server) index(w http.ResponseWriter, r *http.Request) {
	st := s.rt.Statuses()
	healthy := 0
	for _, p := range st {
		if p.State == runner.StateHealthy {
			healthy++
		}
	}
	s.render(w, http.StatusOK, "index", pageData{Title: "Plugins", Plugins: st, Healthy: healthy, Events: s.history.Recent(), Rates: s.pageRates("")})
}

// pageLogLines is how much of a plugin's log its page shows.
const pageLogLines = 200

func (s *server) pluginPage(w http.ResponseWriter, r *http.Request) {
	name := chi.URLParam(r, "name")
	st, err := s.rt.Status(name)
	if err != nil {
		s.render(w, http.StatusNotFound, "error", pageData{Title: "Unknown plugin", Error: "No plugin is called " + quote(name) + ".", Status: http.StatusNotFound})
		return
	}
	d := pageData{Title: name, Plugin: st, Rates: s.pageRates(name)}
	if st.Container == "" {
		d.LogsError = fmt.Sprintf("No container runs for %s (state %s).", name, st.State)
	} else {
		d.Logs, err = s.recentLogs(r.Context(), name)
		if err != nil {
			d.LogsError = "Could not read the logs: " + err.Error()
		}
	}
	s.render(w, http.StatusOK, "plugin", d)
}

// pageRates are the rates a page starts its charts with: of plugin, or of all.
func (s *server) pageRates(plugin string) *Rates {
	if s.metrics == nil {
		return nil
	}
	r := s.metrics.Rates(s.metrics.now(), 0, plugin)
	return &r
}

func (s *server) recentLogs(ctx context.Context, name string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	rc, err := s.rt.Logs(ctx, name, false, pageLogLines)
	if err != nil {
		return "", err
	}
	defer rc.Close()
	b, err := io.ReadAll(io.LimitReader(rc, 1<<20))
	if err != nil && ctx.Err() == nil {
		return string(b), err
	}
	return string(b), nil
}

var staticFS = func() http.Handler {
	sub, err := fs.Sub(webFS, "web/static")
	if err != nil {
		panic(err)
	}
	return http.StripPrefix("/static/", http.FileServer(http.FS(sub)))
}()

func (s *server) static(w http.ResponseWriter, r *http.Request) {
	h := w.Header()
	h.Set("Cache-Control", "no-cache")
	securityHeaders(h)
	staticFS.ServeHTTP(w, r)
}

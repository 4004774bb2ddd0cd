package services

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/xcore/runner/config"
)

// seen is what an upstream got.
type seen struct {
	Path, RawPath, Query, Host string
	Header                     http.Header
}

// recordingUpstream answers 201 "ok" and remembers the last request.
func recordingUpstream(t testing.TB) (*httptest.Server, func() seen) {
	var mu sync.Mutex
	var last seen
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		last = seen{Path: r.URL.Path, RawPath: r.URL.RawPath, Query: r.URL.RawQuery, Host: r.Host, Header: r.Header.Clone()}
		mu.Unlock()
		w.Header().Set("X-Upstream", "1")
		w.WriteHeader(http.StatusCreated)
		_, _ = w.Write([]byte("ok"))
	}))
	t.Cleanup(srv.Close)
	return srv, func() seen {
		mu.Lock()
		defer mu.Unlock()
		return last
	}
}

func urlConfig(m *Manager, url string, headers map[string]string) {
	m.SetConfig(map[string]*config.Service{
		"billing": {Name: "billing", URL: url, Headers: headers},
		"kv":      {Name: "kv", Builtin: config.BuiltinKV},
	}, map[string][]string{"a": {"billing", "kv"}, "b": {"kv"}})
}

// TestURLService runs a whole session against url services and checks, at the end,
// that neither the credential nor the plugin's token reached the log.
func TestURLService(t *testing.T) {
	t.Parallel()
	f := newFixture(t, "", defaultLimits)
	up, last := recordingUpstream(t)
	urlConfig(f.m, up.URL+"/api/v1", map[string]string{"Authorization": "Bearer s3cret", "X-Api-Key": "k3y"})
	f.m.Allow("a", 1)
	f.m.Allow("b", 1)
	tok := f.m.Token("a", 1)
	base := f.srv.URL + "/p/a/services/billing"

	t.Run("forward", func(t *testing.T) {
		res, body := call(t, nil, "POST", base+"/invoices/42?x=1&y=a%20b", tok, strings.NewReader("{}"))
		if res.StatusCode != http.StatusCreated || string(body) != "ok" || res.Header.Get("X-Upstream") != "1" {
			t.Fatalf("got %d %q (X-Upstream %q), want the upstream's 201 ok", res.StatusCode, body, res.Header.Get("X-Upstream"))
		}
		s := last()
		if s.Path != "/api/v1/invoices/42" {
			t.Errorf("upstream path %q, want /api/v1/invoices/42", s.Path)
		}
		if s.Query != "x=1&y=a%20b" {
			t.Errorf("upstream query %q, want x=1&y=a%%20b", s.Query)
		}
		if got := s.Header.Get("Authorization"); got != "Bearer s3cret" {
			t.Errorf("upstream Authorization %q, want the configured one", got)
		}
		if got := s.Header.Get("X-Api-Key"); got != "k3y" {
			t.Errorf("upstream X-Api-Key %q", got)
		}
		if s.Host != strings.TrimPrefix(up.URL, "http://") {
			t.Errorf("upstream Host %q, want the upstream's", s.Host)
		}
		for k, vs := range s.Header {
			for _, v := range vs {
				if strings.Contains(v, tok) {
					t.Errorf("upstream got the plugin's token in %s", k)
				}
			}
		}
	})

	t.Run("escaped path and trailing slash", func(t *testing.T) {
		call(t, nil, "GET", base+"/files/a%2Fb/", tok, nil)
		if s := last(); s.RawPath != "/api/v1/files/a%2Fb/" {
			t.Errorf("upstream raw path %q, want /api/v1/files/a%%2Fb/", s.RawPath)
		}
		call(t, nil, "GET", base+"/", tok, nil)
		if s := last(); s.Path != "/api/v1/" {
			t.Errorf("upstream path of the service root %q, want /api/v1/", s.Path)
		}
	})

	t.Run("dot segments", func(t *testing.T) {
		for _, p := range []string{"/../admin", "/x/..", "/./x", "/%2e%2e/admin"} {
			res, body := call(t, nil, "GET", base+p, tok, nil)
			wantProblem(t, res, body, http.StatusBadRequest)
		}
	})

	t.Run("acl", func(t *testing.T) {
		res, body := call(t, nil, "GET", f.srv.URL+"/p/b/services/billing/x", f.m.Token("b", 1), nil)
		wantProblem(t, res, body, http.StatusForbidden)
		res, body = call(t, nil, "GET", base+"/x", f.m.Token("b", 1), nil)
		wantProblem(t, res, body, http.StatusUnauthorized)
	})

	t.Run("live header change", func(t *testing.T) {
		urlConfig(f.m, up.URL+"/api/v1", map[string]string{"Authorization": "Bearer n3w-s3cret"})
		call(t, nil, "GET", base+"/x", tok, nil)
		s := last()
		if got := s.Header.Get("Authorization"); got != "Bearer n3w-s3cret" {
			t.Errorf("after SetConfig, upstream Authorization %q, want the new one", got)
		}
		if got := s.Header.Get("X-Api-Key"); got != "" {
			t.Errorf("after SetConfig, removed header still sent: %q", got)
		}
	})

	t.Run("live upstream change", func(t *testing.T) {
		up2, last2 := recordingUpstream(t)
		urlConfig(f.m, up2.URL+"/v2?tenant=t1", map[string]string{"Authorization": "Bearer s3cret"})
		call(t, nil, "GET", base+"/x?q=1", tok, nil)
		if s := last2(); s.Path != "/v2/x" || s.Query != "tenant=t1&q=1" {
			t.Errorf("new upstream got %q ? %q, want /v2/x ? tenant=t1&q=1", s.Path, s.Query)
		}
	})

	t.Run("upstream down", func(t *testing.T) {
		dead := httptest.NewServer(http.NotFoundHandler())
		dead.Close()
		urlConfig(f.m, dead.URL, map[string]string{"Authorization": "Bearer s3cret"})
		start := time.Now()
		res, body := call(t, nil, "GET", base+"/x", tok, nil)
		if d := time.Since(start); d > time.Second {
			t.Errorf("502 took %v, want < 1s", d)
		}
		wantProblem(t, res, body, http.StatusBadGateway)
		if res.Header.Get(headerError) != "1" {
			t.Error("502 without the sidecar's error marker")
		}
		if s := string(body); strings.Contains(s, "s3cret") || strings.Contains(s, strings.TrimPrefix(dead.URL, "http://")) {
			t.Errorf("problem body leaks: %s", s)
		}
	})

	// Only now, with every request of the session done, is the log complete.
	logs := f.logs.String()
	for _, secret := range []string{"s3cret", "k3y", tok, f.m.Token("b", 1)} {
		if strings.Contains(logs, secret) {
			t.Errorf("log contains secret %q:\n%s", secret, logs)
		}
	}
	if !strings.Contains(logs, "plugin=a service=billing method=POST status=201") {
		t.Errorf("no request line for the forward in the log:\n%s", logs)
	}
	if !strings.Contains(logs, "status=502") {
		t.Errorf("no request line for the 502 in the log:\n%s", logs)
	}
}

func TestURLServiceSlowUpstream(t *testing.T) {
	t.Parallel()
	lim := defaultLimits
	lim.header = 100 * time.Millisecond
	f := newFixture(t, "", lim)
	slow := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-time.After(2 * time.Second):
		case <-r.Context().Done():
		}
	}))
	t.Cleanup(slow.Close)
	urlConfig(f.m, slow.URL, map[string]string{"Authorization": "Bearer s3cret"})
	f.m.Allow("a", 1)
	res, body := call(t, nil, "GET", f.srv.URL+"/p/a/services/billing/x", f.m.Token("a", 1), nil)
	wantProblem(t, res, body, http.StatusGatewayTimeout)
}

func TestURLServiceUserinfo(t *testing.T) {
	t.Parallel()
	f := newFixture(t, "", defaultLimits)
	up, last := recordingUpstream(t)
	urlConfig(f.m, strings.Replace(up.URL, "http://", "http://svc:pa55@", 1), nil)
	f.m.Allow("a", 1)
	call(t, nil, "GET", f.srv.URL+"/p/a/services/billing/x", f.m.Token("a", 1), nil)
	r := &http.Request{Header: last().Header}
	if u, p, ok := r.BasicAuth(); !ok || u != "svc" || p != "pa55" {
		t.Errorf("upstream basic auth %q %q %v, want svc pa55", u, p, ok)
	}
	if strings.Contains(f.logs.String(), "pa55") {
		t.Error("log contains the url's password")
	}
}

// A url service through the unix-socket handler: same forwarding without /p/<plugin>.
func TestURLServicePluginHandler(t *testing.T) {
	t.Parallel()
	f := newFixture(t, "", defaultLimits)
	up, last := recordingUpstream(t)
	urlConfig(f.m, up.URL, map[string]string{"Authorization": "Bearer s3cret"})
	f.m.Allow("a", 1)
	rec := serveLocal(f.m.PluginHandler("a"), "GET", "/services/billing/x/y?z=1", f.m.Token("a", 1), nil)
	if rec.Code != http.StatusCreated {
		t.Fatalf("status %d: %s", rec.Code, rec.Body)
	}
	if s := last(); s.Path != "/x/y" || s.Query != "z=1" || s.Header.Get("Authorization") != "Bearer s3cret" {
		t.Errorf("upstream saw %+v", s)
	}
}

func TestEnvName(t *testing.T) {
	t.Parallel()
	for in, want := range map[string]string{
		"kv":         "KV_URL",
		"billing-v2": "BILLING_V2_URL",
		"a_b":        "A_B_URL",
		"x-y-z9":     "X_Y_Z9_URL",
	} {
		if got := EnvName(in); got != want {
			t.Errorf("EnvName(%q) = %q, want %q", in, got, want)
		}
	}
}

// The problem body is the documented {type,title,status,detail}.
func TestProblemShape(t *testing.T) {
	t.Parallel()
	rec := httptest.NewRecorder()
	writeProblem(rec, http.StatusForbidden, "nope")
	var m map[string]any
	if err := json.Unmarshal(rec.Body.Bytes(), &m); err != nil {
		t.Fatal(err)
	}
	if len(m) != 4 || m["type"] != "about:blank" || m["title"] != "Forbidden" || m["status"] != float64(403) || m["detail"] != "nope" {
		t.Errorf("problem %v", m)
	}
}

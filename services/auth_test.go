package services

import (
	"net/http"
	"strings"
	"testing"
)

func TestToken(t *testing.T) {
	t.Parallel()
	f := newFixture(t, "", defaultLimits)
	m := f.m
	if m.Token("a", 1) != m.Token("a", 1) {
		t.Error("token is not deterministic")
	}
	if len(m.Token("a", 1)) != 64 {
		t.Errorf("token %q is not 64 hex digits", m.Token("a", 1))
	}
	seen := map[string]string{}
	for _, k := range []struct {
		plugin string
		gen    int
	}{{"a", 1}, {"a", 2}, {"b", 1}, {"a1", 1}, {"a", 11}} {
		tok := m.Token(k.plugin, k.gen)
		if prev, ok := seen[tok]; ok {
			t.Errorf("token of %s/%d equals that of %s", k.plugin, k.gen, prev)
		}
		seen[tok] = k.plugin
	}

	// Another key gives other tokens: a token is only as good as the runner's secret.
	other, err := New(Options{StateDir: t.TempDir(), Key: []byte(strings.Repeat("k", 32))})
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	if other.Token("a", 1) == m.Token("a", 1) {
		t.Error("token does not depend on the key")
	}
}

func TestNewRejectsShortKey(t *testing.T) {
	t.Parallel()
	if _, err := New(Options{StateDir: t.TempDir(), Key: []byte("short")}); err == nil {
		t.Error("New with a 5-byte key: no error")
	}
}

func TestAllowRevoke(t *testing.T) {
	t.Parallel()
	f := newFixture(t, "", defaultLimits)
	kvConfig(f.m)
	url := f.srv.URL + "/p/a/services/kv/kv"
	tok1, tok2 := f.m.Token("a", 1), f.m.Token("a", 2)

	res, body := call(t, nil, "GET", url, tok1, nil)
	wantProblem(t, res, body, http.StatusUnauthorized) // not allowed yet

	// Start-first replacement: both generations valid at once.
	f.m.Allow("a", 1)
	f.m.Allow("a", 2)
	for _, tok := range []string{tok1, tok2} {
		res, body := call(t, nil, "GET", url, tok, nil)
		wantStatus(t, res, body, http.StatusOK)
	}

	f.m.Revoke("a", 1)
	res, body = call(t, nil, "GET", url, tok1, nil)
	wantProblem(t, res, body, http.StatusUnauthorized)
	if res.Header.Get("WWW-Authenticate") == "" {
		t.Error("401 without WWW-Authenticate")
	}
	res, body = call(t, nil, "GET", url, tok2, nil)
	wantStatus(t, res, body, http.StatusOK)

	f.m.Revoke("a", 2)
	f.m.Revoke("a", 2) // idempotent
	res, body = call(t, nil, "GET", url, tok2, nil)
	wantProblem(t, res, body, http.StatusUnauthorized)
}

func TestACL(t *testing.T) {
	t.Parallel()
	f := newFixture(t, "", defaultLimits)
	kvConfig(f.m)
	f.m.Allow("a", 1)
	f.m.Allow("b", 1)
	tokA, tokB := f.m.Token("a", 1), f.m.Token("b", 1)

	tests := []struct {
		name   string
		path   string
		auth   string // whole Authorization header
		status int
	}{
		{"own service", "/p/a/services/kv/kv", "Bearer " + tokA, 200},
		{"scheme is case-insensitive", "/p/a/services/kv/kv", "bearer " + tokA, 200},
		{"no token", "/p/a/services/kv/kv", "", 401},
		{"empty bearer", "/p/a/services/kv/kv", "Bearer ", 401},
		{"basic scheme", "/p/a/services/kv/kv", "Basic " + tokA, 401},
		{"wrong token", "/p/a/services/kv/kv", "Bearer " + strings.Repeat("0", 64), 401},
		{"A's token on B's endpoint", "/p/b/services/kv/kv", "Bearer " + tokA, 401},
		{"B's token on A's endpoint", "/p/a/services/kv/kv", "Bearer " + tokB, 401},
		{"unknown plugin", "/p/zed/services/kv/kv", "Bearer " + tokA, 401},
		{"unknown plugin with its own token", "/p/zed/services/kv/kv", "Bearer " + f.m.Token("zed", 1), 401},
		{"no token on an unknown path", "/p/a/nothing", "", 401},
		{"undeclared service", "/p/b/services/settings/", "Bearer " + tokB, 403},
		{"undeclared kv of the same kind", "/p/a/services/other/kv", "Bearer " + tokA, 403},
		{"unknown service", "/p/a/services/nope/kv", "Bearer " + tokA, 403},
		{"env service has no endpoint", "/p/a/services/settings/", "Bearer " + tokA, 404},
		{"not under services", "/p/a/other", "Bearer " + tokA, 404},
		{"outside /p", "/services/kv/kv", "Bearer " + tokA, 404},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			req, _ := http.NewRequest("GET", f.srv.URL+tt.path, nil)
			if tt.auth != "" {
				req.Header.Set("Authorization", tt.auth)
			}
			res, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer res.Body.Close()
			body := make([]byte, 4096)
			n, _ := res.Body.Read(body)
			if tt.status == 200 {
				wantStatus(t, res, body[:n], 200)
				return
			}
			wantProblem(t, res, body[:n], tt.status)
		})
	}
}

// The unix-socket handler of a network = "none" plugin applies the same rules without
// the /p/<plugin> prefix.
func TestPluginHandlerACL(t *testing.T) {
	t.Parallel()
	f := newFixture(t, "", defaultLimits)
	kvConfig(f.m)
	f.m.Allow("a", 1)
	f.m.Allow("b", 1)
	h := f.m.PluginHandler("a")
	tests := []struct {
		name, path, token string
		status            int
	}{
		{"own service", "/services/kv/kv", f.m.Token("a", 1), 200},
		{"no token", "/services/kv/kv", "", 401},
		{"other plugin's token", "/services/kv/kv", f.m.Token("b", 1), 401},
		{"undeclared", "/services/other/kv", f.m.Token("a", 1), 403},
		{"with the /p prefix", "/p/a/services/kv/kv", f.m.Token("a", 1), 404},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			rec := serveLocal(h, "GET", tt.path, tt.token, nil)
			if rec.Code != tt.status {
				t.Errorf("status %d, want %d; body %s", rec.Code, tt.status, rec.Body)
			}
		})
	}
}

// SetConfig, Allow and Revoke while requests are served (run with -race).
func TestConcurrentReconfig(t *testing.T) {
	t.Parallel()
	f := newFixture(t, "", defaultLimits)
	kvConfig(f.m)
	f.m.Allow("a", 1)
	h := f.m.PluginHandler("a")
	tok := f.m.Token("a", 1)
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := range 200 {
			kvConfig(f.m)
			f.m.Allow("a", i+2)
			f.m.Revoke("a", i+2)
		}
	}()
	for range 200 {
		if rec := serveLocal(h, "GET", "/services/kv/kv", tok, nil); rec.Code != http.StatusOK {
			t.Fatalf("status %d during reconfig: %s", rec.Code, rec.Body)
		}
	}
	<-done
}

package services

import (
	"bytes"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	"github.com/xcore/runner/config"
)

var testKey = []byte("0123456789abcdef0123456789abcdef")

// syncBuffer is a log sink safe for the server's goroutines.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

type fixture struct {
	m    *Manager
	srv  *httptest.Server // serves m.Handler()
	logs *syncBuffer
}

// newFixture starts a manager on dir (a fresh temp dir if empty) behind an httptest
// server, with debug logs captured.
func newFixture(t testing.TB, dir string, lim limits) *fixture {
	t.Helper()
	if dir == "" {
		dir = t.TempDir()
	}
	logs := &syncBuffer{}
	lg := slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	m, err := newManager(Options{StateDir: dir, Key: testKey, Logger: lg}, lim)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(m.Handler())
	t.Cleanup(func() {
		srv.Close()
		_ = m.Close()
	})
	return &fixture{m: m, srv: srv, logs: logs}
}

// kvConfig: plugins a and b declare "kv" (builtin) and "settings" (env); "other" is a
// kv service nobody declares.
func kvConfig(m *Manager) {
	m.SetConfig(map[string]*config.Service{
		"kv":       {Name: "kv", Builtin: config.BuiltinKV},
		"settings": {Name: "settings", Env: map[string]string{"FEATURE_X": "on"}},
		"other":    {Name: "other", Builtin: config.BuiltinKV},
	}, map[string][]string{
		"a": {"kv", "settings"},
		"b": {"kv"},
	})
}

// call sends method url with body and an Authorization: Bearer token (none if empty).
func call(t testing.TB, c *http.Client, method, url, token string, body io.Reader) (*http.Response, []byte) {
	t.Helper()
	req, err := http.NewRequest(method, url, body)
	if err != nil {
		t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	if c == nil {
		c = http.DefaultClient
	}
	res, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	if err != nil {
		t.Fatal(err)
	}
	return res, b
}

// wantProblem checks a problem+json answer with status.
func wantProblem(t testing.TB, res *http.Response, body []byte, status int) Problem {
	t.Helper()
	if res.StatusCode != status {
		t.Fatalf("status %d, want %d; body %s", res.StatusCode, status, body)
	}
	if ct := res.Header.Get("Content-Type"); ct != "application/problem+json" {
		t.Errorf("Content-Type %q, want application/problem+json", ct)
	}
	var p Problem
	if err := json.Unmarshal(body, &p); err != nil {
		t.Fatalf("decode problem %s: %v", body, err)
	}
	if p.Status != status || p.Title == "" || p.Type == "" {
		t.Errorf("problem %+v, want status %d with type and title", p, status)
	}
	return p
}

func wantStatus(t testing.TB, res *http.Response, body []byte, status int) {
	t.Helper()
	if res.StatusCode != status {
		t.Fatalf("%s %s: status %d, want %d; body %s", res.Request.Method, res.Request.URL.Path, res.StatusCode, status, body)
	}
}

func repeat(s string, n int) string { return strings.Repeat(s, n) }

// serveLocal runs one request through h in-process.
func serveLocal(h http.Handler, method, path, token string, body io.Reader) *httptest.ResponseRecorder {
	req := httptest.NewRequest(method, path, body)
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	return rec
}

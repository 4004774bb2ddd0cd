package proxy

import (
	"encoding/json"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"
)

// harness is a Proxy served by a real httptest server.
type harness struct {
	p      *Proxy
	srv    *httptest.Server
	client *http.Client
}

func newHarness(t testing.TB) *harness {
	t.Helper()
	p := New(Options{Logger: slog.New(slog.DiscardHandler)})
	srv := httptest.NewServer(p)
	t.Cleanup(func() {
		srv.Close()
		p.Close()
	})
	return &harness{p: p, srv: srv, client: srv.Client()}
}

// get sends method path (raw, as written) with optional headers.
func (h *harness) do(t testing.TB, method, path string, body io.Reader, hdr http.Header) *http.Response {
	t.Helper()
	req, err := http.NewRequest(method, h.srv.URL+path, body)
	if err != nil {
		t.Fatal(err)
	}
	for k, vs := range hdr {
		req.Header[k] = vs
	}
	res, err := h.client.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	t.Cleanup(func() { res.Body.Close() })
	return res
}

func (h *harness) get(t testing.TB, path string) *http.Response {
	t.Helper()
	return h.do(t, http.MethodGet, path, nil, nil)
}

// upstream starts a real HTTP server for handler on an ephemeral port.
func upstream(t testing.TB, handler http.HandlerFunc) *httptest.Server {
	t.Helper()
	srv := httptest.NewServer(handler)
	t.Cleanup(srv.Close)
	return srv
}

func backendOf(t testing.TB, srv *httptest.Server) Backend {
	t.Helper()
	return Backend{Targets: []Target{targetOf(t, srv.URL)}, Generation: 1}
}

// targetOf is the target a test server URL names: http://host:port or unix:///path.
// Its ID is the URL, so that the same server is the same target.
func targetOf(t testing.TB, raw string) Target {
	t.Helper()
	u := mustURL(t, raw)
	if u.Scheme == "unix" {
		return Target{ID: raw, Network: "unix", Address: u.Path}
	}
	return Target{ID: raw, Network: "tcp", Address: u.Host}
}

func mustURL(t testing.TB, s string) *url.URL {
	t.Helper()
	u, err := url.Parse(s)
	if err != nil {
		t.Fatal(err)
	}
	return u
}

// seen is what the echo upstream reports about the request it got.
type seen struct {
	Path    string      `json:"path"`
	RawPath string      `json:"raw_path"`
	Escaped string      `json:"escaped"`
	Query   string      `json:"query"`
	Host    string      `json:"host"`
	Header  http.Header `json:"header"`
	BodyLen int         `json:"body_len"`
}

func echo(w http.ResponseWriter, r *http.Request) {
	n, _ := io.Copy(io.Discard, r.Body)
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(seen{
		Path: r.URL.Path, RawPath: r.URL.RawPath, Escaped: r.URL.EscapedPath(),
		Query: r.URL.RawQuery, Host: r.Host, Header: r.Header, BodyLen: int(n),
	})
}

func decodeSeen(t testing.TB, res *http.Response) seen {
	t.Helper()
	if res.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(res.Body)
		t.Fatalf("status %d, want 200: %s", res.StatusCode, b)
	}
	var s seen
	if err := json.NewDecoder(res.Body).Decode(&s); err != nil {
		t.Fatal(err)
	}
	return s
}

// problem checks that res is a proxy-made problem+json with status and
// returns it.
func problem(t testing.TB, res *http.Response, status int) Problem {
	t.Helper()
	body, err := io.ReadAll(res.Body)
	if err != nil {
		t.Fatal(err)
	}
	if res.StatusCode != status {
		t.Fatalf("status %d, want %d: %s", res.StatusCode, status, body)
	}
	if ct := res.Header.Get("Content-Type"); ct != "application/problem+json" {
		t.Errorf("Content-Type %q, want application/problem+json", ct)
	}
	if res.Header.Get("X-Xcore-Error") != "1" {
		t.Errorf("X-Xcore-Error missing")
	}
	var pb Problem
	if err := json.Unmarshal(body, &pb); err != nil {
		t.Fatalf("decode problem %s: %v", body, err)
	}
	if pb.Status != status || pb.Type != "about:blank" || pb.Title != http.StatusText(status) {
		t.Errorf("problem %+v, want status %d", pb, status)
	}
	if pb.RequestID == "" || pb.RequestID != res.Header.Get("X-Request-Id") {
		t.Errorf("request_id %q, header %q", pb.RequestID, res.Header.Get("X-Request-Id"))
	}
	return pb
}

// eventually polls cond until it holds or the deadline passes.
func eventually(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// freePort returns an address nothing listens on.
func freePort(t testing.TB) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}

// hangUp listens and closes every connection as soon as it is accepted.
func hangUp(t testing.TB) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	t.Cleanup(func() { ln.Close(); <-done })
	return ln.Addr().String()
}

func contains(s, sub string) bool { return strings.Contains(s, sub) }

package proxy

import (
	"context"
	"encoding/json"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
)

// FuzzPluginPath sends any request target through a Proxy with two ready plugins whose
// upstreams echo the path they got. Each request either gets a proxy-made error, or
// reaches exactly the plugin named by the first segment after /plugins/, which sees
// the rest of the path and nothing more: no ".." segment, nothing outside it.
//
//	go test -run '^$' -fuzz '^FuzzPluginPath$' -fuzztime 2m ./proxy/
func FuzzPluginPath(f *testing.F) {
	for _, s := range []string{
		"/plugins/alpha/x",
		"/plugins/beta",
		"/plugins/alpha/../beta/x",
		"/plugins/alpha/%2e%2e/beta",
		"/plugins/alpha/.%2E/beta",
		"/plugins/alpha/..%2fbeta",
		"/plugins/alpha%2f..%2fbeta/x",
		"/plugins/alpha/a%2Fb",
		"/plugins/alpha//x",
		"/plugins//alpha",
		"/plugins/alpha/%00",
		"/plugins/alph%61/x?q=1",
		"/plugins/" + strings.Repeat("a", 300) + "/x",
		"/plugins/alpha/\u00e9t\u00e9/%E2%82%AC",
		"/plugins/alpha/%252e%252e/x",
		"/plugins/alpha/..;/beta",
		"/plugins/beta/x/%2e",
		"/plugins/alpha/x/..%5c..%5cbeta",
		"/v1/plugins",
		"/",
		"*",
		"http://evil.example/plugins/alpha/x",
	} {
		f.Add(s)
	}

	p := New(Options{Logger: slog.New(slog.DiscardHandler)})
	for _, name := range []string{"alpha", "beta"} {
		up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("X-Backend", name)
			w.Header().Set("Content-Type", "application/json")
			_ = json.NewEncoder(w).Encode(seenBytes{Path: []byte(r.URL.Path), Escaped: []byte(r.URL.EscapedPath())})
		}))
		f.Cleanup(up.Close)
		p.SetReady(name, Backend{Targets: []Target{targetOf(f, up.URL)}})
	}
	f.Cleanup(p.Close)

	f.Fuzz(func(t *testing.T, target string) {
		// What net/http's server would hand the handler for this request line; a
		// target it refuses never reaches the proxy.
		if target == "" || strings.ContainsAny(target, " \t\r\n") {
			return
		}
		u, err := url.ParseRequestURI(target)
		if err != nil {
			return
		}
		req := &http.Request{
			Method: http.MethodGet, URL: u, RequestURI: target,
			Proto: "HTTP/1.1", ProtoMajor: 1, ProtoMinor: 1,
			Header: http.Header{}, Host: "runner.test", RemoteAddr: "192.0.2.1:1234", Body: http.NoBody,
		}
		req = req.WithContext(context.Background())
		rec := httptest.NewRecorder()
		p.ServeHTTP(rec, req)
		res := rec.Result()

		if res.Header.Get("X-Xcore-Error") == "1" {
			if res.StatusCode < 400 || res.StatusCode > 599 {
				t.Fatalf("%q: proxy error with status %d", target, res.StatusCode)
			}
			if res.Header.Get("X-Backend") != "" {
				t.Fatalf("%q: proxy error after reaching %s", target, res.Header.Get("X-Backend"))
			}
			var pb Problem
			if err := json.NewDecoder(res.Body).Decode(&pb); err != nil || pb.Status != res.StatusCode {
				t.Fatalf("%q: bad problem body: %v %+v", target, err, pb)
			}
			return
		}

		// Routed: it must be the plugin the path names, with the rest of the path.
		backend := res.Header.Get("X-Backend")
		if res.StatusCode != http.StatusOK || backend == "" {
			t.Fatalf("%q: status %d from %q without the proxy's error marker", target, res.StatusCode, backend)
		}
		esc, ok := strings.CutPrefix(u.EscapedPath(), Prefix)
		if !ok {
			t.Fatalf("%q: reached %s from outside %s", target, backend, Prefix)
		}
		rawName, rest, _ := strings.Cut(esc, "/")
		name, err := url.PathUnescape(rawName)
		if err != nil || name != backend {
			t.Fatalf("%q: reached %s, the path names %q", target, backend, name)
		}
		wantPath, err := url.PathUnescape("/" + rest)
		if err != nil {
			t.Fatalf("%q: routed despite a bad escape: %v", target, err)
		}
		var sb seenBytes // bytes: a path need not be UTF-8
		if err := json.NewDecoder(res.Body).Decode(&sb); err != nil {
			t.Fatal(err)
		}
		s := seen{Path: string(sb.Path), Escaped: string(sb.Escaped)}
		if s.Path != wantPath {
			t.Fatalf("%q: %s saw path %q, want %q (the rest after its prefix)", target, backend, s.Path, wantPath)
		}
		for _, seg := range strings.Split(s.Path, "/") {
			if seg == ".." || seg == "." {
				t.Fatalf("%q: %s saw a %q segment in %q", target, backend, seg, s.Path)
			}
		}
		for _, seg := range strings.Split(s.Escaped, "/") {
			if dec, err := url.PathUnescape(seg); err == nil && (dec == ".." || dec == ".") {
				t.Fatalf("%q: %s saw an encoded %q segment in %q", target, backend, dec, s.Escaped)
			}
		}
	})
}

// seenBytes is what the fuzzed upstreams report, as bytes (JSON would replace invalid
// UTF-8 in strings).
type seenBytes struct {
	Path    []byte `json:"path"`
	Escaped []byte `json:"escaped"`
}

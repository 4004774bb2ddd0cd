package admin

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/url"
	"reflect"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/xcore/runner/runner"
	"github.com/xcore/runner/sandbox"
)

func wantProblem(t *testing.T, resp *http.Response, status int) Problem {
	t.Helper()
	body := readAll(t, resp)
	if resp.StatusCode != status {
		t.Fatalf("status = %d, want %d; body %s", resp.StatusCode, status, body)
	}
	if ct := resp.Header.Get("Content-Type"); ct != "application/problem+json" {
		t.Fatalf("Content-Type = %q, want application/problem+json", ct)
	}
	var p Problem
	if err := json.Unmarshal([]byte(body), &p); err != nil || p.Status != status || p.Title == "" {
		t.Fatalf("problem body %q (%v)", body, err)
	}
	return p
}

func TestEveryRouteNeedsTheToken(t *testing.T) {
	t.Parallel()
	h := newHarness(t, Options{Metrics: newTestMetrics()})
	routes := []struct{ method, path string }{
		{"GET", "/v1/runner"},
		{"GET", "/v1/plugins"},
		{"GET", "/v1/plugins/hello"},
		{"GET", "/v1/plugins/nope"},
		{"POST", "/v1/reload"},
		{"POST", "/v1/plugins/hello/restart"},
		{"GET", "/v1/plugins/hello/logs?follow=1"},
		{"GET", "/v1/events"},
		{"GET", "/v1/rates"},
		{"GET", "/metrics"},
		{"GET", "/debug/pprof/"},
		{"GET", "/debug/pprof/heap"},
		{"GET", "/no/such/route"},
		{"DELETE", "/v1/plugins"},
		{"POST", "/logout"},
	}
	creds := map[string]func(*http.Request){
		"none":         func(r *http.Request) { r.Header.Del("Authorization") },
		"wrong bearer": func(r *http.Request) { r.Header.Set("Authorization", "Bearer "+strings.Repeat("0", len(testToken))) },
		"prefix":       func(r *http.Request) { r.Header.Set("Authorization", "Bearer "+testToken[:10]) },
		"basic scheme": func(r *http.Request) { r.SetBasicAuth("admin", testToken) },
		"wrong cookie": func(r *http.Request) {
			r.Header.Del("Authorization")
			r.AddCookie(&http.Cookie{Name: CookieName, Value: "nope"})
		},
	}
	for _, rt := range routes {
		for name, cred := range creds {
			t.Run(rt.method+" "+rt.path+" "+name, func(t *testing.T) {
				resp := h.do(rt.method, rt.path, nil, cred)
				p := wantProblem(t, resp, http.StatusUnauthorized)
				if !strings.Contains(p.Detail, "token") {
					t.Errorf("detail %q does not say what is missing", p.Detail)
				}
			})
		}
	}
	if len(h.f.restarted) != 0 {
		t.Errorf("an unauthenticated restart went through: %v", h.f.restarted)
	}
	// With the token, the profiler answers.
	if resp := h.do("GET", "/debug/pprof/heap?debug=1", nil); resp.StatusCode != http.StatusOK {
		t.Errorf("GET /debug/pprof/heap with the token: %d", resp.StatusCode)
	}
}

func TestPluginsJSONShape(t *testing.T) {
	t.Parallel()
	h := newHarness(t, Options{})
	resp := h.do("GET", "/v1/plugins", nil)
	if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "application/json" {
		t.Fatalf("status %d, Content-Type %q", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	var list []map[string]any
	if err := json.NewDecoder(resp.Body).Decode(&list); err != nil {
		t.Fatal(err)
	}
	if len(list) != 2 || list[0]["name"] != "crashy" || list[1]["name"] != "hello" {
		t.Fatalf("plugins = %v", list)
	}
	wantKeys := []string{"adopted", "container", "endpoint", "generation", "image", "image_id", "instances", "last_change", "last_error", "last_exit", "name", "ready", "replicas", "restarts", "snapshot", "started_at", "state", "took_ms"}
	var keys []string
	for k := range list[1] {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	if !reflect.DeepEqual(keys, wantKeys) {
		t.Errorf("keys of a plugin = %v, want %v", keys, wantKeys)
	}
	// Durations say their unit: took_ms, not a bare number of nanoseconds.
	for k, want := range map[string]any{"state": "healthy", "generation": 3.0, "restarts": 1.0, "container": "c0ffee", "started_at": "2025-03-01T12:00:00Z", "took_ms": 997.0} {
		if list[1][k] != want {
			t.Errorf("%s = %v, want %v", k, list[1][k], want)
		}
	}
}

func TestPluginByName(t *testing.T) {
	t.Parallel()
	h := newHarness(t, Options{})
	var st PluginStatus
	resp := h.do("GET", "/v1/plugins/hello", nil)
	if err := json.NewDecoder(resp.Body).Decode(&st); err != nil || resp.StatusCode != 200 {
		t.Fatalf("status %d: %v", resp.StatusCode, err)
	}
	want := hello
	want.Took = 0 // as took_ms
	if !reflect.DeepEqual(st.Status, want) || st.TookMS != 997 || st.Took != nil {
		t.Errorf("got %+v\nwant %+v and took_ms 997", st, want)
	}
	p := wantProblem(t, h.do("GET", "/v1/plugins/nope", nil), http.StatusNotFound)
	if !strings.Contains(p.Detail, `"nope"`) {
		t.Errorf("detail %q does not name the plugin", p.Detail)
	}
}

func TestRunnerInfo(t *testing.T) {
	t.Parallel()
	h := newHarness(t, Options{Version: "v1.2.3", ProxyAddr: func() string { return "127.0.0.1:8080" }})
	var info Info
	if err := json.NewDecoder(h.do("GET", "/v1/runner", nil).Body).Decode(&info); err != nil {
		t.Fatal(err)
	}
	if info.Version != "v1.2.3" || info.Listen != "127.0.0.1:8080" || info.Plugins != 2 || info.StartedAt.IsZero() {
		t.Errorf("info = %+v", info)
	}
	if info.HostProtection != nil {
		t.Errorf("host_protection %+v before the runner asked for it, want none", info.HostProtection)
	}
}

// TestRunnerInfoHostProtection: GET /v1/runner says when plugins can reach the host.
func TestRunnerInfoHostProtection(t *testing.T) {
	t.Parallel()
	const why = "host protection unavailable: the runner lacks CAP_NET_ADMIN"
	h := newHarness(t, Options{Protection: func() (sandbox.Protected, bool) { return sandbox.Protected{Unavailable: why}, true }})
	body := readAll(t, h.do("GET", "/v1/runner", nil))
	var info struct {
		HostProtection map[string]any `json:"host_protection"`
	}
	if err := json.Unmarshal([]byte(body), &info); err != nil {
		t.Fatal(err)
	}
	want := map[string]any{"enforced": false, "egress": false, "unavailable": why}
	if !reflect.DeepEqual(info.HostProtection, want) {
		t.Errorf("host_protection = %v, want %v", info.HostProtection, want)
	}
	if page := readAll(t, h.do("GET", "/", nil)); !strings.Contains(page, why) {
		t.Errorf("the status page does not say %q", why)
	}
}

func TestReload(t *testing.T) {
	t.Parallel()
	t.Run("applied", func(t *testing.T) {
		t.Parallel()
		h := newHarness(t, Options{})
		h.f.reload = runner.ReloadResult{Applied: true, Plan: "~ hello: replace (env GREETING changed)\n", Changes: true}
		resp := h.do("POST", "/v1/reload", nil)
		var res runner.ReloadResult
		if err := json.NewDecoder(resp.Body).Decode(&res); err != nil || resp.StatusCode != 200 {
			t.Fatalf("status %d: %v", resp.StatusCode, err)
		}
		if !reflect.DeepEqual(res, h.f.reload) {
			t.Errorf("got %+v", res)
		}
	})
	t.Run("rejected config is 422 with diagnostics", func(t *testing.T) {
		t.Parallel()
		h := newHarness(t, Options{})
		h.f.reload = runner.ReloadResult{Diagnostics: []string{"plugins.hcl:3,3-9: Unsupported argument; An argument named \"colour\" is not expected here."}}
		resp := h.do("POST", "/v1/reload", nil)
		body := readAll(t, resp)
		if resp.StatusCode != http.StatusUnprocessableEntity {
			t.Fatalf("status %d, want 422: %s", resp.StatusCode, body)
		}
		var res map[string]any
		if err := json.Unmarshal([]byte(body), &res); err != nil {
			t.Fatal(err)
		}
		if res["applied"] != false || !strings.Contains(body, "plugins.hcl:3,3-9") {
			t.Errorf("body %s", body)
		}
	})
	t.Run("runner error is a 500 problem", func(t *testing.T) {
		t.Parallel()
		h := newHarness(t, Options{})
		h.f.reloadErr = errors.New("reload: list containers: engine gone")
		p := wantProblem(t, h.do("POST", "/v1/reload", nil), http.StatusInternalServerError)
		if !strings.Contains(p.Detail, "engine gone") {
			t.Errorf("detail %q", p.Detail)
		}
	})
	t.Run("GET is not allowed", func(t *testing.T) {
		t.Parallel()
		h := newHarness(t, Options{})
		wantProblem(t, h.do("GET", "/v1/reload", nil), http.StatusMethodNotAllowed)
	})
}

func TestRestart(t *testing.T) {
	t.Parallel()
	h := newHarness(t, Options{})
	resp := h.do("POST", "/v1/plugins/hello/restart", nil)
	var acc RestartAccepted
	if err := json.NewDecoder(resp.Body).Decode(&acc); err != nil || resp.StatusCode != http.StatusAccepted {
		t.Fatalf("status %d: %v", resp.StatusCode, err)
	}
	if acc.Plugin != "hello" || acc.Message == "" {
		t.Errorf("body %+v", acc)
	}
	wantProblem(t, h.do("POST", "/v1/plugins/nope/restart", nil), http.StatusNotFound)
	if !reflect.DeepEqual(h.f.restarted, []string{"hello"}) {
		t.Errorf("restarted %v", h.f.restarted)
	}
}

func TestLogs(t *testing.T) {
	t.Parallel()
	t.Run("tail", func(t *testing.T) {
		t.Parallel()
		h := newHarness(t, Options{})
		h.f.logs["hello"] = "one\ntwo\nthree\n"
		resp := h.do("GET", "/v1/plugins/hello/logs?tail=2", nil)
		if body := readAll(t, resp); resp.StatusCode != 200 || body != "two\nthree\n" {
			t.Fatalf("status %d body %q", resp.StatusCode, body)
		}
		if ct := resp.Header.Get("Content-Type"); ct != "text/plain; charset=utf-8" {
			t.Errorf("Content-Type %q", ct)
		}
		if h.f.logCalls[0] != "hello false 2" {
			t.Errorf("runner asked for %q", h.f.logCalls[0])
		}
	})
	t.Run("all by default", func(t *testing.T) {
		t.Parallel()
		h := newHarness(t, Options{})
		h.f.logs["hello"] = "one\ntwo\n"
		if body := readAll(t, h.do("GET", "/v1/plugins/hello/logs", nil)); body != "one\ntwo\n" {
			t.Fatalf("body %q", body)
		}
		if h.f.logCalls[0] != "hello false -1" {
			t.Errorf("runner asked for %q", h.f.logCalls[0])
		}
	})
	t.Run("errors", func(t *testing.T) {
		t.Parallel()
		h := newHarness(t, Options{})
		wantProblem(t, h.do("GET", "/v1/plugins/nope/logs", nil), http.StatusNotFound)
		wantProblem(t, h.do("GET", "/v1/plugins/hello/logs?tail=-3", nil), http.StatusBadRequest)
		p := wantProblem(t, h.do("GET", "/v1/plugins/crashy/logs", nil), http.StatusConflict)
		if !strings.Contains(p.Detail, "failed") {
			t.Errorf("detail %q does not give the state", p.Detail)
		}
	})
	t.Run("follow streams and ends when the client goes away", func(t *testing.T) {
		t.Parallel()
		h := newHarness(t, Options{})
		h.f.logs["hello"] = "old\n"
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		req, _ := http.NewRequestWithContext(ctx, "GET", h.srv.URL+"/v1/plugins/hello/logs?follow=1&tail=1", nil)
		req.Header.Set("Authorization", "Bearer "+testToken)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		rd := bufio.NewReader(resp.Body)
		// Followed, each line says which generation wrote it.
		if line, err := rd.ReadString('\n'); err != nil || line != "[gen 3] old\n" {
			t.Fatalf("first line %q, %v", line, err)
		}
		// A line written after the response started arrives while the stream is open:
		// the handler flushes.
		if _, err := io.WriteString(h.f.followWriter("hello"), "new\n"); err != nil {
			t.Fatal(err)
		}
		if line, err := rd.ReadString('\n'); err != nil || line != "[gen 3] new\n" {
			t.Fatalf("streamed line %q, %v", line, err)
		}
		cancel()
		h.f.mu.Lock()
		logCtx := h.f.logCtxs[0]
		h.f.mu.Unlock()
		select {
		case <-logCtx.Done():
		case <-time.After(5 * time.Second):
			t.Fatal("the runner's log stream was not cancelled after the client went away")
		}
		eventually(t, "the log handler to unsubscribe", func() bool { return h.f.subscribers() == 0 })
	})
	t.Run("follow carries on with the next container", func(t *testing.T) {
		t.Parallel()
		h := newHarness(t, Options{})
		h.f.logs["hello"] = "gen3\n"
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		req, _ := http.NewRequestWithContext(ctx, "GET", h.srv.URL+"/v1/plugins/hello/logs?follow=1", nil)
		req.Header.Set("Authorization", "Bearer "+testToken)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		rd := bufio.NewReader(resp.Body)
		if line, _ := rd.ReadString('\n'); line != "[gen 3] gen3\n" {
			t.Fatalf("first line %q", line)
		}
		// Replacement: a new container serves, the old one's log ends.
		next := hello
		next.Generation, next.Container = 4, "beef"
		h.f.mu.Lock()
		h.f.logs["hello"] = "gen4\n"
		old := h.f.follow["hello"]
		h.f.mu.Unlock()
		h.f.setStatus(next)
		old.Close()
		h.f.publish(runner.Event{Type: runner.EventState, Plugin: "hello", Status: &next})
		if line, err := rd.ReadString('\n'); err != nil || line != "[gen 4] gen4\n" {
			t.Fatalf("line after the replacement %q, %v", line, err)
		}
	})
	t.Run("previous is the end of the last removed container's log", func(t *testing.T) {
		t.Parallel()
		h := newHarness(t, Options{})
		h.f.logs["hello"] = "panic: boom\n"
		resp := h.do("GET", "/v1/plugins/hello/logs?previous=1", nil)
		body, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != 200 || !strings.HasSuffix(string(body), "its last lines:\nprevious: panic: boom\n") {
			t.Errorf("previous: %d %q", resp.StatusCode, body)
		}
		delete(h.f.logs, "hello")
		if resp := h.do("GET", "/v1/plugins/hello/logs?previous=1", nil); resp.StatusCode != 404 {
			t.Errorf("previous without one: %d, want 404", resp.StatusCode)
		}
	})
}

func TestEventStream(t *testing.T) {
	t.Parallel()
	h := newHarness(t, Options{Heartbeat: 20 * time.Millisecond})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, "GET", h.srv.URL+"/v1/events", nil)
	req.AddCookie(&http.Cookie{Name: CookieName, Value: testToken}) // as an EventSource does
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "text/event-stream" {
		t.Fatalf("status %d, Content-Type %q", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	sc := bufio.NewScanner(resp.Body)
	next := func() string {
		t.Helper()
		if !sc.Scan() {
			t.Fatalf("stream ended: %v", sc.Err())
		}
		return sc.Text()
	}
	for next() != ": connected" {
	}
	st := hello
	st.State = runner.StateRestarting
	want := runner.Event{Time: started, Type: runner.EventState, Plugin: "hello", Status: &st}
	h.f.publish(want)
	h.f.publish(runner.Event{Time: started, Type: runner.EventReload, OK: true, Message: "applied: 2 plugins from 1 files"})
	h.f.publish(runner.Event{Time: started, Type: runner.EventReplaced, Plugin: "hello", Duration: 1234 * time.Millisecond})

	var got []runner.Event
	var raw []string
	heartbeats := 0
	for len(got) < 3 || heartbeats == 0 {
		line := next()
		switch {
		case strings.HasPrefix(line, "data: "):
			var ev Event
			if err := json.Unmarshal([]byte(strings.TrimPrefix(line, "data: ")), &ev); err != nil {
				t.Fatalf("event %q: %v", line, err)
			}
			// Back to the runner's event, durations from their _ms fields.
			if ev.Status != nil {
				ev.Status.Status.Took = time.Duration(ev.Status.TookMS) * time.Millisecond
				ev.Event.Status = &ev.Status.Status
			}
			ev.Event.Duration = time.Duration(ev.DurationMS) * time.Millisecond
			got = append(got, ev.Event)
			raw = append(raw, line)
			if next() != "" {
				t.Fatal("an event is not followed by a blank line")
			}
		case line == ": heartbeat":
			heartbeats++
		}
	}
	if !reflect.DeepEqual(got[0], want) {
		t.Errorf("event = %+v, want %+v", got[0], want)
	}
	if got[1].Type != runner.EventReload || !got[1].OK {
		t.Errorf("second event %+v", got[1])
	}
	if got[2].Duration != 1234*time.Millisecond {
		t.Errorf("third event %+v, want a duration of 1.234s", got[2])
	}
	// Durations say their unit: no bare number of nanoseconds.
	if !strings.Contains(raw[0], `"took_ms":997`) || !strings.Contains(raw[2], `"duration_ms":1234`) ||
		strings.Contains(raw[0], `"took":`) || strings.Contains(raw[2], `"duration":`) {
		t.Errorf("events as sent:\n%s", strings.Join(raw, "\n"))
	}
	cancel()
	eventually(t, "the stream to unsubscribe after the client left", func() bool { return h.f.subscribers() == 0 })
}

func TestLoginFlow(t *testing.T) {
	t.Parallel()
	h := newHarness(t, Options{TokenFile: "/srv/.runner/admin.token"})
	noAuth := func(r *http.Request) { r.Header.Del("Authorization") }

	resp := h.do("GET", "/", nil, noAuth)
	body := readAll(t, resp)
	if resp.StatusCode != http.StatusUnauthorized || !strings.Contains(body, `<form method="post" action="/login">`) || !strings.Contains(body, "/srv/.runner/admin.token") {
		t.Fatalf("GET / without a token: %d\n%s", resp.StatusCode, body)
	}
	if strings.Contains(body, "hello") {
		t.Error("the login page shows plugins")
	}

	form := func(r *http.Request) {
		r.Header.Del("Authorization")
		r.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	}
	post := func(tok, next string) *http.Response {
		v := url.Values{"token": {tok}, "next": {next}}
		return h.do("POST", "/login", strings.NewReader(v.Encode()), form)
	}

	if resp := post("wrong", "/"); resp.StatusCode != http.StatusUnauthorized || len(resp.Cookies()) != 0 {
		t.Fatalf("wrong token: status %d, cookies %v", resp.StatusCode, resp.Cookies())
	}
	resp = post(testToken, "/plugins/hello")
	if resp.StatusCode != http.StatusSeeOther || resp.Header.Get("Location") != "/plugins/hello" {
		t.Fatalf("login: status %d Location %q", resp.StatusCode, resp.Header.Get("Location"))
	}
	c := sessionCookie(t, resp)
	if c.Value != testToken || !c.HttpOnly || c.SameSite != http.SameSiteStrictMode || c.Path != "/" {
		t.Errorf("cookie %+v: want the token, HttpOnly, SameSite=Strict, Path=/", c)
	}
	// An open redirect is not possible.
	for _, next := range []string{"//evil.example/", "https://evil.example/", "/\\evil.example", ""} {
		if loc := post(testToken, next).Header.Get("Location"); loc != "/" {
			t.Errorf("next=%q redirected to %q", next, loc)
		}
	}

	withCookie := func(r *http.Request) { r.Header.Del("Authorization"); r.AddCookie(c) }
	resp = h.do("GET", "/", nil, withCookie)
	body = readAll(t, resp)
	if resp.StatusCode != 200 || !strings.Contains(body, `data-plugin="hello"`) || !strings.Contains(body, `data-plugin="crashy"`) {
		t.Fatalf("GET / with the cookie: %d\n%s", resp.StatusCode, body)
	}
	if csp := resp.Header.Get("Content-Security-Policy"); !strings.Contains(csp, "script-src 'self'") {
		t.Errorf("CSP %q", csp)
	}
	if resp := h.do("GET", "/v1/plugins", nil, withCookie); resp.StatusCode != 200 {
		t.Errorf("API with the cookie: %d", resp.StatusCode)
	}
	resp = h.do("POST", "/logout", nil, withCookie)
	if resp.StatusCode != http.StatusSeeOther || sessionCookie(t, resp).MaxAge >= 0 {
		t.Errorf("logout: %d %v", resp.StatusCode, resp.Cookies())
	}
}

func TestTokenQueryParam(t *testing.T) {
	t.Parallel()
	h := newHarness(t, Options{})
	noAuth := func(r *http.Request) { r.Header.Del("Authorization") }
	resp := h.do("GET", "/?token="+testToken, nil, noAuth)
	if resp.StatusCode != http.StatusSeeOther || resp.Header.Get("Location") != "/" {
		t.Fatalf("status %d Location %q", resp.StatusCode, resp.Header.Get("Location"))
	}
	if c := sessionCookie(t, resp); c.Value != testToken || !c.HttpOnly || c.SameSite != http.SameSiteStrictMode {
		t.Errorf("cookie %+v", c)
	}
	resp = h.do("GET", "/?token=wrong", nil, noAuth)
	if resp.StatusCode != http.StatusUnauthorized || len(resp.Cookies()) != 0 {
		t.Errorf("wrong token: %d %v", resp.StatusCode, resp.Cookies())
	}
	resp = h.do("GET", "/plugins/hello?token="+testToken, nil, noAuth)
	if resp.StatusCode != http.StatusSeeOther || resp.Header.Get("Location") != "/plugins/hello" {
		t.Errorf("plugin page: status %d Location %q", resp.StatusCode, resp.Header.Get("Location"))
	}
	// Only the status pages take it, never the API.
	wantProblem(t, h.do("GET", "/v1/plugins?token="+testToken, nil, noAuth), http.StatusUnauthorized)
}

func sessionCookie(t *testing.T, resp *http.Response) *http.Cookie {
	t.Helper()
	for _, c := range resp.Cookies() {
		if c.Name == CookieName {
			return c
		}
	}
	t.Fatalf("no %s cookie in %v", CookieName, resp.Header["Set-Cookie"])
	return nil
}

func TestPages(t *testing.T) {
	t.Parallel()
	h := newHarness(t, Options{})
	h.f.logs["hello"] = strings.Repeat("noise\n", 300) + "hello listening on [::]:8080 <script>\n"
	resp := h.do("GET", "/", nil)
	body := readAll(t, resp)
	for _, want := range []string{"hello", "crashy", "state-healthy", "state-failed", "crashed 5 times in 5m0s", "xcore-examples/hello:latest", "1 of 2 healthy", `<script src="/static/app.js">`} {
		if !strings.Contains(body, want) {
			t.Errorf("status page lacks %q", want)
		}
	}

	resp = h.do("GET", "/plugins/hello", nil)
	body = readAll(t, resp)
	if resp.StatusCode != 200 || !strings.Contains(body, "hello listening on [::]:8080 &lt;script&gt;") {
		t.Fatalf("plugin page %d lacks the escaped log line:\n%s", resp.StatusCode, body)
	}
	if n := strings.Count(body, "noise"); n != pageLogLines-1 {
		t.Errorf("plugin page shows %d noise lines, want the last %d lines", n, pageLogLines)
	}
	if resp := h.do("GET", "/plugins/crashy", nil); !strings.Contains(readAll(t, resp), "No container runs for crashy") {
		t.Error("a plugin without container does not say so")
	}
	if resp := h.do("GET", "/plugins/nope", nil); resp.StatusCode != 404 {
		t.Errorf("unknown plugin page: %d", resp.StatusCode)
	}
	for _, asset := range []string{"/static/app.js", "/static/style.css"} {
		resp := h.do("GET", asset, nil, func(r *http.Request) { r.Header.Del("Authorization") })
		if resp.StatusCode != 200 || readAll(t, resp) == "" {
			t.Errorf("%s: %d", asset, resp.StatusCode)
		}
	}
}

// A plugin of three replicas: the list shows 3/3 with a dot per instance, its page a
// row per instance, and both carry the charts' data as JSON (not a script: the CSP runs
// none inline).
func TestPagesShowInstancesAndRates(t *testing.T) {
	t.Parallel()
	m := newTestMetrics()
	h := newHarness(t, Options{Metrics: m})
	three := hello
	three.Replicas, three.Ready = 3, 3
	three.Instances = []runner.InstanceStatus{
		{Replica: 0, Container: "c0ffee0123456789", Name: "xcore-hello-3-r", Endpoint: "127.0.0.1:49153", State: runner.StateHealthy},
		{Replica: 1, Container: "d00d0123456789ab", Name: "xcore-hello-3-1-r", Endpoint: "127.0.0.1:49154", State: runner.StateHealthy, Restarts: 1, LastExit: "exit code 137"},
		{Replica: 2, Container: "beef0123456789ab", Name: "xcore-hello-3-2-r", Endpoint: "127.0.0.1:49155", State: runner.StateStarting},
	}
	h.f.setStatus(three)
	clock := fakeClock(m, time.Unix(1_750_000_000, 0))
	m.RequestDone("hello", 200, 4*time.Millisecond)
	clock.Store(time.Unix(1_750_000_001, 0).UnixNano())

	index := readAll(t, h.do("GET", "/", nil))
	for _, want := range []string{
		`<span class="ready-n" data-field="ready">3/3</span>`,
		`<i class="dot dot-healthy" title="replica 1: healthy · d00d01234567 · 127.0.0.1:49154 · 1 restarts · last exit: exit code 137">`,
		`<i class="dot dot-starting"`,
		`<svg class="spark" data-chart="spark"`,
	} {
		if !strings.Contains(index, want) {
			t.Errorf("the list lacks %s", want)
		}
	}
	rates := func(page string) Rates {
		t.Helper()
		_, rest, ok := strings.Cut(page, `<script type="application/json" id="rates-data">`)
		data, _, _ := strings.Cut(rest, "</script>")
		var r Rates
		if err := json.Unmarshal([]byte(data), &r); !ok || err != nil {
			t.Fatalf("no rates data in the page (%v):\n%s", err, page)
		}
		return r
	}
	if r := rates(index); r.End != 1_750_000_000 || len(r.Plugins) != 1 || !slices.Equal(r.Plugins[0].Requests, []uint32{1}) {
		t.Errorf("the list's rates = %+v, want hello's one request", r)
	}

	page := readAll(t, h.do("GET", "/plugins/hello", nil))
	for _, want := range []string{
		`<td class="num">1</td>`, `<code title="d00d0123456789ab">d00d01234567</code> <span class="muted">xcore-hello-3-1-r</span>`,
		`<code>127.0.0.1:49155</code>`, `<span class="state state-starting">starting</span>`, "exit code 137",
		`<span data-field="ready_of">3/3</span> ready`, `<svg class="chart" id="chart" data-chart="big"`,
	} {
		if !strings.Contains(page, want) {
			t.Errorf("the plugin page lacks %s", want)
		}
	}
	if r := rates(page); len(r.Plugins) != 1 || r.Plugins[0].Plugin != "hello" {
		t.Errorf("the plugin page's rates = %+v", r)
	}
	// Without metrics there is nothing to chart, and no data.
	if body := readAll(t, newHarness(t, Options{}).do("GET", "/", nil)); strings.Contains(body, "rates-data") {
		t.Error("rates data without metrics")
	}
}

func TestUptimeAndHumanDuration(t *testing.T) {
	t.Parallel()
	now := started.Add(3*time.Hour + 4*time.Minute)
	if d, ok := Uptime(hello, now); !ok || d != 3*time.Hour+4*time.Minute {
		t.Errorf("Uptime(healthy) = %s, %v", d, ok)
	}
	if _, ok := Uptime(crashy, now); ok {
		t.Error("a failed plugin has an uptime")
	}
	for d, want := range map[time.Duration]string{
		0: "0s", 42 * time.Second: "42s", 5*time.Minute + 7*time.Second: "5m07s",
		3*time.Hour + 4*time.Minute: "3h04m", 50 * time.Hour: "2d02h",
	} {
		if got := HumanDuration(d); got != want {
			t.Errorf("HumanDuration(%s) = %q, want %q", d, got, want)
		}
	}
}

package plugin

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// unixClient talks HTTP to the unix socket sock, whatever the URL's host.
func unixClient(sock string) *http.Client {
	var d net.Dialer
	return &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) { return d.DialContext(ctx, "unix", sock) },
	}}
}

// shortTempDir is a temp dir with a short path: a unix socket path has at most 107 bytes,
// and t.TempDir's can be longer.
func shortTempDir(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "xk")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}

// waitFor polls cond every 10ms until it is true or the deadline passes.
func waitFor(t *testing.T, within time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", within, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestServeDrainsInFlight: once stopped, serve refuses new connections at once but lets
// the request in flight finish, and only then returns nil.
func TestServeDrainsInFlight(t *testing.T) {
	t.Parallel()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	started, release := make(chan struct{}), make(chan struct{})
	mux := http.NewServeMux()
	mux.HandleFunc("/slow", func(w http.ResponseWriter, r *http.Request) {
		close(started)
		<-release
		fmt.Fprint(w, "done")
	})
	ctx, stop := context.WithCancel(context.Background())
	defer stop()
	served := make(chan error, 1)
	go func() { served <- serve(ctx, ln, mux, time.Minute) }()

	addr := ln.Addr().String()
	type result struct {
		body string
		err  error
	}
	got := make(chan result, 1)
	go func() {
		resp, err := http.Get("http://" + addr + "/slow")
		if err != nil {
			got <- result{err: err}
			return
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		got <- result{string(b), err}
	}()
	<-started
	stop() // the signal

	waitFor(t, 5*time.Second, "new connections to be refused", func() bool {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			c.Close()
		}
		return err != nil
	})
	select {
	case err := <-served:
		t.Fatalf("serve returned (%v) while a request was in flight", err)
	default:
	}
	close(release)
	if r := <-got; r.err != nil || r.body != "done" {
		t.Errorf("in-flight request: %q, %v; want it to finish with \"done\"", r.body, r.err)
	}
	if err := <-served; err != nil {
		t.Errorf("serve after a graceful stop: %v, want nil", err)
	}
}

// TestServeCutsAfterBound: a request that outlives the drain bound is cut, and serve
// says so instead of hanging.
func TestServeCutsAfterBound(t *testing.T) {
	t.Parallel()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	started := make(chan struct{})
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		close(started)
		<-r.Context().Done() // a stream that never ends by itself
	})
	ctx, stop := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() { served <- serve(ctx, ln, h, 100*time.Millisecond) }()
	go func() {
		if resp, err := http.Get("http://" + ln.Addr().String() + "/"); err == nil {
			resp.Body.Close()
		}
	}()
	<-started
	stop()
	select {
	case err := <-served:
		if err == nil || !strings.Contains(err.Error(), "cut") {
			t.Errorf("serve = %v, want an error saying requests were cut", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("serve did not return within 10s with a 100ms drain bound")
	}
}

// TestServeListenerClosed: when the listener fails, serve returns its error.
func TestServeListenerClosed(t *testing.T) {
	t.Parallel()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- serve(context.Background(), ln, http.NotFoundHandler(), time.Second) }()
	ln.Close()
	select {
	case err := <-served:
		if !errors.Is(err, net.ErrClosed) {
			t.Errorf("serve = %v, want the listener's error", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("serve did not return after its listener was closed")
	}
}

// TestListenSocket: with XCORE_SOCKET set, Listen serves on that unix socket (replacing
// a stale socket file left by a previous container) and not on PORT.
func TestListenSocket(t *testing.T) {
	sock := filepath.Join(shortTempDir(t), "plugin.sock")
	if err := os.WriteFile(sock, nil, 0o644); err != nil { // stale
		t.Fatal(err)
	}
	t.Setenv("XCORE_SOCKET", sock)
	t.Setenv("PORT", "1") // would fail: must not be used
	ln, err := Listen()
	if err != nil {
		t.Fatal(err)
	}
	if ln.Addr().Network() != "unix" {
		t.Fatalf("Listen() on %s %s, want the unix socket", ln.Addr().Network(), ln.Addr())
	}
	ctx, stop := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() {
		served <- serve(ctx, ln, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { fmt.Fprint(w, "over the socket") }), time.Second)
	}()
	resp, err := unixClient(sock).Get("http://plugin/")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if string(b) != "over the socket" {
		t.Errorf("GET over %s = %q", sock, b)
	}
	stop()
	if err := <-served; err != nil {
		t.Errorf("serve: %v", err)
	}
}

// TestListenPort: without XCORE_SOCKET, Listen serves TCP on PORT.
func TestListenPort(t *testing.T) {
	t.Setenv("XCORE_SOCKET", "")
	t.Setenv("PORT", "0") // any free port
	ln, err := Listen()
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	if a, ok := ln.Addr().(*net.TCPAddr); !ok || a.Port == 0 {
		t.Errorf("Listen() on %s %s, want a TCP port", ln.Addr().Network(), ln.Addr())
	}
	t.Setenv("PORT", "not-a-port")
	if _, err := Listen(); err == nil || !strings.Contains(err.Error(), "PORT") {
		t.Errorf("Listen() with PORT=not-a-port: %v, want an error naming PORT", err)
	}
}

func TestHealthzFallback(t *testing.T) {
	t.Parallel()
	none := http.NewServeMux()
	none.HandleFunc("GET /{$}", func(w http.ResponseWriter, r *http.Request) { fmt.Fprint(w, "root") })
	own := http.NewServeMux()
	own.HandleFunc("/healthz", func(w http.ResponseWriter, r *http.Request) { http.Error(w, "sick", http.StatusServiceUnavailable) })
	catchAll := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { fmt.Fprint(w, "everything") })
	flushing := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprint(w, "streamed")
		w.(http.Flusher).Flush() // a type assertion, not http.ResponseController
	})
	for _, tc := range []struct {
		name, method, path string
		h                  http.Handler
		code               int
		body               string
	}{
		{"no route: the kit answers", http.MethodGet, "/healthz", none, 200, "ok\n"},
		{"no route, HEAD", http.MethodHead, "/healthz", none, 200, ""},
		{"the plugin's own probe wins", http.MethodGet, "/healthz", own, 503, "sick\n"},
		{"a catch-all answers it", http.MethodGet, "/healthz", catchAll, 200, "everything"},
		{"a flushing handler", http.MethodGet, "/healthz", flushing, 200, "streamed"},
		{"other paths untouched", http.MethodGet, "/nope", none, 404, "404 page not found\n"},
		{"other methods untouched", http.MethodPost, "/healthz", none, 404, "404 page not found\n"},
		{"the plugin's root", http.MethodGet, "/", none, 200, "root"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			w := httptest.NewRecorder()
			withHealthz(tc.h).ServeHTTP(w, httptest.NewRequest(tc.method, tc.path, nil))
			if w.Code != tc.code || w.Body.String() != tc.body {
				t.Errorf("%s %s = %d %q, want %d %q", tc.method, tc.path, w.Code, w.Body, tc.code, tc.body)
			}
			if tc.code == 200 && tc.h == none && w.Header().Get("X-Content-Type-Options") != "" {
				t.Errorf("the kit's answer kept the 404's headers: %v", w.Header())
			}
		})
	}
}

// TestServeSIGTERM runs Serve in a child process (this test binary, see
// TestServeSIGTERMChild) on a unix socket, sends it a real SIGTERM while a request is in
// flight, and checks that the child refuses new connections, finishes the request and
// exits 0.
func TestServeSIGTERM(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a child process")
	}
	t.Parallel()
	dir := shortTempDir(t)
	sock, release := filepath.Join(dir, "p.sock"), filepath.Join(dir, "release")
	cmd := exec.Command(os.Args[0], "-test.run=^TestServeSIGTERMChild$", "-test.v")
	cmd.Env = append(os.Environ(), "PLUGIN_TEST_CHILD=1", "XCORE_SOCKET="+sock, "RELEASE_FILE="+release)
	var out strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited, done := make(chan error, 1), make(chan struct{})
	go func() {
		exited <- cmd.Wait()
		close(done)
	}()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-done
	})

	hc := unixClient(sock)
	waitFor(t, 30*time.Second, "the child to serve", func() bool {
		resp, err := hc.Get("http://plugin/healthz")
		if err == nil {
			resp.Body.Close()
		}
		return err == nil && resp.StatusCode == 200
	})
	resp, err := hc.Get("http://plugin/slow")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	rd := bufio.NewReader(resp.Body)
	if line, err := rd.ReadString('\n'); err != nil || line != "started\n" {
		t.Fatalf("first line %q, %v", line, err)
	}
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	var d net.Dialer
	waitFor(t, 10*time.Second, "the child to stop accepting", func() bool {
		c, err := d.Dial("unix", sock)
		if err == nil {
			c.Close()
		}
		return err != nil
	})
	if err := os.WriteFile(release, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	rest, err := io.ReadAll(rd)
	if err != nil || string(rest) != "done\n" {
		t.Errorf("after SIGTERM the in-flight request ended with %q, %v; want \"done\\n\"", rest, err)
	}
	select {
	case err := <-exited:
		if err != nil {
			t.Errorf("child exit: %v, want 0\n%s", err, out.String())
		}
	case <-time.After(30 * time.Second):
		t.Fatalf("child still running 30s after SIGTERM\n%s", out.String())
	}
}

// TestServeSIGTERMChild is the child of TestServeSIGTERM.
func TestServeSIGTERMChild(t *testing.T) {
	if os.Getenv("PLUGIN_TEST_CHILD") != "1" {
		t.Skip("child process of TestServeSIGTERM")
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/slow", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintln(w, "started")
		w.(http.Flusher).Flush()
		deadline := time.Now().Add(20 * time.Second)
		for {
			if _, err := os.Stat(os.Getenv("RELEASE_FILE")); err == nil || time.Now().After(deadline) {
				break
			}
			time.Sleep(10 * time.Millisecond)
		}
		fmt.Fprintln(w, "done")
	})
	if err := Serve(mux); err != nil {
		t.Fatalf("Serve: %v", err)
	}
}

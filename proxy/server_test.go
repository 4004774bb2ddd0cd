package proxy

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"
)

// serve runs srv on an ephemeral loopback port until the test ends.
func serve(t *testing.T, srv *http.Server) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
			t.Errorf("serve: %v", err)
		}
	}()
	t.Cleanup(func() { srv.Close(); <-done })
	return ln.Addr().String()
}

func TestNewServerLimits(t *testing.T) {
	t.Parallel()
	srv := NewServer(http.NotFoundHandler(), nil)
	if srv.ReadHeaderTimeout != 10*time.Second || srv.IdleTimeout != 120*time.Second || srv.MaxHeaderBytes != 64<<10 {
		t.Errorf("ReadHeaderTimeout %v IdleTimeout %v MaxHeaderBytes %d, want 10s 120s 64KiB",
			srv.ReadHeaderTimeout, srv.IdleTimeout, srv.MaxHeaderBytes)
	}
	if srv.ReadTimeout != 0 || srv.WriteTimeout != 0 {
		t.Errorf("ReadTimeout %v WriteTimeout %v: would cut streams", srv.ReadTimeout, srv.WriteTimeout)
	}
}

func TestHeaderTooLarge(t *testing.T) {
	t.Parallel()
	p := New(Options{Logger: slog.New(slog.DiscardHandler)})
	p.SetReady("hello", backendOf(t, upstream(t, echo)))
	addr := serve(t, NewServer(p, slog.New(slog.DiscardHandler)))
	send := func(size int) int {
		req, _ := http.NewRequest(http.MethodGet, "http://"+addr+"/plugins/hello/", nil)
		req.Header.Set("X-Big", strings.Repeat("a", size))
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatalf("%d-byte header: %v", size, err)
		}
		io.Copy(io.Discard, res.Body)
		res.Body.Close()
		return res.StatusCode
	}
	if got := send(100 << 10); got != http.StatusRequestHeaderFieldsTooLarge {
		t.Errorf("100 KiB header: status %d, want 431", got)
	}
	if got := send(60 << 10); got != http.StatusOK {
		t.Errorf("60 KiB header: status %d, want 200", got)
	}
}

// TestSlowloris opens 50 connections that each trickle a header line forever: the server
// closes every one of them at ReadHeaderTimeout (shortened here to 1s), however often
// they send, and serves other clients meanwhile.
func TestSlowloris(t *testing.T) {
	t.Parallel()
	const conns = 50
	const timeout = time.Second
	p := New(Options{Logger: slog.New(slog.DiscardHandler)})
	p.SetReady("hello", backendOf(t, upstream(t, echo)))
	addr := serve(t, newServer(p, slog.New(slog.DiscardHandler), serverLimits{
		readHeaderTimeout: timeout, idleTimeout: time.Minute, maxHeaderBytes: MaxHeaderBytes,
	}))

	begin := time.Now()
	closedAfter := make([]time.Duration, conns)
	var wg sync.WaitGroup
	for i := range conns {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		_ = c.SetDeadline(time.Now().Add(10 * time.Second)) // the test's own bound
		wg.Go(func() {
			// Reader: returns when the server closes the connection.
			_, _ = io.Copy(io.Discard, c)
			closedAfter[i] = time.Since(begin)
		})
		wg.Go(func() {
			if _, err := io.WriteString(c, "GET /plugins/hello/ HTTP/1.1\r\nHost: x\r\n"); err != nil {
				return
			}
			for n := 0; n < 100; n++ { // bounded: 10s at most
				if _, err := fmt.Fprintf(c, "X-Slow-%d: %d\r\n", n, n); err != nil {
					return
				}
				time.Sleep(100 * time.Millisecond)
			}
		})
	}
	// Meanwhile an ordinary client is served.
	res, err := http.Get("http://" + addr + "/plugins/hello/ok")
	if err != nil {
		t.Fatal(err)
	}
	decodeSeen(t, res)
	res.Body.Close()

	wg.Wait()
	for i, d := range closedAfter {
		if d < timeout-100*time.Millisecond || d > timeout+2*time.Second {
			t.Errorf("connection %d closed after %v, want about %v", i, d, timeout)
		}
	}
}

// TestIdleTimeout: a kept-alive connection without a next request is closed.
func TestIdleTimeout(t *testing.T) {
	t.Parallel()
	p := New(Options{Logger: slog.New(slog.DiscardHandler)})
	p.SetReady("hello", backendOf(t, upstream(t, echo)))
	addr := serve(t, newServer(p, slog.New(slog.DiscardHandler), serverLimits{
		readHeaderTimeout: 5 * time.Second, idleTimeout: 300 * time.Millisecond, maxHeaderBytes: MaxHeaderBytes,
	}))
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	begin := time.Now()
	io.WriteString(c, "GET /plugins/hello/ HTTP/1.1\r\nHost: x\r\n\r\n")
	// Read the response, then wait for the close.
	if _, err := io.Copy(io.Discard, c); err != nil {
		t.Fatalf("connection not closed by the server: %v", err)
	}
	if d := time.Since(begin); d > 3*time.Second {
		t.Errorf("idle connection closed after %v, want about 300ms", d)
	}
}

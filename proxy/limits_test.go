package proxy

import (
	"bufio"
	"io"
	"mime"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// Limits (max_concurrent, max_body) and streaming responses.

func TestMaxConcurrent(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	entered := make(chan struct{}, 2)
	release := make(chan struct{})
	up := upstream(t, func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/hold" {
			entered <- struct{}{}
			<-release
		}
		io.WriteString(w, "ok")
	})
	b := backendOf(t, up)
	b.MaxConcurrent = 2
	h.p.SetReady("hello", b)

	var wg sync.WaitGroup
	for range 2 {
		wg.Go(func() {
			res, err := h.client.Get(h.srv.URL + "/plugins/hello/hold")
			if err != nil {
				t.Error(err)
				return
			}
			defer res.Body.Close()
			if res.StatusCode != 200 {
				t.Errorf("held request: status %d", res.StatusCode)
			}
		})
	}
	<-entered
	<-entered
	if n := h.p.InFlight("hello"); n != 2 {
		t.Errorf("InFlight = %d while 2 held, want 2", n)
	}

	start := time.Now()
	res := h.get(t, "/plugins/hello/third")
	problem(t, res, http.StatusServiceUnavailable)
	if res.Header.Get("Retry-After") != "1" {
		t.Errorf("Retry-After %q", res.Header.Get("Retry-After"))
	}
	if d := time.Since(start); d > time.Second {
		t.Errorf("rejection took %v: queued instead of refused", d)
	}

	close(release)
	wg.Wait()
	// The client may see its answer before the handler has returned.
	eventually(t, "InFlight 0 after release", func() bool { return h.p.InFlight("hello") == 0 })
	if res := h.get(t, "/plugins/hello/after"); res.StatusCode != 200 {
		t.Errorf("after release: status %d", res.StatusCode)
	}
}

// unsized hides the length of a reader so that the client sends it chunked.
type unsized struct{ io.Reader }

func TestMaxBody(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	var called atomic.Int32
	up := upstream(t, func(w http.ResponseWriter, r *http.Request) {
		called.Add(1)
		echo(w, r)
	})
	b := backendOf(t, up)
	b.MaxBody = 1024
	h.p.SetReady("hello", b)

	tests := []struct {
		name       string
		body       io.Reader
		status     int
		wantCalled bool
	}{
		{"content-length under", strings.NewReader(strings.Repeat("a", 1024)), 200, true},
		{"content-length over", strings.NewReader(strings.Repeat("a", 1025)), 413, false},
		{"chunked under", unsized{strings.NewReader(strings.Repeat("a", 1024))}, 200, true},
		{"chunked over", unsized{strings.NewReader(strings.Repeat("a", 8192))}, 413, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			// Not parallel: each case counts the upstream's calls.
			before := called.Load()
			res := h.do(t, http.MethodPost, "/plugins/hello/upload", tt.body, nil)
			if tt.status == 200 {
				if s := decodeSeen(t, res); s.BodyLen != 1024 {
					t.Errorf("upstream got %d bytes, want 1024", s.BodyLen)
				}
			} else {
				problem(t, res, tt.status)
			}
			if !tt.wantCalled && called.Load() != before {
				t.Error("upstream was called for a body known to be too large")
			}
		})
	}
}

func TestStreaming(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name        string
		contentType string
		timeout     time.Duration
		gap         time.Duration // before the second event; longer than timeout: the stream outlives it
	}{
		{"sse", "text/event-stream", 0, 0},
		{"sse with charset", "text/event-stream; charset=utf-8", 0, 0},
		{"unknown length", "text/plain", 0, 0},
		{"sse outlives request_timeout", "text/event-stream", 100 * time.Millisecond, 300 * time.Millisecond},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			h := newHarness(t)
			release := make(chan struct{})
			up := upstream(t, func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("Content-Type", tt.contentType)
				io.WriteString(w, "data: one\n\n")
				http.NewResponseController(w).Flush()
				if tt.gap > 0 {
					select {
					case <-time.After(tt.gap):
					case <-r.Context().Done():
						return
					}
					io.WriteString(w, "data: two\n\n")
					return
				}
				select {
				case <-release:
				case <-r.Context().Done():
				}
			})
			b := backendOf(t, up)
			b.RequestTimeout = tt.timeout
			h.p.SetReady("hello", b)

			res := h.get(t, "/plugins/hello/events")
			if res.StatusCode != 200 {
				t.Fatalf("status %d", res.StatusCode)
			}
			lines := make(chan string)
			go func() {
				defer close(lines)
				sc := bufio.NewScanner(res.Body)
				for sc.Scan() {
					if sc.Text() != "" {
						lines <- sc.Text()
					}
				}
			}()
			next := func() string {
				select {
				case l := <-lines:
					return l
				case <-time.After(5 * time.Second):
					t.Fatal("no event within 5s: the proxy buffers the stream")
					return ""
				}
			}
			if got := next(); got != "data: one" {
				t.Fatalf("first event %q", got)
			}
			if tt.gap > 0 {
				if got := next(); got != "data: two" {
					t.Fatalf("second event %q: stream cut by request_timeout?", got)
				}
			}
			close(release)
			for range lines {
			}
		})
	}
}

// TestIsStreamMatchesParseMediaType: isStream compares the media type without
// mime.ParseMediaType, and must agree with it.
func TestIsStreamMatchesParseMediaType(t *testing.T) {
	t.Parallel()
	for _, ct := range []string{
		"text/event-stream", "text/event-stream; charset=utf-8", "Text/Event-Stream",
		" text/event-stream ;charset=utf-8", "text/event-stream;", "text/event-stream; bad",
		"text/event-streams", "text/plain", "", ";text/event-stream", "text/event-stream\t",
		"application/json; x=text/event-stream",
	} {
		mt, _, _ := mime.ParseMediaType(ct)
		want := mt == "text/event-stream"
		res := &http.Response{StatusCode: 200, Header: http.Header{"Content-Type": {ct}}}
		if got := isStream(res); got != want {
			t.Errorf("isStream(Content-Type %q) = %v, ParseMediaType says %q", ct, got, mt)
		}
	}
}

// Command hello is the smallest xcore plugin: a greeting at /, /healthz for the runner's
// probe, /echo/... which reflects the request so that users (and the tests) can see
// exactly what the proxy forwarded, and /events, a short stream of server-sent events
// (the first one at once) for streaming through the proxy (and the bench's
// time-to-first-byte), and /work?ms=2, about that much CPU work per request (the bench's
// CPU-bound plugin).
package main

import (
	"encoding/json"
	"fmt"
	"io"
	"log"
	"net/http"
	"os"
	"strconv"
	"time"

	"github.com/xcore/runner/plugin"
)

type echo struct {
	Method  string              `json:"method"`
	Path    string              `json:"path"`
	RawPath string              `json:"raw_path,omitempty"`
	Query   string              `json:"query"`
	Headers map[string][]string `json:"headers"`
	Body    string              `json:"body"`
}

func main() {
	greeting := os.Getenv("GREETING")
	if greeting == "" {
		greeting = "hello"
	}
	name := os.Getenv("XCORE_PLUGIN")

	mux := http.NewServeMux()
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintln(w, "ok")
	})
	mux.HandleFunc("/echo/", func(w http.ResponseWriter, r *http.Request) {
		body, err := io.ReadAll(io.LimitReader(r.Body, 1<<20))
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(echo{
			Method: r.Method, Path: r.URL.Path, RawPath: r.URL.RawPath, Query: r.URL.RawQuery,
			Headers: r.Header, Body: string(body),
		})
	})
	mux.HandleFunc("/events", events(greeting, name))
	mux.HandleFunc("/work", work(greeting, name))
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/" {
			http.NotFound(w, r)
			return
		}
		fmt.Fprintf(w, "%s from %s\n", greeting, name)
	})

	if err := plugin.Serve(mux); err != nil { // logs "<name> listening on <addr>"
		log.Fatalf("serve: %v", err)
	}
}

// Bounds of /events: a stream is short by construction (count and time), whatever the
// client asks for.
const (
	defaultEvents = 5
	maxEvents     = 100
	defaultEvery  = time.Second
	maxStream     = time.Minute // n × every
)

// events serves GET /events?n=<count>&every=<duration>: n server-sent events (default 5,
// at most 100), the first written and flushed at once, the next ones every <every>
// (default 1s, a Go duration; n × every at most a minute). Each is
//
//	id: <i>
//	event: tick
//	data: <greeting> from <name> <i>/<n>
//
// X-Accel-Buffering: no asks a buffering proxy (nginx) to pass the stream as it comes.
// The stream ends after the last event or when the client goes away.
func events(greeting, name string) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodGet {
			w.Header().Set("Allow", http.MethodGet)
			http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
			return
		}
		n, every := defaultEvents, defaultEvery
		if v := r.URL.Query().Get("n"); v != "" {
			i, err := strconv.Atoi(v)
			if err != nil || i < 1 || i > maxEvents {
				http.Error(w, fmt.Sprintf("n: want 1…%d", maxEvents), http.StatusBadRequest)
				return
			}
			n = i
		}
		if v := r.URL.Query().Get("every"); v != "" {
			d, err := time.ParseDuration(v)
			if err != nil || d < 0 {
				http.Error(w, "every: want a Go duration ≥ 0, e.g. 500ms", http.StatusBadRequest)
				return
			}
			every = d
		}
		if time.Duration(n-1)*every > maxStream {
			http.Error(w, fmt.Sprintf("n × every over %s", maxStream), http.StatusBadRequest)
			return
		}
		h := w.Header()
		h.Set("Content-Type", "text/event-stream")
		h.Set("Cache-Control", "no-cache")
		h.Set("X-Accel-Buffering", "no")
		rc := http.NewResponseController(w)
		var tick <-chan time.Time
		for i := 1; i <= n; i++ {
			if i > 1 {
				if tick == nil {
					t := time.NewTicker(max(every, time.Nanosecond))
					defer t.Stop()
					tick = t.C
				}
				select {
				case <-tick:
				case <-r.Context().Done():
					return
				}
			}
			if _, err := fmt.Fprintf(w, "id: %d\nevent: tick\ndata: %s from %s %d/%d\n\n", i, greeting, name, i, n); err != nil {
				return
			}
			if err := rc.Flush(); err != nil {
				return
			}
		}
	}
}

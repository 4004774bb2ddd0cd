// Command hello is the smallest xcore plugin: a greeting at /, /healthz for the runner's
// probe, and /echo/... which reflects the request so that users (and the tests) can see
// exactly what the proxy forwarded.
package main

import (
	"encoding/json"
	"fmt"
	"io"
	"log"
	"net/http"
	"os"

	"github.com/xcore/runner/examples/internal/plugin"
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
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/" {
			http.NotFound(w, r)
			return
		}
		fmt.Fprintf(w, "%s from %s\n", greeting, name)
	})

	ln, err := plugin.Listen()
	if err != nil {
		log.Fatalf("listen: %v", err)
	}
	log.Printf("%s listening on %s", name, ln.Addr())
	if err := plugin.Serve(ln, mux); err != nil {
		log.Fatalf("serve: %v", err)
	}
}

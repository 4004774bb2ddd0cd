// Command crashy is a plugin that dies on demand, for testing the runner's restarts:
//
//	GET /crash?code=2   answers, then exits with that code (default 2)
//	GET /healthz        ok
//	GET /               ok
//
// CRASHY_EXIT=N exits with code N at start (a crash loop).
package main

import (
	"fmt"
	"log"
	"net/http"
	"os"
	"strconv"

	"github.com/xcore/runner/plugin"
)

func main() {
	if v := os.Getenv("CRASHY_EXIT"); v != "" {
		code, _ := strconv.Atoi(v)
		log.Printf("crashy: exiting at start with code %d", code)
		os.Exit(code)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, r *http.Request) { fmt.Fprintln(w, "ok") })
	mux.HandleFunc("/crash", func(w http.ResponseWriter, r *http.Request) {
		code := 2
		if v := r.URL.Query().Get("code"); v != "" {
			code, _ = strconv.Atoi(v)
		}
		fmt.Fprintf(w, "crashing with code %d\n", code)
		w.(http.Flusher).Flush()
		log.Printf("crashy: exiting with code %d as asked", code)
		os.Exit(code)
	})
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) { fmt.Fprintln(w, "crashy ok") })
	if err := plugin.Serve(mux); err != nil {
		log.Fatal(err)
	}
}

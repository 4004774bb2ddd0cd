// Command hang is a plugin that stops answering, for testing timeouts and health checks:
//
//	GET /hang     never answers (until the client goes away)
//	POST /sick    from now on /healthz answers 500
//	GET /healthz  ok (or 500 once sick)
//	GET /         ok
package main

import (
	"fmt"
	"log"
	"net/http"
	"sync/atomic"

	"github.com/xcore/runner/plugin"
)

func main() {
	var sick atomic.Bool
	mux := http.NewServeMux()
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, r *http.Request) {
		if sick.Load() {
			http.Error(w, "sick", http.StatusInternalServerError)
			return
		}
		fmt.Fprintln(w, "ok")
	})
	mux.HandleFunc("/sick", func(w http.ResponseWriter, r *http.Request) {
		sick.Store(true)
		log.Printf("hang: /healthz will fail from now on")
		fmt.Fprintln(w, "sick")
	})
	mux.HandleFunc("/hang", func(w http.ResponseWriter, r *http.Request) {
		<-r.Context().Done()
	})
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) { fmt.Fprintln(w, "hang ok") })
	if err := plugin.Serve(mux); err != nil {
		log.Fatal(err)
	}
}

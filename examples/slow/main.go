// Command slow is a plugin for exercising the runner's failure handling: it answers after
// a delay, can stop listening on demand, and can try to dial another address (to prove
// that plugins on the runner network cannot reach each other).
//
//	GET /?delay=2s     answers after the delay (default SLOW_DELAY, else 0)
//	GET /healthz       ok
//	POST /stop-listening  closes the listener but keeps running (proxy → 502)
//	GET /dial?addr=ip:port[&timeout=2s]  tries a TCP connect, answers "connected" or the error
//
// Environment: SLOW_DELAY (default delay), SLOW_EXIT_CODE (exit at once with it: a
// plugin that never starts), SLOW_HEALTH=fail (/healthz answers 500: a plugin that
// listens but is never healthy).
package main

import (
	"fmt"
	"log"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strconv"
	"sync"
	"syscall"
	"time"

	"github.com/xcore/runner/plugin"
)

func main() {
	defDelay, _ := time.ParseDuration(os.Getenv("SLOW_DELAY"))
	if code := os.Getenv("SLOW_EXIT_CODE"); code != "" {
		n, _ := strconv.Atoi(code)
		log.Printf("exiting with code %d as told by SLOW_EXIT_CODE", n)
		os.Exit(n)
	}
	sick := os.Getenv("SLOW_HEALTH") == "fail"

	ln, err := plugin.Listen()
	if err != nil {
		log.Fatalf("listen: %v", err)
	}
	var closeOnce sync.Once

	mux := http.NewServeMux()
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, r *http.Request) {
		if sick {
			http.Error(w, "sick", http.StatusInternalServerError)
			return
		}
		fmt.Fprintln(w, "ok")
	})
	mux.HandleFunc("/stop-listening", func(w http.ResponseWriter, r *http.Request) {
		closeOnce.Do(func() { _ = ln.Close() })
		// Also drop this kept-alive connection, or the caller would keep talking to us.
		w.Header().Set("Connection", "close")
		fmt.Fprintln(w, "closed")
	})
	mux.HandleFunc("/dial", func(w http.ResponseWriter, r *http.Request) {
		timeout := 2 * time.Second
		if q := r.URL.Query().Get("timeout"); q != "" {
			if timeout, err = time.ParseDuration(q); err != nil {
				http.Error(w, "bad timeout", http.StatusBadRequest)
				return
			}
		}
		c, err := net.DialTimeout("tcp", r.URL.Query().Get("addr"), timeout)
		if err != nil {
			fmt.Fprintf(w, "error: %v\n", err)
			return
		}
		c.Close()
		fmt.Fprintln(w, "connected")
	})
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		d := defDelay
		if q := r.URL.Query().Get("delay"); q != "" {
			if d, err = time.ParseDuration(q); err != nil {
				http.Error(w, "bad delay", http.StatusBadRequest)
				return
			}
		}
		log.Printf("request %s: sleeping %s", r.URL.Path, d)
		select {
		case <-time.After(d):
			fmt.Fprintf(w, "slept %s\n", d)
		case <-r.Context().Done():
		}
	})
	// Registered before serving: as PID 1 the process ignores SIGTERM without a handler.
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)
	if err := plugin.ServeListener(ln, mux); err != nil {
		// The listener was closed via /stop-listening: stay alive with nothing listening.
		log.Printf("not listening any more: %v", err)
		<-sig
	}
}

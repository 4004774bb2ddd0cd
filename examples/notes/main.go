// Command notes is an example plugin that uses all three kinds of service:
//
//	PUT /notes/{id}    stores the body in the kv service (KV_URL)
//	GET /notes/{id}    reads it back
//	GET /notes         lists the ids
//	POST /count/{id}   adds 1 to a counter in the kv service, atomically; answers the total
//	GET /quote         calls the url service QUOTES_URL; the runner adds the credentials
//	GET /greeting      the value of the env service (FEATURE_X)
//	GET /selftest?addr=host:port  tries a TCP connection and reports (network = "none"
//	                   plugins must not be able to open any)
//
// It authenticates to its sidecar with XCORE_TOKEN. With network = "none" it serves on
// XCORE_SOCKET and reaches its services over XCORE_SERVICES_SOCKET.
package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/xcore/runner/examples/internal/plugin"
)

// sidecar calls the plugin's services: over the unix socket when there is no network.
var sidecar = &http.Client{Timeout: 10 * time.Second, Transport: transport()}

func transport() http.RoundTripper {
	sock := os.Getenv("XCORE_SERVICES_SOCKET")
	if sock == "" {
		return http.DefaultTransport
	}
	var d net.Dialer
	return &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		return d.DialContext(ctx, "unix", sock)
	}}
}

func call(method, url string, body io.Reader) (*http.Response, error) {
	req, err := http.NewRequest(method, url, body)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Authorization", "Bearer "+os.Getenv("XCORE_TOKEN"))
	return sidecar.Do(req)
}

// relay copies a sidecar answer to the client.
func relay(w http.ResponseWriter, resp *http.Response, err error) {
	if err != nil {
		http.Error(w, "service unreachable: "+err.Error(), http.StatusBadGateway)
		return
	}
	defer resp.Body.Close()
	if ct := resp.Header.Get("Content-Type"); ct != "" {
		w.Header().Set("Content-Type", ct)
	}
	w.WriteHeader(resp.StatusCode)
	_, _ = io.Copy(w, resp.Body)
}

func main() {
	kv := os.Getenv("KV_URL") // ends in "/": a key's URL is $KV_URL{key}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) { fmt.Fprintln(w, "ok") })
	mux.HandleFunc("PUT /notes/{id}", func(w http.ResponseWriter, r *http.Request) {
		resp, err := call(http.MethodPut, kv+"note:"+url.PathEscape(r.PathValue("id")), r.Body)
		relay(w, resp, err)
	})
	mux.HandleFunc("GET /notes/{id}", func(w http.ResponseWriter, r *http.Request) {
		resp, err := call(http.MethodGet, kv+"note:"+url.PathEscape(r.PathValue("id")), nil)
		relay(w, resp, err)
	})
	mux.HandleFunc("GET /notes", func(w http.ResponseWriter, r *http.Request) {
		resp, err := call(http.MethodGet, kv+"?prefix=note:", nil)
		if err != nil || resp.StatusCode != http.StatusOK {
			relay(w, resp, err)
			return
		}
		defer resp.Body.Close()
		var list struct{ Keys []string }
		if err := json.NewDecoder(resp.Body).Decode(&list); err != nil {
			http.Error(w, err.Error(), http.StatusBadGateway)
			return
		}
		ids := make([]string, 0, len(list.Keys))
		for _, k := range list.Keys {
			ids = append(ids, strings.TrimPrefix(k, "note:"))
		}
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(map[string][]string{"notes": ids})
	})
	mux.HandleFunc("POST /count/{id}", func(w http.ResponseWriter, r *http.Request) {
		resp, err := call(http.MethodPost, kv+"count:"+url.PathEscape(r.PathValue("id"))+"?incr=1", nil)
		relay(w, resp, err)
	})
	mux.HandleFunc("GET /quote", func(w http.ResponseWriter, r *http.Request) {
		resp, err := call(http.MethodGet, os.Getenv("QUOTES_URL"), nil)
		relay(w, resp, err)
	})
	mux.HandleFunc("GET /greeting", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "FEATURE_X=%s\n", os.Getenv("FEATURE_X"))
	})
	mux.HandleFunc("GET /selftest", func(w http.ResponseWriter, r *http.Request) {
		c, err := net.DialTimeout("tcp", r.URL.Query().Get("addr"), time.Second)
		if err != nil {
			fmt.Fprintf(w, "no connection: %v\n", err)
			return
		}
		c.Close()
		fmt.Fprintln(w, "connected")
	})

	ln, err := plugin.Listen()
	if err != nil {
		log.Fatalf("listen: %v", err)
	}
	log.Printf("notes listening on %s", ln.Addr())
	if err := plugin.Serve(ln, mux); err != nil {
		log.Fatalf("serve: %v", err)
	}
}

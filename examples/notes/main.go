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
// It is written on the plugin kit (github.com/xcore/runner/plugin), which authenticates
// its calls with XCORE_TOKEN and, with network = "none", serves on XCORE_SOCKET and
// reaches the services over XCORE_SERVICES_SOCKET.
package main

import (
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

	"github.com/xcore/runner/plugin"
)

// sidecar calls the plugin's services: the kit adds XCORE_TOKEN to those calls only, and
// goes over XCORE_SERVICES_SOCKET when there is no network.
var sidecar = func() *http.Client {
	c := plugin.Client()
	c.Timeout = 10 * time.Second
	return c
}()

// call sends a request to service svc; path is below the service's URL.
func call(method, svc, path string, body io.Reader) (*http.Response, error) {
	base, err := plugin.ServiceURL(svc)
	if err != nil {
		return nil, err
	}
	req, err := http.NewRequest(method, base+strings.TrimPrefix(path, "/"), body)
	if err != nil {
		return nil, err
	}
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
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) { fmt.Fprintln(w, "ok") })
	mux.HandleFunc("PUT /notes/{id}", func(w http.ResponseWriter, r *http.Request) {
		resp, err := call(http.MethodPut, "kv", "note:"+url.PathEscape(r.PathValue("id")), r.Body)
		relay(w, resp, err)
	})
	mux.HandleFunc("GET /notes/{id}", func(w http.ResponseWriter, r *http.Request) {
		resp, err := call(http.MethodGet, "kv", "note:"+url.PathEscape(r.PathValue("id")), nil)
		relay(w, resp, err)
	})
	mux.HandleFunc("GET /notes", func(w http.ResponseWriter, r *http.Request) {
		resp, err := call(http.MethodGet, "kv", "?prefix=note:", nil)
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
		resp, err := call(http.MethodPost, "kv", "count:"+url.PathEscape(r.PathValue("id"))+"?incr=1", nil)
		relay(w, resp, err)
	})
	mux.HandleFunc("GET /quote", func(w http.ResponseWriter, r *http.Request) {
		resp, err := call(http.MethodGet, "quotes", "", nil)
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

	if err := plugin.Serve(mux); err != nil {
		log.Fatalf("serve: %v", err)
	}
}

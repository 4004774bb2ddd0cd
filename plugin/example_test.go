package plugin_test

import (
	"fmt"
	"io"
	"log"
	"net/http"
	"net/http/httptest"

	"github.com/xcore/runner/plugin"
)

// A complete plugin: a greeting, and a counter kept in the runner's kv service (declare
// it: services = ["kv"]). GET /healthz is answered by Serve.
func ExampleServe() {
	kv, err := plugin.ServiceURL("kv") // http://xcore.internal:<port>/p/<plugin>/services/kv/
	if err != nil {
		log.Fatal(err)
	}
	client := plugin.Client() // adds Authorization: Bearer $XCORE_TOKEN for kv only

	mux := http.NewServeMux()
	mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "hello; see %s\n", plugin.PublicPath(r, "/greeting"))
	})
	mux.HandleFunc("GET /greeting", func(w http.ResponseWriter, r *http.Request) {
		req, _ := http.NewRequestWithContext(r.Context(), http.MethodGet, kv+"greeting", nil)
		resp, err := client.Do(req)
		if err != nil {
			log.Printf("request %s: kv: %v", plugin.RequestID(r), err)
			http.Error(w, "kv unreachable", http.StatusBadGateway)
			return
		}
		defer resp.Body.Close()
		w.WriteHeader(resp.StatusCode)
		_, _ = io.Copy(w, resp.Body)
	})
	if err := plugin.Serve(mux); err != nil { // until SIGTERM, then drains
		log.Fatal(err)
	}
}

// Links must carry the prefix the proxy stripped: behind the runner, the plugin "notes"
// is at /plugins/notes/.
func ExamplePublicPath() {
	r := httptest.NewRequest(http.MethodGet, "/notes", nil)
	r.Header.Set("X-Forwarded-Prefix", "/plugins/notes") // set by the runner's proxy
	fmt.Println(plugin.PublicPath(r, "/notes/42"))
	// Output: /plugins/notes/notes/42
}

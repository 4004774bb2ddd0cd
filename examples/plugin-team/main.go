// Command plugin-team is the plugin of examples/plugin-team: the smallest plugin a team
// would ship, and plugin_test.go shows how that team tests it under the real runner.
//
//	GET /        → "hello from plugin-team"
//	GET /healthz → "ok" (probed by the runner: health { path = "/healthz" })
//
// The plugin kit (github.com/xcore/runner/plugin) listens where the runner says, answers
// /healthz and finishes in-flight requests on SIGTERM.
package main

import (
	"fmt"
	"log"
	"net/http"

	"github.com/xcore/runner/plugin"
)

func main() {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintln(w, "hello from plugin-team")
	})
	if err := plugin.Serve(mux); err != nil {
		log.Fatal(err)
	}
}

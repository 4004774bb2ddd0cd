// Command hog is a plugin that eats memory on demand, for testing OOM handling:
//
//	GET /oom      allocates (and touches) memory in 4 MiB steps until the kernel kills it
//	GET /healthz  ok
package main

import (
	"fmt"
	"log"
	"net/http"
	"time"

	"github.com/xcore/runner/plugin"
)

var hoard [][]byte // kept reachable so the GC cannot give it back

func main() {
	mux := http.NewServeMux()
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, r *http.Request) { fmt.Fprintln(w, "ok") })
	mux.HandleFunc("/oom", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintln(w, "allocating until killed")
		w.(http.Flusher).Flush()
		go func() {
			for i := 0; ; i++ {
				b := make([]byte, 4<<20)
				for j := range b {
					b[j] = byte(j) // touch every page: RSS, not just address space
				}
				hoard = append(hoard, b)
				if i%8 == 0 {
					log.Printf("hog: %d MiB", (i+1)*4)
				}
				time.Sleep(time.Millisecond)
			}
		}()
	})
	if err := plugin.Serve(mux); err != nil {
		log.Fatal(err)
	}
}

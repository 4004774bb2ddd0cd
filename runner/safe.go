package runner

import (
	"fmt"
	"log/slog"
	"runtime/debug"
	"sync"
)

// owner runs the goroutines of the runner: it waits for all of them (Shutdown), and a
// panic in one is recovered and logged with its stack instead of ending the process, so
// the proxy, the admin API and the other plugins go on (like Traefik's safe.Pool).
type owner struct {
	wg  sync.WaitGroup
	log *slog.Logger
}

// Go runs f in a goroutine named what. A panic in f is logged with its stack and handed
// to onPanic (nil: only logged).
func (o *owner) Go(what string, f func(), onPanic func(error)) {
	o.wg.Go(func() {
		defer func() {
			if v := recover(); v != nil {
				err := fmt.Errorf("panic in %s: %v", what, v)
				o.log.Error("internal error: recovered a panic", "in", what, "panic", fmt.Sprint(v), "stack", string(debug.Stack()))
				if onPanic != nil {
					onPanic(err)
				}
			}
		}()
		f()
	})
}

// Wait waits for every goroutine started with Go.
func (o *owner) Wait() { o.wg.Wait() }

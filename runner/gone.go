package runner

import (
	"context"
	"errors"
	"strconv"
	"sync"
	"time"

	"github.com/xcore/runner/sandbox"
)

// goneWithin is how long the check below waits for the engine to see an instance stop:
// a process that just died is still "running" for the engine for a moment (milliseconds
// here; over a second on a host loaded 10×). A plugin that refuses connections while it
// runs gets its 502 that much later.
const goneWithin = 3 * time.Second

// goneChecks coalesces the checks of one instance: a burst of failed requests to a
// dying instance asks the engine once.
type goneChecks struct {
	mu      sync.Mutex
	pending map[string]*goneCheck
	dead    map[string]string // confirmed stopped: id → why (removed with the instance)
}

type goneCheck struct {
	done chan struct{}
	why  string
	gone bool
}

// instanceGone is the proxy's check when a connection to an instance failed: has it
// stopped? A crash reaches the proxy's clients before its die event reaches the runner;
// with the engine's word the client gets 503 + Retry-After (a new instance is on its
// way), not a 502, and the supervisor hears of the death at once. The engine is asked
// for up to goneWithin; one that still says "running" then means the plugin failed to
// answer (502).
func (r *Runner) instanceGone(plugin, id string) (string, bool) {
	g := &r.goneChecks
	g.mu.Lock()
	if why, ok := g.dead[id]; ok {
		g.mu.Unlock()
		return why, true
	}
	if c := g.pending[id]; c != nil {
		g.mu.Unlock()
		<-c.done
		return c.why, c.gone
	}
	c := &goneCheck{done: make(chan struct{})}
	if g.pending == nil {
		g.pending, g.dead = map[string]*goneCheck{}, map[string]string{}
	}
	g.pending[id] = c
	g.mu.Unlock()

	c.why, c.gone = r.askEngine(plugin, id)
	g.mu.Lock()
	delete(g.pending, id)
	if c.gone {
		g.dead[id] = c.why
	}
	g.mu.Unlock()
	close(c.done)
	return c.why, c.gone
}

func (r *Runner) askEngine(plugin, id string) (string, bool) {
	ctx, cancel := context.WithTimeout(r.ctx, goneWithin)
	defer cancel()
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for {
		c, err := r.sb.Inspect(ctx, id)
		switch {
		case errors.Is(err, sandbox.ErrNotFound) || (err == nil && !c.Running):
			why, code := "restarting: its instance is gone", -1
			if err == nil {
				why, code = "restarting after exit code "+strconv.Itoa(c.ExitCode), c.ExitCode
			}
			r.mu.Lock()
			s := r.sups[plugin]
			r.mu.Unlock()
			if s != nil {
				s.notify(sandbox.Event{Kind: sandbox.EventDie, InstanceID: id, Plugin: plugin, ExitCode: code})
			}
			return why, true
		case ctx.Err() != nil:
			return "", false
		}
		select {
		case <-ctx.Done():
			return "", false
		case <-tick.C:
		}
	}
}

// forgetGone drops what is known of a removed instance.
func (r *Runner) forgetGone(id string) {
	r.goneChecks.mu.Lock()
	delete(r.goneChecks.dead, id)
	r.goneChecks.mu.Unlock()
}

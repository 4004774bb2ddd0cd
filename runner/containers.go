package runner

import (
	"context"
	"maps"
	"slices"
	"time"

	"github.com/xcore/runner/sandbox"
)

// removeContainer stops (SIGTERM, grace, SIGKILL) and removes a container with a fresh
// context — cleanup must happen even when the caller's context is what ended — then
// revokes its sidecar token and closes its services socket.
func (r *Runner) removeContainer(c sandbox.Container, grace time.Duration) {
	ctx, cancel := context.WithTimeout(context.Background(), grace+time.Minute)
	defer cancel()
	if err := r.sb.Stop(ctx, c.ID, grace); err != nil {
		r.log.Warn("stop container", "container", c.ID, "err", err)
	}
	// Removing is the engine's heavy part (stopping is waiting): bounded like starts, so
	// that a shutdown of 200 plugins does not hand dockerd 200 removals at once.
	r.engine <- struct{}{}
	err := r.sb.Remove(ctx, c.ID)
	<-r.engine
	if err != nil {
		r.log.Warn("remove container", "container", c.ID, "err", err)
	}
	if r.sidecar != nil && c.Plugin != "" {
		r.sidecar.release(c.Plugin, c.Generation)
	}
}

// watchEngine turns the engine's events into work: an image event may move a tag a
// plugin uses, and a (re)connected stream means we may have missed anything (e.g.
// containers that died while dockerd restarted) — both re-observe everything; after a
// reconnection, plugins that the engine's going away left failed start again. A
// container's death goes to its plugin's supervisor.
func (r *Runner) watchEngine() {
	for ev := range r.sb.Events(r.ctx) {
		switch ev.Kind {
		case sandbox.EventImage:
			r.Resync()
		case sandbox.EventResync:
			if !ev.LostAt.IsZero() {
				r.mu.Lock()
				sups := slices.Collect(maps.Values(r.sups))
				r.mu.Unlock()
				for _, s := range sups {
					s.engineBack(ev.LostAt)
				}
			}
			r.Resync()
		case sandbox.EventDie, sandbox.EventOOM:
			r.mu.Lock()
			s := r.sups[ev.Plugin]
			r.mu.Unlock()
			if s != nil {
				s.notify(ev)
			}
		}
	}
}

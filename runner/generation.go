package runner

import (
	"context"
	"time"

	"github.com/xcore/runner/config"
	"github.com/xcore/runner/proxy"
	"github.com/xcore/runner/sandbox"
)

// generation is one version of a plugin: the instances (slots) of one snapshot. Owned
// by its supervisor's loop.
type generation struct {
	num    int
	d      Desired
	cfg    *config.Plugin
	ctx    context.Context // ends the starts under way when the generation is abandoned
	cancel context.CancelFunc
	slots  []*slot
	reason string    // why it replaces the previous generation ("" for a first start)
	begin  time.Time // when it was started (replacements are timed from here)
	gone   bool      // abandoned or retired: no longer serves nor starts anything
	ops    int       // goroutines and timers of the supervisor still working on it
	// scalingTo is the size a cluster is being scaled to (0: none under way). While a
	// scale-down is, the tasks the engine stops vanish from listings before it has said
	// which they are: not crashes.
	scalingTo int

	replacedBy *generation // the generation that replaced it: EventReplaced once it is gone
}

// slot is one instance position of a generation: the instance in it, if any, and its
// supervision state. A crashed instance's slot gets a fresh instance after a backoff.
type slot struct {
	idx          int
	inst         *sandbox.Instance // nil while starting, backing off or given up
	knownAt      time.Time         // when inst became known: observations older than that say nothing of it
	starting     bool
	began        time.Time // when its current start began
	adopting     bool      // a previous runner's instance, being probed before it is taken over
	ready        bool      // answering its probes: in the route
	dying        bool      // the engine reported its death; the reason is being read
	dropped      bool      // scaled away: whatever it still has is removed
	restarted    bool      // its instance is a restart after a crash (counted once healthy)
	probing      bool
	probeFails   int
	healthySince time.Time
	backoff      *time.Timer // armed while waiting to start again
	down         bool        // given up on (restart budget): not started again
	lastExit     string      // why its last instance stopped serving
	restarts     int         // instances started in it after a crash
	probe        probeConn   // the probes' kept connection to inst
}

func (s *supervisor) newGeneration(ctx context.Context, w *work, reason string) *generation {
	g := &generation{num: s.r.allocGeneration(s.name), d: w.d, cfg: w.cfg, reason: reason, begin: time.Now()}
	g.ctx, g.cancel = context.WithCancel(ctx)
	for i := range replicas(w.cfg) {
		g.slots = append(g.slots, &slot{idx: i})
	}
	s.setOwned(g.num, true)
	return g
}

// replicas is how many instances a plugin runs (a config built by hand may leave it 0).
func replicas(p *config.Plugin) int { return max(p.Supervisor.Replicas, 1) }

// ready returns the slots of g whose instance serves.
func (g *generation) ready() []*slot {
	var out []*slot
	for _, sl := range g.slots {
		if sl.ready && sl.inst != nil {
			out = append(out, sl)
		}
	}
	return out
}

// slotByIndex returns g's slot idx, or nil.
func (g *generation) slotByIndex(idx int) *slot {
	for _, sl := range g.slots {
		if sl.idx == idx {
			return sl
		}
	}
	return nil
}

// allReady reports whether every slot of g has an instance that answered its probe.
func (g *generation) allReady() bool {
	for _, sl := range g.slots {
		if !sl.ready {
			return false
		}
	}
	return len(g.slots) > 0
}

// slotOf finds the slot of g holding instance id.
func (g *generation) slotOf(id string) *slot {
	if g == nil {
		return nil
	}
	for _, sl := range g.slots {
		if sl.inst != nil && sl.inst.ID == id {
			return sl
		}
	}
	return nil
}

// backend is the proxy's view of g's serving instances.
func (g *generation) backend(serving []*slot) proxy.Backend {
	sup := g.cfg.Supervisor
	b := proxy.Backend{
		Generation: g.num, RequestTimeout: sup.RequestTimeout, MaxConcurrent: sup.MaxConcurrent, MaxBody: sup.MaxBody,
		MaxResponseHeader: sup.MaxResponseHeader,
	}
	for _, sl := range serving {
		ep := sl.inst.Endpoint
		b.Targets = append(b.Targets, proxy.Target{ID: sl.inst.ID, Network: ep.Network, Address: ep.Address})
	}
	return b
}

// route tells the proxy what serves now: cur's ready instances, or why nothing does.
func (s *supervisor) route() {
	if s.removing {
		return // the route is gone (404); requests in flight finish
	}
	if s.cur != nil {
		if serving := s.cur.ready(); len(serving) > 0 {
			s.r.router.SetReady(s.name, s.cur.backend(serving))
			return
		}
	}
	if s.failReason != "" {
		// No Retry-After: it will not serve until its config changes or a restart.
		s.r.router.SetFailed(s.name, s.failReason)
		return
	}
	s.r.router.SetNotReady(s.name, s.notReadyReason())
}

// notReadyReason is the detail of the 503 while nothing serves yet.
func (s *supervisor) notReadyReason() string {
	if s.cur == nil && s.want != nil && isPulling(s.want.d.Err) {
		return s.want.d.Err.Error() // "pulling team/hello:1.4"
	}
	if s.cur != nil {
		for _, sl := range s.cur.slots {
			if (sl.restarted || sl.dying) && sl.lastExit != "" {
				// Until a fresh instance serves, whether in its backoff or starting.
				return "restarting after " + sl.lastExit
			}
		}
	}
	return "starting"
}

// refresh derives the plugin's state from its generations and publishes it with the
// route: the one place that turns slots into what clients and operators see. also
// changes more of the status in the same update (one event, not two).
func (s *supervisor) refresh(also ...func(*Status)) {
	s.route()
	g := s.cur
	s.update(func(st *Status) {
		for _, f := range also {
			f(st)
		}
		st.Instances = nil
		st.Ready, st.Replicas = 0, 0
		switch {
		case s.failReason != "":
			st.State = StateFailed
		case g == nil && s.want != nil && isPulling(s.want.d.Err):
			st.State = StatePulling
		case g == nil:
			st.State = StatePending
		}
		if g == nil {
			return
		}
		st.Generation, st.Replicas = g.num, len(g.slots)
		st.Image, st.ImageID, st.Snapshot = g.d.Spec.ImageRef, g.d.Spec.ImageID, g.d.Hash
		unhealthy, backingOff := false, false
		st.Container, st.Endpoint = "", ""
		for _, sl := range g.slots {
			is := InstanceStatus{Replica: sl.idx, State: slotState(sl), Restarts: sl.restarts, LastExit: sl.lastExit}
			if sl.inst != nil {
				is.Container, is.Name, is.Endpoint = sl.inst.ID, sl.inst.Name, sl.inst.Endpoint.String()
			}
			st.Instances = append(st.Instances, is)
			if sl.ready && sl.inst != nil {
				st.Ready++
				if st.Container == "" {
					st.Container, st.Endpoint = sl.inst.ID, sl.inst.Endpoint.String()
				}
			}
			unhealthy = unhealthy || (sl.inst != nil && sl.probeFails > 0)
			backingOff = backingOff || sl.backoff != nil
			if sl.lastExit != "" {
				st.LastExit = sl.lastExit
			}
		}
		st.Restarts = s.restarts
		switch {
		case s.failReason != "":
			st.State = StateFailed
		case st.Ready > 0 && unhealthy:
			st.State = StateUnhealthy
		case st.Ready > 0:
			st.State = StateHealthy
		case backingOff:
			st.State = StateRestarting
		default:
			st.State = StateStarting
		}
	})
}

// slotState is one instance's state for the admin API.
func slotState(sl *slot) State {
	switch {
	case sl.down:
		return StateFailed
	case sl.ready && sl.probeFails > 0:
		return StateUnhealthy
	case sl.ready:
		return StateHealthy
	case sl.backoff != nil:
		return StateRestarting
	case sl.inst != nil && sl.probeFails > 0:
		return StateUnhealthy
	default:
		return StateStarting
	}
}

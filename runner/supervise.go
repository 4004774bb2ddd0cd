package runner

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/docker/go-units"

	"github.com/xcore/runner/sandbox"
)

// This file is supervision: noticing that an instance died or stopped answering, and
// starting a NEW instance of the same spec in its slot — never `docker restart` of a
// poisoned one — within the plugin's restart {} budget.

// onEvent handles a die/oom of one of the plugin's instances. Only instances of the
// serving and the starting generation matter: older ones die because they are stopped.
func (s *supervisor) onEvent(ev sandbox.Event) {
	for _, g := range []*generation{s.cur, s.next} {
		sl := g.slotOf(ev.InstanceID)
		if sl == nil {
			continue
		}
		switch ev.Kind {
		case sandbox.EventOOM:
			s.r.log.Warn("plugin hit its memory limit", "plugin", s.name, "container", sl.inst.Name)
		case sandbox.EventDie:
			s.instanceDied(g, sl, ev.ExitCode)
		}
		return
	}
}

// instanceDied takes a dead instance out of the route at once, then reads why it died
// (the engine's word on an OOM kill) off the loop; crashed follows.
func (s *supervisor) instanceDied(g *generation, sl *slot, code int) {
	if sl.dying {
		return
	}
	sl.dying, sl.ready = true, false
	if code >= 0 {
		sl.lastExit = fmt.Sprintf("exit code %d", code) // until the engine says more
	}
	s.refresh()
	inst, memory := *sl.inst, g.d.Spec.Memory
	s.goOp("inspect", g, func() result {
		return result{kind: resDied, gen: g, slot: sl, inst: inst, crash: s.r.exitCrash(inst.ID, code, memory)}
	})
}

// exitCrash reads a dead instance's state: the engine's OOMKilled flag is the truth about
// an OOM kill (exit code 137 alone could be any SIGKILL).
func (r *Runner) exitCrash(id string, code int, memory int64) crash {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c, err := r.sb.Inspect(ctx, id)
	switch {
	case errors.Is(err, sandbox.ErrNotFound):
		return crash{reason: "container vanished"}
	case err != nil:
		return crash{reason: fmt.Sprintf("exit code %d", code)}
	case c.Running:
		return crash{reason: "died and was started again by someone else"}
	case c.OOMKilled:
		return crash{reason: fmt.Sprintf("OOM killed (memory limit %s, exit code %d)", units.BytesSize(float64(memory)), c.ExitCode)}
	}
	return crash{reason: fmt.Sprintf("exit code %d", c.ExitCode), clean: c.ExitCode == 0}
}

// observe compares what the engine listed with the instances the supervisor holds: one
// that is gone or stopped without a die event (the event stream was down) died.
// Instances that became known after the listing are not judged by it.
func (s *supervisor) observe(obs *observation) {
	if !obs.at.After(s.obsAt) {
		return
	}
	s.obsAt = obs.at
	running := map[string]bool{}
	for _, c := range obs.instances {
		running[c.ID] = c.Running
	}
	for _, g := range []*generation{s.cur, s.next} {
		if g == nil || (g.scalingTo > 0 && g.scalingTo < len(g.slots)) {
			// A cluster is stopping some of g's instances and has not said which yet:
			// missing ones are not judged (a crash meanwhile comes as an engine event).
			continue
		}
		for _, sl := range g.slots {
			if sl.inst != nil && !sl.dying && sl.knownAt.Before(obs.at) && !running[sl.inst.ID] {
				s.r.log.Info("instance found dead by a resync", "plugin", s.name, "container", sl.inst.Name)
				s.instanceDied(g, sl, -1)
			}
		}
	}
}

// probeAll starts a probe of every instance of the serving generation that has none
// under way.
func (s *supervisor) probeAll() {
	g := s.cur
	if g == nil || s.removing {
		return
	}
	h := g.cfg.Supervisor.Health
	for _, sl := range g.slots {
		if sl.inst == nil || sl.probing || sl.dying {
			continue
		}
		sl.probing = true
		inst := *sl.inst
		s.goOp("probe", g, func() result {
			err := probe(s.r.ctx, &sl.probe, inst.Endpoint, h)
			return result{kind: resProbed, gen: g, slot: sl, inst: inst, err: err}
		})
	}
}

// onProbe applies one probe: failures consecutive failures make the instance a crash; a
// failing instance leaves the rotation while another one serves; a good probe brings it
// back and, once the generation has been healthy for long enough, forgets past crashes.
func (s *supervisor) onProbe(g *generation, sl *slot, res result) {
	if g.gone || sl.dropped || sl.dying || sl.inst == nil || sl.inst.ID != res.inst.ID {
		sl.probe.Close() // its instance is gone; a new one gets a new connection
		return
	}
	if res.err == nil {
		s.r.router.Alive(s.name, sl.inst.ID)
		if sl.probeFails > 0 {
			s.r.log.Info("plugin healthy again", "plugin", s.name, "replica", sl.idx)
			sl.healthySince = time.Now()
		}
		sl.probeFails, sl.ready = 0, true
		s.checkStable(g)
		s.refresh()
		return
	}
	if s.r.ctx.Err() != nil {
		return
	}
	h := g.cfg.Supervisor.Health
	sl.probeFails++
	sl.healthySince = time.Time{}
	s.r.publish(Event{Type: EventProbeFailed, Plugin: s.name, Message: res.err.Error()})
	s.r.log.Warn("health probe failed", "plugin", s.name, "replica", sl.idx, "failures", sl.probeFails, "of", h.Failures, "err", res.err)
	if sl.probeFails >= h.Failures {
		s.crashed(g, sl, crash{reason: fmt.Sprintf("health check failed %d times: %v", sl.probeFails, res.err)})
		return
	}
	if len(g.ready()) > 1 {
		sl.ready = false // the others serve meanwhile
	}
	s.refresh()
}

// closeProbe closes sl's kept probe connection, unless a probe uses it: that probe's
// result closes it.
func closeProbe(sl *slot) {
	if !sl.probing {
		sl.probe.Close()
	}
}

// checkStable forgets past crashes once every instance of g that runs has been healthy
// for long enough to outlast a maximal backoff, and gives slots that were given up on
// another chance.
func (s *supervisor) checkStable(g *generation) {
	after := stableAfter(g.cfg.Supervisor.Restart)
	for _, sl := range g.slots {
		if sl.down {
			continue
		}
		if !sl.ready || sl.healthySince.IsZero() || time.Since(sl.healthySince) < after {
			return
		}
	}
	if len(s.budget.crashes) == 0 {
		return
	}
	s.budget.stable()
	for _, sl := range g.slots {
		if sl.down {
			sl.down, sl.restarted = false, true
			s.startSlot(g, sl)
		}
	}
}

// crashed takes sl's instance out of the route, removes it, and either schedules a
// fresh instance after the backoff or gives the slot up; the plugin fails when no slot
// serves or will.
func (s *supervisor) crashed(g *generation, sl *slot, c crash) {
	inst := sl.inst
	sl.inst, sl.ready, sl.dying, sl.probeFails, sl.healthySince = nil, false, false, 0, time.Time{}
	sl.lastExit = c.reason
	if inst != nil {
		// Off the loop: a hung instance may take its stop_timeout.
		closeProbe(sl)
		s.dispose(g, *inst, g.cfg.Supervisor.StopTimeout)
	}
	s.r.publish(Event{Type: EventCrash, Plugin: s.name, Reason: c.reason})
	restart, delay, why := s.budget.decide(c, time.Now())
	if restart {
		s.r.log.Warn("plugin crashed; restarting", "plugin", s.name, "replica", sl.idx, "reason", c.reason, "in", delay.Round(time.Millisecond))
		sl.restarted = true
		s.armBackoff(g, sl, delay)
		s.update(func(st *Status) { st.LastExit = c.reason })
		s.refresh()
		return
	}
	sl.down = true
	for _, o := range g.slots {
		if o.ready || o.starting || o.adopting || o.backoff != nil {
			s.r.log.Error("instance given up; the others serve", "plugin", s.name, "replica", sl.idx, "reason", why)
			s.update(func(st *Status) { st.LastError = why })
			s.refresh()
			return
		}
	}
	s.fail(why, g.d.Hash)
	s.update(func(st *Status) { st.LastExit = c.reason })
	s.refresh()
}

package runner

import (
	"context"
	"fmt"
	"time"

	"github.com/docker/go-units"

	"github.com/xcore/runner/sandbox"
)

// This file is supervision: noticing that the serving container died or stopped
// answering, and restarting it — a NEW container of the same spec, never `docker
// restart` of a poisoned one — within the restart {} budget.

// onEvent handles a die/oom of one of the plugin's containers. Only the serving
// container matters: old generations die because we stop them.
func (s *supervisor) onEvent(ctx context.Context, ev sandbox.Event) {
	if s.cur == nil || ev.ContainerID != s.cur.ctr.ID {
		return
	}
	switch ev.Kind {
	case sandbox.EventOOM:
		s.r.log.Warn("plugin hit its memory limit", "plugin", s.name, "container", s.cur.ctr.Name)
	case sandbox.EventDie:
		s.crashed(ctx, s.exitCrash(ctx, ev.ExitCode))
	}
}

// exitCrash reads the dead container's state: the engine's OOMKilled flag is the truth
// about an OOM kill (exit code 137 alone could be any SIGKILL).
func (s *supervisor) exitCrash(ctx context.Context, code int) crash {
	if c, err := s.r.sb.Inspect(ctx, s.cur.ctr.ID); err == nil {
		if c.OOMKilled {
			return crash{reason: fmt.Sprintf("OOM killed (memory limit %s, exit code %d)", units.BytesSize(float64(s.cur.d.Spec.Memory)), c.ExitCode)}
		}
		code = c.ExitCode
	}
	return crash{reason: fmt.Sprintf("exit code %d", code), clean: code == 0}
}

// alive checks with the engine that the serving container still runs; if not, it is
// handled as a crash and alive reports false.
func (s *supervisor) alive(ctx context.Context) bool {
	c, err := s.r.sb.Inspect(ctx, s.cur.ctr.ID)
	if err == nil && c.Running {
		return true
	}
	if err != nil {
		s.crashed(ctx, crash{reason: "container vanished"})
	} else {
		s.crashed(ctx, s.exitCrash(ctx, c.ExitCode))
	}
	return false
}

// checkHealth runs one probe of the serving container. failures consecutive failures
// make it unhealthy: it is replaced by a fresh container.
func (s *supervisor) checkHealth(ctx context.Context) {
	if s.cur == nil {
		return
	}
	h := s.cur.cfg.Supervisor.Health
	published := s.r.config().Runner.Reach != "address"
	err := probe(ctx, &s.probeConn, s.cur.ctr.Endpoint, h, published)
	if err == nil {
		if s.probeFails > 0 {
			s.r.log.Info("plugin healthy again", "plugin", s.name)
			s.update(func(st *Status) { st.State = StateHealthy })
		}
		s.probeFails = 0
		if !s.healthySince.IsZero() && time.Since(s.healthySince) >= stableAfter(s.cur.cfg.Supervisor.Restart) {
			s.budget.stable()
			s.healthySince = time.Time{} // reset once per recovery
		}
		return
	}
	if ctx.Err() != nil {
		return
	}
	s.probeFails++
	s.r.publish(Event{Type: EventProbeFailed, Plugin: s.name, Message: err.Error()})
	s.r.log.Warn("health probe failed", "plugin", s.name, "failures", s.probeFails, "of", h.Failures, "err", err)
	if s.probeFails < h.Failures {
		s.update(func(st *Status) { st.State = StateUnhealthy })
		return
	}
	s.crashed(ctx, crash{reason: fmt.Sprintf("health check failed %d times: %v", s.probeFails, err)})
}

// crashed takes the serving container out of the route, removes it and either
// schedules a restart after the backoff or marks the plugin failed.
func (s *supervisor) crashed(ctx context.Context, c crash) {
	old := s.cur
	s.cur = nil
	s.probeFails, s.healthySince = 0, time.Time{}
	s.r.publish(Event{Type: EventCrash, Plugin: s.name, Reason: c.reason})
	restart, delay, why := s.budget.decide(c, time.Now())
	if restart {
		s.r.router.SetNotReady(s.name, "restarting after "+c.reason)
	} else {
		s.r.router.SetNotReady(s.name, "failed: "+why)
	}
	// Remove the dead or unhealthy container off the supervisor's path: a hung one may
	// take its stop_timeout, and the restart must not wait for it.
	if ctr, grace := old.ctr, old.cfg.Supervisor.StopTimeout; ctr.ID != "" {
		s.r.wg.Go(func() { s.r.removeContainer(ctr, grace) })
	}

	if !restart {
		s.failed = old.d.Hash
		s.diedFailed = time.Now()
		s.r.log.Error("plugin failed; not restarting until its config changes or it is restarted", "plugin", s.name, "reason", why)
		s.update(func(st *Status) { st.State, st.LastError, st.LastExit = StateFailed, why, c.reason })
		return
	}
	s.r.log.Warn("plugin crashed; restarting", "plugin", s.name, "reason", c.reason, "in", delay.Round(time.Millisecond))
	s.update(func(st *Status) { st.State, st.LastExit = StateRestarting, c.reason })
	s.restartTimer = time.NewTimer(delay)
}

// restart starts a fresh container of the desired state after a backoff. A start that
// fails counts as one more crash.
func (s *supervisor) restart(ctx context.Context) {
	w := s.want
	if w == nil || s.cur != nil {
		return
	}
	inst, err := s.startGeneration(ctx, w)
	if err != nil {
		if ctx.Err() != nil {
			return
		}
		s.cur = &instance{d: w.d, cfg: w.cfg} // nothing runs; crashed() needs the config
		s.crashed(ctx, crash{reason: err.Error()})
		return
	}
	s.update(func(st *Status) { st.Restarts++ })
	s.promote(inst, "")
	s.r.publish(Event{Type: EventRestart, Plugin: s.name})
	s.r.log.Info("plugin restarted", "plugin", s.name, "generation", inst.gen)
}

func (s *supervisor) stopRestartTimer() {
	if s.restartTimer != nil {
		s.restartTimer.Stop()
		s.restartTimer = nil
	}
}

// restartNow is an explicit restart: start-first replacement by a fresh container of
// the same spec, or — for a failed or restarting plugin — a start with a fresh budget.
func (s *supervisor) restartNow(ctx context.Context) {
	w := s.want
	if w == nil || w.d.Err != nil {
		return
	}
	s.r.log.Info("restart requested", "plugin", s.name)
	if s.cur != nil {
		s.replace(ctx, w, "restart requested")
		return
	}
	s.stopRestartTimer()
	s.failed, s.diedFailed = "", time.Time{}
	s.budget = newRestartBudget(w.cfg.Supervisor.Restart)
	s.apply(ctx, w)
}

package runner

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/sethvargo/go-retry"

	"github.com/xcore/runner/config"
	"github.com/xcore/runner/sandbox"
	"github.com/xcore/runner/snapshot"
)

// This file is the supervisor's long work: each piece runs in a goroutine of the
// runner's owner and reports one result to the loop, which decides what follows.

type resultKind int

const (
	resStarted  resultKind = iota // an instance started and answered (or did not)
	resAdopted                    // a previous runner's instance answered its probe (or did not)
	resProbed                     // one health probe
	resDied                       // the reason of a death the engine reported
	resGone                       // an instance was stopped and removed
	resBackoff                    // a slot's restart backoff is over
	resPanicked                   // the goroutine panicked
	resScaled                     // a cluster scaled a generation (ids: the instances it stops)
)

type result struct {
	kind  resultKind
	gen   *generation
	slot  *slot
	inst  sandbox.Instance
	err   error
	crash crash
	ids   []string
	n     int // resScaled: the size asked for
}

// goOp runs f for generation g in a goroutine of the runner's owner; its result goes to
// the loop. A panic becomes a resPanicked result.
func (s *supervisor) goOp(what string, g *generation, f func() result) {
	s.ops++
	if g != nil {
		g.ops++
	}
	s.r.owner.Go(what+" of "+s.name, func() {
		if res := f(); !s.report(res) && res.kind == resProbed {
			res.slot.probe.Close() // nobody else will: the loop is gone
		}
	}, func(err error) { s.report(result{kind: resPanicked, gen: g, err: err}) })
}

// report hands a result to the loop, or drops it once the loop has returned (the
// runner is shutting down and removes every instance by label); false if dropped.
func (s *supervisor) report(res result) bool {
	select {
	case s.results <- res:
		return true
	case <-s.quit:
		return false
	}
}

// startSlot starts an instance in sl: created, started, and healthy within
// start_timeout, else removed and reported as failed.
func (s *supervisor) startSlot(g *generation, sl *slot) {
	sl.starting, sl.began = true, time.Now()
	s.warnRoot(g.cfg)
	spec := containerSpec(g.cfg, g.d, g.num, sl.idx)
	pc, n := g.cfg, len(g.slots)
	s.goOp("start", g, func() result {
		inst, err := s.r.startSlotInstance(g.ctx, spec, pc, n)
		return result{kind: resStarted, gen: g, slot: sl, inst: inst, err: err}
	})
}

// dropSlot takes a slot out of g (scaled away): its instance drains and goes.
func (s *supervisor) dropSlot(g *generation, sl *slot) {
	sl.dropped = true
	s.stopBackoff(g, sl)
	closeProbe(sl)
	if sl.inst != nil {
		inst := *sl.inst
		sl.inst, sl.ready = nil, false
		s.drainAndDispose(g, inst)
	}
}

// retire takes g out of service: starts under way are cancelled, backoffs stopped, and
// each instance drains (the caller has moved the route away) and goes. The generation
// is forgotten once nothing works on it any more.
func (s *supervisor) retire(g *generation) {
	if g.gone {
		return
	}
	g.gone = true
	g.cancel()
	for _, sl := range g.slots {
		s.stopBackoff(g, sl)
		closeProbe(sl)
		if sl.inst != nil {
			inst := *sl.inst
			sl.inst, sl.ready = nil, false
			s.drainAndDispose(g, inst)
		}
	}
	s.old = append(s.old, g)
	s.finishIfGone(g)
}

// drainAndDispose waits until the proxy released inst (nothing in flight, out of the
// route) or drain_timeout, then stops and removes it.
func (s *supervisor) drainAndDispose(g *generation, inst sandbox.Instance) {
	sup := g.cfg.Supervisor
	s.goOp("drain", g, func() result {
		s.r.drain(s.name, inst, sup.DrainTimeout)
		s.r.removeInstance(inst, sup.StopTimeout)
		return result{kind: resGone, gen: g, inst: inst}
	})
}

// dispose stops and removes inst at once (dead, unhealthy or never routed).
func (s *supervisor) dispose(g *generation, inst sandbox.Instance, grace time.Duration) {
	s.goOp("remove", g, func() result {
		s.r.removeInstance(inst, grace)
		return result{kind: resGone, gen: g, inst: inst}
	})
}

// stopBackoff disarms sl's restart timer; a timer stopped before it fired reports
// nothing, so it is no longer counted.
func (s *supervisor) stopBackoff(g *generation, sl *slot) {
	if sl.backoff != nil && sl.backoff.Stop() {
		s.ops--
		g.ops--
	}
	sl.backoff = nil
}

// armBackoff starts sl again after delay.
func (s *supervisor) armBackoff(g *generation, sl *slot, delay time.Duration) {
	s.ops++
	g.ops++
	sl.backoff = time.AfterFunc(delay, func() { s.report(result{kind: resBackoff, gen: g, slot: sl}) })
}

// finishIfGone forgets a retired generation that nothing works on any more, and
// reports the replacement that retired it as done.
func (s *supervisor) finishIfGone(g *generation) {
	if !g.gone || g.ops > 0 || s.removeUnit(g) {
		return
	}
	s.old = slices.DeleteFunc(s.old, func(o *generation) bool { return o == g })
	s.setOwned(g.num, false)
	if n := g.replacedBy; n != nil {
		g.replacedBy = nil
		s.r.log.Info("replaced plugin", "plugin", s.name, "from", g.num, "to", n.num, "took", time.Since(n.begin).Round(time.Millisecond))
		s.r.publish(Event{Type: EventReplaced, Plugin: s.name, Reason: n.reason, Duration: time.Since(n.begin)})
	}
}

// onResult applies what a goroutine reports.
func (s *supervisor) onResult(ctx context.Context, res result) {
	g := res.gen
	if g != nil {
		g.ops--
	}
	s.decide(ctx, res)
	if g != nil {
		s.finishIfGone(g)
	}
	s.settleIfDecided()
}

func (s *supervisor) decide(ctx context.Context, res result) {
	g, sl := res.gen, res.slot
	switch res.kind {
	case resPanicked:
		s.fail("internal error (see log)", "")
		s.refresh()
	case resGone:
	case resScaled:
		s.onScaled(g, res)
	case resBackoff:
		sl.backoff = nil
		if !g.gone && !sl.dropped && s.failReason == "" {
			s.startSlot(g, sl)
			s.refresh()
		}
	case resStarted:
		sl.starting = false
		s.onStarted(ctx, g, sl, res)
	case resAdopted:
		sl.adopting = false
		s.onAdopted(g, sl, res)
	case resProbed:
		sl.probing = false
		s.onProbe(g, sl, res)
	case resDied:
		switch {
		case sl.inst == nil || sl.inst.ID != res.inst.ID || g.gone || sl.dropped:
		case g == s.next:
			// The new generation lost an instance before it served: its start failed.
			s.replaceFailed(errors.New(res.crash.reason))
			s.refresh()
		default:
			s.crashed(g, sl, res.crash)
		}
	}
}

func (s *supervisor) onStarted(ctx context.Context, g *generation, sl *slot, res result) {
	if g.gone || sl.dropped || s.removing {
		if res.err == nil {
			s.dispose(g, res.inst, g.cfg.Supervisor.StopTimeout)
		}
		return
	}
	if res.err != nil {
		if ctx.Err() != nil {
			return
		}
		if g == s.next {
			s.replaceFailed(res.err)
		} else {
			// A plugin that dies on start is a crash like any other: restarted within
			// its budget, then failed.
			s.crashed(g, sl, crash{reason: res.err.Error()})
		}
		s.refresh()
		return
	}
	inst := res.inst
	sl.inst, sl.knownAt, sl.ready, sl.probeFails, sl.healthySince = &inst, time.Now(), true, 0, time.Now()
	s.r.log.Info("plugin ready", "plugin", s.name, "generation", g.num, "replica", sl.idx, "endpoint", inst.Endpoint.String(), "took", time.Since(sl.began).Round(time.Millisecond))
	if sl.restarted {
		sl.restarted = false
		sl.restarts++
		s.restarts++
		s.r.publish(Event{Type: EventRestart, Plugin: s.name})
		s.r.log.Info("plugin restarted", "plugin", s.name, "generation", g.num, "replica", sl.idx)
	}
	switch {
	case g == s.next && g.allReady():
		s.promote()
	case g == s.cur:
		took := time.Since(sl.began)
		s.refresh(func(st *Status) {
			st.Took, st.Adopted = took, false
			if st.StartedAt.IsZero() || st.Generation != g.num {
				st.StartedAt = time.Now()
			}
		})
	default:
		s.refresh()
	}
}

// takeOver applies the start-up plan: the running instances of a previous runner process
// become the current generation — the one to keep when their snapshot matches, or the
// one that serves until its replacement is healthy — each once it answers its probe.
// Stale instances are removed.
func (s *supervisor) takeOver(ctx context.Context, op *Op, w *work) {
	for _, c := range op.Stale {
		s.r.log.Info("removing stale container", "plugin", s.name, "container", c.Name, "status", c.Status)
		s.dispose(nil, c, w.cfg.Supervisor.StopTimeout)
	}
	if len(op.Current) == 0 {
		return
	}
	d := w.d
	if op.Action != ActionAdopt && op.Action != ActionScale {
		old, _ := snapshot.Decode(op.Current[0].SpecLabel)
		d = Desired{Spec: old, Hash: op.Current[0].Snapshot, Replicas: len(op.Current)}
	}
	g := &generation{num: op.Current[0].Generation, d: d, cfg: w.cfg, begin: time.Now()}
	g.ctx, g.cancel = context.WithCancel(ctx)
	s.setOwned(g.num, true)
	s.cur = g
	for _, c := range op.Current {
		sl := &slot{idx: c.Replica, adopting: true}
		g.slots = append(g.slots, sl)
		inst, cfg := c, w.cfg
		s.goOp("adopt", g, func() result {
			inst, err := s.r.adoptInstance(g.ctx, s.name, inst, cfg)
			return result{kind: resAdopted, gen: g, slot: sl, inst: inst, err: err}
		})
	}
}

func (s *supervisor) onAdopted(g *generation, sl *slot, res result) {
	if g.gone || sl.dropped || s.removing {
		s.dispose(g, res.inst, g.cfg.Supervisor.StopTimeout)
		return
	}
	if res.err != nil {
		s.r.log.Info("not adopting unhealthy container", "plugin", s.name, "container", res.inst.Name, "err", res.err)
		s.dispose(g, res.inst, g.cfg.Supervisor.StopTimeout)
		if g == s.cur && s.want != nil && g.d.Hash == s.want.d.Hash && s.failReason == "" {
			s.startSlot(g, sl) // the wanted generation: a fresh instance in its place
		} else {
			sl.down = true // it only serves until its replacement is healthy
		}
		s.refresh()
		return
	}
	inst := res.inst
	sl.inst, sl.knownAt, sl.ready, sl.healthySince = &inst, time.Now(), true, time.Now()
	s.r.log.Info("adopted running container", "plugin", s.name, "generation", g.num, "container", inst.Name)
	s.refresh(func(st *Status) { st.Adopted, st.StartedAt = true, time.Now() })
}

// The runner's side of the ops: engine calls with their own bounds, never on a loop.

// startInstance creates, starts and health-checks one instance. On failure nothing of
// it is left when it returns.
func (r *Runner) startInstance(ctx context.Context, spec sandbox.Spec, pc *config.Plugin) (sandbox.Instance, error) {
	begin := time.Now()
	if err := r.sidecar.prepare(&spec); err != nil {
		r.sidecar.release(spec.Plugin, spec.Generation, spec.Replica)
		return sandbox.Instance{}, err
	}
	// A slot of runner.start_concurrency for the engine's work (create, start, inspect;
	// each call bounded in the backend), not for the health wait.
	select {
	case r.engine <- struct{}{}:
	case <-ctx.Done():
		r.sidecar.release(spec.Plugin, spec.Generation, spec.Replica)
		return sandbox.Instance{}, ctx.Err()
	}
	// Not cancelled midway: a create the client gave up on may still complete in the
	// engine and leak (nomad#11178). Run is bounded by the backend's call timeouts; an
	// instance that is no longer wanted when it returns is removed.
	inst, err := r.sb.Run(context.WithoutCancel(ctx), spec)
	<-r.engine
	if err != nil {
		r.sidecar.release(spec.Plugin, spec.Generation, spec.Replica)
		return sandbox.Instance{}, err
	}
	if ctx.Err() != nil {
		r.removeInstance(inst, pc.Supervisor.StopTimeout)
		return sandbox.Instance{}, ctx.Err()
	}
	r.log.Debug("container running", "plugin", spec.Plugin, "container", inst.Name, "after", time.Since(begin).Round(time.Millisecond))
	// start_timeout is the plugin's own start: from its container running to healthy.
	// Time queued for a slot or spent by a busy engine is not the plugin's; counted
	// against it, 200 plugins starting at once timed out, were restarted, and made the
	// engine busier still.
	sctx, cancel := context.WithTimeout(ctx, pc.Supervisor.StartTimeout)
	defer cancel()
	if err := r.waitHealthy(sctx, inst, pc); err != nil {
		r.removeInstance(inst, pc.Supervisor.StopTimeout)
		if ctx.Err() != nil {
			return sandbox.Instance{}, ctx.Err()
		}
		return sandbox.Instance{}, fmt.Errorf("start %s: %w", inst.Name, err)
	}
	return inst, nil
}

// adoptInstance takes over an instance a previous runner process started: its sidecar
// token and socket are armed again and it must answer within a few seconds.
func (r *Runner) adoptInstance(ctx context.Context, plugin string, c sandbox.Instance, pc *config.Plugin) (sandbox.Instance, error) {
	inst, err := r.sb.Inspect(ctx, c.ID)
	if err != nil {
		return c, err
	}
	if !inst.Running || inst.Endpoint.IsZero() {
		return inst, errors.New(inst.ExitReason())
	}
	r.adoptTask(inst)
	if err := r.sidecar.adopt(plugin, inst.Generation, inst.Replica, pc.Supervisor.Network == config.NetworkNone); err != nil {
		return inst, err
	}
	if err := r.probeUntil(ctx, inst, pc, 3*time.Second); err != nil {
		return inst, err // removed by the caller, which releases the sidecar
	}
	return inst, nil
}

// drain waits until the proxy has released inst (out of the route, nothing in flight),
// at most drainTimeout. When the runner shuts down it returns at once: Shutdown drains
// the proxy itself.
func (r *Runner) drain(plugin string, inst sandbox.Instance, drainTimeout time.Duration) {
	t := time.NewTimer(drainTimeout)
	defer t.Stop()
	select {
	case <-r.router.Released(plugin, inst.ID):
	case <-r.ctx.Done():
	case <-t.C:
		r.log.Warn("drain_timeout reached; stopping with requests in flight", "plugin", plugin, "container", inst.Name, "in_flight", r.router.InFlight(plugin))
	}
}

// removeInstance stops (SIGTERM, grace, SIGKILL) and removes an instance with a fresh
// context — cleanup must happen even when the caller's context is what ended — retrying
// a removal the engine refused, then revokes its sidecar token and closes its socket.
func (r *Runner) removeInstance(c sandbox.Instance, grace time.Duration) {
	ctx, cancel := context.WithTimeout(context.Background(), grace+2*time.Minute)
	defer cancel()
	if err := r.sb.Stop(ctx, c.ID, grace); err != nil {
		r.log.Warn("stop container", "container", c.Name, "err", err)
	}
	r.keepLastWords(ctx, c)
	// Removing is the engine's heavy part (stopping is waiting): bounded like starts, so
	// that a shutdown of 200 plugins does not hand dockerd 200 removals at once.
	err := retry.Do(ctx, retry.WithMaxRetries(4, retry.NewExponential(250*time.Millisecond)), func(ctx context.Context) error {
		r.engine <- struct{}{}
		err := r.sb.Remove(ctx, c.ID)
		<-r.engine
		if err != nil {
			r.log.Warn("remove container; retrying", "container", c.Name, "err", err)
			return retry.RetryableError(err)
		}
		return nil
	})
	if err != nil {
		r.log.Error("remove container; the next resync tries again", "container", c.Name, "err", err)
	}
	if r.sidecar != nil && c.Plugin != "" {
		r.sidecar.release(c.Plugin, c.Generation, c.Replica)
	}
	r.forgetGone(c.ID)
	r.cl.unclaim(c)
}

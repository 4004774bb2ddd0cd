package runner

import (
	"context"
	"fmt"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/xcore/runner/config"
	"github.com/xcore/runner/proxy"
	"github.com/xcore/runner/sandbox"
	"github.com/xcore/runner/snapshot"
)

// supervisor owns one plugin: one goroutine (run) holds its containers and decides what
// happens to them; everything else talks to it through submit, a latest-wins mailbox,
// and reads its Status. Nothing else mutates a plugin's state.
type supervisor struct {
	r    *Runner
	name string

	mu         sync.Mutex
	status     Status
	pending    *work
	restartReq bool          // an explicit restart was requested
	engineLost time.Time     // the engine went away then: revive a plugin that died around it
	wake       chan struct{} // 1-slot: "pending changed"
	settled    chan struct{} // closed after the first apply (ready or failed)
	once       sync.Once
	done       chan struct{}   // closed when run returns
	after      <-chan struct{} // a predecessor of the same name that must be gone first

	events chan sandbox.Event // die/oom of this plugin's containers

	// Owned by the run goroutine.
	cur    *instance
	want   *work  // the desired state last applied: what a restart starts again
	adopt  *Op    // the start-up plan for this plugin, consumed by the first apply
	failed string // snapshot hash whose start failed: not retried until the desired state changes

	budget       *restartBudget
	restartTimer *time.Timer // armed while waiting out a backoff
	probeFails   int         // consecutive failed health probes of cur
	probeConn    probeConn   // the health probes' connection to cur, kept between probes
	healthySince time.Time
	diedFailed   time.Time // when a death left the plugin failed (restart policy, budget)
}

// work is one request to the supervisor: converge on d, or remove the plugin.
type work struct {
	cfg    *config.Plugin
	d      Desired
	remove bool
	verify bool // re-observe: check with the engine that the serving container still runs
}

// instance is a container that serves (or served) the plugin.
type instance struct {
	ctr sandbox.Container
	gen int
	d   Desired
	cfg *config.Plugin
}

// newSupervisor: adopt is the start-up plan for the plugin (nil for a plugin added
// later); after, if not nil, is closed when a predecessor of the same name (removed
// from the config just before) has drained and gone, so the two never fight over the
// route.
func newSupervisor(r *Runner, name string, adopt *Op, after <-chan struct{}) *supervisor {
	return &supervisor{
		r: r, name: name, adopt: adopt, after: after,
		status: Status{Name: name, State: StatePending},
		wake:   make(chan struct{}, 1), settled: make(chan struct{}), done: make(chan struct{}),
		events: make(chan sandbox.Event, 16),
	}
}

// notify hands an engine event to the supervisor without blocking the event stream: a
// full queue drops it, and the health probes and the next resync notice instead.
func (s *supervisor) notify(ev sandbox.Event) {
	select {
	case s.events <- ev:
	default:
		s.r.log.Warn("event queue full; dropping", "plugin", s.name, "event", ev.Kind)
	}
}

// post records a request for the run goroutine (set under mu) and wakes it; take
// collects everything posted since.
func (s *supervisor) post(set func()) {
	s.mu.Lock()
	set()
	s.mu.Unlock()
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

// submit replaces whatever the supervisor has not started on yet: a burst of config
// saves converges on the last one instead of replaying every intermediate state.
func (s *supervisor) submit(w work) {
	s.post(func() { s.pending = &w })
}

func (s *supervisor) take() (w *work, restart bool, engineLost time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	w, restart, engineLost = s.pending, s.restartReq, s.engineLost
	s.pending, s.restartReq, s.engineLost = nil, false, time.Time{}
	return w, restart, engineLost
}

// engineBack tells the supervisor that the engine went away at lost and is back.
func (s *supervisor) engineBack(lost time.Time) {
	s.post(func() { s.engineLost = lost })
}

// engineDeathWindow: a plugin left failed by a death this long before the engine went
// away is revived when it comes back. A stopping dockerd stops every container (SIGTERM,
// each its stop timeout) before its API goes: the plugins exit, cleanly or not, and that
// is no verdict on them.
const engineDeathWindow = time.Minute

// requestRestart asks for a fresh container (admin API, `runner restart`).
func (s *supervisor) requestRestart() {
	s.post(func() { s.restartReq = true })
}

func (s *supervisor) snapshot() Status {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.status
}

func (s *supervisor) update(f func(*Status)) {
	s.mu.Lock()
	f(&s.status)
	st := s.status
	s.mu.Unlock()
	s.r.emit(st)
}

func (s *supervisor) run(ctx context.Context) {
	defer close(s.done)
	defer s.once.Do(func() { close(s.settled) })
	defer s.stopRestartTimer()
	defer s.probeConn.Close()
	if s.after != nil {
		select {
		case <-s.after:
		case <-ctx.Done():
			return
		}
	}
	health := time.NewTicker(time.Hour)
	defer health.Stop()
	interval := time.Duration(0)
	for {
		// The probe interval is a runner-side setting: it follows the live config.
		if s.cur != nil && s.cur.cfg.Supervisor.Health.Interval != interval {
			interval = s.cur.cfg.Supervisor.Health.Interval
			health.Reset(interval)
		}
		var restartC <-chan time.Time
		if s.restartTimer != nil {
			restartC = s.restartTimer.C
		}
		select {
		case <-ctx.Done():
			return // the runner's Shutdown stops containers by label
		case <-s.wake:
			w, restart, engineLost := s.take()
			if w != nil && w.remove {
				s.removePlugin(ctx)
				return
			}
			if w != nil {
				s.apply(ctx, w)
				s.once.Do(func() { close(s.settled) })
			}
			if !engineLost.IsZero() && s.cur == nil && !s.diedFailed.IsZero() &&
				s.diedFailed.After(engineLost.Add(-engineDeathWindow)) {
				s.r.log.Info("restarting a plugin that died as the Docker engine went away", "plugin", s.name)
				restart = true
			}
			if restart {
				s.restartNow(ctx)
			}
		case ev := <-s.events:
			s.onEvent(ctx, ev)
		case <-health.C:
			s.checkHealth(ctx)
		case <-restartC:
			s.restartTimer = nil
			s.restart(ctx)
		}
	}
}

// apply converges the plugin on w: start, adopt, replace start-first, or only update
// the runner-side settings of what runs.
func (s *supervisor) apply(ctx context.Context, w *work) {
	var stale []sandbox.Container
	if op := s.adopt; op != nil {
		s.adopt = nil
		stale = s.takeOver(ctx, op, w)
	}
	defer s.removeStale(stale)
	if s.want == nil || s.want.d.Hash != w.d.Hash || s.want.cfg.Supervisor.Restart != w.cfg.Supervisor.Restart {
		s.budget = newRestartBudget(w.cfg.Supervisor.Restart)
	}
	if s.want != nil && s.want.d.Hash != w.d.Hash && s.restartTimer != nil {
		s.stopRestartTimer() // the change below starts what is wanted now
	}
	s.want = w
	if w.verify && s.cur != nil && s.cur.d.Hash == w.d.Hash && !s.alive(ctx) {
		return // it died unnoticed (e.g. while the event stream was down): restarting
	}

	switch {
	case w.d.Err != nil && s.cur == nil:
		s.fail(w.d.Err)
	case w.d.Err != nil:
		// Keep serving what runs: a tag that vanished is no reason to stop a plugin.
		s.r.log.Error("cannot apply change; current generation keeps serving", "plugin", s.name, "err", w.d.Err)
		s.update(func(st *Status) { st.LastError = w.d.Err.Error() })
	case s.restartTimer != nil:
		// A restart is pending with this very desired state: the timer does it.
	case w.d.Hash == s.failed && (s.cur == nil || s.cur.d.Hash != w.d.Hash):
		// Reloads and engine events re-submit the same desired state; a start that
		// failed is retried on the next change, not on every wake-up.
		s.r.log.Debug("desired state already failed; waiting for a change", "plugin", s.name)
	case s.cur == nil:
		inst, err := s.startGeneration(ctx, w)
		if err != nil {
			if ctx.Err() == nil {
				// A plugin that dies on start is a crash like any other: restarted
				// within its budget, then failed.
				s.cur = &instance{d: w.d, cfg: w.cfg}
				s.crashed(ctx, crash{reason: err.Error()})
			}
			return
		}
		s.promote(inst, "")
	case s.cur.d.Hash == w.d.Hash:
		// Same container; timeouts, limits and health apply live.
		old := s.cur.cfg
		s.cur.cfg = w.cfg
		if backendFor(s.cur) != keyOf(backendSettings(old, s.cur)) {
			s.route(s.cur)
			s.r.log.Info("runner-side settings applied live", "plugin", s.name, "generation", s.cur.gen)
		}
	default:
		s.replace(ctx, w, snapshot.Diff(s.cur.d.Spec, w.d.Spec).String())
	}
}

// replace runs the start-first sequence: new generation up and healthy, route swapped,
// old generation drained, stopped and removed. If the new one fails, the old one keeps
// serving and the failure is recorded; the next change retries.
func (s *supervisor) replace(ctx context.Context, w *work, reason string) {
	if reason == "" {
		reason = "snapshot changed"
	}
	begin := time.Now()
	s.r.log.Info("replacing plugin", "plugin", s.name, "generation", s.cur.gen, "reason", reason)
	s.r.publish(Event{Type: EventReplacing, Plugin: s.name, Reason: reason})
	inst, err := s.startGeneration(ctx, w)
	if err != nil {
		if ctx.Err() != nil {
			return
		}
		s.failed = w.d.Hash
		msg := fmt.Sprintf("replacement failed, generation %d keeps serving: %v", s.cur.gen, err)
		s.r.log.Error("replacement failed; current generation keeps serving", "plugin", s.name, "generation", s.cur.gen, "err", err)
		s.r.publish(Event{Type: EventReplaceFail, Plugin: s.name, Reason: reason, Message: msg, Duration: time.Since(begin)})
		s.update(func(st *Status) { st.LastError = msg })
		return
	}
	old := s.cur
	s.promote(inst, reason)
	s.retire(ctx, old)
	s.r.log.Info("replaced plugin", "plugin", s.name, "from", old.gen, "to", inst.gen, "took", time.Since(begin).Round(time.Millisecond))
	s.r.publish(Event{Type: EventReplaced, Plugin: s.name, Reason: reason, Duration: time.Since(begin)})
}

// promote makes inst the serving generation.
func (s *supervisor) promote(inst *instance, reason string) {
	s.cur, s.failed, s.diedFailed = inst, "", time.Time{}
	s.probeFails, s.healthySince = 0, time.Now()
	s.route(inst)
	s.update(func(st *Status) {
		st.State, st.Generation, st.Container, st.Endpoint = StateHealthy, inst.gen, inst.ctr.ID, inst.ctr.Endpoint
		st.Image, st.ImageID, st.Snapshot = inst.d.Spec.ImageRef, inst.d.Spec.ImageID, inst.d.Hash
		st.StartedAt, st.LastError = time.Now(), ""
		if reason != "" {
			st.LastChange = reason
		}
	})
}

// fail marks a plugin that cannot start at all (its desired state cannot be computed).
func (s *supervisor) fail(err error) {
	s.r.router.SetNotReady(s.name, "failed: "+err.Error())
	s.r.log.Error("plugin failed to start", "plugin", s.name, "err", err)
	s.update(func(st *Status) { st.State, st.LastError = StateFailed, err.Error() })
}

// backendSettings is the proxy's view of inst under plugin config cfg.
func backendSettings(cfg *config.Plugin, inst *instance) proxy.Backend {
	sup := cfg.Supervisor
	u := &url.URL{Scheme: "http", Host: inst.ctr.Endpoint}
	if sock, ok := strings.CutPrefix(inst.ctr.Endpoint, "unix:"); ok {
		u = &url.URL{Scheme: "unix", Path: sock}
	}
	return proxy.Backend{
		URL: u, Generation: inst.gen,
		RequestTimeout: sup.RequestTimeout, MaxConcurrent: sup.MaxConcurrent, MaxBody: sup.MaxBody,
	}
}

// backendKey is backendSettings without the pointer, so two can be compared.
type backendKey struct {
	url          string
	gen, maxConc int
	timeout      time.Duration
	maxBody      int64
}

func backendFor(inst *instance) backendKey { return keyOf(backendSettings(inst.cfg, inst)) }

func keyOf(b proxy.Backend) backendKey {
	return backendKey{b.URL.String(), b.Generation, b.MaxConcurrent, b.RequestTimeout, b.MaxBody}
}

func (s *supervisor) route(inst *instance) {
	s.r.router.SetReady(s.name, backendSettings(inst.cfg, inst))
}

// startGeneration creates, starts and health-checks a new generation of w. On failure
// the container is gone when it returns.
func (s *supervisor) startGeneration(ctx context.Context, w *work) (*instance, error) {
	begin := time.Now()
	gen := s.r.allocGeneration(s.name)
	if s.cur == nil && s.snapshot().State != StateRestarting {
		// (a restart keeps saying "restarting after <reason>" until it serves)
		s.r.router.SetNotReady(s.name, "starting")
		s.update(func(st *Status) { st.State, st.Generation = StateStarting, gen })
	}
	pc := w.cfg
	if pc.Supervisor.AllowRoot && runsAsRoot(pc.Supervisor.User) {
		s.r.log.Warn("plugin runs as root (allow_root = true): a container escape would be root on the host", "plugin", s.name, "user", pc.Supervisor.User)
	}
	spec := containerSpec(pc, w.d, gen)
	if err := s.r.sidecar.prepare(&spec); err != nil {
		s.r.sidecar.release(s.name, gen)
		return nil, err
	}
	// A slot of runner.start_concurrency for the engine's work (create, start, inspect;
	// each call bounded in sandbox), not for the health wait.
	select {
	case s.r.engine <- struct{}{}:
	case <-ctx.Done():
		s.r.sidecar.release(s.name, gen)
		return nil, ctx.Err()
	}
	ctr, err := s.r.sb.Run(ctx, spec)
	<-s.r.engine
	if err != nil {
		s.r.sidecar.release(s.name, gen)
		return nil, err
	}
	// start_timeout is the plugin's own start: from its container running to healthy.
	// Time queued for a slot or spent by a busy engine is not the plugin's; counted
	// against it, 200 plugins starting at once timed out, were restarted, and made the
	// engine busier still.
	sctx, cancel := context.WithTimeout(ctx, pc.Supervisor.StartTimeout)
	defer cancel()
	if spec.RunDir != "" {
		ctr.Endpoint = unixEndpoint(spec.RunDir)
	}
	s.r.log.Debug("container running", "plugin", s.name, "container", ctr.Name, "after", time.Since(begin).Round(time.Millisecond))
	if err := s.r.waitHealthy(sctx, ctr, pc); err != nil {
		s.r.removeContainer(ctr, pc.Supervisor.StopTimeout)
		return nil, fmt.Errorf("start %s: %w", ctr.Name, err)
	}
	took := time.Since(begin)
	s.update(func(st *Status) { st.Took, st.Adopted = took, false })
	s.r.log.Info("plugin ready", "plugin", s.name, "generation", gen, "endpoint", ctr.Endpoint, "took", took.Round(time.Millisecond))
	return &instance{ctr: ctr, gen: gen, d: w.d, cfg: pc}, nil
}

// retire drains old (until nothing of its generation is in flight, at most
// drain_timeout), then stops and removes it. When the runner shuts down meanwhile it
// returns at once: Shutdown drains the proxy and removes every container itself.
func (s *supervisor) retire(ctx context.Context, old *instance) {
	sup := old.cfg.Supervisor
	deadline := time.Now().Add(sup.DrainTimeout)
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for s.r.router.InFlightGeneration(s.name, old.gen) > 0 && time.Now().Before(deadline) {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
	if n := s.r.router.InFlightGeneration(s.name, old.gen); n > 0 {
		s.r.log.Warn("drain_timeout reached; stopping with requests in flight", "plugin", s.name, "generation", old.gen, "in_flight", n)
	}
	s.r.removeContainer(old.ctr, sup.StopTimeout)
}

// removePlugin: the plugin left the config. New requests get 404, in-flight ones
// finish (up to drain_timeout), then the container goes.
func (s *supervisor) removePlugin(ctx context.Context) {
	s.r.router.Remove(s.name)
	if s.cur != nil {
		s.retire(ctx, s.cur)
		s.cur = nil
	}
	for _, c := range s.takeStale() {
		s.r.removeContainer(c, 10*time.Second)
	}
	s.r.log.Info("plugin removed", "plugin", s.name)
	s.update(func(st *Status) { st.State = StateStopped })
}

func (s *supervisor) takeStale() []sandbox.Container {
	if op := s.adopt; op != nil {
		s.adopt = nil
		all := op.Stale
		if op.Current != nil {
			all = append(all, *op.Current)
		}
		return all
	}
	return nil
}

// takeOver applies the start-up plan: a running container of a previous runner process
// is taken over when it answers its health check — as the generation to keep when its
// snapshot matches, or as the one that serves until its replacement is healthy. It
// returns the containers to remove once the plugin serves.
func (s *supervisor) takeOver(ctx context.Context, op *Op, w *work) []sandbox.Container {
	stale := op.Stale
	if op.Current == nil {
		return stale
	}
	ctr, err := s.r.sb.Inspect(ctx, op.Current.ID)
	if err == nil && ctr.Running && w.cfg.Supervisor.Network == config.NetworkNone {
		ctr.Endpoint, err = s.r.sidecar.adopt(s.name, ctr.Generation, true)
	} else if err == nil && ctr.Running {
		_, err = s.r.sidecar.adopt(s.name, ctr.Generation, false)
	}
	if err == nil && ctr.Running && ctr.Endpoint != "" {
		if err = s.r.probeUntil(ctx, ctr, w.cfg, 3*time.Second); err == nil {
			d := w.d
			if op.Action != ActionAdopt {
				old, _ := snapshot.Decode(ctr.SpecLabel)
				d = Desired{Spec: old, Hash: ctr.Snapshot}
			}
			s.cur = &instance{ctr: ctr, gen: ctr.Generation, d: d, cfg: w.cfg}
			s.route(s.cur)
			s.update(func(st *Status) {
				st.State, st.Generation, st.Container, st.Endpoint = StateHealthy, ctr.Generation, ctr.ID, ctr.Endpoint
				st.Image, st.ImageID, st.Snapshot, st.Adopted = d.Spec.ImageRef, ctr.ImageID, ctr.Snapshot, true
				st.StartedAt = time.Now()
			})
			s.r.log.Info("adopted running container", "plugin", s.name, "generation", ctr.Generation, "container", ctr.Name)
			return stale
		}
	}
	s.r.log.Info("not adopting unhealthy container", "plugin", s.name, "container", op.Current.Name, "err", err)
	return append(stale, *op.Current)
}

func (s *supervisor) removeStale(ctrs []sandbox.Container) {
	for _, c := range ctrs {
		s.r.log.Info("removing stale container", "plugin", s.name, "container", c.Name, "status", c.Status)
		s.r.removeContainer(c, s.r.stopTimeout(s.name))
	}
}

// runsAsRoot reports whether a container user spec ("uid[:gid]" or a name) is root.
func runsAsRoot(user string) bool {
	u, _, _ := strings.Cut(user, ":")
	return u == "0" || u == "root"
}

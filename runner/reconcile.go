package runner

import (
	"context"
	"fmt"
	"net/http"
	"net/netip"
	"reflect"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/xcore/runner/config"
	"github.com/xcore/runner/sandbox"
	"github.com/xcore/runner/services"
)

// resyncInterval is the slow periodic re-observation: one List by label, which catches
// what no event reported and collects orphans.
const resyncInterval = time.Minute

// orphanGrace: an instance carrying our labels that no supervisor holds is removed only
// once it is this old, so that the sweep never races a create in flight.
const orphanGrace = 30 * time.Second

// reconcileRequest asks the loop for a pass. Requests that arrive while a pass runs are
// merged into the next one; each reply gets the result of a pass that began after its
// request.
type reconcileRequest struct {
	reload bool // re-read the config files
	reply  chan<- ReloadResult
}

// ReloadResult is what a reload did: the plan it applies, or why it applied nothing.
type ReloadResult struct {
	Applied     bool     `json:"applied"`
	Plan        string   `json:"plan,omitempty"`        // one line per plugin (see Plan.String)
	Changes     bool     `json:"changes"`               // whether the plan changes anything
	Errors      []string `json:"errors,omitempty"`      // plugins whose change cannot be applied, and why
	Diagnostics []string `json:"diagnostics,omitempty"` // file:line:col: problem, when rejected
	err         error    // the pass could not observe the engine
}

// Reload asks for the config files to be read again and applied; it returns at once.
// A config that does not validate changes nothing: its diagnostics are logged.
func (r *Runner) Reload() { r.request(reconcileRequest{reload: true}) }

// Resync asks for every image reference to be resolved again, the engine observed
// again and the differences applied.
func (r *Runner) Resync() { r.request(reconcileRequest{}) }

func (r *Runner) request(req reconcileRequest) {
	select {
	case r.requests <- req:
	case <-r.ctx.Done():
		if req.reply != nil {
			req.reply <- ReloadResult{err: r.ctx.Err()}
		}
	}
}

// ReloadNow reads the config files and applies them (like SIGHUP), and returns the plan
// that the pass which read them applies. An invalid config changes nothing and its
// diagnostics are returned.
func (r *Runner) ReloadNow(ctx context.Context) (ReloadResult, error) {
	if r.cfgPath == "" {
		return ReloadResult{}, fmt.Errorf("reload: the runner was started without a config file")
	}
	res, err := r.passNow(ctx, true)
	if err != nil {
		return res, fmt.Errorf("reload: %w", err)
	}
	return res, nil
}

// passNow asks the loop for a pass (reading the config files first when reload) and
// returns its result once it is applied: handed to the supervisors.
func (r *Runner) passNow(ctx context.Context, reload bool) (ReloadResult, error) {
	reply := make(chan ReloadResult, 1)
	r.request(reconcileRequest{reload: reload, reply: reply})
	select {
	case res := <-reply:
		return res, res.err
	case <-ctx.Done():
		return ReloadResult{}, ctx.Err()
	}
}

// loop serves reconcile requests, merging those that queue up, and re-observes every
// resyncInterval.
func (r *Runner) loop() {
	tick := time.NewTicker(resyncInterval)
	defer tick.Stop()
	for {
		var batch []reconcileRequest
		select {
		case <-r.ctx.Done():
			return
		case req := <-r.requests:
			batch = append(batch, req)
		case <-tick.C:
			batch = append(batch, reconcileRequest{})
		}
	drain:
		for {
			select {
			case req := <-r.requests:
				batch = append(batch, req)
			default:
				break drain
			}
		}
		reload := false
		for _, req := range batch {
			reload = reload || req.reload
		}
		res := r.reconcile(r.ctx, reload)
		for _, req := range batch {
			if req.reply != nil {
				req.reply <- res
			}
		}
	}
}

// reconcile is one pass of the loop: the config read again when asked, then observe →
// plan → apply.
func (r *Runner) reconcile(ctx context.Context, reload bool) ReloadResult {
	cfg := r.config()
	if reload && r.cfgPath != "" {
		next, _, diags := config.Load(r.cfgPath)
		if diags.HasErrors() || next == nil {
			res := ReloadResult{}
			for _, d := range diags {
				res.Diagnostics = append(res.Diagnostics, d.Error())
			}
			r.log.Error("config reload rejected; nothing changed", "diagnostics", diags.Error())
			r.publish(Event{Type: EventReload, Message: "rejected, nothing changed: " + diags.Error()})
			return res
		}
		r.applyRunnerChanges(cfg, next)
		if r.svc != nil {
			// url services' upstreams and headers apply live, before any replacement.
			r.svc.SetConfig(next.Services, declaredServices(next))
		}
		cfg = next
		r.mu.Lock()
		r.cfg = next
		r.mu.Unlock()
		r.updateEgress(ctx, cfg, next) // before the supervisors see next: no start races it
		r.watchBuilds(next)
		r.log.Info("config reloaded", "plugins", len(next.Plugins), "files", len(next.Files))
	}
	res := r.pass(ctx, cfg, false, reload)
	if reload && res.err == nil {
		msg := fmt.Sprintf("applied: %d plugins from %d files", len(cfg.Plugins), len(cfg.Files))
		if len(res.Errors) > 0 {
			msg += "; cannot apply: " + strings.Join(res.Errors, "; ")
		}
		r.publish(Event{Type: EventReload, OK: len(res.Errors) == 0, Message: msg})
	}
	return res
}

// pass observes the engine, plans against the config and applies the plan. At start-up
// (first) leftovers of unconfigured plugins are removed at once; later, instances that
// no supervisor holds are removed after a grace period.
func (r *Runner) pass(ctx context.Context, cfg *config.Config, first, reload bool) ReloadResult {
	at := time.Now()
	observed, err := r.sb.List(ctx)
	if err != nil {
		r.log.Error("observe the engine; nothing applied", "err", err)
		return ReloadResult{err: err}
	}
	desired := r.resolveAll(ctx, cfg)
	plan := MakePlan(desired, observed)
	if first {
		r.mu.Lock()
		for _, c := range observed {
			r.gens[c.Plugin] = max(r.gens[c.Plugin], c.Generation)
		}
		r.mu.Unlock()
	}
	if text := plan.String(); plan.Changes() && text != r.lastPlan {
		r.log.Info("plan", "plan", strings.TrimSpace(text))
		r.lastPlan = text // the same plan again (an unchanged error, say) is not news
	}
	errs := map[string]string{}
	for _, op := range plan {
		if op.Action == ActionUnplanned {
			errs[op.Plugin] = op.Reason
			// Told on a reload and when it changes, not on every resync.
			if reload || r.lastErrors[op.Plugin] != op.Reason {
				r.publish(Event{Type: EventPlanError, Plugin: op.Plugin, Reason: op.Reason})
			}
		}
	}
	r.lastErrors = errs
	r.apply(cfg, plan, desired, observed, at, first)
	r.sweepUnits(ctx, plan, at, first)
	return ReloadResult{Applied: true, Plan: plan.String(), Changes: plan.Changes(), Errors: plan.Errors()}
}

// apply hands the plan to the supervisors: new plugins get one, removed ones are told
// to go, every other one gets its desired state and the engine's observation of it and
// decides itself whether to start, replace, scale, update live, or do nothing.
func (r *Runner) apply(cfg *config.Config, plan Plan, desired map[string]Desired, observed []sandbox.Instance, at time.Time, first bool) {
	byPlugin := map[string][]sandbox.Instance{}
	for _, c := range observed {
		byPlugin[c.Plugin] = append(byPlugin[c.Plugin], c)
	}
	for _, op := range plan {
		r.mu.Lock()
		s := r.sups[op.Plugin]
		if s != nil && s.dead.Load() {
			// Its loop panicked; a new desired state gets a new supervisor.
			if h := s.snapshot().Snapshot; h == desired[op.Plugin].Hash && op.Action != ActionRemove {
				r.mu.Unlock()
				continue
			}
			delete(r.sups, op.Plugin)
			s = nil
		}
		r.mu.Unlock()
		switch {
		case op.Action == ActionRemove && s != nil:
			r.log.Info("plugin removed from config", "plugin", op.Plugin)
			s.requestRemove()
			r.mu.Lock()
			delete(r.sups, op.Plugin)
			r.retiring[op.Plugin] = s
			r.mu.Unlock()
			r.owner.Go("forget "+op.Plugin, func() { r.forget(s) }, nil)
		case op.Action == ActionRemove:
			r.removeOrphans(op.Plugin, op.Stale, at, first)
		case s == nil:
			if !first {
				r.log.Info("plugin added to config", "plugin", op.Plugin)
				r.router.SetNotReady(op.Plugin, "pending")
			}
			s = r.startSupervisor(op.Plugin, &op)
			s.submit(work{cfg: cfg.Plugins[op.Plugin], d: desired[op.Plugin]}, nil)
		default:
			s.submit(work{cfg: cfg.Plugins[op.Plugin], d: desired[op.Plugin]}, &observation{at: at, instances: byPlugin[op.Plugin]})
			r.removeOrphans(op.Plugin, op.Stale, at, false)
		}
	}
}

// forget drops a removed plugin's supervisor once it has wound down.
func (r *Runner) forget(s *supervisor) {
	select {
	case <-s.done:
	case <-r.ctx.Done():
		return
	}
	r.mu.Lock()
	if r.retiring[s.name] == s {
		delete(r.retiring, s.name)
	}
	r.mu.Unlock()
	r.pluginGone(s.name)
}

// removeOrphans removes the instances of plugin that no supervisor holds: all of them at
// start-up; later only those older than orphanGrace, so that an instance being created
// (whose generation a supervisor holds anyway) is never touched.
func (r *Runner) removeOrphans(plugin string, insts []sandbox.Instance, at time.Time, now bool) {
	r.mu.Lock()
	holders := []*supervisor{r.sups[plugin], r.retiring[plugin]}
	r.mu.Unlock()
	for _, c := range insts {
		held := false
		for _, s := range holders {
			held = held || (s != nil && s.ownsGeneration(c.Generation))
		}
		if held || (!now && (c.Created.IsZero() || at.Sub(c.Created) < orphanGrace)) {
			continue
		}
		r.log.Info("removing container nobody owns", "plugin", plugin, "container", c.Name, "generation", c.Generation, "status", c.Status)
		r.owner.Go("remove orphan "+c.Name, func() { r.removeInstance(c, r.stopTimeout(plugin)) }, nil)
	}
}

// applyRunnerChanges applies what of the runner block can change live (trusted_proxies)
// and warns about the rest (listen addresses, state_dir, ...), read at start only,
// instead of silently ignoring an edit.
func (r *Runner) applyRunnerChanges(old, next *config.Config) {
	if !slices.Equal(old.Runner.TrustedProxies, next.Runner.TrustedProxies) {
		r.router.SetTrustedProxies(next.Runner.TrustedProxies)
		r.log.Info("trusted proxies changed", "trusted_proxies", fmt.Sprint(next.Runner.TrustedProxies))
	}
	o, n := old.Runner, next.Runner
	o.TrustedProxies, n.TrustedProxies = nil, nil
	o.RegistryPoll, n.RegistryPoll = 0, 0 // applies live, through each plugin's registry_poll
	if !reflect.DeepEqual(o, n) {
		r.log.Warn("changes to the runner block apply at the next start only (trusted_proxies and registry_poll excepted)")
	}
}

// watchEngine turns the engine's events into work: an image event may move a tag a
// plugin uses and a (re)connected stream means anything may have been missed (e.g.
// instances that died while the engine restarted): both re-observe everything. After a
// reconnection, plugins that the engine's stopping left failed start again. An
// instance's death goes to its plugin's supervisor.
func (r *Runner) watchEngine() {
	for ev := range r.sb.Events(r.ctx) {
		switch ev.Kind {
		case sandbox.EventImage:
			r.Resync()
		case sandbox.EventResync:
			if !ev.EngineStopped.IsZero() {
				r.mu.Lock()
				sups := make([]*supervisor, 0, len(r.sups))
				for _, s := range r.sups {
					sups = append(sups, s)
				}
				r.mu.Unlock()
				for _, s := range sups {
					s.engineBack(ev.EngineStopped)
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

// startServices opens the services (kv store) and the sidecar endpoints.
func (r *Runner) startServices(cfg *config.Config, gateway netip.Addr) error {
	var secret []byte
	if dir := cfg.Runner.StateDir; dir != "" {
		var err error
		if secret, err = InstanceSecret(dir); err != nil {
			return err
		}
		if r.svc == nil {
			m, err := services.New(services.Options{StateDir: dir, Key: secret, Logger: r.log})
			if err != nil {
				return fmt.Errorf("services: %w", err)
			}
			r.svc, r.ownSvc = m, true
		}
	}
	if r.svc == nil {
		r.sidecar = &sidecar{log: r.log, socks: map[string]*http.Server{}, tokens: map[string]map[int]bool{}}
		return nil
	}
	r.svc.SetConfig(cfg.Services, declaredServices(cfg))
	start := startSidecar
	if r.cl != nil {
		start = startClusterSidecar // a listener per plugin network (cluster_sidecar.go)
	}
	sc, err := start(r.svc, r.log, cfg.Runner.StateDir, secret, gateway)
	if err != nil {
		return err
	}
	r.sidecar = sc
	return nil
}

func declaredServices(cfg *config.Config) map[string][]string {
	out := make(map[string][]string, len(cfg.Plugins))
	for name, p := range cfg.Plugins {
		out[name] = p.Services
	}
	return out
}

// watchBuilds keeps one watcher on the folders of the plugins built from a folder: a
// change there means a rebuild (new content hash) and a start-first replacement.
func (r *Runner) watchBuilds(cfg *config.Config) {
	var dirs []string
	if cfg.Runner.Watch {
		for _, p := range cfg.Plugins {
			if p.Build != "" {
				dirs = append(dirs, p.Build)
			}
		}
	}
	sort.Strings(dirs)
	key := strings.Join(dirs, "\x00")
	if key == r.buildKey {
		return
	}
	if r.buildCancel != nil {
		r.buildCancel()
		r.buildCancel = nil
	}
	r.buildKey = key
	if len(dirs) == 0 {
		return
	}
	ctx, cancel := context.WithCancel(r.ctx)
	r.buildCancel = cancel
	r.owner.Go("build folder watcher", func() {
		if err := watchBuildDirs(ctx, r.log, dirs, 300*time.Millisecond, r.Resync); err != nil {
			r.log.Error("build folder watcher stopped; send SIGHUP after editing", "err", err)
		}
	}, nil)
}

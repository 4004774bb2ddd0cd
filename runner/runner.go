// Package runner orchestrates: it turns the desired state of a config into running
// plugin containers (through a Sandbox) and routes to them (through a Router). One
// supervisor goroutine per plugin owns that plugin's containers; a reconcile loop owns
// the set of supervisors and is woken — level-triggered — by config file changes,
// SIGHUP (Reload) and Docker image events. It never parses HCL nor builds Docker
// requests itself.
package runner

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"reflect"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/xcore/runner/config"
	"github.com/xcore/runner/proxy"
	"github.com/xcore/runner/sandbox"
	"github.com/xcore/runner/services"
)

// Options configures a Runner.
type Options struct {
	Config *config.Config
	// ConfigPath is reloaded by Reload and, with runner.watch, on file changes. Empty:
	// the config is fixed.
	ConfigPath string
	Sandbox    Sandbox
	Router     Router
	Logger     *slog.Logger
	// OnStatus, if set, is called after every plugin state change (the CLI prints the
	// "ready" lines from it). It must not block.
	OnStatus func(Status)
	// Keep leaves the plugin containers running on Shutdown (runner up --keep).
	Keep bool
	// Services hosts the sidecar endpoints; nil: Start opens the services of
	// runner.state_dir (when it is set).
	Services Services
}

// Runner runs the plugins of one config.
type Runner struct {
	cfgPath  string
	sb       Sandbox
	router   Router
	log      *slog.Logger
	onStatus func(Status)
	keep     bool
	engine   chan struct{} // runner.start_concurrency slots: containers being created+started or removed

	mu       sync.Mutex
	cfg      *config.Config             // the last config that validated
	sups     map[string]*supervisor     // written by Start and the reconcile loop only
	retiring map[string]<-chan struct{} // removed plugins still draining: done channels
	gens     map[string]int             // highest generation seen or allocated, per plugin

	kick   chan struct{} // 1-slot: reconcile wanted
	flagMu sync.Mutex
	flags  trigger

	ln     net.Listener
	srv    *http.Server
	serveC chan error

	bus bus

	buildKey    string             // the build folders being watched (loop-owned)
	buildCancel context.CancelFunc // stops that watcher

	svc     Services // nil: no services (unit tests with a hand-built config)
	ownSvc  bool     // created by Start: closed by Shutdown
	sidecar *sidecar

	ctx    context.Context // lives from Start to Shutdown; all background work hangs off it
	cancel context.CancelFunc
	wg     sync.WaitGroup
}

// trigger accumulates why the reconcile loop was woken.
type trigger struct {
	reload bool // re-read the config files
	resync bool // re-resolve images and re-observe
}

// New prepares a runner; nothing happens until Start.
func New(o Options) *Runner {
	log := o.Logger
	if log == nil {
		log = slog.Default()
	}
	return &Runner{
		cfgPath: o.ConfigPath, cfg: o.Config, sb: o.Sandbox, router: o.Router, log: log,
		onStatus: o.OnStatus, keep: o.Keep || o.Config.Runner.KeepOnExit, svc: o.Services,
		sups: map[string]*supervisor{}, retiring: map[string]<-chan struct{}{}, gens: map[string]int{},
		kick: make(chan struct{}, 1), engine: make(chan struct{}, startConcurrency(o.Config)),
	}
}

// startConcurrency is runner.start_concurrency, or its default for a config built by
// hand (tests).
func startConcurrency(cfg *config.Config) int {
	if n := cfg.Runner.StartConcurrency; n > 0 {
		return n
	}
	return 8
}

// Start binds the public listener (first, so a busy port fails before any container
// starts), prepares the network, adopts or replaces what a previous runner left, and
// starts every plugin concurrently. It returns when each plugin is healthy or has failed;
// a failed plugin is reported and the others serve. The error is for the runner itself
// (listener, Docker), not for single plugins.
func (r *Runner) Start(ctx context.Context) error {
	cfg := r.config()
	ln, err := net.Listen("tcp", cfg.Runner.Listen)
	if err != nil {
		return fmt.Errorf("listen %s: %w", cfg.Runner.Listen, err)
	}
	r.ln = ln
	// ReadHeaderTimeout 10s, IdleTimeout 120s, MaxHeaderBytes 64 KiB: see proxy.NewServer.
	r.srv = proxy.NewServer(r.router, r.log)
	r.serveC = make(chan error, 1)
	go func() { r.serveC <- r.srv.Serve(ln) }()
	r.ctx, r.cancel = context.WithCancel(context.WithoutCancel(ctx))

	for name := range cfg.Plugins {
		r.router.SetNotReady(name, "pending")
	}
	netw, err := r.sb.EnsureNetwork(ctx)
	if err != nil {
		return err
	}
	if err := r.startServices(cfg, netw.Gateway); err != nil {
		return err
	}
	observed, err := r.sb.List(ctx)
	if err != nil {
		return err
	}
	desired := r.resolveAll(ctx, cfg)
	plan := MakePlan(desired, observed)
	r.mu.Lock()
	for _, c := range observed {
		r.gens[c.Plugin] = max(r.gens[c.Plugin], c.Generation)
	}
	r.mu.Unlock()
	if plan.Changes() {
		r.log.Info("start-up plan", "plan", plan.String())
	}

	var sups []*supervisor
	for _, op := range plan {
		if op.Action == ActionRemove {
			r.wg.Go(func() {
				for _, c := range op.Stale {
					r.log.Info("removing container of unconfigured plugin", "plugin", op.Plugin, "container", c.Name)
					r.removeContainer(c, 10*time.Second)
				}
			})
			continue
		}
		s := r.startSupervisor(op.Plugin, &op)
		s.submit(work{cfg: cfg.Plugins[op.Plugin], d: desired[op.Plugin]})
		sups = append(sups, s)
	}
	for _, s := range sups {
		select {
		case <-s.settled:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	r.watchBuilds(cfg)
	r.wg.Go(r.loop)
	r.wg.Go(r.watchEngine)
	if cfg.Runner.Watch && r.cfgPath != "" {
		r.wg.Go(func() {
			if err := watchConfig(r.ctx, r.log, r.cfgPath, cfg.Runner.PluginsDir, configDebounce, r.Reload); err != nil {
				r.log.Error("config watcher stopped; use SIGHUP to reload", "err", err)
			}
		})
	}
	return nil
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
		r.sidecar = &sidecar{log: r.log, socks: map[string]*http.Server{}}
		return nil
	}
	r.svc.SetConfig(cfg.Services, declaredServices(cfg))
	sc, err := startSidecar(r.svc, r.log, cfg.Runner.StateDir, secret, gateway)
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

func (r *Runner) startSupervisor(name string, adopt *Op) *supervisor {
	r.mu.Lock()
	s := newSupervisor(r, name, adopt, r.retiring[name])
	delete(r.retiring, name)
	r.sups[name] = s
	r.mu.Unlock()
	r.wg.Go(func() { s.run(r.ctx) })
	return s
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
	r.wg.Go(func() {
		if err := watchBuildDirs(ctx, r.log, dirs, 300*time.Millisecond, r.Resync); err != nil {
			r.log.Error("build folder watcher stopped; send SIGHUP after editing", "err", err)
		}
	})
}

// Reload asks for the config files to be read again and applied; it returns at once.
// A config that does not validate changes nothing: its diagnostics are logged.
func (r *Runner) Reload() { r.wakeup(trigger{reload: true}) }

// Resync asks for every image reference to be resolved again and differences applied.
func (r *Runner) Resync() { r.wakeup(trigger{resync: true}) }

func (r *Runner) wakeup(t trigger) {
	r.flagMu.Lock()
	r.flags.reload = r.flags.reload || t.reload
	r.flags.resync = r.flags.resync || t.resync
	r.flagMu.Unlock()
	select {
	case r.kick <- struct{}{}:
	default:
	}
}

func (r *Runner) loop() {
	for {
		select {
		case <-r.ctx.Done():
			return
		case <-r.kick:
		}
		r.flagMu.Lock()
		t := r.flags
		r.flags = trigger{}
		r.flagMu.Unlock()
		r.reconcile(r.ctx, t)
	}
}

// reconcile brings the supervisors in line with the config: new plugins get one,
// removed ones are told to drain and go, every other one gets its (possibly unchanged)
// desired state and decides itself whether to replace, update live, or do nothing.
func (r *Runner) reconcile(ctx context.Context, t trigger) {
	cfg := r.config()
	if t.reload {
		next, _, diags := config.Load(r.cfgPath)
		if diags.HasErrors() || next == nil {
			for _, d := range diags {
				r.log.Error("config reload rejected; nothing changed", "diagnostic", d.Error())
			}
			r.publish(Event{Type: EventReload, Message: "rejected, nothing changed: " + diags.Error()})
			if !t.resync {
				return
			}
		} else {
			r.applyRunnerChanges(cfg, next)
			if r.svc != nil {
				// url services' upstreams and headers apply live, before any replacement.
				r.svc.SetConfig(next.Services, declaredServices(next))
			}
			cfg = next
			r.mu.Lock()
			r.cfg = next
			r.mu.Unlock()
			r.watchBuilds(next)
			r.log.Info("config reloaded", "plugins", len(next.Plugins), "files", len(next.Files))
			r.publish(Event{Type: EventReload, OK: true, Message: fmt.Sprintf("applied: %d plugins from %d files", len(next.Plugins), len(next.Files))})
		}
	}
	desired := r.resolveAll(ctx, cfg)

	r.mu.Lock()
	current := make(map[string]*supervisor, len(r.sups))
	for name, s := range r.sups {
		current[name] = s
	}
	r.mu.Unlock()
	for name, s := range current {
		if _, ok := cfg.Plugins[name]; !ok {
			r.log.Info("plugin removed from config", "plugin", name)
			s.submit(work{remove: true})
			r.mu.Lock()
			delete(r.sups, name)
			r.retiring[name] = s.done
			r.mu.Unlock()
		}
	}
	for name, pc := range cfg.Plugins {
		s := current[name]
		if s == nil {
			r.log.Info("plugin added to config", "plugin", name)
			r.router.SetNotReady(name, "pending")
			s = r.startSupervisor(name, nil)
		}
		// After a resync (engine events reconnected, an image moved) a death may have
		// been missed; a config save alone needs no engine round trip per plugin.
		s.submit(work{cfg: pc, d: desired[name], verify: t.resync})
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
	if !reflect.DeepEqual(o, n) {
		r.log.Warn("changes to the runner block apply at the next start only (trusted_proxies excepted)")
	}
}

func (r *Runner) resolveAll(ctx context.Context, cfg *config.Config) map[string]Desired {
	return desire(ctx, cfg, r.sb.ResolveImage, r.build)
}

// build builds a plugin's folder as tag, logging the builder's output.
func (r *Runner) build(ctx context.Context, plugin, tag string, bc sandbox.BuildContext) (string, error) {
	r.log.Info("building plugin image", "plugin", plugin, "tag", tag)
	begin := time.Now()
	id, err := r.sb.Build(ctx, bc, tag, plugin, func(line string) {
		r.log.Info("build", "plugin", plugin, "out", line)
	})
	if err != nil {
		return "", err
	}
	r.log.Info("built plugin image", "plugin", plugin, "tag", tag, "took", time.Since(begin).Round(time.Millisecond))
	return id, nil
}

// builder builds a plugin folder's context as tag and returns the image ID.
type builder func(ctx context.Context, plugin, tag string, bc sandbox.BuildContext) (string, error)

// Desire computes every plugin's desired snapshot, resolving image references
// concurrently (one resolve per distinct reference). `runner plan` uses it too: it never
// builds, so a folder whose content has not been built yet shows as a change.
// NAME_URLs carry the sidecar port of the state_dir, so `runner plan` computes the same
// snapshots as the running runner.
func Desire(ctx context.Context, cfg *config.Config, resolve func(context.Context, string) (string, error)) map[string]Desired {
	return desire(ctx, cfg, resolve, nil)
}

func desire(ctx context.Context, cfg *config.Config, resolve func(context.Context, string) (string, error), build builder) map[string]Desired {
	port, _ := ReadSidecarPort(cfg.Runner.StateDir)
	type res struct {
		ref, id string // ref: the build tag, for built plugins
		err     error
	}
	refs := map[string]*res{}
	for _, p := range cfg.Plugins {
		if p.Image != "" {
			refs[p.Image] = &res{}
		}
	}
	var wg sync.WaitGroup
	for ref, out := range refs {
		wg.Go(func() { out.id, out.err = resolve(ctx, ref) })
	}
	built := map[string]*res{}
	for name, p := range cfg.Plugins {
		if p.Build != "" {
			out := &res{}
			built[name] = out
			wg.Go(func() { out.ref, out.id, out.err = buildImage(ctx, name, p.Build, resolve, build) })
		}
	}
	wg.Wait()
	desired := make(map[string]Desired, len(cfg.Plugins))
	for name, p := range cfg.Plugins {
		switch {
		case p.Build != "" && built[name].err != nil:
			desired[name] = Desired{Err: built[name].err}
		case p.Build != "":
			d := desiredFor(cfg, p, built[name].id, port)
			if d.Err == nil {
				d.Spec.ImageRef = built[name].ref // not hashed: the ID is
			}
			desired[name] = d
		case refs[p.Image].err != nil:
			desired[name] = Desired{Err: refs[p.Image].err}
		default:
			desired[name] = desiredFor(cfg, p, refs[p.Image].id, port)
		}
	}
	return desired
}

// buildImage resolves a plugin folder to an image: its tag carries the content hash, so
// an unchanged folder is never rebuilt (and keeps its image ID across runner restarts,
// which adoption needs). Without a builder (runner plan) an unbuilt folder resolves to a
// placeholder ID, which shows as a change.
func buildImage(ctx context.Context, plugin, dir string, resolve func(context.Context, string) (string, error), build builder) (ref, id string, err error) {
	bc, err := sandbox.PackContext(dir)
	if err != nil {
		return "", "", err
	}
	ref = fmt.Sprintf("xcore-build/%s:%s", plugin, bc.Hash[:12])
	if id, err = resolve(ctx, ref); err == nil {
		return ref, id, nil
	}
	if build == nil {
		return ref, "unbuilt:" + bc.Hash[:12], nil
	}
	id, err = build(ctx, plugin, ref, bc)
	return ref, id, err
}

func (r *Runner) config() *config.Config {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.cfg
}

// allocGeneration returns the next generation number for plugin: above every
// container ever seen for it, so names never collide.
func (r *Runner) allocGeneration(plugin string) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.gens[plugin]++
	return r.gens[plugin]
}

// Addr is the address the public proxy listens on (useful with port 0).
func (r *Runner) Addr() net.Addr { return r.ln.Addr() }

// Statuses returns every configured plugin's status, sorted by name.
func (r *Runner) Statuses() []Status {
	r.mu.Lock()
	out := make([]Status, 0, len(r.sups))
	for _, s := range r.sups {
		out = append(out, s.snapshot())
	}
	r.mu.Unlock()
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

func (r *Runner) emit(s Status) {
	if r.onStatus != nil {
		r.onStatus(s)
	}
	r.publish(Event{Type: EventState, Plugin: s.Name, Status: &s})
}

func (r *Runner) stopTimeout(plugin string) time.Duration {
	if p := r.config().Plugins[plugin]; p != nil {
		return p.Supervisor.StopTimeout
	}
	return 10 * time.Second
}

func (r *Runner) drainTimeout() time.Duration {
	d := time.Duration(0)
	for _, p := range r.config().Plugins {
		d = max(d, p.Supervisor.DrainTimeout)
	}
	if d == 0 {
		d = 30 * time.Second
	}
	return d
}

func (r *Runner) closeServices(ctx context.Context, errs *[]error) {
	if r.sidecar != nil {
		if err := r.sidecar.close(ctx); err != nil {
			*errs = append(*errs, err)
		}
	}
	if r.ownSvc {
		if err := r.svc.Close(); err != nil {
			*errs = append(*errs, fmt.Errorf("services: %w", err))
		}
	}
}

// Shutdown stops accepting requests, lets in-flight ones finish (up to the longest
// drain_timeout), then stops and removes every container of this runner (SIGTERM, then
// SIGKILL after stop_timeout) and its network — unless Keep is set.
func (r *Runner) Shutdown(ctx context.Context) error {
	if r.cancel == nil {
		return nil // never started
	}
	r.cancel() // stop supervisors and loops; starts in progress remove their containers
	var errs []error

	dctx, cancel := context.WithTimeout(ctx, r.drainTimeout())
	defer cancel()
	if err := r.srv.Shutdown(dctx); err != nil {
		errs = append(errs, fmt.Errorf("drain proxy: %w", err))
		_ = r.srv.Close()
	}
	if err := <-r.serveC; err != nil && !errors.Is(err, http.ErrServerClosed) {
		errs = append(errs, fmt.Errorf("serve: %w", err))
	}
	r.wg.Wait()
	r.router.Close()

	if r.keep {
		r.log.Info("leaving plugin containers running (keep_on_exit)")
		r.closeServices(ctx, &errs)
		return errors.Join(errs...)
	}
	// Docker is the source of truth: stop whatever carries our label, not just what we
	// remember starting.
	ctrs, err := r.sb.List(ctx)
	if err != nil {
		errs = append(errs, err)
	}
	var wg sync.WaitGroup
	for _, c := range ctrs {
		wg.Go(func() { r.removeContainer(c, r.stopTimeout(c.Plugin)) })
	}
	wg.Wait()
	r.closeServices(ctx, &errs)
	r.mu.Lock()
	sups := r.sups
	r.mu.Unlock()
	for _, s := range sups {
		s.update(func(st *Status) { st.State = StateStopped })
	}
	if _, err := r.sb.RemoveNetwork(ctx); errors.Is(err, sandbox.ErrNetworkInUse) {
		// Every container is gone; the engine keeps a phantom endpoint. Not a failed
		// shutdown: the next start of this runner reuses the network.
		r.log.Warn("network left behind by the engine (no container on it; reused at the next start)", "err", err)
	} else if err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

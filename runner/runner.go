// Package runner orchestrates: it turns the desired state of a config into running
// plugin instances (through a Sandbox backend) and routes to them (through a Router).
// One supervisor per plugin owns that plugin's generations and instances; a reconcile
// loop owns the set of supervisors. Every path that may change what runs — start-up,
// config file changes, SIGHUP and POST /v1/reload, image events, a periodic resync —
// goes observe (list the runner's instances by label) → plan (pure) → apply. It never
// parses HCL nor talks to an engine's API itself.
package runner

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/xcore/runner/config"
	"github.com/xcore/runner/proxy"
	"github.com/xcore/runner/sandbox"
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
	// Keep leaves the plugin instances running on Shutdown (runner up --keep).
	Keep bool
	// Services hosts the sidecar endpoints; nil: Start opens the services of
	// runner.state_dir (when it is set).
	Services Services
	// Listen, when set, is where the public proxy listens instead of runner.listen
	// (a runner in a container on a cluster listens on its container's address).
	Listen string
	// Registry answers for registry images (tag checks, credentials): a
	// registry/remote Client with the user's Docker credentials. nil: none is asked, so
	// only images the engine has run.
	Registry Registry
}

// Runner runs the plugins of one config.
type Runner struct {
	cfgPath  string
	sb       Sandbox
	router   Router
	log      *slog.Logger
	onStatus func(Status)
	keep     bool
	engine   chan struct{} // runner.start_concurrency slots: instances being created+started or removed

	mu       sync.Mutex
	cfg      *config.Config         // the last config that validated
	sups     map[string]*supervisor // written by the reconcile loop only (and Start)
	retiring map[string]*supervisor // removed plugins still winding down
	gens     map[string]int         // highest generation seen or allocated, per plugin
	stopped  ShutdownReport         // what the last Shutdown did
	previous map[string]PreviousLog // the end of the log of each plugin's last removed instance

	goneChecks goneChecks // the proxy's "did this instance stop?" (see instanceGone)

	requests   chan reconcileRequest // to the reconcile loop
	lastPlan   string                // the last plan logged (loop-owned)
	lastErrors map[string]string     // plugin → why its desired state could not be computed, last pass

	ln     net.Listener
	srv    *http.Server
	serveC chan error

	bus bus

	buildKey    string             // the build folders being watched (loop-owned)
	buildCancel context.CancelFunc // stops that watcher

	svc     Services // nil: no services (unit tests with a hand-built config)
	ownSvc  bool     // created by Start: closed by Shutdown
	sidecar *sidecar

	protected atomic.Pointer[sandbox.Protected] // what the backend enforces; nil before Start asks
	cl        *clusterState                     // nil unless the Sandbox is a Cluster (cluster.go)
	listen    string                            // Options.Listen

	ctx    context.Context // lives from Start to Shutdown; all background work hangs off it
	cancel context.CancelFunc
	owner  owner // every goroutine the runner starts

	images *images // registry images: pulls and followed tags (images.go, follow.go)
}

// New prepares a runner; nothing happens until Start.
func New(o Options) *Runner {
	log := o.Logger
	if log == nil {
		log = slog.Default()
	}
	r := &Runner{
		cfgPath: o.ConfigPath, cfg: o.Config, sb: o.Sandbox, router: o.Router, log: log,
		onStatus: o.OnStatus, keep: o.Keep || o.Config.Runner.KeepOnExit, svc: o.Services,
		sups: map[string]*supervisor{}, retiring: map[string]*supervisor{}, gens: map[string]int{},
		requests: make(chan reconcileRequest, 16), engine: make(chan struct{}, startConcurrency(o.Config)),
		owner: owner{log: log}, cl: newClusterState(o.Sandbox), listen: o.Listen,
	}
	r.images = newImages(r, o.Sandbox, o.Registry)
	return r
}

// startConcurrency is runner.start_concurrency, or its default for a config built by
// hand (tests).
func startConcurrency(cfg *config.Config) int {
	if n := cfg.Runner.StartConcurrency; n > 0 {
		return n
	}
	return 8
}

// Start binds the public listener (first, so a busy port fails before any instance
// starts), prepares the network and the services, applies the first plan — adopting
// what a previous runner left that still matches, removing the rest — and returns when
// each plugin serves or has failed; a failed plugin is reported and the others serve.
// The error is for the runner itself (listener, engine), not for single plugins.
func (r *Runner) Start(ctx context.Context) error {
	cfg := r.config()
	listen := cfg.Runner.Listen
	if r.listen != "" {
		listen = r.listen
	}
	ln, err := net.Listen("tcp", listen)
	if err != nil {
		return fmt.Errorf("listen %s: %w", listen, err)
	}
	r.ln = ln
	// ReadHeaderTimeout 10s, IdleTimeout 120s, MaxHeaderBytes 64 KiB: see proxy.NewServer.
	r.srv = proxy.NewServer(r.router, r.log)
	r.serveC = make(chan error, 1)
	go func() { r.serveC <- r.srv.Serve(ln) }()
	r.ctx, r.cancel = context.WithCancel(context.WithoutCancel(ctx))
	r.router.SetGoneCheck(r.instanceGone)

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
	if err := r.protect(ctx, cfg); err != nil { // after the sidecar listens, before any plugin starts
		return err
	}
	r.joinPluginNetworks(ctx, cfg)
	res := r.pass(ctx, cfg, true, false)
	if res.err != nil {
		return res.err
	}
	r.mu.Lock()
	sups := make([]*supervisor, 0, len(r.sups))
	for _, s := range r.sups {
		sups = append(sups, s)
	}
	r.mu.Unlock()
	// The loop runs while start-up waits: a plugin whose image is being pulled settles
	// only after the pass that the pull's end asks for.
	r.watchBuilds(cfg)
	r.owner.Go("reconcile loop", r.loop, nil)
	for _, s := range sups {
		select {
		case <-s.settled:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	r.owner.Go("engine events", r.watchEngine, nil)
	if cfg.Runner.Watch && r.cfgPath != "" {
		r.owner.Go("config watcher", func() {
			if err := watchConfig(r.ctx, r.log, r.cfgPath, cfg.Runner.PluginsDir, configDebounce, r.Reload); err != nil {
				r.log.Error("config watcher stopped; use SIGHUP to reload", "err", err)
			}
		}, nil)
	}
	return nil
}

// startSupervisor creates and starts the supervisor of a plugin; adopt is its share of
// the start-up plan (nil for a plugin added later).
func (r *Runner) startSupervisor(name string, adopt *Op) *supervisor {
	r.mu.Lock()
	var after <-chan struct{}
	if prev := r.retiring[name]; prev != nil {
		after = prev.done // the removed predecessor must be gone before this one routes
	}
	s := newSupervisor(r, name, adopt, after)
	r.sups[name] = s
	r.mu.Unlock()
	r.owner.Go("supervisor of "+name, func() {
		defer close(s.done)
		s.run(r.ctx)
		s.settle()
	}, func(err error) {
		// The loop is gone: the plugin fails where everyone can see it, its instances
		// are no longer owned (the resync removes them), and the next reconcile gives it
		// a new supervisor when its desired state changes.
		s.mu.Lock()
		s.owned = map[int]bool{}
		s.mu.Unlock()
		s.dead.Store(true)
		r.router.SetFailed(name, "internal error (see log)")
		s.update(func(st *Status) { st.State, st.LastError = StateFailed, "internal error (see log)" })
		s.settle()
	})
	return s
}

// config returns the last config that validated.
func (r *Runner) config() *config.Config {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.cfg
}

// allocGeneration returns the next generation number for plugin: above every instance
// ever seen for it, so names never collide.
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
	for i := range out {
		r.images.overlay(&out[i])
	}
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

// ShutdownReport is what a Shutdown did, for the CLI's last line.
type ShutdownReport struct {
	Removed int    // instances stopped and removed
	Kept    bool   // left running (keep_on_exit)
	Network string // the network removed, or why it was kept
}

// Stopped returns what the last Shutdown did.
func (r *Runner) Stopped() ShutdownReport {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.stopped
}

// Shutdown stops accepting requests, lets in-flight ones finish (up to the longest
// drain_timeout), then stops and removes every instance of this runner (SIGTERM, then
// SIGKILL after stop_timeout) and its network — unless Keep is set.
func (r *Runner) Shutdown(ctx context.Context) error {
	if r.cancel == nil {
		return nil // never started
	}
	r.cancel() // stop supervisors and loops; starts in progress remove their instances
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
	r.owner.Wait()
	r.router.Close()

	var report ShutdownReport
	if r.keep {
		r.log.Info("leaving plugin instances running (keep_on_exit)")
		r.closeServices(ctx, &errs)
		report.Kept = true
		r.setStopped(report)
		return errors.Join(errs...)
	}
	// The engine is the source of truth: stop whatever carries our label, not just
	// what we remember starting.
	insts, err := r.sb.List(ctx)
	if err != nil {
		errs = append(errs, err)
	}
	var wg sync.WaitGroup
	for _, c := range insts {
		wg.Go(func() { r.removeInstance(c, r.stopTimeout(c.Plugin)) })
	}
	wg.Wait()
	r.removeUnits(ctx, &errs)
	report.Removed = len(insts)
	r.unprotect(ctx, &errs)
	r.closeServices(ctx, &errs)
	r.mu.Lock()
	sups := r.sups
	r.mu.Unlock()
	for _, s := range sups {
		s.update(func(st *Status) { st.State, st.Ready, st.Instances = StateStopped, 0, nil })
	}
	kept, err := r.sb.RemoveNetwork(ctx)
	switch {
	case err != nil:
		errs = append(errs, err)
		report.Network = err.Error()
	case kept != "":
		r.log.Warn("network left behind", "why", kept)
		report.Network = kept
	default:
		report.Network = "removed"
	}
	r.setStopped(report)
	return errors.Join(errs...)
}

func (r *Runner) setStopped(rep ShutdownReport) {
	r.mu.Lock()
	r.stopped = rep
	r.mu.Unlock()
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

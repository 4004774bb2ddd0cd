// Package runner orchestrates: it turns the desired state of config into running plugin
// containers (through a Sandbox) and routes to them (through a Router). It never parses
// HCL nor builds Docker requests itself.
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
	"time"

	"github.com/xcore/runner/config"
)

// Options configures a Runner.
type Options struct {
	Config  *config.Config
	Sandbox Sandbox
	Router  Router
	Logger  *slog.Logger
	// OnStatus, if set, is called after every plugin state change (the CLI prints the
	// "ready" lines from it). It must not block.
	OnStatus func(Status)
	// Keep leaves the plugin containers running on Shutdown (runner up --keep).
	Keep bool
}

// Runner runs the plugins of one config.
type Runner struct {
	cfg      *config.Config
	sb       Sandbox
	router   Router
	log      *slog.Logger
	onStatus func(Status)
	keep     bool
	prober   *prober

	plugins map[string]*plugin // fixed after New; each plugin guards its own status

	ln     net.Listener
	srv    *http.Server
	serveC chan error

	ctx    context.Context // lives from Start to Shutdown; plugin work hangs off it
	cancel context.CancelFunc
	wg     sync.WaitGroup // plugin goroutines
}

// New prepares a runner; nothing happens until Start.
func New(o Options) *Runner {
	log := o.Logger
	if log == nil {
		log = slog.Default()
	}
	r := &Runner{
		cfg: o.Config, sb: o.Sandbox, router: o.Router, log: log, onStatus: o.OnStatus,
		keep: o.Keep || o.Config.Runner.KeepOnExit, prober: newProber(),
		plugins: make(map[string]*plugin, len(o.Config.Plugins)),
	}
	for name, pc := range o.Config.Plugins {
		r.plugins[name] = &plugin{cfg: pc, status: Status{Name: name, State: StatePending}}
	}
	return r
}

// Start binds the public listener (first, so a busy port fails before any container
// starts), prepares the network, and starts every plugin concurrently. It returns when
// each plugin is healthy or has failed; a failed plugin is reported and the others serve.
// The error is for the runner itself (listener, Docker), not for single plugins.
func (r *Runner) Start(ctx context.Context) error {
	ln, err := net.Listen("tcp", r.cfg.Runner.Listen)
	if err != nil {
		return fmt.Errorf("listen %s: %w", r.cfg.Runner.Listen, err)
	}
	r.ln = ln
	r.srv = &http.Server{
		Handler:           r.router,
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       120 * time.Second,
		MaxHeaderBytes:    64 << 10,
		ErrorLog:          slog.NewLogLogger(r.log.Handler(), slog.LevelDebug),
	}
	r.serveC = make(chan error, 1)
	go func() { r.serveC <- r.srv.Serve(ln) }()
	r.ctx, r.cancel = context.WithCancel(context.WithoutCancel(ctx))

	for name := range r.plugins {
		r.router.SetNotReady(name, "pending")
	}
	if _, err := r.sb.EnsureNetwork(ctx); err != nil {
		return err
	}
	gen, err := r.collectLeftovers(ctx)
	if err != nil {
		return err
	}

	done := make(chan struct{}, len(r.plugins))
	for _, p := range r.plugins {
		r.wg.Go(func() {
			defer func() { done <- struct{}{} }()
			_ = r.startPlugin(r.ctx, p, gen[p.cfg.Name]+1)
		})
	}
	for range r.plugins {
		select {
		case <-done:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return nil
}

// collectLeftovers removes containers a previous run of this runner left behind (it
// crashed, or ran with --keep) and returns the highest generation seen per plugin, so
// new containers never reuse a name. Adopting the healthy ones instead of replacing
// them arrives with snapshots.
func (r *Runner) collectLeftovers(ctx context.Context) (map[string]int, error) {
	ctrs, err := r.sb.List(ctx)
	if err != nil {
		return nil, err
	}
	gen := map[string]int{}
	var wg sync.WaitGroup
	for _, c := range ctrs {
		gen[c.Plugin] = max(gen[c.Plugin], c.Generation)
		r.log.Info("removing leftover container", "container", c.Name, "plugin", c.Plugin, "status", c.Status)
		wg.Go(func() { r.removeContainer(c.ID, r.stopTimeout(c.Plugin)) })
	}
	wg.Wait()
	return gen, nil
}

// Addr is the address the public proxy listens on (useful with port 0).
func (r *Runner) Addr() net.Addr { return r.ln.Addr() }

// Statuses returns every plugin's status, sorted by name.
func (r *Runner) Statuses() []Status {
	out := make([]Status, 0, len(r.plugins))
	for _, p := range r.plugins {
		out = append(out, p.snapshot())
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

func (r *Runner) emit(s Status) {
	if r.onStatus != nil {
		r.onStatus(s)
	}
}

func (r *Runner) stopTimeout(plugin string) time.Duration {
	if p := r.plugins[plugin]; p != nil {
		return p.cfg.Supervisor.StopTimeout
	}
	return 10 * time.Second
}

func (r *Runner) drainTimeout() time.Duration {
	d := time.Duration(0)
	for _, p := range r.plugins {
		d = max(d, p.cfg.Supervisor.DrainTimeout)
	}
	if d == 0 {
		d = 30 * time.Second
	}
	return d
}

// Shutdown stops accepting requests, lets in-flight ones finish (up to the longest
// drain_timeout), then stops and removes every container of this runner (SIGTERM, then
// SIGKILL after stop_timeout) and its network — unless Keep is set.
func (r *Runner) Shutdown(ctx context.Context) error {
	if r.cancel == nil {
		return nil // never started
	}
	r.cancel() // abort plugin starts; they remove their own half-started containers
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
		wg.Go(func() {
			r.removeContainer(c.ID, r.stopTimeout(c.Plugin))
			if p := r.plugins[c.Plugin]; p != nil {
				r.emit(p.update(func(s *Status) { s.State = StateStopped }))
			}
		})
	}
	wg.Wait()
	if _, err := r.sb.RemoveNetwork(ctx); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

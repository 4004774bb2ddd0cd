package runner

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"sync"
	"time"

	"github.com/xcore/runner/config"
	"github.com/xcore/runner/proxy"
	"github.com/xcore/runner/sandbox"
)

// State is where a plugin is in its life.
type State string

const (
	StatePending  State = "pending"
	StateStarting State = "starting"
	StateHealthy  State = "healthy"
	StateFailed   State = "failed"
	StateStopped  State = "stopped"
)

// Status is a read-only view of one plugin, for the CLI and (later) the admin API.
type Status struct {
	Name       string
	State      State
	Generation int
	Image      string
	ImageID    string
	Container  string // container ID
	Endpoint   string // host:port the proxy dials
	StartedAt  time.Time
	Took       time.Duration // from start request to healthy
	LastError  string
}

// plugin holds one plugin's desired spec and what runs for it.
type plugin struct {
	cfg *config.Plugin

	mu     sync.Mutex
	status Status
}

func (p *plugin) snapshot() Status {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.status
}

func (p *plugin) update(f func(*Status)) Status {
	p.mu.Lock()
	defer p.mu.Unlock()
	f(&p.status)
	return p.status
}

// startPlugin brings up generation gen of p: resolve the image, run the container, wait
// until it is healthy, then route to it. On failure the half-started container is
// removed and the proxy answers 503 naming the reason; other plugins are unaffected.
func (r *Runner) startPlugin(ctx context.Context, p *plugin, gen int) error {
	begin := time.Now()
	name := p.cfg.Name
	p.update(func(s *Status) { s.State, s.Generation, s.LastError = StateStarting, gen, "" })
	r.router.SetNotReady(name, "starting")

	ctr, err := r.runContainer(ctx, p, gen)
	if err != nil {
		st := p.update(func(s *Status) { s.State, s.LastError = StateFailed, err.Error() })
		r.router.SetNotReady(name, "failed: "+st.LastError)
		r.log.Error("plugin failed to start", "plugin", name, "generation", gen, "err", err)
		r.emit(st)
		return err
	}
	u := &url.URL{Scheme: "http", Host: ctr.Endpoint}
	sup := p.cfg.Supervisor
	r.router.SetReady(name, proxy.Backend{
		URL: u, Generation: gen, RequestTimeout: sup.RequestTimeout,
		MaxConcurrent: sup.MaxConcurrent, MaxBody: sup.MaxBody,
	})
	st := p.update(func(s *Status) {
		s.State, s.Container, s.Endpoint, s.StartedAt, s.Took = StateHealthy, ctr.ID, ctr.Endpoint, time.Now(), time.Since(begin)
	})
	r.log.Info("plugin ready", "plugin", name, "generation", gen, "endpoint", ctr.Endpoint, "took", st.Took.Round(time.Millisecond))
	r.emit(st)
	return nil
}

func (r *Runner) runContainer(ctx context.Context, p *plugin, gen int) (sandbox.Container, error) {
	pc := p.cfg
	if pc.Supervisor.Network == config.NetworkNone {
		// The unix-socket transport comes with the services sidecar; refuse clearly
		// rather than start a plugin nobody can reach.
		return sandbox.Container{}, errors.New(`network = "none" is not supported yet: the unix-socket transport is not implemented`)
	}
	if pc.Build != "" {
		return sandbox.Container{}, fmt.Errorf("build = %q is not supported yet: build the image and use image = ...", pc.Build)
	}
	imageID, err := r.sb.ResolveImage(ctx, pc.Image)
	if err != nil {
		return sandbox.Container{}, err
	}
	spec := containerSpec(r.cfg, pc, imageID, gen)
	p.update(func(s *Status) { s.Image, s.ImageID = spec.Image, imageID })

	sctx, cancel := context.WithTimeout(ctx, pc.Supervisor.StartTimeout)
	defer cancel()
	ctr, err := r.sb.Run(sctx, spec)
	if err != nil {
		return sandbox.Container{}, err
	}
	p.update(func(s *Status) { s.Container, s.Endpoint = ctr.ID, ctr.Endpoint })
	if err := r.waitHealthy(sctx, ctr, pc); err != nil {
		r.removeContainer(ctr.ID, pc.Supervisor.StopTimeout)
		return sandbox.Container{}, fmt.Errorf("start %s: %w", ctr.Name, err)
	}
	return ctr, nil
}

// waitHealthy probes until the plugin answers, the container exits, or ctx (bounded by
// start_timeout) ends.
func (r *Runner) waitHealthy(ctx context.Context, ctr sandbox.Container, pc *config.Plugin) error {
	published := r.cfg.Runner.Reach != config.ReachAddress
	h := pc.Supervisor.Health
	tick := time.NewTicker(startPollInterval)
	defer tick.Stop()
	var lastErr error
	lastInspect := time.Now()
	for {
		if lastErr = r.prober.probe(ctx, ctr.Endpoint, h, published); lastErr == nil {
			return nil
		}
		// A container that exited will never become healthy: say why at once instead
		// of waiting out start_timeout.
		if time.Since(lastInspect) > 500*time.Millisecond {
			lastInspect = time.Now()
			if cur, err := r.sb.Inspect(ctx, ctr.ID); err == nil && !cur.Running {
				return exitError(cur)
			}
		}
		select {
		case <-ctx.Done():
			if errors.Is(ctx.Err(), context.DeadlineExceeded) {
				return fmt.Errorf("not healthy within start_timeout %s: %w", pc.Supervisor.StartTimeout, lastErr)
			}
			return ctx.Err()
		case <-tick.C:
		}
	}
}

func exitError(c sandbox.Container) error {
	switch {
	case c.OOMKilled:
		return fmt.Errorf("container exited: OOM killed (exit code %d)", c.ExitCode)
	case c.Error != "":
		return fmt.Errorf("container exited with code %d: %s", c.ExitCode, c.Error)
	default:
		return fmt.Errorf("container exited with code %d before becoming healthy", c.ExitCode)
	}
}

// removeContainer stops (SIGTERM, grace, SIGKILL) and removes a container with a fresh
// context: cleanup must happen even when the caller's context is what ended.
func (r *Runner) removeContainer(id string, grace time.Duration) {
	ctx, cancel := context.WithTimeout(context.Background(), grace+time.Minute)
	defer cancel()
	if err := r.sb.Stop(ctx, id, grace); err != nil {
		r.log.Warn("stop container", "container", id, "err", err)
	}
	if err := r.sb.Remove(ctx, id); err != nil {
		r.log.Warn("remove container", "container", id, "err", err)
	}
}

package runner

import (
	"context"
	"errors"
	"fmt"
	"io"

	"github.com/xcore/runner/config"
)

// ErrUnknownPlugin is returned for a plugin name that is not configured.
var ErrUnknownPlugin = errors.New("unknown plugin")

// ReloadResult is what a reload did: the plan it applies, or why it applied nothing.
type ReloadResult struct {
	Applied     bool     `json:"applied"`
	Plan        string   `json:"plan,omitempty"`        // one line per plugin (see Plan.String)
	Changes     bool     `json:"changes"`               // whether the plan changes anything
	Diagnostics []string `json:"diagnostics,omitempty"` // file:line:col: problem, when rejected
}

// ReloadNow validates the config files and, when they are valid, applies them (like
// SIGHUP) and returns the plan being applied. An invalid config changes nothing and
// its diagnostics are returned.
func (r *Runner) ReloadNow(ctx context.Context) (ReloadResult, error) {
	if r.cfgPath == "" {
		return ReloadResult{}, errors.New("reload: the runner was started without a config file")
	}
	cfg, _, diags := config.Load(r.cfgPath)
	if diags.HasErrors() || cfg == nil {
		res := ReloadResult{}
		for _, d := range diags {
			res.Diagnostics = append(res.Diagnostics, d.Error())
		}
		r.log.Error("config reload rejected; nothing changed", "diagnostics", diags.Error())
		r.publish(Event{Type: EventReload, Message: "rejected, nothing changed: " + diags.Error()})
		return res, nil
	}
	observed, err := r.sb.List(ctx)
	if err != nil {
		return ReloadResult{}, fmt.Errorf("reload: %w", err)
	}
	plan := MakePlan(Desire(ctx, cfg, r.sb.ResolveImage), observed)
	r.Reload()
	return ReloadResult{Applied: true, Plan: plan.String(), Changes: plan.Changes()}, nil
}

// Restart replaces a plugin's container start-first with a fresh one of the same spec.
// A failed plugin is started again with a fresh restart budget.
func (r *Runner) Restart(name string) error {
	r.mu.Lock()
	s := r.sups[name]
	r.mu.Unlock()
	if s == nil {
		return fmt.Errorf("restart %s: %w", name, ErrUnknownPlugin)
	}
	s.requestRestart()
	return nil
}

// Logs streams the logs of the plugin's serving container (stdout and stderr
// interleaved). tail < 0: all of it. The reader must be closed.
func (r *Runner) Logs(ctx context.Context, name string, follow bool, tail int) (io.ReadCloser, error) {
	r.mu.Lock()
	s := r.sups[name]
	r.mu.Unlock()
	if s == nil {
		return nil, fmt.Errorf("logs of %s: %w", name, ErrUnknownPlugin)
	}
	id := s.snapshot().Container
	if id == "" {
		return nil, fmt.Errorf("logs of %s: no container runs for it (state %s)", name, s.snapshot().State)
	}
	return r.sb.Logs(ctx, id, follow, tail)
}

// Status returns one plugin's status.
func (r *Runner) Status(name string) (Status, error) {
	r.mu.Lock()
	s := r.sups[name]
	r.mu.Unlock()
	if s == nil {
		return Status{}, fmt.Errorf("%s: %w", name, ErrUnknownPlugin)
	}
	return s.snapshot(), nil
}

package runner

import (
	"context"
	"errors"
	"fmt"
	"io"
)

// ErrUnknownPlugin is returned for a plugin name that is not configured.
var ErrUnknownPlugin = errors.New("unknown plugin")

// ErrNoPrevious: no instance of the plugin was removed since the runner started.
var ErrNoPrevious = errors.New("no previous container (none was removed since the runner started)")

// Restart replaces a plugin's instances start-first with fresh ones of the same spec.
// A failed plugin is started again with a fresh restart budget.
func (r *Runner) Restart(name string) error {
	r.mu.Lock()
	s := r.sups[name]
	r.mu.Unlock()
	if s == nil {
		return fmt.Errorf("restart %s: %w", name, ErrUnknownPlugin)
	}
	r.images.retryFailed(r.config().Plugins[name]) // a plugin failed on its image pulls it again
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
	st := s.snapshot()
	r.images.overlay(&st)
	return st, nil
}

package runner

import (
	"context"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/xcore/runner/sandbox"
)

// previousLogLines and previousLogBytes bound what the runner keeps of the log of an
// instance it removes (a crash, a failed health check, a replacement): enough for the
// last words of a crash (`runner logs --previous`, like `kubectl logs --previous`),
// little enough for hundreds of plugins.
const (
	previousLogLines = 200
	previousLogBytes = 64 << 10
)

// PreviousLog is the end of the log of a plugin's last removed instance.
type PreviousLog struct {
	Container  string    // its name
	Generation int       // and generation
	Replica    int       //
	Removed    time.Time // when the runner removed it
	Text       string    // its last lines (stdout and stderr)
}

// keepLastWords saves the end of the log of c, stopped and about to be removed.
func (r *Runner) keepLastWords(ctx context.Context, c sandbox.Instance) {
	if c.Plugin == "" || r.ctx.Err() != nil {
		return // a shutdown removes everything: nothing to compare with later
	}
	rc, err := r.sb.Logs(ctx, c.ID, false, previousLogLines)
	if err != nil {
		r.log.Debug("keep the log of a removed container", "container", c.Name, "err", err)
		return
	}
	defer rc.Close()
	b, _ := io.ReadAll(io.LimitReader(rc, 4*previousLogBytes))
	if len(b) > previousLogBytes {
		b = b[len(b)-previousLogBytes:] // the end is what matters
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.previous == nil {
		r.previous = map[string]PreviousLog{}
	}
	r.previous[c.Plugin] = PreviousLog{Container: c.Name, Generation: c.Generation, Replica: c.Replica, Removed: time.Now(), Text: string(b)}
}

// PreviousLogs returns the end of the log of the plugin's last removed instance.
func (r *Runner) PreviousLogs(name string) (PreviousLog, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.sups[name] == nil {
		return PreviousLog{}, fmt.Errorf("logs of %s: %w", name, ErrUnknownPlugin)
	}
	p, ok := r.previous[name]
	if !ok {
		return PreviousLog{}, fmt.Errorf("logs of %s: %w", name, ErrNoPrevious)
	}
	if !strings.HasSuffix(p.Text, "\n") && p.Text != "" {
		p.Text += "\n"
	}
	return p, nil
}

package admin

import (
	"context"
	"fmt"
	"sync"

	"github.com/xcore/runner/runner"
)

// History keeps the most recent events for the status page, so that it shows what
// happened before it was opened.
type History struct {
	mu   sync.Mutex
	size int
	buf  []runner.Event // ring
	next int
	last map[string]string // plugin → "state/generation" of its last state event
}

// NewHistory keeps the last size events.
func NewHistory(size int) *History { return &History{size: max(1, size)} }

// Run records the events of a runner subscription until ctx ends or the channel closes.
// Failed health probes are left out: they come every interval while a plugin is sick.
func (h *History) Run(ctx context.Context, events <-chan runner.Event) {
	for {
		select {
		case <-ctx.Done():
			return
		case ev, ok := <-events:
			if !ok {
				return
			}
			if ev.Type != runner.EventProbeFailed {
				h.add(ev)
			}
		}
	}
}

func (h *History) add(ev runner.Event) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if ev.Type == runner.EventState && ev.Status != nil {
		key := fmt.Sprintf("%s/%d", ev.Status.State, ev.Status.Generation)
		if h.last[ev.Plugin] == key {
			return // a status update that changed neither state nor generation
		}
		if h.last == nil {
			h.last = map[string]string{}
		}
		h.last[ev.Plugin] = key
	}
	if len(h.buf) < h.size {
		h.buf = append(h.buf, ev)
		return
	}
	h.buf[h.next] = ev
	h.next = (h.next + 1) % h.size
}

// Recent returns the kept events, newest first.
func (h *History) Recent() []runner.Event {
	if h == nil {
		return nil
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	out := make([]runner.Event, 0, len(h.buf))
	for i := len(h.buf) - 1; i >= 0; i-- {
		out = append(out, h.buf[(h.next+i)%len(h.buf)])
	}
	return out
}

// eventText is what the status page says about an event (app.js says the same).
func eventText(ev runner.Event) string {
	switch ev.Type {
	case runner.EventState:
		if ev.Status == nil {
			return ""
		}
		if ev.Status.Generation > 0 {
			return fmt.Sprintf("%s (generation %d)", ev.Status.State, ev.Status.Generation)
		}
		return string(ev.Status.State)
	case runner.EventReplaced:
		return fmt.Sprintf("%s in %.1fs", ev.Reason, ev.Duration.Seconds())
	case runner.EventReplacing, runner.EventCrash:
		return ev.Reason
	case runner.EventRestart:
		return "started again after a crash"
	case runner.EventPullStarted:
		if ev.Reason != "" {
			return "pulling " + ev.Image + " (" + ev.Reason + ")"
		}
		return "pulling " + ev.Image
	case runner.EventPullDone:
		return fmt.Sprintf("pulled %s %.19s in %.1fs", ev.Image, ev.Digest, ev.Duration.Seconds())
	case runner.EventPullFailed:
		return "pull of " + ev.Image + " failed: " + ev.Message
	}
	if ev.Message != "" {
		return ev.Message
	}
	return ev.Reason
}

// eventBad tells the events the page shows in red.
func eventBad(ev runner.Event) bool {
	switch ev.Type {
	case runner.EventCrash, runner.EventReplaceFail, runner.EventPullFailed:
		return true
	case runner.EventReload:
		return !ev.OK
	case runner.EventState:
		return ev.Status != nil && ev.Status.State == runner.StateFailed
	}
	return false
}

package swarm

import (
	"context"
	"errors"
	"fmt"
	"runtime/debug"
	"slices"
	"time"

	cerrdefs "github.com/containerd/errdefs"
	"github.com/moby/moby/api/types/events"
	"github.com/moby/moby/api/types/swarm"
	"github.com/moby/moby/client"
	"github.com/sethvargo/go-retry"

	"github.com/xcore/runner/sandbox"
	"github.com/xcore/runner/sandbox/internal/engine"
)

// engineStopWindow: deaths this long before the stream was lost may be the engine's
// doing (as in the docker backend: a stopping engine stops the tasks of its node).
const engineStopWindow = time.Minute

// Events streams what the runner must look at again until ctx ends, then closes the
// channel: EventResync when the engine's event stream (re)connects, EventImage for image
// changes on the manager, and EventDie for each task of this runner that stopped on its
// own (failed, completed, rejected, or orphaned by a lost node). Engine API 1.41 has no
// task events, so deaths come from listing the runner's tasks every PollInterval, and at
// once after a service event or a change this client made. A task Swarm stops (its
// service removed, a scale-down) is no death.
func (c *Client) Events(ctx context.Context) <-chan sandbox.Event {
	out := make(chan sandbox.Event)
	kick := make(chan struct{}, 1)
	done := make(chan struct{})
	go func() {
		defer close(done)
		defer c.recoverLoop("swarm events stream")
		c.stream(ctx, out, kick)
	}()
	go func() {
		defer close(out)
		defer func() { <-done }()
		defer c.recoverLoop("swarm task poller")
		c.poll(ctx, out, kick)
	}()
	return out
}

func (c *Client) recoverLoop(what string) {
	if r := recover(); r != nil {
		c.log.Error(what+" panicked", "panic", r, "stack", string(debug.Stack()))
	}
}

// stream forwards the engine's image events and turns service events into polls,
// reconnecting with capped backoff; the first value after each (re)connection is an
// EventResync, which after a lost stream says since when deaths may be the engine's.
func (c *Client) stream(ctx context.Context, out chan<- sandbox.Event, kick chan<- struct{}) {
	var lostAt time.Time // when the last stream that was up went down; zero before
	failing := false     // attempts fail since lostAt (or since the start)
	for ctx.Err() == nil {
		sctx, cancel := context.WithCancel(ctx)
		res := c.api.Events(sctx, client.EventsListOptions{Filters: client.Filters{}.Add("type", string(events.ServiceEventType), string(events.ImageEventType))})
		ev := sandbox.Event{Kind: sandbox.EventResync}
		if !lostAt.IsZero() {
			ev.EngineStopped = lostAt.Add(-engineStopWindow)
		}
		err := c.pump(sctx, res, out, kick, ev)
		cancel()
		for range res.Err { // the client's reader has exited once Err is closed
		}
		if ctx.Err() != nil {
			return
		}
		switch {
		case !errors.Is(err, errNotConnected):
			lostAt, failing = time.Now(), false
			c.log.Warn("swarm events stream lost; reconnecting with backoff", "err", err)
		case !failing:
			failing = true
			c.log.Warn("swarm events stream unavailable; reconnecting with backoff", "err", err)
		}
		// Wait for the engine: exponential from 250ms, capped at 10s.
		b := retry.WithCappedDuration(10*time.Second, retry.WithJitterPercent(20, retry.NewExponential(250*time.Millisecond)))
		_ = retry.Do(ctx, b, func(ctx context.Context) error {
			if _, err := c.api.Ping(ctx, client.PingOptions{}); err != nil {
				return retry.RetryableError(err)
			}
			return nil
		})
	}
}

var errNotConnected = errors.New("events stream not connected")

// pump sends first (once connected) then forwards events until the stream fails.
func (c *Client) pump(ctx context.Context, res client.EventsResult, out chan<- sandbox.Event, kick chan<- struct{}, first sandbox.Event) error {
	// The engine answers the subscription before anything is sent; a failed request
	// shows on Err at once.
	select {
	case err := <-res.Err:
		return fmt.Errorf("%w: %v", errNotConnected, err)
	case <-time.After(100 * time.Millisecond):
	case <-ctx.Done():
		return ctx.Err()
	}
	if !send(ctx, out, first) {
		return ctx.Err()
	}
	nudge(kick)
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case err := <-res.Err:
			if err == nil {
				err = errors.New("closed")
			}
			return err
		case m := <-res.Messages:
			switch {
			case m.Type == events.ServiceEventType:
				nudge(kick)
			case m.Type == events.ImageEventType && slices.Contains(engine.ImageActions, m.Action):
				ref := m.Actor.Attributes["name"]
				if ref == "" {
					ref = m.Actor.ID
				}
				if !send(ctx, out, sandbox.Event{Kind: sandbox.EventImage, Image: ref}) {
					return ctx.Err()
				}
			}
		}
	}
}

func nudge(kick chan<- struct{}) {
	select {
	case kick <- struct{}{}:
	default:
	}
}

func send(ctx context.Context, out chan<- sandbox.Event, ev sandbox.Event) bool {
	select {
	case out <- ev:
		return true
	case <-ctx.Done():
		return false
	}
}

// watched is a running task the poller knows.
type watched struct {
	plugin string
	gen    int
}

// poll lists the runner's running tasks every PollInterval, or at once when kicked, and
// reports the ones that stopped on their own.
func (c *Client) poll(ctx context.Context, out chan<- sandbox.Event, kick <-chan struct{}) {
	t := time.NewTicker(PollInterval)
	defer t.Stop()
	var running map[string]watched // nil until the first listing: nothing to compare with
	failing := false
	for {
		now, err := c.List(ctx)
		switch {
		case err != nil && ctx.Err() == nil:
			if !failing {
				c.log.Warn("list swarm tasks; retrying", "err", err)
			}
			failing = true
		case err == nil:
			if failing {
				c.log.Info("listing swarm tasks again")
				failing = false
			}
			next := make(map[string]watched, len(now))
			listed := make(map[string]sandbox.Instance, len(now))
			for _, inst := range now {
				listed[inst.ID] = inst
				if inst.Running {
					next[inst.ID] = watched{inst.Plugin, inst.Generation}
				}
			}
			for id, w := range running {
				if _, ok := next[id]; ok {
					continue
				}
				if ev, ok := c.death(ctx, id, w, listed); ok && !send(ctx, out, ev) {
					return
				}
			}
			running = next
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-kick:
		case <-c.kick:
		}
	}
}

// death decides whether task id, running at the last listing and not now, died on its
// own: true with the EventDie to send.
func (c *Client) death(ctx context.Context, id string, w watched, listed map[string]sandbox.Instance) (sandbox.Event, bool) {
	ev := sandbox.Event{Kind: sandbox.EventDie, InstanceID: id, Plugin: w.plugin, Generation: w.gen, ExitCode: -1}
	var state swarm.TaskState
	if inst, ok := listed[id]; ok {
		// Still wanted, no longer running: it stopped under Swarm's feet.
		state, ev.ExitCode = swarm.TaskState(inst.Status), inst.ExitCode
	} else {
		cctx, cancel := context.WithTimeout(ctx, callTimeout)
		res, err := c.api.TaskInspect(cctx, id, client.TaskInspectOptions{})
		cancel()
		switch {
		case cerrdefs.IsNotFound(err):
			return sandbox.Event{}, false // its service was removed
		case err != nil:
			return ev, true // unknown: the runner inspects it again and decides
		}
		state = res.Task.Status.State
		if cs := res.Task.Status.ContainerStatus; cs != nil {
			ev.ExitCode = cs.ExitCode
		}
	}
	switch state {
	case swarm.TaskStateShutdown, swarm.TaskStateRemove, swarm.TaskStateRunning:
		// Stopped by Swarm (a removed service, a scale-down), or still running while
		// no longer wanted: Swarm is stopping it.
		return sandbox.Event{}, false
	}
	c.log.Debug("task stopped", "task", id, "plugin", w.plugin, "generation", w.gen, "state", state, "exit_code", ev.ExitCode)
	return ev, true
}

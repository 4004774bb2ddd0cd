package docker

import (
	"context"
	"errors"
	"fmt"
	"runtime/debug"
	"slices"
	"strconv"
	"time"

	"github.com/moby/moby/api/types/events"
	"github.com/moby/moby/client"
	"github.com/sethvargo/go-retry"

	"github.com/xcore/runner/sandbox"
	"github.com/xcore/runner/sandbox/internal/engine"
)

// containerActions are the container events the supervisors react to.
var containerActions = []events.Action{events.ActionDie, events.ActionOOM}

// engineStopWindow: deaths this long before the stream was lost may be the engine's
// doing. A stopping dockerd stops every container (SIGTERM, each its stop timeout)
// before its API goes: the plugins exit, cleanly or not, and that is no verdict on them.
const engineStopWindow = time.Minute

// Backoff between reconnection attempts of the events stream.
const (
	eventsBackoffBase = 250 * time.Millisecond
	eventsBackoffCap  = 10 * time.Second
)

// Events streams the engine's events relevant to this runner until ctx ends, then closes
// the channel. It watches image events that can change what a reference resolves to, and
// die/oom of the containers labelled with this runner's id.
//
// The first value after every (re)connection is an EventResync: events that happened
// while the stream was down are lost, so the receiver must re-list (traefik#5833: a
// provider that went stale after a dockerd restart). When the stream fails, Events
// reconnects with capped exponential backoff and jitter, for as long as ctx lives, and
// logs a warning once per outage and an info line when it is back. Sends never block
// past the end of ctx.
func (c *Client) Events(ctx context.Context) <-chan sandbox.Event {
	out := make(chan sandbox.Event)
	go func() {
		defer close(out)
		defer func() {
			if r := recover(); r != nil {
				c.log.Error("docker events loop panicked", "panic", r, "stack", string(debug.Stack()))
			}
		}()
		c.eventsLoop(ctx, out)
	}()
	return out
}

func (c *Client) eventsLoop(ctx context.Context, out chan<- sandbox.Event) {
	var downSince time.Time // zero while connected or before the first attempt failed
	connected := false      // a stream was up once
	for {
		// A fresh backoff per outage: after a healthy stretch we start again from the base.
		sub, err := retry.DoValue(ctx, eventsBackoff(), func(ctx context.Context) (*eventStreams, error) {
			sub, err := c.subscribe(ctx)
			if err == nil {
				return sub, nil
			}
			if ctx.Err() != nil {
				return nil, err
			}
			if downSince.IsZero() {
				downSince = time.Now()
				c.log.Warn("docker events stream unavailable; reconnecting with backoff", "err", err)
			} else {
				c.log.Debug("docker events stream still unavailable", "err", err)
			}
			return nil, retry.RetryableError(err)
		})
		if err != nil {
			return // only ctx ends the retries
		}
		var lostAt time.Time // zero on the first connection: nothing was lost yet
		if connected {
			lostAt = downSince
		}
		connected = true
		if !downSince.IsZero() {
			c.log.Info("docker events stream reconnected", "down_for", time.Since(downSince).Round(time.Millisecond))
			downSince = time.Time{}
		}

		err = c.pump(ctx, sub, out, lostAt)
		sub.close()
		if ctx.Err() != nil {
			return
		}
		downSince = time.Now()
		c.log.Warn("docker events stream lost; reconnecting with backoff", "err", err)
	}
}

// eventsBackoff: exponential from 250ms with ±20% jitter, never above 10s. The cap is
// applied before the jitter (so waits at the cap still spread out) and after it.
func eventsBackoff() retry.Backoff {
	b := retry.NewExponential(eventsBackoffBase)
	b = retry.WithCappedDuration(eventsBackoffCap, b)
	b = retry.WithJitterPercent(20, b)
	return retry.WithCappedDuration(eventsBackoffCap, b)
}

// eventStreams is one connection: two engine streams, because the engine ANDs filters of
// different keys, so "image events OR our containers' die/oom" needs two subscriptions.
type eventStreams struct {
	cancel     context.CancelFunc
	images     client.EventsResult
	containers client.EventsResult
}

// subscribe opens both streams. The engine subscribes before it answers the request, so
// once this returns, no event is missed until the streams fail.
func (c *Client) subscribe(ctx context.Context) (*eventStreams, error) {
	// Ping first: Events reports a failed connection asynchronously, on its error channel.
	if err := c.Ping(ctx); err != nil {
		return nil, err
	}
	sctx, cancel := context.WithCancel(ctx)
	s := &eventStreams{cancel: cancel}
	s.images = c.api.Events(sctx, client.EventsListOptions{
		Filters: client.Filters{}.Add("type", string(events.ImageEventType)).Add("event", actionStrings(engine.ImageActions)...),
	})
	s.containers = c.api.Events(sctx, client.EventsListOptions{
		Filters: client.Filters{}.
			Add("type", string(events.ContainerEventType)).
			Add("label", sandbox.LabelRunner+"="+c.runnerID).
			Add("event", actionStrings(containerActions)...),
	})
	// A request that failed outright has (almost always) reported it by now.
	for _, errs := range []<-chan error{s.images.Err, s.containers.Err} {
		select {
		case err := <-errs:
			s.close()
			return nil, fmt.Errorf("subscribe to docker events: %w", err)
		default:
		}
	}
	return s, nil
}

// close ends both streams and waits for the client's reader goroutines to exit (each
// closes its error channel on the way out).
func (s *eventStreams) close() {
	s.cancel()
	for range s.images.Err {
	}
	for range s.containers.Err {
	}
}

// pump sends EventResync (with lostAt), then forwards mapped events until a stream fails
// (returning why) or ctx ends.
func (c *Client) pump(ctx context.Context, s *eventStreams, out chan<- sandbox.Event, lostAt time.Time) error {
	ev := sandbox.Event{Kind: sandbox.EventResync}
	if !lostAt.IsZero() {
		ev.EngineStopped = lostAt.Add(-engineStopWindow)
	}
	if !send(ctx, out, ev) {
		return ctx.Err()
	}
	for {
		var msg events.Message
		select {
		case <-ctx.Done():
			return ctx.Err()
		case err := <-s.images.Err:
			return streamEnded("image", err)
		case err := <-s.containers.Err:
			return streamEnded("container", err)
		case msg = <-s.images.Messages:
		case msg = <-s.containers.Messages:
		}
		ev, ok := toEvent(msg, c.runnerID)
		if !ok {
			continue
		}
		c.log.Debug("docker event", "kind", ev.Kind, "action", msg.Action, "id", msg.Actor.ID)
		if ev.Kind == sandbox.EventDie {
			// The engine frees a dead container's address for the next one to start,
			// which must not inherit its egress: unregistered now, not at its removal.
			c.forget(ctx, ev.InstanceID)
		}
		if !send(ctx, out, ev) {
			return ctx.Err()
		}
	}
}

func streamEnded(which string, err error) error {
	if err == nil {
		err = errors.New("closed")
	}
	return fmt.Errorf("docker %s events stream: %w", which, err)
}

func send(ctx context.Context, out chan<- sandbox.Event, ev sandbox.Event) bool {
	select {
	case out <- ev:
		return true
	case <-ctx.Done():
		return false
	}
}

// toEvent maps an engine message to an Event; false means "not relevant to this runner".
// The engine already filters, but a container event counts only when it carries our
// runner label, whatever filter produced it.
func toEvent(m events.Message, runnerID string) (sandbox.Event, bool) {
	switch m.Type {
	case events.ImageEventType:
		if !slices.Contains(engine.ImageActions, m.Action) {
			return sandbox.Event{}, false
		}
		ref := m.Actor.Attributes["name"]
		if ref == "" {
			ref = m.Actor.ID
		}
		return sandbox.Event{Kind: sandbox.EventImage, Image: ref}, true

	case events.ContainerEventType:
		attrs := m.Actor.Attributes
		if id, ok := attrs[sandbox.LabelRunner]; !ok || id != runnerID {
			return sandbox.Event{}, false
		}
		ev := sandbox.Event{InstanceID: m.Actor.ID, Plugin: attrs[sandbox.LabelPlugin]}
		if g, err := strconv.Atoi(attrs[sandbox.LabelGeneration]); err == nil {
			ev.Generation = g
		}
		switch m.Action {
		case events.ActionDie:
			ev.Kind = sandbox.EventDie
			ev.ExitCode = -1
			if code, err := strconv.Atoi(attrs["exitCode"]); err == nil {
				ev.ExitCode = code
			}
		case events.ActionOOM:
			ev.Kind = sandbox.EventOOM
		default:
			return sandbox.Event{}, false
		}
		return ev, true
	}
	return sandbox.Event{}, false
}

func actionStrings(list []events.Action) []string {
	s := make([]string, len(list))
	for i, a := range list {
		s[i] = string(a)
	}
	return s
}

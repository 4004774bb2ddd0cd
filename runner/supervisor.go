package runner

import (
	"context"
	"reflect"
	"sync"
	"sync/atomic"
	"time"

	"github.com/xcore/runner/config"
	"github.com/xcore/runner/sandbox"
)

// supervisor owns one plugin. Its loop (run) is the only code that changes the plugin's
// generations and instances, and it only decides: starting an instance, waiting for it
// to be healthy, probing, draining, stopping and removing run in goroutines it starts,
// which report back on its results channel. So the loop never waits for the engine or a
// plugin, and acts at once on a death, a restart request or a removal, whatever else is
// under way. Everything else talks to it through its mailbox and reads its Status.
type supervisor struct {
	r    *Runner
	name string

	mu     sync.Mutex
	status Status
	mail   mailbox
	owned  map[int]bool // generations the loop holds (read by the orphan sweep)
	wake   chan struct{}

	results    chan result        // from the goroutines the loop started
	events     chan sandbox.Event // die/oom of this plugin's instances
	settled    chan struct{}      // closed once the first desired state reached a verdict
	settleOnce sync.Once
	quit       chan struct{}   // closed when the loop returns: results go nowhere
	done       chan struct{}   // closed when the loop and its goroutines are done
	after      <-chan struct{} // a predecessor of the same name that must be gone first
	dead       atomic.Bool     // the loop panicked: the next reconcile replaces the supervisor
	engineSeen atomic.Int64    // the last "engine stopped at" the loop decided on (UnixNano)
	submitted  atomic.Uint64   // desired states submitted
	applied    atomic.Uint64   // desired states the loop has decided on

	// Owned by the loop.
	want       *work         // the desired state it converges on
	cur        *generation   // the generation that serves, or is to
	next       *generation   // starting, to replace cur
	old        []*generation // retiring: draining, stopping, removing
	adopt      *Op           // the start-up plan for this plugin, taken by the first apply
	failedHash string        // a desired state whose start failed: not retried until it changes
	failReason string        // why the plugin is failed ("" while it is not)
	budget     *restartBudget
	diedFailed time.Time // when a death left the plugin failed
	ops        int       // goroutines started and not yet reported
	restarts   int       // instances started again after a crash or failed probes
	removing   bool      // the plugin left the config: wind down, then return
	obsAt      time.Time // the last observation applied
}

// mailbox holds what the loop has not taken yet. The desired state and the engine's
// observation are levels (a newer one replaces an older); restart, removal and "the
// engine stopped" are edges (requests that a level update never overwrites).
type mailbox struct {
	desired       *work
	seq           uint64 // of desired
	obs           *observation
	restart       bool
	remove        bool
	engineStopped time.Time
}

// work is a desired state: the plugin's config and its rendered snapshot.
type work struct {
	cfg *config.Plugin
	d   Desired
}

// observation is what the engine listed of the plugin's instances at a moment.
type observation struct {
	at        time.Time
	instances []sandbox.Instance
}

func newSupervisor(r *Runner, name string, adopt *Op, after <-chan struct{}) *supervisor {
	return &supervisor{
		r: r, name: name, adopt: adopt, after: after,
		status: Status{Name: name, State: StatePending},
		owned:  map[int]bool{},
		wake:   make(chan struct{}, 1), settled: make(chan struct{}), quit: make(chan struct{}), done: make(chan struct{}),
		results: make(chan result, 16), events: make(chan sandbox.Event, 16),
	}
}

// post records a request under mu and wakes the loop.
func (s *supervisor) post(set func(*mailbox)) {
	s.mu.Lock()
	set(&s.mail)
	s.mu.Unlock()
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

// submit sets the desired state and the engine's latest observation of the plugin (nil:
// none). A burst of reloads converges on the last desired state.
func (s *supervisor) submit(w work, obs *observation) {
	s.post(func(m *mailbox) {
		m.desired, m.seq = &w, s.submitted.Add(1)
		if obs != nil {
			m.obs = obs
		}
	})
}

// requestRestart asks for fresh instances (admin API, `runner restart`).
func (s *supervisor) requestRestart() { s.post(func(m *mailbox) { m.restart = true }) }

// requestRemove: the plugin left the config.
func (s *supervisor) requestRemove() { s.post(func(m *mailbox) { m.remove = true }) }

// engineBack tells the supervisor that the engine stopped at t and is back: a plugin
// that a death after t left failed starts again.
func (s *supervisor) engineBack(t time.Time) {
	s.post(func(m *mailbox) {
		if t.After(m.engineStopped) {
			m.engineStopped = t
		}
	})
}

// notify hands an engine event to the loop without blocking the event stream: a full
// queue drops it, and the next observation notices instead.
func (s *supervisor) notify(ev sandbox.Event) {
	select {
	case s.events <- ev:
	default:
		s.r.log.Warn("event queue full; dropping", "plugin", s.name, "event", ev.Kind)
	}
}

func (s *supervisor) take() mailbox {
	s.mu.Lock()
	defer s.mu.Unlock()
	m := s.mail
	s.mail = mailbox{}
	return m
}

func (s *supervisor) snapshot() Status {
	s.mu.Lock()
	defer s.mu.Unlock()
	st := s.status
	st.Instances = append([]InstanceStatus(nil), st.Instances...)
	return st
}

// update changes the status and publishes it, when it changed.
func (s *supervisor) update(f func(*Status)) {
	s.mu.Lock()
	before := s.status
	before.Instances = append([]InstanceStatus(nil), before.Instances...)
	f(&s.status)
	st := s.status
	changed := !reflect.DeepEqual(before, st)
	s.mu.Unlock()
	if changed {
		s.r.emit(st)
	}
}

// ownsGeneration reports whether the loop holds generation gen (orphan sweep).
func (s *supervisor) ownsGeneration(gen int) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.owned[gen]
}

func (s *supervisor) setOwned(gen int, held bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if held {
		s.owned[gen] = true
	} else {
		delete(s.owned, gen)
	}
}

// run is the loop. It returns when ctx ends (Shutdown removes every instance by label)
// or when the plugin was removed and everything it ran is gone.
func (s *supervisor) run(ctx context.Context) {
	defer close(s.quit)
	defer s.closeProbes()
	if s.after != nil {
		select {
		case <-s.after:
		case <-ctx.Done():
			return
		}
	}
	health := time.NewTicker(time.Hour)
	defer health.Stop()
	interval := time.Duration(0)
	for {
		// The probe interval is a runner-side setting: it follows the live config.
		if s.cur != nil && s.cur.cfg.Supervisor.Health.Interval != interval {
			interval = s.cur.cfg.Supervisor.Health.Interval
			health.Reset(interval)
		}
		select {
		case <-ctx.Done():
			return
		case <-s.wake:
			s.onMail(ctx, s.take())
		case res := <-s.results:
			s.ops--
			s.onResult(ctx, res)
		case ev := <-s.events:
			s.onEvent(ev)
		case <-health.C:
			s.probeAll()
		}
		if s.removing && s.ops == 0 {
			s.update(func(st *Status) { st.State, st.Ready, st.Instances = StateStopped, 0, nil })
			s.r.log.Info("plugin removed", "plugin", s.name)
			return
		}
	}
}

// closeProbes closes the kept probe connections no probe uses (those that one uses are
// closed by it: see goOp).
func (s *supervisor) closeProbes() {
	for _, g := range append([]*generation{s.cur, s.next}, s.old...) {
		if g != nil {
			for _, sl := range g.slots {
				closeProbe(sl)
			}
		}
	}
}

// settle marks the first verdict (serving or failed): Start waits for it.
func (s *supervisor) settle() { s.settleOnce.Do(func() { close(s.settled) }) }

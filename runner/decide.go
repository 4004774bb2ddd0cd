package runner

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/xcore/runner/config"
	"github.com/xcore/runner/snapshot"
)

// This file is the supervisor's decisions on its mailbox: desired states, restarts,
// removal, the engine coming back. Each decision starts work (ops.go) and returns.

func (s *supervisor) onMail(ctx context.Context, m mailbox) {
	if m.remove && !s.removing {
		s.beginRemoval()
		return
	}
	if s.removing {
		return
	}
	if m.desired != nil {
		s.apply(ctx, m.desired)
	}
	if m.obs != nil {
		s.observe(m.obs)
	}
	if !m.engineStopped.IsZero() && s.failReason != "" && s.diedFailed.After(m.engineStopped) {
		s.r.log.Info("restarting a plugin that died as the engine went away", "plugin", s.name)
		m.restart = true
	}
	if m.restart {
		s.restartNow(ctx)
	}
	s.refresh()
	s.settleIfDecided()
	if !m.engineStopped.IsZero() {
		s.engineSeen.Store(m.engineStopped.UnixNano())
	}
	if m.desired != nil {
		s.applied.Store(m.seq)
	}
}

// caughtUp reports whether the loop has decided on every desired state submitted.
func (s *supervisor) caughtUp() bool { return s.applied.Load() == s.submitted.Load() }

// apply converges the plugin on w: start, adopt, scale, replace start-first, or only
// update the runner-side settings of what runs.
func (s *supervisor) apply(ctx context.Context, w *work) {
	if op := s.adopt; op != nil {
		s.adopt = nil
		s.takeOver(ctx, op, w)
	}
	if s.want == nil || s.want.d.Hash != w.d.Hash || s.want.cfg.Supervisor.Restart != w.cfg.Supervisor.Restart {
		s.budget = newRestartBudget(w.cfg.Supervisor.Restart)
	}
	s.want = w
	if w.d.Err == nil && s.failReason == "" && w.d.Hash != s.failedHash && s.snapshot().LastError != "" {
		// A config that resolves again clears the error of the one that did not.
		s.update(func(st *Status) { st.LastError = "" })
	}

	switch {
	case isPulling(w.d.Err):
		s.awaitImage() // images.go: not failed, not ready yet; what serves keeps serving
	case w.d.Err != nil && s.serving():
		// Keep serving what runs: a tag that vanished is no reason to stop a plugin.
		s.r.log.Error("cannot apply change; current generation keeps serving", "plugin", s.name, "err", w.d.Err)
		s.update(func(st *Status) { st.LastError = w.d.Err.Error() })
	case w.d.Err != nil:
		if s.cur != nil {
			s.retire(s.cur) // a start under way for what was wanted before: not wanted now
			s.cur = nil
		}
		if s.failReason != w.d.Err.Error() {
			s.fail(w.d.Err.Error(), "")
		}
	case s.cur == nil:
		if w.d.Hash == s.failedHash {
			return // failed before with this very state: waits for a change or a restart
		}
		s.startCurrent(ctx, w, "")
	case s.next != nil && s.next.d.Hash == w.d.Hash:
		// Being started already (a replacement, or a restart of the same snapshot).
		s.liveUpdate(ctx, s.next, w)
		if s.cur.d.Hash == w.d.Hash {
			s.liveUpdate(ctx, s.cur, w)
		}
	case s.cur.d.Hash == w.d.Hash:
		// What runs is wanted: timeouts, limits, health and replicas apply live.
		s.liveUpdate(ctx, s.cur, w)
		if s.next != nil {
			s.r.log.Info("replacement no longer wanted: the running generation matches again", "plugin", s.name, "generation", s.next.num)
			s.retire(s.next)
			s.next = nil
		}
	case w.d.Hash == s.failedHash:
		// Reloads and engine events resubmit the same desired state; a start that
		// failed is retried on the next change, not on every wake-up.
		s.r.log.Debug("desired state already failed; waiting for a change", "plugin", s.name)
	case !s.serving():
		// Nothing of the current generation serves: no reason to start first.
		reason := snapshot.Diff(s.cur.d.Spec, w.d.Spec).String()
		s.retire(s.cur)
		s.cur = nil
		s.startCurrent(ctx, w, reason)
	default:
		s.startNext(ctx, w, snapshot.Diff(s.cur.d.Spec, w.d.Spec).String())
	}
}

// serving reports whether the current generation serves, or may (adoption probes).
func (s *supervisor) serving() bool {
	if s.cur == nil || s.failReason != "" {
		return false
	}
	for _, sl := range s.cur.slots {
		if sl.ready || sl.adopting {
			return true
		}
	}
	return false
}

// startCurrent starts w as the current generation: nothing serves meanwhile.
func (s *supervisor) startCurrent(ctx context.Context, w *work, reason string) {
	s.failReason = ""
	s.cur = s.newGeneration(ctx, w, reason)
	if reason != "" {
		s.r.log.Info("replacing plugin", "plugin", s.name, "generation", s.cur.num, "reason", reason)
		s.r.publish(Event{Type: EventReplacing, Plugin: s.name, Reason: reason})
	}
	for _, sl := range s.cur.slots {
		s.startSlot(s.cur, sl)
	}
}

// startNext starts w beside the serving generation: the start-first replacement. The
// route moves to it once all its instances are healthy (promote).
func (s *supervisor) startNext(ctx context.Context, w *work, reason string) {
	if reason == "" {
		reason = "snapshot changed"
	}
	if s.next != nil {
		s.r.log.Info("replacement superseded", "plugin", s.name, "generation", s.next.num)
		s.retire(s.next)
	}
	s.next = s.newGeneration(ctx, w, reason)
	s.r.log.Info("replacing plugin", "plugin", s.name, "generation", s.cur.num, "reason", reason)
	s.r.publish(Event{Type: EventReplacing, Plugin: s.name, Reason: reason})
	for _, sl := range s.next.slots {
		s.startSlot(s.next, sl)
	}
}

// liveUpdate applies w to g, whose snapshot it shares: the runner-side settings (the
// route is refreshed by the caller) and the number of instances.
func (s *supervisor) liveUpdate(ctx context.Context, g *generation, w *work) {
	g.cfg, g.d = w.cfg, w.d
	n := replicas(w.cfg)
	if s.scaleUnit(g, n) {
		return // a cluster scales in place itself
	}
	kept := g.slots[:0]
	var dropped []*slot
	for _, sl := range g.slots {
		if sl.idx < n {
			kept = append(kept, sl)
		} else {
			dropped = append(dropped, sl)
		}
	}
	if len(dropped) == 0 && len(kept) == n {
		return
	}
	from := len(g.slots)
	g.slots = kept
	for _, sl := range dropped {
		s.dropSlot(g, sl)
	}
	for i := range n {
		if g.slotByIndex(i) == nil {
			sl := &slot{idx: i}
			g.slots = append(g.slots, sl)
			if s.failReason == "" {
				s.startSlot(g, sl)
			}
		}
	}
	s.r.log.Info("scaled plugin", "plugin", s.name, "generation", g.num, "from", from, "to", n)
}

// promote makes the started generation the serving one and retires the previous one.
func (s *supervisor) promote() {
	old, g := s.cur, s.next
	s.cur, s.next = g, nil
	s.failedHash, s.failReason = "", ""
	// The route moves: the proxy retires the old instances.
	s.refresh(func(st *Status) {
		st.LastChange, st.LastError, st.StartedAt, st.Took, st.Adopted = g.reason, "", time.Now(), time.Since(g.begin), false
	})
	s.r.log.Info("new generation serving", "plugin", s.name, "from", old.num, "to", g.num, "after", time.Since(g.begin).Round(time.Millisecond))
	old.replacedBy = g
	s.retire(old)
}

// replaceFailed abandons the starting generation; the serving one goes on.
func (s *supervisor) replaceFailed(err error) {
	g := s.next
	s.next = nil
	s.failedHash = g.d.Hash
	s.retire(g)
	if !s.serving() {
		s.fail(fmt.Sprintf("replacement failed and generation %d does not serve: %v", s.cur.num, err), g.d.Hash)
		return
	}
	msg := fmt.Sprintf("replacement failed, generation %d keeps serving: %v", s.cur.num, err)
	s.r.log.Error("replacement failed; current generation keeps serving", "plugin", s.name, "generation", s.cur.num, "err", err)
	s.r.publish(Event{Type: EventReplaceFail, Plugin: s.name, Reason: g.reason, Message: msg, Duration: time.Since(g.begin)})
	s.update(func(st *Status) { st.LastError = msg })
}

// fail marks the plugin failed: nothing serves and nothing is started again until the
// desired state changes (hash, when set, is the state that failed) or a restart.
func (s *supervisor) fail(reason, hash string) {
	if s.next != nil {
		s.retire(s.next)
		s.next = nil
	}
	if s.cur != nil {
		for _, sl := range s.cur.slots {
			s.stopBackoff(s.cur, sl)
		}
	}
	s.failReason, s.diedFailed = reason, time.Now()
	if hash != "" {
		s.failedHash = hash
	}
	s.r.log.Error("plugin failed; not restarting until its config changes or it is restarted", "plugin", s.name, "reason", reason)
	s.update(func(st *Status) { st.LastError = reason })
}

// restartNow is an explicit restart: fresh instances of the desired state with a fresh
// restart budget, start-first while something serves. A replacement under way is
// superseded: a restart asks for new instances now.
func (s *supervisor) restartNow(ctx context.Context) {
	w := s.want
	if w == nil || w.d.Err != nil {
		return
	}
	s.r.log.Info("restart requested", "plugin", s.name)
	s.budget = newRestartBudget(w.cfg.Supervisor.Restart)
	s.failedHash = ""
	if s.serving() {
		s.startNext(ctx, w, "restart requested")
		return
	}
	if s.next != nil {
		s.retire(s.next)
		s.next = nil
	}
	if s.cur != nil {
		s.retire(s.cur)
		s.cur = nil
	}
	s.startCurrent(ctx, w, "")
}

// beginRemoval: the plugin left the config. New requests get 404, requests in flight
// finish (up to drain_timeout), then its instances go; the loop returns once nothing it
// started is left.
func (s *supervisor) beginRemoval() {
	s.removing = true
	s.r.router.Remove(s.name)
	for _, g := range []*generation{s.next, s.cur} {
		if g != nil {
			s.retire(g)
		}
	}
	s.cur, s.next = nil, nil
	if op := s.adopt; op != nil {
		s.adopt = nil
		for _, c := range append(op.Stale, op.Current...) {
			s.dispose(nil, c, 10*time.Second)
		}
	}
}

// settleIfDecided closes settled once the first desired state has a verdict: every
// instance of the serving generation answered, or the plugin failed.
func (s *supervisor) settleIfDecided() {
	if s.failReason != "" || s.removing || (s.want != nil && s.want.d.Err != nil && !isPulling(s.want.d.Err)) {
		s.settle()
		return
	}
	if s.next != nil || s.cur == nil {
		return
	}
	for _, sl := range s.cur.slots {
		if !sl.ready && !sl.down {
			return
		}
	}
	s.settle()
}

// runsAsRoot reports whether a container user spec ("uid[:gid]" or a name) is root.
func runsAsRoot(user string) bool {
	u, _, _ := strings.Cut(user, ":")
	return u == "0" || u == "root"
}

// warnRoot logs the warning that a plugin allowed to run as root deserves.
func (s *supervisor) warnRoot(pc *config.Plugin) {
	if pc.Supervisor.AllowRoot && runsAsRoot(pc.Supervisor.User) {
		s.r.log.Warn("plugin runs as root (allow_root = true): a container escape would be root on the host", "plugin", s.name, "user", pc.Supervisor.User)
	}
}

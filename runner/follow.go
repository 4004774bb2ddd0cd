package runner

import (
	"context"
	"errors"
	"math/rand/v2"
	"sort"
	"strings"
	"time"

	"github.com/xcore/runner/config"
	"github.com/xcore/runner/registry"
	"github.com/xcore/runner/sandbox"
)

// This file follows moving tags: every registry_poll (with jitter), one manifest HEAD
// per followed tag — however many plugins use it — compared with the registry digests
// the engine recorded for the image it has. A move is pulled (images.go); the pass that
// follows sees the tag resolve to a new image and the supervisors replace start-first.
// While nothing moves the registry sees HEADs only: no manifest or blob GET, which
// registries count against pull limits.

// maxPolls bounds the checks in flight at once: 200 followed tags due together do not
// open 200 connections.
const maxPolls = 8

// followed is one tag the runner follows.
type followed struct {
	ref      registry.Ref
	plugins  []string      // the plugins on it (sorted), as of the last pass
	interval time.Duration // the shortest registry_poll of its plugins
	next     time.Time     // when it is due
	polling  bool

	remote    string // the digest the tag pointed at, last time asked
	failures  int    // consecutive failed checks
	announced string // the move last announced (registry_moved), by remote digest
	pullFails int    // consecutive failed pulls of the remote digest moved to
	pullAfter time.Time
}

// follow updates the set of followed tags from cfg: plugins on a tag (not a digest),
// pulled (not pull = "never"), with a registry_poll. Called by every pass.
func (im *images) follow(cfg *config.Config) {
	if im.pl == nil {
		return
	}
	want := map[string]*followed{}
	for _, p := range cfg.Plugins {
		if p.Image == "" || p.Pull == config.PullNever || p.RegistryPoll <= 0 {
			continue
		}
		ref, err := im.parse(p.Image)
		if err != nil || ref.Pinned() {
			continue
		}
		if f := want[ref.Key()]; f != nil {
			f.interval = min(f.interval, p.RegistryPoll)
			f.plugins = append(f.plugins, p.Name)
			continue
		}
		want[ref.Key()] = &followed{ref: ref, interval: p.RegistryPoll, plugins: []string{p.Name}}
	}
	im.mu.Lock()
	changed := false
	for key := range im.followed {
		if want[key] == nil {
			delete(im.followed, key)
			changed = true
		}
	}
	now := time.Now()
	for key, w := range want {
		sort.Strings(w.plugins)
		f := im.followed[key]
		if f != nil {
			f.plugins = w.plugins
		}
		switch {
		case f == nil:
			// The first check comes soon (a registry that is down at start is said at
			// start), spread so that many tags do not ask at the same instant.
			w.next = now.Add(time.Duration(rand.Int64N(int64(min(w.interval/10, 2*time.Second)) + 1)))
			im.followed[key] = w
			changed = true
		case f.interval != w.interval:
			f.interval = w.interval
			if n := now.Add(jitter(w.interval)); n.Before(f.next) {
				f.next = n
			}
			changed = true
		}
	}
	start := !im.follower && len(im.followed) > 0
	im.follower = im.follower || start
	im.mu.Unlock()
	if start {
		im.r.owner.Go("registry follower", im.followLoop, func(error) {
			im.mu.Lock()
			im.follower = false // the next pass starts another
			for _, f := range im.followed {
				f.polling = false
			}
			im.mu.Unlock()
		})
	} else if changed {
		select {
		case im.wake <- struct{}{}:
		default:
		}
	}
}

// followLoop starts the checks that are due, at most maxPolls at once, and sleeps
// until the next one is. It idles (no timer) while nothing is followed.
func (im *images) followLoop() {
	done := make(chan time.Time, maxPolls) // a check ended: when its tag is due again
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	inFlight := 0
	for {
		now := time.Now()
		var due []*followed
		next := time.Time{}
		im.mu.Lock()
		for _, f := range im.followed {
			switch {
			case f.polling:
			case !f.next.After(now):
				due = append(due, f)
			case next.IsZero() || f.next.Before(next):
				next = f.next
			}
		}
		sort.Slice(due, func(i, j int) bool { return due[i].next.Before(due[j].next) })
		starved := len(due) > maxPolls-inFlight // due checks wait for a slot
		for _, f := range due {
			if inFlight >= maxPolls {
				break
			}
			f.polling = true
			inFlight++
			im.r.owner.Go("registry check "+f.ref.String(), func() {
				defer func() {
					im.mu.Lock()
					again := f.next
					im.mu.Unlock()
					done <- again
				}()
				im.poll(f)
			}, nil)
		}
		im.mu.Unlock()
		var tc <-chan time.Time
		if !next.IsZero() {
			timer.Reset(time.Until(next))
			tc = timer.C
		}
	wait:
		for {
			select {
			case <-im.r.ctx.Done():
				for range inFlight {
					<-done
				}
				return
			case again := <-done:
				inFlight--
				// A check that ended is due again later than what the timer waits for,
				// mostly: then there is no need to look at every tag again (200 tags,
				// one look per check, made this loop a fifth of the polling's CPU).
				if starved || tc == nil || again.Before(next) {
					break wait
				}
			case <-tc:
				break wait
			case <-im.wake:
				break wait
			}
		}
		if !timer.Stop() {
			select {
			case <-timer.C:
			default:
			}
		}
	}
}

// poll checks one followed tag and acts on the answer.
func (im *images) poll(f *followed) {
	ctx := im.r.ctx
	ref := f.ref
	key := ref.Key()
	next := jitter(f.interval)
	defer func() {
		im.mu.Lock()
		f.polling = false
		f.next = time.Now().Add(next)
		im.mu.Unlock()
	}()

	local, have, seen, err := im.localOf(ctx, ref)
	if err != nil {
		return // the engine: the next pass says so
	}
	var digests []string
	if have {
		if digests = ref.RepoDigests(local.RepoDigests); len(digests) == 0 {
			return // built or loaded here, never pushed: nothing in a registry to follow
		}
	}
	platform, err := im.enginePlatform(ctx)
	if err != nil {
		return
	}
	res, err := im.reg.Check(ctx, ref, digests, platform)
	im.mu.Lock()
	plugins := f.plugins
	if err != nil {
		f.failures++
		n := f.failures
		// Backoff from the interval up to 16 of them (between 30s and 15m), and never
		// sooner than a 429's Retry-After.
		limit := max(f.interval, min(max(16*f.interval, 30*time.Second), 15*time.Minute))
		next = max(backoff(f.interval, limit, n), registry.RetryAfter(err))
		im.mu.Unlock()
		if ctx.Err() != nil {
			return
		}
		if n == 1 || errors.Is(err, registry.ErrDenied) && n%10 == 1 {
			im.r.log.Warn("registry check failed; what runs keeps serving", "image", ref.String(), "plugins", strings.Join(plugins, ","), "err", err, "retry_in", next.Round(time.Second))
		} else {
			im.r.log.Debug("registry check failed again", "image", ref.String(), "err", err, "failures", n, "retry_in", next.Round(time.Second))
		}
		return
	}
	if f.failures > 0 {
		im.r.log.Info("registry answers again", "image", ref.String(), "after_failures", f.failures)
	}
	f.failures, f.remote = 0, res.Remote
	pl := im.pulls[key]
	if pl == nil {
		pl = &pull{ref: ref}
		im.pulls[key] = pl
	}
	if !res.Moved || pl.running {
		if !res.Moved {
			f.pullFails, f.announced = 0, ""
		}
		im.mu.Unlock()
		return
	}
	if lc, ok := im.local[key]; ok && !lc.at.Equal(seen) {
		im.mu.Unlock()
		return // the engine's image changed while we asked (a pull ended): the next poll compares again
	}
	if pl.err != nil && f.announced == res.Remote && time.Now().Before(f.pullAfter) {
		im.mu.Unlock()
		return // this move's pull failed: retried with its own backoff, not at every poll
	}
	reason := "not on this host"
	if have {
		old := digests[0]
		if len(digests) > 1 {
			sort.Strings(digests)
			old = digests[0]
		}
		reason = "registry: " + ref.Familiar() + " moved " + shortDigest(old) + " → " + shortDigest(res.Remote)
	}
	announce := have && f.announced != res.Remote
	if f.announced == res.Remote && pl.err != nil {
		f.pullFails++
	} else {
		f.pullFails = 0
	}
	f.announced = res.Remote
	f.pullAfter = time.Now().Add(backoff(max(f.interval, pullRetryBase), pullRetryCap, f.pullFails+1))
	im.startLocked(pl, reason, false)
	im.mu.Unlock()
	if announce {
		im.r.log.Info("registry tag moved", "image", ref.String(), "plugins", strings.Join(plugins, ","), "reason", reason)
		for _, name := range plugins {
			im.r.publish(Event{Type: EventRegistryMoved, Plugin: name, Image: ref.String(), Digest: res.Remote, Reason: reason})
		}
	}
}

// localOf is the engine's image under ref: from the last pass or pull when they know
// it (seen: when they learnt it), else asked now. have is false when the engine has none.
func (im *images) localOf(ctx context.Context, ref registry.Ref) (img sandbox.Image, have bool, seen time.Time, err error) {
	im.mu.Lock()
	lc, ok := im.local[ref.Key()]
	im.mu.Unlock()
	if ok {
		return lc.img, !lc.missing, lc.at, nil
	}
	img, err = im.pl.InspectImage(ctx, ref.Engine())
	if errors.Is(err, sandbox.ErrNotFound) {
		return sandbox.Image{}, false, time.Time{}, nil
	}
	return img, err == nil, time.Time{}, err
}

func (im *images) enginePlatform(ctx context.Context) (registry.Platform, error) {
	im.mu.Lock()
	p := im.platform
	im.mu.Unlock()
	if p != nil {
		return *p, nil
	}
	ep, err := im.pl.Platform(ctx)
	if err != nil {
		return registry.Platform{}, err
	}
	rp := registry.Platform{OS: ep.OS, Architecture: ep.Architecture, Variant: ep.Variant}
	im.mu.Lock()
	im.platform = &rp
	im.mu.Unlock()
	return rp, nil
}

// jitter spreads d by ±10 %, so that tags and runners do not ask in lockstep.
func jitter(d time.Duration) time.Duration {
	if d <= 0 {
		return d
	}
	return d + time.Duration(rand.Int64N(int64(d)/5+1)) - d/10
}

// shortDigest is "sha256:" + 12 hex, like an image ID in `docker images`.
func shortDigest(d string) string {
	if h, ok := strings.CutPrefix(d, "sha256:"); ok && len(h) > 12 {
		return "sha256:" + h[:12]
	}
	return d
}

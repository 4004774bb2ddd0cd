package runner

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/xcore/runner/config"
	"github.com/xcore/runner/registry"
	"github.com/xcore/runner/sandbox"
)

// This file is how plugin images come from registries: pulls through the engine with
// the user's credentials, one per image however many plugins use it, in goroutines of
// the runner's owner — never inside a reconcile pass, so that a slow registry holds up
// no other plugin's change. A pass only looks at what the engine has and at the pulls
// under way; a pull that ends asks for another pass.

// Backoff of a pull that failed while its image is missing (retried on its own), and
// of a followed tag's checks that fail.
const (
	pullRetryBase = 5 * time.Second
	pullRetryCap  = 5 * time.Minute
)

// pullingError is a plugin's desired state while its image is being pulled: not
// failed, not ready yet. A pass follows the pull.
type pullingError struct{ ref string }

func (e *pullingError) Error() string { return "pulling " + e.ref }

// pullingRef is the image a pullingError names.
func pullingRef(err error) string {
	var pe *pullingError
	if errors.As(err, &pe) {
		return pe.ref
	}
	return ""
}

// isPulling reports whether err says the plugin's image is being pulled.
func isPulling(err error) bool {
	var pe *pullingError
	return errors.As(err, &pe)
}

// PullStatus is a pull under way for a plugin's image, for `runner ps` and the API.
type PullStatus struct {
	Image     string    `json:"image"`
	Reason    string    `json:"reason"`
	StartedAt time.Time `json:"started_at"`
	Percent   int       `json:"percent"`
	Done      int64     `json:"done_bytes"`
	Total     int64     `json:"total_bytes"`
}

// pull is one image's pulls: the one under way, if any, and how the last one ended.
type pull struct {
	ref      registry.Ref
	running  bool
	explicit bool // asked for (runner pull, restart): its plugins show "pulling" even after a failure
	reason   string
	started  time.Time
	progress sandbox.PullProgress
	done     chan struct{} // closed when the pull under way ends

	err      error  // the last pull's failure; nil once one succeeds
	failures int    // consecutive; a retry waits for the failure it was armed for
	pulled   bool   // one succeeded (pull = "always" is satisfied)
	attempts int    // started, for pull = "always": one per image per runner life
	digest   string // the last pull's registry digest
}

// startLocked starts a pull of pl's image unless one runs (or the runner is shutting
// down). im.mu is held.
func (im *images) startLocked(pl *pull, reason string, explicit bool) {
	if pl.running {
		pl.explicit = pl.explicit || explicit
		return
	}
	if im.r.ctx == nil || im.r.ctx.Err() != nil {
		return
	}
	pl.running, pl.explicit, pl.reason, pl.started = true, explicit, reason, time.Now()
	pl.progress = sandbox.PullProgress{}
	pl.done = make(chan struct{})
	pl.attempts++
	ref := pl.ref
	im.r.owner.Go("pull "+ref.String(), func() { im.run(pl) }, func(err error) {
		im.finish(pl, sandbox.Image{}, err)
	})
}

// run pulls pl's image: the registry is asked first (a clear answer — denied,
// unreachable, rate-limited, no such tag — without involving the engine), then the
// engine pulls with the user's credentials, in one of the engine slots.
func (im *images) run(pl *pull) {
	ctx := im.r.ctx
	ref := pl.ref
	plugins := im.pluginsOf(ref.Key())
	im.r.log.Info("pulling image", "image", ref.String(), "plugins", strings.Join(plugins, ","), "reason", pl.reason)
	for _, name := range plugins {
		im.r.publish(Event{Type: EventPullStarted, Plugin: name, Image: ref.String(), Reason: pl.reason})
	}
	if _, err := im.reg.Head(ctx, ref); err != nil {
		im.finish(pl, sandbox.Image{}, err)
		return
	}
	cred, err := im.reg.Auth(ctx, ref)
	if err != nil {
		im.finish(pl, sandbox.Image{}, err)
		return
	}
	select {
	case im.r.engine <- struct{}{}:
	case <-ctx.Done():
		im.finish(pl, sandbox.Image{}, ctx.Err())
		return
	}
	img, err := im.pl.PullImage(ctx, ref.Engine(), engineAuth(cred), func(p sandbox.PullProgress) {
		im.mu.Lock()
		pl.progress = p
		im.mu.Unlock()
	})
	<-im.r.engine
	im.finish(pl, img, err)
}

// engineAuth is a registry credential in the form the engine takes it.
func engineAuth(cred registry.Credential) sandbox.RegistryAuth {
	return sandbox.RegistryAuth{
		Username: cred.Username, Password: cred.Password, IdentityToken: cred.IdentityToken,
		RegistryToken: cred.RegistryToken, ServerAddress: cred.Server,
	}
}

// nodeAuth is what a cluster's nodes pull image with: the runner's own credentials for
// its registry, read when asked (a credential helper's token may be short-lived); nil
// when the keychain has none.
func (im *images) nodeAuth(ctx context.Context, image string) (*sandbox.RegistryAuth, error) {
	ref, err := im.parse(image)
	if err != nil {
		return nil, err
	}
	cred, err := im.reg.Auth(ctx, ref)
	if err != nil {
		return nil, err
	}
	if cred.Anonymous() {
		return nil, nil
	}
	a := engineAuth(cred)
	return &a, nil
}

// finish records a pull's end, tells the plugins concerned and asks for a pass.
func (im *images) finish(pl *pull, img sandbox.Image, err error) {
	ref := pl.ref
	key := ref.Key()
	im.mu.Lock()
	took := time.Since(pl.started)
	prog := pl.progress
	pl.running = false
	close(pl.done)
	if err == nil {
		pl.err, pl.failures, pl.pulled, pl.explicit = nil, 0, true, false
		pl.digest = imageDigest(ref, img, prog.Digest)
		im.noteLocal(key, img, false)
	} else {
		pl.err = err
		pl.failures++
		pl.explicit = false
		// A missing image is retried on its own (in a goroutine of the owner, which
		// ends with the runner); a followed tag's move is retried by the follower, at
		// its own pace.
		if lc, ok := im.local[key]; (!ok || lc.missing) && im.r.ctx.Err() == nil {
			delay, n := backoff(pullRetryBase, pullRetryCap, pl.failures), pl.failures
			im.r.owner.Go("retry pull "+ref.String(), func() {
				t := time.NewTimer(delay)
				defer t.Stop()
				select {
				case <-t.C:
					im.retryPull(key, n)
				case <-im.r.ctx.Done():
				}
			}, nil)
		}
	}
	digest := pl.digest
	im.mu.Unlock()
	// Bytes the engine said it downloaded; it gives no sizes for layers it fetches
	// fast (checked on 20.10 with a local registry), then the image's size.
	bytes := prog.Total
	if bytes == 0 {
		bytes = img.Size
	}

	plugins := im.pluginsOf(key)
	if err != nil {
		if im.r.ctx.Err() != nil {
			return
		}
		im.r.log.Error("pull failed", "image", ref.String(), "plugins", strings.Join(plugins, ","), "err", err, "took", took.Round(time.Millisecond))
		for _, name := range plugins {
			im.r.publish(Event{Type: EventPullFailed, Plugin: name, Image: ref.String(), Message: err.Error(), Duration: took})
		}
	} else {
		im.r.log.Info("pulled image", "image", ref.String(), "digest", digest, "bytes", bytes, "took", took.Round(time.Millisecond))
		for _, name := range plugins {
			im.r.publish(Event{Type: EventPullDone, Plugin: name, Image: ref.String(), Digest: digest, Bytes: bytes, Duration: took})
		}
	}
	im.r.Resync()
}

// retryPull pulls a missing image again after its failure number n, if a plugin still
// uses it and nothing pulled it since.
func (im *images) retryPull(key string, n int) {
	if len(im.pluginsOf(key)) == 0 {
		return
	}
	im.mu.Lock()
	defer im.mu.Unlock()
	if pl := im.pulls[key]; pl != nil && !pl.running && pl.err != nil && pl.failures == n {
		im.startLocked(pl, fmt.Sprintf("retry after a failure (%d so far)", pl.failures), false)
	}
}

// pluginsOf lists the configured plugins whose image is key (pulls are shared).
func (im *images) pluginsOf(key string) []string {
	var out []string
	for name, p := range im.r.config().Plugins {
		if p.Image == "" {
			continue
		}
		if ref, err := im.parse(p.Image); err == nil && ref.Key() == key {
			out = append(out, name)
		}
	}
	sort.Strings(out)
	return out
}

// progressOf returns the pull under way for plugin's image, if any.
func (im *images) progressOf(p *config.Plugin) *PullStatus {
	if p == nil || p.Image == "" {
		return nil
	}
	ref, err := im.parse(p.Image)
	if err != nil {
		return nil
	}
	im.mu.Lock()
	defer im.mu.Unlock()
	pl := im.pulls[ref.Key()]
	if pl == nil || !pl.running {
		return nil
	}
	return &PullStatus{Image: ref.String(), Reason: pl.reason, StartedAt: pl.started,
		Percent: pl.progress.Percent(), Done: pl.progress.Done, Total: pl.progress.Total}
}

// overlay adds the pull under way to a plugin's status.
func (im *images) overlay(st *Status) {
	st.Pull = im.progressOf(im.r.config().Plugins[st.Name])
}

// Pulls returns the pulls under way, one per plugin concerned, sorted by plugin.
func (r *Runner) Pulls() []PlugPull {
	var out []PlugPull
	for name, p := range r.config().Plugins {
		if ps := r.images.progressOf(p); ps != nil {
			out = append(out, PlugPull{Plugin: name, PullStatus: *ps})
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Plugin < out[j].Plugin })
	return out
}

// PlugPull is a plugin's image being pulled.
type PlugPull struct {
	Plugin string `json:"plugin"`
	PullStatus
}

// PullResult is what `runner pull` did for one image.
type PullResult struct {
	Image   string   `json:"image"`
	Plugins []string `json:"plugins"`
	Before  string   `json:"before,omitempty"` // registry digest the engine had
	After   string   `json:"after,omitempty"`
	Changed bool     `json:"changed"` // the image the tag names is another now: its plugins are replaced start-first
	Error   string   `json:"error,omitempty"`
}

// Pull pulls the images of the named plugins now (every plugin with a registry image
// when names is empty), even those the engine has, waits for the pulls and returns
// what changed. Plugins whose image changed are then replaced start-first, as after a
// tag move. A plugin built from a folder or with pull = "never" is an error.
func (r *Runner) Pull(ctx context.Context, names []string) ([]PullResult, error) {
	cfg := r.config()
	if len(names) == 0 {
		for name, p := range cfg.Plugins {
			if p.Image != "" && p.Pull != config.PullNever {
				names = append(names, name)
			}
		}
	}
	im := r.images
	if im.pl == nil {
		return nil, errors.New("pull: this backend takes local images only")
	}
	type job struct {
		pl     *pull
		before string
		res    *PullResult
	}
	jobs := map[string]*job{}
	for _, name := range names {
		p := cfg.Plugins[name]
		switch {
		case p == nil:
			return nil, fmt.Errorf("pull %s: %w", name, ErrUnknownPlugin)
		case p.Build != "":
			return nil, fmt.Errorf("pull %s: built from the folder %s, not pulled", name, p.Build)
		case p.Pull == config.PullNever:
			return nil, fmt.Errorf(`pull %s: pull = "never"`, name)
		}
		ref, err := registry.Parse(p.Image)
		if err != nil {
			return nil, fmt.Errorf("pull %s: %w", name, err)
		}
		if j := jobs[ref.Key()]; j != nil {
			j.res.Plugins = append(j.res.Plugins, name)
			continue
		}
		before := ""
		if img, err := im.pl.InspectImage(ctx, ref.Engine()); err == nil {
			before = imageDigest(ref, img, "")
		}
		jobs[ref.Key()] = &job{before: before, res: &PullResult{Image: ref.String(), Plugins: []string{name}, Before: before}}
	}
	im.mu.Lock()
	for key, j := range jobs {
		pl := im.pulls[key]
		if pl == nil {
			ref, _ := registry.Parse(j.res.Image)
			pl = &pull{ref: ref}
			im.pulls[key] = pl
		}
		im.startLocked(pl, "runner pull", true)
		j.pl = pl
	}
	im.mu.Unlock()
	var out []PullResult
	for _, j := range jobs {
		im.mu.Lock()
		done := j.pl.done
		im.mu.Unlock()
		select {
		case <-done:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
		im.mu.Lock()
		if j.pl.err != nil {
			j.res.Error = j.pl.err.Error()
		} else {
			j.res.After = j.pl.digest
			j.res.Changed = j.pl.digest != j.before
		}
		im.mu.Unlock()
		sort.Strings(j.res.Plugins)
		out = append(out, *j.res)
	}
	sort.Slice(out, func(i, k int) bool { return out[i].Image < out[k].Image })
	return out, nil
}

// retryFailed makes a failed image pull start again at once (runner restart of a
// plugin that failed on its image).
func (im *images) retryFailed(p *config.Plugin) {
	if im.pl == nil || p == nil || p.Image == "" || p.Pull == config.PullNever {
		return
	}
	ref, err := registry.Parse(p.Image)
	if err != nil {
		return
	}
	im.mu.Lock()
	defer im.mu.Unlock()
	if pl := im.pulls[ref.Key()]; pl != nil && pl.err != nil && !pl.running {
		im.startLocked(pl, "restart requested", true)
	}
}

// backoff is base·2^(n-1), capped, with ±10 % jitter.
func backoff(base, limit time.Duration, n int) time.Duration {
	d := base
	for i := 1; i < n && d < limit; i++ {
		d *= 2
	}
	return jitter(min(d, limit))
}

// awaitImage: the plugin's image is being pulled. What serves keeps serving (the pass
// after the pull decides); a plugin that failed for want of its image, and runs
// nothing, is no longer failed but pulling.
func (s *supervisor) awaitImage() {
	if s.cur == nil && s.failReason != "" {
		s.failReason = ""
	}
}

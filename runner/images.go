package runner

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sort"
	"sync"
	"time"

	"github.com/xcore/runner/config"
	"github.com/xcore/runner/registry"
	"github.com/xcore/runner/sandbox"
)

// This file is how a pass sees plugin images: what the engine has of each, the pulls
// under way (pull.go), and for `runner plan` what a pull would change.

// Puller is what the runner needs of a backend to take images from registries;
// sandbox/docker implements it. Without it (tests' fakes), images are local only.
type Puller interface {
	InspectImage(ctx context.Context, ref string) (sandbox.Image, error)
	PullImage(ctx context.Context, ref string, auth sandbox.RegistryAuth, progress func(sandbox.PullProgress)) (sandbox.Image, error)
	Platform(ctx context.Context) (sandbox.Platform, error)
}

// Registry is what the runner asks registries itself; registry/remote's Client
// implements it (cmd/runner wires it in, so that the runner does not depend on Docker's
// credential code).
type Registry interface {
	Head(ctx context.Context, ref registry.Ref) (registry.Descriptor, error)
	Check(ctx context.Context, ref registry.Ref, local []string, platform registry.Platform) (registry.Check, error)
	Auth(ctx context.Context, ref registry.Ref) (registry.Credential, error)
}

// noRegistry is the Registry of a runner given none: every question fails, so an image
// that is not on the engine fails its plugin with a reason, and local images run.
type noRegistry struct{}

var errNoRegistry = errors.New("no registry client: the runner was started without one (runner.Options.Registry)")

func (noRegistry) Head(context.Context, registry.Ref) (registry.Descriptor, error) {
	return registry.Descriptor{}, errNoRegistry
}

func (noRegistry) Check(context.Context, registry.Ref, []string, registry.Platform) (registry.Check, error) {
	return registry.Check{}, errNoRegistry
}

func (noRegistry) Auth(context.Context, registry.Ref) (registry.Credential, error) {
	return registry.Credential{}, errNoRegistry
}

// images tracks what the engine has of each registry image and the pulls under way.
type images struct {
	r   *Runner
	pl  Puller // nil: images are local only
	reg Registry

	mu       sync.Mutex
	pulls    map[string]*pull      // by Ref.Key
	local    map[string]localImage // by Ref.Key: the engine's answer, kept fresh by passes
	followed map[string]*followed  // by Ref.Key
	platform *registry.Platform    // the engine's, asked once
	wake     chan struct{}         // the follower's: the followed set changed
	follower bool                  // its loop runs

	refMu sync.Mutex
	refs  map[string]parsedRef // by image reference as configured: parsing is not free
}

type parsedRef struct {
	ref registry.Ref
	err error
}

// parse is registry.Parse, remembered: polls, statuses and pulls ask about the same
// few references over and over (a parse is a few µs of regular expressions).
func (im *images) parse(image string) (registry.Ref, error) {
	im.refMu.Lock()
	defer im.refMu.Unlock()
	if p, ok := im.refs[image]; ok {
		return p.ref, p.err
	}
	if len(im.refs) > 4096 {
		clear(im.refs) // a bound, not an eviction policy: configs name far fewer
	}
	ref, err := registry.Parse(image)
	im.refs[image] = parsedRef{ref, err}
	return ref, err
}

type localImage struct {
	img     sandbox.Image
	missing bool
	at      time.Time // when it was learnt to be so: a poll that began before knows less
}

// noteLocal records what the engine has under key. im.mu is held.
func (im *images) noteLocal(key string, img sandbox.Image, missing bool) {
	if lc, ok := im.local[key]; ok && lc.missing == missing && lc.img.ID == img.ID && slices.Equal(lc.img.RepoDigests, img.RepoDigests) {
		return // unchanged: keep when it was learnt
	}
	im.local[key] = localImage{img: img, missing: missing, at: time.Now()}
}

func newImages(r *Runner, sb Sandbox, reg Registry) *images {
	pl, _ := sb.(Puller)
	if reg == nil {
		reg = noRegistry{}
	}
	return &images{r: r, pl: pl, reg: reg, pulls: map[string]*pull{}, local: map[string]localImage{},
		followed: map[string]*followed{}, wake: make(chan struct{}, 1), refs: map[string]parsedRef{}}
}

// resolved is what a plugin's image resolves to in a pass.
type resolved struct {
	id, digest string
	err        error
}

// resolveFunc resolves one plugin's image (not a build).
type resolveFunc func(ctx context.Context, p *config.Plugin) resolved

// resolve is the pass's view of a plugin's image: what the engine has, started pulls
// (never waited for), failed pulls as errors.
func (im *images) resolve(ctx context.Context, p *config.Plugin) resolved {
	ref, err := im.parse(p.Image)
	if im.pl == nil || p.Pull == config.PullNever || err != nil {
		if im.pl != nil && err == nil {
			img, ierr := im.pl.InspectImage(ctx, ref.Engine())
			if ierr == nil {
				return resolved{id: img.ID, digest: imageDigest(ref, img, "")}
			}
			if !errors.Is(ierr, sandbox.ErrNotFound) {
				return resolved{err: ierr}
			}
		}
		id, err := im.r.sb.ResolveImage(ctx, p.Image)
		return resolved{id: id, err: err}
	}
	key := ref.Key()
	img, ierr := im.pl.InspectImage(ctx, ref.Engine())
	missing := errors.Is(ierr, sandbox.ErrNotFound)
	if ierr != nil && !missing {
		return resolved{err: ierr}
	}
	im.mu.Lock()
	im.noteLocal(key, img, missing)
	pl := im.pulls[key]
	if pl == nil {
		pl = &pull{ref: ref}
		im.pulls[key] = pl
	}
	remote := ""
	if f := im.followed[key]; f != nil {
		remote = f.remote
	}
	switch {
	case p.Pull == config.PullAlways && pl.attempts == 0:
		im.startLocked(pl, `pull = "always"`, false)
		im.mu.Unlock()
		return resolved{err: &pullingError{ref: ref.String()}}
	case p.Pull == config.PullAlways && pl.running && !pl.pulled && pl.err == nil:
		im.mu.Unlock()
		return resolved{err: &pullingError{ref: ref.String()}} // its first pull: wait for it
	case !missing:
		im.mu.Unlock()
		return resolved{id: img.ID, digest: imageDigest(ref, img, remote)}
	case pl.running && (pl.err == nil || pl.explicit):
		im.mu.Unlock()
		return resolved{err: &pullingError{ref: ref.String()}}
	case pl.err != nil:
		// Failed: the plugin shows why while retries go on behind (no flapping
		// between failed and pulling at each retry).
		err := pl.err
		im.mu.Unlock()
		return resolved{err: missingImage(ref, err)}
	default:
		im.startLocked(pl, "not on this host", false)
		im.mu.Unlock()
		return resolved{err: &pullingError{ref: ref.String()}}
	}
}

// missingImage is why a plugin whose image the engine lacks cannot start: a refusal is
// said as the registry's (it names the file to fix); anything else also says that the
// image is not here, and how to make it so when it is one built on this host.
func missingImage(ref registry.Ref, err error) error {
	switch {
	case errors.Is(err, registry.ErrDenied):
		return err
	case errors.Is(err, registry.ErrNotFound), errors.Is(err, registry.ErrUnreachable):
		return fmt.Errorf("image %q not found locally (built here? docker build -t %s <dir>), and pulling it failed: %w", ref.String(), ref.String(), err)
	}
	return fmt.Errorf("image %q not found locally, and pulling it failed: %w", ref.String(), err)
}

// imageDigest is the registry digest a plugin's image is known by: the pinned one, or
// the engine's record for the reference's repository — the followed tag's current
// digest when the engine lists it, else the first in order. "" for a local image.
func imageDigest(ref registry.Ref, img sandbox.Image, remote string) string {
	if ref.Pinned() {
		return ref.Digest()
	}
	ds := ref.RepoDigests(img.RepoDigests)
	if len(ds) == 0 {
		return ""
	}
	if remote != "" && slices.Contains(ds, remote) {
		return remote
	}
	sort.Strings(ds)
	return ds[0]
}

// plannedImages resolves plugin images for `runner plan`: what the engine has, and —
// asking registries, changing nothing — whether a pull would change it. An image to be
// pulled gets a placeholder ID ("unpulled:…") with the registry's digest, so that the
// plan says what the running runner will do.
func plannedImages(images Images, reg Registry) resolveFunc {
	if reg == nil {
		reg = noRegistry{}
	}
	pl, _ := images.(Puller)
	var platform *registry.Platform
	var once sync.Once
	return func(ctx context.Context, p *config.Plugin) resolved {
		ref, err := registry.Parse(p.Image)
		if pl == nil || err != nil {
			id, err := images.ResolveImage(ctx, p.Image)
			return resolved{id: id, err: err}
		}
		img, ierr := pl.InspectImage(ctx, ref.Engine())
		missing := errors.Is(ierr, sandbox.ErrNotFound)
		switch {
		case ierr != nil && !missing:
			return resolved{err: ierr}
		case p.Pull == config.PullNever && missing:
			id, err := images.ResolveImage(ctx, p.Image)
			return resolved{id: id, err: err}
		case p.Pull == config.PullNever:
			return resolved{id: img.ID, digest: imageDigest(ref, img, "")}
		case missing:
			d, err := reg.Head(ctx, ref)
			if err != nil {
				return resolved{err: missingImage(ref, err)}
			}
			return resolved{id: "unpulled:" + d.Digest, digest: d.Digest}
		}
		digest := imageDigest(ref, img, "")
		if ref.Pinned() || (p.RegistryPoll == 0 && p.Pull != config.PullAlways) || (digest == "" && p.Pull != config.PullAlways) {
			return resolved{id: img.ID, digest: digest}
		}
		once.Do(func() {
			if ep, err := pl.Platform(ctx); err == nil {
				platform = &registry.Platform{OS: ep.OS, Architecture: ep.Architecture, Variant: ep.Variant}
			}
		})
		if platform == nil {
			return resolved{id: img.ID, digest: digest}
		}
		c, err := reg.Check(ctx, ref, ref.RepoDigests(img.RepoDigests), *platform)
		if err != nil || !c.Moved {
			return resolved{id: img.ID, digest: digest} // unknown or unmoved: what runs stays
		}
		return resolved{id: "unpulled:" + c.Remote, digest: c.Remote}
	}
}

package runner

import (
	"context"
	"sync"
	"time"

	"github.com/xcore/runner/config"
)

// resolveAll computes every plugin's desired state for this runner: folders are built
// when they changed.
func (r *Runner) resolveAll(ctx context.Context, cfg *config.Config) map[string]Desired {
	port, _ := ReadSidecarPort(cfg.Runner.StateDir)
	r.images.follow(cfg)
	desired := desire(ctx, cfg, r.images.resolve, r.build, port, false)
	r.refuseUnenforceable(cfg, desired)
	return desired
}

// build resolves a plugin's folder to its image, building it when it changed; the
// builder's output goes to the log.
func (r *Runner) build(ctx context.Context, plugin, dir string) (ref, id string, err error) {
	begin := time.Now()
	built := false
	ref, id, err = r.sb.BuildImage(ctx, plugin, dir, true, func(line string) {
		if !built {
			built = true
			r.log.Info("building plugin image", "plugin", plugin, "dir", dir)
		}
		r.log.Info("build", "plugin", plugin, "out", line)
	})
	if err == nil && built {
		r.log.Info("built plugin image", "plugin", plugin, "tag", ref, "took", time.Since(begin).Round(time.Millisecond))
	}
	return ref, id, err
}

// Desire computes every plugin's desired state as `runner plan` sees it: nothing is
// built (a folder whose content has not been built yet shows as a change), and NAME_URLs
// carry the sidecar port of the state_dir, so that plan computes the same snapshots as
// the running runner — and, before any runner used the state_dir, still a plan. reg
// answers for registry images that the engine does not have (nil: none can be asked).
func Desire(ctx context.Context, cfg *config.Config, images Images, reg Registry) map[string]Desired {
	port, _ := ReadSidecarPort(cfg.Runner.StateDir)
	dryBuild := func(ctx context.Context, plugin, dir string) (string, string, error) {
		return images.BuildImage(ctx, plugin, dir, false, nil)
	}
	return desire(ctx, cfg, plannedImages(images, reg), dryBuild, port, true)
}

// desire resolves image references concurrently (one resolve per distinct reference and
// pull policy) and renders each plugin's snapshot.
func desire(ctx context.Context, cfg *config.Config, resolve resolveFunc, build func(ctx context.Context, plugin, dir string) (string, string, error), port int, planning bool) map[string]Desired {
	type res struct {
		ref, id string // ref: the build tag, for built plugins
		err     error
	}
	imageKey := func(p *config.Plugin) string { return p.Image + "\x00" + p.Pull }
	refs := map[string]*resolved{}
	var wg sync.WaitGroup
	for _, p := range cfg.Plugins {
		if k := imageKey(p); p.Image != "" && refs[k] == nil {
			out := &resolved{}
			refs[k] = out
			wg.Go(func() { *out = resolve(ctx, p) })
		}
	}
	built := map[string]*res{}
	for name, p := range cfg.Plugins {
		if p.Build != "" {
			out := &res{}
			built[name] = out
			wg.Go(func() { out.ref, out.id, out.err = build(ctx, name, p.Build) })
		}
	}
	wg.Wait()
	desired := make(map[string]Desired, len(cfg.Plugins))
	for name, p := range cfg.Plugins {
		switch {
		case p.Build != "" && built[name].err != nil:
			desired[name] = Desired{Err: built[name].err}
		case p.Build != "":
			d := desiredFor(cfg, p, built[name].id, port, planning)
			if d.Err == nil {
				d.Spec.ImageRef = built[name].ref // not hashed: the ID is
			}
			desired[name] = d
		case refs[imageKey(p)].err != nil:
			desired[name] = Desired{Err: refs[imageKey(p)].err}
		default:
			d := desiredFor(cfg, p, refs[imageKey(p)].id, port, planning)
			if d.Err == nil {
				d.Spec.ImageDigest = refs[imageKey(p)].digest // not hashed: the ID is
			}
			desired[name] = d
		}
	}
	return desired
}

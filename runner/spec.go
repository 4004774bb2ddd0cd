package runner

import (
	"maps"
	"strconv"

	"github.com/xcore/runner/config"
	"github.com/xcore/runner/registry"
	"github.com/xcore/runner/sandbox"
	"github.com/xcore/runner/snapshot"
)

// desiredFor renders the snapshot of what p's instances must be made of. Pure: the
// same config, image ID and sidecar port always give the same hash.
func desiredFor(cfg *config.Config, p *config.Plugin, imageID string, sidecarPort int, planning bool) Desired {
	sup := p.Supervisor
	env := pluginEnv(cfg, p)
	if err := serviceEnv(env, cfg, p, sidecarPort, planning); err != nil {
		return Desired{Err: err}
	}
	s := snapshot.Spec{
		ImageRef: imageRef(p),
		ImageID:  imageID,
		Command:  p.Command,
		Env:      env,
		Port:     p.Port,
		Publish:  publish(cfg, p),
		CPUs:     sup.CPUs,
		Memory:   sup.Memory,
		Pids:     sup.Pids,
		Network:  sup.Network,
		ReadOnly: sup.ReadOnly,
		User:     sup.User,
		Runtime:  sup.Runtime,
		Services: p.Services,
	}
	if cfg.Runner.Backend == config.BackendSwarm {
		// Where a cluster runs it is part of what runs there; a single host has no
		// placement (and a hash without it is the one it always had).
		s.Placement = placement(sup.Placement)
	}
	return Desired{Spec: s, Hash: snapshot.Hash(s), Replicas: replicas(p)}
}

// publish: the plugin port is published on 127.0.0.1 unless the runner dials container
// addresses, or the plugin has no network at all.
func publish(cfg *config.Config, p *config.Plugin) bool {
	return cfg.Runner.Reach != config.ReachAddress && p.Supervisor.Network != config.NetworkNone
}

// containerSpec is the sandbox request for instance replica of generation gen of d.
func containerSpec(p *config.Plugin, d Desired, gen, replica int) sandbox.Spec {
	s := d.Spec
	return sandbox.Spec{
		Plugin:      p.Name,
		Generation:  gen,
		Replica:     replica,
		Image:       s.ImageRef,
		ImageID:     s.ImageID,
		Snapshot:    d.Hash,
		SpecLabel:   snapshot.Encode(s),
		Command:     s.Command,
		Env:         s.Env,
		Port:        s.Port,
		Publish:     s.Publish,
		CPUs:        s.CPUs,
		Memory:      s.Memory,
		Pids:        s.Pids,
		Network:     s.Network,
		ReadOnly:    s.ReadOnly,
		User:        s.User,
		Runtime:     s.Runtime,
		StopTimeout: p.Supervisor.StopTimeout,
		Egress:      sandbox.Egress(p.Supervisor.Egress), // not in the snapshot: applied live
		Placement:   sandbox.Placement{Constraints: p.Supervisor.Placement.Constraints, Spread: p.Supervisor.Placement.Spread},
		Restart: sandbox.Restart{
			Policy: p.Supervisor.Restart.Policy, Attempts: p.Supervisor.Restart.Attempts,
			Window: p.Supervisor.Restart.Window, Delay: p.Supervisor.Restart.Backoff,
		},
		ImagePinned: imagePinned(p, s.ImageDigest),
	}
}

// imagePinned is p's registry image pinned to the digest it resolved to (repo@sha256:…),
// which a cluster's nodes pull; "" when there is none to pull: a built or local image
// (no digest), or pull = "never" (the nodes run what they have, by ID).
func imagePinned(p *config.Plugin, digest string) string {
	if digest == "" || p.Image == "" || p.Pull == config.PullNever {
		return ""
	}
	ref, err := registry.Parse(p.Image)
	if err != nil {
		return ""
	}
	return ref.Repository() + "@" + digest
}

// placement is the snapshot form of a placement block: its constraints and
// "spread=<label>".
func placement(p config.Placement) []string {
	out := append([]string(nil), p.Constraints...)
	if p.Spread != "" {
		out = append(out, "spread="+p.Spread)
	}
	return out
}

func imageRef(p *config.Plugin) string {
	if p.Image != "" {
		return p.Image
	}
	return p.Build // replaced by the build tag (see buildImage)
}

// pluginEnv is the plugin's own environment plus the variables the runner owns (which
// win: a plugin cannot be told a PORT other than the one it is probed and proxied on).
// serviceEnv adds the services'.
func pluginEnv(cfg *config.Config, p *config.Plugin) map[string]string {
	env := maps.Clone(p.Env)
	if env == nil {
		env = map[string]string{}
	}
	env["PORT"] = strconv.Itoa(p.Port)
	env["XCORE_PLUGIN"] = p.Name
	env["XCORE_PREFIX"] = "/plugins/" + p.Name
	return env
}

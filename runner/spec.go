package runner

import (
	"maps"
	"strconv"

	"github.com/xcore/runner/config"
	"github.com/xcore/runner/sandbox"
)

// containerSpec renders what one plugin's container is made of from the config. Pure:
// the same config and image ID always give the same spec.
func containerSpec(cfg *config.Config, p *config.Plugin, imageID string, gen int) sandbox.ContainerSpec {
	sup := p.Supervisor
	return sandbox.ContainerSpec{
		Plugin:      p.Name,
		Generation:  gen,
		Image:       imageRef(p),
		ImageID:     imageID,
		Command:     p.Command,
		Env:         pluginEnv(cfg, p),
		Port:        p.Port,
		Publish:     cfg.Runner.Reach != config.ReachAddress && sup.Network != config.NetworkNone,
		CPUs:        sup.CPUs,
		Memory:      sup.Memory,
		Pids:        sup.Pids,
		Network:     sup.Network,
		ReadOnly:    sup.ReadOnly,
		User:        sup.User,
		Runtime:     sup.Runtime,
		StopTimeout: sup.StopTimeout,
	}
}

func imageRef(p *config.Plugin) string {
	if p.Image != "" {
		return p.Image
	}
	return p.Build
}

// pluginEnv is the plugin's environment: its own env, then the values of the `env`
// services it declares, then the variables the runner owns (which win: a plugin cannot
// be told a PORT other than the one it is probed and proxied on).
func pluginEnv(cfg *config.Config, p *config.Plugin) map[string]string {
	env := maps.Clone(p.Env)
	if env == nil {
		env = map[string]string{}
	}
	for _, name := range p.Services {
		if s := cfg.Services[name]; s != nil {
			maps.Copy(env, s.Env)
		}
	}
	env["PORT"] = strconv.Itoa(p.Port)
	env["XCORE_PLUGIN"] = p.Name
	env["XCORE_PREFIX"] = "/plugins/" + p.Name
	return env
}

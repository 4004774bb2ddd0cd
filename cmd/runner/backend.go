package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"

	"github.com/xcore/runner/config"
	"github.com/xcore/runner/runner"
	"github.com/xcore/runner/sandbox/docker"
	"github.com/xcore/runner/sandbox/swarm"
)

// backend is what the commands use of a sandbox backend: the runner's interface, and
// (for their messages) the name of the runner's network.
type backend interface {
	runner.Sandbox
	NetworkName() string
	HostRules() string // where its host rules live, for messages
	Close() error
}

// Both backends are what runner.Sandbox is made for; swarm is a runner.Cluster too.
var (
	_ backend        = (*docker.Client)(nil)
	_ backend        = (*swarm.Client)(nil)
	_ runner.Cluster = (*swarm.Client)(nil)
)

// backendFlag adds --backend, which overrides runner.backend of the config.
func backendFlag(fs *flag.FlagSet) *string {
	return fs.String("backend", "", "engine `backend`: docker (this host) or swarm (a Swarm cluster; the runner runs in a container on a manager); default: runner.backend of the config")
}

// chosenBackend is the --backend flag when set, else the config's.
func chosenBackend(flagValue string, r config.Runner) string {
	if flagValue != "" {
		return flagValue
	}
	if r.Backend == "" {
		return config.BackendDocker
	}
	return r.Backend
}

// openBackend connects to the engine of backend name for runner id. up: the backend
// will run plugins (swarm: the runner must be in a container on a manager); otherwise it
// only lists and removes (plan, down).
func openBackend(ctx context.Context, name, id string, log *slog.Logger, up bool) (backend, error) {
	switch name {
	case config.BackendSwarm:
		return swarm.New(ctx, id, log, swarm.Options{NeedSelf: up})
	case config.BackendDocker, "":
		return docker.New(ctx, id, log)
	}
	return nil, fmt.Errorf("unknown backend %q: use docker or swarm", name)
}

// writeGaps prints the hardening promises a swarm cannot keep (all = the whole table, for
// `runner validate`, which knows no engine).
func writeGaps(w io.Writer, prefix string, gaps []swarm.Gap) {
	for _, g := range gaps {
		fmt.Fprintf(w, "%s%s\n", prefix, g)
	}
}

package main

import (
	"fmt"
	"io"

	"github.com/xcore/runner/config"
)

// runnerSettings returns the runner block of the config at path, and the whole config
// when it validates. The commands that operate a running runner (ps, logs, reload,
// down, ...) must keep working while someone edits a plugin block into an invalid
// state — `runner reload` is how they learn that it is invalid — so when the config
// does not validate, the runner block is read on its own (config.LoadRunner).
func runnerSettings(path string, stderr io.Writer) (config.Runner, *config.Config, error) {
	cfg, _, diags := config.Load(path)
	if cfg != nil && !diags.HasErrors() {
		return cfg.Runner, cfg, nil
	}
	r, rdiags := config.LoadRunner(path)
	if rdiags.HasErrors() {
		// Not even the runner block can be read: show everything that is wrong.
		_, lerr := loadConfig(path, stderr)
		if lerr == nil {
			lerr = rdiags
		}
		return config.Runner{}, nil, lerr
	}
	fmt.Fprintf(stderr, "warning: %s does not validate (see `runner validate -c %s`); using its runner block\n", path, path)
	return r, nil, nil
}

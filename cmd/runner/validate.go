package main

import (
	"fmt"
	"io"

	"github.com/xcore/runner/config"
	"github.com/xcore/runner/sandbox/swarm"
)

func cmdValidate(args []string, stdout, stderr io.Writer) error {
	fs, cfgPath := newFlags("validate", "Check a config without touching Docker: syntax, schema, defaults and\nreferences. Exits 1 with file:line:col diagnostics when it is invalid.\nWith backend swarm it also lists the hardening fields that depend on the\ncluster's engine version.", stderr)
	backendName := backendFlag(fs)
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	cfg, err := loadConfigFor(*cfgPath, *backendName, stderr)
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "%s: valid (%d plugins, %d services, %d files)\n", *cfgPath, len(cfg.Plugins), len(cfg.Services), len(cfg.Files))
	if cfg.Runner.Backend == config.BackendSwarm {
		fmt.Fprintln(stdout, "backend swarm: what a service cannot carry on some engines (`runner up` says which apply to its cluster):")
		writeGaps(stdout, "  ", swarm.VersionedGaps())
		writeGaps(stdout, "  ", swarm.Always)
	}
	return nil
}

// loadConfig loads and validates, printing diagnostics with source snippets.
func loadConfig(path string, stderr io.Writer) (*config.Config, error) {
	return loadConfigFor(path, "", stderr)
}

// loadConfigFor is loadConfig for backend ("" : the config's own).
func loadConfigFor(path, backend string, stderr io.Writer) (*config.Config, error) {
	cfg, files, diags := config.LoadBackend(path, backend)
	if len(diags) > 0 {
		writeDiagnostics(stderr, files, diags)
	}
	if diags.HasErrors() || cfg == nil {
		return nil, errReported
	}
	return cfg, nil
}

package main

import (
	"fmt"
	"io"

	"github.com/xcore/runner/config"
)

func cmdValidate(args []string, stdout, stderr io.Writer) error {
	fs, cfgPath := newFlags("validate", "Check a config without touching Docker: syntax, schema, defaults and\nreferences. Exits 1 with file:line:col diagnostics when it is invalid.", stderr)
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	cfg, err := loadConfig(*cfgPath, stderr)
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "%s: valid (%d plugins, %d services, %d files)\n", *cfgPath, len(cfg.Plugins), len(cfg.Services), len(cfg.Files))
	return nil
}

// loadConfig loads and validates, printing diagnostics with source snippets.
func loadConfig(path string, stderr io.Writer) (*config.Config, error) {
	cfg, files, diags := config.Load(path)
	if len(diags) > 0 {
		writeDiagnostics(stderr, files, diags)
	}
	if diags.HasErrors() || cfg == nil {
		return nil, errReported
	}
	return cfg, nil
}

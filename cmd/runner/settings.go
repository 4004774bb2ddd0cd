package main

import (
	"fmt"
	"io"
	"os"

	"github.com/hashicorp/hcl/v2"

	"github.com/xcore/runner/config"
)

// runnerSettings returns the runner block of the config at path, and the whole config
// when it validates. The commands that operate a running runner (ps, logs, reload,
// down, ...) must keep working while someone edits a plugin block into an invalid
// state — `runner reload` is how they learn that it is invalid — so when the config
// does not validate, the runner block is read on its own (config.LoadRunner), even
// past a syntax error elsewhere in the file. The warning that it does not validate goes
// to warn, what keeps the runner block from being read to stderr.
func runnerSettings(path string, stderr, warn io.Writer) (config.Runner, *config.Config, error) {
	cfg, _, diags := config.Load(path)
	if cfg != nil && !diags.HasErrors() {
		return cfg.Runner, cfg, nil
	}
	r, files, rdiags := config.LoadRunner(path)
	if rdiags.HasErrors() {
		// Not even the runner block can be read: say what is wrong with it.
		writeDiagnostics(stderr, files, rdiags)
		return config.Runner{}, nil, errReported
	}
	fmt.Fprintf(warn, "warning: %s does not validate (%s; see `runner validate -c %s`); using its runner block\n", path, firstProblem(diags), path)
	return r, nil, nil
}

// firstProblem is the first error of diags on one line: file:line:col: summary.
func firstProblem(diags hcl.Diagnostics) string {
	for _, d := range diags {
		if d.Severity != hcl.DiagError {
			continue
		}
		if d.Subject == nil {
			return d.Summary
		}
		return fmt.Sprintf("%s:%d:%d: %s", d.Subject.Filename, d.Subject.Start.Line, d.Subject.Start.Column, d.Summary)
	}
	return "no error"
}

// writeDiagnostics prints diags with source snippets, in color on a terminal.
func writeDiagnostics(stderr io.Writer, files map[string]*hcl.File, diags hcl.Diagnostics) {
	color := false
	if f, ok := stderr.(*os.File); ok {
		color = isTerminal(f)
	}
	_ = config.WriteDiagnostics(stderr, files, diags, color)
}

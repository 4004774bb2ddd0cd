package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/xcore/runner/registry/remote"
	"github.com/xcore/runner/runner"
	"github.com/xcore/runner/sandbox"
)

// errChanges: `runner plan` found changes (exit 2, like terraform plan -detailed-exitcode).
var errChanges = errors.New("changes")

func cmdPlan(args []string, stdout, stderr io.Writer) error {
	fs, cfgPath := newFlags("plan", "Show what `runner up` or a reload would change, comparing the config with the\ncontainers that run (Docker labels). Changes nothing.\n\nExit status: 0 no changes, 2 changes, 1 error.", stderr)
	backendName := backendFlag(fs)
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	cfg, err := loadConfigFor(*cfgPath, *backendName, stderr)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	id, known, err := runner.ReadInstanceID(cfg.Runner.StateDir)
	if err != nil {
		return err
	}
	if !known {
		id = "none" // nothing of ours can run; resolve images all the same
	}
	sb, err := openBackend(ctx, cfg.Runner.Backend, id, nil, false)
	if err != nil {
		return err
	}
	defer sb.Close()
	var observed []sandbox.Instance
	if known {
		if observed, err = sb.List(ctx); err != nil {
			return err
		}
	}
	plan := runner.MakePlan(runner.Desire(ctx, cfg, sb, remote.New(remote.Options{})), observed)
	fmt.Fprint(stdout, plan.String())
	for _, op := range plan {
		if op.Action == runner.ActionUnplanned {
			return errReported
		}
	}
	if plan.Changes() {
		return errChanges
	}
	fmt.Fprintln(stdout, "no changes")
	return nil
}

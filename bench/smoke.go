package main

import (
	"fmt"
	"time"
)

// The smoke run (-smoke, `make bench-smoke`, part of `make test`): every section at tiny
// scale, so that the bench cannot rot between full runs. It fails (exit 1) when a section
// fails, is cut short, or when a request fails during a start-first replacement; its
// figures are not results (too short to mean anything) and are not written to
// RESULTS.md. It needs neither wrk nor nginx: the Go load generator is the default, and
// without nginx its rows say so.
const (
	smokeGoal   = time.Minute      // on 2 cores; a warning when over, not a failure
	smokeBound  = 2 * time.Minute  // the whole run's bound (measureFor)
	smokeBudget = 40 * time.Second // each section's
)

// smokeScale shrinks every section; flags the user set (set) are kept.
func smokeScale(set map[string]bool, loadgen *string, loadFor *time.Duration) {
	if !set["loadgen"] {
		*loadgen = "go" // wrk's durations are whole seconds
	}
	if !set["d"] {
		*loadFor = 300 * time.Millisecond
	}
	if !set["cold"] {
		coldSizes = []int{3}
	}
	if !set["scale"] {
		scaleSize = 5
	}
	measureFor = smokeBound
	warmUp = 100 * time.Millisecond
	idleSettle = 300 * time.Millisecond
	idleCPUFor = time.Second
	sseRequests = 20
	minLoad, triggerAfter, newServingFor = 2*time.Second, 500*time.Millisecond, 300*time.Millisecond
	configEdits = 2
	registryPushes = 1
	registryPollTags, registryPollWindow = 20, time.Second
	replicaRounds = 2
	profileBenchtime = "200x"
}

// promiseBroken is a section's error for a broken promise of the runner (a failed request
// during a start-first replacement), as opposed to a measurement that could not be made.
// It fails the run, full or smoke.
type promiseBroken struct{ what string }

func (p *promiseBroken) Error() string { return p.what }

func brokenf(format string, args ...any) error {
	return &promiseBroken{fmt.Sprintf(format, args...)}
}

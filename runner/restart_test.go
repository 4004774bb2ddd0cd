package runner

import (
	"strings"
	"testing"
	"time"

	"github.com/xcore/runner/config"
)

func TestRestartBudget(t *testing.T) {
	t.Parallel()
	p := config.Restart{Policy: config.RestartOnFailure, Attempts: 5, Window: time.Minute, Backoff: 100 * time.Millisecond, MaxBackoff: 500 * time.Millisecond}
	b := newRestartBudget(p)
	now := time.Now()
	var delays []time.Duration
	for i := range 4 {
		ok, d, why := b.decide(crash{reason: "exit code 2"}, now.Add(time.Duration(i)*time.Second))
		if !ok {
			t.Fatalf("crash %d not restarted: %s", i+1, why)
		}
		delays = append(delays, d)
	}
	// Exponential with ±10 % jitter from 100ms, capped at 500ms: ~100, ~200, ~400, 500.
	want := []time.Duration{100, 200, 400, 500}
	for i, d := range delays {
		lo, hi := want[i]*time.Millisecond*9/10, min(want[i]*time.Millisecond*11/10, p.MaxBackoff)
		if d < lo || d > hi {
			t.Errorf("delay %d = %s, want in [%s, %s]", i+1, d, lo, hi)
		}
	}
	ok, _, why := b.decide(crash{reason: "exit code 2"}, now.Add(5*time.Second))
	if ok || why != "crashed 5 times in 1m0s: exit code 2" {
		t.Errorf("5th crash: restart=%v why=%q", ok, why)
	}
}

func TestRestartBudgetWindowAndStable(t *testing.T) {
	t.Parallel()
	p := config.Restart{Policy: config.RestartAlways, Attempts: 2, Window: time.Minute, Backoff: time.Millisecond, MaxBackoff: time.Millisecond}
	b := newRestartBudget(p)
	now := time.Now()
	if ok, _, _ := b.decide(crash{reason: "x"}, now); !ok {
		t.Fatal("first crash not restarted")
	}
	// Outside the window the first crash no longer counts.
	if ok, _, why := b.decide(crash{reason: "x"}, now.Add(2*time.Minute)); !ok {
		t.Fatalf("crash after the window: %s", why)
	}
	b.stable()
	if ok, _, why := b.decide(crash{reason: "x"}, now.Add(2*time.Minute+time.Second)); !ok {
		t.Fatalf("crash after stable(): %s", why)
	}
}

func TestRestartPolicies(t *testing.T) {
	t.Parallel()
	base := config.Restart{Attempts: 5, Window: time.Minute, Backoff: time.Millisecond, MaxBackoff: time.Millisecond}
	tests := []struct {
		policy  string
		crash   crash
		restart bool
		why     string
	}{
		{config.RestartNever, crash{reason: "exit code 2"}, false, "restart policy never"},
		{config.RestartOnFailure, crash{reason: "exit code 0", clean: true}, false, "clean exit"},
		{config.RestartOnFailure, crash{reason: "OOM killed"}, true, ""},
		{config.RestartAlways, crash{reason: "exit code 0", clean: true}, true, ""},
	}
	for _, tt := range tests {
		p := base
		p.Policy = tt.policy
		ok, _, why := newRestartBudget(p).decide(tt.crash, time.Now())
		if ok != tt.restart || !strings.Contains(why, tt.why) {
			t.Errorf("%s %+v: restart=%v why=%q", tt.policy, tt.crash, ok, why)
		}
	}
}

func TestRunsAsRoot(t *testing.T) {
	t.Parallel()
	for user, want := range map[string]bool{"0": true, "0:0": true, "root": true, "root:root": true, "65532:65532": false, "1000": false, "rooter": false} {
		if got := runsAsRoot(user); got != want {
			t.Errorf("runsAsRoot(%q) = %v", user, got)
		}
	}
}

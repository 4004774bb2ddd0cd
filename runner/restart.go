package runner

import (
	"fmt"
	"time"

	"github.com/sethvargo/go-retry"

	"github.com/xcore/runner/config"
)

// crash is why a serving container stopped serving.
type crash struct {
	reason string // "exit code 2", "OOM killed", "health check failed 3 times: ..."
	clean  bool   // exited with code 0 on its own
}

// restartBudget applies a restart {} block: which crashes are restarted, after which
// delay, and when to give up. Not safe for concurrent use: its supervisor owns it.
type restartBudget struct {
	policy  config.Restart
	crashes []time.Time // within window
	backoff retry.Backoff
}

func newRestartBudget(p config.Restart) *restartBudget {
	// config guarantees these; a hand-built config (tests, library users) may not.
	if p.Backoff <= 0 {
		p.Backoff = 250 * time.Millisecond
	}
	p.MaxBackoff = max(p.MaxBackoff, p.Backoff)
	if p.Attempts <= 0 {
		p.Attempts = 1
	}
	b := &restartBudget{policy: p}
	b.resetBackoff()
	return b
}

// resetBackoff: exponential from backoff, ±10 % jitter, capped at max_backoff (the cap
// applies after the jitter, so it is never exceeded).
func (b *restartBudget) resetBackoff() {
	b.backoff = retry.WithCappedDuration(b.policy.MaxBackoff,
		retry.WithJitterPercent(10, retry.NewExponential(b.policy.Backoff)))
}

// decide records c at now and says whether to restart, after how long, and if not, why.
func (b *restartBudget) decide(c crash, now time.Time) (restart bool, delay time.Duration, why string) {
	switch b.policy.Policy {
	case config.RestartNever:
		return false, 0, fmt.Sprintf("%s (restart policy never)", c.reason)
	case config.RestartOnFailure:
		if c.clean {
			return false, 0, fmt.Sprintf("%s (restart policy on-failure: a clean exit is not restarted)", c.reason)
		}
	}
	keep := b.crashes[:0]
	for _, t := range b.crashes {
		if now.Sub(t) < b.policy.Window {
			keep = append(keep, t)
		}
	}
	b.crashes = append(keep, now)
	if len(b.crashes) >= b.policy.Attempts {
		return false, 0, fmt.Sprintf("crashed %d times in %s: %s", len(b.crashes), b.policy.Window, c.reason)
	}
	delay, _ = b.backoff.Next()
	return true, delay, ""
}

// stable forgets past crashes: the container served long enough to count as recovered.
func (b *restartBudget) stable() {
	b.crashes = b.crashes[:0]
	b.resetBackoff()
}

// stableAfter is how long a restarted container must stay healthy before its past
// crashes stop counting: long enough to outlast one maximal backoff.
func stableAfter(p config.Restart) time.Duration {
	return max(10*time.Second, p.MaxBackoff)
}

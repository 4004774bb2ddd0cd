package admin

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/xcore/runner/runner"
)

func TestHistory(t *testing.T) {
	t.Parallel()
	h := NewHistory(3)
	healthy := hello
	h.add(runner.Event{Type: runner.EventState, Plugin: "hello", Status: &healthy})
	h.add(runner.Event{Type: runner.EventState, Plugin: "hello", Status: &healthy}) // no news: dropped
	h.add(runner.Event{Type: runner.EventReplacing, Plugin: "hello", Reason: "a"})
	h.add(runner.Event{Type: runner.EventReplacing, Plugin: "hello", Reason: "b"})
	h.add(runner.Event{Type: runner.EventReplacing, Plugin: "hello", Reason: "c"})
	var reasons []string
	for _, ev := range h.Recent() {
		reasons = append(reasons, ev.Reason)
	}
	if strings.Join(reasons, ",") != "c,b,a" {
		t.Errorf("recent, newest first = %v", reasons)
	}
	if (*History)(nil).Recent() != nil {
		t.Error("a nil history has events")
	}

	ctx, cancel := context.WithCancel(context.Background())
	ch := make(chan runner.Event, 2)
	ch <- runner.Event{Type: runner.EventProbeFailed, Plugin: "hello"}
	ch <- runner.Event{Type: runner.EventCrash, Plugin: "hello", Reason: "exit code 2"}
	close(ch)
	h2 := NewHistory(10)
	h2.Run(ctx, ch)
	cancel()
	if r := h2.Recent(); len(r) != 1 || r[0].Type != runner.EventCrash {
		t.Errorf("probe failures must be left out: %+v", r)
	}
}

func TestStatusPageShowsRecentEvents(t *testing.T) {
	t.Parallel()
	hist := NewHistory(10)
	hist.add(runner.Event{Type: runner.EventCrash, Plugin: "crashy", Reason: "exit code 9"})
	hist.add(runner.Event{Type: runner.EventReplaced, Plugin: "hello", Reason: "env GREETING changed", Duration: 1500e6})
	h := newHarness(t, Options{History: hist})
	body := readAll(t, h.do("GET", "/", nil))
	for _, want := range []string{`<span class="k bad">crash</span>`, "exit code 9", "env GREETING changed in 1.5s"} {
		if !strings.Contains(body, want) {
			t.Errorf("status page lacks %q", want)
		}
	}
	if strings.Index(body, "env GREETING") > strings.Index(body, "exit code 9") {
		t.Error("events are not newest first")
	}
}

// The status page says what a pull did, and shows a failed one in red.
func TestPullEventText(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		ev   runner.Event
		want string
		bad  bool
	}{
		{runner.Event{Type: runner.EventPullStarted, Image: "team/hello:1.4", Reason: "not on this host"}, "pulling team/hello:1.4 (not on this host)", false},
		{runner.Event{Type: runner.EventPullDone, Image: "team/hello:1.4", Digest: "sha256:cd34000000000000ffff", Duration: 1200 * time.Millisecond}, "pulled team/hello:1.4 sha256:cd3400000000 in 1.2s", false},
		{runner.Event{Type: runner.EventPullFailed, Image: "team/hello:1.4", Message: "registry x denied access to team/hello"}, "pull of team/hello:1.4 failed: registry x denied access to team/hello", true},
		{runner.Event{Type: runner.EventRegistryMoved, Reason: "registry: team/hello:1.4 moved a → b"}, "registry: team/hello:1.4 moved a → b", false},
	} {
		if got := eventText(tc.ev); got != tc.want || eventBad(tc.ev) != tc.bad {
			t.Errorf("%s: %q (bad %v), want %q (bad %v)", tc.ev.Type, got, eventBad(tc.ev), tc.want, tc.bad)
		}
	}
}

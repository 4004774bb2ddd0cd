package admin

import (
	"context"
	"strings"
	"testing"

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

package runner

import (
	"errors"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"
)

// A change that cannot be applied (an image that does not exist) is reported while the
// current generation serves; reverting the config clears the error.
func TestResolvedErrorIsCleared(t *testing.T) {
	f := newFake()
	f.images["hello:1"] = "sha256:h"
	h := startHCL(t, f, hello("hi", "5s"))
	h.write(strings.Replace(hello("hi", "5s"), "hello:1", "hello:nope", 1))
	res := h.reloadNow()
	if len(res.Errors) != 1 || !strings.HasPrefix(res.Errors[0], "hello: ") || !strings.Contains(res.Errors[0], "hello:nope") {
		t.Errorf("reload result errors %q, want one naming hello and the image", res.Errors)
	}
	if st := h.status("hello"); st.State != StateHealthy || !strings.Contains(st.LastError, "hello:nope") {
		t.Fatalf("with a missing image: %s %q, want healthy with the error", st.State, st.LastError)
	}
	h.write(hello("hi", "5s"))
	h.reloadNow()
	if st := h.status("hello"); st.State != StateHealthy || st.LastError != "" {
		t.Errorf("after the revert: %s %q, want healthy without an error", st.State, st.LastError)
	}
}

// Events say what happened once: a replacement publishes no state event for the old
// generation after "replacing", and a crash publishes one "restarting", not one per
// decision taken on the way.
func TestEventsWithoutNoise(t *testing.T) {
	f := newFake()
	f.images["hello:1"] = "sha256:h"
	h := startHCL(t, f, hello("hi", "5s"))
	events, unsubscribe := h.Subscribe()
	defer unsubscribe()

	h.write(hello("hey", "5s"))
	h.reloadNow()
	var seen []string
	deadline := time.After(10 * time.Second)
	for replaced := false; !replaced; {
		select {
		case ev := <-events:
			line := string(ev.Type)
			if ev.Status != nil {
				line += fmt.Sprintf(" %s generation=%d", ev.Status.State, ev.Status.Generation)
			}
			seen = append(seen, line)
			replaced = ev.Type == EventReplaced
		case <-deadline:
			t.Fatalf("no replaced event; saw %q", seen)
		}
	}
	for i, line := range seen {
		if line == "state healthy generation=1" && i > 0 && strings.HasPrefix(seen[i-1], "replacing") {
			t.Errorf("a state event for the old generation right after replacing: %q", seen)
		}
	}
	if n := strings.Count(strings.Join(seen, "\n"), "state healthy generation=2"); n != 1 {
		t.Errorf("%d 'state healthy generation=2' events, want 1: %q", n, seen)
	}

	st := h.status("hello")
	f.events <- f.kill(st.Container, 2, false)
	seen = nil
	deadline = time.After(10 * time.Second)
	for restarted := false; !restarted; {
		select {
		case ev := <-events:
			if ev.Status != nil {
				seen = append(seen, string(ev.Status.State))
			}
			restarted = ev.Type == EventRestart
		case <-deadline:
			t.Fatalf("no restart event; saw %q", seen)
		}
	}
	if n := strings.Count(strings.Join(seen, " "), string(StateRestarting)); n != 1 {
		t.Errorf("%d 'restarting' state events for one crash, want 1: %q", n, seen)
	}
}

// A failed plugin answers 503 without Retry-After (it will not serve until its config
// changes: a client told to retry in a second would hammer); a restarting one says
// when to retry.
func TestFailedPluginHasNoRetryAfter(t *testing.T) {
	r, f := superviseTest(t, nil)
	f.events <- f.kill(r.Statuses()[0].Container, 0, false) // clean exit, on-failure: failed
	waitFor(t, "failed", func() bool { return r.Statuses()[0].State == StateFailed })
	resp, err := http.Get("http://" + r.Addr().String() + "/plugins/hello/")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 503 || resp.Header.Get("Retry-After") != "" {
		t.Errorf("failed plugin: %d with Retry-After %q, want 503 without", resp.StatusCode, resp.Header.Get("Retry-After"))
	}
}

// The end of a crashed instance's log is kept when the runner removes it.
func TestPreviousLogsSurviveACrash(t *testing.T) {
	r, f := superviseTest(t, nil)
	if _, err := r.PreviousLogs("hello"); !errors.Is(err, ErrNoPrevious) {
		t.Errorf("before any removal: %v, want ErrNoPrevious", err)
	}
	first := r.Statuses()[0].Container
	f.events <- f.kill(first, 2, false)
	waitFor(t, "restarted", func() bool { return r.Statuses()[0].Restarts == 1 })
	waitFor(t, "the dead one's log kept", func() bool { p, err := r.PreviousLogs("hello"); return err == nil && p.Text == "log of "+first+"\n" })
}

package docker

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/moby/moby/api/types/events"
	"github.com/moby/moby/client"

	"github.com/xcore/runner/sandbox"
)

func TestToEvent(t *testing.T) {
	t.Parallel()
	ours := map[string]string{sandbox.LabelRunner: "r1", sandbox.LabelPlugin: "hello", sandbox.LabelGeneration: "3", "name": "xcore-hello-3-r1"}
	with := func(m map[string]string, kv ...string) map[string]string {
		out := map[string]string{}
		for k, v := range m {
			out[k] = v
		}
		for i := 0; i+1 < len(kv); i += 2 {
			out[kv[i]] = kv[i+1]
		}
		return out
	}
	msg := func(typ events.Type, action events.Action, id string, attrs map[string]string) events.Message {
		return events.Message{Type: typ, Action: action, Actor: events.Actor{ID: id, Attributes: attrs}}
	}
	tests := []struct {
		name string
		msg  events.Message
		want sandbox.Event
		ok   bool
	}{
		{"image tag names the new ref", msg(events.ImageEventType, events.ActionTag, "sha256:abc", map[string]string{"name": "xcore-examples/hello:latest"}),
			sandbox.Event{Kind: sandbox.EventImage, Image: "xcore-examples/hello:latest"}, true},
		{"image untag", msg(events.ImageEventType, events.ActionUnTag, "sha256:abc", map[string]string{"name": "sha256:abc"}),
			sandbox.Event{Kind: sandbox.EventImage, Image: "sha256:abc"}, true},
		{"image delete without name falls back to ID", msg(events.ImageEventType, events.ActionDelete, "sha256:abc", nil),
			sandbox.Event{Kind: sandbox.EventImage, Image: "sha256:abc"}, true},
		{"image load", msg(events.ImageEventType, events.ActionLoad, "sha256:abc", map[string]string{"name": "sha256:abc"}),
			sandbox.Event{Kind: sandbox.EventImage, Image: "sha256:abc"}, true},
		{"image import", msg(events.ImageEventType, events.ActionImport, "sha256:abc", nil), sandbox.Event{Kind: sandbox.EventImage, Image: "sha256:abc"}, true},
		{"image pull", msg(events.ImageEventType, events.ActionPull, "busybox:latest", map[string]string{"name": "busybox"}),
			sandbox.Event{Kind: sandbox.EventImage, Image: "busybox"}, true},
		{"image create (buildkit)", msg(events.ImageEventType, events.ActionCreate, "sha256:abc", map[string]string{"name": "sha256:abc"}),
			sandbox.Event{Kind: sandbox.EventImage, Image: "sha256:abc"}, true},
		{"image push is irrelevant", msg(events.ImageEventType, events.ActionPush, "x:1", nil), sandbox.Event{}, false},
		{"image save is irrelevant", msg(events.ImageEventType, events.ActionSave, "x:1", nil), sandbox.Event{}, false},

		{"our die", msg(events.ContainerEventType, events.ActionDie, "c1", with(ours, "exitCode", "137")),
			sandbox.Event{Kind: sandbox.EventDie, InstanceID: "c1", Plugin: "hello", Generation: 3, ExitCode: 137}, true},
		{"our die exit 0", msg(events.ContainerEventType, events.ActionDie, "c1", with(ours, "exitCode", "0")),
			sandbox.Event{Kind: sandbox.EventDie, InstanceID: "c1", Plugin: "hello", Generation: 3, ExitCode: 0}, true},
		{"our die without exitCode", msg(events.ContainerEventType, events.ActionDie, "c1", ours),
			sandbox.Event{Kind: sandbox.EventDie, InstanceID: "c1", Plugin: "hello", Generation: 3, ExitCode: -1}, true},
		{"our oom", msg(events.ContainerEventType, events.ActionOOM, "c1", ours),
			sandbox.Event{Kind: sandbox.EventOOM, InstanceID: "c1", Plugin: "hello", Generation: 3}, true},
		{"bad generation label", msg(events.ContainerEventType, events.ActionOOM, "c1", with(ours, sandbox.LabelGeneration, "x")),
			sandbox.Event{Kind: sandbox.EventOOM, InstanceID: "c1", Plugin: "hello"}, true},
		{"our start is irrelevant", msg(events.ContainerEventType, events.ActionStart, "c1", ours), sandbox.Event{}, false},
		{"our exec_die is irrelevant", msg(events.ContainerEventType, events.ActionExecDie, "c1", ours), sandbox.Event{}, false},
		{"another runner's die", msg(events.ContainerEventType, events.ActionDie, "c2", with(ours, sandbox.LabelRunner, "r2", "exitCode", "1")), sandbox.Event{}, false},
		{"unlabelled die", msg(events.ContainerEventType, events.ActionDie, "c3", map[string]string{"exitCode": "1"}), sandbox.Event{}, false},
		{"network event", msg(events.NetworkEventType, events.ActionConnect, "n1", ours), sandbox.Event{}, false},
		{"zero message", events.Message{}, sandbox.Event{}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got, ok := toEvent(tt.msg, "r1")
			if ok != tt.ok || got != tt.want {
				t.Errorf("toEvent = %+v, %v; want %+v, %v", got, ok, tt.want, tt.ok)
			}
		})
	}
	t.Run("empty runner id does not match unlabelled containers", func(t *testing.T) {
		t.Parallel()
		if ev, ok := toEvent(msg(events.ContainerEventType, events.ActionDie, "c3", map[string]string{"exitCode": "1"}), ""); ok {
			t.Errorf("toEvent = %+v, true; want false", ev)
		}
	})
}

func TestEventsBackoff(t *testing.T) {
	t.Parallel()
	b := eventsBackoff()
	for i := range 80 {
		d, stop := b.Next()
		if stop {
			t.Fatalf("attempt %d: backoff stopped; want unlimited retries", i)
		}
		if d <= 0 || d > eventsBackoffCap {
			t.Fatalf("attempt %d: wait %v outside (0, %v]", i, d, eventsBackoffCap)
		}
		if i == 0 && (d < 200*time.Millisecond || d > 300*time.Millisecond) {
			t.Fatalf("first wait %v, want 250ms ±20%%", d)
		}
	}
}

// eventsFakeEngine serves just enough of the Engine API for Events: /_ping (failing the first
// failPings times) and /events. The first image stream sends one tag event and then ends,
// as when dockerd restarts; later streams stay open until the client leaves.
type eventsFakeEngine struct {
	failPings  atomic.Int32
	imageConns atomic.Int32
	ctrFilters atomic.Value // string: the filters of the last container stream
}

func (f *eventsFakeEngine) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	switch {
	case strings.HasSuffix(r.URL.Path, "/_ping"):
		w.Header().Set("Api-Version", "1.41")
		if f.failPings.Add(-1) >= 0 {
			http.Error(w, `{"message":"daemon is restarting"}`, http.StatusInternalServerError)
			return
		}
		_, _ = w.Write([]byte("OK"))
	case strings.HasSuffix(r.URL.Path, "/events"):
		filters := r.URL.Query().Get("filters")
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusOK)
		w.(http.Flusher).Flush()
		if strings.Contains(filters, `"image"`) && f.imageConns.Add(1) == 1 {
			_ = json.NewEncoder(w).Encode(events.Message{
				Type: events.ImageEventType, Action: events.ActionTag,
				Actor: events.Actor{ID: "sha256:abc", Attributes: map[string]string{"name": "x:1"}},
			})
			w.(http.Flusher).Flush()
			return
		}
		if strings.Contains(filters, `"container"`) {
			f.ctrFilters.Store(filters)
		}
		<-r.Context().Done()
	default:
		http.NotFound(w, r)
	}
}

// eventsLogSink is a log sink that tests can read while the events loop writes.
type eventsLogSink struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *eventsLogSink) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *eventsLogSink) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func evRecv(t *testing.T, ch <-chan sandbox.Event, within time.Duration) sandbox.Event {
	t.Helper()
	select {
	case ev, ok := <-ch:
		if !ok {
			t.Fatal("events channel closed")
		}
		return ev
	case <-time.After(within):
		t.Fatalf("no event within %v", within)
	}
	return sandbox.Event{}
}

func evWaitClosed(t *testing.T, ch <-chan sandbox.Event, within time.Duration) {
	t.Helper()
	deadline := time.After(within)
	for {
		select {
		case _, ok := <-ch:
			if !ok {
				return
			}
		case <-deadline:
			t.Fatalf("events channel still open %v after cancel", within)
		}
	}
}

// TestEventsReconnect: no Docker needed. An engine that is down at first, then drops the
// stream: the client retries with backoff, and every (re)connection starts with a resync.
func TestEventsReconnect(t *testing.T) {
	t.Parallel()
	fake := &eventsFakeEngine{}
	fake.failPings.Store(4) // HEAD + GET per ping: two failed attempts, one outage
	srv := httptest.NewServer(fake)
	t.Cleanup(srv.Close)

	api, err := client.New(client.WithHost("tcp://"+srv.Listener.Addr().String()), client.WithAPIVersion("1.41"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = api.Close() })
	logs := &eventsLogSink{}
	c := &Client{api: api, runnerID: "r1", log: slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelInfo}))}

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	ch := c.Events(ctx)

	// The resync after the drop says when the stream was lost; the first one (the engine
	// was down at start, nothing was lost) does not.
	begin := time.Now()
	want := []sandbox.Event{{Kind: sandbox.EventResync}, {Kind: sandbox.EventImage, Image: "x:1"}, {Kind: sandbox.EventResync}}
	for i, w := range want {
		got := evRecv(t, ch, 5*time.Second)
		// EngineStopped is when the stream was lost, less the window in which a
		// stopping engine stops its containers.
		lost := got.EngineStopped
		got.EngineStopped = time.Time{}
		if !lost.IsZero() {
			lost = lost.Add(engineStopWindow)
		}
		if got != w || (i == 2) == lost.IsZero() || (i == 2 && (lost.Before(begin) || lost.After(time.Now()))) {
			t.Fatalf("event %d = %+v (lost at %v), want %+v", i, got, lost, w)
		}
	}
	if f, _ := fake.ctrFilters.Load().(string); !strings.Contains(f, `"io.xcore.runner=r1"`) || !strings.Contains(f, `"die"`) || !strings.Contains(f, `"oom"`) {
		t.Errorf("container stream filters = %s", f)
	}

	cancel()
	evWaitClosed(t, ch, 5*time.Second)

	out := logs.String()
	if n := strings.Count(out, "level=WARN"); n != 2 {
		t.Errorf("%d warnings, want 2 (one per outage):\n%s", n, out)
	}
	if n := strings.Count(out, "level=INFO"); n != 2 || strings.Contains(out, "level=ERROR") {
		t.Errorf("want two info lines (back after each outage) and no error:\n%s", out)
	}
}

func evRandomHex(t *testing.T) string {
	t.Helper()
	b := make([]byte, 4)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(b)
}

// dockerForEventsTest connects to the real engine: skipped with -short, skipped when
// Docker is unreachable, except that CI must have Docker.
func dockerForEventsTest(t *testing.T, runnerID string) *Client {
	t.Helper()
	if testing.Short() {
		t.Skip("needs Docker (skipped with -short)")
	}
	unavailable := func(format string, args ...any) {
		t.Helper()
		if os.Getenv("CI") != "" {
			t.Fatalf(format, args...)
		}
		t.Skipf(format, args...)
	}
	if _, err := exec.LookPath("docker"); err != nil {
		unavailable("docker CLI not found: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := New(ctx, runnerID, nil)
	if err != nil {
		unavailable("docker engine unreachable: %v", err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

func evDocker(t *testing.T, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, "docker", args...).CombinedOutput()
	if err != nil {
		t.Fatalf("docker %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

// evWaitImage waits for an sandbox.EventImage naming ref, skipping anything else the engine
// reports meanwhile (other tests may be building images).
func evWaitImage(t *testing.T, ch <-chan sandbox.Event, ref string, within time.Duration) {
	t.Helper()
	deadline := time.After(within)
	var seen []sandbox.Event
	for {
		select {
		case ev, ok := <-ch:
			if !ok {
				t.Fatalf("events channel closed while waiting for an image event naming %s", ref)
			}
			if ev.Kind == sandbox.EventImage && ev.Image == ref {
				return
			}
			seen = append(seen, ev)
		case <-deadline:
			t.Fatalf("no image event naming %s within %v; saw %+v", ref, within, seen)
		}
	}
}

// TestEventsDocker runs against the real engine: `docker build -t` and `docker tag` each
// produce an sandbox.EventImage naming the new reference, and cancelling ctx closes the channel.
func TestEventsDocker(t *testing.T) {
	id := evRandomHex(t)
	c := dockerForEventsTest(t, "evtest-"+id)
	base := "xcore-evtest/base:" + id
	tagged := "xcore-evtest/x:" + id
	t.Cleanup(func() {
		// rmi -f on a reference untags it; the image goes with its last reference.
		_ = exec.Command("docker", "rmi", "-f", tagged, base).Run()
	})

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	ch := c.Events(ctx)
	if ev := evRecv(t, ch, 10*time.Second); ev.Kind != sandbox.EventResync {
		t.Fatalf("first event = %+v, want sandbox.EventResync", ev)
	}

	dir := t.TempDir()
	// A LABEL is enough for a FROM scratch image; the unique one keeps the build cache
	// from handing us another run's image.
	dockerfile := "FROM scratch\nLABEL io.xcore.test=evtest io.xcore.evtest.id=" + id + "\n"
	if err := os.WriteFile(filepath.Join(dir, "Dockerfile"), []byte(dockerfile), 0o644); err != nil {
		t.Fatal(err)
	}
	evDocker(t, "build", "-t", base, dir)
	evWaitImage(t, ch, base, 5*time.Second)

	evDocker(t, "tag", base, tagged)
	evWaitImage(t, ch, tagged, 5*time.Second)

	cancel()
	evWaitClosed(t, ch, 5*time.Second)
}

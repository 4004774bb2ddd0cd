package runner

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	ggcr "github.com/google/go-containerregistry/pkg/v1/remote"

	"github.com/xcore/runner/config"
	"github.com/xcore/runner/proxy"
	"github.com/xcore/runner/registry/registrytest"
	"github.com/xcore/runner/registry/remote"
	"github.com/xcore/runner/sandbox"
)

// registryFake is the fake engine that pulls for real: from a registry on 127.0.0.1,
// with the credentials it is handed, reading the manifest and every blob as an engine
// does, and recording the registry digest (the index digest for an index, as dockerd
// 20.10 does). What it runs are the fake's httptest "containers".
type registryFake struct {
	*fakeSandbox
	mu          sync.Mutex
	repoDigests map[string][]string // image ID → "repo@sha256:…"
	pulls       int
	gate        chan struct{} // when set, a pull waits for it to be closed
	auths       []sandbox.RegistryAuth
}

func newRegistryFake() *registryFake {
	return &registryFake{fakeSandbox: newFake(), repoDigests: map[string][]string{}}
}

func (f *registryFake) InspectImage(_ context.Context, ref string) (sandbox.Image, error) {
	f.fakeSandbox.mu.Lock()
	defer f.fakeSandbox.mu.Unlock()
	f.mu.Lock()
	defer f.mu.Unlock()
	if id, ok := f.images[ref]; ok {
		return sandbox.Image{ID: id, RepoDigests: slices.Clone(f.repoDigests[id])}, nil
	}
	if strings.Contains(ref, "@") {
		for id, rds := range f.repoDigests {
			if slices.Contains(rds, ref) {
				return sandbox.Image{ID: id, RepoDigests: slices.Clone(rds)}, nil
			}
		}
	}
	return sandbox.Image{}, fmt.Errorf("image %q %w locally", ref, sandbox.ErrNotFound)
}

func (f *registryFake) Platform(context.Context) (sandbox.Platform, error) {
	return sandbox.Platform{OS: "linux", Architecture: "amd64"}, nil
}

func (f *registryFake) PullImage(ctx context.Context, ref string, auth sandbox.RegistryAuth, progress func(sandbox.PullProgress)) (sandbox.Image, error) {
	f.mu.Lock()
	f.pulls++
	f.auths = append(f.auths, auth)
	gate := f.gate
	f.mu.Unlock()
	if gate != nil {
		select {
		case <-gate:
		case <-ctx.Done():
			return sandbox.Image{}, ctx.Err()
		}
	}
	r, err := name.ParseReference(ref)
	if err != nil {
		return sandbox.Image{}, err
	}
	opts := []ggcr.Option{ggcr.WithContext(ctx)}
	if auth.Username != "" {
		opts = append(opts, ggcr.WithAuth(&authn.Basic{Username: auth.Username, Password: auth.Password}))
	}
	desc, err := ggcr.Get(r, opts...)
	if err != nil {
		return sandbox.Image{}, fmt.Errorf("pull %s: %w", ref, err)
	}
	img, err := desc.Image() // the platform's image of an index
	if err != nil {
		return sandbox.Image{}, err
	}
	cfgName, err := img.ConfigName()
	if err != nil {
		return sandbox.Image{}, fmt.Errorf("pull %s: %w", ref, err)
	}
	layers, _ := img.Layers()
	var p sandbox.PullProgress
	p.Layers = len(layers)
	for _, l := range layers {
		rc, err := l.Compressed()
		if err != nil {
			return sandbox.Image{}, fmt.Errorf("pull %s: %w", ref, err)
		}
		n, err := io.Copy(io.Discard, rc)
		rc.Close()
		if err != nil {
			return sandbox.Image{}, fmt.Errorf("pull %s: %w", ref, err)
		}
		p.Done += n
		p.Total += n
		p.LayersDone++
		progress(p)
	}
	id := cfgName.String()
	rd := r.Context().Name() + "@" + desc.Digest.String()
	rd = strings.TrimPrefix(rd, "index.docker.io/")
	f.fakeSandbox.mu.Lock()
	f.mu.Lock()
	f.images[ref] = id
	if !slices.Contains(f.repoDigests[id], rd) {
		f.repoDigests[id] = append(f.repoDigests[id], rd)
	}
	out := sandbox.Image{ID: id, RepoDigests: slices.Clone(f.repoDigests[id])}
	f.mu.Unlock()
	f.fakeSandbox.mu.Unlock()
	p.Digest = desc.Digest.String()
	progress(p)
	return out, nil
}

func (f *registryFake) pullCount() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.pulls
}

var _ Puller = (*registryFake)(nil)

// regEnv is a runner on a config file with the registry fake, a real registry, a log
// and every event kept.
type regEnv struct {
	*hclRunner
	rf   *registryFake
	reg  *registrytest.Server
	logs *syncBuffer

	mu     sync.Mutex
	events []Event
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func startRegistry(t *testing.T) *registrytest.Server {
	t.Helper()
	s, err := registrytest.Start()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close)
	return s
}

// pushImage pushes a distinct small image (content) to ref.
func pushImage(t *testing.T, ref, content, user, pass string) string {
	t.Helper()
	img, err := registrytest.Build(registrytest.Image{Files: map[string]string{"/version": content}, Platform: v1.Platform{OS: "linux", Architecture: "amd64"}})
	if err != nil {
		t.Fatal(err)
	}
	d, err := registrytest.Push(context.Background(), ref, img, user, pass)
	if err != nil {
		t.Fatal(err)
	}
	return d
}

// startRegistryRunner starts a runner on body; it does not wait for pulls (Start does).
func startRegistryRunner(t *testing.T, rf *registryFake, reg *registrytest.Server, body string) *regEnv {
	t.Helper()
	path := filepath.Join(t.TempDir(), "plugins.hcl")
	e := &regEnv{rf: rf, reg: reg, logs: &syncBuffer{}}
	e.hclRunner = &hclRunner{t: t, path: path, f: rf.fakeSandbox}
	e.write(body)
	cfg, _, diags := config.Load(path)
	if diags.HasErrors() {
		t.Fatal(diags.Error())
	}
	log := slog.New(slog.NewTextHandler(e.logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	e.Runner = New(Options{Config: cfg, ConfigPath: path, Sandbox: rf, Router: proxy.New(proxy.Options{}), Logger: log, Registry: remote.New(remote.Options{Logger: log})})
	ch, stop := e.Subscribe()
	done := make(chan struct{})
	go func() {
		defer close(done)
		for ev := range ch {
			e.mu.Lock()
			e.events = append(e.events, ev)
			e.mu.Unlock()
		}
	}()
	t.Cleanup(func() {
		_ = e.Shutdown(context.Background())
		stop()
		<-done
		if t.Failed() {
			t.Logf("runner log:\n%s", e.logs.String())
		}
	})
	if err := e.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	return e
}

func (e *regEnv) eventsOf(typ EventType) []Event {
	e.mu.Lock()
	defer e.mu.Unlock()
	var out []Event
	for _, ev := range e.events {
		if ev.Type == typ {
			out = append(out, ev)
		}
	}
	return out
}

func regPlugin(name, image, extra string) string { return regPluginSays(name, image, name, extra) }

// regPluginSays is a plugin whose fake container answers "<greeting> <path>".
func regPluginSays(name, image, greeting, extra string) string {
	return fmt.Sprintf("plugin %q {\n  image = %q\n  port = 8080\n  env = { GREETING = %q }\n%s  supervisor {\n    drain_timeout = \"2s\"\n  }\n}\n", name, image, greeting, extra)
}

// Two plugins on one missing image: one pull, through the engine slots, both serve;
// events say it started and ended with the digest; the snapshot records the digest.
func TestPullsMissingImageOnce(t *testing.T) {
	t.Parallel()
	reg := startRegistry(t)
	ref := reg.Host + "/team/hello:latest"
	digest := pushImage(t, ref, "v1", "", "")
	rf := newRegistryFake()
	// Two spellings of one image.
	e := startRegistryRunner(t, rf, reg, regPlugin("a", ref, "")+regPlugin("b", reg.Host+"/team/hello", ""))
	for _, n := range []string{"a", "b"} {
		if st := e.status(n); st.State != StateHealthy {
			t.Errorf("%s: %s (%s) after start, want healthy", n, st.State, st.LastError)
		}
		if code, body := e.get("/plugins/" + n + "/x"); code != 200 || body != n+" /x" {
			t.Errorf("%s answers %d %q", n, code, body)
		}
	}
	if n := rf.pullCount(); n != 1 {
		t.Errorf("%d pulls for one image, want 1", n)
	}
	done := e.eventsOf(EventPullDone)
	if len(e.eventsOf(EventPullStarted)) != 2 || len(done) != 2 || done[0].Digest != digest || done[0].Duration <= 0 {
		t.Errorf("pull events %+v, want started and done (digest %s) for both plugins", done, digest)
	}
	rf.fakeSandbox.mu.Lock()
	label := rf.lastSpec["a"].SpecLabel
	rf.fakeSandbox.mu.Unlock()
	if !strings.Contains(label, `"image_digest":"`+digest+`"`) {
		t.Errorf("snapshot label %s does not record the digest", label)
	}
}

// While a pull runs, the plugin is "pulling" (not failed) with its progress, its
// route says so, and everything else goes on: another plugin serves, a reload of
// another plugin applies, statuses answer — the pass never waits for a registry.
func TestPullNeverBlocksAPass(t *testing.T) {
	t.Parallel()
	reg := startRegistry(t)
	ref := reg.Host + "/team/hello:1.4"
	pushImage(t, ref, "v1", "", "")
	rf := newRegistryFake()
	rf.images["local:1"] = "sha256:local"
	rf.gate = make(chan struct{})
	other := regPlugin("other", "local:1", "  pull = \"never\"\n")
	startDone := make(chan *regEnv, 1)
	go func() { startDone <- startRegistryRunner(t, rf, reg, regPlugin("slow", ref, "")+other) }()
	// Start waits for the pull: meanwhile the runner is reachable.
	var e *regEnv
	select {
	case e = <-startDone:
		t.Fatal("Start returned while the image was being pulled")
	case <-time.After(300 * time.Millisecond):
	}
	close(rf.gate) // let the pull finish...
	e = <-startDone
	if st := e.status("slow"); st.State != StateHealthy {
		t.Fatalf("slow: %s %s", st.State, st.LastError)
	}

	// ...and now a second image, held in its pull, while the rest goes on.
	ref2 := reg.Host + "/team/hello:2"
	pushImage(t, ref2, "v2", "", "")
	rf.mu.Lock()
	rf.gate = make(chan struct{})
	gate := rf.gate
	rf.mu.Unlock()
	defer close(gate)
	e.write(regPlugin("slow", ref2, "") + regPluginSays("other", "local:1", "edited", "  pull = \"never\"\n"))
	// A pass that waited for the held pull would not end before the deadline.
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	res, err := e.ReloadNow(ctx)
	if err != nil || !res.Applied {
		t.Fatalf("a reload while a pull is held: %+v, %v", res, err)
	}
	e.caughtUp("other")
	if !strings.Contains(res.Plan, "… slow: pulling ("+ref2+")") {
		t.Errorf("plan:\n%s\nwant slow pulling", res.Plan)
	}
	waitFor(t, "other edited", func() bool { _, body := e.get("/plugins/other/"); return body == "edited /" })
	// The plugin that serves keeps serving its old image while the new one comes.
	if code, _ := e.get("/plugins/slow/"); code != 200 {
		t.Errorf("slow answers %d while its next image is pulled", code)
	}
	st := e.status("slow")
	if st.Pull == nil || st.Pull.Image != ref2 || st.State != StateHealthy {
		t.Errorf("status %+v (pull %+v), want healthy with the pull of %s under way", st.State, st.Pull, ref2)
	}
}

// A plugin whose image is absent and whose registry is down fails with the
// registry's error; the others serve. Once the registry answers the pull is retried on
// its own and the plugin serves.
func TestMissingImageRegistryDown(t *testing.T) {
	t.Parallel()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	rf := newRegistryFake()
	rf.images["local:1"] = "sha256:local"
	e := startRegistryRunner(t, rf, nil, regPlugin("ghost", addr+"/team/hello:1.4", "")+regPlugin("other", "local:1", ""))
	st := e.status("ghost")
	if st.State != StateFailed || !strings.Contains(st.LastError, "registry "+addr+" unreachable") || !strings.Contains(st.LastError, "connection refused") {
		t.Errorf("ghost: %s %q, want failed with the registry's error", st.State, st.LastError)
	}
	if code, body := e.get("/plugins/ghost/"); code != 503 || !strings.Contains(body, "unreachable") {
		t.Errorf("ghost answers %d %s", code, body)
	}
	if code, _ := e.get("/plugins/other/"); code != 200 {
		t.Errorf("other answers %d", code)
	}
	if rf.pullCount() != 0 {
		t.Error("the engine was asked to pull from a registry that did not answer")
	}
	if len(e.eventsOf(EventPullFailed)) == 0 {
		t.Error("no pull_failed event")
	}
}

// An image present while its registry is down at start: it serves, a warning says the
// registry did not answer, and polling goes on with backoff; once the registry is back
// and the tag moved, the plugin is replaced.
func TestRegistryDownAtStartImagePresent(t *testing.T) {
	t.Parallel()
	reg := startRegistry(t)
	ref := reg.Host + "/team/hello:1.4"
	d1 := pushImage(t, ref, "v1", "", "")
	rf := newRegistryFake()
	// The engine has it from an earlier pull.
	if _, err := rf.PullImage(context.Background(), ref, sandbox.RegistryAuth{}, func(sandbox.PullProgress) {}); err != nil {
		t.Fatal(err)
	}
	rf.pulls = 0
	reg.Stop()
	e := startRegistryRunner(t, rf, reg, regPlugin("hello", ref, "  registry_poll = \"1s\"\n"))
	if st := e.status("hello"); st.State != StateHealthy {
		t.Fatalf("hello: %s %s; want it served from the local image", st.State, st.LastError)
	}
	waitFor(t, "a warning", func() bool {
		return strings.Contains(e.logs.String(), "registry check failed; what runs keeps serving")
	})
	gen := e.status("hello").Generation
	if err := reg.Resume(); err != nil {
		t.Fatal(err)
	}
	d2 := pushImage(t, ref, "v2", "", "")
	waitFor(t, "the replacement", func() bool {
		st := e.status("hello")
		return st.Generation > gen && st.State == StateHealthy && !st.StartedAt.IsZero()
	})
	want := "registry: " + ref + " moved " + shortDigest(d1) + " → " + shortDigest(d2)
	if st := e.status("hello"); st.LastChange != want {
		t.Errorf("last change %q, want %q", st.LastChange, want)
	}
	if !strings.Contains(e.logs.String(), "registry answers again") {
		t.Error("no log line when the registry came back")
	}
}

// preload has the fake engine pull ref as an earlier `docker pull` would have.
func preload(t *testing.T, rf *registryFake, ref string) {
	t.Helper()
	if _, err := rf.PullImage(context.Background(), ref, sandbox.RegistryAuth{}, func(sandbox.PullProgress) {}); err != nil {
		t.Fatal(err)
	}
	rf.mu.Lock()
	rf.pulls = 0
	rf.mu.Unlock()
}

// A followed tag: while nothing moves the registry sees manifest HEADs only (no GET);
// a push moves it and the plugin is replaced start-first, the reason in the registry's
// terms in the log, the events and the status.
func TestFollowTagMoved(t *testing.T) {
	t.Parallel()
	reg := startRegistry(t)
	ref := reg.Host + "/team/hello:1.4"
	d1 := pushImage(t, ref, "v1", "", "")
	rf := newRegistryFake()
	e := startRegistryRunner(t, rf, reg, regPlugin("hello", ref, "  registry_poll = \"1s\"\n"))
	gen := e.status("hello").Generation

	before := reg.Counts()
	waitFor(t, "3 polls", func() bool { return reg.Counts().Since(before).ManifestHead >= 3 })
	if got := reg.Counts().Since(before); got.ManifestGet != 0 || got.BlobGet != 0 || got.Writes != 0 {
		t.Errorf("while nothing moved the registry served %s; want manifest HEADs only", got)
	}
	if e.status("hello").Generation != gen || rf.pullCount() != 1 {
		t.Fatalf("replaced or pulled although nothing moved")
	}

	d2 := pushImage(t, ref, "v2", "", "")
	waitFor(t, "the replacement", func() bool { return len(e.eventsOf(EventReplaced)) > 0 })
	want := "registry: " + ref + " moved " + shortDigest(d1) + " → " + shortDigest(d2)
	moved := e.eventsOf(EventRegistryMoved)
	if len(moved) != 1 || moved[0].Reason != want || moved[0].Digest != d2 || moved[0].Plugin != "hello" {
		t.Errorf("registry_moved events %+v, want one with %q", moved, want)
	}
	if r := e.eventsOf(EventReplacing); len(r) != 1 || r[0].Reason != want {
		t.Errorf("replacing events %+v, want the reason %q", r, want)
	}
	if st := e.status("hello"); st.LastChange != want || st.Generation == gen || st.State != StateHealthy {
		t.Errorf("status: %s gen %d, last change %q", st.State, st.Generation, st.LastChange)
	}
	if !strings.Contains(e.logs.String(), `msg="registry tag moved"`) || !strings.Contains(e.logs.String(), `msg="replacing plugin" plugin=hello generation=1 reason="`+want+`"`) {
		t.Errorf("the log does not tell the move and the replacement")
	}
	if n := rf.pullCount(); n != 2 {
		t.Errorf("%d pulls, want 2 (start, move)", n)
	}
}

// A plugin pinned by digest is never replaced by a tag move, nor polled.
func TestPinnedDigestNeverFollowed(t *testing.T) {
	t.Parallel()
	reg := startRegistry(t)
	ref := reg.Host + "/team/hello:1.4"
	d1 := pushImage(t, ref, "v1", "", "")
	rf := newRegistryFake()
	tagged := regPlugin("tagged", ref, "  registry_poll = \"1s\"\n")
	e := startRegistryRunner(t, rf, reg, regPlugin("pinned", ref+"@"+d1, "  registry_poll = \"1s\"\n")+tagged)
	if st := e.status("pinned"); st.State != StateHealthy {
		t.Fatalf("pinned: %s %s", st.State, st.LastError)
	}
	gen := e.status("pinned").Generation
	pushImage(t, ref, "v2", "", "")
	waitFor(t, "the tagged plugin replaced", func() bool { return len(e.eventsOf(EventReplaced)) > 0 })
	if st := e.status("pinned"); st.Generation != gen {
		t.Errorf("the pinned plugin was replaced by a tag move: %+v", st)
	}
	for _, ev := range e.eventsOf(EventRegistryMoved) {
		if ev.Plugin == "pinned" {
			t.Errorf("registry_moved for the pinned plugin: %+v", ev)
		}
	}
}

// A multi-platform index: a push that changes another platform's image is no move
// here — no pull, no replacement; one that changes this platform's is.
func TestIndexNoFalseReplacement(t *testing.T) {
	t.Parallel()
	reg := startRegistry(t)
	ref := reg.Host + "/team/multi:1"
	build := func(content, arch string) v1.Image {
		img, err := registrytest.Build(registrytest.Image{Files: map[string]string{"/v": content}, Platform: v1.Platform{OS: "linux", Architecture: arch}})
		if err != nil {
			t.Fatal(err)
		}
		return img
	}
	push := func(imgs ...v1.Image) string {
		idx, err := registrytest.Index(imgs...)
		if err != nil {
			t.Fatal(err)
		}
		d, err := registrytest.Push(context.Background(), ref, idx, "", "")
		if err != nil {
			t.Fatal(err)
		}
		return d
	}
	amd := build("a1", "amd64")
	push(amd, build("b1", "arm64"))
	rf := newRegistryFake()
	e := startRegistryRunner(t, rf, reg, regPlugin("multi", ref, "  registry_poll = \"1s\"\n"))
	gen := e.status("multi").Generation

	push(amd, build("b2", "arm64")) // arm64 only
	before := reg.Counts()
	waitFor(t, "3 polls", func() bool { return reg.Counts().Since(before).ManifestHead >= 3 })
	if st := e.status("multi"); st.Generation != gen || rf.pullCount() != 1 || len(e.eventsOf(EventRegistryMoved)) != 0 {
		t.Fatalf("an arm64-only push moved the amd64 plugin: gen %d→%d, %d pulls, %d moves", gen, st.Generation, rf.pullCount(), len(e.eventsOf(EventRegistryMoved)))
	}
	if got := reg.Counts().Since(before); got.ManifestGet > 2 {
		t.Errorf("3 polls after the push cost %s; the indexes are read once", got)
	}

	push(build("a3", "amd64"), build("b2", "arm64"))
	waitFor(t, "the replacement", func() bool { return len(e.eventsOf(EventReplaced)) > 0 })
}

// A pull that fails halfway (the registry serves the manifest, not the blobs) keeps
// the old generation serving; it is retried, and replaces once it works.
func TestPullFailsHalfwayKeepsServing(t *testing.T) {
	t.Parallel()
	reg := startRegistry(t)
	ref := reg.Host + "/team/hello:1.4"
	pushImage(t, ref, "v1", "", "")
	rf := newRegistryFake()
	e := startRegistryRunner(t, rf, reg, regPlugin("hello", ref, "  registry_poll = \"1s\"\n"))
	gen := e.status("hello").Generation
	reg.FailBlobs(true)
	pushImage(t, ref, "v2", "", "")
	waitFor(t, "a failed pull", func() bool { return len(e.eventsOf(EventPullFailed)) > 0 })
	if st := e.status("hello"); st.Generation != gen || st.State != StateHealthy {
		t.Errorf("after a failed pull: %s gen %d, want generation %d serving", st.State, st.Generation, gen)
	}
	if code, _ := e.get("/plugins/hello/"); code != 200 {
		t.Errorf("hello answers %d after a failed pull", code)
	}
	if f := e.eventsOf(EventPullFailed)[0]; f.Plugin != "hello" || !strings.Contains(f.Message, "pull "+ref) {
		t.Errorf("pull_failed %+v", f)
	}
	reg.FailBlobs(false)
	waitFor(t, "the replacement after a retry", func() bool { return len(e.eventsOf(EventReplaced)) > 0 })
}

// A 429 with Retry-After: nothing is sent to that registry until it has passed.
func TestRateLimitHonoured(t *testing.T) {
	t.Parallel()
	reg := startRegistry(t)
	ref := reg.Host + "/team/hello:1.4"
	pushImage(t, ref, "v1", "", "")
	rf := newRegistryFake()
	e := startRegistryRunner(t, rf, reg, regPlugin("hello", ref, "  registry_poll = \"1s\"\n"))
	reg.Throttle(1, "3")
	waitFor(t, "the 429", func() bool { return reg.Counts().Refused == 1 })
	refused := time.Now()
	after := reg.Counts()
	waitFor(t, "the next request", func() bool { return reg.Counts().Since(after) != (registrytest.Counts{}) })
	if wait := time.Since(refused); wait < 2900*time.Millisecond {
		t.Errorf("the next request came %s after a 429 asking for 3s", wait.Round(time.Millisecond))
	}
	if st := e.status("hello"); st.State != StateHealthy {
		t.Errorf("hello %s during a rate limit", st.State)
	}
	if !strings.Contains(e.logs.String(), "rate-limits us (429)") {
		t.Error("the log does not say the registry rate-limits us")
	}
}

// pull = "always": the image is pulled at start although the engine has one (an older
// one here), and the plugin starts on what the registry has.
func TestPullAlways(t *testing.T) {
	t.Parallel()
	reg := startRegistry(t)
	ref := reg.Host + "/team/hello:1.4"
	pushImage(t, ref, "v1", "", "")
	rf := newRegistryFake()
	preload(t, rf, ref)
	d2 := pushImage(t, ref, "v2", "", "")
	e := startRegistryRunner(t, rf, reg, regPlugin("hello", ref, "  pull = \"always\"\n  registry_poll = \"0\"\n"))
	rf.fakeSandbox.mu.Lock()
	label := rf.lastSpec["hello"].SpecLabel
	rf.fakeSandbox.mu.Unlock()
	if rf.pullCount() != 1 || !strings.Contains(label, d2) || e.status("hello").Generation != 1 {
		t.Errorf("%d pulls, label %s: want one pull and generation 1 on %s", rf.pullCount(), label, d2)
	}
}

// runner pull: pulls now, says what changed, and the plugin is replaced.
func TestRunnerPull(t *testing.T) {
	t.Parallel()
	reg := startRegistry(t)
	ref := reg.Host + "/team/hello:1.4"
	d1 := pushImage(t, ref, "v1", "", "")
	rf := newRegistryFake()
	e := startRegistryRunner(t, rf, reg, regPlugin("a", ref, "  registry_poll = \"0\"\n")+regPlugin("b", ref, "  registry_poll = \"0\"\n"))
	d2 := pushImage(t, ref, "v2", "", "")
	res, err := e.Pull(context.Background(), nil)
	if err != nil {
		t.Fatal(err)
	}
	want := []PullResult{{Image: ref, Plugins: []string{"a", "b"}, Before: d1, After: d2, Changed: true}}
	if fmt.Sprint(res) != fmt.Sprint(want) {
		t.Errorf("Pull = %+v, want %+v", res, want)
	}
	waitFor(t, "both replaced", func() bool { return len(e.eventsOf(EventReplaced)) == 2 })
	if _, err := e.Pull(context.Background(), []string{"nope"}); err == nil {
		t.Error("pulling an unknown plugin succeeded")
	}
}

// Credentials come from DOCKER_CONFIG's config.json and reach the engine's pull; they
// never appear in the log, an event, a status or the plan. Wrong ones fail the plugin
// with the registry, the repository and the file to check. Not parallel: it sets
// DOCKER_CONFIG.
func TestRegistryCredentials(t *testing.T) {
	const user, pass = "team", "Secret-Pa55-9f3e"
	reg := startRegistry(t)
	reg.RequireAuth(user, pass)
	ref := reg.Host + "/team/hello:1.4"
	pushImage(t, ref, "v1", user, pass)
	dir := t.TempDir()
	t.Setenv("DOCKER_CONFIG", dir)
	if err := registrytest.WriteDockerConfig(dir, reg.Host, user, "wrong-"+pass); err != nil {
		t.Fatal(err)
	}
	rf := newRegistryFake()
	rf.images["local:1"] = "sha256:local"
	e := startRegistryRunner(t, rf, reg, regPlugin("hello", ref, "  registry_poll = \"1s\"\n")+regPlugin("other", "local:1", ""))
	wantErr := fmt.Sprintf("registry %s denied access to team/hello (check %s/config.json)", reg.Host, dir)
	st := e.status("hello")
	if st.State != StateFailed || st.LastError != wantErr {
		t.Errorf("hello: %s %q, want failed: %s", st.State, st.LastError, wantErr)
	}
	if code, body := e.get("/plugins/hello/"); code != 503 || !strings.Contains(body, `"plugin failed: `+wantErr+`"`) {
		t.Errorf("hello answers %d %s", code, body)
	}
	if code, _ := e.get("/plugins/other/"); code != 200 {
		t.Errorf("other answers %d", code)
	}

	// Fixed in config.json: a restart pulls again and the plugin serves.
	if err := registrytest.WriteDockerConfig(dir, reg.Host, user, pass); err != nil {
		t.Fatal(err)
	}
	if err := e.Restart("hello"); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "hello serving", func() bool { return e.status("hello").State == StateHealthy })
	rf.mu.Lock()
	last := rf.auths[len(rf.auths)-1]
	rf.mu.Unlock()
	if last.Username != user || last.Password != pass || last.ServerAddress != reg.Host {
		t.Errorf("the engine got %q/%t for %q, want the config.json credentials", last.Username, last.Password == pass, last.ServerAddress)
	}

	plan := MakePlan(Desire(context.Background(), e.config(), rf, remote.New(remote.Options{})), mustList(t, rf))
	statuses, _ := json.Marshal(e.Statuses())
	e.mu.Lock()
	events, _ := json.Marshal(e.events)
	e.mu.Unlock()
	for what, out := range map[string]string{"log": e.logs.String(), "events": string(events), "statuses": string(statuses), "plan": plan.String()} {
		if strings.Contains(out, pass) {
			t.Errorf("the %s shows the password:\n%s", what, out)
		}
	}
	if !strings.Contains(plan.String(), "= hello: unchanged") {
		t.Errorf("plan:\n%s", plan)
	}
}

func mustList(t *testing.T, sb Sandbox) []sandbox.Instance {
	t.Helper()
	l, err := sb.List(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return l
}

// runner plan asks the registry, changing nothing: a moved tag is a replacement with
// the registry's reason, a missing image an add.
func TestPlanSeesRegistry(t *testing.T) {
	t.Parallel()
	reg := startRegistry(t)
	ref := reg.Host + "/team/hello:1.4"
	d1 := pushImage(t, ref, "v1", "", "")
	rf := newRegistryFake()
	e := startRegistryRunner(t, rf, reg, regPlugin("hello", ref, "  registry_poll = \"0\"\n"))
	d2 := pushImage(t, ref, "v2", "", "")
	cfg := e.config()
	// Followed (as by default): the plan sees the move.
	next := *cfg
	next.Plugins = map[string]*config.Plugin{}
	for n, p := range cfg.Plugins {
		cp := *p
		cp.RegistryPoll = time.Minute
		next.Plugins[n] = &cp
	}
	next.Plugins["new"] = &config.Plugin{Name: "new", Image: reg.Host + "/team/other:1", Pull: config.PullMissing, Port: 8080, Supervisor: cfg.Plugins["hello"].Supervisor}
	pushImage(t, reg.Host+"/team/other:1", "o", "", "")
	before := rf.pullCount()
	plan := MakePlan(Desire(context.Background(), &next, rf, remote.New(remote.Options{})), mustList(t, rf)).String()
	want := "~ hello: replace (registry: " + ref + " moved " + shortDigest(d1) + " → " + shortDigest(d2) + ")\n+ new: add\n"
	if plan != want {
		t.Errorf("plan:\n%s\nwant:\n%s", plan, want)
	}
	if rf.pullCount() != before {
		t.Error("runner plan pulled")
	}
}

// Tags followed at different intervals are each polled at their own: a quick tag whose
// check ends after a slow tag's (here: on a slower registry) is not left waiting for the
// slow tag's next poll.
func TestFollowDifferentIntervals(t *testing.T) {
	t.Parallel()
	quick, slow := startRegistry(t), startRegistry(t)
	pushImage(t, quick.Host+"/team/a:1", "a", "", "")
	pushImage(t, slow.Host+"/team/b:1", "b", "", "")
	rf := newRegistryFake()
	e := startRegistryRunner(t, rf, nil, regPlugin("a", quick.Host+"/team/a:1", "  registry_poll = \"1s\"\n")+
		regPlugin("b", slow.Host+"/team/b:1", "  registry_poll = \"1h\"\n"))
	_ = e
	quick.Delay(300 * time.Millisecond) // a's checks end after b's
	before, slowBefore := quick.Counts(), slow.Counts()
	waitFor(t, "3 polls of the 1s tag", func() bool { return quick.Counts().Since(before).ManifestHead >= 3 })
	if n := slow.Counts().Since(slowBefore).ManifestHead; n > 1 {
		t.Errorf("the 1h tag was polled %d times meanwhile", n)
	}
}

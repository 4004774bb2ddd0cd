package runner

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/xcore/runner/config"
	"github.com/xcore/runner/registry/registrytest"
	"github.com/xcore/runner/registry/remote"
	"github.com/xcore/runner/sandbox"
)

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
	preload(t, rf, ref) // the engine has it from an earlier pull
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

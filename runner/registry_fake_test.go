package runner

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"

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

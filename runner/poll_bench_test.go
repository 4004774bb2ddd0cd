package runner

import (
	"bufio"
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	ggcr "github.com/google/go-containerregistry/pkg/v1/remote"

	"github.com/xcore/runner/config"
	"github.com/xcore/runner/proxy"
	"github.com/xcore/runner/registry/registrytest"
	"github.com/xcore/runner/registry/remote"
)

// TestHelperRegistryProcess is not a test: BenchmarkRegistryPoll runs the test binary
// again with XCORE_REGISTRY_PROCESS=1 to serve a registry from another process, so that
// the CPU it measures is the runner's alone.
func TestHelperRegistryProcess(t *testing.T) {
	if os.Getenv("XCORE_REGISTRY_PROCESS") != "1" {
		t.Skip("helper process of BenchmarkRegistryPoll")
	}
	s, err := registrytest.Start()
	if err != nil {
		fmt.Println("error", err)
		os.Exit(1)
	}
	fmt.Println(s.Host)
	_, _ = bufio.NewReader(os.Stdin).ReadString('\n') // until the benchmark closes stdin
	s.Close()
	os.Exit(0)
}

// countingTransport counts the manifest HEADs the runner sends.
type countingTransport struct {
	next  http.RoundTripper
	heads atomic.Int64
}

func (c *countingTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	if req.Method == http.MethodHead && strings.Contains(req.URL.Path, "/manifests/") {
		c.heads.Add(1)
	}
	return c.next.RoundTrip(req)
}

// BenchmarkRegistryPoll measures the CPU of the runner's polling: N plugins (200; env
// XCORE_POLL_TAGS) each following its own tag (registry_poll = "1s") of an image the
// engine has — a fake engine, its "containers" httptest servers, the registry in another
// process — against the same runner with registry_poll = "0", over the same window (env
// XCORE_POLL_WINDOW, default 5s). Reported: µs of CPU per poll, and HEADs per tag per
// interval.
func BenchmarkRegistryPoll(b *testing.B) {
	tags := 200
	if v, err := strconv.Atoi(os.Getenv("XCORE_POLL_TAGS")); err == nil && v > 0 {
		tags = v
	}
	window := 5 * time.Second
	if v, err := time.ParseDuration(os.Getenv("XCORE_POLL_WINDOW")); err == nil && v > 0 {
		window = v
	}
	host := registryProcess(b)
	base := host + "/bench/followed:base"
	img, err := registrytest.Build(registrytest.Image{Files: map[string]string{"/v": "1"}})
	if err != nil {
		b.Fatal(err)
	}
	digest, err := registrytest.Push(context.Background(), base, img, "", "")
	if err != nil {
		b.Fatal(err)
	}
	src, _ := name.NewTag(base)
	desc, err := ggcr.Get(src)
	if err != nil {
		b.Fatal(err)
	}
	rf := newRegistryFake()
	const id = "sha256:polled"
	rf.repoDigests[id] = []string{host + "/bench/followed@" + digest}
	for i := range tags {
		tag := fmt.Sprintf("%s/bench/followed:t%03d", host, i+1)
		dst, _ := name.NewTag(tag)
		if err := ggcr.Tag(dst, desc); err != nil {
			b.Fatal(err)
		}
		rf.images[tag] = id // the engine has every tag: nothing is pulled
	}
	measure := func(poll string) (cpu time.Duration, heads int64) {
		ct := &countingTransport{next: remote.NewTransport()}
		r := pollRunner(b, rf, host, tags, poll, remote.New(remote.Options{Transport: ct}))
		defer func() { _ = r.Shutdown(context.Background()) }()
		if poll != "0" {
			deadline := time.Now().Add(time.Minute)
			for ct.heads.Load() < int64(tags) { // every tag polled once: the follower runs
				if time.Now().After(deadline) {
					b.Fatalf("%d/%d tags polled after 1m", ct.heads.Load(), tags)
				}
				time.Sleep(20 * time.Millisecond)
			}
		}
		time.Sleep(500 * time.Millisecond)
		c0, h0 := cpuTime(b), ct.heads.Load()
		time.Sleep(window)
		return cpuTime(b) - c0, ct.heads.Load() - h0
	}
	for range b.N {
		idle, _ := measure("0")
		busy, heads := measure("1s")
		if heads == 0 {
			b.Fatal("no poll in the window")
		}
		b.ReportMetric(float64(max(busy-idle, 0).Microseconds())/float64(heads), "cpu-µs/poll")
		b.ReportMetric(float64(heads)/float64(tags)/window.Seconds(), "HEAD/tag/s")
		b.ReportMetric(100*busy.Seconds()/window.Seconds(), "%cpu-following")
		b.ReportMetric(100*idle.Seconds()/window.Seconds(), "%cpu-idle")
	}
}

// pollRunner starts a runner of tags plugins on the fake engine, each on its tag.
func pollRunner(b *testing.B, rf *registryFake, host string, tags int, poll string, reg Registry) *Runner {
	b.Helper()
	var cfg strings.Builder
	fmt.Fprintf(&cfg, "runner {\n  listen = \"127.0.0.1:0\"\n  watch = false\n  registry_poll = %q\n}\n", poll)
	for i := range tags {
		// Probes once an hour: the window measures polls, not health checks.
		fmt.Fprintf(&cfg, "plugin \"p%03d\" {\n  image = \"%s/bench/followed:t%03d\"\n  port = 8080\n  supervisor {\n    health {\n      interval = \"1h\"\n    }\n  }\n}\n", i+1, host, i+1)
	}
	path := filepath.Join(b.TempDir(), "plugins.hcl")
	if err := os.WriteFile(path, []byte(cfg.String()), 0o600); err != nil {
		b.Fatal(err)
	}
	c, _, diags := config.Load(path)
	if diags.HasErrors() {
		b.Fatal(diags.Error())
	}
	r := New(Options{Config: c, Sandbox: rf, Router: proxy.New(proxy.Options{}), Registry: reg,
		Logger: slog.New(slog.DiscardHandler)})
	if err := r.Start(context.Background()); err != nil {
		b.Fatal(err)
	}
	return r
}

// registryProcess serves a registry from another process (TestHelperRegistryProcess)
// until the benchmark ends, and returns its host:port.
func registryProcess(b *testing.B) string {
	b.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^TestHelperRegistryProcess$")
	cmd.Env = append(os.Environ(), "XCORE_REGISTRY_PROCESS=1")
	stdin, err := cmd.StdinPipe()
	if err != nil {
		b.Fatal(err)
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		b.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() {
		stdin.Close()
		_ = cmd.Wait()
	})
	line, err := bufio.NewReader(out).ReadString('\n')
	if err != nil || !strings.HasPrefix(line, "127.0.0.1:") {
		b.Fatalf("registry process: %q %v", line, err)
	}
	return strings.TrimSpace(line)
}

// cpuTime is this process's user + system CPU so far.
func cpuTime(b *testing.B) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

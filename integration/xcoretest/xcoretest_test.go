package xcoretest_test

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/testcontainers/testcontainers-go"
	"github.com/testcontainers/testcontainers-go/wait"

	"github.com/xcore/runner/integration/xcoretest"
)

// TestTerminateRemovesPlugins: after Terminate no container of that runner is left, nor
// its network, nor the runner container itself.
func TestTerminateRemovesPlugins(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	r, err := xcoretest.Run(ctx, runnerImage, xcoretest.WithPlugin("hello", helloImage))
	testcontainers.CleanupContainer(t, r)
	if err != nil {
		t.Fatal(err)
	}
	id := readFile(t, r, "/state/runner-id")
	if got := labelled(t, id); len(got) != 1 {
		t.Fatalf("containers of runner %s before Terminate: %v, want one (hello)", id, got)
	}
	runnerID := r.GetContainerID()

	if err := r.Terminate(ctx); err != nil {
		t.Fatalf("Terminate: %v", err)
	}
	if got := labelled(t, id); len(got) != 0 {
		t.Errorf("containers of runner %s after Terminate: %v", id, got)
	}
	if out, _ := exec.Command("docker", "network", "ls", "-q", "--filter", "name=^xcore-"+id+"$").Output(); len(strings.TrimSpace(string(out))) > 0 {
		t.Errorf("network xcore-%s left after Terminate", id)
	}
	if exec.Command("docker", "container", "inspect", runnerID).Run() == nil {
		t.Errorf("runner container %s left after Terminate", runnerID)
	}
}

// TestRunFailsFast: a plugin the runner cannot start makes Run fail with the runner's
// reason, long before the startup timeout, and returns the container for cleanup.
func TestRunFailsFast(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	start := time.Now()
	r, err := xcoretest.Run(ctx, runnerImage,
		xcoretest.WithPlugin("hello", helloImage),
		xcoretest.WithPlugin("ghost", "xcoretest/no-such-image:none"),
		xcoretest.WithStartupTimeout(45*time.Second),
	)
	testcontainers.CleanupContainer(t, r)
	if err == nil {
		t.Fatal("Run succeeded with a plugin whose image does not exist")
	}
	if !strings.Contains(err.Error(), "plugin ghost failed") {
		t.Errorf("Run error = %v, want it to name the failed plugin", err)
	}
	if took := time.Since(start); took > 30*time.Second {
		t.Errorf("Run took %s to fail, want well under the 45s timeout", took)
	}
	if r == nil {
		t.Fatal("Run returned no container with its error: it cannot be cleaned up")
	}
	if logs := runnerLog(t, r); !strings.Contains(logs, "ghost") {
		t.Errorf("runner log = %q, want it to name the plugin", logs)
	}
}

// TestConfigOptions: services, hand-written plugins (WithConfig) and a port override
// reach the runner; Run waits for plugins it did not name too.
func TestConfigOptions(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	r, err := xcoretest.Run(ctx, runnerImage,
		xcoretest.WithService("settings", `env = { GREETING = "hey" }`),
		xcoretest.WithPlugin("a", helloImage, `services = ["settings"]`, `port = 9090`),
		xcoretest.WithConfig(`plugin "b" {
  image = "`+helloImage+`"
  port  = 8080
  env   = { GREETING = "howdy" }
}`),
	)
	testcontainers.CleanupContainer(t, r)
	if err != nil {
		t.Fatal(err)
	}
	for name, want := range map[string]string{"a": "hey from a\n", "b": "howdy from b\n"} {
		if got := get(t, r.PluginURL(name)); got != want {
			t.Errorf("GET %s = %q, want %q", r.PluginURL(name), got, want)
		}
	}
}

// TestGenericOptions: the generic options of testcontainers-go go in the same list and
// win over the module's defaults: labels, a logger, a wait strategy of the caller's
// (Run still learns the runner's addresses), and WithDockerConfig's file and variable.
func TestGenericOptions(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	dockerCfg := t.TempDir()
	creds := `{"auths":{"127.0.0.1:5000":{"auth":"dXNlcjpwYXNz"}}}`
	if err := os.WriteFile(filepath.Join(dockerCfg, "config.json"), []byte(creds), 0o600); err != nil {
		t.Fatal(err)
	}
	logs := &logBuffer{}
	waited := &recordingStrategy{Strategy: wait.ForLog("serving http://")}
	r, err := xcoretest.Run(ctx, runnerImage,
		xcoretest.WithPlugin("hello", helloImage),
		testcontainers.WithLabels(map[string]string{"team": "blue"}),
		testcontainers.WithLogger(logs),
		testcontainers.WithWaitStrategy(waited),
		xcoretest.WithDockerConfig(dockerCfg),
	)
	testcontainers.CleanupContainer(t, r)
	if err != nil {
		t.Fatal(err)
	}
	if !waited.called.Load() {
		t.Error("the caller's wait strategy was not used: the module's defaults came after it")
	}
	if got := get(t, r.PluginURL("hello")); got != "hello from hello\n" {
		t.Errorf("GET %s = %q: the caller's wait strategy left Run without the proxy address", r.PluginURL("hello"), got)
	}
	req, _ := http.NewRequest(http.MethodGet, r.AdminURL()+"/v1/plugins/hello", nil)
	req.Header.Set("Authorization", "Bearer "+r.Token())
	if resp, err := httpClient.Do(req); err != nil || resp.StatusCode != http.StatusOK {
		t.Errorf("GET %s/v1/plugins/hello with Token(): %v %v", r.AdminURL(), resp, err)
	} else {
		resp.Body.Close()
	}
	insp, err := r.Inspect(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if insp.Config.Labels["team"] != "blue" || insp.Config.Labels[xcoretest.Label] != "xcoretest" {
		t.Errorf("labels %v: want the caller's and the module's", insp.Config.Labels)
	}
	if !strings.Contains(strings.Join(insp.Config.Env, " "), "DOCKER_CONFIG=") {
		t.Errorf("env %v: no DOCKER_CONFIG", insp.Config.Env)
	}
	if got := readFile(t, r, "/etc/xcore/docker/config.json"); got != creds {
		t.Errorf("config.json in the runner = %q, want %q", got, creds)
	}
	if !strings.Contains(logs.String(), "Creating container for image "+runnerImage) {
		t.Errorf("the caller's logger got nothing from testcontainers-go: %q", logs.String())
	}
}

// TestRunParallel: runners started at once each get their own ports, with no retry.
func TestRunParallel(t *testing.T) {
	t.Parallel()
	const n = 3
	urls := make([]string, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			r, err := xcoretest.Run(context.Background(), runnerImage, xcoretest.WithPlugin("hello", helloImage))
			testcontainers.CleanupContainer(t, r)
			if err == nil {
				urls[i] = r.PluginURL("hello") + " " + r.AdminURL()
			}
			errs[i] = err
		})
	}
	wg.Wait()
	seen := map[string]bool{}
	for i := range n {
		if errs[i] != nil {
			t.Errorf("runner %d: %v", i, errs[i])
			continue
		}
		for _, u := range strings.Fields(urls[i]) {
			if seen[u] {
				t.Errorf("two runners share %s", u)
			}
			seen[u] = true
		}
	}
}

// recordingStrategy is a wait strategy that says whether it was used.
type recordingStrategy struct {
	wait.Strategy
	called atomic.Bool
}

func (s *recordingStrategy) WaitUntilReady(ctx context.Context, target wait.StrategyTarget) error {
	s.called.Store(true)
	return s.Strategy.WaitUntilReady(ctx, target)
}

type logBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (l *logBuffer) Printf(format string, v ...any) {
	l.mu.Lock()
	defer l.mu.Unlock()
	fmt.Fprintf(&l.buf, format+"\n", v...)
}

func (l *logBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.String()
}

var httpClient = &http.Client{Timeout: 10 * time.Second}

func readFile(t *testing.T, r *xcoretest.Container, path string) string {
	t.Helper()
	rc, err := r.CopyFileFromContainer(context.Background(), path)
	if err != nil {
		t.Fatalf("copy %s: %v", path, err)
	}
	defer rc.Close()
	b, err := io.ReadAll(rc)
	if err != nil {
		t.Fatalf("copy %s: %v", path, err)
	}
	return strings.TrimSpace(string(b))
}

func runnerLog(t *testing.T, r *xcoretest.Container) string {
	t.Helper()
	rc, err := r.Logs(context.Background())
	if err != nil {
		t.Fatalf("runner log: %v", err)
	}
	defer rc.Close()
	b, _ := io.ReadAll(rc)
	return string(b)
}

// labelled lists the containers (running or not) of runner id.
func labelled(t *testing.T, id string) []string {
	t.Helper()
	out, err := exec.Command("docker", "ps", "-aq", "--filter", "label=io.xcore.runner="+id).Output()
	if err != nil {
		t.Fatalf("docker ps: %v", err)
	}
	return strings.Fields(string(out))
}

func get(t *testing.T, url string) string {
	t.Helper()
	resp, err := httpClient.Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	return string(b)
}

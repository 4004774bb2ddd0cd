package xcoretest_test

import (
	"context"
	"io"
	"net/http"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/xcore/runner/integration/xcoretest"
)

// TestTerminateRemovesPlugins: after Terminate no container of that runner is left, nor
// its network, nor the runner container itself.
func TestTerminateRemovesPlugins(t *testing.T) {
	ctx := context.Background()
	r, err := xcoretest.Run(ctx, xcoretest.WithPlugin("hello", helloImage))
	t.Cleanup(func() { _ = r.Terminate(context.Background()) })
	if err != nil {
		t.Fatal(err)
	}
	id := readFile(t, r, "/state/runner-id")
	if got := labelled(t, id); len(got) != 1 {
		t.Fatalf("containers of runner %s before Terminate: %v, want one (hello)", id, got)
	}
	if r.Token() == "" || !strings.HasPrefix(r.AdminURL(), "http://127.0.0.1:") {
		t.Errorf("Token() = %q, AdminURL() = %q", r.Token(), r.AdminURL())
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
	ctx := context.Background()
	start := time.Now()
	r, err := xcoretest.Run(ctx,
		xcoretest.WithPlugin("hello", helloImage),
		xcoretest.WithPlugin("ghost", "xcoretest/no-such-image:none"),
		xcoretest.WithStartupTimeout(45*time.Second),
	)
	t.Cleanup(func() { _ = r.Terminate(context.Background()) })
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
		t.Fatal("Run returned no Runner with its error: the container cannot be cleaned up")
	}
	logs, err := r.Logs(ctx)
	if err != nil || !strings.Contains(logs, "ghost") {
		t.Errorf("Logs() = %q, %v; want the runner's log naming the plugin", logs, err)
	}
}

// TestConfigOptions: services, hand-written plugins (WithConfig) and a port override
// reach the runner; Run waits for plugins it did not name too.
func TestConfigOptions(t *testing.T) {
	ctx := context.Background()
	r, err := xcoretest.Run(ctx,
		xcoretest.WithService("settings", `env = { GREETING = "hey" }`),
		xcoretest.WithPlugin("a", helloImage, `services = ["settings"]`, `port = 9090`),
		xcoretest.WithConfig(`plugin "b" {
  image = "`+helloImage+`"
  port  = 8080
  env   = { GREETING = "howdy" }
}`),
	)
	t.Cleanup(func() { _ = r.Terminate(context.Background()) })
	if err != nil {
		t.Fatal(err)
	}
	for name, want := range map[string]string{"a": "hey from a\n", "b": "howdy from b\n"} {
		if got := get(t, r.PluginURL(name)); got != want {
			t.Errorf("GET %s = %q, want %q", r.PluginURL(name), got, want)
		}
	}
}

var httpClient = &http.Client{Timeout: 10 * time.Second}

func readFile(t *testing.T, r *xcoretest.Runner, path string) string {
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

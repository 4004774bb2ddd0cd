package main

// How a plugin team tests its plugin: build the image exactly as it ships, run it under
// the real runner (xcoretest starts the xcore-runner image with testcontainers-go) and
// talk to it through the runner's proxy, as clients will. Copy this file next to your
// plugin and change the name and the assertions (`runner init` writes one for you).
//
// Needs a local Docker Engine and the xcore-runner:latest image (`make image` in the
// runner repository; XCORE_RUNNER_IMAGE names another). Without Ryuk, set
// TESTCONTAINERS_RYUK_DISABLED=true and TESTCONTAINERS_HOST_OVERRIDE=127.0.0.1.

import (
	"cmp"
	"io"
	"net/http"
	"os"
	"os/exec"
	"testing"
	"time"

	"github.com/testcontainers/testcontainers-go"

	"github.com/xcore/runner/integration/xcoretest"
)

func TestPluginUnderRunner(t *testing.T) {
	// Skips in -short mode or without Docker; fails instead when CI is set.
	xcoretest.RequireDocker(t)

	// 1. The static binary the Dockerfile copies (FROM scratch: no libc, no shell), then
	// the image, under a tag unique to this test and removed after it.
	gobuild := exec.Command("go", "build", "-trimpath", "-o", "bin/plugin-team", ".")
	gobuild.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := gobuild.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	image := xcoretest.BuildImage(t, ".")

	// 2. The plugin under the runner. Run returns once the runner reports it healthy
	// (probed on /healthz here), and fails with the runner's reason if it cannot start.
	runner := cmp.Or(os.Getenv("XCORE_RUNNER_IMAGE"), xcoretest.DefaultImage)
	ctr, err := xcoretest.Run(t.Context(), runner,
		xcoretest.WithPlugin("team", image, "supervisor {\n  health { path = \"/healthz\" }\n}"),
	)
	// Registered before the error check: Run may return a half-started runner. The
	// module's Terminate stops the runner gracefully, which removes the plugin
	// containers, then the runner.
	testcontainers.CleanupContainer(t, ctr)
	if err != nil {
		t.Fatal(err)
	}

	// 3. Everything goes through the proxy: http://127.0.0.1:<port>/plugins/team/...
	for _, tc := range []struct {
		path       string
		wantStatus int
		wantBody   string
	}{
		{"", http.StatusOK, "hello from plugin-team\n"},
		{"healthz", http.StatusOK, "ok\n"}, // answered by the kit
		{"nope", http.StatusNotFound, "404 page not found\n"},
	} {
		status, body := get(t, ctr.PluginURL("team")+tc.path)
		if status != tc.wantStatus || body != tc.wantBody {
			t.Errorf("GET /plugins/team/%s = %d %q, want %d %q", tc.path, status, body, tc.wantStatus, tc.wantBody)
		}
	}
}

func get(t *testing.T, url string) (int, string) {
	t.Helper()
	hc := &http.Client{Timeout: 10 * time.Second}
	resp, err := hc.Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	return resp.StatusCode, string(body)
}

package main

// How a plugin team tests its plugin: build the image exactly as it ships, run it under
// the real runner (xcoretest starts the xcore-runner image with testcontainers-go) and
// talk to it through the runner's proxy, as clients will. Copy this file next to your
// plugin and change the name, the tag prefix and the assertions.
//
// Needs a local Docker Engine and the xcore-runner:latest image (`make image` in the
// runner repository). Without Ryuk, set TESTCONTAINERS_RYUK_DISABLED=true and
// TESTCONTAINERS_HOST_OVERRIDE=127.0.0.1.

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	cerrdefs "github.com/containerd/errdefs"
	"github.com/moby/moby/client"
	"github.com/testcontainers/testcontainers-go"

	"github.com/xcore/runner/integration/xcoretest"
)

func TestPluginUnderRunner(t *testing.T) {
	// Skips in -short mode or without Docker; fails instead when CI is set.
	xcoretest.RequireDocker(t)
	ctx := context.Background()

	image := buildImage(ctx, t)

	// Run the plugin under the runner. Run returns once the runner reports it healthy
	// (probed on /healthz here), and fails with the runner's reason if it cannot start.
	r, err := xcoretest.Run(ctx, xcoretest.WithPlugin("team", image,
		"supervisor {\n  health { path = \"/healthz\" }\n}",
	))
	// Registered before the error check: Run may return a half-started runner. Terminate
	// stops the runner gracefully, which removes the plugin containers, then the runner.
	t.Cleanup(func() {
		if err := r.Terminate(context.Background()); err != nil {
			t.Errorf("terminate runner: %v", err)
		}
	})
	if err != nil {
		t.Fatal(err)
	}

	// Everything goes through the proxy: http://127.0.0.1:<port>/plugins/team/...
	for _, tc := range []struct {
		path       string
		wantStatus int
		wantBody   string
	}{
		{"", http.StatusOK, "hello from plugin-team\n"},
		{"healthz", http.StatusOK, "ok\n"},
		{"nope", http.StatusNotFound, "404 page not found\n"},
	} {
		status, body := get(t, r.PluginURL("team")+tc.path)
		if status != tc.wantStatus || body != tc.wantBody {
			t.Errorf("GET /plugins/team/%s = %d %q, want %d %q", tc.path, status, body, tc.wantStatus, tc.wantBody)
		}
	}
	if t.Failed() {
		logs, _ := r.Logs(ctx)
		t.Logf("runner log:\n%s", logs)
	}
}

// buildImage builds the plugin's image from this folder (its Dockerfile, as shipped)
// under a tag unique to this run, and removes the image when the test ends.
func buildImage(ctx context.Context, t *testing.T) string {
	t.Helper()
	dir, err := filepath.Abs(".")
	if err != nil {
		t.Fatal(err)
	}

	// 1. The static binary the Dockerfile copies (FROM scratch: no libc, no shell).
	gobuild := exec.CommandContext(ctx, "go", "build", "-trimpath", "-o", filepath.Join(dir, "bin", "plugin-team"), ".")
	gobuild.Dir = dir
	gobuild.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := gobuild.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}

	// 2. The image, built with testcontainers-go.
	provider, err := testcontainers.NewDockerProvider()
	if err != nil {
		t.Fatalf("docker provider: %v", err)
	}
	b := make([]byte, 4)
	_, _ = rand.Read(b)
	repo, tag := "plugin-team-test", hex.EncodeToString(b)
	image := repo + ":" + tag
	t.Cleanup(func() { // before the build: whatever happens, the tag goes away
		defer provider.Close()
		rctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		_, err := provider.Client().ImageRemove(rctx, image, client.ImageRemoveOptions{Force: true, PruneChildren: true})
		if err != nil && !cerrdefs.IsNotFound(err) {
			t.Errorf("remove image %s: %v", image, err)
		}
	})
	_, err = provider.BuildImage(ctx, &testcontainers.ContainerRequest{
		FromDockerfile: testcontainers.FromDockerfile{Context: dir, Dockerfile: "Dockerfile", Repo: repo, Tag: tag},
		Labels:         map[string]string{xcoretest.Label: "xcoretest"},
	})
	if err != nil {
		t.Fatalf("build image %s: %v", image, err)
	}
	return image
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

package integration

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestScaffold is the plugin team's first hour, end to end: `runner init` writes a
// repository, which (with its dependency on this checkout) builds with its own Makefile
// into a FROM scratch image with a numeric user, and whose own test passes: it runs the
// plugin's image under the runner image of this checkout through xcoretest.
func TestScaffold(t *testing.T) {
	root, err := filepath.Abs("..")
	if err != nil {
		t.Fatal(err)
	}
	runnerImage := buildRunnerImage(t)
	dir := filepath.Join(t.TempDir(), "team-plugin")

	// run runs a command in dir with a deadline and returns its output; it fails the
	// test on a non-zero exit unless wantFail.
	run := func(within time.Duration, wantFail bool, env []string, name string, args ...string) string {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), within)
		defer cancel()
		cmd := exec.CommandContext(ctx, name, args...)
		cmd.Dir = dir
		cmd.Env = append(os.Environ(), env...)
		out, err := cmd.CombinedOutput()
		if (err != nil) != wantFail {
			t.Fatalf("%s %s: %v (want failure: %v)\n%s", name, strings.Join(args, " "), err, wantFail, out)
		}
		return string(out)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}

	out := run(time.Minute, false, nil, runnerBin, "init", ".", "--module", "example.com/team-plugin")
	for _, f := range []string{"main.go", "plugin_test.go", "Dockerfile", "Makefile", "plugins.hcl", "make test"} {
		if !strings.Contains(out, f) {
			t.Errorf("init output does not mention %s:\n%s", f, out)
		}
	}
	if out := run(time.Minute, true, nil, runnerBin, "init", "."); !strings.Contains(out, "never overwrites") {
		t.Errorf("a second init: %s", out)
	}
	run(time.Minute, false, nil, runnerBin, "validate", "-c", "plugins.hcl")

	// What the README's "go get" does once the runner is published: here, this checkout.
	goEnv := []string{"GOWORK=off", "GOFLAGS=-mod=mod"}
	run(time.Minute, false, goEnv, "go", "mod", "edit", "-replace", "github.com/xcore/runner="+root)
	run(5*time.Minute, false, goEnv, "go", "mod", "tidy")

	// Its Makefile builds the static binary and the image.
	image := "xcore-test/scaffold:" + testRunID
	run(5*time.Minute, false, goEnv, "make", "image", "IMAGE="+image, "DOCKER_BUILD_FLAGS=--label io.xcore.test="+testRunID)
	if user := docker(t, "image", "inspect", "-f", "{{.Config.User}}", image); user != "65532:65532" {
		t.Errorf("image user %q, want 65532:65532", user)
	}
	if out := run(time.Minute, false, nil, "sh", "-c", "go version -m bin/team-plugin | grep CGO_ENABLED"); !strings.Contains(out, "CGO_ENABLED=0") {
		t.Errorf("the binary is not static:\n%s", out)
	}

	// Its own test, under the runner image of this checkout.
	out = run(10*time.Minute, false, append(goEnv, "XCORE_RUNNER_IMAGE="+runnerImage),
		"go", "test", "-count=1", "-v", "./...")
	for _, want := range []string{"--- PASS: TestHandler", "--- PASS: TestUnderRunner"} {
		if !strings.Contains(out, want) {
			t.Errorf("the scaffold's test did not report %q:\n%s", want, out)
		}
	}
	t.Logf("the scaffold's go test:\n%s", lastLinesOf(out, 6))
}

// buildRunnerImage builds the runner image of this checkout (the runner binary of this
// run, as `make image` does) with this run's tag and label.
func buildRunnerImage(t *testing.T) string {
	t.Helper()
	root, err := filepath.Abs("..")
	if err != nil {
		t.Fatal(err)
	}
	ctx := t.TempDir()
	if err := os.MkdirAll(filepath.Join(ctx, "state"), 0o755); err != nil {
		t.Fatal(err)
	}
	bin, err := os.ReadFile(runnerBin)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(ctx, "runner"), bin, 0o755); err != nil {
		t.Fatal(err)
	}
	df, err := os.ReadFile(filepath.Join(root, "build", "runner-image", "Dockerfile"))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(ctx, "Dockerfile"), df, 0o644); err != nil {
		t.Fatal(err)
	}
	tag := "xcore-test/runner:" + testRunID
	docker(t, "build", "-q", "--label", "io.xcore.test="+testRunID, "-t", tag, ctx)
	return tag
}

func lastLinesOf(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}

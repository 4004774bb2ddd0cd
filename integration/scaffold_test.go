package integration

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// TestScaffold is the plugin team's first hour, end to end: `runner init` writes a
// repository, which (with its dependency on this checkout) builds with its own Makefile
// into a FROM scratch image with a numeric user, and whose own test passes: it runs the
// plugin's image under the runner image of this checkout through xcoretest.
func TestScaffold(t *testing.T) {
	runnerImage := buildRunnerImage(t)
	m := newModuleDir(t, "team-plugin")

	out := m.run(time.Minute, nil, runnerBin, "init", ".", "--module", "example.com/team-plugin")
	for _, f := range []string{"main.go", "plugin_test.go", "Dockerfile", "Makefile", "plugins.hcl", "make test"} {
		if !strings.Contains(out, f) {
			t.Errorf("init output does not mention %s:\n%s", f, out)
		}
	}
	if out, err := m.try(time.Minute, nil, runnerBin, "init", "."); err == nil || !strings.Contains(out, "never overwrites") {
		t.Errorf("a second init: %v\n%s", err, out)
	}
	m.run(time.Minute, nil, runnerBin, "validate", "-c", "plugins.hcl")
	m.useThisCheckout()

	// Its Makefile builds the static binary and the image.
	image := "xcore-test/scaffold:" + testRunID
	m.run(5*time.Minute, nil, "make", "image", "IMAGE="+image, "DOCKER_BUILD_FLAGS=--label io.xcore.test="+testRunID)
	if user := docker(t, "image", "inspect", "-f", "{{.Config.User}}", image); user != "65532:65532" {
		t.Errorf("image user %q, want 65532:65532", user)
	}
	if out := m.run(time.Minute, nil, "go", "version", "-m", "bin/team-plugin"); !strings.Contains(out, "CGO_ENABLED=0") {
		t.Errorf("the binary is not static:\n%s", out)
	}

	m.goTest(runnerImage, "TestHandler", "TestUnderRunner")
}

// TestReadmePlugin: the plugin of the README's "Writing a plugin" (main.go, Dockerfile)
// with the test of its "Testing your plugin", copied as they are, build and pass.
func TestReadmePlugin(t *testing.T) {
	runnerImage := buildRunnerImage(t)
	m := newModuleDir(t, "notes")
	readme, err := os.ReadFile(filepath.Join(m.root, "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	blocks := readmeBlocks(string(readme))
	for _, name := range []string{"main.go", "Dockerfile", "plugin_test.go"} {
		if blocks[name] == "" {
			t.Fatalf("README has no block marked <!-- readme-plugin: %s -->", name)
		}
		if err := os.WriteFile(filepath.Join(m.dir, name), []byte(blocks[name]), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	m.run(time.Minute, nil, "go", "mod", "init", "example.com/notes")
	m.useThisCheckout()
	m.goTest(runnerImage, "TestPlugin")
}

// readmeBlockRE matches a fenced block announced by <!-- readme-plugin: NAME -->.
var readmeBlockRE = regexp.MustCompile("(?s)<!-- readme-plugin: (\\S+) -->\n```[a-z]*\n(.*?)\n```")

func readmeBlocks(readme string) map[string]string {
	blocks := map[string]string{}
	for _, m := range readmeBlockRE.FindAllStringSubmatch(readme, -1) {
		blocks[m[1]] = m[2] + "\n"
	}
	return blocks
}

// moduleDir is a plugin team's repository in a temp dir.
type moduleDir struct {
	t         *testing.T
	root, dir string // this checkout, the repository
}

func newModuleDir(t *testing.T, name string) *moduleDir {
	root, err := filepath.Abs("..")
	if err != nil {
		t.Fatal(err)
	}
	m := &moduleDir{t: t, root: root, dir: filepath.Join(t.TempDir(), name)}
	if err := os.MkdirAll(m.dir, 0o755); err != nil {
		t.Fatal(err)
	}
	return m
}

// goEnv: no workspace of the caller's, and go.mod may be updated.
var goEnv = []string{"GOWORK=off", "GOFLAGS=-mod=mod"}

// try runs a command in the repository with a deadline and returns its output.
func (m *moduleDir) try(within time.Duration, env []string, name string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), within)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Dir = m.dir
	cmd.Env = append(append(os.Environ(), goEnv...), env...)
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// run is try that fails the test on an error.
func (m *moduleDir) run(within time.Duration, env []string, name string, args ...string) string {
	m.t.Helper()
	out, err := m.try(within, env, name, args...)
	if err != nil {
		m.t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return out
}

// useThisCheckout makes the repository depend on this checkout of the runner, as
// `go get github.com/xcore/runner` would on a published version.
func (m *moduleDir) useThisCheckout() {
	m.t.Helper()
	m.run(time.Minute, nil, "go", "mod", "edit", "-replace", "github.com/xcore/runner="+m.root)
	m.run(5*time.Minute, nil, "go", "mod", "tidy")
}

// goTest runs the repository's own tests against runnerImage; each of tests must pass
// (not skip).
func (m *moduleDir) goTest(runnerImage string, tests ...string) {
	m.t.Helper()
	dir := m.dir
	// The README's test names the default image; point it at this run's.
	if b, err := os.ReadFile(filepath.Join(dir, "plugin_test.go")); err == nil {
		_ = os.WriteFile(filepath.Join(dir, "plugin_test.go"), []byte(strings.ReplaceAll(string(b), `"xcore-runner:latest"`, strconv.Quote(runnerImage))), 0o644)
	}
	out := m.run(10*time.Minute, []string{"XCORE_RUNNER_IMAGE=" + runnerImage}, "go", "test", "-count=1", "-v", "./...")
	for _, name := range tests {
		if !strings.Contains(out, "--- PASS: "+name+" ") {
			m.t.Errorf("%s did not pass:\n%s", name, out)
		}
	}
	m.t.Logf("go test in %s:\n%s", filepath.Base(dir), lastLinesOf(out, 4))
}

// buildRunnerImage builds the runner image of this checkout (the runner binary of this
// run, as `make image` does) with this run's tag and label.
func buildRunnerImage(t *testing.T) string {
	t.Helper()
	runnerImageMu.Lock()
	defer runnerImageMu.Unlock()
	if runnerImageTag != "" {
		return runnerImageTag
	}
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
	runnerImageTag = tag
	return tag
}

var (
	runnerImageMu  sync.Mutex
	runnerImageTag string // built once per run, removed with the run's images
)

func lastLinesOf(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}

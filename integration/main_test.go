// Package integration holds the end-to-end tests: the real runner binary against the real
// Docker Engine, with example images built FROM scratch for this run. When CI is set and
// Docker is unreachable they FAIL; elsewhere they are skipped with a message.
package integration

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

var (
	runnerBin string // the runner binary built for this run
	buildDir  string // where the example binaries and their Dockerfiles were put
	testRunID string // labels every image this run builds
	// images maps an example name to the tag built for this run.
	images = map[string]string{}
)

func TestMain(m *testing.M) {
	os.Exit(mainWithCleanup(m))
}

func mainWithCleanup(m *testing.M) int {
	flag.Parse()
	if testing.Short() {
		fmt.Println("integration: skipped in -short mode")
		return 0
	}
	if err := exec.Command("docker", "info").Run(); err != nil {
		if os.Getenv("CI") != "" {
			fmt.Fprintf(os.Stderr, "integration: CI is set and Docker is unreachable (docker info: %v)\n", err)
			return 1
		}
		fmt.Println("integration: Docker unreachable, skipping (set CI=1 to make this a failure)")
		return 0
	}
	b := make([]byte, 4)
	_, _ = rand.Read(b)
	testRunID = hex.EncodeToString(b)

	dir, err := os.MkdirTemp("", "xcore-it-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(dir)
	buildDir = dir
	defer removeTestImages()

	if err := build(dir); err != nil {
		fmt.Fprintln(os.Stderr, "integration setup:", err)
		return 1
	}
	return m.Run()
}

// build compiles the runner and the example plugins, and builds the plugin images with a
// run-unique tag and label so that cleanup never touches anything else.
func build(dir string) error {
	root, err := filepath.Abs("..")
	if err != nil {
		return err
	}
	runnerBin = filepath.Join(dir, "runner")
	if out, err := goBuild(root, runnerBin, "./cmd/runner"); err != nil {
		return fmt.Errorf("build runner: %v\n%s", err, out)
	}
	names := []string{"hello", "slow", "crashy", "hog", "hang", "notes"}
	errs := make([]error, len(names))
	tags := make([]string, len(names))
	var wg sync.WaitGroup
	for i, name := range names {
		wg.Go(func() { tags[i], errs[i] = buildImage(root, dir, name) })
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return err
	}
	for i, name := range names {
		images[name] = tags[i]
	}
	return nil
}

// buildImage builds example name's static binary and its FROM scratch image.
func buildImage(root, dir, name string) (string, error) {
	ctx := filepath.Join(dir, name)
	if err := os.MkdirAll(filepath.Join(ctx, "bin"), 0o755); err != nil {
		return "", err
	}
	if out, err := goBuild(root, filepath.Join(ctx, "bin", name), "./examples/"+name); err != nil {
		return "", fmt.Errorf("build %s: %v\n%s", name, err, out)
	}
	df, err := os.ReadFile(filepath.Join(root, "examples", name, "Dockerfile"))
	if err != nil {
		return "", err
	}
	if err := os.WriteFile(filepath.Join(ctx, "Dockerfile"), df, 0o644); err != nil {
		return "", err
	}
	tag := fmt.Sprintf("xcore-test/%s:%s", name, testRunID)
	cmd := exec.Command("docker", "build", "-q", "--label", "io.xcore.test="+testRunID, "-t", tag, ctx)
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("docker build %s: %v\n%s", tag, err, out)
	}
	return tag, nil
}

func goBuild(root, out, pkg string) ([]byte, error) {
	cmd := exec.Command("go", "build", "-trimpath", "-o", out, pkg)
	cmd.Dir = root
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	return cmd.CombinedOutput()
}

func removeTestImages() {
	out, _ := exec.Command("docker", "images", "-q", "--filter", "label=io.xcore.test="+testRunID).Output()
	ids := strings.Fields(string(out))
	if len(ids) > 0 {
		_ = exec.Command("docker", append([]string{"rmi", "-f"}, ids...)...).Run()
	}
}

// docker runs the docker CLI and returns its trimmed stdout.
func docker(t *testing.T, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var stderr bytes.Buffer
	cmd := exec.CommandContext(ctx, "docker", args...)
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("docker %s: %v\n%s", strings.Join(args, " "), err, stderr.String())
	}
	return strings.TrimSpace(string(out))
}

// eventually polls cond every 50ms until it returns true or the deadline passes.
func eventually(t *testing.T, within time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", within, what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

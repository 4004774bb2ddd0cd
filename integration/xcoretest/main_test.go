package xcoretest_test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/xcore/runner/integration/xcoretest"
)

// runnerImage and helloImage are local images built for this test run from this
// checkout (`make image` and `make images` build the same as xcore-runner:latest and
// xcore-examples/hello:latest), labelled Label=xcoretest and removed at the end.
var runnerImage, helloImage string

// TestMain builds what the tests run: the runner image and the hello example image.
// Without Docker the package is skipped, or fails under CI.
func TestMain(m *testing.M) {
	os.Exit(testMain(m))
}

func testMain(m *testing.M) int {
	flag.Parse()
	if testing.Short() {
		fmt.Println("xcoretest: needs Docker, skipped in -short mode")
		return 0
	}
	if err := xcoretest.DockerAvailable(context.Background()); err != nil {
		if os.Getenv("CI") != "" {
			fmt.Fprintf(os.Stderr, "xcoretest: CI is set and Docker is unreachable: %v\n", err)
			return 1
		}
		fmt.Printf("xcoretest: Docker unreachable, skipping (set CI=1 to make this a failure): %v\n", err)
		return 0
	}
	root, err := filepath.Abs("../..")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	dir, err := os.MkdirTemp("", "xcoretest-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(dir)
	b := make([]byte, 4)
	_, _ = rand.Read(b)
	id := hex.EncodeToString(b)
	runnerImage, helloImage = "xcoretest/runner:"+id, "xcoretest/hello:"+id
	defer exec.Command("docker", "rmi", "-f", runnerImage, helloImage).Run()
	if err := buildRunner(root, filepath.Join(dir, "runner"), runnerImage); err != nil {
		fmt.Fprintln(os.Stderr, "xcoretest:", err)
		return 1
	}
	if err := buildExample(root, filepath.Join(dir, "hello"), "hello", helloImage); err != nil {
		fmt.Fprintln(os.Stderr, "xcoretest:", err)
		return 1
	}
	return m.Run()
}

// buildRunner builds the runner image of this checkout as tag, the way `make image`
// does: the static binary next to build/runner-image's Dockerfile and state folder.
func buildRunner(root, dir, tag string) error {
	if err := os.MkdirAll(filepath.Join(dir, "state"), 0o755); err != nil {
		return err
	}
	gobuild := exec.Command("go", "build", "-trimpath", "-o", filepath.Join(dir, "runner"), "./cmd/runner")
	gobuild.Dir = root
	gobuild.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := gobuild.CombinedOutput(); err != nil {
		return fmt.Errorf("go build runner: %v\n%s", err, out)
	}
	df, err := os.ReadFile(filepath.Join(root, "build", "runner-image", "Dockerfile"))
	if err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(dir, "Dockerfile"), df, 0o644); err != nil {
		return err
	}
	out, err := exec.Command("docker", "build", "-q", "--label", xcoretest.Label+"=xcoretest", "-t", tag, dir).CombinedOutput()
	if err != nil {
		return fmt.Errorf("docker build %s: %v\n%s", tag, err, out)
	}
	return nil
}

// buildExample compiles examples/<name> statically into dir/bin/<name> and builds its
// FROM scratch image as tag.
func buildExample(root, dir, name, tag string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	gobuild := exec.Command("go", "build", "-trimpath", "-o", filepath.Join(dir, "bin", name), "./examples/"+name)
	gobuild.Dir = root
	gobuild.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := gobuild.CombinedOutput(); err != nil {
		return fmt.Errorf("go build %s: %v\n%s", name, err, out)
	}
	df, err := os.ReadFile(filepath.Join(root, "examples", name, "Dockerfile"))
	if err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(dir, "Dockerfile"), df, 0o644); err != nil {
		return err
	}
	out, err := exec.Command("docker", "build", "-q", "--label", xcoretest.Label+"=xcoretest", "-t", tag, dir).CombinedOutput()
	if err != nil {
		return fmt.Errorf("docker build %s: %v\n%s", tag, err, out)
	}
	return nil
}

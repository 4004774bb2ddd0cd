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

// helloImage is a local image of examples/hello built for this test run (`make images`
// builds the same as xcore-examples/hello:latest).
var helloImage string

// TestMain builds what the tests run: the hello example image (tagged for this run,
// labelled io.xcore.test=xcoretest, removed at the end) and, when it is missing, the
// runner image (make image). Without Docker the package is skipped, or fails under CI.
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
	if exec.Command("docker", "image", "inspect", xcoretest.DefaultImage).Run() != nil {
		if out, err := exec.Command("make", "-C", root, "image").CombinedOutput(); err != nil {
			fmt.Fprintf(os.Stderr, "xcoretest: make image: %v\n%s", err, out)
			return 1
		}
	}
	dir, err := os.MkdirTemp("", "xcoretest-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(dir)
	b := make([]byte, 4)
	_, _ = rand.Read(b)
	helloImage = "xcoretest/hello:" + hex.EncodeToString(b)
	defer exec.Command("docker", "rmi", "-f", helloImage).Run()
	if err := buildExample(root, dir, "hello", helloImage); err != nil {
		fmt.Fprintln(os.Stderr, "xcoretest:", err)
		return 1
	}
	return m.Run()
}

// buildExample compiles examples/<name> statically into dir/bin/<name> and builds its
// FROM scratch image as tag.
func buildExample(root, dir, name, tag string) error {
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

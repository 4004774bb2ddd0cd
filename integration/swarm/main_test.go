// Package swarm is the end-to-end test of the swarm backend on a real two-node Docker
// Swarm built on this machine: the host's engine is the manager, a second dockerd in a
// network namespace of its own is the worker (see cluster_test.go for how, and what is
// cleaned up). It changes the host engine (swarm init, then leave), so it runs only when
// asked (XCORE_SWARM_TEST=1, `make test-swarm`, which `make test` runs after every other
// test), only on an engine that is in no swarm, and it leaves the engine as it found it.
// Where namespaces cannot be made (no root, no ip/nsenter/unshare) a single-node swarm
// on the host engine runs the same checks but those that need a second node, and says so.
package swarm

import (
	"flag"
	"fmt"
	"os"
	"os/exec"
	"testing"
)

func TestMain(m *testing.M) {
	flag.Parse()
	switch {
	case testing.Short():
		fmt.Println("swarm: skipped in -short mode")
		return
	case os.Getenv("XCORE_SWARM_TEST") == "":
		fmt.Println("swarm: skipped: it turns the host engine into a swarm manager for a while; run `make test-swarm` (or set XCORE_SWARM_TEST=1)")
		return
	}
	if err := exec.Command("docker", "info").Run(); err != nil {
		if os.Getenv("CI") != "" {
			fmt.Fprintf(os.Stderr, "swarm: CI is set and Docker is unreachable (docker info: %v)\n", err)
			os.Exit(1)
		}
		fmt.Println("swarm: Docker unreachable, skipping (set CI=1 to make this a failure)")
		return
	}
	os.Exit(m.Run())
}

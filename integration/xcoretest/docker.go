package xcoretest

import (
	"context"
	"fmt"
	"os"
	"testing"
	"time"

	cerrdefs "github.com/containerd/errdefs"
	"github.com/moby/moby/client"
	"github.com/testcontainers/testcontainers-go"
)

// DockerAvailable reports whether the Docker Engine answers.
func DockerAvailable(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	cli, err := testcontainers.NewDockerClientWithOpts(ctx)
	if err != nil {
		return fmt.Errorf("connect to docker: %w", err)
	}
	defer cli.Close()
	if _, err := cli.Ping(ctx, client.PingOptions{}); err != nil {
		return fmt.Errorf("ping docker: %w", err)
	}
	return nil
}

// RequireDocker skips tb in -short mode and when Docker is unreachable, except when the
// CI environment variable is set: then an unreachable Docker fails tb.
func RequireDocker(tb testing.TB) {
	tb.Helper()
	if testing.Short() {
		tb.Skip("needs Docker: skipped in -short mode")
	}
	if err := DockerAvailable(context.Background()); err != nil {
		if os.Getenv("CI") != "" {
			tb.Fatalf("CI is set and Docker is unreachable: %v", err)
		}
		tb.Skipf("Docker unreachable, skipping (set CI=1 to make this a failure): %v", err)
	}
}

func isNotFound(err error) bool { return cerrdefs.IsNotFound(err) }

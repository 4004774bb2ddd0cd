package xcoretest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
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

// BuildImage builds the image of the Dockerfile in dir (the build context, honouring its
// .dockerignore) under a tag unique to this call, labelled Label=xcoretest, and removes
// the image when tb ends. It returns the tag, for WithPlugin. Build the plugin's static
// binary first if the Dockerfile copies it (CGO_ENABLED=0 go build -o bin/<name> .).
func BuildImage(tb testing.TB, dir string) string {
	tb.Helper()
	abs, err := filepath.Abs(dir)
	if err != nil {
		tb.Fatalf("build image: %v", err)
	}
	provider, err := testcontainers.NewDockerProvider()
	if err != nil {
		tb.Fatalf("build image: docker provider: %v", err)
	}
	b := make([]byte, 6)
	_, _ = rand.Read(b)
	repo, tag := "xcoretest/plugin", hex.EncodeToString(b)
	image := repo + ":" + tag
	tb.Cleanup(func() { // registered before the build: whatever happens, the tag goes
		defer provider.Close()
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		_, err := provider.Client().ImageRemove(ctx, image, client.ImageRemoveOptions{Force: true, PruneChildren: true})
		if err != nil && !cerrdefs.IsNotFound(err) {
			tb.Errorf("remove image %s: %v", image, err)
		}
	})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	var log strings.Builder
	_, err = provider.BuildImage(ctx, &testcontainers.ContainerRequest{
		FromDockerfile: testcontainers.FromDockerfile{
			Context: abs, Dockerfile: "Dockerfile", Repo: repo, Tag: tag, BuildLogWriter: &log,
		},
		Labels: map[string]string{Label: "xcoretest"},
	})
	if err != nil {
		tb.Fatalf("build image from %s: %v\n%s", abs, err, log.String())
	}
	return image
}

func isNotFound(err error) bool { return cerrdefs.IsNotFound(err) }

// checkImage fails early, with a hint, when the runner image is missing: testcontainers-go
// would otherwise try to pull it.
func checkImage(ctx context.Context, ref string) error {
	cli, err := testcontainers.NewDockerClientWithOpts(ctx)
	if err != nil {
		return fmt.Errorf("connect to docker: %w", err)
	}
	defer cli.Close()
	if _, err := cli.ImageInspect(ctx, ref); err != nil {
		if isNotFound(err) {
			return fmt.Errorf("runner image %s not found locally: build it with `make image` in the runner repository", ref)
		}
		return fmt.Errorf("inspect runner image %s: %w", ref, err)
	}
	return nil
}

// sweep removes what a runner that did not stop gracefully left behind: containers
// labelled with its id and its network. It is an error to have found any.
func sweep(ctx context.Context, id string) error {
	cli, err := testcontainers.NewDockerClientWithOpts(ctx)
	if err != nil {
		return fmt.Errorf("check runner leftovers: %w", err)
	}
	defer cli.Close()
	list, err := cli.ContainerList(ctx, client.ContainerListOptions{
		All: true, Filters: make(client.Filters).Add("label", "io.xcore.runner="+id),
	})
	if err != nil {
		return fmt.Errorf("check runner leftovers: %w", err)
	}
	var left []string
	var errs []error
	for _, c := range list.Items {
		left = append(left, strings.TrimPrefix(firstOr(c.Names, c.ID), "/"))
		if _, err := cli.ContainerRemove(ctx, c.ID, client.ContainerRemoveOptions{Force: true, RemoveVolumes: true}); err != nil && !isNotFound(err) {
			errs = append(errs, fmt.Errorf("remove container %s: %w", c.ID, err))
		}
	}
	if _, err := cli.NetworkRemove(ctx, "xcore-"+id, client.NetworkRemoveOptions{}); err == nil {
		left = append(left, "network xcore-"+id)
	} else if !isNotFound(err) {
		errs = append(errs, fmt.Errorf("remove network xcore-%s: %w", id, err))
	}
	if len(left) > 0 {
		errs = append([]error{fmt.Errorf("runner %s did not clean up after itself; removed %s", id, strings.Join(left, ", "))}, errs...)
	}
	return errors.Join(errs...)
}

func firstOr(s []string, def string) string {
	if len(s) > 0 {
		return s[0]
	}
	return def
}

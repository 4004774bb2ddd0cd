package docker

import (
	"context"
	"fmt"
	"io"
	"strconv"

	"github.com/moby/moby/client"

	"github.com/xcore/runner/sandbox/internal/engine"
)

// Logs streams a container's stdout and stderr, demultiplexed and interleaved as they
// come, until ctx ends (follow) or the log is exhausted. tail < 0 means everything.
// The reader must be closed.
func (c *Client) Logs(ctx context.Context, id string, follow bool, tail int) (io.ReadCloser, error) {
	t := "all"
	if tail >= 0 {
		t = strconv.Itoa(tail)
	}
	// No call timeout: a followed log may outlive any bound; ctx ends it.
	res, err := c.api.ContainerLogs(ctx, id, client.ContainerLogsOptions{ShowStdout: true, ShowStderr: true, Follow: follow, Tail: t})
	if err != nil {
		return nil, fmt.Errorf("logs of container %s: %w", id, err)
	}
	return engine.Demux(res), nil
}

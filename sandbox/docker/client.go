// Package docker is the sandbox backend for this host's Docker Engine, and with the
// other backends the only importer of the Docker client. It turns a sandbox.Spec into a
// limited, hardened container on the runner's own bridge network, starts, stops, removes
// and lists the runner's containers by label, streams the engine's events, resolves and
// builds images, and owns the runner's network. It knows nothing about HTTP routing.
package docker

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	cerrdefs "github.com/containerd/errdefs"
	"github.com/moby/moby/client"

	"github.com/xcore/runner/sandbox"
)

// callTimeout bounds every Docker call except waits on a container, which may outlive us.
const callTimeout = 30 * time.Second

// Client manages the containers and the network of one runner instance.
type Client struct {
	api      *client.Client
	runnerID string
	log      *slog.Logger
	guard    guard // the host rules (protect.go)
}

// New connects to the engine named by the DOCKER_* environment (the local socket by
// default) and checks that it answers. runnerID scopes every label and the network name.
func New(ctx context.Context, runnerID string, log *slog.Logger) (*Client, error) {
	if log == nil {
		log = slog.Default()
	}
	api, err := client.New(client.FromEnv, client.WithUserAgent("xcore-runner"))
	if err != nil {
		return nil, fmt.Errorf("docker client: %w", err)
	}
	c := &Client{api: api, runnerID: runnerID, log: log}
	if err := c.Ping(ctx); err != nil {
		_ = api.Close()
		return nil, err
	}
	return c, nil
}

// Ping checks that the engine answers.
func (c *Client) Ping(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if _, err := c.api.Ping(ctx, client.PingOptions{NegotiateAPIVersion: true}); err != nil {
		return fmt.Errorf("docker %w: %w", sandbox.ErrUnavailable, err)
	}
	return nil
}

// RunnerID is the instance id this client labels its objects with.
func (c *Client) RunnerID() string { return c.runnerID }

// NetworkName is the runner's own bridge network.
func (c *Client) NetworkName() string { return "xcore-" + c.runnerID }

// Close releases the client's connections.
func (c *Client) Close() error { return c.api.Close() }

// ignoreGone treats "already gone" and "already in that state" as success: stop and
// remove must be forgiving, or a crashed container could never be cleaned up.
func ignoreGone(err error) error {
	if err == nil || cerrdefs.IsNotFound(err) || cerrdefs.IsNotModified(err) {
		return nil
	}
	return err
}

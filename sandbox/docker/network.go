package docker

import (
	"context"
	"fmt"
	"strings"
	"time"

	cerrdefs "github.com/containerd/errdefs"
	"github.com/moby/moby/client"
	"github.com/sethvargo/go-retry"

	"github.com/xcore/runner/sandbox"
)

// iccOption disables inter-container traffic on the bridge: plugins cannot reach each
// other, while the host (the runner) reaches every one of them and they reach the gateway.
const iccOption = "com.docker.network.bridge.enable_icc"

// EnsureNetwork returns the runner's network, creating it if missing. One network per
// runner, not per plugin: Docker's default address pools run out after ~30 networks.
func (c *Client) EnsureNetwork(ctx context.Context) (sandbox.Network, error) {
	name := c.NetworkName()
	if n, err := c.inspectNetwork(ctx, name); err == nil {
		return n, nil
	} else if !cerrdefs.IsNotFound(err) {
		return sandbox.Network{}, fmt.Errorf("inspect network %s: %w", name, err)
	}
	cctx, cancel := context.WithTimeout(ctx, callTimeout)
	defer cancel()
	_, err := c.api.NetworkCreate(cctx, name, client.NetworkCreateOptions{
		Driver:  "bridge",
		Options: map[string]string{iccOption: "false"},
		Labels:  map[string]string{sandbox.LabelRunner: c.runnerID},
	})
	if err != nil && !cerrdefs.IsConflict(err) { // Conflict: created concurrently; use it
		return sandbox.Network{}, fmt.Errorf("create network %s: %w", name, err)
	}
	n, err := c.inspectNetwork(ctx, name)
	if err != nil {
		return sandbox.Network{}, fmt.Errorf("inspect network %s: %w", name, err)
	}
	c.log.Info("network ready", "network", name, "gateway", n.Gateway)
	return n, nil
}

func (c *Client) inspectNetwork(ctx context.Context, name string) (sandbox.Network, error) {
	ctx, cancel := context.WithTimeout(ctx, callTimeout)
	defer cancel()
	res, err := c.api.NetworkInspect(ctx, name, client.NetworkInspectOptions{})
	if err != nil {
		return sandbox.Network{}, err
	}
	n := sandbox.Network{ID: res.Network.ID, Name: res.Network.Name}
	for _, cfg := range res.Network.IPAM.Config {
		if cfg.Gateway.Is4() {
			n.Gateway = cfg.Gateway
			break
		}
	}
	return n, nil
}

// RemoveNetwork removes the runner's network if no container is attached to it any more.
// kept says why the network is still there when it is, and is empty when it is gone: a
// network with containers attached, or one the engine will not remove for endpoints of
// containers that no longer exist (moby/moby#42119: empty and harmless, reused at the
// next start, removed by `docker network rm` after a dockerd restart). Neither is an
// error; err is for the engine failing.
func (c *Client) RemoveNetwork(ctx context.Context) (kept string, err error) {
	name := c.NetworkName()
	ictx, cancel := context.WithTimeout(ctx, callTimeout)
	defer cancel()
	res, err := c.api.NetworkInspect(ictx, name, client.NetworkInspectOptions{})
	if cerrdefs.IsNotFound(err) {
		return "", nil
	}
	if err != nil {
		return "", fmt.Errorf("inspect network %s: %w", name, err)
	}
	if n := len(res.Network.Containers); n > 0 {
		return fmt.Sprintf("network %s kept: %d containers still attached", name, n), nil
	}
	// Right after its last container went, the engine may still count that container's
	// endpoint for a moment: retry for a while. Some endpoints never go (a known engine
	// bug, moby/moby#42119, seen here after 200 containers were removed): ErrNetworkInUse.
	err = retry.Do(ctx, retry.WithMaxDuration(networkRemoveFor, retry.NewConstant(250*time.Millisecond)), func(ctx context.Context) error {
		rctx, cancel := context.WithTimeout(ctx, callTimeout)
		defer cancel()
		_, err := c.api.NetworkRemove(rctx, name, client.NetworkRemoveOptions{})
		if err = ignoreGone(err); err != nil && activeEndpoints(err) {
			return retry.RetryableError(err)
		}
		return err
	})
	switch {
	case err != nil && activeEndpoints(err):
		return fmt.Sprintf("network %s left by the engine with stale endpoints and no container (reused at the next start): %v", name, err), nil
	case err != nil:
		return "", fmt.Errorf("remove network %s: %w", name, err)
	}
	return "", nil
}

// networkRemoveFor is how long RemoveNetwork retries a network the engine says still
// has endpoints.
const networkRemoveFor = 5 * time.Second

// activeEndpoints reports the engine's 403 "network ... has active endpoints".
func activeEndpoints(err error) bool {
	return cerrdefs.IsPermissionDenied(err) || strings.Contains(err.Error(), "active endpoints")
}

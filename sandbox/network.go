package sandbox

import (
	"context"
	"fmt"
	"net/netip"

	cerrdefs "github.com/containerd/errdefs"
	"github.com/moby/moby/client"
)

// Network is the runner's own bridge network.
type Network struct {
	ID      string
	Name    string
	Gateway netip.Addr // the host's address on it: where plugins reach the runner
}

// iccOption disables inter-container traffic on the bridge: plugins cannot reach each
// other, while the host (the runner) reaches every one of them and they reach the gateway.
const iccOption = "com.docker.network.bridge.enable_icc"

// EnsureNetwork returns the runner's network, creating it if missing. One network per
// runner, not per plugin: Docker's default address pools run out after ~30 networks.
func (c *Client) EnsureNetwork(ctx context.Context) (Network, error) {
	name := c.NetworkName()
	if n, err := c.inspectNetwork(ctx, name); err == nil {
		return n, nil
	} else if !cerrdefs.IsNotFound(err) {
		return Network{}, fmt.Errorf("inspect network %s: %w", name, err)
	}
	cctx, cancel := context.WithTimeout(ctx, callTimeout)
	defer cancel()
	_, err := c.api.NetworkCreate(cctx, name, client.NetworkCreateOptions{
		Driver:  "bridge",
		Options: map[string]string{iccOption: "false"},
		Labels:  map[string]string{LabelRunner: c.runnerID},
	})
	if err != nil && !cerrdefs.IsConflict(err) { // Conflict: created concurrently; use it
		return Network{}, fmt.Errorf("create network %s: %w", name, err)
	}
	n, err := c.inspectNetwork(ctx, name)
	if err != nil {
		return Network{}, fmt.Errorf("inspect network %s: %w", name, err)
	}
	c.log.Info("network ready", "network", name, "gateway", n.Gateway)
	return n, nil
}

func (c *Client) inspectNetwork(ctx context.Context, name string) (Network, error) {
	ctx, cancel := context.WithTimeout(ctx, callTimeout)
	defer cancel()
	res, err := c.api.NetworkInspect(ctx, name, client.NetworkInspectOptions{})
	if err != nil {
		return Network{}, err
	}
	n := Network{ID: res.Network.ID, Name: res.Network.Name}
	for _, cfg := range res.Network.IPAM.Config {
		if cfg.Gateway.Is4() {
			n.Gateway = cfg.Gateway
			break
		}
	}
	return n, nil
}

// RemoveNetwork removes the runner's network if no container is attached to it any more.
// It reports whether the network is gone.
func (c *Client) RemoveNetwork(ctx context.Context) (bool, error) {
	name := c.NetworkName()
	ictx, cancel := context.WithTimeout(ctx, callTimeout)
	defer cancel()
	res, err := c.api.NetworkInspect(ictx, name, client.NetworkInspectOptions{})
	if cerrdefs.IsNotFound(err) {
		return true, nil
	}
	if err != nil {
		return false, fmt.Errorf("inspect network %s: %w", name, err)
	}
	if n := len(res.Network.Containers); n > 0 {
		c.log.Info("network kept: containers still attached", "network", name, "containers", n)
		return false, nil
	}
	if _, err := c.api.NetworkRemove(ictx, name, client.NetworkRemoveOptions{}); ignoreGone(err) != nil {
		return false, fmt.Errorf("remove network %s: %w", name, err)
	}
	return true, nil
}

package swarm

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"time"

	cerrdefs "github.com/containerd/errdefs"
	"github.com/moby/moby/api/types/network"
	"github.com/moby/moby/client"
	"github.com/sethvargo/go-retry"

	"github.com/xcore/runner/sandbox"
)

// EnsureNetwork exists for the runner's Sandbox interface: on a cluster the runner has
// no network of its own, only the plugins' (PluginNetwork); Gateway is unset.
func (c *Client) EnsureNetwork(ctx context.Context) (sandbox.Network, error) {
	return sandbox.Network{Name: c.NetworkName()}, nil
}

// PluginNetwork returns plugin's overlay network, creating it if missing, with the
// runner's container joined to it (under the name SidecarAlias): Gateway is the runner's
// address on it, where the services sidecar must listen for the plugin.
func (c *Client) PluginNetwork(ctx context.Context, plugin string) (sandbox.Network, error) {
	c.mu.Lock()
	n, ok := c.nets[plugin]
	c.mu.Unlock()
	if ok {
		return n, nil
	}
	if c.self == "" {
		return sandbox.Network{}, errors.New("plugin network: the runner is not in a container on this manager")
	}
	name := PluginNetworkName(c.runnerID, plugin)
	id, err := c.ensureOverlay(ctx, name, plugin)
	if err != nil {
		return sandbox.Network{}, err
	}
	addr, err := c.selfAddr(ctx, name)
	if err != nil {
		return sandbox.Network{}, err
	}
	if !addr.IsValid() {
		cctx, cancel := context.WithTimeout(ctx, callTimeout)
		_, err := c.api.NetworkConnect(cctx, id, client.NetworkConnectOptions{
			Container:      c.self,
			EndpointConfig: &network.EndpointSettings{Aliases: []string{SidecarAlias}},
		})
		cancel()
		if err != nil && !cerrdefs.IsConflict(err) && !strings.Contains(err.Error(), "already exists") {
			return sandbox.Network{}, fmt.Errorf("join network %s: %w", name, err)
		}
		if addr, err = c.selfAddr(ctx, name); err != nil {
			return sandbox.Network{}, err
		}
		if !addr.IsValid() {
			return sandbox.Network{}, fmt.Errorf("join network %s: the runner has no address on it", name)
		}
		c.log.Info("joined plugin network", "plugin", plugin, "network", name, "address", addr)
	}
	n = sandbox.Network{ID: id, Name: name, Gateway: addr}
	c.mu.Lock()
	c.nets[plugin] = n
	c.mu.Unlock()
	return n, nil
}

// ensureOverlay returns the ID of the attachable overlay network name, creating it.
func (c *Client) ensureOverlay(ctx context.Context, name, plugin string) (string, error) {
	ictx, cancel := context.WithTimeout(ctx, callTimeout)
	res, err := c.api.NetworkInspect(ictx, name, client.NetworkInspectOptions{})
	cancel()
	if err == nil {
		return res.Network.ID, nil
	}
	if !cerrdefs.IsNotFound(err) {
		return "", fmt.Errorf("inspect network %s: %w", name, err)
	}
	cctx, cancel := context.WithTimeout(ctx, callTimeout)
	defer cancel()
	created, err := c.api.NetworkCreate(cctx, name, client.NetworkCreateOptions{
		Driver:     "overlay",
		Scope:      "swarm",
		Attachable: true, // the runner's container joins it
		Labels:     map[string]string{sandbox.LabelRunner: c.runnerID, sandbox.LabelPlugin: plugin},
	})
	if err != nil && cerrdefs.IsConflict(err) { // created concurrently: use it
		res, err := c.api.NetworkInspect(cctx, name, client.NetworkInspectOptions{})
		if err != nil {
			return "", fmt.Errorf("inspect network %s: %w", name, err)
		}
		return res.Network.ID, nil
	}
	if err != nil {
		return "", fmt.Errorf("create network %s: %w", name, err)
	}
	c.log.Info("network created", "network", name, "plugin", plugin)
	return created.ID, nil
}

// selfAddr is the runner container's IPv4 address on network name, zero when it is not
// joined.
func (c *Client) selfAddr(ctx context.Context, name string) (netip.Addr, error) {
	ctx, cancel := context.WithTimeout(ctx, callTimeout)
	defer cancel()
	res, err := c.api.ContainerInspect(ctx, c.self, client.ContainerInspectOptions{})
	if err != nil {
		return netip.Addr{}, fmt.Errorf("inspect the runner's container: %w", err)
	}
	if ns := res.Container.NetworkSettings; ns != nil {
		if ep := ns.Networks[name]; ep != nil && ep.IPAddress.Is4() {
			return ep.IPAddress, nil
		}
	}
	return netip.Addr{}, nil
}

// RemovePluginNetwork removes plugin's network once its tasks are gone (the runner leaves
// it first). kept says why it is still there, when it is.
func (c *Client) RemovePluginNetwork(ctx context.Context, plugin string) (kept string, err error) {
	c.mu.Lock()
	delete(c.nets, plugin)
	c.mu.Unlock()
	return c.removeNetwork(ctx, PluginNetworkName(c.runnerID, plugin))
}

// RemoveNetwork removes every network of this runner (all its plugins'), leaving each
// first: `runner down` and the runner's own shutdown, after the services are removed.
func (c *Client) RemoveNetwork(ctx context.Context) (kept string, err error) {
	lctx, cancel := context.WithTimeout(ctx, callTimeout)
	res, err := c.api.NetworkList(lctx, client.NetworkListOptions{Filters: client.Filters{}.Add("label", sandbox.LabelRunner+"="+c.runnerID)})
	cancel()
	if err != nil {
		return "", fmt.Errorf("list networks: %w", err)
	}
	c.mu.Lock()
	clear(c.nets)
	c.mu.Unlock()
	var keptAll []string
	var errs []error
	for _, n := range res.Items {
		k, err := c.removeNetwork(ctx, n.Name)
		if err != nil {
			errs = append(errs, err)
		} else if k != "" {
			keptAll = append(keptAll, k)
		}
	}
	return strings.Join(keptAll, "; "), errors.Join(errs...)
}

// networkRemoveFor: how long a removal is retried while tasks of removed services still
// hold the network (they stop within their stop_timeout, on their nodes).
const networkRemoveFor = 30 * time.Second

// removeNetwork disconnects every container of this node from network name (the
// runner's, dead or alive) and removes it, retrying while the cluster still counts
// endpoints on it.
func (c *Client) removeNetwork(ctx context.Context, name string) (string, error) {
	err := retry.Do(ctx, retry.WithMaxDuration(networkRemoveFor, retry.NewConstant(500*time.Millisecond)), func(ctx context.Context) error {
		cctx, cancel := context.WithTimeout(ctx, callTimeout)
		defer cancel()
		res, err := c.api.NetworkInspect(cctx, name, client.NetworkInspectOptions{})
		if err != nil {
			return ignoreGone(err)
		}
		for id := range res.Network.Containers {
			if _, err := c.api.NetworkDisconnect(cctx, res.Network.ID, client.NetworkDisconnectOptions{Container: id, Force: true}); ignoreGone(err) != nil {
				c.log.Debug("leave network", "network", name, "container", id, "err", err)
			}
		}
		_, err = c.api.NetworkRemove(cctx, res.Network.ID, client.NetworkRemoveOptions{})
		if err = ignoreGone(err); err != nil && inUse(err) {
			return retry.RetryableError(err)
		}
		return err
	})
	switch {
	case err != nil && inUse(err):
		return fmt.Sprintf("network %s kept: still in use after %s (%v); `docker network rm %s` once its tasks are gone", name, networkRemoveFor, err, name), nil
	case err != nil:
		return "", fmt.Errorf("remove network %s: %w", name, err)
	}
	return "", nil
}

// inUse reports the engine's "network ... has active endpoints" / "is in use by task".
func inUse(err error) bool {
	return cerrdefs.IsPermissionDenied(err) || cerrdefs.IsConflict(err) ||
		strings.Contains(err.Error(), "active endpoints") || strings.Contains(err.Error(), "in use")
}

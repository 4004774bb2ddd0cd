package docker

import (
	"context"
	"fmt"
	"net"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	cerrdefs "github.com/containerd/errdefs"
	"github.com/moby/moby/api/types/container"
	"github.com/moby/moby/api/types/network"
	"github.com/moby/moby/client"

	"github.com/xcore/runner/sandbox"
)

// Run creates and starts the container of spec and returns it with its endpoint. A
// container that was created but failed to start is removed before Run returns. A
// bridge container's addresses are registered with the host rules (its plugin's egress)
// before Run returns; one whose egress limit cannot be enforced is not created.
func (c *Client) Run(ctx context.Context, spec sandbox.Spec) (sandbox.Instance, error) {
	name := ContainerName(c.runnerID, spec.Plugin, spec.Generation, spec.Replica)
	if err := c.admissible(spec); err != nil {
		return sandbox.Instance{}, fmt.Errorf("start %s: %w", name, err)
	}
	id, err := c.create(ctx, spec, name)
	if err != nil {
		return sandbox.Instance{}, err
	}
	if err := c.start(ctx, id); err != nil {
		c.removeQuietly(id)
		return sandbox.Instance{}, fmt.Errorf("start %s: %w", name, err)
	}
	raw, err := c.inspectRaw(ctx, id)
	if err != nil {
		c.removeQuietly(id)
		return sandbox.Instance{}, fmt.Errorf("inspect container %s: %w", id, err)
	}
	ctr := c.fromInspect(raw)
	if !ctr.Running {
		c.removeQuietly(id)
		return sandbox.Instance{}, fmt.Errorf("start %s: %s", name, ctr.ExitReason())
	}
	if spec.Network == sandbox.NetworkNone {
		// The plugin serves on a socket in the folder the runner gave it.
		ctr.Endpoint = sandbox.Unix(filepath.Join(spec.RunDir, "plugin.sock"))
	}
	if ctr.Endpoint.IsZero() {
		c.removeQuietly(id)
		return sandbox.Instance{}, fmt.Errorf("start %s: no endpoint for port %d (status %s)", name, spec.Port, ctr.Status)
	}
	if spec.Network != sandbox.NetworkNone {
		var ep *network.EndpointSettings
		if raw.NetworkSettings != nil {
			ep = raw.NetworkSettings.Networks[c.NetworkName()]
		}
		if err := c.admit(ctx, spec, id, endpointAddrs(ep)); err != nil {
			c.removeQuietly(id)
			return sandbox.Instance{}, fmt.Errorf("start %s: %w", name, err)
		}
	}
	return ctr, nil
}

// create is idempotent on the deterministic name: a leftover container of ours with the
// same name (a runner that died mid-create) is removed and the create retried once.
func (c *Client) create(ctx context.Context, spec sandbox.Spec, name string) (string, error) {
	opts := createOptions(spec, c.runnerID, c.NetworkName())
	for attempt := 0; ; attempt++ {
		cctx, cancel := context.WithTimeout(ctx, callTimeout)
		res, err := c.api.ContainerCreate(cctx, opts)
		cancel()
		switch {
		case err == nil:
			for _, w := range res.Warnings {
				c.log.Warn("docker create warning", "container", name, "warning", w)
			}
			return res.ID, nil
		case cerrdefs.IsConflict(err) && attempt == 0:
			if rerr := c.removeIfSame(ctx, name, spec); rerr != nil {
				return "", fmt.Errorf("create container %s: %w (and removing the old one: %v)", name, err, rerr)
			}
			continue
		case ctx.Err() != nil || cerrdefs.IsDeadlineExceeded(err) || cerrdefs.IsCanceled(err):
			// A client-side timeout does not mean "not created": the engine may finish the
			// create after we gave up. Remove it by name so it cannot leak.
			rctx, cancel := context.WithTimeout(context.Background(), callTimeout)
			if rerr := c.removeIfSame(rctx, name, spec); rerr != nil {
				c.log.Warn("cleanup after a create that timed out", "container", name, "err", rerr)
			}
			cancel()
			return "", fmt.Errorf("create container %s: %w", name, err)
		case cerrdefs.IsNotFound(err):
			return "", fmt.Errorf("create container %s: image %s (%s) not found locally: %w", name, spec.Image, spec.ImageID, err)
		default:
			return "", fmt.Errorf("create container %s: %w", name, err)
		}
	}
}

// removeIfSame removes the container called name when it is a leftover of this very
// instance (same runner, plugin, generation and replica labels). Names are not unique
// across plugins ("a-1" generation 2 and "a" generation 1 replica 2 share one), so a
// name alone never licenses a removal.
func (c *Client) removeIfSame(ctx context.Context, name string, spec sandbox.Spec) error {
	ctr, err := c.inspectRaw(ctx, name)
	if cerrdefs.IsNotFound(err) {
		return nil
	}
	if err != nil {
		return err
	}
	var l map[string]string
	if ctr.Config != nil {
		l = ctr.Config.Labels
	}
	var got sandbox.Instance
	fromLabels(&got, l)
	if l[sandbox.LabelRunner] != c.runnerID || got.Plugin != spec.Plugin || got.Generation != spec.Generation || got.Replica != spec.Replica {
		return fmt.Errorf("container %s exists and is not a leftover of this instance", name)
	}
	return c.Remove(ctx, ctr.ID)
}

func (c *Client) start(ctx context.Context, id string) error {
	ctx, cancel := context.WithTimeout(ctx, callTimeout)
	defer cancel()
	_, err := c.api.ContainerStart(ctx, id, client.ContainerStartOptions{})
	return err
}

// Inspect returns the current state of a container; a container that does not exist
// is sandbox.ErrNotFound.
func (c *Client) Inspect(ctx context.Context, id string) (sandbox.Instance, error) {
	raw, err := c.inspectRaw(ctx, id)
	if cerrdefs.IsNotFound(err) {
		return sandbox.Instance{}, fmt.Errorf("inspect container %s: %w", id, sandbox.ErrNotFound)
	}
	if err != nil {
		return sandbox.Instance{}, fmt.Errorf("inspect container %s: %w", id, err)
	}
	return c.fromInspect(raw), nil
}

func (c *Client) inspectRaw(ctx context.Context, id string) (container.InspectResponse, error) {
	ctx, cancel := context.WithTimeout(ctx, callTimeout)
	defer cancel()
	res, err := c.api.ContainerInspect(ctx, id, client.ContainerInspectOptions{})
	return res.Container, err
}

func (c *Client) fromInspect(raw container.InspectResponse) sandbox.Instance {
	ctr := sandbox.Instance{ID: raw.ID, Name: strings.TrimPrefix(raw.Name, "/")}
	if raw.Config != nil {
		fromLabels(&ctr, raw.Config.Labels)
	}
	ctr.Created, _ = time.Parse(time.RFC3339Nano, raw.Created)
	if st := raw.State; st != nil {
		ctr.Running, ctr.Status, ctr.ExitCode, ctr.OOMKilled, ctr.Error = st.Running, string(st.Status), st.ExitCode, st.OOMKilled, st.Error
	}
	if ctr.Running {
		ctr.Endpoint = endpoint(raw, c.NetworkName())
	}
	if raw.HostConfig != nil && raw.HostConfig.NetworkMode == "none" {
		// Served on a socket in the folder mounted at sandbox.SocketDir.
		for _, m := range raw.Mounts {
			if m.Destination == sandbox.SocketDir {
				ctr.Endpoint = sandbox.Unix(filepath.Join(m.Source, "plugin.sock"))
			}
		}
	}
	return ctr
}

// endpoint prefers the port published on 127.0.0.1 (behind docker-proxy, which accepts
// connections even when nothing listens behind it), else the address on the runner
// network.
func endpoint(raw container.InspectResponse, networkName string) sandbox.Endpoint {
	ns := raw.NetworkSettings
	if ns == nil || raw.Config == nil {
		return sandbox.Endpoint{}
	}
	for _, bindings := range ns.Ports {
		for _, b := range bindings {
			if b.HostPort != "" && b.HostIP == loopback {
				ep := sandbox.TCP(net.JoinHostPort(b.HostIP.String(), b.HostPort))
				ep.Proxied = true
				return ep
			}
		}
	}
	if ep, ok := ns.Networks[networkName]; ok && ep != nil && ep.IPAddress.IsValid() {
		for p := range raw.Config.ExposedPorts {
			return sandbox.TCP(net.JoinHostPort(ep.IPAddress.String(), strconv.Itoa(int(p.Num()))))
		}
	}
	return sandbox.Endpoint{}
}

func fromLabels(c *sandbox.Instance, l map[string]string) {
	c.Generation, _ = strconv.Atoi(l[sandbox.LabelGeneration])
	c.Replica, _ = strconv.Atoi(l[sandbox.LabelReplica])
	c.Plugin, c.Snapshot, c.SpecLabel, c.ImageID = l[sandbox.LabelPlugin], l[sandbox.LabelSnapshot], l[sandbox.LabelSpec], l[sandbox.LabelImage]
}

// Stop sends SIGTERM, waits up to timeout, then SIGKILLs. A container that is already
// stopped or gone counts as stopped.
func (c *Client) Stop(ctx context.Context, id string, timeout time.Duration) error {
	secs := int(timeout.Round(time.Second) / time.Second)
	ctx, cancel := context.WithTimeout(ctx, timeout+callTimeout)
	defer cancel()
	_, err := c.api.ContainerStop(ctx, id, client.ContainerStopOptions{Timeout: &secs})
	if err = ignoreGone(err); err != nil {
		return fmt.Errorf("stop container %s: %w", id, err)
	}
	return nil
}

// Remove force-removes a container (and its anonymous volumes); gone counts as removed.
// Its addresses leave the host rules with it.
func (c *Client) Remove(ctx context.Context, id string) error {
	ctx, cancel := context.WithTimeout(ctx, callTimeout)
	defer cancel()
	_, err := c.api.ContainerRemove(ctx, id, client.ContainerRemoveOptions{Force: true, RemoveVolumes: true})
	// Conflict: "removal already in progress" — someone else is removing it.
	if err = ignoreGone(err); err != nil && !cerrdefs.IsConflict(err) {
		return fmt.Errorf("remove container %s: %w", id, err)
	}
	c.forget(ctx, id)
	return nil
}

// removeQuietly cleans up after a failed create/start with a fresh context: the caller's
// may be the one that just expired.
func (c *Client) removeQuietly(id string) {
	ctx, cancel := context.WithTimeout(context.Background(), callTimeout)
	defer cancel()
	if err := c.Remove(ctx, id); err != nil {
		c.log.Warn("cleanup after failed start", "container", id, "err", err)
	}
}

// List returns this runner's containers (running or not), by label.
func (c *Client) List(ctx context.Context) ([]sandbox.Instance, error) {
	ctx, cancel := context.WithTimeout(ctx, callTimeout)
	defer cancel()
	res, err := c.api.ContainerList(ctx, client.ContainerListOptions{
		All:     true,
		Filters: client.Filters{}.Add("label", sandbox.LabelRunner+"="+c.runnerID),
	})
	if err != nil {
		return nil, fmt.Errorf("list containers: %w", err)
	}
	out := make([]sandbox.Instance, 0, len(res.Items))
	for _, s := range res.Items {
		ctr := sandbox.Instance{ID: s.ID, Status: string(s.State), Running: s.State == container.StateRunning, Created: time.Unix(s.Created, 0)}
		if len(s.Names) > 0 {
			ctr.Name = strings.TrimPrefix(s.Names[0], "/")
		}
		fromLabels(&ctr, s.Labels)
		out = append(out, ctr)
	}
	return out, nil
}

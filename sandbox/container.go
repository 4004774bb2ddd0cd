package sandbox

import (
	"context"
	"fmt"
	"net"
	"strconv"
	"strings"
	"time"

	cerrdefs "github.com/containerd/errdefs"
	"github.com/moby/moby/api/types/container"
	"github.com/moby/moby/client"
)

// Container is what the runner needs to know of one of its containers.
type Container struct {
	ID         string
	Name       string
	Plugin     string
	Generation int
	Snapshot   string
	SpecLabel  string // see LabelSpec
	ImageID    string
	Running    bool
	Status     string // "running", "exited", ...
	ExitCode   int
	OOMKilled  bool
	Error      string // engine's error for the last start, if any
	// Endpoint is the host:port the proxy dials: 127.0.0.1:<published port>, or the
	// container's address on the runner network when the port is not published.
	Endpoint string
}

// ExitReason says why a container that is not running stopped.
func (c Container) ExitReason() string {
	switch {
	case c.OOMKilled:
		return fmt.Sprintf("container exited: OOM killed (exit code %d)", c.ExitCode)
	case c.Error != "":
		return fmt.Sprintf("container exited with code %d: %s", c.ExitCode, c.Error)
	default:
		return fmt.Sprintf("container exited with code %d", c.ExitCode)
	}
}

// Run creates and starts the container of spec and returns it with its endpoint. A
// container that was created but failed to start is removed before Run returns.
func (c *Client) Run(ctx context.Context, spec ContainerSpec) (Container, error) {
	name := ContainerName(c.runnerID, spec.Plugin, spec.Generation)
	id, err := c.create(ctx, spec, name)
	if err != nil {
		return Container{}, err
	}
	if err := c.start(ctx, id); err != nil {
		c.removeQuietly(id)
		return Container{}, fmt.Errorf("start %s: %w", name, err)
	}
	ctr, err := c.Inspect(ctx, id)
	if err != nil {
		c.removeQuietly(id)
		return Container{}, err
	}
	if !ctr.Running {
		c.removeQuietly(id)
		return Container{}, fmt.Errorf("start %s: %s", name, ctr.ExitReason())
	}
	if ctr.Endpoint == "" && spec.Network != NetworkNone {
		c.removeQuietly(id)
		return Container{}, fmt.Errorf("start %s: no endpoint for port %d (status %s)", name, spec.Port, ctr.Status)
	}
	return ctr, nil
}

// create is idempotent on the deterministic name: a leftover container of ours with the
// same name (a runner that died mid-create) is removed and the create retried once.
func (c *Client) create(ctx context.Context, spec ContainerSpec, name string) (string, error) {
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
			if rerr := c.removeIfOurs(ctx, name); rerr != nil {
				return "", fmt.Errorf("create container %s: %w (and removing the old one: %v)", name, err, rerr)
			}
			continue
		case ctx.Err() != nil || cerrdefs.IsDeadlineExceeded(err) || cerrdefs.IsCanceled(err):
			// A client-side timeout does not mean "not created": the engine may finish the
			// create after we gave up. Remove by name so it cannot leak.
			c.removeQuietly(name)
			return "", fmt.Errorf("create container %s: %w", name, err)
		case cerrdefs.IsNotFound(err):
			return "", fmt.Errorf("create container %s: image %s (%s) not found locally: %w", name, spec.Image, spec.ImageID, err)
		default:
			return "", fmt.Errorf("create container %s: %w", name, err)
		}
	}
}

func (c *Client) removeIfOurs(ctx context.Context, name string) error {
	ctr, err := c.inspectRaw(ctx, name)
	if cerrdefs.IsNotFound(err) {
		return nil
	}
	if err != nil {
		return err
	}
	if ctr.Config == nil || ctr.Config.Labels[LabelRunner] != c.runnerID {
		return fmt.Errorf("container %s exists and is not this runner's", name)
	}
	return c.Remove(ctx, ctr.ID)
}

func (c *Client) start(ctx context.Context, id string) error {
	ctx, cancel := context.WithTimeout(ctx, callTimeout)
	defer cancel()
	_, err := c.api.ContainerStart(ctx, id, client.ContainerStartOptions{})
	return err
}

// Inspect returns the current state of a container.
func (c *Client) Inspect(ctx context.Context, id string) (Container, error) {
	raw, err := c.inspectRaw(ctx, id)
	if err != nil {
		return Container{}, fmt.Errorf("inspect container %s: %w", id, err)
	}
	return c.fromInspect(raw), nil
}

func (c *Client) inspectRaw(ctx context.Context, id string) (container.InspectResponse, error) {
	ctx, cancel := context.WithTimeout(ctx, callTimeout)
	defer cancel()
	res, err := c.api.ContainerInspect(ctx, id, client.ContainerInspectOptions{})
	return res.Container, err
}

func (c *Client) fromInspect(raw container.InspectResponse) Container {
	ctr := Container{ID: raw.ID, Name: strings.TrimPrefix(raw.Name, "/")}
	if raw.Config != nil {
		ctr.fromLabels(raw.Config.Labels)
	}
	if st := raw.State; st != nil {
		ctr.Running, ctr.Status, ctr.ExitCode, ctr.OOMKilled, ctr.Error = st.Running, string(st.Status), st.ExitCode, st.OOMKilled, st.Error
	}
	ctr.Endpoint = endpoint(raw, c.NetworkName())
	return ctr
}

// endpoint prefers the port published on 127.0.0.1, else the address on the runner network.
func endpoint(raw container.InspectResponse, networkName string) string {
	ns := raw.NetworkSettings
	if ns == nil || raw.Config == nil {
		return ""
	}
	for _, bindings := range ns.Ports {
		for _, b := range bindings {
			if b.HostPort != "" && b.HostIP == loopback {
				return net.JoinHostPort(b.HostIP.String(), b.HostPort)
			}
		}
	}
	if ep, ok := ns.Networks[networkName]; ok && ep != nil && ep.IPAddress.IsValid() {
		for p := range raw.Config.ExposedPorts {
			return net.JoinHostPort(ep.IPAddress.String(), strconv.Itoa(int(p.Num())))
		}
	}
	return ""
}

func (c *Container) fromLabels(l map[string]string) {
	c.Generation, _ = strconv.Atoi(l[LabelGeneration])
	c.Plugin, c.Snapshot, c.SpecLabel, c.ImageID = l[LabelPlugin], l[LabelSnapshot], l[LabelSpec], l[LabelImage]
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
func (c *Client) Remove(ctx context.Context, id string) error {
	ctx, cancel := context.WithTimeout(ctx, callTimeout)
	defer cancel()
	_, err := c.api.ContainerRemove(ctx, id, client.ContainerRemoveOptions{Force: true, RemoveVolumes: true})
	if err = ignoreGone(err); err != nil && !cerrdefs.IsConflict(err) {
		return fmt.Errorf("remove container %s: %w", id, err)
	} else if err != nil {
		// Conflict: "removal already in progress" — someone else is removing it.
		return nil
	}
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
func (c *Client) List(ctx context.Context) ([]Container, error) {
	ctx, cancel := context.WithTimeout(ctx, callTimeout)
	defer cancel()
	res, err := c.api.ContainerList(ctx, client.ContainerListOptions{
		All:     true,
		Filters: client.Filters{}.Add("label", LabelRunner+"="+c.runnerID),
	})
	if err != nil {
		return nil, fmt.Errorf("list containers: %w", err)
	}
	out := make([]Container, 0, len(res.Items))
	for _, s := range res.Items {
		ctr := Container{ID: s.ID, Status: string(s.State), Running: s.State == container.StateRunning}
		if len(s.Names) > 0 {
			ctr.Name = strings.TrimPrefix(s.Names[0], "/")
		}
		ctr.fromLabels(s.Labels)
		out = append(out, ctr)
	}
	return out, nil
}

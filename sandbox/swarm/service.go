package swarm

import (
	"context"
	"fmt"
	"strconv"
	"time"

	cerrdefs "github.com/containerd/errdefs"
	"github.com/moby/moby/api/types/swarm"
	"github.com/moby/moby/client"
	"github.com/sethvargo/go-retry"

	"github.com/xcore/runner/sandbox"
	"github.com/xcore/runner/sandbox/internal/engine"
)

// DeployGeneration creates the service of spec's generation with replicas tasks on the
// plugin's network (created and joined if need be). Idempotent: a service of this very
// generation that exists already (a retry, a create that timed out client-side) is kept,
// at replicas tasks. Images are not resolved against a registry (QueryRegistry false):
// spec.ImageID names a local image on every node, and a registry image is pinned by the
// runner before it gets here.
func (c *Client) DeployGeneration(ctx context.Context, spec sandbox.Spec, replicas int) error {
	if spec.Network == sandbox.NetworkNone {
		return fmt.Errorf("deploy %s: network = \"none\" is not available on a swarm", spec.Plugin)
	}
	n, err := c.PluginNetwork(ctx, spec.Plugin)
	if err != nil {
		return err
	}
	name := ServiceName(c.runnerID, spec.Plugin, spec.Generation)
	cctx, cancel := context.WithTimeout(ctx, callTimeout)
	opts, err := createOptions(spec, serviceSpec(spec, c.runnerID, n.ID, replicas, c.version))
	if err != nil {
		cancel()
		return fmt.Errorf("create service %s: %w", name, err)
	}
	res, err := c.api.ServiceCreate(cctx, opts)
	cancel()
	defer c.changed()
	switch {
	case err == nil:
		for _, w := range res.Warnings {
			c.log.Warn("service create warning", "service", name, "warning", w)
		}
		return nil
	case cerrdefs.IsConflict(err) || ctx.Err() != nil || cerrdefs.IsDeadlineExceeded(err):
		// It may exist (a create the client gave up on may complete in the manager): ours,
		// of this generation, is kept and scaled; anything else is an error.
		svc, ierr := c.inspectService(context.WithoutCancel(ctx), name)
		if ierr != nil {
			return fmt.Errorf("create service %s: %w", name, err)
		}
		if l := svc.Spec.Labels; l[sandbox.LabelRunner] != c.runnerID || l[sandbox.LabelPlugin] != spec.Plugin || l[sandbox.LabelGeneration] != strconv.Itoa(spec.Generation) {
			return fmt.Errorf("create service %s: a service of that name exists and is not this generation's", name)
		}
		return c.scale(ctx, svc, replicas)
	default:
		return fmt.Errorf("create service %s: %w", name, err)
	}
}

// createOptions carries the runner's registry credentials with the create, for the
// nodes to pull spec.ImagePinned with (Swarm keeps them with the service, as `docker
// service create --with-registry-auth` does). The registry is not asked: the reference
// is pinned already.
func createOptions(spec sandbox.Spec, svc swarm.ServiceSpec) (client.ServiceCreateOptions, error) {
	opts := client.ServiceCreateOptions{Spec: svc}
	if a := spec.RegistryAuth; a != nil && spec.ImagePinned != "" {
		enc, err := engine.RegistryAuth(*a)
		if err != nil {
			return opts, err
		}
		opts.EncodedRegistryAuth = enc
	}
	return opts, nil
}

func (c *Client) inspectService(ctx context.Context, name string) (swarm.Service, error) {
	ctx, cancel := context.WithTimeout(ctx, callTimeout)
	defer cancel()
	res, err := c.api.ServiceInspect(ctx, name, client.ServiceInspectOptions{})
	return res.Service, err
}

// ScaleGeneration sets the number of tasks of a generation in place and returns, on a
// scale-down, the tasks Swarm chose to stop: Swarm picks them (it balances nodes), not
// the runner, so the runner stops routing to exactly those.
func (c *Client) ScaleGeneration(ctx context.Context, plugin string, gen, replicas int) (stopping []string, err error) {
	name := ServiceName(c.runnerID, plugin, gen)
	before, err := c.runningTasks(ctx, name)
	if err != nil {
		return nil, err
	}
	svc, err := c.inspectService(ctx, name)
	if err != nil {
		return nil, fmt.Errorf("scale service %s: %w", name, err)
	}
	if err := c.scale(ctx, svc, replicas); err != nil {
		return nil, err
	}
	if len(before) <= replicas {
		return nil, nil
	}
	// Swarm marks the tasks it stops (desired state shutdown) at once, asynchronously:
	// wait until as many as asked for are left.
	err = retry.Do(ctx, retry.WithMaxDuration(10*time.Second, retry.NewConstant(100*time.Millisecond)), func(ctx context.Context) error {
		after, err := c.runningTasks(ctx, name)
		if err != nil {
			return err
		}
		left := map[string]bool{}
		for _, t := range after {
			left[t.ID] = true
		}
		stopping = stopping[:0]
		for _, t := range before {
			if !left[t.ID] {
				stopping = append(stopping, t.ID)
			}
		}
		if len(before)-len(stopping) > replicas {
			return retry.RetryableError(fmt.Errorf("service %s: %d tasks desired running, want %d", name, len(after), replicas))
		}
		return nil
	})
	return stopping, err
}

// scale updates svc to replicas tasks, retrying when another update got in first
// (Swarm updates carry the version they were read at).
func (c *Client) scale(ctx context.Context, svc swarm.Service, replicas int) error {
	name := svc.Spec.Name
	for attempt := 0; ; attempt++ {
		if m := svc.Spec.Mode.Replicated; m != nil && m.Replicas != nil && *m.Replicas == uint64(replicas) {
			return nil
		}
		n := uint64(max(replicas, 0))
		spec := svc.Spec
		spec.Mode.Replicated = &swarm.ReplicatedService{Replicas: &n}
		cctx, cancel := context.WithTimeout(ctx, callTimeout)
		_, err := c.api.ServiceUpdate(cctx, svc.ID, client.ServiceUpdateOptions{Version: svc.Version, Spec: spec})
		cancel()
		if err == nil {
			c.changed()
			c.log.Info("service scaled", "service", name, "replicas", replicas)
			return nil
		}
		if attempt >= 3 || cerrdefs.IsNotFound(err) {
			return fmt.Errorf("scale service %s to %d: %w", name, replicas, err)
		}
		// "update out of sequence" (another update got in first) among others: read
		// the current version and try again, a few times.
		if svc, err = c.inspectService(ctx, name); err != nil {
			return fmt.Errorf("scale service %s: %w", name, err)
		}
	}
}

// RemoveGeneration removes a generation's service; Swarm stops its tasks (SIGTERM, then
// SIGKILL after the stop grace period). A service that is gone counts as removed.
func (c *Client) RemoveGeneration(ctx context.Context, plugin string, gen int) error {
	name := ServiceName(c.runnerID, plugin, gen)
	ctx, cancel := context.WithTimeout(ctx, callTimeout)
	defer cancel()
	_, err := c.api.ServiceRemove(ctx, name, client.ServiceRemoveOptions{})
	if err = ignoreGone(err); err != nil {
		return fmt.Errorf("remove service %s: %w", name, err)
	}
	c.changed()
	return nil
}

// Generations lists every service of this runner, whatever its tasks do.
func (c *Client) Generations(ctx context.Context) ([]sandbox.Deployment, error) {
	svcs, err := c.services(ctx)
	if err != nil {
		return nil, err
	}
	out := make([]sandbox.Deployment, 0, len(svcs))
	for _, s := range svcs {
		d := sandbox.Deployment{Name: s.Spec.Name, Plugin: s.Spec.Labels[sandbox.LabelPlugin], Created: s.CreatedAt}
		d.Generation, _ = strconv.Atoi(s.Spec.Labels[sandbox.LabelGeneration])
		if m := s.Spec.Mode.Replicated; m != nil && m.Replicas != nil {
			d.Replicas = int(*m.Replicas)
		}
		out = append(out, d)
	}
	return out, nil
}

// services lists this runner's services by label and remembers them for the tasks'
// endpoints (plugin, generation, port).
func (c *Client) services(ctx context.Context) ([]swarm.Service, error) {
	ctx, cancel := context.WithTimeout(ctx, callTimeout)
	defer cancel()
	res, err := c.api.ServiceList(ctx, client.ServiceListOptions{Filters: client.Filters{}.Add("label", sandbox.LabelRunner+"="+c.runnerID)})
	if err != nil {
		return nil, fmt.Errorf("list services: %w", err)
	}
	c.mu.Lock()
	clear(c.svcs)
	for _, s := range res.Items {
		c.svcs[s.ID] = s
	}
	c.mu.Unlock()
	return res.Items, nil
}

// service returns a service of this runner by ID, from what the last listing saw or the
// manager.
func (c *Client) service(ctx context.Context, id string) (swarm.Service, error) {
	c.mu.Lock()
	s, ok := c.svcs[id]
	c.mu.Unlock()
	if ok {
		return s, nil
	}
	s, err := c.inspectService(ctx, id)
	if err != nil {
		return swarm.Service{}, err
	}
	if s.Spec.Labels[sandbox.LabelRunner] != c.runnerID {
		return swarm.Service{}, fmt.Errorf("service %s is not this runner's: %w", id, sandbox.ErrNotFound)
	}
	c.mu.Lock()
	c.svcs[id] = s
	c.mu.Unlock()
	return s, nil
}

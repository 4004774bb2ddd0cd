package swarm

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"time"

	cerrdefs "github.com/containerd/errdefs"
	"github.com/moby/moby/api/types/swarm"
	"github.com/moby/moby/client"

	"github.com/xcore/runner/sandbox"
	"github.com/xcore/runner/sandbox/internal/engine"
)

// errGeneration: the single-instance calls of the runner's interface do not apply to a
// cluster, whose unit is a generation.
var errGeneration = errors.New("the swarm backend runs whole generations (DeployGeneration); it does not start or stop single instances")

// Run is not how a cluster starts instances: see DeployGeneration and WaitInstance.
func (c *Client) Run(context.Context, sandbox.Spec) (sandbox.Instance, error) {
	return sandbox.Instance{}, errGeneration
}

// Stop does nothing: a task is Swarm's, which restarts it under its service's restart
// policy; tasks stop with their service (RemoveGeneration) or a scale-down.
func (c *Client) Stop(context.Context, string, time.Duration) error { return nil }

// Remove does nothing, for the same reason as Stop.
func (c *Client) Remove(context.Context, string) error { return nil }

// List returns the current tasks of this runner's services (desired running: starting,
// running, or waiting for a node), by label.
func (c *Client) List(ctx context.Context) ([]sandbox.Instance, error) {
	svcs, err := c.services(ctx)
	if err != nil {
		return nil, err
	}
	if len(svcs) == 0 {
		return nil, nil
	}
	f := client.Filters{}.Add("desired-state", "running")
	for _, s := range svcs {
		f = f.Add("service", s.ID)
	}
	tasks, err := c.tasks(ctx, f)
	if err != nil {
		return nil, err
	}
	out := make([]sandbox.Instance, 0, len(tasks))
	for _, t := range tasks {
		if inst, ok := c.instance(ctx, t); ok {
			out = append(out, inst)
		}
	}
	return out, nil
}

func (c *Client) tasks(ctx context.Context, f client.Filters) ([]swarm.Task, error) {
	ctx, cancel := context.WithTimeout(ctx, callTimeout)
	defer cancel()
	res, err := c.api.TaskList(ctx, client.TaskListOptions{Filters: f})
	if err != nil {
		return nil, fmt.Errorf("list tasks: %w", err)
	}
	return res.Items, nil
}

// runningTasks lists the tasks of service name that Swarm wants running.
func (c *Client) runningTasks(ctx context.Context, name string) ([]swarm.Task, error) {
	return c.tasks(ctx, client.Filters{}.Add("service", name).Add("desired-state", "running"))
}

// Inspect returns a task's current state; a task that is not this runner's, or gone, is
// sandbox.ErrNotFound.
func (c *Client) Inspect(ctx context.Context, id string) (sandbox.Instance, error) {
	cctx, cancel := context.WithTimeout(ctx, callTimeout)
	res, err := c.api.TaskInspect(cctx, id, client.TaskInspectOptions{})
	cancel()
	if cerrdefs.IsNotFound(err) {
		return sandbox.Instance{}, fmt.Errorf("inspect task %s: %w", id, sandbox.ErrNotFound)
	}
	if err != nil {
		return sandbox.Instance{}, fmt.Errorf("inspect task %s: %w", id, err)
	}
	inst, ok := c.instance(ctx, res.Task)
	if !ok {
		return sandbox.Instance{}, fmt.Errorf("inspect task %s: %w", id, sandbox.ErrNotFound)
	}
	return inst, nil
}

// instance is the runner's view of task t: labels from its service, running while Swarm
// both wants and sees it running, and its endpoint, the task's address on the plugin's
// network at the plugin's port. False when t is not of this runner's services.
func (c *Client) instance(ctx context.Context, t swarm.Task) (sandbox.Instance, bool) {
	svc, err := c.service(ctx, t.ServiceID)
	if err != nil {
		return sandbox.Instance{}, false
	}
	l := svc.Spec.Labels
	inst := sandbox.Instance{
		ID: t.ID, Name: svc.Spec.Name + "." + strconv.Itoa(t.Slot),
		Plugin: l[sandbox.LabelPlugin], Snapshot: l[sandbox.LabelSnapshot], SpecLabel: l[sandbox.LabelSpec], ImageID: l[sandbox.LabelImage],
		Replica: max(t.Slot-1, 0), Created: t.CreatedAt,
		Running: t.Status.State == swarm.TaskStateRunning && t.DesiredState == swarm.TaskStateRunning,
		Status:  string(t.Status.State), Error: t.Status.Err,
	}
	inst.Generation, _ = strconv.Atoi(l[sandbox.LabelGeneration])
	if cs := t.Status.ContainerStatus; cs != nil {
		inst.ExitCode = cs.ExitCode
	}
	if inst.Running {
		pnet := PluginNetworkName(c.runnerID, inst.Plugin)
		for _, a := range t.NetworksAttachments {
			if a.Network.Spec.Name != pnet || len(a.Addresses) == 0 || !a.Addresses[0].IsValid() {
				continue
			}
			inst.Endpoint = sandbox.TCP(net.JoinHostPort(a.Addresses[0].Addr().String(), l[LabelPort]))
		}
	}
	return inst, true
}

// waitPoll is how often WaitInstance lists a generation's tasks.
const waitPoll = 200 * time.Millisecond

// WaitInstance waits until a task of generation gen of plugin runs with an endpoint and
// take accepts it (the runner's slots share a generation's tasks: take claims one), and
// returns it. It waits as long as ctx lets it: a task may wait for a node (placement), an
// image, or Swarm's restart delay; the error says what the last task waiting was told.
func (c *Client) WaitInstance(ctx context.Context, plugin string, gen int, take func(sandbox.Instance) bool) (sandbox.Instance, error) {
	name := ServiceName(c.runnerID, plugin, gen)
	t := time.NewTicker(waitPoll)
	defer t.Stop()
	var last string
	for {
		tasks, err := c.runningTasks(ctx, name)
		if err != nil && ctx.Err() == nil {
			return sandbox.Instance{}, err
		}
		for _, task := range tasks {
			inst, ok := c.instance(ctx, task)
			switch {
			case !ok:
			case inst.Running && !inst.Endpoint.IsZero():
				if take(inst) {
					return inst, nil
				}
			case task.Status.Err != "":
				last = fmt.Sprintf("task %s %s: %s", inst.Name, task.Status.State, task.Status.Err)
			case task.Status.Message != "":
				last = fmt.Sprintf("task %s %s: %s", inst.Name, task.Status.State, task.Status.Message)
			}
		}
		select {
		case <-ctx.Done():
			if last == "" {
				last = "no task of " + name + " is running"
			}
			return sandbox.Instance{}, fmt.Errorf("%s: %w", last, ctx.Err())
		case <-t.C:
		}
	}
}

// Logs streams a task's stdout and stderr (through the manager, from whatever node runs
// it) until ctx ends (follow) or the log is exhausted. tail < 0 means everything.
func (c *Client) Logs(ctx context.Context, id string, follow bool, tail int) (io.ReadCloser, error) {
	t := "all"
	if tail >= 0 {
		t = strconv.Itoa(tail)
	}
	res, err := c.api.TaskLogs(ctx, id, client.TaskLogsOptions{ShowStdout: true, ShowStderr: true, Follow: follow, Tail: t})
	if err != nil {
		return nil, fmt.Errorf("logs of task %s: %w", id, err)
	}
	return engine.Demux(res), nil // tasks run without a TTY: multiplexed
}

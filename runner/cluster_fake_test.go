package runner

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/xcore/runner/config"
	"github.com/xcore/runner/sandbox"
)

// fakeCluster is an engine that runs a generation as one unit and restarts its tasks
// itself, like Swarm: tasks are httptest servers. It embeds fakeSandbox for images,
// events and logs; the runner must never start or stop a single instance (Run fails).
type fakeCluster struct {
	*fakeSandbox
	cmu      sync.Mutex
	svcs     map[unitKey]*fakeService
	nextTask int
	deploys  []string // "plugin/gen×replicas", in order
	removed  []string // "plugin/gen", in order
	scales   []string // "plugin/gen→n"
	nets     map[string]bool
	log      []string // deploys and removals, in order, for ordering checks
	// scaleGate, when set, holds a scale's answer back (its tasks already stopped and
	// gone from listings, as Swarm's are while the client waits) until it is closed.
	scaleGate chan struct{}
}

type fakeService struct {
	spec     sandbox.Spec
	replicas int
	tasks    map[int]*fakeTask // slot → current task
	created  time.Time
}

type fakeTask struct {
	inst sandbox.Instance
	srv  *httptest.Server
}

func newFakeCluster() *fakeCluster {
	return &fakeCluster{fakeSandbox: newFake(), svcs: map[unitKey]*fakeService{}, nets: map[string]bool{}}
}

func (c *fakeCluster) Run(context.Context, sandbox.Spec) (sandbox.Instance, error) {
	return sandbox.Instance{}, errors.New("test: Run called on a cluster")
}

// startTask puts a fresh task in slot (1-based) of svc. Under cmu.
func (c *fakeCluster) startTask(svc *fakeService, slot int) {
	c.nextTask++
	id := fmt.Sprintf("t%d", c.nextTask)
	greeting := svc.spec.Env["GREETING"]
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "%s %s %s", greeting, id, r.URL.Path)
	}))
	s := svc.spec
	svc.tasks[slot] = &fakeTask{srv: srv, inst: sandbox.Instance{
		ID: id, Name: fmt.Sprintf("xcore-%s-%d.%d", s.Plugin, s.Generation, slot), Plugin: s.Plugin, Generation: s.Generation,
		Replica: slot - 1, Snapshot: s.Snapshot, SpecLabel: s.SpecLabel, ImageID: s.ImageID, Running: true, Status: "running",
		Created: time.Now(), Endpoint: sandbox.TCP(strings.TrimPrefix(srv.URL, "http://")),
	}}
}

func (c *fakeCluster) DeployGeneration(_ context.Context, spec sandbox.Spec, replicas int) error {
	c.cmu.Lock()
	defer c.cmu.Unlock()
	k := unitKey{spec.Plugin, spec.Generation}
	if c.svcs[k] != nil {
		return nil
	}
	svc := &fakeService{spec: spec, replicas: replicas, tasks: map[int]*fakeTask{}, created: time.Now()}
	c.svcs[k] = svc
	for slot := 1; slot <= replicas; slot++ {
		c.startTask(svc, slot)
	}
	c.deploys = append(c.deploys, fmt.Sprintf("%s/%d×%d", spec.Plugin, spec.Generation, replicas))
	c.log = append(c.log, fmt.Sprintf("deploy %s/%d", spec.Plugin, spec.Generation))
	return nil
}

// ScaleGeneration stops the LOWEST slots on a scale-down: the engine, not the runner,
// chooses (Swarm balances nodes), and the lowest are the ones a runner that dropped
// its highest slots would get wrong.
func (c *fakeCluster) ScaleGeneration(ctx context.Context, plugin string, gen, replicas int) ([]string, error) {
	c.cmu.Lock()
	gate := c.scaleGate
	stopping, err := c.scaleLocked(plugin, gen, replicas)
	c.cmu.Unlock()
	if gate != nil {
		select {
		case <-gate:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	return stopping, err
}

func (c *fakeCluster) scaleLocked(plugin string, gen, replicas int) ([]string, error) {
	svc := c.svcs[unitKey{plugin, gen}]
	if svc == nil {
		return nil, fmt.Errorf("scale %s/%d: %w", plugin, gen, sandbox.ErrNotFound)
	}
	c.scales = append(c.scales, fmt.Sprintf("%s/%d→%d", plugin, gen, replicas))
	var stopping []string
	slots := slices.Sorted(func(yield func(int) bool) {
		for s := range svc.tasks {
			if !yield(s) {
				return
			}
		}
	})
	for len(slots) > replicas {
		t := svc.tasks[slots[0]]
		delete(svc.tasks, slots[0])
		stopping = append(stopping, t.inst.ID)
		go t.srv.Close() // stopped by the engine, as Swarm does, after a moment
		slots = slots[1:]
	}
	for slot := 1; len(svc.tasks) < replicas; slot++ {
		if svc.tasks[slot] == nil {
			c.startTask(svc, slot)
		}
	}
	svc.replicas = replicas
	return stopping, nil
}

func (c *fakeCluster) RemoveGeneration(_ context.Context, plugin string, gen int) error {
	c.cmu.Lock()
	svc := c.svcs[unitKey{plugin, gen}]
	delete(c.svcs, unitKey{plugin, gen})
	if svc != nil {
		c.removed = append(c.removed, fmt.Sprintf("%s/%d", plugin, gen))
		c.log = append(c.log, fmt.Sprintf("remove %s/%d", plugin, gen))
	}
	c.cmu.Unlock()
	if svc != nil {
		for _, t := range svc.tasks {
			t.srv.Close()
		}
	}
	return nil
}

func (c *fakeCluster) Generations(context.Context) ([]sandbox.Deployment, error) {
	c.cmu.Lock()
	defer c.cmu.Unlock()
	var out []sandbox.Deployment
	for k, s := range c.svcs {
		out = append(out, sandbox.Deployment{Name: fmt.Sprintf("xcore-%s-%d", k.plugin, k.gen), Plugin: k.plugin, Generation: k.gen, Replicas: s.replicas, Created: s.created})
	}
	return out, nil
}

func (c *fakeCluster) WaitInstance(ctx context.Context, plugin string, gen int, take func(sandbox.Instance) bool) (sandbox.Instance, error) {
	for {
		c.cmu.Lock()
		svc := c.svcs[unitKey{plugin, gen}]
		var insts []sandbox.Instance
		if svc != nil {
			for _, t := range svc.tasks {
				if t.inst.Running {
					insts = append(insts, t.inst)
				}
			}
		}
		c.cmu.Unlock()
		if svc == nil {
			return sandbox.Instance{}, fmt.Errorf("no service %s/%d", plugin, gen)
		}
		sort.Slice(insts, func(i, j int) bool { return insts[i].Replica < insts[j].Replica })
		for _, inst := range insts {
			if take(inst) {
				return inst, nil
			}
		}
		select {
		case <-ctx.Done():
			return sandbox.Instance{}, ctx.Err()
		case <-time.After(5 * time.Millisecond):
		}
	}
}

func (c *fakeCluster) PluginNetwork(_ context.Context, plugin string) (sandbox.Network, error) {
	c.cmu.Lock()
	defer c.cmu.Unlock()
	c.nets[plugin] = true
	return sandbox.Network{Name: "net-" + plugin, Gateway: netip.MustParseAddr("127.0.0.1")}, nil
}

func (c *fakeCluster) RemovePluginNetwork(_ context.Context, plugin string) (string, error) {
	c.cmu.Lock()
	defer c.cmu.Unlock()
	delete(c.nets, plugin)
	return "", nil
}

func (c *fakeCluster) List(context.Context) ([]sandbox.Instance, error) {
	c.cmu.Lock()
	defer c.cmu.Unlock()
	var out []sandbox.Instance
	for _, s := range c.svcs {
		for _, t := range s.tasks {
			out = append(out, t.inst)
		}
	}
	return out, nil
}

func (c *fakeCluster) Inspect(_ context.Context, id string) (sandbox.Instance, error) {
	c.cmu.Lock()
	defer c.cmu.Unlock()
	for _, s := range c.svcs {
		for _, t := range s.tasks {
			if t.inst.ID == id {
				return t.inst, nil
			}
		}
	}
	return sandbox.Instance{}, fmt.Errorf("task %s: %w", id, sandbox.ErrNotFound)
}

// crash makes the task of slot (1-based) die with code; the engine starts a new task in
// the slot (as Swarm's restart policy does) and the die event is returned.
func (c *fakeCluster) crash(plugin string, gen, slot, code int) sandbox.Event {
	c.cmu.Lock()
	defer c.cmu.Unlock()
	svc := c.svcs[unitKey{plugin, gen}]
	t := svc.tasks[slot]
	t.srv.Close()
	c.startTask(svc, slot)
	return sandbox.Event{Kind: sandbox.EventDie, InstanceID: t.inst.ID, Plugin: plugin, Generation: gen, ExitCode: code}
}

func (c *fakeCluster) snapshotState() (deploys, removed, scales, log []string, svcs int) {
	c.cmu.Lock()
	defer c.cmu.Unlock()
	return slices.Clone(c.deploys), slices.Clone(c.removed), slices.Clone(c.scales), slices.Clone(c.log), len(c.svcs)
}

var _ Cluster = (*fakeCluster)(nil)

func clusterPlugin(replicas int) *config.Plugin {
	p := testPlugin("web", "web:1")
	p.Supervisor.Replicas = replicas
	p.Supervisor.Restart.Attempts = 5
	return p
}

// served returns the task IDs that answered n requests through the proxy.
func served(t *testing.T, r *Runner, n int) map[string]int {
	t.Helper()
	out := map[string]int{}
	for range n {
		code, body := httpGet(t, "http://"+r.Addr().String()+"/plugins/web/")
		if code != 200 {
			t.Fatalf("GET: %d %q", code, body)
		}
		out[strings.Fields(body)[1]]++
	}
	return out
}

func readyIDs(r *Runner) []string {
	var ids []string
	for _, s := range r.Statuses() {
		for _, i := range s.Instances {
			if i.State == StateHealthy {
				ids = append(ids, i.Container)
			}
		}
	}
	sort.Strings(ids)
	return ids
}

// registryCluster is a cluster whose manager pulls from a real registry (registryFake's
// engine): the runner resolves the tag there, and the nodes get the digest-pinned
// reference.
type registryCluster struct {
	*fakeCluster
	rf *registryFake
}

func (c registryCluster) InspectImage(ctx context.Context, ref string) (sandbox.Image, error) {
	return c.rf.InspectImage(ctx, ref)
}

func (c registryCluster) Platform(ctx context.Context) (sandbox.Platform, error) {
	return c.rf.Platform(ctx)
}

func (c registryCluster) PullImage(ctx context.Context, ref string, auth sandbox.RegistryAuth, progress func(sandbox.PullProgress)) (sandbox.Image, error) {
	return c.rf.PullImage(ctx, ref, auth, progress)
}

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
	"github.com/xcore/runner/proxy"
	"github.com/xcore/runner/registry/registrytest"
	"github.com/xcore/runner/registry/remote"
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

func startCluster(t *testing.T, c *fakeCluster, cfg *config.Config) *Runner {
	t.Helper()
	r := New(Options{Config: cfg, Sandbox: c, Router: proxy.New(proxy.Options{})})
	t.Cleanup(func() { _ = r.Shutdown(context.Background()) })
	if err := r.Start(context.Background()); err != nil {
		t.Fatalf("Start: %v", err)
	}
	return r
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

// A generation is deployed once as a unit of its replicas; each slot takes one of its
// tasks (never the same as another slot); nothing is started one by one.
func TestClusterDeploysAGenerationOnce(t *testing.T) {
	c := newFakeCluster()
	c.images["web:1"] = "sha256:w"
	r := startCluster(t, c, testConfig(clusterPlugin(3)))
	deploys, _, _, _, _ := c.snapshotState()
	if !slices.Equal(deploys, []string{"web/1×3"}) {
		t.Fatalf("deploys = %q, want one deployment of 3", deploys)
	}
	if ids := readyIDs(r); len(ids) != 3 || slices.Compact(slices.Clone(ids))[2] == "" {
		t.Fatalf("ready instances = %q, want 3 distinct tasks", ids)
	}
	waitFor(t, "every task served", func() bool { return len(served(t, r, 12)) == 3 })
	if n := c.runCount(); n != 0 {
		t.Errorf("%d single-instance starts on a cluster", n)
	}
}

// A task that dies is the engine's to restart: the runner does not deploy anything, its
// slot takes the engine's new task, and the restart counts against the plugin's budget.
func TestClusterCrashTakesTheEnginesReplacement(t *testing.T) {
	c := newFakeCluster()
	c.images["web:1"] = "sha256:w"
	r := startCluster(t, c, testConfig(clusterPlugin(2)))
	before := readyIDs(r)
	c.events <- c.crash("web", 1, 1, 137)
	waitFor(t, "a new task serving in the slot", func() bool {
		ids := readyIDs(r)
		return len(ids) == 2 && !slices.Equal(ids, before)
	})
	deploys, removed, _, _, _ := c.snapshotState()
	if len(deploys) != 1 || len(removed) != 0 {
		t.Errorf("deploys %q removed %q after a crash, want the unit untouched", deploys, removed)
	}
	waitFor(t, "the restart counted", func() bool { return r.Statuses()[0].Restarts == 1 })
}

// A replacement deploys the new generation beside the old one and removes the old unit
// only once the new one serves; requests never fail meanwhile.
func TestClusterReplacesStartFirst(t *testing.T) {
	c := newFakeCluster()
	c.images["web:1"] = "sha256:w"
	c.images["web:2"] = "sha256:w2"
	r := startCluster(t, c, testConfig(clusterPlugin(2)))

	stop := make(chan struct{})
	var failures, total int
	var wg sync.WaitGroup
	wg.Go(func() {
		for {
			select {
			case <-stop:
				return
			default:
			}
			resp, err := http.Get("http://" + r.Addr().String() + "/plugins/web/")
			total++
			if err != nil || resp.StatusCode != 200 {
				failures++
			}
			if resp != nil {
				resp.Body.Close()
			}
		}
	})
	next := testConfig(clusterPlugin(2))
	next.Plugins["web"].Image = "web:2"
	r.mu.Lock()
	r.cfg = next
	r.mu.Unlock()
	r.Resync()
	waitFor(t, "generation 1 removed", func() bool { _, removed, _, _, _ := c.snapshotState(); return len(removed) == 1 })
	close(stop)
	wg.Wait()
	_, _, _, log, svcs := c.snapshotState()
	if !slices.Equal(log, []string{"deploy web/1", "deploy web/2", "remove web/1"}) || svcs != 1 {
		t.Errorf("engine log %q (%d services), want deploy 2 before remove 1", log, svcs)
	}
	if failures > 0 {
		t.Errorf("%d of %d requests failed across the replacement", failures, total)
	}
}

// A scale-down stops the tasks the ENGINE chooses (here the lowest slots): exactly those
// leave the route, no crash is counted, and the other slots keep their tasks.
func TestClusterScaleDownFollowsTheEngine(t *testing.T) {
	c := newFakeCluster()
	c.images["web:1"] = "sha256:w"
	r := startCluster(t, c, testConfig(clusterPlugin(3)))
	c.cmu.Lock()
	stopped := c.svcs[unitKey{"web", 1}].tasks[1].inst.ID
	c.cmu.Unlock()

	next := testConfig(clusterPlugin(1))
	r.mu.Lock()
	r.cfg = next
	r.mu.Unlock()
	r.Resync()
	waitFor(t, "one instance left", func() bool { return len(readyIDs(r)) == 1 && len(r.Statuses()[0].Instances) == 1 })
	if ids := readyIDs(r); slices.Contains(ids, stopped) {
		t.Errorf("ready %q still holds %s, the task the engine stopped", ids, stopped)
	}
	_, _, scales, _, _ := c.snapshotState()
	if !slices.Equal(scales, []string{"web/1→1"}) {
		t.Errorf("scales = %q", scales)
	}
	if st := r.Statuses()[0]; st.Restarts != 0 || st.State != StateHealthy {
		t.Errorf("after a scale-down: %+v", st)
	}
	waitFor(t, "every request served by the task left", func() bool { return len(served(t, r, 5)) == 1 })

	// And back up in place: new slots take the new tasks.
	r.mu.Lock()
	r.cfg = testConfig(clusterPlugin(3))
	r.mu.Unlock()
	r.Resync()
	waitFor(t, "three instances again", func() bool { return len(readyIDs(r)) == 3 })
	if deploys, _, _, _, _ := c.snapshotState(); len(deploys) != 1 {
		t.Errorf("deploys = %q, want the unit scaled in place", deploys)
	}
}

// While a scale-down is under way, the tasks the engine stops are gone from listings
// before it has said which they are: a pass meanwhile neither takes them for crashes
// (a clean exit would leave a slot given up and the plugin short of ready instances, as
// first seen on a real swarm) nor asks for the same scale again.
func TestClusterScaleDownRacesAPass(t *testing.T) {
	c := newFakeCluster()
	c.images["web:1"] = "sha256:w"
	r := startCluster(t, c, testConfig(clusterPlugin(3)))
	gate := make(chan struct{})
	c.cmu.Lock()
	c.scaleGate = gate
	c.cmu.Unlock()

	r.mu.Lock()
	r.cfg = testConfig(clusterPlugin(2))
	r.mu.Unlock()
	r.Resync()
	waitFor(t, "the scale asked of the engine", func() bool { _, _, scales, _, _ := c.snapshotState(); return len(scales) == 1 })
	if _, err := r.passNow(context.Background(), false); err != nil {
		t.Fatal(err)
	}
	r.mu.Lock()
	s := r.sups["web"]
	r.mu.Unlock()
	waitFor(t, "the pass decided on", s.caughtUp)
	close(gate)
	waitFor(t, "two instances ready", func() bool {
		st := r.Statuses()[0]
		return st.Ready == 2 && st.Replicas == 2 && len(st.Instances) == 2
	})
	if st := r.Statuses()[0]; st.Restarts != 0 || st.State != StateHealthy || st.LastExit != "" {
		t.Errorf("after a scale-down raced by a pass: %s, %d restarts, last exit %q", st.State, st.Restarts, st.LastExit)
	}
	if _, _, scales, _, _ := c.snapshotState(); !slices.Equal(scales, []string{"web/1→2"}) {
		t.Errorf("scales = %q, want one", scales)
	}
	waitFor(t, "both tasks left serving", func() bool { return len(served(t, r, 8)) == 2 })
}

// After a runner restart (kill -9), the generation found running is adopted: nothing
// deployed, nothing removed, its tasks serve.
func TestClusterAdoptsWhatRuns(t *testing.T) {
	c := newFakeCluster()
	c.images["web:1"] = "sha256:w"
	cfg := testConfig(clusterPlugin(2))
	first := New(Options{Config: cfg, Sandbox: c, Router: proxy.New(proxy.Options{}), Keep: true})
	if err := first.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	before := readyIDs(first)
	_ = first.Shutdown(context.Background()) // keep: the unit stays

	r := startCluster(t, c, cfg)
	if ids := readyIDs(r); !slices.Equal(ids, before) {
		t.Errorf("ready %q, want the adopted %q", ids, before)
	}
	deploys, removed, _, _, _ := c.snapshotState()
	if len(deploys) != 1 || len(removed) != 0 {
		t.Errorf("deploys %q removed %q, want nothing deployed or removed on adoption", deploys, removed)
	}
}

// Units nobody owns (an old generation, a plugin no longer configured) are removed at
// start-up; Shutdown removes the runner's units and networks.
func TestClusterSweepsOrphansAndShutsDown(t *testing.T) {
	c := newFakeCluster()
	c.images["web:1"] = "sha256:w"
	ctx := context.Background()
	_ = c.DeployGeneration(ctx, sandbox.Spec{Plugin: "gone", Generation: 4}, 1)
	r := New(Options{Config: testConfig(clusterPlugin(1)), Sandbox: c, Router: proxy.New(proxy.Options{})})
	if err := r.Start(ctx); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the orphan removed", func() bool {
		_, removed, _, _, _ := c.snapshotState()
		return slices.Contains(removed, "gone/4")
	})
	if err := r.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	if _, _, _, _, svcs := c.snapshotState(); svcs != 0 {
		t.Errorf("%d units left after Shutdown", svcs)
	}
}

// The plugin's restart budget still decides on a cluster: crashes past it fail the
// plugin (503), even though the engine keeps its own count.
func TestClusterRestartBudgetFailsThePlugin(t *testing.T) {
	c := newFakeCluster()
	c.images["web:1"] = "sha256:w"
	p := clusterPlugin(1)
	p.Supervisor.Restart.Attempts = 2
	r := startCluster(t, c, testConfig(p))
	c.events <- c.crash("web", 1, 1, 2)
	waitFor(t, "restarted once", func() bool { return r.Statuses()[0].Restarts == 1 && r.Statuses()[0].State == StateHealthy })
	c.events <- c.crash("web", 1, 1, 2)
	waitFor(t, "failed", func() bool { return r.Statuses()[0].State == StateFailed })
	if code, body := httpGet(t, "http://"+r.Addr().String()+"/plugins/web/"); code != 503 || !strings.Contains(body, "crashed 2 times") {
		t.Errorf("failed plugin answers %d %q", code, body)
	}
}

// A plugin that leaves the config drains, its units go, then its network.
func TestClusterPluginRemoved(t *testing.T) {
	c := newFakeCluster()
	c.images["web:1"] = "sha256:w"
	other := testPlugin("other", "web:1")
	r := startCluster(t, c, testConfig(clusterPlugin(2), other))
	c.cmu.Lock()
	joined := c.nets["web"] && c.nets["other"]
	c.cmu.Unlock()
	if !joined {
		t.Fatalf("networks joined: %v", c.nets)
	}
	r.mu.Lock()
	r.cfg = testConfig(other)
	r.mu.Unlock()
	r.Resync()
	waitFor(t, "web's unit and network removed", func() bool {
		c.cmu.Lock()
		defer c.cmu.Unlock()
		return c.svcs[unitKey{"web", 1}] == nil && !c.nets["web"] && c.nets["other"]
	})
	if code, _ := httpGet(t, "http://"+r.Addr().String()+"/plugins/web/"); code != 404 {
		t.Errorf("removed plugin answers %d", code)
	}
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

// On a cluster the nodes pull a registry image themselves: the unit is deployed with the
// tag pinned to the digest the runner resolved (every node runs the same image) and with
// the runner's credentials from its Docker config; a local image runs by ID, with none.
// Not parallel: it sets DOCKER_CONFIG.
func TestClusterNodesPullPinnedWithRunnerCredentials(t *testing.T) {
	const user, pass = "team", "Cluster-Pa55-77a1"
	reg := startRegistry(t)
	reg.RequireAuth(user, pass)
	ref := reg.Host + "/team/web:1.4"
	digest := pushImage(t, ref, "v1", user, pass)
	dir := t.TempDir()
	t.Setenv("DOCKER_CONFIG", dir)
	if err := registrytest.WriteDockerConfig(dir, reg.Host, user, pass); err != nil {
		t.Fatal(err)
	}
	rf := newRegistryFake()
	c := newFakeCluster()
	c.fakeSandbox = rf.fakeSandbox
	rf.images["local:1"] = "sha256:local"
	web := clusterPlugin(2)
	web.Image = ref
	local := testPlugin("local", "local:1")
	local.Pull = config.PullNever
	r := New(Options{Config: testConfig(web, local), Sandbox: registryCluster{c, rf}, Router: proxy.New(proxy.Options{}), Registry: remote.New(remote.Options{})})
	t.Cleanup(func() { _ = r.Shutdown(context.Background()) })
	if err := r.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "web serving", func() bool { return len(served(t, r, 4)) > 0 })

	c.cmu.Lock()
	w, l := c.svcs[unitKey{"web", 1}], c.svcs[unitKey{"local", 1}]
	c.cmu.Unlock()
	if w == nil || l == nil {
		t.Fatalf("units: web %v, local %v", w != nil, l != nil)
	}
	if want := reg.Host + "/team/web@" + digest; w.spec.ImagePinned != want {
		t.Errorf("web deployed as %q, want %q", w.spec.ImagePinned, want)
	}
	if a := w.spec.RegistryAuth; a == nil || a.Username != user || a.Password != pass || a.ServerAddress != reg.Host {
		t.Errorf("web deployed with credentials for %v, want the runner's for %s", a != nil, reg.Host)
	}
	if l.spec.ImagePinned != "" || l.spec.RegistryAuth != nil || l.spec.ImageID != "sha256:local" {
		t.Errorf("local deployed as %q (ID %q) with credentials %v, want its ID and none", l.spec.ImagePinned, l.spec.ImageID, l.spec.RegistryAuth != nil)
	}
}

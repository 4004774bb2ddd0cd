package runner

import (
	"context"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/xcore/runner/config"
	"github.com/xcore/runner/proxy"
	"github.com/xcore/runner/registry/registrytest"
	"github.com/xcore/runner/registry/remote"
	"github.com/xcore/runner/sandbox"
)

// A generation is deployed once as a unit of its replicas; each slot takes one of its
// tasks (never the same as another slot); nothing is started one by one.
func TestClusterDeploysAGenerationOnce(t *testing.T) {
	c := newFakeCluster()
	c.images["web:1"] = "sha256:w"
	r := startTest(t, c, testConfig(clusterPlugin(3)))
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
	r := startTest(t, c, testConfig(clusterPlugin(2)))
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
	r := startTest(t, c, testConfig(clusterPlugin(2)))

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
	r := startTest(t, c, testConfig(clusterPlugin(3)))
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
	r := startTest(t, c, testConfig(clusterPlugin(3)))
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

	r := startTest(t, c, cfg)
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
	r := startTest(t, c, testConfig(p))
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
	r := startTest(t, c, testConfig(clusterPlugin(2), other))
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
	r := startOpts(t, Options{Config: testConfig(web, local), Sandbox: registryCluster{c, rf}, Registry: remote.New(remote.Options{})})
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

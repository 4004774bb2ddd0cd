package runner

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/xcore/runner/config"
	"github.com/xcore/runner/sandbox"
)

// Cluster is what the runner uses of a backend whose engine runs a generation as one
// unit and restarts its instances itself (sandbox/swarm: a service of replicas tasks).
// When the Sandbox implements it, the runner deploys a generation once instead of
// starting instances one by one, and a slot is a seat: its "start" waits for one of the
// generation's running instances that no other slot holds and probes it; a crash waits
// for the engine's replacement (the plugin's restart budget still marks it failed); a
// scale changes the unit in place; a retired generation drains, then its unit goes.
type Cluster interface {
	// DeployGeneration creates the unit of spec's generation with replicas instances
	// (idempotent: an existing unit of that generation is kept, at replicas).
	DeployGeneration(ctx context.Context, spec sandbox.Spec, replicas int) error
	// ScaleGeneration sets the unit's number of instances; on a scale-down it returns the
	// instances the engine chose to stop.
	ScaleGeneration(ctx context.Context, plugin string, gen, replicas int) (stopping []string, err error)
	// RemoveGeneration removes the unit and with it its instances (gone: no error).
	RemoveGeneration(ctx context.Context, plugin string, gen int) error
	// Generations lists every unit of this runner, whatever its instances do.
	Generations(ctx context.Context) ([]sandbox.Deployment, error)
	// WaitInstance waits until an instance of the generation runs with an endpoint and
	// take accepts it, and returns it; ctx bounds the wait.
	WaitInstance(ctx context.Context, plugin string, gen int, take func(sandbox.Instance) bool) (sandbox.Instance, error)
	// PluginNetwork returns the plugin's network, created and joined by the runner if
	// need be: Gateway is the runner's address on it, where the sidecar listens for it.
	PluginNetwork(ctx context.Context, plugin string) (sandbox.Network, error)
	// RemovePluginNetwork removes it once the plugin is gone; kept says why not.
	RemovePluginNetwork(ctx context.Context, plugin string) (kept string, err error)
}

// clusterHold is the replica under which a deployed unit holds its generation's sidecar
// token: from its deployment to its removal, whatever its instances do (the engine
// starts new ones with the same token, in the unit's spec).
const clusterHold = -1

// taskWait bounds the wait for a running instance beyond the plugin's own start: a task
// may wait for a node, an image pull or the engine's restart delay.
const taskWait = 2 * time.Minute

// clusterState is the runner's bookkeeping of the units it deploys, shared by the
// supervisors' loops and the goroutines they start.
type clusterState struct {
	c Cluster

	mu    sync.Mutex
	units map[unitKey]*unit
}

type unitKey struct {
	plugin string
	gen    int
}

// unit is one generation on the cluster. deploy serialises its deployment: the first
// slot to start deploys it, the others wait; a failed deployment is tried again by the
// next start.
type unit struct {
	deploy   sync.Mutex
	deployed bool // under deploy
	want     int  // replicas wanted (under clusterState.mu)
	claimed  map[string]bool
	removing bool // loop-owned: its removal is under way
}

func newClusterState(sb Sandbox) *clusterState {
	c, ok := sb.(Cluster)
	if !ok {
		return nil
	}
	return &clusterState{c: c, units: map[unitKey]*unit{}}
}

// unit returns the unit of plugin's generation gen, creating its record.
func (cs *clusterState) unit(plugin string, gen int) *unit {
	cs.mu.Lock()
	defer cs.mu.Unlock()
	k := unitKey{plugin, gen}
	u := cs.units[k]
	if u == nil {
		u = &unit{claimed: map[string]bool{}}
		cs.units[k] = u
	}
	return u
}

func (cs *clusterState) lookup(plugin string, gen int) *unit {
	cs.mu.Lock()
	defer cs.mu.Unlock()
	return cs.units[unitKey{plugin, gen}]
}

func (cs *clusterState) forget(plugin string, gen int) {
	cs.mu.Lock()
	defer cs.mu.Unlock()
	delete(cs.units, unitKey{plugin, gen})
}

// claim takes instance id for a slot unless another slot holds it.
func (cs *clusterState) claim(u *unit, id string) bool {
	cs.mu.Lock()
	defer cs.mu.Unlock()
	if u.claimed[id] {
		return false
	}
	u.claimed[id] = true
	return true
}

// unclaim releases an instance a slot no longer holds: another slot may take it (a
// task found unhealthy that the engine still runs may come back in a new start).
func (cs *clusterState) unclaim(inst sandbox.Instance) {
	if cs == nil {
		return
	}
	cs.mu.Lock()
	defer cs.mu.Unlock()
	if u := cs.units[unitKey{inst.Plugin, inst.Generation}]; u != nil {
		delete(u.claimed, inst.ID)
	}
}

// startSlotInstance is a slot's start: a container created and probed, or on a cluster
// an instance of the deployed unit, waited for and probed.
func (r *Runner) startSlotInstance(ctx context.Context, spec sandbox.Spec, pc *config.Plugin, replicas int) (sandbox.Instance, error) {
	if r.cl == nil {
		return r.startInstance(ctx, spec, pc)
	}
	return r.startTask(ctx, spec, pc, replicas)
}

// startTask deploys spec's generation if no slot did yet, then takes a running instance
// of it that no other slot holds and waits until it answers its probe (start_timeout
// from running, as for a container). On failure nothing is removed: instances are the
// engine's, and the unit goes when its generation is retired.
func (r *Runner) startTask(ctx context.Context, spec sandbox.Spec, pc *config.Plugin, replicas int) (sandbox.Instance, error) {
	cs := r.cl
	u := cs.unit(spec.Plugin, spec.Generation)
	cs.mu.Lock()
	if u.want < replicas {
		u.want = replicas
	}
	cs.mu.Unlock()
	if err := r.deployUnit(ctx, u, spec); err != nil {
		return sandbox.Instance{}, err
	}
	wctx, cancel := context.WithTimeout(ctx, taskWait+pc.Supervisor.Restart.MaxBackoff)
	inst, err := cs.c.WaitInstance(wctx, spec.Plugin, spec.Generation, func(i sandbox.Instance) bool { return cs.claim(u, i.ID) })
	cancel()
	if err != nil {
		if ctx.Err() != nil {
			return sandbox.Instance{}, ctx.Err()
		}
		return sandbox.Instance{}, fmt.Errorf("start %s generation %d: %w", spec.Plugin, spec.Generation, err)
	}
	sctx, cancel := context.WithTimeout(ctx, pc.Supervisor.StartTimeout)
	defer cancel()
	if err := r.waitHealthy(sctx, inst, pc); err != nil {
		cs.unclaim(inst)
		if ctx.Err() != nil {
			return sandbox.Instance{}, ctx.Err()
		}
		return sandbox.Instance{}, fmt.Errorf("start %s: %w", inst.Name, err)
	}
	return inst, nil
}

// deployUnit deploys u once: its plugin's network joined and served by the sidecar, its
// token held for the unit's life, then the engine's unit created with the replicas
// wanted by then.
func (r *Runner) deployUnit(ctx context.Context, u *unit, spec sandbox.Spec) error {
	u.deploy.Lock()
	defer u.deploy.Unlock()
	if u.deployed {
		return nil
	}
	select {
	case r.engine <- struct{}{}:
	case <-ctx.Done():
		return ctx.Err()
	}
	defer func() { <-r.engine }()
	// Not cancelled midway: a create the client gave up on may still complete.
	dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Minute)
	defer cancel()
	if err := r.joinPluginNetwork(dctx, spec.Plugin); err != nil {
		return err
	}
	spec.Replica = clusterHold
	if err := r.sidecar.prepare(&spec); err != nil {
		r.sidecar.release(spec.Plugin, spec.Generation, clusterHold)
		return err
	}
	r.cl.mu.Lock()
	want := u.want
	r.cl.mu.Unlock()
	if spec.ImagePinned != "" {
		// The nodes pull the image, with the runner's credentials (Swarm hands them
		// to the nodes with the tasks), never with their own.
		auth, err := r.images.nodeAuth(dctx, spec.Image)
		if err != nil {
			r.sidecar.release(spec.Plugin, spec.Generation, clusterHold)
			return fmt.Errorf("deploy %s: %w", spec.Plugin, err)
		}
		spec.RegistryAuth = auth
	}
	if err := r.cl.c.DeployGeneration(dctx, spec, want); err != nil {
		r.sidecar.release(spec.Plugin, spec.Generation, clusterHold)
		return err
	}
	u.deployed = true
	r.log.Info("generation deployed", "plugin", spec.Plugin, "generation", spec.Generation, "replicas", want)
	return nil
}

// joinPluginNetwork makes sure plugin's network exists, the runner is on it and the
// sidecar listens on the runner's address there.
func (r *Runner) joinPluginNetwork(ctx context.Context, plugin string) error {
	n, err := r.cl.c.PluginNetwork(ctx, plugin)
	if err != nil {
		return err
	}
	return r.sidecar.listenOn(plugin, n.Gateway)
}

// joinPluginNetworks joins the networks of the configured plugins before the first
// pass: an instance a previous runner left is probed (and its services reached) there.
// Concurrently, start_concurrency at a time (joining an overlay took 7-12 s here). A
// network that cannot be joined now is only logged: that plugin's start tries again,
// and fails alone.
func (r *Runner) joinPluginNetworks(ctx context.Context, cfg *config.Config) {
	if r.cl == nil {
		return
	}
	var wg sync.WaitGroup
	for name := range cfg.Plugins {
		wg.Go(func() {
			select {
			case r.engine <- struct{}{}:
			case <-ctx.Done():
				return
			}
			defer func() { <-r.engine }()
			if err := r.joinPluginNetwork(ctx, name); err != nil {
				r.log.Error("join plugin network; its start tries again", "plugin", name, "err", err)
			}
		})
	}
	wg.Wait()
}

// adoptTask marks an instance a previous runner process left as held by its slot, and
// its unit as deployed, holding the generation's token.
func (r *Runner) adoptTask(inst sandbox.Instance) {
	if r.cl == nil {
		return
	}
	u := r.cl.unit(inst.Plugin, inst.Generation)
	r.cl.claim(u, inst.ID)
	u.deploy.Lock()
	if !u.deployed {
		u.deployed = true
		r.sidecar.hold(inst.Plugin, inst.Generation, clusterHold)
	}
	u.deploy.Unlock()
}

// removeUnit removes a retired generation's unit once its instances have drained (called
// when nothing else works on g); true while the removal is under way: it reports back
// and the generation is forgotten after it.
func (s *supervisor) removeUnit(g *generation) bool {
	cs := s.r.cl
	if cs == nil {
		return false
	}
	u := cs.lookup(s.name, g.num)
	if u == nil || u.removing {
		return false
	}
	u.removing = true
	plugin, gen := s.name, g.num
	s.goOp("remove generation", g, func() result {
		s.r.removeGeneration(plugin, gen)
		return result{kind: resGone, gen: g}
	})
	return true
}

// removeGeneration removes a unit (with a fresh context: cleanup must happen when the
// caller's context is what ended) and the token it held.
func (r *Runner) removeGeneration(plugin string, gen int) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := r.cl.c.RemoveGeneration(ctx, plugin, gen); err != nil {
		r.log.Error("remove generation; the next resync tries again", "plugin", plugin, "generation", gen, "err", err)
	} else {
		r.log.Info("generation removed", "plugin", plugin, "generation", gen)
	}
	r.cl.forget(plugin, gen)
	if r.sidecar != nil { // nil when Start failed before the services
		r.sidecar.release(plugin, gen, clusterHold)
	}
}

// scaleUnit changes the number of slots of g to n on a cluster (true: handled). New
// slots start at once and take the instances the engine adds; on a scale-down the
// engine chooses which instances stop, so slots leave when it has said which (onScaled).
func (s *supervisor) scaleUnit(g *generation, n int) bool {
	cs := s.r.cl
	if cs == nil {
		return false
	}
	from := len(g.slots)
	if from == n || g.scalingTo == n {
		return true // slots are seats: which indexes they have does not matter
	}
	g.scalingTo = n
	u := cs.unit(s.name, g.num)
	cs.mu.Lock()
	u.want = n
	cs.mu.Unlock()
	for i := 0; len(g.slots) < n; i++ {
		if g.slotByIndex(i) == nil {
			sl := &slot{idx: i}
			g.slots = append(g.slots, sl)
			if s.failReason == "" {
				s.startSlot(g, sl)
			}
		}
	}
	plugin, gen := s.name, g.num
	s.goOp("scale", g, func() result {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		stopping, err := cs.c.ScaleGeneration(ctx, plugin, gen, n)
		return result{kind: resScaled, gen: g, ids: stopping, err: err, n: n}
	})
	s.r.log.Info("scaling plugin", "plugin", s.name, "generation", g.num, "from", from, "to", n)
	return true
}

// onScaled applies a scale the engine made: the slots holding an instance it stops
// leave (their requests drain), then the highest slots until as many remain as wanted.
func (s *supervisor) onScaled(g *generation, res result) {
	if res.err != nil {
		s.r.log.Error("scale generation", "plugin", s.name, "generation", g.num, "err", res.err)
	}
	if g.scalingTo == res.n {
		g.scalingTo = 0 // else a later scale is under way
	}
	if g.gone {
		return
	}
	n := replicas(g.cfg)
	var kept, dropped []*slot
	for _, sl := range g.slots {
		if sl.inst != nil && slices.Contains(res.ids, sl.inst.ID) {
			dropped = append(dropped, sl)
		} else {
			kept = append(kept, sl)
		}
	}
	slices.SortFunc(kept, func(a, b *slot) int { return a.idx - b.idx })
	for len(kept) > n {
		dropped, kept = append(dropped, kept[len(kept)-1]), kept[:len(kept)-1]
	}
	if len(dropped) == 0 {
		return
	}
	g.slots = kept
	for _, sl := range dropped {
		s.dropSlot(g, sl)
	}
	s.r.log.Info("scaled plugin", "plugin", s.name, "generation", g.num, "to", len(kept))
	s.refresh()
}

// sweepUnits removes the units nobody owns: at start-up every one but those the plan
// keeps (adopts, scales or replaces), later those that no supervisor holds once they are
// older than orphanGrace (a unit being deployed is held by its supervisor anyway).
func (r *Runner) sweepUnits(ctx context.Context, plan Plan, at time.Time, first bool) {
	if r.cl == nil {
		return
	}
	deps, err := r.cl.c.Generations(ctx)
	if err != nil {
		r.log.Warn("list generations", "err", err)
		return
	}
	keep := map[unitKey]bool{}
	for _, op := range plan {
		if len(op.Current) > 0 && op.Action != ActionRemove {
			keep[unitKey{op.Plugin, op.Current[0].Generation}] = true
		}
	}
	for _, d := range deps {
		r.mu.Lock()
		holders := []*supervisor{r.sups[d.Plugin], r.retiring[d.Plugin]}
		r.mu.Unlock()
		held := (first && keep[unitKey{d.Plugin, d.Generation}]) || r.cl.lookup(d.Plugin, d.Generation) != nil
		for _, s := range holders {
			held = held || (s != nil && s.ownsGeneration(d.Generation))
		}
		if held || (!first && (d.Created.IsZero() || at.Sub(d.Created) < orphanGrace)) {
			continue
		}
		r.log.Info("removing generation nobody owns", "plugin", d.Plugin, "generation", d.Generation, "service", d.Name)
		r.owner.Go("remove orphan "+d.Name, func() { r.removeGeneration(d.Plugin, d.Generation) }, nil)
	}
}

// removeUnits removes every unit of this runner (Shutdown without keep).
func (r *Runner) removeUnits(ctx context.Context, errs *[]error) {
	if r.cl == nil {
		return
	}
	deps, err := r.cl.c.Generations(ctx)
	if err != nil {
		*errs = append(*errs, err)
		return
	}
	var wg sync.WaitGroup
	for _, d := range deps {
		wg.Go(func() { r.removeGeneration(d.Plugin, d.Generation) })
	}
	wg.Wait()
}

// pluginGone removes a removed plugin's network (and the sidecar's listener on it) once
// its supervisor is done, unless the plugin is back in the config meanwhile.
func (r *Runner) pluginGone(plugin string) {
	if r.cl == nil {
		return
	}
	r.mu.Lock()
	back := r.sups[plugin] != nil
	r.mu.Unlock()
	if back {
		return
	}
	r.sidecar.stopListening(plugin)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	kept, err := r.cl.c.RemovePluginNetwork(ctx, plugin)
	switch {
	case err != nil:
		r.log.Warn("remove plugin network", "plugin", plugin, "err", err)
	case kept != "":
		r.log.Warn("plugin network left behind", "plugin", plugin, "why", kept)
	}
}

package swarm

import (
	"fmt"
	"strconv"
	"time"

	"github.com/docker/go-units"
	"github.com/moby/moby/api/types/mount"
	"github.com/moby/moby/api/types/swarm"
	"github.com/moby/moby/client/pkg/versions"

	"github.com/xcore/runner/sandbox"
	"github.com/xcore/runner/sandbox/internal/engine"
)

// LabelPort is the plugin's port, on a service: a task's endpoint is its address on the
// plugin's network and this port, without decoding the spec label.
const LabelPort = sandbox.LabelPrefix + "port"

// SidecarAlias is the runner's name on every plugin network (a network alias of the
// runner's container): plugins reach the services sidecar at it. A name resolved by the
// network's DNS, not an /etc/hosts entry in the service: a runner container that comes
// back after a crash has another address, and tasks it adopts must still find it.
const SidecarAlias = "xcore.internal"

// ServiceName is the name of a plugin generation's service:
// xcore-<plugin>-<generation>-<runner id>. Service names are cluster-wide, hence the
// runner id; the config keeps plugin names short enough for the 63 characters a
// service name may have (config.MaxSwarmPluginName).
func ServiceName(runnerID, plugin string, generation int) string {
	return fmt.Sprintf("xcore-%s-%d-%s", plugin, generation, runnerID)
}

// PluginNetworkName is the attachable overlay network of one plugin:
// xcore-<plugin>-<runner id>. Overlays have no switch that stops the containers on one
// from talking to each other, so each plugin gets its own (all its generations share it):
// a plugin's tasks reach the runner and each other, never another plugin.
func PluginNetworkName(runnerID, plugin string) string {
	return fmt.Sprintf("xcore-%s-%s", plugin, runnerID)
}

// tmpfsSize bounds the writable /tmp of a read-only task, like the docker backend's.
const tmpfsSize = 64 * units.MiB

// logOptions: a chatty plugin must not fill a node's disk.
var logOptions = map[string]string{"max-size": "10m", "max-file": "3"}

// Gap is a promise of the plugin's supervisor block that the engine's API cannot carry
// into a service: reported by `runner up` and `runner validate --backend swarm`, never
// silently dropped.
type Gap struct {
	Setting string // what is not applied
	MinAPI  string // the first Engine API version that carries it ("" : no version does)
	Detail  string // what the operator can do about it
}

func (g Gap) String() string {
	if g.MinAPI == "" {
		return g.Setting + ": " + g.Detail
	}
	return fmt.Sprintf("%s: needs Engine API ≥ %s (%s)", g.Setting, g.MinAPI, g.Detail)
}

// Hardening fields a service carries only from some Engine API version on. The rest
// (cpus, memory, pids, cap_drop ALL, read_only + tmpfs /tmp, user, init) are in API 1.41
// (Engine 20.10), the oldest engine this backend supports.
var versioned = []Gap{
	{Setting: "no-new-privileges", MinAPI: "1.44", Detail: `Engine ≥ 25; on older engines set "no-new-privileges": true in every node's daemon.json`},
	{Setting: "no swap (memory_swap = memory)", MinAPI: "1.52", Detail: "Engine ≥ 29; older engines let a task swap up to its memory limit again where the node has swap: run nodes without swap"},
}

// Always lists what this backend never applies, whatever the engine.
var Always = []Gap{
	{Setting: "egress", Detail: "not enforced on a cluster: a plugin's tasks reach what their node reaches through docker_gwbridge"},
	{Setting: "protect_host", Detail: "not enforced on a cluster: a task reaches the services of its node through docker_gwbridge; firewall the nodes"},
}

// Gaps lists the versioned hardening fields an engine with API version api (e.g. "1.41")
// does not apply; all of them when api is "".
func Gaps(api string) []Gap {
	var out []Gap
	for _, g := range versioned {
		if api == "" || versions.LessThan(api, g.MinAPI) {
			out = append(out, g)
		}
	}
	return out
}

// VersionedGaps is the whole table, for documentation and `runner validate`.
func VersionedGaps() []Gap { return append([]Gap(nil), versioned...) }

// serviceSpec is a pure function from a plugin generation's spec to the Swarm service
// that runs it with replicas tasks on the plugin network networkID, for an engine of API
// version api: every limit and hardening option lives here, table-tested without an
// engine. Nothing is published (no ingress, no VIP: dnsrr), and the runner reaches tasks
// by their addresses on the plugin network.
func serviceSpec(s sandbox.Spec, runnerID, networkID string, replicas int, api string) swarm.ServiceSpec {
	l := labels(s, runnerID)
	// Pinned registry images are pulled by the nodes; anything else is run by the ID the
	// manager resolved, which every node must have.
	image := s.ImagePinned
	if image == "" {
		image = s.ImageID
	}
	if image == "" {
		image = s.Image
	}
	init := true
	grace := max(s.StopTimeout, time.Second)
	cs := &swarm.ContainerSpec{
		Image:           image,
		Labels:          l,
		Env:             engine.Env(s.Env),
		User:            s.User,
		Init:            &init, // reaps zombies and forwards SIGTERM for plugins that are PID 1 unawares
		ReadOnly:        s.ReadOnly,
		StopGracePeriod: &grace,
		CapabilityDrop:  []string{"ALL"},
	}
	if len(s.Command) > 0 {
		// command replaces the image's entrypoint + cmd, as with the docker backend.
		cs.Command, cs.Args = s.Command[:1], s.Command[1:]
	}
	if s.ReadOnly {
		cs.Mounts = []mount.Mount{{Type: mount.TypeTmpfs, Target: "/tmp", TmpfsOptions: &mount.TmpfsOptions{SizeBytes: tmpfsSize, Mode: 0o1777}}}
	}
	if !versions.LessThan(api, "1.44") {
		cs.Privileges = &swarm.Privileges{NoNewPrivileges: true}
	}
	res := &swarm.ResourceRequirements{Limits: &swarm.Limit{NanoCPUs: int64(s.CPUs * 1e9), MemoryBytes: s.Memory, Pids: s.Pids}}
	if !versions.LessThan(api, "1.52") && s.Memory > 0 {
		none := int64(0)
		res.SwapBytes = &none
	}
	n := uint64(max(replicas, 0))
	spec := swarm.ServiceSpec{
		Annotations: swarm.Annotations{Name: ServiceName(runnerID, s.Plugin, s.Generation), Labels: l},
		TaskTemplate: swarm.TaskSpec{
			ContainerSpec: cs,
			Resources:     res,
			RestartPolicy: restartPolicy(s.Restart),
			Networks:      []swarm.NetworkAttachmentConfig{{Target: networkID}},
			LogDriver:     &swarm.Driver{Name: "json-file", Options: logOptions},
		},
		Mode:         swarm.ServiceMode{Replicated: &swarm.ReplicatedService{Replicas: &n}},
		EndpointSpec: &swarm.EndpointSpec{Mode: swarm.ResolutionModeDNSRR},
	}
	if p := s.Placement; !p.IsZero() {
		spec.TaskTemplate.Placement = &swarm.Placement{Constraints: p.Constraints}
		if p.Spread != "" {
			spec.TaskTemplate.Placement.Preferences = []swarm.PlacementPreference{{Spread: &swarm.SpreadOver{SpreadDescriptor: p.Spread}}}
		}
	}
	return spec
}

// restartPolicy maps restart {} to Swarm's: Swarm restarts the tasks (the runner does not
// fight it), attempts-1 times within the window (attempts counts the first start too,
// as the runner's budget does), after delay each time (Swarm's delay is constant; the
// runner's backoff grows).
func restartPolicy(r sandbox.Restart) *swarm.RestartPolicy {
	p := &swarm.RestartPolicy{Condition: swarm.RestartPolicyConditionOnFailure}
	switch r.Policy {
	case "always":
		p.Condition = swarm.RestartPolicyConditionAny
	case "never":
		p.Condition = swarm.RestartPolicyConditionNone
		return p
	}
	if r.Attempts > 0 {
		n := uint64(r.Attempts - 1)
		if n == 0 { // Swarm reads 0 as "no limit"
			p.Condition = swarm.RestartPolicyConditionNone
			return p
		}
		p.MaxAttempts = &n
	}
	if r.Delay > 0 {
		d := r.Delay
		p.Delay = &d
	}
	if r.Window > 0 {
		w := r.Window
		p.Window = &w
	}
	return p
}

// labels are the docker backend's labels (a generation's, without a replica: a task's
// slot is its replica) plus the port.
func labels(s sandbox.Spec, runnerID string) map[string]string {
	l := engine.Labels(s, runnerID)
	l[LabelPort] = strconv.Itoa(s.Port)
	return l
}

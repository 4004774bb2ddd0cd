package sandbox

import (
	"fmt"
	"net/netip"
	"sort"
	"strconv"
	"time"

	"github.com/moby/moby/api/types/container"
	"github.com/moby/moby/api/types/mount"
	"github.com/moby/moby/api/types/network"
	"github.com/moby/moby/client"
)

// Network modes of a ContainerSpec.
const (
	NetworkBridge = "bridge" // the runner's own bridge network
	NetworkNone   = "none"   // no network at all
)

// ContainerSpec is everything one plugin container is made of. The runner fills it from
// the config; createOptions turns it into a Docker request.
type ContainerSpec struct {
	Plugin     string
	Generation int
	Image      string // reference as configured, for humans
	ImageID    string // resolved ID: what the container is created from
	Snapshot   string // hash of the spec, as a label
	SpecLabel  string // snapshot encoding of the spec, as a label (no secret values)
	Command    []string
	Env        map[string]string
	Port       int  // the port the plugin serves HTTP on inside the container
	Publish    bool // publish Port on 127.0.0.1 (ephemeral host port)

	CPUs        float64
	Memory      int64 // bytes; swap is disabled (MemorySwap = Memory)
	Pids        int64
	Network     string // NetworkBridge | NetworkNone
	ReadOnly    bool
	User        string
	Runtime     string // optional OCI runtime ("runsc")
	StopTimeout time.Duration

	// ExtraHosts are /etc/hosts entries ("xcore.internal:172.18.0.1"): how a plugin on
	// the runner network finds the runner's sidecar.
	ExtraHosts []string
	// RunDir, for NetworkNone, is the host folder mounted at /run/xcore: the plugin
	// serves HTTP on plugin.sock there and reaches its services on services.sock. It is
	// the only host path ever mounted into a plugin.
	RunDir string
}

// RunDirTarget is where RunDir appears inside the container.
const RunDirTarget = "/run/xcore"

// ContainerName is the deterministic name of a plugin container:
// xcore-<plugin>-<generation>-<runner id>. Container names are global to the engine, so
// the runner id is part of it: two runners on one host (or two test suites) may both run
// a plugin called "hello".
func ContainerName(runnerID, plugin string, generation int) string {
	return fmt.Sprintf("xcore-%s-%d-%s", plugin, generation, runnerID)
}

// tmpfsOptions: a writable /tmp on a read-only root, without exec or setuid.
const tmpfsOptions = "rw,noexec,nosuid,nodev,size=64m"

// loopback is the only host address plugin ports are ever published on.
var loopback = netip.MustParseAddr("127.0.0.1")

// createOptions is a pure function from spec to the Docker create request: every limit and
// hardening option lives here, so it is table-tested without an engine.
func createOptions(s ContainerSpec, runnerID, networkName string) client.ContainerCreateOptions {
	port := network.MustParsePort(strconv.Itoa(s.Port) + "/tcp")
	stop := int(s.StopTimeout.Round(time.Second) / time.Second)
	if stop < 1 {
		stop = 1
	}
	pids := s.Pids

	cfg := &container.Config{
		Image:        s.ImageID,
		Cmd:          s.Command,
		Env:          envList(s.Env),
		User:         s.User,
		Labels:       labels(s, runnerID),
		ExposedPorts: network.PortSet{port: {}},
		StopTimeout:  &stop,
	}
	if len(s.Command) > 0 {
		// command replaces the image's entrypoint + cmd, like `command` in compose.
		cfg.Entrypoint = s.Command[:1]
		cfg.Cmd = s.Command[1:]
	}

	hc := &container.HostConfig{
		Resources: container.Resources{
			NanoCPUs:   int64(s.CPUs * 1e9),
			Memory:     s.Memory,
			MemorySwap: s.Memory, // equal to Memory: no swap
			PidsLimit:  &pids,
		},
		CapDrop:        []string{"ALL"},
		SecurityOpt:    []string{"no-new-privileges"},
		ReadonlyRootfs: s.ReadOnly,
		Privileged:     false,
		Runtime:        s.Runtime,
		RestartPolicy:  container.RestartPolicy{Name: container.RestartPolicyDisabled}, // the runner supervises
		LogConfig: container.LogConfig{Type: "json-file", Config: map[string]string{
			"max-size": "10m", "max-file": "3", // a chatty plugin must not fill the disk
		}},
	}
	if s.ReadOnly {
		hc.Tmpfs = map[string]string{"/tmp": tmpfsOptions}
	}

	var nc *network.NetworkingConfig
	switch s.Network {
	case NetworkNone:
		hc.NetworkMode = container.NetworkMode("none")
		if s.RunDir != "" {
			hc.Mounts = []mount.Mount{{Type: mount.TypeBind, Source: s.RunDir, Target: RunDirTarget}}
		}
	default:
		hc.NetworkMode = container.NetworkMode(networkName)
		nc = &network.NetworkingConfig{EndpointsConfig: map[string]*network.EndpointSettings{networkName: {}}}
		hc.ExtraHosts = s.ExtraHosts
		if s.Publish {
			hc.PortBindings = network.PortMap{port: {{HostIP: loopback, HostPort: ""}}}
		}
	}
	return client.ContainerCreateOptions{Name: ContainerName(runnerID, s.Plugin, s.Generation), Config: cfg, HostConfig: hc, NetworkingConfig: nc}
}

func labels(s ContainerSpec, runnerID string) map[string]string {
	return map[string]string{
		LabelRunner:     runnerID,
		LabelPlugin:     s.Plugin,
		LabelGeneration: strconv.Itoa(s.Generation),
		LabelSnapshot:   s.Snapshot,
		LabelImage:      s.ImageID,
		LabelSpec:       s.SpecLabel,
	}
}

// envList renders env sorted by name so the request is deterministic.
func envList(env map[string]string) []string {
	keys := make([]string, 0, len(env))
	for k := range env {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	out := make([]string, 0, len(keys))
	for _, k := range keys {
		out = append(out, k+"="+env[k])
	}
	return out
}

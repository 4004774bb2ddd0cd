package docker

import (
	"fmt"
	"net/netip"
	"strconv"
	"time"

	"github.com/moby/moby/api/types/container"
	"github.com/moby/moby/api/types/mount"
	"github.com/moby/moby/api/types/network"
	"github.com/moby/moby/client"

	"github.com/xcore/runner/sandbox"
	"github.com/xcore/runner/sandbox/internal/engine"
)

// ContainerName is the deterministic name of a plugin container:
// xcore-<plugin>-<generation>-<runner id> for the first instance of a generation,
// xcore-<plugin>-<generation>-<replica>-<runner id> for the others. Container names are
// global to the engine, so the runner id is part of it: two runners on one host (or two
// test suites) may both run a plugin called "hello".
func ContainerName(runnerID, plugin string, generation, replica int) string {
	if replica == 0 {
		return fmt.Sprintf("xcore-%s-%d-%s", plugin, generation, runnerID)
	}
	return fmt.Sprintf("xcore-%s-%d-%d-%s", plugin, generation, replica, runnerID)
}

// tmpfsOptions: a writable /tmp on a read-only root, without exec or setuid.
const tmpfsOptions = "rw,noexec,nosuid,nodev,size=64m"

// loopback is the only host address plugin ports are ever published on.
var loopback = netip.MustParseAddr("127.0.0.1")

// createOptions is a pure function from spec to the Docker create request: every limit and
// hardening option lives here, so it is table-tested without an engine.
func createOptions(s sandbox.Spec, runnerID, networkName string) client.ContainerCreateOptions {
	port := network.MustParsePort(strconv.Itoa(s.Port) + "/tcp")
	stop := int(s.StopTimeout.Round(time.Second) / time.Second)
	if stop < 1 {
		stop = 1
	}
	pids := s.Pids

	cfg := &container.Config{
		Image:        s.ImageID,
		Cmd:          s.Command,
		Env:          engine.Env(s.Env),
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
	case sandbox.NetworkNone:
		hc.NetworkMode = container.NetworkMode("none")
		if s.RunDir != "" {
			hc.Mounts = []mount.Mount{{Type: mount.TypeBind, Source: s.RunDir, Target: sandbox.SocketDir}}
		}
	default:
		hc.NetworkMode = container.NetworkMode(networkName)
		nc = &network.NetworkingConfig{EndpointsConfig: map[string]*network.EndpointSettings{networkName: {}}}
		if s.SidecarHost != "" && s.SidecarAddr.IsValid() {
			// An /etc/hosts entry: the sidecar listens on this network's gateway.
			// Docker's host-gateway would be docker0's address, another network.
			hc.ExtraHosts = []string{s.SidecarHost + ":" + s.SidecarAddr.String()}
		}
		if s.Publish {
			hc.PortBindings = network.PortMap{port: {{HostIP: loopback, HostPort: ""}}}
		}
	}
	return client.ContainerCreateOptions{Name: ContainerName(runnerID, s.Plugin, s.Generation, s.Replica), Config: cfg, HostConfig: hc, NetworkingConfig: nc}
}

func labels(s sandbox.Spec, runnerID string) map[string]string {
	l := engine.Labels(s, runnerID)
	if s.Replica > 0 {
		l[sandbox.LabelReplica] = strconv.Itoa(s.Replica)
	}
	return l
}

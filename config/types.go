// Package config owns plugins.hcl: parsing (hashicorp/hcl/v2 + gohcl), defaults and
// validation. It returns typed specs and hcl.Diagnostics that name file:line:col. It never
// touches Docker or the network.
package config

import (
	"net/netip"
	"strconv"
	"strings"
	"time"

	"github.com/hashicorp/hcl/v2"
)

// Config is the whole desired state read from plugins.hcl and plugins_dir/*.hcl.
type Config struct {
	Runner   Runner
	Services map[string]*Service // by name
	Plugins  map[string]*Plugin  // by name
	// Files lists every file read, in the order read (root first).
	Files []string
}

// Reach values: how the proxy dials a plugin.
const (
	ReachPublished = "published" // plugin port published on 127.0.0.1 (ephemeral)
	ReachAddress   = "address"   // dial the container's address on the runner network
)

// Backends: which engine runs the plugins.
const (
	BackendDocker = "docker" // containers on this host's Docker Engine
	BackendSwarm  = "swarm"  // services on a Docker Swarm cluster
)

// MaxSwarmPluginName bounds plugin names under the swarm backend: a generation's service
// is xcore-<plugin>-<generation>-<runner id>, and a service name has at most 63
// characters (room is left for a six-digit generation).
const MaxSwarmPluginName = 36

// Network values of a supervisor block.
const (
	NetworkBridge = "bridge"
	NetworkNone   = "none"
)

// Egress values of a supervisor block; a list of CIDR prefixes is the third form.
const (
	EgressAll  = "all"
	EgressNone = "none"
)

// Pull policies of a plugin image.
const (
	PullMissing = "missing" // pull when the engine does not have the image (default)
	PullAlways  = "always"  // pull at start and whenever the plugin is (re)configured
	PullNever   = "never"   // only a local image: nothing is pulled nor followed
)

// Restart policies.
const (
	RestartAlways    = "always"
	RestartOnFailure = "on-failure"
	RestartNever     = "never"
)

// Runner is the runner {} block. Relative paths are resolved against the directory of the
// root config file.
type Runner struct {
	Listen         string // default "127.0.0.1:8080"
	AdminListen    string // default "127.0.0.1:8081"
	AdminTokenFile string // default <state_dir>/admin.token
	StateDir       string // default ".runner"
	PluginsDir     string // default "plugins.d"
	Watch          bool   // default true
	Reach          string // default ReachPublished
	KeepOnExit     bool   // default false
	// TrustedProxies are the networks of reverse proxies in front of the runner: a
	// request whose direct peer is in one of them keeps its X-Forwarded-For (the peer is
	// appended), X-Forwarded-Proto and X-Forwarded-Host; from any other peer they are
	// replaced. Default empty: nothing is trusted. Each prefix is masked (no host bits).
	TrustedProxies []netip.Prefix
	// StartConcurrency caps the plugin containers being created and started at once
	// (default 8, 1..256). A plugin's start_timeout runs from when its turn comes.
	StartConcurrency int
	// ProtectHost (default true): plugins on the runner network reach the host only at
	// the sidecar. false turns the runner's host rules off knowingly (with a warning).
	ProtectHost bool
	// Backend is the engine that runs the plugins: BackendDocker (default) or
	// BackendSwarm.
	Backend string
	// RegistryPoll is how often a plugin image on a tag is checked in its registry
	// (one manifest HEAD) for a move; 0: never. Default 5m; a plugin may override it.
	RegistryPoll time.Duration
}

// Service is a service "name" {} block; exactly one of Builtin, URL or Env is its kind.
type Service struct {
	Name     string
	Builtin  string            // "kv"
	URL      string            // upstream the runner forwards to
	Headers  map[string]string // added by the runner on forwarded requests; secret
	Env      map[string]string // plain values injected into the plugin
	DefRange hcl.Range
}

// Plugin is a plugin "name" {} block with defaults applied.
type Plugin struct {
	Name  string
	Image string // image reference; empty when Build is set
	// Pull is PullMissing, PullAlways or PullNever (default PullMissing); images built
	// from a folder are never pulled.
	Pull string
	// RegistryPoll is how often the image's tag is checked in its registry for a move
	// (runner.registry_poll unless the plugin sets it); 0: never. A digest-pinned image
	// never moves.
	RegistryPoll time.Duration
	Build        string   // folder with a Dockerfile; resolved to an absolute path
	Port         int      // port the plugin serves HTTP on
	Command      []string // optional
	Env          map[string]string
	Services     []string
	Supervisor   Supervisor
	DefRange     hcl.Range // where the block is defined (file:line:col of `plugin "x"`)
}

// Supervisor holds a plugin's limits, timeouts, restart and health settings.
type Supervisor struct {
	CPUs      float64 // > 0
	Memory    int64   // bytes; memory_swap is set to the same (no swap)
	Pids      int64
	Network   string // NetworkBridge | NetworkNone
	ReadOnly  bool
	User      string
	AllowRoot bool
	Runtime   string // optional OCI runtime, e.g. "runsc"
	// Egress is where a bridge plugin may send what the host forwards. Enforced by the
	// runner's host rules per container address, not part of the container: it is not
	// in the snapshot, and changing it applies without a replacement.
	Egress Egress

	StartTimeout   time.Duration
	RequestTimeout time.Duration
	StopTimeout    time.Duration
	DrainTimeout   time.Duration
	MaxConcurrent  int
	MaxBody        int64 // bytes
	// Replicas is how many instances of the plugin run (1..64), balanced by the proxy.
	// Not in the snapshot: changing it scales the running generation in place.
	Replicas int
	// MaxResponseHeader bounds the plugin's response headers in bytes (runner-side,
	// not in the snapshot): above it the client gets 502.
	MaxResponseHeader int64

	Restart Restart
	Health  Health
	// Placement is where a cluster may run the plugin (backend "swarm"); the docker
	// backend ignores it (with a warning). Part of the snapshot under swarm: a change
	// is a new generation, started first.
	Placement Placement
}

// Placement is the placement {} block.
type Placement struct {
	Constraints []string // Swarm constraints, e.g. "node.labels.tier == plugins"
	Spread      string   // spread instances evenly over this node label, e.g. "node.labels.zone"
}

// Egress is supervisor.egress. The zero value is "all". Its fields match
// hostguard.Egress, so the Docker backend converts with hostguard.Egress(sup.Egress).
type Egress struct {
	Restrict bool           // false: "all", every destination
	Allow    []netip.Prefix // with Restrict: the only destinations; empty: "none"
}

// String is the setting as written: "all", "none" or the list.
func (e Egress) String() string {
	switch {
	case !e.Restrict:
		return EgressAll
	case len(e.Allow) == 0:
		return EgressNone
	}
	s := make([]string, len(e.Allow))
	for i, p := range e.Allow {
		s[i] = strconv.Quote(p.String())
	}
	return "[" + strings.Join(s, ", ") + "]"
}

// Restart is the restart {} block.
type Restart struct {
	Policy     string
	Attempts   int
	Window     time.Duration
	Backoff    time.Duration
	MaxBackoff time.Duration
}

// Health is the health {} block. An empty Path means a TCP connect probe.
type Health struct {
	Path     string
	Interval time.Duration
	Timeout  time.Duration
	Failures int
}

// Package sandbox is the seam between the runner and an engine that runs plugin
// instances: the types the two speak in (a plugin generation's instance spec, an
// instance, its endpoint, the engine's events) and the errors a backend reports. It
// imports no engine client. Each backend is a sub-package and the only importer of its
// engine's client: sandbox/docker runs instances as containers on this host's Docker
// Engine, sandbox/swarm runs each generation as a Swarm service on a cluster. What is
// engine-specific (port publishing and its userland proxy, /etc/hosts
// entries, bind mounts for unix sockets, the engine's error kinds and stop semantics,
// image names for builds) stays behind this seam.
package sandbox

import (
	"errors"
	"fmt"
	"net/netip"
	"time"
)

// Network modes of a Spec.
const (
	NetworkBridge = "bridge" // the runner's own network, shared by the plugins, no plugin-to-plugin traffic
	NetworkNone   = "none"   // no network at all: HTTP over a unix socket
)

// SocketDir is where a network = "none" plugin finds its sockets: it serves HTTP on
// SocketDir/plugin.sock and reaches its services on SocketDir/services.sock. It is part of
// what a plugin sees (its environment names these paths), so every backend honours it.
const SocketDir = "/run/xcore"

// Endpoint is where an instance serves HTTP, parsed once by the backend that knows it.
type Endpoint struct {
	Network string // "tcp" or "unix"
	Address string // host:port, or a socket path
	// Proxied: something between the runner and the plugin accepts connections on the
	// plugin's behalf (Docker's userland proxy for a published port does, even when
	// nothing listens behind it), so a connection alone does not prove the plugin
	// listens: a health check must get an HTTP answer.
	Proxied bool
}

// TCP is the endpoint host:port.
func TCP(hostport string) Endpoint { return Endpoint{Network: "tcp", Address: hostport} }

// Unix is the endpoint of a unix socket.
func Unix(path string) Endpoint { return Endpoint{Network: "unix", Address: path} }

// IsZero reports whether e names nothing.
func (e Endpoint) IsZero() bool { return e.Address == "" }

// String is host:port for TCP and unix:<path> for a socket: how logs and the admin API
// show an endpoint.
func (e Endpoint) String() string {
	if e.Network == "unix" {
		return "unix:" + e.Address
	}
	return e.Address
}

// Spec is everything one instance of a plugin generation is made of. The runner fills it
// from the config; a backend turns it into its engine's request.
type Spec struct {
	Plugin     string
	Generation int
	Replica    int    // the instance's slot in its generation, 0..replicas-1
	Image      string // reference as configured, for humans
	ImageID    string // resolved ID: what the instance is created from
	Snapshot   string // hash of the spec, as a label
	SpecLabel  string // snapshot encoding of the spec, as a label (no secret values)
	Command    []string
	Env        map[string]string
	Port       int  // the port the plugin serves HTTP on inside the instance
	Publish    bool // make Port reachable on the host's 127.0.0.1 (ephemeral port)

	CPUs        float64
	Memory      int64 // bytes; no swap
	Pids        int64
	Network     string // NetworkBridge | NetworkNone
	ReadOnly    bool
	User        string
	Runtime     string // optional OCI runtime ("runsc")
	StopTimeout time.Duration

	// SidecarHost resolves, inside a bridge instance, to SidecarAddr: where the runner's
	// services sidecar listens for it.
	SidecarHost string
	SidecarAddr netip.Addr
	// RunDir, for NetworkNone, is the runner's folder that the instance sees at
	// SocketDir. It is the only host path ever given to a plugin.
	RunDir string
	// Egress is where a NetworkBridge instance may send what the host forwards (see
	// Protection). A backend refuses to start an instance whose limit it cannot enforce.
	Egress Egress

	// Placement and Restart are for a backend whose engine places and restarts
	// instances itself (a cluster); a single-host backend ignores them.
	Placement Placement
	Restart   Restart
	// ImagePinned is a registry image as repo@sha256:…, for a backend whose nodes pull
	// the image themselves (a cluster): every node runs the same image, and a moved tag
	// is a new generation. "" for a local or built image (or pull = "never"): ImageID.
	ImagePinned string
	// RegistryAuth is what the nodes pull ImagePinned with (nil: anonymous).
	RegistryAuth *RegistryAuth
}

// Placement says where a cluster may run a plugin's instances.
type Placement struct {
	Constraints []string // e.g. "node.labels.tier == plugins"; all must hold
	Spread      string   // e.g. "node.labels.zone": spread instances evenly over its values
}

// IsZero reports whether p places nothing.
func (p Placement) IsZero() bool { return len(p.Constraints) == 0 && p.Spread == "" }

// Restart is the plugin's restart {} block for an engine that restarts instances itself.
type Restart struct {
	Policy   string // "always" | "on-failure" | "never"
	Attempts int    // within Window
	Window   time.Duration
	Delay    time.Duration // between restarts
}

// Deployment is one generation as a cluster runs it: a unit of Replicas instances that
// the engine keeps running (a Swarm service).
type Deployment struct {
	Name       string
	Plugin     string
	Generation int
	Replicas   int
	Created    time.Time
}

// Instance is what the runner needs to know of one running (or exited) instance.
type Instance struct {
	ID         string
	Name       string
	Plugin     string
	Generation int
	Replica    int
	Snapshot   string
	SpecLabel  string
	ImageID    string
	Created    time.Time
	Running    bool
	Status     string // "running", "exited", ...
	ExitCode   int
	OOMKilled  bool
	Error      string // the engine's error for the last start, if any
	// Endpoint is where the proxy and the health probes reach it; zero while the
	// instance has none (not running).
	Endpoint Endpoint
}

// ExitReason says why an instance that is not running stopped.
func (c Instance) ExitReason() string {
	switch {
	case c.OOMKilled:
		return fmt.Sprintf("container exited: OOM killed (exit code %d)", c.ExitCode)
	case c.Error != "":
		return fmt.Sprintf("container exited with code %d: %s", c.ExitCode, c.Error)
	default:
		return fmt.Sprintf("container exited with code %d", c.ExitCode)
	}
}

// Network is the runner's own network on the engine, or (on a cluster) a plugin's.
type Network struct {
	ID      string
	Name    string
	Gateway netip.Addr // the runner's address on it: where plugins reach the runner's sidecar
}

// EventKind says what an Event asks the runner to look at again. Events are level
// triggers: the runner re-observes, it never applies an event as a state change.
type EventKind int

const (
	// EventResync: the stream (re)connected. Anything may have changed while nobody
	// listened; re-list everything.
	EventResync EventKind = iota
	// EventImage: an image reference may resolve to another image now.
	EventImage
	// EventDie: one of this runner's instances exited (ExitCode set).
	EventDie
	// EventOOM: one of this runner's instances hit its memory limit.
	EventOOM
)

func (k EventKind) String() string {
	switch k {
	case EventResync:
		return "resync"
	case EventImage:
		return "image"
	case EventDie:
		return "die"
	case EventOOM:
		return "oom"
	}
	return fmt.Sprintf("EventKind(%d)", int(k))
}

// Event is one engine event relevant to this runner.
type Event struct {
	Kind       EventKind
	InstanceID string // EventDie, EventOOM
	Plugin     string // instance events
	Generation int    // instance events (0 if unknown)
	ExitCode   int    // EventDie: the engine's exit code (-1 if it sent none)
	Image      string // EventImage: the reference or image ID the event names
	// EngineStopped (EventResync after a reconnection) is the moment from which deaths
	// may have been the engine's doing rather than the plugins': an engine that stops
	// stops its instances first. Zero when the stream connected for the first time.
	EngineStopped time.Time
}

// Errors a backend reports, wrapped with context.
var (
	// ErrUnavailable: the engine cannot be reached.
	ErrUnavailable = errors.New("engine unavailable")
	// ErrNotFound: the instance or image does not exist.
	ErrNotFound = errors.New("not found")
)

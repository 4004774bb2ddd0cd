// Package swarm is the sandbox backend for a Docker Swarm cluster, and with sandbox/docker
// the only importer of the Docker client. Each plugin generation is a Swarm service of
// replicas tasks (xcore-<plugin>-<generation>-<runner id>), limited and hardened as far as
// the engine's API allows (Gaps says what it does not), on an attachable overlay network
// of its own plugin (xcore-<plugin>-<runner id>), placed by the plugin's placement and
// restarted by Swarm under the plugin's restart policy. Nothing is published: the runner
// runs in a container on a manager, joins every plugin network (with the name
// xcore.internal, where plugins reach its services sidecar) and dials tasks at their
// addresses there — never a service VIP (IPVS keeps sending to stopping tasks,
// moby#38841, and some kernels have no IPVS at all).
//
// Engine API 1.41 has no task events: the backend watches service and image events and
// lists the runner's tasks every PollInterval (and at once after each change it makes);
// a task that stops on its own becomes an EventDie.
package swarm

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"strings"
	"sync"
	"time"

	cerrdefs "github.com/containerd/errdefs"
	"github.com/moby/moby/api/types/swarm"
	"github.com/moby/moby/client"

	"github.com/xcore/runner/sandbox"
)

// callTimeout bounds every engine call but streams.
const callTimeout = 30 * time.Second

// PollInterval is how often the runner's tasks are listed while nothing changes. Each
// poll is two requests to the manager (services by label, their tasks); measured idle
// cost in the README.
const PollInterval = 2 * time.Second

// Options configures a Client.
type Options struct {
	// Self is the runner's own container on the manager ("" : found from the host name,
	// which Docker sets to the container's short ID). Needed to run plugins (the runner
	// joins their networks), not to list or remove them (`runner plan`, `runner down`).
	Self string
	// NeedSelf: fail unless the runner runs in a container on this manager.
	NeedSelf bool
}

// Client manages the services and networks of one runner instance on a swarm.
type Client struct {
	api      *client.Client
	runnerID string
	log      *slog.Logger
	version  string // the negotiated Engine API version
	self     string // the runner's container ID; "" outside a container

	kick chan struct{} // a change was made: poll now

	mu   sync.Mutex
	nets map[string]sandbox.Network // plugin → its network, once joined
	svcs map[string]swarm.Service   // service ID → service (labels; replicas do not matter here)
}

// New connects to the engine named by the DOCKER_* environment, checks that it is a
// swarm manager and, with o.NeedSelf, finds the runner's own container on it.
func New(ctx context.Context, runnerID string, log *slog.Logger, o Options) (*Client, error) {
	if log == nil {
		log = slog.Default()
	}
	api, err := client.New(client.FromEnv, client.WithUserAgent("xcore-runner"))
	if err != nil {
		return nil, fmt.Errorf("docker client: %w", err)
	}
	c := &Client{api: api, runnerID: runnerID, log: log, kick: make(chan struct{}, 1), nets: map[string]sandbox.Network{}, svcs: map[string]swarm.Service{}}
	if err := c.check(ctx, o); err != nil {
		_ = api.Close()
		return nil, err
	}
	return c, nil
}

func (c *Client) check(ctx context.Context, o Options) error {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if _, err := c.api.Ping(ctx, client.PingOptions{NegotiateAPIVersion: true}); err != nil {
		return fmt.Errorf("docker %w: %w", sandbox.ErrUnavailable, err)
	}
	c.version = c.api.ClientVersion()
	info, err := c.api.Info(ctx, client.InfoOptions{})
	if err != nil {
		return fmt.Errorf("docker info: %w", err)
	}
	if sw := info.Info.Swarm; sw.LocalNodeState != swarm.LocalNodeStateActive || !sw.ControlAvailable {
		return fmt.Errorf("backend swarm: this engine is not a swarm manager (swarm state %q); run `docker swarm init` or point DOCKER_HOST at a manager", sw.LocalNodeState)
	}
	self := o.Self
	if self == "" {
		self, _ = os.Hostname()
	}
	if self != "" {
		res, err := c.api.ContainerInspect(ctx, self, client.ContainerInspectOptions{})
		switch {
		case err == nil && res.Container.State != nil && res.Container.State.Running:
			c.self = res.Container.ID
		case err != nil && !cerrdefs.IsNotFound(err):
			return fmt.Errorf("inspect the runner's container %s: %w", self, err)
		}
	}
	if o.NeedSelf && c.self == "" {
		return fmt.Errorf("backend swarm: the runner must run in a container on a manager node, to join the plugins' networks "+
			"(no container %q on this engine); start it with `docker run` as the README's \"Running on a Swarm cluster\" shows", self)
	}
	return nil
}

// APIVersion is the Engine API version the client speaks with the manager.
func (c *Client) APIVersion() string { return c.version }

// Gaps lists the hardening promises this cluster's engine cannot keep (see Gap); the
// manager's API version stands for the cluster's: run every node on the same engine.
func (c *Client) Gaps() []Gap { return append(Gaps(c.version), Always...) }

// RunnerID is the instance id this client labels its objects with.
func (c *Client) RunnerID() string { return c.runnerID }

// NetworkName names the runner's networks for humans: one per plugin.
func (c *Client) NetworkName() string { return PluginNetworkName(c.runnerID, "*") }

// Close releases the client's connections.
func (c *Client) Close() error { return c.api.Close() }

// changed asks the poller to list tasks now.
func (c *Client) changed() {
	select {
	case c.kick <- struct{}{}:
	default:
	}
}

// ListenAddr maps a listen address of the runner block to one the runner can serve on in
// its container: the port published with `docker run -p` reaches the container's address
// on its own (non-plugin) network, so a loopback or wildcard host becomes that address.
// Not the wildcard: plugins would reach the proxy and the admin API through the runner's
// addresses on their networks. Other hosts are kept.
func (c *Client) ListenAddr(ctx context.Context, addr string) (string, error) {
	host, port, err := net.SplitHostPort(addr)
	if err != nil || c.self == "" {
		return addr, nil
	}
	if ip, err := netip.ParseAddr(host); host != "" && host != "localhost" && (err != nil || !(ip.IsLoopback() || ip.IsUnspecified())) {
		return addr, nil
	}
	front, err := c.frontAddr(ctx)
	if err != nil {
		return "", err
	}
	return net.JoinHostPort(front.String(), port), nil
}

// frontAddr is the runner container's IPv4 address on a network that is not one of this
// runner's plugin networks (the one `docker run` attached it to).
func (c *Client) frontAddr(ctx context.Context) (netip.Addr, error) {
	ctx, cancel := context.WithTimeout(ctx, callTimeout)
	defer cancel()
	res, err := c.api.ContainerInspect(ctx, c.self, client.ContainerInspectOptions{})
	if err != nil {
		return netip.Addr{}, fmt.Errorf("inspect the runner's container: %w", err)
	}
	if ns := res.Container.NetworkSettings; ns != nil {
		for name, ep := range ns.Networks {
			if ep == nil || !ep.IPAddress.Is4() || strings.HasPrefix(name, "xcore-") && strings.HasSuffix(name, "-"+c.runnerID) {
				continue
			}
			return ep.IPAddress, nil
		}
	}
	return netip.Addr{}, fmt.Errorf("the runner's container has no address of its own to listen on (run it on a bridge network, not --network host)")
}

// ignoreGone treats "already gone" as success: removals must be forgiving.
func ignoreGone(err error) error {
	if err == nil || cerrdefs.IsNotFound(err) {
		return nil
	}
	return err
}

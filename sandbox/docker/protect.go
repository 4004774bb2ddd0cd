package docker

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"net"
	"net/netip"
	"net/url"
	"slices"
	"strings"
	"sync"

	"github.com/moby/moby/api/types/network"
	"github.com/moby/moby/client"

	"github.com/xcore/runner/sandbox"
	"github.com/xcore/runner/sandbox/docker/hostguard"
)

// guard is this process's side of the runner's host rules: the installed table and
// which container each registered address belongs to. One lock for both, so that a
// registration and the removal of the same address never interleave.
type guard struct {
	mu      sync.Mutex
	tried   bool                      // Protect ran
	g       *hostguard.Guard          // nil: not installed
	why     string                    // why not, once Protect found the rules unavailable
	policy  map[string]sandbox.Egress // plugin → its latest policy (Protect, SetEgress)
	members map[netip.Addr]member     // registered addresses (unmapped)
}

// member is the container an address is registered for.
type member struct{ id, plugin string }

// bridgeNameOption names a network's Linux bridge when it was set at creation.
const bridgeNameOption = "com.docker.network.bridge.name"

// Protect installs the runner's host rules for its network (see hostguard): once the
// network exists and the sidecar listens, before any instance starts. This runner's
// running instances (a previous process's, to adopt) are registered in the same
// transaction with their plugin's policy; any other instance of it sends nothing through
// the host until it is removed. Where the rules cannot be installed (no CAP_NET_ADMIN,
// rootless Docker, Docker Desktop, a remote engine) Protected.Unavailable says why and
// the error is nil: the runner goes on and says so. An error is for what must stop it.
func (c *Client) Protect(ctx context.Context, p sandbox.Protection) (sandbox.Protected, error) {
	c.guard.mu.Lock()
	defer c.guard.mu.Unlock()
	c.guard.tried, c.guard.g, c.guard.why = true, nil, ""
	c.guard.policy = maps.Clone(p.Egress)
	c.guard.members = map[netip.Addr]member{}

	unavailable := func(ue *hostguard.UnavailableError) (sandbox.Protected, error) {
		c.guard.why = ue.Error()
		return sandbox.Protected{Unavailable: ue.Error()}, nil
	}
	reason, err := c.elsewhere(ctx)
	if err != nil {
		return sandbox.Protected{}, err
	}
	if reason != "" {
		return unavailable(hostguard.Unavailable(p.ProtectHost, reason))
	}
	netw, err := c.hostNetwork(ctx)
	if err != nil {
		return sandbox.Protected{}, err
	}
	initial, members, err := c.runningAddrs(ctx, p.Egress)
	if err != nil {
		return sandbox.Protected{}, err
	}
	g, err := hostguard.Install(ctx, hostguard.Config{
		RunnerID: c.runnerID, Network: netw, ProtectHost: p.ProtectHost, Sidecar: p.Sidecar, Egress: initial,
	})
	if ue := (*hostguard.UnavailableError)(nil); errors.As(err, &ue) {
		return unavailable(ue)
	}
	if err != nil {
		return sandbox.Protected{}, fmt.Errorf("host rules: %w", err)
	}
	c.guard.g, c.guard.members = g, members
	c.log.Debug("host rules installed", "rules", "nftables table "+g.Table(), "bridge", netw.Bridge,
		"protect_host", p.ProtectHost, "sidecar", fmt.Sprint(p.Sidecar), "adopted_addresses", len(members))
	return sandbox.Protected{Host: p.ProtectHost, Egress: true, Rules: "nftables table " + g.Table()}, nil
}

// SetEgress makes plugins the policy of every configured plugin (a reload): the
// instances that run get their plugin's new policy at once, in place; the instances
// started from now on get it too, whatever their Spec says. A plugin missing from
// plugins (removed from the config) keeps what its instances have until they go.
func (c *Client) SetEgress(ctx context.Context, plugins map[string]sandbox.Egress) error {
	c.guard.mu.Lock()
	defer c.guard.mu.Unlock()
	c.guard.policy = maps.Clone(plugins)
	if c.guard.g == nil {
		return nil // nothing installed: restricted plugins are refused at start (admit)
	}
	var errs []error
	for addr, m := range c.guard.members {
		e, ok := plugins[m.plugin]
		if !ok {
			continue
		}
		// The guard skips an address whose policy is the same already (no netlink).
		if err := c.guard.g.SetEgress(ctx, addr, hostguard.Egress(e)); err != nil {
			errs = append(errs, fmt.Errorf("egress of plugin %s: %w", m.plugin, err))
		}
	}
	return errors.Join(errs...)
}

// Unprotect removes the runner's host rules: the ones this process installed, or —
// when it installed none, as `runner down` after a crash — the table a previous runner
// of the same id left. removed says whether there was one. After Protect found the
// rules unavailable there is nothing of ours to remove and nothing is tried.
func (c *Client) Unprotect(ctx context.Context) (removed bool, err error) {
	c.guard.mu.Lock()
	defer c.guard.mu.Unlock()
	if g := c.guard.g; g != nil {
		c.guard.g, c.guard.members = nil, map[netip.Addr]member{}
		if err := g.Uninstall(ctx); err != nil {
			return false, fmt.Errorf("remove host rules: %w", err)
		}
		return true, nil
	}
	if c.guard.tried {
		return false, nil
	}
	reason, err := c.elsewhere(ctx)
	if err != nil || reason != "" {
		return false, err // rules for this engine's containers are not on this host
	}
	return hostguard.Remove(ctx, c.runnerID)
}

// HostRules names where the runner's host rules live, for humans.
func (c *Client) HostRules() string {
	return "nftables table inet " + hostguard.TableName(c.runnerID)
}

// egressOf is the policy an instance of spec gets: its plugin's latest, or its own.
// Under mu.
func (gd *guard) egressOf(spec sandbox.Spec) sandbox.Egress {
	if e, ok := gd.policy[spec.Plugin]; ok {
		return e
	}
	return spec.Egress
}

// refuse is why an instance with egress e cannot start while no rules are installed,
// or nil when it needs none. Under mu.
func (gd *guard) refuse(plugin string, e sandbox.Egress) error {
	if !e.Restrict {
		return nil
	}
	why := gd.why
	if why == "" {
		why = "the runner's host rules are not installed"
	}
	return fmt.Errorf("plugin %s: egress = %s cannot be enforced: %s", plugin, e, why)
}

// admissible refuses, before anything is created, an instance whose egress limit
// cannot be enforced.
func (c *Client) admissible(spec sandbox.Spec) error {
	if spec.Network == sandbox.NetworkNone {
		return nil
	}
	c.guard.mu.Lock()
	defer c.guard.mu.Unlock()
	if c.guard.g != nil {
		return nil
	}
	return c.guard.refuse(spec.Plugin, c.guard.egressOf(spec))
}

// admit registers the addresses of a started instance with its plugin's policy: until
// then the rules drop whatever it sends through the host (the start fails closed).
func (c *Client) admit(ctx context.Context, spec sandbox.Spec, id string, addrs []netip.Addr) error {
	c.guard.mu.Lock()
	defer c.guard.mu.Unlock()
	e := c.guard.egressOf(spec)
	if c.guard.g == nil {
		return c.guard.refuse(spec.Plugin, e)
	}
	if len(addrs) == 0 {
		return fmt.Errorf("no address on network %s to give egress = %s", c.NetworkName(), e)
	}
	for _, a := range addrs {
		if err := c.guard.g.SetEgress(ctx, a, hostguard.Egress(e)); err != nil {
			return fmt.Errorf("egress = %s: %w", e, err)
		}
		c.guard.members[a.Unmap()] = member{id: id, plugin: spec.Plugin}
	}
	return nil
}

// forget unregisters the addresses of container id (removed, or dead: the engine hands
// its address to the next container). An address another container holds by now is
// left alone.
func (c *Client) forget(ctx context.Context, id string) {
	c.guard.mu.Lock()
	defer c.guard.mu.Unlock()
	if c.guard.g == nil {
		return
	}
	for addr, m := range c.guard.members {
		if m.id != id {
			continue
		}
		delete(c.guard.members, addr)
		if err := c.guard.g.ClearEgress(ctx, addr); err != nil {
			c.log.Warn("unregister container address", "container", id, "addr", addr, "err", err)
		}
	}
}

// elsewhere says why this engine's containers are not on this host's netfilter, or ""
// when they are (as far as the engine tells).
func (c *Client) elsewhere(ctx context.Context) (string, error) {
	if remoteHost(c.api.DaemonHost()) {
		return hostguard.ReasonRemote, nil
	}
	ctx, cancel := context.WithTimeout(ctx, callTimeout)
	defer cancel()
	res, err := c.api.Info(ctx, client.InfoOptions{})
	if err != nil {
		return "", fmt.Errorf("engine info: %w", err)
	}
	return engineElsewhere(res.Info.SecurityOptions, res.Info.OperatingSystem), nil
}

// remoteHost reports whether the engine at host (DOCKER_HOST's form) runs on another
// machine: a TCP or SSH address that is not loopback.
func remoteHost(host string) bool {
	u, err := url.Parse(host)
	if err != nil {
		return false
	}
	switch u.Scheme {
	case "unix", "npipe", "fd", "":
		return false
	}
	name := u.Hostname()
	if name == "localhost" {
		return false
	}
	if ip := net.ParseIP(name); ip != nil && ip.IsLoopback() {
		return false
	}
	return true
}

// engineElsewhere reads the engine's info: rootless Docker lists "name=rootless" among
// its security options; Docker Desktop names itself as the operating system.
func engineElsewhere(securityOptions []string, operatingSystem string) string {
	for _, opt := range securityOptions {
		if slices.Contains(strings.Split(opt, ","), "name=rootless") {
			return hostguard.ReasonRootless
		}
	}
	if strings.HasPrefix(operatingSystem, "Docker Desktop") {
		return hostguard.ReasonDesktop
	}
	return ""
}

// hostNetwork is the runner's network as the host sees it: its bridge and subnets.
func (c *Client) hostNetwork(ctx context.Context) (hostguard.Network, error) {
	ctx, cancel := context.WithTimeout(ctx, callTimeout)
	defer cancel()
	res, err := c.api.NetworkInspect(ctx, c.NetworkName(), client.NetworkInspectOptions{})
	if err != nil {
		return hostguard.Network{}, fmt.Errorf("inspect network %s: %w", c.NetworkName(), err)
	}
	return guardNetwork(res.Network.ID, res.Network.Options, res.Network.IPAM.Config), nil
}

// guardNetwork: the bridge is the network's com.docker.network.bridge.name, else
// "br-" and the first 12 characters of its ID (how the bridge driver names it).
func guardNetwork(id string, options map[string]string, ipam []network.IPAMConfig) hostguard.Network {
	n := hostguard.Network{Bridge: options[bridgeNameOption]}
	if n.Bridge == "" {
		n.Bridge = "br-" + id[:min(12, len(id))]
	}
	for _, cfg := range ipam {
		if cfg.Subnet.IsValid() {
			n.Subnets = append(n.Subnets, cfg.Subnet)
		}
	}
	return n
}

// runningAddrs lists this runner's running containers on its network: the policy of
// each address whose plugin is configured, and who holds it.
func (c *Client) runningAddrs(ctx context.Context, policy map[string]sandbox.Egress) (map[netip.Addr]hostguard.Egress, map[netip.Addr]member, error) {
	ctx, cancel := context.WithTimeout(ctx, callTimeout)
	defer cancel()
	res, err := c.api.ContainerList(ctx, client.ContainerListOptions{
		Filters: client.Filters{}.Add("label", sandbox.LabelRunner+"="+c.runnerID),
	})
	if err != nil {
		return nil, nil, fmt.Errorf("list containers: %w", err)
	}
	egress, members := map[netip.Addr]hostguard.Egress{}, map[netip.Addr]member{}
	for _, s := range res.Items {
		plugin := s.Labels[sandbox.LabelPlugin]
		e, ok := policy[plugin]
		if !ok || s.NetworkSettings == nil {
			continue // not configured: sends nothing through the host until it is removed
		}
		for _, a := range endpointAddrs(s.NetworkSettings.Networks[c.NetworkName()]) {
			egress[a] = hostguard.Egress(e)
			members[a] = member{id: s.ID, plugin: plugin}
		}
	}
	return egress, members, nil
}

// endpointAddrs are a container's addresses on one network (IPv4, and IPv6 if any).
func endpointAddrs(ep *network.EndpointSettings) []netip.Addr {
	if ep == nil {
		return nil
	}
	var out []netip.Addr
	for _, a := range []netip.Addr{ep.IPAddress, ep.GlobalIPv6Address} {
		if a.IsValid() {
			out = append(out, a.Unmap())
		}
	}
	return out
}

package hostguard

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"regexp"
	"slices"
	"sync"
	"time"

	"github.com/google/nftables"
	"github.com/mdlayher/netlink"
)

// opTimeout bounds one netlink exchange when the context has no earlier deadline. A
// transaction takes a millisecond; this only keeps a wedged socket from hanging a caller.
const opTimeout = 10 * time.Second

// Network is the runner's plugin network as the host sees it.
type Network struct {
	// Bridge is the Linux interface of the network: "br-" + the first 12 characters of
	// the Docker network ID, unless the network sets com.docker.network.bridge.name.
	Bridge string
	// Subnets are the network's IPv4 and (if any) IPv6 subnets. SetEgress refuses an
	// address outside them: a rule for it would match none of the network's traffic.
	Subnets []netip.Prefix
}

// Config is what Install needs.
type Config struct {
	RunnerID string // names the table: inet xcore-<RunnerID>
	Network  Network
	// ProtectHost drops everything the network sends to the host but Sidecar and
	// replies to connections the host opened. False (runner { protect_host = false })
	// installs the egress rules only.
	ProtectHost bool
	// Sidecar lists the host's TCP endpoints plugins may reach: the runner's sidecar
	// on the network's gateway.
	Sidecar []netip.AddrPort
	// Egress is the policy of each container address already running (adopted after a
	// restart), installed in the same transaction as the table: no moment without it.
	// An address not listed (nor given a policy later by SetEgress) sends nothing
	// through the host: list every running container, with EgressAll if need be.
	Egress map[netip.Addr]Egress
}

// Option changes where the rules go.
type Option func(*options)

type options struct {
	netns    int
	hasNetNS bool
}

// WithNetNS programs the network namespace open at fd instead of the caller's (tests
// emulate a host in a namespace of their own). The caller keeps fd open while it uses
// the Guard.
func WithNetNS(fd int) Option {
	return func(o *options) { o.netns, o.hasNetNS = fd, true }
}

func newOptions(opts []Option) options {
	var o options
	for _, opt := range opts {
		opt(&o)
	}
	return o
}

// conn opens an nftables connection whose socket gives up at ctx's deadline (or
// opTimeout). Not a lasting one: each transaction dials its own socket, so a Guard holds
// no file descriptor between calls.
func (o options) conn(ctx context.Context) (*nftables.Conn, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	deadline := time.Now().Add(opTimeout)
	if d, ok := ctx.Deadline(); ok && d.Before(deadline) {
		deadline = d
	}
	copts := []nftables.ConnOption{nftables.WithSockOptions(func(c *netlink.Conn) error {
		return c.SetDeadline(deadline)
	})}
	if o.hasNetNS {
		copts = append(copts, nftables.WithNetNSFd(o.netns))
	}
	return nftables.New(copts...)
}

// runnerIDPattern keeps table names ours and printable; runner ids are 12 hex digits.
var runnerIDPattern = regexp.MustCompile(`^[A-Za-z0-9_-]{1,64}$`)

// TableName is the nftables table (family inet) that holds the rules of runnerID.
func TableName(runnerID string) string { return tablePrefix + runnerID }

func table(runnerID string) *nftables.Table {
	return &nftables.Table{Family: nftables.TableFamilyINet, Name: TableName(runnerID)}
}

// Guard is the installed table of one runner. Its methods are safe for concurrent use.
type Guard struct {
	cfg   Config
	opts  options
	table *nftables.Table
	sets  sets

	mu     sync.Mutex
	egress map[netip.Addr]egressElems // every registered address, "all" included
	closed bool
}

// ErrClosed is returned by a Guard's methods after Uninstall.
var ErrClosed = errors.New("host rules uninstalled")

// Install puts the runner's table in place, replacing in one transaction any table the
// same runner id left behind (a crash, kill -9): never two, never a moment without.
// It returns an *UnavailableError when netfilter cannot be programmed here, and a
// plain error for a Config that cannot be right.
func Install(ctx context.Context, cfg Config, opts ...Option) (*Guard, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	o := newOptions(opts)
	ok, err := linkExists(o, cfg.Network.Bridge)
	if err != nil {
		return nil, unavailable(cfg.ProtectHost, fmt.Errorf("look up interface %s: %w", cfg.Network.Bridge, err))
	}
	if !ok {
		return nil, &UnavailableError{HostProtection: cfg.ProtectHost, Reason: fmt.Sprintf(
			"the network's bridge %s is not an interface of this host: Docker runs elsewhere "+
				"(Docker Desktop's VM, rootless Docker's namespace or a remote engine)", cfg.Network.Bridge)}
	}

	initial := cfg.Egress
	cfg.Egress = nil // the Guard keeps its own state, not the caller's map
	g := &Guard{cfg: cfg, opts: o, table: table(cfg.RunnerID), egress: map[netip.Addr]egressElems{}}
	g.sets = newSets(g.table)
	for addr, e := range initial {
		el, err := elemsFor(addr.Unmap(), e)
		if err != nil {
			return nil, fmt.Errorf("egress for %s: %w", addr, err)
		}
		g.egress[el.addr] = el // keyed unmapped: ::ffff:a.b.c.d and a.b.c.d are one
	}
	elems := make([]egressElems, 0, len(g.egress))
	for _, el := range g.egress {
		elems = append(elems, el)
	}

	c, err := o.conn(ctx)
	if err != nil {
		return nil, unavailable(cfg.ProtectHost, err)
	}
	// add + delete + add: the delete cannot fail for a missing table, and the kernel
	// applies the batch as one, so packets see the old table or the new one.
	c.AddTable(g.table)
	c.DelTable(g.table)
	if err := writeTable(c, g.table, g.sets, cfg, elems); err != nil {
		return nil, err
	}
	if err := c.Flush(); err != nil {
		return nil, unavailable(cfg.ProtectHost, fmt.Errorf("install table inet %s: %w", g.table.Name, err))
	}
	return g, nil
}

func (cfg Config) validate() error {
	if !runnerIDPattern.MatchString(cfg.RunnerID) {
		return fmt.Errorf("runner id %q: want 1 to 64 letters, digits, '-' or '_'", cfg.RunnerID)
	}
	if b := cfg.Network.Bridge; b == "" || len(b) >= 16 {
		return fmt.Errorf("bridge %q: want an interface name of 1 to 15 bytes", b)
	}
	for _, p := range cfg.Network.Subnets {
		if !p.IsValid() {
			return fmt.Errorf("subnet %q is not valid", p)
		}
	}
	for _, ap := range cfg.Sidecar {
		if !ap.IsValid() || ap.Port() == 0 {
			return fmt.Errorf("sidecar %q: want an address and a port", ap)
		}
	}
	for addr := range cfg.Egress {
		if err := cfg.Network.check(addr); err != nil {
			return err
		}
	}
	return nil
}

// check refuses an address outside the network's subnets (when they are known).
func (n Network) check(addr netip.Addr) error {
	addr = addr.Unmap()
	if !addr.IsValid() {
		return errors.New("egress for an invalid address")
	}
	if len(n.Subnets) == 0 || slices.ContainsFunc(n.Subnets, func(p netip.Prefix) bool { return p.Contains(addr) }) {
		return nil
	}
	return fmt.Errorf("egress for %s: not on the network %s (%v)", addr, n.Bridge, n.Subnets)
}

// Table is the table's name as nft prints it, for logs: "inet xcore-<id>".
func (g *Guard) Table() string { return "inet " + g.table.Name }

// SetEgress makes e the policy of the container at addr, replacing what addr had, in
// one transaction, and registers addr: until then nothing it sends through the host
// passes (the start-up window fails closed). The backend calls it for each address
// (IPv4 and IPv6) of an instance as soon as it knows them, EgressAll included, and
// again with its new address after a restart.
func (g *Guard) SetEgress(ctx context.Context, addr netip.Addr, e Egress) error {
	if err := g.cfg.Network.check(addr); err != nil {
		return err
	}
	addr = addr.Unmap()
	next, err := elemsFor(addr, e)
	if err != nil {
		return fmt.Errorf("egress for %s: %w", addr, err)
	}
	return g.update(ctx, addr, &next)
}

// ClearEgress forgets the policy and the registration of addr (its container is
// gone): the address may be handed to another container, which must not inherit it,
// and sends nothing through the host until that container is registered.
func (g *Guard) ClearEgress(ctx context.Context, addr netip.Addr) error {
	addr = addr.Unmap()
	return g.update(ctx, addr, nil)
}

// update swaps addr's elements for next (nil: none) in one transaction.
func (g *Guard) update(ctx context.Context, addr netip.Addr, next *egressElems) error {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.closed {
		return ErrClosed
	}
	prev, had := g.egress[addr]
	if !had && next == nil {
		return nil
	}
	if had && next != nil && prev.restrict == next.restrict && slices.EqualFunc(prev.allow, next.allow, sameElem) {
		return nil
	}
	c, err := g.opts.conn(ctx)
	if err != nil {
		return err
	}
	// A policy that replaces another keeps the registration: no moment unregistered.
	if had {
		if err := prev.del(c, g.sets, next == nil); err != nil {
			return err
		}
	}
	if next != nil {
		if err := next.add(c, g.sets, !had); err != nil {
			return err
		}
	}
	if err := c.Flush(); err != nil {
		return fmt.Errorf("egress of %s in table inet %s: %w", addr, g.table.Name, err)
	}
	if next != nil {
		g.egress[addr] = *next
	} else {
		delete(g.egress, addr)
	}
	return nil
}

func sameElem(a, b nftables.SetElement) bool {
	return string(a.Key) == string(b.Key) && string(a.KeyEnd) == string(b.KeyEnd)
}

// Uninstall removes the table: the runner exits and its plugins with it. (A runner that
// leaves its plugins running for the next one to adopt keeps the table instead: the
// next Install replaces it.)
func (g *Guard) Uninstall(ctx context.Context) error {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.closed {
		return nil
	}
	if _, err := remove(ctx, g.opts, g.table); err != nil {
		return err
	}
	g.closed = true
	return nil
}

// Remove deletes the table of runnerID if there is one, and reports whether there was.
// It needs no Guard: `runner down` calls it for a runner that is gone (killed, crashed).
// It never touches a table that is not named after runnerID.
func Remove(ctx context.Context, runnerID string, opts ...Option) (bool, error) {
	if !runnerIDPattern.MatchString(runnerID) {
		return false, fmt.Errorf("runner id %q: want 1 to 64 letters, digits, '-' or '_'", runnerID)
	}
	return remove(ctx, newOptions(opts), table(runnerID))
}

func remove(ctx context.Context, o options, t *nftables.Table) (bool, error) {
	c, err := o.conn(ctx)
	if err != nil {
		return false, fmt.Errorf("remove table inet %s: %w", t.Name, err)
	}
	tables, err := c.ListTablesOfFamily(nftables.TableFamilyINet)
	if err != nil {
		return false, fmt.Errorf("remove table inet %s: %s: %w", t.Name, reason(err), err)
	}
	found := slices.ContainsFunc(tables, func(x *nftables.Table) bool { return x.Name == t.Name })
	if !found {
		return false, nil
	}
	// add + delete: no error if another process removed it in between.
	c.AddTable(t)
	c.DelTable(t)
	if err := c.Flush(); err != nil {
		return false, fmt.Errorf("remove table inet %s: %s: %w", t.Name, reason(err), err)
	}
	return true, nil
}

// Check tells, without installing anything, whether Install can work here: it runs the
// same kind of transaction on a throwaway table and deletes that table in the same
// batch, so nothing is left even for a moment. hostProtection picks the promise the
// error names. (Whether the network's bridge is on this host is Install's check: it
// needs the network.)
func Check(ctx context.Context, hostProtection bool, opts ...Option) error {
	o := newOptions(opts)
	c, err := o.conn(ctx)
	if err != nil {
		return unavailable(hostProtection, err)
	}
	t := &nftables.Table{Family: nftables.TableFamilyINet, Name: probeTable}
	cfg := Config{
		Network:     Network{Bridge: "lo"},
		ProtectHost: true,
		Sidecar:     []netip.AddrPort{netip.MustParseAddrPort("127.0.0.1:1"), netip.MustParseAddrPort("[::1]:1")},
	}
	probe := []egressElems{}
	for _, a := range []string{"127.0.0.2", "::2"} {
		addr := netip.MustParseAddr(a)
		el, _ := elemsFor(addr, AllowOnly(netip.PrefixFrom(addr, addr.BitLen())))
		probe = append(probe, el)
	}
	c.AddTable(t)
	c.DelTable(t)
	if err := writeTable(c, t, newSets(t), cfg, probe); err != nil {
		return err
	}
	c.DelTable(t)
	if err := c.Flush(); err != nil {
		return unavailable(hostProtection, fmt.Errorf("probe table inet %s: %w", t.Name, err))
	}
	return nil
}

package hostguard

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"golang.org/x/sys/unix"
)

var ctx = context.Background()

// TestHostProtection: with the rules in place a plugin reaches the host only at the
// sidecar; the host still reaches the plugin; after Uninstall all is as before.
func TestHostProtection(t *testing.T) {
	t.Parallel()
	tp := newTopo(t)
	service := tp.listen(tp.host, "0.0.0.0:0") // a host service on every IPv4 address
	service6 := tp.listen(tp.host, "[::]:0")   // and on every IPv6 address
	sidecar := tp.listen(tp.host, tp.gw4.String()+":0")
	sidecar6 := tp.listen(tp.host, "["+tp.gw6.String()+"]:"+strconv.Itoa(sidecar))
	if sidecar6 != sidecar {
		t.Fatalf("sidecar ports differ: %d and %d", sidecar, sidecar6)
	}
	plugin := tp.listen(tp.c1, "0.0.0.0:0") // the plugin's own port

	// Without rules: the hole the issue is about.
	tp.reachable(tp.c1, ap(tp.gw4, service), "no rules: host service through the gateway")
	linkLocal := netip.AddrPortFrom(netip.MustParseAddr("fe80::213:1%eth0"), uint16(service6))
	tp.reachable(tp.c1, linkLocal, "no rules: host service at the gateway's link-local address")

	cfg := tp.config("t1", sidecar)
	cfg.Egress = map[netip.Addr]Egress{tp.c1v4: EgressAll, tp.c1v6: EgressAll, tp.c2v4: EgressAll}
	g := tp.install(cfg)
	table := TableName("t1")
	tp.blocked(tp.c1, ap(tp.gw4, service), table, "host service through the gateway")
	tp.blocked(tp.c1, ap(tp.hostOther, service), table, "host service on another host address")
	tp.blocked(tp.c1, ap(tp.gw6, service6), table, "host service over IPv6")
	tp.blocked(tp.c1, linkLocal, table, "host service at the gateway's link-local address")
	tp.blocked(tp.c2, ap(tp.gw4, service), table, "host service from a second container")
	tp.reachable(tp.c1, ap(tp.gw4, sidecar), "sidecar")
	tp.reachable(tp.c1, ap(tp.gw6, sidecar), "sidecar over IPv6")
	tp.reachable(tp.host, ap(tp.c1v4, plugin), "host → plugin (replies to the host's connection)")
	tp.reachable(tp.c1, ap(tp.far4a, tp.listen(tp.out, tp.far4a.String()+":0")), "egress all: elsewhere")

	if err := g.Uninstall(ctx); err != nil {
		t.Fatal(err)
	}
	if slices.Contains(tp.tables(), table) {
		t.Errorf("table %s still there after Uninstall", table)
	}
	tp.reachable(tp.c1, ap(tp.gw4, service), "after Uninstall: host service")
	if err := g.SetEgress(ctx, tp.c1v4, EgressNone); !errors.Is(err, ErrClosed) {
		t.Errorf("SetEgress after Uninstall = %v, want ErrClosed", err)
	}
}

// TestHostForwardedPort: a port the host forwards (DNAT) to somewhere else is a host
// service too; the DNAT happens before filtering, so the input hook never sees it.
func TestHostForwardedPort(t *testing.T) {
	t.Parallel()
	tp := newTopo(t)
	target := tp.listen(tp.out, tp.far4a.String()+":0")
	const published = 7777
	tp.dnat(published, ap(tp.far4a, target))
	tp.reachable(tp.c1, ap(tp.gw4, published), "no rules: forwarded host port")

	tp.install(tp.config("t2", 1))
	tp.blocked(tp.c1, ap(tp.gw4, published), TableName("t2"), "forwarded host port")
}

// dnat forwards TCP to the gateway's port on to, as `docker run -p` does without the
// userland proxy, in a table of the test's own.
func (tp *topo) dnat(port int, to netip.AddrPort) {
	tp.t.Helper()
	c, err := nftables.New(nftables.WithNetNSFd(tp.host.fd))
	if err != nil {
		tp.t.Fatal(err)
	}
	tbl := c.AddTable(&nftables.Table{Family: nftables.TableFamilyIPv4, Name: "test-nat"})
	ch := c.AddChain(&nftables.Chain{Name: "pre", Table: tbl, Type: nftables.ChainTypeNAT,
		Hooknum: nftables.ChainHookPrerouting, Priority: nftables.ChainPriorityNATDest})
	p := []byte{byte(port >> 8), byte(port)}
	tp2 := []byte{byte(to.Port() >> 8), byte(to.Port())}
	c.AddRule(&nftables.Rule{Table: tbl, Chain: ch, Exprs: []expr.Any{
		&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{unix.IPPROTO_TCP}},
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseTransportHeader, Offset: 2, Len: 2},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: p},
		&expr.Immediate{Register: 1, Data: to.Addr().AsSlice()},
		&expr.Immediate{Register: 2, Data: tp2},
		&expr.NAT{Type: expr.NATTypeDestNAT, Family: unix.NFPROTO_IPV4, RegAddrMin: 1, RegProtoMin: 2},
	}})
	if err := c.Flush(); err != nil {
		tp.t.Fatalf("add dnat: %v", err)
	}
}

// TestEgress: per-address policies, changed in place, for IPv4 and IPv6; a container
// without a policy is not affected; ClearEgress gives the address back its freedom.
func TestEgress(t *testing.T) {
	t.Parallel()
	tp := newTopo(t)
	sidecar := tp.listen(tp.host, tp.gw4.String()+":0")
	a := tp.listen(tp.out, "0.0.0.0:0") // on every address of O
	a6 := tp.listen(tp.out, "[::]:0")
	service := tp.listen(tp.host, "0.0.0.0:0")
	g := tp.install(tp.config("t3", sidecar))
	table := TableName("t3")
	for _, addr := range []netip.Addr{tp.c1v4, tp.c2v4} {
		if err := g.SetEgress(ctx, addr, EgressAll); err != nil {
			t.Fatal(err)
		}
	}

	tp.reachable(tp.c1, ap(tp.far4a, a), "egress all")
	if err := g.SetEgress(ctx, tp.c1v4, EgressNone); err != nil {
		t.Fatal(err)
	}
	if err := g.SetEgress(ctx, tp.c1v6, EgressNone); err != nil {
		t.Fatal(err)
	}
	tp.blocked(tp.c1, ap(tp.far4a, a), table, "egress none")
	tp.blocked(tp.c1, ap(tp.far6a, a6), table, "egress none over IPv6")
	tp.reachable(tp.c1, ap(tp.gw4, sidecar), "egress none: the sidecar")
	tp.reachable(tp.c2, ap(tp.far4a, a), "another container keeps egress all")

	allow := AllowOnly(netip.MustParsePrefix("10.214.0.0/24"), netip.MustParsePrefix("fd00:214::2/128"))
	if err := g.SetEgress(ctx, tp.c1v4, allow); err != nil {
		t.Fatal(err)
	}
	if err := g.SetEgress(ctx, tp.c1v6, allow); err != nil {
		t.Fatal(err)
	}
	tp.reachable(tp.c1, ap(tp.far4a, a), "CIDR list: inside")
	tp.blocked(tp.c1, ap(tp.far4b, a), table, "CIDR list: outside")
	tp.reachable(tp.c1, ap(tp.far6a, a6), "CIDR list over IPv6: inside")
	tp.blocked(tp.c1, ap(tp.far6b, a6), table, "CIDR list over IPv6: outside")
	tp.blocked(tp.c1, ap(tp.hostOther, service), table, "a CIDR list holding a host address opens no host port")

	// Overlapping prefixes: the kernel refuses overlapping intervals; the wider one is kept.
	overlap := AllowOnly(netip.MustParsePrefix("10.214.1.0/24"), netip.MustParsePrefix("10.214.0.0/16"))
	if err := g.SetEgress(ctx, tp.c1v4, overlap); err != nil {
		t.Fatalf("SetEgress with overlapping prefixes: %v", err)
	}
	tp.reachable(tp.c1, ap(tp.far4b, a), "overlapping CIDR list")

	if err := g.SetEgress(ctx, tp.c1v4, EgressAll); err != nil {
		t.Fatal(err)
	}
	tp.reachable(tp.c1, ap(tp.far4b, a), "back to egress all")
	if err := g.ClearEgress(ctx, tp.c1v4); err != nil {
		t.Fatal(err)
	}
	tp.blocked(tp.c1, ap(tp.far4b, a), table, "after ClearEgress: unregistered")
	if err := g.ClearEgress(ctx, tp.c1v4); err != nil {
		t.Errorf("ClearEgress twice: %v", err)
	}
	if err := g.SetEgress(ctx, netip.MustParseAddr("10.99.0.2"), EgressNone); err == nil {
		t.Error("SetEgress for an address off the network: no error")
	}
}

// TestUnregisteredFailsClosed: a container the backend has not registered yet (it
// started a moment ago) sends nothing through the host, whatever the host-protection
// setting; it reaches the sidecar, and the host reaches it. Registering it, "all"
// included, lets it out; unregistering shuts it again.
func TestUnregisteredFailsClosed(t *testing.T) {
	t.Parallel()
	for _, protect := range []bool{true, false} {
		t.Run(fmt.Sprintf("protect_host=%v", protect), func(t *testing.T) {
			t.Parallel()
			tp := newTopo(t)
			sidecar := tp.listen(tp.host, tp.gw4.String()+":0")
			far := tp.listen(tp.out, "0.0.0.0:0")
			far6 := tp.listen(tp.out, "[::]:0")
			plugin := tp.listen(tp.c1, "0.0.0.0:0")
			id := fmt.Sprintf("t8-%v", protect)
			cfg := tp.config(id, sidecar)
			cfg.ProtectHost = protect
			g := tp.install(cfg)
			table := TableName(id)

			tp.blocked(tp.c1, ap(tp.far4a, far), table, "unregistered: elsewhere")
			tp.blocked(tp.c1, ap(tp.far6a, far6), table, "unregistered: elsewhere over IPv6")
			tp.reachable(tp.host, ap(tp.c1v4, plugin), "unregistered: host → plugin")
			if protect {
				tp.reachable(tp.c1, ap(tp.gw4, sidecar), "unregistered: the sidecar")
			}

			if err := g.SetEgress(ctx, tp.c1v4, EgressAll); err != nil {
				t.Fatal(err)
			}
			tp.reachable(tp.c1, ap(tp.far4a, far), "registered with egress all")
			tp.blocked(tp.c1, ap(tp.far6a, far6), table, "the IPv6 address is registered on its own")
			tp.blocked(tp.c2, ap(tp.far4a, far), table, "another container stays unregistered")
			if err := g.ClearEgress(ctx, tp.c1v4); err != nil {
				t.Fatal(err)
			}
			tp.blocked(tp.c1, ap(tp.far4a, far), table, "unregistered again")
		})
	}
}

// TestEgressWithoutHostProtection: protect_host = false installs the egress rules only.
func TestEgressWithoutHostProtection(t *testing.T) {
	t.Parallel()
	tp := newTopo(t)
	service := tp.listen(tp.host, "0.0.0.0:0")
	far := tp.listen(tp.out, "0.0.0.0:0")
	cfg := tp.config("t4", 1)
	cfg.ProtectHost = false
	cfg.Egress = map[netip.Addr]Egress{tp.c1v4: EgressNone}
	tp.install(cfg)
	tp.reachable(tp.c1, ap(tp.gw4, service), "protect_host = false: host service")
	tp.blocked(tp.c1, ap(tp.far4a, far), TableName("t4"), "initial egress none")
}

// TestInstallReplaces: a runner killed with -9 leaves its table; the next Install
// replaces it (one table, the new policies only) and never touches a table not ours.
func TestInstallReplaces(t *testing.T) {
	t.Parallel()
	tp := newTopo(t)
	sidecar := tp.listen(tp.host, tp.gw4.String()+":0")
	far := tp.listen(tp.out, "0.0.0.0:0")
	tp.foreignTable("docker-like")

	cfg := tp.config("t5", sidecar)
	old := tp.install(cfg)
	if err := old.SetEgress(ctx, tp.c1v4, EgressNone); err != nil {
		t.Fatal(err)
	}
	rulesBefore := tp.ruleCount(TableName("t5"))
	// kill -9: old is never uninstalled. The restarted runner adopts c1 with egress all
	// and c2 with egress none.
	cfg.Egress = map[netip.Addr]Egress{tp.c1v4: EgressAll, tp.c2v4: EgressNone}
	g := tp.install(cfg)
	g = tp.install(cfg) // and once more, for good measure

	if got := count(tp.tables(), TableName("t5")); got != 1 {
		t.Errorf("tables named %s: %d, want 1 (all: %v)", TableName("t5"), got, tp.tables())
	}
	if got := tp.ruleCount(TableName("t5")); got != rulesBefore {
		t.Errorf("rules after reinstall: %d, want %d as after the first install", got, rulesBefore)
	}
	tp.reachable(tp.c1, ap(tp.far4a, far), "the dead runner's policy is gone")
	tp.blocked(tp.c2, ap(tp.far4a, far), TableName("t5"), "the adopted container's policy is there")

	// runner down, with no Guard.
	removed, err := Remove(ctx, "t5", WithNetNS(tp.host.fd))
	if err != nil || !removed {
		t.Errorf("Remove = %v, %v; want true, nil", removed, err)
	}
	removed, err = Remove(ctx, "t5", WithNetNS(tp.host.fd))
	if err != nil || removed {
		t.Errorf("Remove again = %v, %v; want false, nil", removed, err)
	}
	if err := g.Uninstall(ctx); err != nil {
		t.Errorf("Uninstall after Remove: %v", err)
	}
	if !slices.Contains(tp.tables(), "docker-like") {
		t.Errorf("a table not ours was removed: %v", tp.tables())
	}
	if got := tp.ruleCount("docker-like"); got != 1 {
		t.Errorf("a table not ours has %d rules, want its 1", got)
	}
}

// foreignTable adds an inet table with one rule, standing for someone else's rules.
func (tp *topo) foreignTable(name string) {
	tp.t.Helper()
	c, err := nftables.New(nftables.WithNetNSFd(tp.host.fd))
	if err != nil {
		tp.t.Fatal(err)
	}
	tbl := c.AddTable(&nftables.Table{Family: nftables.TableFamilyINet, Name: name})
	ch := c.AddChain(&nftables.Chain{Name: "c", Table: tbl})
	c.AddRule(&nftables.Rule{Table: tbl, Chain: ch, Exprs: []expr.Any{&expr.Counter{}}})
	if err := c.Flush(); err != nil {
		tp.t.Fatal(err)
	}
}

func (tp *topo) ruleCount(table string) int {
	tp.t.Helper()
	c, err := nftables.New(nftables.WithNetNSFd(tp.host.fd))
	if err != nil {
		tp.t.Fatal(err)
	}
	tbl := &nftables.Table{Family: nftables.TableFamilyINet, Name: table}
	chains, err := c.ListChainsOfTableFamily(nftables.TableFamilyINet)
	if err != nil {
		tp.t.Fatal(err)
	}
	n := 0
	for _, ch := range chains {
		if ch.Table.Name != table {
			continue
		}
		rules, err := c.GetRules(tbl, ch)
		if err != nil {
			tp.t.Fatal(err)
		}
		n += len(rules)
	}
	return n
}

func count(names []string, name string) int {
	n := 0
	for _, s := range names {
		if s == name {
			n++
		}
	}
	return n
}

// TestInstallMissingBridge: rules for a bridge that is not here would match nothing.
func TestInstallMissingBridge(t *testing.T) {
	t.Parallel()
	tp := newTopo(t)
	cfg := tp.config("t6", 1)
	cfg.Network.Bridge = "br-0123456789a"
	_, err := Install(ctx, cfg, WithNetNS(tp.host.fd))
	var ue *UnavailableError
	if !errors.As(err, &ue) || !strings.Contains(err.Error(), "br-0123456789a is not an interface of this host") {
		t.Errorf("Install with a missing bridge = %v, want an UnavailableError naming it", err)
	}
	if slices.Contains(tp.tables(), TableName("t6")) {
		t.Error("a table was installed for a missing bridge")
	}
}

// TestCheck: the probe works here and leaves nothing behind.
func TestCheck(t *testing.T) {
	t.Parallel()
	tp := newTopo(t)
	if err := Check(ctx, true, WithNetNS(tp.host.fd)); err != nil {
		t.Fatalf("Check: %v", err)
	}
	if ts := tp.tables(); len(ts) != 0 {
		t.Errorf("Check left tables: %v", ts)
	}
}

// TestUnprivileged: without CAP_NET_ADMIN over the host's network namespace, Check and
// Install say which promise cannot be kept and why. The test runs itself again in a
// user namespace of its own, where it is root but holds no capability over the host's
// network namespace.
func TestUnprivileged(t *testing.T) {
	if os.Getenv("HOSTGUARD_UNPRIVILEGED_CHILD") == "1" {
		unprivilegedChild(t)
		return
	}
	needRoot(t)
	t.Parallel()
	cmd := exec.Command(os.Args[0], "-test.run=^TestUnprivileged$", "-test.v")
	cmd.Env = append(os.Environ(), "HOSTGUARD_UNPRIVILEGED_CHILD=1")
	cmd.SysProcAttr = &syscall.SysProcAttr{
		Cloneflags:  syscall.CLONE_NEWUSER,
		UidMappings: []syscall.SysProcIDMap{{ContainerID: 0, HostID: 0, Size: 1}},
		GidMappings: []syscall.SysProcIDMap{{ContainerID: 0, HostID: 0, Size: 1}},
	}
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("child: %v\n%s", err, out)
	}
	t.Logf("child:\n%s", out)
}

func unprivilegedChild(t *testing.T) {
	err := Check(ctx, true)
	var ue *UnavailableError
	if !errors.As(err, &ue) || !ue.HostProtection {
		t.Fatalf("Check = %v, want an UnavailableError for host protection", err)
	}
	for _, want := range []string{"host protection unavailable", "CAP_NET_ADMIN", "listening on 0.0.0.0"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("Check error %q does not say %q", err, want)
		}
	}
	_, err = Install(ctx, Config{RunnerID: "unpriv", Network: Network{Bridge: "lo"}})
	if !errors.As(err, &ue) || ue.HostProtection || !strings.Contains(err.Error(), "egress limits unavailable") ||
		!strings.Contains(err.Error(), "CAP_NET_ADMIN") {
		t.Errorf("Install with protect_host = false = %v, want an egress UnavailableError naming CAP_NET_ADMIN", err)
	}
	t.Logf("Check: %v", Check(ctx, true))
	t.Logf("Install: %v", err)
}

// TestOtherFirewallsCannotOpen: Docker's rules live in iptables, which is nf_tables
// (iptables-nft, table ip filter) or the legacy xtables, depending on the host. An
// ACCEPT for the bridge in either, in INPUT and FORWARD (the DOCKER-USER position),
// opens nothing our table drops: a drop in any base chain of the hook is final.
func TestOtherFirewallsCannotOpen(t *testing.T) {
	t.Parallel()
	needRoot(t)
	for _, bin := range []string{"iptables-nft", "iptables-legacy", "ip6tables-nft", "ip6tables-legacy"} {
		if _, err := exec.LookPath(bin); err != nil {
			skipOutsideCI(t, fmt.Sprintf("needs %s: %v", bin, err))
		}
	}
	tp := newTopo(t)
	service := tp.listen(tp.host, "0.0.0.0:0")
	service6 := tp.listen(tp.host, "[::]:0")
	far := tp.listen(tp.out, "0.0.0.0:0")
	for _, bin := range []string{"iptables-nft", "iptables-legacy", "ip6tables-nft", "ip6tables-legacy"} {
		for _, chain := range []string{"INPUT", "FORWARD"} {
			args := []string{"netns", "exec", tp.host.name, bin, "-I", chain, "-i", tp.bridge, "-j", "ACCEPT"}
			if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
				t.Fatalf("%s: %v: %s", strings.Join(args, " "), err, out)
			}
		}
	}
	cfg := tp.config("t7", 1)
	cfg.Egress = map[netip.Addr]Egress{tp.c1v4: EgressNone}
	tp.install(cfg)
	table := TableName("t7")
	tp.blocked(tp.c1, ap(tp.gw4, service), table, "host service despite ACCEPTs in iptables-nft and -legacy")
	tp.blocked(tp.c1, ap(tp.gw6, service6), table, "IPv6 host service despite ACCEPTs in ip6tables-nft and -legacy")
	tp.blocked(tp.c1, ap(tp.far4a, far), table, "egress none despite FORWARD ACCEPTs")
}

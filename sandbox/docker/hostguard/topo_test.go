package hostguard

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
)

// A topology of namespaces of the test's own emulates a host and its plugin network:
//
//	host      (H)  br0: 10.213.0.1/24, fd00:213::1/64   (the plugin network's gateway)
//	               out0: 10.214.0.1/16, fd00:214::1/64  (a route to "elsewhere")
//	container (C1) eth0: 10.213.0.2/24, fd00:213::2/64 on br0, default via the gateway
//	container (C2) eth0: 10.213.0.3/24, fd00:213::3/64 on br0
//	elsewhere (O)  eth0: 10.214.0.2/16, 10.214.1.2/16, fd00:214::2/64, fd00:214::3/64
//
// H forwards between br0 and out0, as a Docker host forwards between a bridge and the
// world. No traffic leaves these namespaces.
type topo struct {
	t             *testing.T
	host, c1, c2  *netns
	out           *netns
	bridge        string
	gw4, gw6      netip.Addr // the host's addresses on br0
	hostOther     netip.Addr // another address of the host (out0)
	c1v4, c1v6    netip.Addr
	c2v4          netip.Addr
	far4a, far4b  netip.Addr // two addresses of O
	far6a, far6b  netip.Addr
	subnet4, sub6 netip.Prefix
}

type netns struct {
	name string
	fd   int
}

func (n *netns) opts() options { return options{netns: n.fd, hasNetNS: true} }

// needRoot skips a test that needs to create namespaces and program nf_tables, and
// fails it in CI, where a skip would count as a pass of host protection's tests.
func needRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		skipOutsideCI(t, "needs root: the test creates network namespaces and programs nf_tables in them")
	}
	if _, err := exec.LookPath("ip"); err != nil {
		skipOutsideCI(t, "needs iproute2's ip to build the test's network namespaces")
	}
}

// skipOutsideCI skips the test for why, or fails it when CI is set.
func skipOutsideCI(t *testing.T, why string) {
	t.Helper()
	if os.Getenv("CI") != "" {
		t.Fatal("CI is set: " + why)
	}
	t.Skip(why)
}

var (
	nsSeq   atomic.Int64
	swept   sync.Once
	nsOfPID = regexp.MustCompile(`^xhg(\d+)-\d+-`)
)

// sweep deletes the namespaces a killed test run left (its t.Cleanup never ran): ours by
// name, xhg<pid>-..., and only where that pid is gone.
func sweep(t *testing.T) {
	entries, _ := os.ReadDir("/var/run/netns")
	for _, e := range entries {
		m := nsOfPID.FindStringSubmatch(e.Name())
		if m == nil {
			continue
		}
		if pid, _ := strconv.Atoi(m[1]); pid == os.Getpid() || syscall.Kill(pid, 0) == nil {
			continue
		}
		if out, err := exec.Command("ip", "netns", "del", e.Name()).CombinedOutput(); err != nil {
			t.Logf("remove stale namespace %s: %v: %s", e.Name(), err, out)
		}
	}
}

func newTopo(t *testing.T) *topo {
	t.Helper()
	needRoot(t)
	swept.Do(func() { sweep(t) })
	prefix := fmt.Sprintf("xhg%d-%d", os.Getpid(), nsSeq.Add(1))
	tp := &topo{
		t:         t,
		bridge:    "br0",
		gw4:       netip.MustParseAddr("10.213.0.1"),
		gw6:       netip.MustParseAddr("fd00:213::1"),
		hostOther: netip.MustParseAddr("10.214.0.1"),
		c1v4:      netip.MustParseAddr("10.213.0.2"),
		c1v6:      netip.MustParseAddr("fd00:213::2"),
		c2v4:      netip.MustParseAddr("10.213.0.3"),
		far4a:     netip.MustParseAddr("10.214.0.2"),
		far4b:     netip.MustParseAddr("10.214.1.2"),
		far6a:     netip.MustParseAddr("fd00:214::2"),
		far6b:     netip.MustParseAddr("fd00:214::3"),
		subnet4:   netip.MustParsePrefix("10.213.0.0/24"),
		sub6:      netip.MustParsePrefix("fd00:213::/64"),
	}
	tp.host = tp.addNS(prefix + "-h")
	tp.c1 = tp.addNS(prefix + "-c1")
	tp.c2 = tp.addNS(prefix + "-c2")
	tp.out = tp.addNS(prefix + "-o")
	h, c1, c2, o := tp.host.name, tp.c1.name, tp.c2.name, tp.out.name
	tp.ip("-n", h, "link", "add", "br0", "type", "bridge")
	tp.ip("-n", h, "addr", "add", "10.213.0.1/24", "dev", "br0")
	tp.ip("-n", h, "addr", "add", "fd00:213::1/64", "dev", "br0", "nodad")
	tp.ip("-n", h, "addr", "add", "fe80::213:1/64", "dev", "br0", "nodad") // a link-local no subnet lists
	tp.ip("-n", h, "link", "set", "br0", "up")
	tp.sysctl(h, "net/ipv4/ip_forward", "1")
	tp.sysctl(h, "net/ipv6/conf/all/forwarding", "1")
	for _, c := range []struct{ ns, port, v4, v6 string }{
		{c1, "vc1", "10.213.0.2/24", "fd00:213::2/64"},
		{c2, "vc2", "10.213.0.3/24", "fd00:213::3/64"},
	} {
		tp.ip("-n", h, "link", "add", c.port, "type", "veth", "peer", "name", "eth0", "netns", c.ns)
		tp.ip("-n", h, "link", "set", c.port, "master", "br0", "up")
		tp.ip("-n", c.ns, "addr", "add", c.v4, "dev", "eth0")
		tp.ip("-n", c.ns, "addr", "add", c.v6, "dev", "eth0", "nodad")
		tp.ip("-n", c.ns, "link", "set", "eth0", "up")
		tp.ip("-n", c.ns, "route", "add", "default", "via", "10.213.0.1")
		tp.ip("-n", c.ns, "-6", "route", "add", "default", "via", "fd00:213::1")
	}
	tp.ip("-n", h, "link", "add", "out0", "type", "veth", "peer", "name", "eth0", "netns", o)
	tp.ip("-n", h, "addr", "add", "10.214.0.1/16", "dev", "out0")
	tp.ip("-n", h, "addr", "add", "fd00:214::1/64", "dev", "out0", "nodad")
	tp.ip("-n", h, "link", "set", "out0", "up")
	for _, a := range []string{"10.214.0.2/16", "10.214.1.2/16"} {
		tp.ip("-n", o, "addr", "add", a, "dev", "eth0")
	}
	for _, a := range []string{"fd00:214::2/64", "fd00:214::3/64"} {
		tp.ip("-n", o, "addr", "add", a, "dev", "eth0", "nodad")
	}
	tp.ip("-n", o, "link", "set", "eth0", "up")
	tp.ip("-n", o, "route", "add", "default", "via", "10.214.0.1")
	tp.ip("-n", o, "-6", "route", "add", "default", "via", "fd00:214::1")
	return tp
}

// addNS creates a namespace that is deleted (with its interfaces and tables) when the
// test ends, whatever happens.
func (tp *topo) addNS(name string) *netns {
	tp.t.Helper()
	tp.ip("netns", "add", name)
	// lo up: Go probes IPv6 support once per process by binding ::1, in whichever
	// namespace the first listener is made.
	tp.ip("-n", name, "link", "set", "lo", "up")
	tp.t.Cleanup(func() {
		if out, err := exec.Command("ip", "netns", "del", name).CombinedOutput(); err != nil {
			tp.t.Errorf("ip netns del %s: %v: %s", name, err, out)
		}
	})
	f, err := os.Open("/var/run/netns/" + name)
	if err != nil {
		tp.t.Fatal(err)
	}
	tp.t.Cleanup(func() { _ = f.Close() })
	return &netns{name: name, fd: int(f.Fd())}
}

func (tp *topo) ip(args ...string) {
	tp.t.Helper()
	if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
		tp.t.Fatalf("ip %s: %v: %s", strings.Join(args, " "), err, out)
	}
}

func (tp *topo) sysctl(ns, key, value string) {
	tp.t.Helper()
	err := inNetNS(options{netns: tp.nsByName(ns).fd, hasNetNS: true}, func() error {
		return os.WriteFile("/proc/sys/"+key, []byte(value), 0o644)
	})
	if err != nil {
		tp.t.Fatalf("sysctl %s in %s: %v", key, ns, err)
	}
}

func (tp *topo) nsByName(name string) *netns {
	for _, n := range []*netns{tp.host, tp.c1, tp.c2, tp.out} {
		if n != nil && n.name == name {
			return n
		}
	}
	tp.t.Fatalf("no namespace %s", name)
	return nil
}

// config is a Config for this topology: the sidecar on the gateway at sidecarPort.
func (tp *topo) config(runnerID string, sidecarPort int) Config {
	return Config{
		RunnerID:    runnerID,
		Network:     Network{Bridge: tp.bridge, Subnets: []netip.Prefix{tp.subnet4, tp.sub6}},
		ProtectHost: true,
		Sidecar: []netip.AddrPort{
			netip.AddrPortFrom(tp.gw4, uint16(sidecarPort)),
			netip.AddrPortFrom(tp.gw6, uint16(sidecarPort)),
		},
	}
}

func (tp *topo) install(cfg Config) *Guard {
	tp.t.Helper()
	g, err := Install(context.Background(), cfg, WithNetNS(tp.host.fd))
	if err != nil {
		tp.t.Fatalf("Install: %v", err)
	}
	return g
}

// listen serves TCP in ns on addr (host:0 picks a port): every connection is greeted
// with "hi\n", so a dial that reads it proves both directions work. It returns the port.
func (tp *topo) listen(ns *netns, addr string) int {
	tp.t.Helper()
	var ln net.Listener
	err := inNetNS(ns.opts(), func() error {
		network := "tcp4"
		if strings.HasPrefix(addr, "[") {
			network = "tcp6"
		}
		var err error
		ln, err = net.Listen(network, addr)
		return err
	})
	if err != nil {
		tp.t.Fatalf("listen on %s in %s: %v", addr, ns.name, err)
	}
	tp.t.Cleanup(func() { _ = ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			_, _ = c.Write([]byte("hi\n"))
			_ = c.Close()
		}
	}()
	return ln.Addr().(*net.TCPAddr).Port
}

// dial connects from ns to to and reads the greeting.
func dial(ctx context.Context, ns *netns, to netip.AddrPort) error {
	var c net.Conn
	err := inNetNS(ns.opts(), func() error {
		var err error
		c, err = (&net.Dialer{}).DialContext(ctx, "tcp", to.String())
		return err
	})
	if err != nil {
		return err
	}
	defer c.Close()
	if d, ok := ctx.Deadline(); ok {
		_ = c.SetDeadline(d)
	}
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		return fmt.Errorf("read greeting: %w", err)
	}
	if line != "hi\n" {
		return fmt.Errorf("greeting %q", line)
	}
	return nil
}

// reachable asserts that from reaches to.
func (tp *topo) reachable(from *netns, to netip.AddrPort, why string) {
	tp.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := dial(ctx, from, to); err != nil {
		tp.t.Errorf("%s: %s → %s: %v, want reachable", why, from.name, to, err)
	}
}

// blocked asserts that from cannot reach to because one of the runner's drop rules
// drops it: it dials and waits for the drop counters of table to move (not for a
// timeout), then gives up the dial.
func (tp *topo) blocked(from *netns, to netip.AddrPort, table, why string) {
	tp.t.Helper()
	before := tp.drops(table)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- dial(ctx, from, to) }()
	deadline := time.Now().Add(5 * time.Second)
	for {
		select {
		case err := <-done:
			cancel()
			if err == nil {
				tp.t.Errorf("%s: %s → %s answered, want dropped", why, from.name, to)
			} else {
				tp.t.Errorf("%s: %s → %s failed before our rules dropped anything: %v", why, from.name, to, err)
			}
			return
		default:
		}
		if tp.drops(table) > before {
			cancel()
			if err := <-done; err == nil {
				tp.t.Errorf("%s: %s → %s answered, want dropped", why, from.name, to)
			}
			return
		}
		if time.Now().After(deadline) {
			cancel()
			<-done
			tp.t.Errorf("%s: %s → %s: no drop counted by table %s within 5s", why, from.name, to, table)
			return
		}
		time.Sleep(5 * time.Millisecond) // poll interval of the counter, not a wait for an outcome
	}
}

// drops sums the packet counters of the runner's table in the host namespace.
func (tp *topo) drops(table string) uint64 {
	tp.t.Helper()
	c, err := nftables.New(nftables.WithNetNSFd(tp.host.fd))
	if err != nil {
		tp.t.Fatal(err)
	}
	tbl := &nftables.Table{Family: nftables.TableFamilyINet, Name: table}
	var n uint64
	for _, chain := range []string{chainInput, chainForward} {
		rules, err := c.GetRules(tbl, &nftables.Chain{Name: chain, Table: tbl})
		if errors.Is(err, os.ErrNotExist) {
			continue
		}
		if err != nil {
			tp.t.Fatalf("rules of %s/%s: %v", table, chain, err)
		}
		for _, r := range rules {
			for _, e := range r.Exprs {
				if ctr, ok := e.(*expr.Counter); ok {
					n += ctr.Packets
				}
			}
		}
	}
	return n
}

// tables lists the inet tables of the host namespace.
func (tp *topo) tables() []string {
	tp.t.Helper()
	c, err := nftables.New(nftables.WithNetNSFd(tp.host.fd))
	if err != nil {
		tp.t.Fatal(err)
	}
	ts, err := c.ListTablesOfFamily(nftables.TableFamilyINet)
	if err != nil {
		tp.t.Fatal(err)
	}
	var names []string
	for _, t := range ts {
		names = append(names, t.Name)
	}
	return names
}

func ap(a netip.Addr, port int) netip.AddrPort { return netip.AddrPortFrom(a, uint16(port)) }

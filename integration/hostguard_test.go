package integration

import (
	"encoding/json"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"regexp"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/google/nftables"
	"golang.org/x/sys/unix"
)

// Host protection and egress end to end: the runner binary, the real engine, this
// host's netfilter. Traffic goes only to this machine's addresses and to the test's own
// listeners — one of them in a network namespace of the test's own, which the host
// reaches by forwarding, as it would the internet.

// needHostRules: the runner programs netfilter only with CAP_NET_ADMIN, and the tests
// read its table and build namespaces.
func needHostRules(t *testing.T) {
	t.Helper()
	if os.Geteuid() == 0 {
		return
	}
	if os.Getenv("CI") != "" {
		t.Fatal("CI is set and the test is not root: host protection cannot be checked")
	}
	t.Skip("needs root: the runner's host rules need CAP_NET_ADMIN")
}

const kvService = "service \"kv\" {\n  builtin = \"kv\"\n}\n"

// TestHostProtection: from inside a default plugin, a host listener on 0.0.0.0 is
// unreachable through the gateway and through another address of the host, while the
// plugin's services work; `runner up` and GET /v1/runner say so, and once the runner has
// exited its table is gone. The control runs protect_host = false, where the very same
// listener answers the plugin: the drop is the rules', nothing else's.
func TestHostProtection(t *testing.T) {
	t.Parallel()
	needHostRules(t)
	service := listenTCP(t, "0.0.0.0:0").Port()
	hosts := []string{} // the gateway is added per runner
	if a, ok := hostAddr(); ok {
		hosts = append(hosts, a.String())
	}

	t.Run("protect_host = true", func(t *testing.T) {
		t.Parallel()
		rp := startRunner(t, hcl("", kvService, notesPlugin("notes", "", "kv")))
		gw := hdGateway(t, "xcore-"+rp.runnerID)
		table := "nftables table inet xcore-" + rp.runnerID
		if want := "host protection on: plugins reach the host only at their sidecar (" + table + ")"; !strings.Contains(rp.out(), want) {
			t.Errorf("runner up does not say %q:\n%s", want, rp.out())
		}
		noteRoundTrip(t, rp, "notes")
		for _, h := range append([]string{gw}, hosts...) {
			if addr := net.JoinHostPort(h, strconv.Itoa(int(service))); connects(t, rp, "notes", addr) {
				t.Errorf("the plugin reached the host's listener at %s", addr)
			}
		}
		var info struct {
			HostProtection map[string]any `json:"host_protection"`
		}
		if err := json.NewDecoder(rp.adminAPI(t).request(t, "GET", "/v1/runner").Body).Decode(&info); err != nil {
			t.Fatal(err)
		}
		if want := map[string]any{"enforced": true, "egress": true, "rules": table}; !mapsEqual(info.HostProtection, want) {
			t.Errorf("GET /v1/runner host_protection = %v, want %v", info.HostProtection, want)
		}
		if _, ok := readHostRules(t, rp.runnerID); !ok {
			t.Fatalf("no table inet xcore-%s while the runner runs", rp.runnerID)
		}

		if err := rp.terminate(time.Minute); err != nil {
			t.Fatalf("runner exit: %v\n%s", err, rp.errOut())
		}
		if _, ok := readHostRules(t, rp.runnerID); ok {
			t.Errorf("table inet xcore-%s still there after the runner exited", rp.runnerID)
		}
	})

	t.Run("protect_host = false (control)", func(t *testing.T) {
		t.Parallel()
		rp := startRunner(t, hcl("  protect_host = false\n", kvService, notesPlugin("notes", "", "kv")))
		if !strings.Contains(rp.out(), "WARNING host protection off") {
			t.Errorf("runner up does not warn that host protection is off:\n%s", rp.out())
		}
		gw := hdGateway(t, "xcore-"+rp.runnerID)
		if addr := net.JoinHostPort(gw, strconv.Itoa(int(service))); !connects(t, rp, "notes", addr) {
			t.Errorf("control: with protect_host = false the plugin cannot reach %s either", addr)
		}
		noteRoundTrip(t, rp, "notes")
	})
}

// TestEgress: "none" reaches a destination the host forwards to no more, a CIDR list
// only what it lists, "all" everything; every one of them keeps its services. A reload
// that changes egress applies to the running container, which is not replaced.
func TestEgress(t *testing.T) {
	t.Parallel()
	needHostRules(t)
	far := forwardedListeners(t)
	listed := fmt.Sprintf("    egress = [%q]\n", netip.PrefixFrom(far[0].Addr(), 32).String())
	conf := func(openEgress string) string {
		return hcl("", kvService,
			notesPlugin("open", openEgress, "kv"),
			notesPlugin("shut", "    egress = \"none\"\n", "kv"),
			notesPlugin("listed", listed, "kv"))
	}
	rp := startRunner(t, conf(""))

	for _, tc := range []struct {
		plugin string
		to     netip.AddrPort
		want   bool
	}{
		{"open", far[0], true}, {"open", far[1], true}, // control: the host forwards there
		{"shut", far[0], false}, {"shut", far[1], false},
		{"listed", far[0], true}, {"listed", far[1], false},
	} {
		if got := connects(t, rp, tc.plugin, tc.to.String()); got != tc.want {
			t.Errorf("%s → %s: connected = %v, want %v", tc.plugin, tc.to, got, tc.want)
		}
	}
	for _, p := range []string{"open", "shut", "listed"} {
		noteRoundTrip(t, rp, p)
	}

	before := rp.container("open")
	writeFile(t, rp.config(), conf("    egress = \"none\"\n"))
	if code, out, errb := rp.cli(t, "reload"); code != 0 {
		t.Fatalf("reload: %d %s %s", code, out, errb)
	}
	if connects(t, rp, "open", far[0].String()) {
		t.Errorf("open → %s connects after its egress became \"none\"", far[0])
	}
	if after := rp.containerID("open"); after != before {
		t.Errorf("an egress change replaced the container: %s → %s", before, after)
	}
	noteRoundTrip(t, rp, "open")
}

// TestHostRulesSurviveKill: a runner killed with -9 leaves its rules in force for the
// plugins it leaves running; the next runner adopts them and replaces the table in one
// piece — the same rules and registrations, none twice; `runner down` after another
// kill -9 leaves no table.
func TestHostRulesSurviveKill(t *testing.T) {
	t.Parallel()
	needHostRules(t)
	far := forwardedListeners(t)
	rp := startRunner(t, hcl("", notesPlugin("shut", "    egress = \"none\"\n"), notesPlugin("open", "")))
	if connects(t, rp, "shut", far[0].String()) {
		t.Fatalf("shut → %s connects with egress = \"none\"", far[0])
	}
	shut := rp.container("shut")
	before, ok := readHostRules(t, rp.runnerID)
	if !ok || len(before.known) != 2 {
		t.Fatalf("rules before kill -9: %s (present %v), want 2 registered addresses", before, ok)
	}

	rp.kill()
	if kept, ok := readHostRules(t, rp.runnerID); !ok || !slices.Equal(kept.known, before.known) {
		t.Errorf("after kill -9 the rules are %s (present %v), want them in force: %s", kept, ok, before)
	}
	next := startRunnerIn(t, rp.dir)
	if got := next.container("shut"); got != shut {
		t.Fatalf("shut's container %s after the restart, want %s adopted", got, shut)
	}
	after, ok := readHostRules(t, next.runnerID)
	if !ok || after.rules != before.rules || !slices.Equal(after.known, before.known) {
		t.Errorf("rules after restart: %s, want those before kill -9: %s", after, before)
	}
	if connects(t, next, "shut", far[0].String()) {
		t.Errorf("the adopted shut → %s connects: its egress was lost", far[0])
	}
	if !connects(t, next, "open", far[0].String()) {
		t.Errorf("the adopted open → %s does not connect: it was not registered again", far[0])
	}

	next.kill()
	out, err := hdCLI(t, rp.dir, nil, "down", "-c", rp.config())
	if err != nil {
		t.Fatalf("runner down: %v\n%s", err, out)
	}
	if want := "host rules nftables table inet xcore-" + rp.runnerID + " removed"; !strings.Contains(out, want) {
		t.Errorf("runner down does not say %q:\n%s", want, out)
	}
	if _, ok := readHostRules(t, rp.runnerID); ok {
		t.Errorf("table inet xcore-%s still there after runner down", rp.runnerID)
	}
}

// TestHostProtectionUnavailable: a runner without CAP_NET_ADMIN over the host's network
// (here: in a user namespace of its own, as root mapped to root, with the Docker socket
// still open to it) says which promise it cannot keep, `runner ps` and GET /v1/runner
// show it, a plugin with egress = "none" does not start and says why, and a default
// plugin serves.
func TestHostProtectionUnavailable(t *testing.T) {
	t.Parallel()
	needHostRules(t)
	dir := t.TempDir()
	writeFile(t, dir+"/plugins.hcl", hcl("", notesPlugin("open", ""), notesPlugin("shut", "    egress = \"none\"\n")))
	rp := startRunnerCmd(t, dir, func(cmd *exec.Cmd) {
		cmd.SysProcAttr = &syscall.SysProcAttr{
			Cloneflags:  syscall.CLONE_NEWUSER,
			UidMappings: []syscall.SysProcIDMap{{ContainerID: 0, HostID: 0, Size: 1}},
			GidMappings: []syscall.SysProcIDMap{{ContainerID: 0, HostID: 0, Size: 1}},
		}
	})
	const why = "host protection unavailable: the runner lacks CAP_NET_ADMIN"
	if !strings.Contains(rp.out(), "WARNING "+why) {
		t.Errorf("runner up does not say %q:\n%s", why, rp.out())
	}
	failed := regexp.MustCompile(`FAILED\s+shut\s.*egress = none cannot be enforced: ` + why)
	if !failed.MatchString(rp.out()) {
		t.Errorf("runner up does not say why shut failed:\n%s", rp.out())
	}
	if id := rp.containerID("shut"); id != "" {
		t.Errorf("a container of shut runs (%s)", id)
	}
	if resp, body := get(t, rp.url("/plugins/open/healthz")); resp.StatusCode != 200 {
		t.Errorf("open: %d %s", resp.StatusCode, body)
	}
	var info struct {
		HostProtection struct {
			Enforced, Egress bool
			Unavailable      string
		} `json:"host_protection"`
	}
	if err := json.NewDecoder(rp.adminAPI(t).request(t, "GET", "/v1/runner").Body).Decode(&info); err != nil {
		t.Fatal(err)
	}
	if hp := info.HostProtection; hp.Enforced || hp.Egress || !strings.HasPrefix(hp.Unavailable, why) {
		t.Errorf("GET /v1/runner host_protection = %+v, want unavailable: %s", hp, why)
	}
	code, out, errb := rp.cli(t, "ps")
	if lines := strings.Split(strings.TrimSpace(out), "\n"); code != 0 || !strings.HasPrefix(lines[len(lines)-1], "WARNING "+why) {
		t.Errorf("runner ps (exit %d) does not end with the warning:\n%s%s", code, out, errb)
	}
	if _, ok := readHostRules(t, rp.runnerID); ok {
		t.Errorf("a table inet xcore-%s exists, installed by whom?", rp.runnerID)
	}
}

// connects asks plugin (the notes example) to open a TCP connection to addr.
func connects(t *testing.T, rp *runnerProc, plugin, addr string) bool {
	t.Helper()
	_, body := get(t, rp.url("/plugins/"+plugin+"/selftest?addr="+addr))
	switch {
	case strings.HasPrefix(body, "connected"):
		return true
	case strings.HasPrefix(body, "no connection"):
		return false
	}
	t.Fatalf("%s /selftest?addr=%s: %q", plugin, addr, body)
	return false
}

// noteRoundTrip stores and reads a note through plugin's kv service: its sidecar works.
func noteRoundTrip(t *testing.T, rp *runnerProc, plugin string) {
	t.Helper()
	if code, body := do(t, "PUT", rp.url("/plugins/"+plugin+"/notes/n"), "kept"); code != 204 {
		t.Errorf("%s: PUT a note through its sidecar: %d %s", plugin, code, body)
		return
	}
	if code, body := do(t, "GET", rp.url("/plugins/"+plugin+"/notes/n"), ""); code != 200 || body != "kept" {
		t.Errorf("%s: GET the note back: %d %q", plugin, code, body)
	}
}

// listenTCP accepts (and closes) every connection on addr until the test ends.
func listenTCP(t *testing.T, addr string) netip.AddrPort {
	t.Helper()
	ln, err := net.Listen("tcp4", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go acceptAll(ln)
	return ln.Addr().(*net.TCPAddr).AddrPort()
}

func acceptAll(ln net.Listener) {
	for {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		c.Close()
	}
}

// hostAddr is an IPv4 address of this machine that is neither loopback nor Docker's.
func hostAddr() (netip.Addr, bool) {
	ifs, err := net.Interfaces()
	if err != nil {
		return netip.Addr{}, false
	}
	for _, i := range ifs {
		if i.Flags&net.FlagUp == 0 || i.Flags&net.FlagLoopback != 0 || strings.HasPrefix(i.Name, "docker") ||
			strings.HasPrefix(i.Name, "br-") || strings.HasPrefix(i.Name, "veth") || strings.HasPrefix(i.Name, "xit") {
			continue
		}
		addrs, _ := i.Addrs()
		for _, a := range addrs {
			if p, err := netip.ParsePrefix(a.String()); err == nil && p.Addr().Is4() && p.Addr().IsGlobalUnicast() {
				return p.Addr(), true
			}
		}
	}
	return netip.Addr{}, false
}

var (
	nsSeq   atomic.Int32
	nsSwept sync.Once
	nsOfPID = regexp.MustCompile(`^xit(\d+)-\d+$`)
)

// forwardedListeners are two listeners on two addresses of a network namespace of the
// test's own, behind a veth pair: the host forwards to them as it would to the LAN or
// the internet, so egress rules apply to them (host protection does not: they are not
// the host's). 198.18.0.0/15 is for benchmarks (RFC 2544): no real network uses it.
func forwardedListeners(t *testing.T) [2]netip.AddrPort {
	t.Helper()
	nsSwept.Do(sweepNamespaces)
	n := nsSeq.Add(1)
	name := fmt.Sprintf("xit%d-%d", os.Getpid(), n)
	hostIf := fmt.Sprintf("xit%dh%d", os.Getpid()%100000, n)
	base := netip.AddrFrom4([4]byte{198, 18 + byte(os.Getpid()>>8&1), byte(os.Getpid()), byte(n%32) * 8})
	gw, a, b := base.Next(), base.Next().Next(), base.Next().Next().Next()
	ip := func(args ...string) {
		t.Helper()
		if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
			t.Fatalf("ip %s: %v: %s", strings.Join(args, " "), err, out)
		}
	}
	ip("netns", "add", name)
	t.Cleanup(func() { _ = exec.Command("ip", "netns", "del", name).Run() }) // its veth goes with it
	ip("link", "add", hostIf, "type", "veth", "peer", "name", "eth0", "netns", name)
	ip("addr", "add", gw.String()+"/29", "dev", hostIf)
	ip("link", "set", hostIf, "up")
	for _, addr := range []netip.Addr{a, b} {
		ip("-n", name, "addr", "add", addr.String()+"/29", "dev", "eth0")
	}
	ip("-n", name, "link", "set", "eth0", "up")
	ip("-n", name, "link", "set", "lo", "up")
	ip("-n", name, "route", "add", "default", "via", gw.String())
	return [2]netip.AddrPort{listenInNS(t, name, a), listenInNS(t, name, b)}
}

// listenInNS listens on addr inside namespace ns. The socket stays in ns; the thread
// that entered it is never unlocked, so Go retires it with its goroutine.
func listenInNS(t *testing.T, ns string, addr netip.Addr) netip.AddrPort {
	t.Helper()
	type res struct {
		ln  net.Listener
		err error
	}
	done := make(chan res, 1)
	go func() {
		runtime.LockOSThread()
		f, err := os.Open("/var/run/netns/" + ns)
		if err != nil {
			done <- res{err: err}
			return
		}
		defer f.Close()
		if err := unix.Setns(int(f.Fd()), unix.CLONE_NEWNET); err != nil {
			done <- res{err: fmt.Errorf("enter %s: %w", ns, err)}
			return
		}
		ln, err := net.Listen("tcp4", netip.AddrPortFrom(addr, 0).String())
		done <- res{ln, err}
	}()
	r := <-done
	if r.err != nil {
		t.Fatal(r.err)
	}
	t.Cleanup(func() { r.ln.Close() })
	go acceptAll(r.ln)
	return r.ln.Addr().(*net.TCPAddr).AddrPort()
}

// sweepNamespaces deletes the namespaces of test runs that were killed (their cleanup
// never ran): ours by name, and only where that process is gone.
func sweepNamespaces() {
	entries, _ := os.ReadDir("/var/run/netns")
	for _, e := range entries {
		m := nsOfPID.FindStringSubmatch(e.Name())
		if m == nil {
			continue
		}
		if pid, _ := strconv.Atoi(m[1]); pid == os.Getpid() || syscall.Kill(pid, 0) == nil {
			continue
		}
		_ = exec.Command("ip", "netns", "del", e.Name()).Run()
	}
}

// hostRules is what the tests read of a runner's table.
type hostRules struct {
	rules int          // in every chain
	known []netip.Addr // registered IPv4 addresses, sorted
}

func (h hostRules) String() string { return fmt.Sprintf("%d rules, registered %v", h.rules, h.known) }

// readHostRules reads table inet xcore-<runnerID>; false when there is none.
func readHostRules(t *testing.T, runnerID string) (hostRules, bool) {
	t.Helper()
	c, err := nftables.New()
	if err != nil {
		t.Fatal(err)
	}
	name := "xcore-" + runnerID
	tables, err := c.ListTablesOfFamily(nftables.TableFamilyINet)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.ContainsFunc(tables, func(x *nftables.Table) bool { return x.Name == name }) {
		return hostRules{}, false
	}
	tbl := &nftables.Table{Family: nftables.TableFamilyINet, Name: name}
	chains, err := c.ListChainsOfTableFamily(nftables.TableFamilyINet)
	if err != nil {
		t.Fatal(err)
	}
	var hr hostRules
	for _, ch := range chains {
		if ch.Table.Name != name {
			continue
		}
		rules, err := c.GetRules(tbl, ch)
		if err != nil {
			t.Fatal(err)
		}
		hr.rules += len(rules)
	}
	set, err := c.GetSetByName(tbl, "known4")
	if err != nil {
		t.Fatal(err)
	}
	elems, err := c.GetSetElements(set)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range elems {
		if a, ok := netip.AddrFromSlice(e.Key); ok {
			hr.known = append(hr.known, a)
		}
	}
	slices.SortFunc(hr.known, netip.Addr.Compare)
	return hr, true
}

// removeHostRules deletes a runner's table if there is one (test cleanup: a runner
// killed with -9 leaves it).
func removeHostRules(runnerID string) {
	c, err := nftables.New()
	if err != nil {
		return
	}
	tbl := &nftables.Table{Family: nftables.TableFamilyINet, Name: "xcore-" + runnerID}
	c.AddTable(tbl) // add + delete: no error when there is none
	c.DelTable(tbl)
	_ = c.Flush()
}

// mapsEqual compares a decoded JSON object with the fields it must have.
func mapsEqual(got, want map[string]any) bool {
	if len(got) != len(want) {
		return false
	}
	for k, v := range want {
		if got[k] != v {
			return false
		}
	}
	return true
}

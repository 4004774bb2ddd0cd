package swarm

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/moby/moby/client"
)

// The cluster this test builds, and everything it creates on the way (each undone in
// reverse order by t.Cleanup, registered before the step that needs it, so that a
// failure at any step leaves nothing behind):
//
//   - a network namespace xcsw-<id> joined to the host by a veth pair (hostNet .1 on the
//     host, .2 inside, default route via .1): the worker's "machine";
//   - an unreachable route for the swarm's address pool on the host: a plugin dialling
//     another plugin's task address gets "no route to host" here instead of sending the
//     packet out of this machine through its default route;
//   - a second dockerd in that namespace, started with nsenter --net and unshare -m and a
//     small script that mounts a fresh sysfs (of the new namespace) with the host's
//     /sys/fs/cgroup bound back over it (ip netns exec would hide the cgroup v1 mounts),
//     with a config file, data-root, exec-root, pidfile and socket of its own under
//     dir, --storage-driver vfs, --bridge none, a cgroup parent and containerd namespaces
//     of its own (it starts its own containerd), --mtu 1400, and
//     DOCKER_SERVICE_PREFER_OFFLINE_IMAGE=1; it answers in ~1-2 s;
//   - the test's images, built with a run-unique tag and label on the host and copied to
//     the worker with docker save | docker load;
//   - a swarm: `docker swarm init` on the host engine (advertised on hostNet .1, with the
//     address pool above) and `docker swarm join` from the worker, nodes labelled;
//   - the runner's container (runner.go), its services and networks.
//
// Teardown: the runner stops (removing its services and networks) and `runner down`
// removes whatever is left; the worker leaves the swarm, then the host; the worker's
// dockerd is stopped by its pid; the namespace, the veth, the route, dir, docker_gwbridge
// (which leaving the swarm leaves behind) and the cgroup directories the worker created
// are removed; the images too. Then the host engine is checked to be as it was. A run
// killed before its cleanups (go test's -timeout panics without them) is swept by the
// next run from the state file it left in dir.

const (
	dirPrefix  = "xcore-swarmtest-"
	nodeLabel  = "io.xcore.swarmtest" // on the manager node: the swarm is this test's
	testLabel  = "io.xcore.test"      // on every image and container the test makes
	netnsName  = "xcsw-"              // + id
	cgroupName = "xcsw-"              // + id: the worker's cgroup parent
)

// state is what a run made, written as it goes: what the next run sweeps if this one
// is killed before its cleanups.
type state struct {
	ID        string `json:"id"`
	Netns     string `json:"netns,omitempty"`
	Veth      string `json:"veth,omitempty"`
	Route     string `json:"route,omitempty"`
	DockerPID int    `json:"docker_pid,omitempty"`
	Swarm     bool   `json:"swarm,omitempty"`
	Gwbridge  bool   `json:"gwbridge,omitempty"` // docker_gwbridge was not there before
}

type cluster struct {
	t    *testing.T
	id   string
	dir  string
	st   state
	host *client.Client
	node *client.Client // the worker's engine; nil on a single node

	twoNodes bool
	fallback string // why this is a single-node run

	hostNet netip.Prefix // the veth's /24
	pool    netip.Prefix // the swarm's address pool
	sock    string       // the worker's socket
	images  map[string]string

	managerID, workerID string
	before              hostState
}

// hostState is what the test promises to leave as it found it.
type hostState struct {
	swarm    string
	networks map[string]string // name → driver
	cgroups  []string
}

func (c *cluster) save() {
	b, _ := json.Marshal(c.st)
	if err := os.WriteFile(filepath.Join(c.dir, "state.json"), b, 0o600); err != nil {
		c.t.Logf("write state: %v", err)
	}
}

// run runs a command with a bound, returning its combined output.
func run(timeout time.Duration, env []string, name string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	if env != nil {
		cmd.Env = append(os.Environ(), env...)
	}
	out, err := cmd.CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("%s %s: %w: %s", name, strings.Join(args, " "), err, bytes.TrimSpace(out))
	}
	return strings.TrimSpace(string(out)), nil
}

// must is run, failing the test on error.
func (c *cluster) must(name string, args ...string) string {
	c.t.Helper()
	out, err := run(2*time.Minute, nil, name, args...)
	if err != nil {
		c.t.Fatal(err)
	}
	return out
}

// cleanup runs f at the end of the test and reports (not fails on) its error: every
// cleanup must run.
func (c *cluster) cleanup(what string, f func() error) {
	c.t.Cleanup(func() {
		if err := f(); err != nil {
			c.t.Errorf("cleanup: %s: %v", what, err)
		}
	})
}

// newCluster builds the cluster: two nodes where namespaces can be made, else one.
func newCluster(t *testing.T) *cluster {
	b := make([]byte, 3)
	_, _ = rand.Read(b)
	c := &cluster{t: t, id: hex.EncodeToString(b), images: map[string]string{}}
	c.st.ID = c.id
	var err error
	if c.host, err = client.New(client.FromEnv); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.host.Close() })
	sweep(t)

	c.before = c.hostState()
	if c.before.swarm != "inactive" {
		if os.Getenv("CI") != "" {
			t.Fatalf("CI is set and the host engine is in a swarm (state %q): a test left it so, or the CI engine is not a fresh one", c.before.swarm)
		}
		t.Skipf("the host engine is in a swarm (state %q): this test only runs on an engine that is in none", c.before.swarm)
	}
	// Registered first, so it runs last: the host engine is as it was.
	t.Cleanup(c.checkHost)

	c.dir = filepath.Join(os.TempDir(), dirPrefix+c.id)
	if err := os.MkdirAll(c.dir, 0o755); err != nil {
		t.Fatal(err)
	}
	c.cleanup("remove "+c.dir, func() error { return os.RemoveAll(c.dir) })
	c.save()

	c.buildImages()
	if why := c.canNamespace(); why != "" {
		c.fallback = why
		t.Logf("RAN: single-node fallback (%s)", why)
		c.initSwarm("127.0.0.1")
	} else {
		c.twoNodes = true
		t.Logf("RAN: two-node swarm (worker in network namespace %s%s)", netnsName, c.id)
		c.startWorker()
		c.initSwarm(c.hostNet.Addr().Next().String())
		c.joinWorker()
	}
	c.labelNodes()
	return c
}

// canNamespace says why a worker in a network namespace cannot be made here ("": it can).
func (c *cluster) canNamespace() string {
	if os.Getenv("XCORE_SWARM_SINGLE_NODE") != "" {
		return "XCORE_SWARM_SINGLE_NODE is set"
	}
	if os.Geteuid() != 0 {
		return "not root: no network namespace"
	}
	for _, bin := range []string{"ip", "nsenter", "unshare", "dockerd", "mount"} {
		if _, err := exec.LookPath(bin); err != nil {
			return bin + " not found"
		}
	}
	probe := netnsName + c.id + "p"
	if _, err := run(10*time.Second, nil, "ip", "netns", "add", probe); err != nil {
		return "cannot create a network namespace: " + err.Error()
	}
	_, _ = run(10*time.Second, nil, "ip", "netns", "del", probe)
	return ""
}

// free picks, from 10.<second>.<third>.0, the first prefix of bits (16 or 24) that no
// route of this host (or address, where ip is missing) mentions.
func free(second, third, bits int) (netip.Prefix, error) {
	routes, _ := run(10*time.Second, nil, "ip", "-4", "route", "show", "table", "all")
	for i := range 100 {
		var p netip.Prefix
		var mark string
		if bits == 16 {
			p = netip.PrefixFrom(netip.AddrFrom4([4]byte{10, byte(second + i), 0, 0}), 16)
			mark = fmt.Sprintf("10.%d.", second+i)
		} else {
			p = netip.PrefixFrom(netip.AddrFrom4([4]byte{10, byte(second), byte(third + i), 0}), 24)
			mark = fmt.Sprintf("10.%d.%d.", second, third+i)
		}
		if !strings.Contains(routes, mark) {
			return p, nil
		}
	}
	return netip.Prefix{}, fmt.Errorf("no free 10.%d.x prefix", second)
}

// startWorker makes the worker's namespace and starts its dockerd.
func (c *cluster) startWorker() {
	t := c.t
	var err error
	if c.hostNet, err = free(77, 0, 24); err != nil {
		t.Fatal(err)
	}
	ns, vh, vn := netnsName+c.id, "xcsw"+c.id+"h", "xcsw"+c.id+"n"
	hostIP, nodeIP := c.hostNet.Addr().Next(), c.hostNet.Addr().Next().Next()
	c.st.Netns, c.st.Veth = ns, vh
	c.save()
	c.cleanup("delete namespace "+ns, func() error {
		_, err := run(30*time.Second, nil, "ip", "netns", "del", ns)
		if _, lerr := run(10*time.Second, nil, "ip", "link", "show", vh); lerr == nil {
			_, _ = run(10*time.Second, nil, "ip", "link", "del", vh)
		}
		return err
	})
	c.must("ip", "netns", "add", ns)
	c.must("ip", "link", "add", vh, "type", "veth", "peer", "name", vn)
	c.must("ip", "link", "set", vn, "netns", ns)
	c.must("ip", "addr", "add", hostIP.String()+"/24", "dev", vh)
	c.must("ip", "link", "set", vh, "up")
	c.must("ip", "-n", ns, "addr", "add", nodeIP.String()+"/24", "dev", vn)
	c.must("ip", "-n", ns, "link", "set", vn, "up")
	c.must("ip", "-n", ns, "link", "set", "lo", "up")
	c.must("ip", "-n", ns, "route", "add", "default", "via", hostIP.String())

	// The worker's dockerd: a fresh sysfs of the namespace with the host's cgroups
	// bound back over it, then exec (its pid is the one we started).
	script := filepath.Join(c.dir, "worker.sh")
	body := `#!/bin/sh
set -e
d="$1"
mount --make-rprivate /
mkdir -p "$d/cg"
mount --rbind /sys/fs/cgroup "$d/cg"
mount -t sysfs sysfs /sys
mount --rbind "$d/cg" /sys/fs/cgroup
umount -l "$d/cg"
exec dockerd --config-file "$d/daemon.json" --data-root "$d/data" --exec-root "$d/exec" \
  --pidfile "$d/docker.pid" -H "unix://$d/docker.sock" --storage-driver vfs --bridge none \
  --cgroup-parent ` + cgroupName + c.id + ` --containerd-namespace ` + cgroupName + c.id + ` \
  --containerd-plugins-namespace ` + cgroupName + c.id + `p --mtu 1400
`
	if err := os.WriteFile(script, []byte(body), 0o755); err != nil {
		t.Fatal(err)
	}
	// The host's daemon.json sets data-root, mtu and storage-driver, which would clash.
	if err := os.WriteFile(filepath.Join(c.dir, "daemon.json"), []byte("{}\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	logf, err := os.Create(filepath.Join(c.dir, "dockerd.log"))
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("nsenter", "--net=/run/netns/"+ns, "unshare", "-m", script, c.dir)
	cmd.Env = append(os.Environ(), "DOCKER_SERVICE_PREFER_OFFLINE_IMAGE=1")
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); logf.Close(); close(exited) }()
	c.st.DockerPID = cmd.Process.Pid
	c.save()
	// Cleanups run in reverse: the cgroups go after the engine that made them.
	c.cleanup("remove the worker's cgroups", func() error { return removeCgroups(cgroupName + c.id) })
	c.cleanup("stop the worker's dockerd", func() error { return stopPID(cmd.Process.Pid, exited) })

	c.sock = filepath.Join(c.dir, "docker.sock")
	if c.node, err = client.New(client.WithHost("unix://"+c.sock), client.WithAPIVersionNegotiation()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.node.Close() })
	begin := time.Now()
	eventually(t, time.Minute, "the worker's dockerd answers", func() bool {
		select {
		case <-exited:
			b, _ := os.ReadFile(filepath.Join(c.dir, "dockerd.log"))
			t.Fatalf("the worker's dockerd exited:\n%s", tail(string(b), 20))
		default:
		}
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		_, err := c.node.Ping(ctx, client.PingOptions{NegotiateAPIVersion: true})
		return err == nil
	})
	t.Logf("worker dockerd (pid %d) answered after %s", cmd.Process.Pid, time.Since(begin).Round(time.Millisecond))

	begin = time.Now()
	tags := make([]string, 0, len(c.images))
	for _, tag := range c.images {
		tags = append(tags, tag)
	}
	if out, err := run(5*time.Minute, nil, "sh", "-c", "docker save "+strings.Join(tags, " ")+" | DOCKER_HOST=unix://"+c.sock+" docker load"); err != nil {
		t.Fatalf("copy images to the worker: %v\n%s", err, out)
	}
	t.Logf("images copied to the worker (docker save | docker load) in %s", time.Since(begin).Round(time.Millisecond))
}

// stopPID stops a process we started: SIGTERM, then SIGKILL after 30s.
func stopPID(pid int, exited <-chan struct{}) error {
	_ = syscall.Kill(pid, syscall.SIGTERM)
	select {
	case <-exited:
		return nil
	case <-time.After(30 * time.Second):
	}
	_ = syscall.Kill(pid, syscall.SIGKILL)
	select {
	case <-exited:
		return fmt.Errorf("pid %d killed after 30s of SIGTERM", pid)
	case <-time.After(10 * time.Second):
		return fmt.Errorf("pid %d still running after SIGKILL", pid)
	}
}

// removeCgroups removes the cgroup directories named name (the worker's cgroup parent)
// under every v1 controller (and v2), deepest first.
func removeCgroups(name string) error {
	dirs, _ := filepath.Glob(filepath.Join("/sys/fs/cgroup", "*", name))
	if d := filepath.Join("/sys/fs/cgroup", name); exists(d) {
		dirs = append(dirs, d)
	}
	var errs []error
	for _, d := range dirs {
		var all []string
		_ = filepath.WalkDir(d, func(p string, e os.DirEntry, err error) error {
			if err == nil && e.IsDir() {
				all = append(all, p)
			}
			return nil
		})
		for i := len(all) - 1; i >= 0; i-- {
			if err := syscall.Rmdir(all[i]); err != nil && !errors.Is(err, os.ErrNotExist) {
				errs = append(errs, fmt.Errorf("rmdir %s: %w", all[i], err))
			}
		}
	}
	return errors.Join(errs...)
}

func exists(p string) bool { _, err := os.Stat(p); return err == nil }

// initSwarm makes the host engine a manager advertised at addr, with an address pool no
// route of this host covers, made unreachable (see the package comment).
func (c *cluster) initSwarm(addr string) {
	t := c.t
	var err error
	if c.pool, err = free(78, 0, 16); err != nil {
		t.Fatal(err)
	}
	if os.Geteuid() == 0 {
		c.st.Route = c.pool.String()
		c.save()
		c.cleanup("delete route "+c.pool.String(), func() error {
			_, err := run(10*time.Second, nil, "ip", "route", "del", "unreachable", c.pool.String())
			return err
		})
		c.must("ip", "route", "add", "unreachable", c.pool.String())
	}
	if _, ok := c.before.networks["docker_gwbridge"]; !ok {
		c.st.Gwbridge = true
		c.cleanup("remove docker_gwbridge", func() error {
			// Left behind by leaving the swarm; its endpoints go a moment later.
			var err error
			for range 20 {
				if _, err = run(30*time.Second, nil, "docker", "network", "rm", "docker_gwbridge"); err == nil || strings.Contains(err.Error(), "No such network") || strings.Contains(err.Error(), "not found") {
					return nil
				}
				time.Sleep(500 * time.Millisecond)
			}
			return err
		})
	}
	// The engine leaves the (unmounted) files of its overlay namespaces behind for a
	// while after leaving: ours go, nothing mounted and nothing older is touched.
	netnsBefore, _ := filepath.Glob("/run/docker/netns/1-*")
	c.cleanup("remove the overlay namespace files the swarm left", func() error {
		mounts, _ := os.ReadFile("/proc/self/mountinfo")
		files, _ := filepath.Glob("/run/docker/netns/1-*")
		for _, f := range files {
			if !slices.Contains(netnsBefore, f) && !bytes.Contains(mounts, []byte(" "+f+" ")) {
				_ = os.Remove(f)
			}
		}
		return nil
	})
	c.st.Swarm = true
	c.save()
	c.cleanup("the host engine leaves the swarm", func() error {
		_, err := run(time.Minute, nil, "docker", "swarm", "leave", "--force")
		return err
	})
	c.must("docker", "swarm", "init", "--advertise-addr", addr, "--listen-addr", addr+":2377",
		"--default-addr-pool", c.pool.String(), "--default-addr-pool-mask-length", "24")
	c.managerID = c.must("docker", "info", "--format", "{{.Swarm.NodeID}}")
	c.must("docker", "node", "update", "--label-add", nodeLabel+"="+c.id, c.managerID)
}

// joinWorker joins the worker's engine to the swarm.
func (c *cluster) joinWorker() {
	token := c.must("docker", "swarm", "join-token", "-q", "worker")
	nodeIP := c.hostNet.Addr().Next().Next().String()
	env := []string{"DOCKER_HOST=unix://" + c.sock}
	c.cleanup("the worker leaves the swarm", func() error {
		_, err := run(time.Minute, env, "docker", "swarm", "leave", "--force")
		return err
	})
	if out, err := run(2*time.Minute, env, "docker", "swarm", "join", "--token", token, "--advertise-addr", nodeIP, "--listen-addr", nodeIP+":2377", c.hostNet.Addr().Next().String()+":2377"); err != nil {
		c.t.Fatalf("worker join: %v\n%s", err, out)
	}
	id, err := run(time.Minute, env, "docker", "info", "--format", "{{.Swarm.NodeID}}")
	if err != nil {
		c.t.Fatal(err)
	}
	c.workerID = id
	eventually(c.t, time.Minute, "the worker ready", func() bool {
		out, _ := run(10*time.Second, nil, "docker", "node", "inspect", "-f", "{{.Status.State}}", c.workerID)
		return out == "ready"
	})
}

// labelNodes: zone a (manager) and b (worker) to spread over; tier=plugins on the worker
// only (on the manager in a single-node run) for the placement constraint.
func (c *cluster) labelNodes() {
	if !c.twoNodes {
		c.must("docker", "node", "update", "--label-add", "zone=a", "--label-add", "tier=plugins", c.managerID)
		return
	}
	c.must("docker", "node", "update", "--label-add", "zone=a", c.managerID)
	c.must("docker", "node", "update", "--label-add", "zone=b", "--label-add", "tier=plugins", c.workerID)
}

// buildImages builds the runner and the plugins used here, FROM scratch, with a
// run-unique tag and label (the host engine is shared: :latest tags move under us).
func (c *cluster) buildImages() {
	t := c.t
	root, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	c.cleanup("remove the test's images", func() error {
		ids, _ := run(time.Minute, nil, "docker", "images", "-q", "--filter", "label="+testLabel+"="+c.id)
		if f := strings.Fields(ids); len(f) > 0 {
			_, err := run(time.Minute, nil, "docker", append([]string{"rmi", "-f"}, slices.Compact(f)...)...)
			return err
		}
		return nil
	})
	for _, name := range []string{"runner", "selfcheck", "notes"} {
		ctxDir := filepath.Join(c.dir, "img-"+name)
		pkg, df := "./examples/"+name, ""
		if name == "runner" {
			pkg, df = "./cmd/runner", "FROM scratch\nCOPY bin/runner /runner\nUSER 65532:65532\nENTRYPOINT [\"/runner\"]\n"
		} else {
			b, err := os.ReadFile(filepath.Join(root, "examples", name, "Dockerfile"))
			if err != nil {
				t.Fatal(err)
			}
			df = string(b)
		}
		cmd := exec.Command("go", "build", "-trimpath", "-o", filepath.Join(ctxDir, "bin", name), pkg)
		cmd.Dir, cmd.Env = root, append(os.Environ(), "CGO_ENABLED=0")
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("go build %s: %v\n%s", pkg, err, out)
		}
		if err := os.WriteFile(filepath.Join(ctxDir, "Dockerfile"), []byte(df), 0o644); err != nil {
			t.Fatal(err)
		}
		tag := fmt.Sprintf("xcore-swarmtest/%s:%s", name, c.id)
		c.must("docker", "build", "-q", "--label", testLabel+"="+c.id, "-t", tag, ctxDir)
		c.images[name] = tag
	}
}

// hostState reads what the test must leave unchanged.
func (c *cluster) hostState() hostState {
	s := hostState{networks: map[string]string{}}
	s.swarm = c.must("docker", "info", "--format", "{{.Swarm.LocalNodeState}}")
	for _, line := range strings.Split(c.must("docker", "network", "ls", "--format", "{{.Name}} {{.Driver}}"), "\n") {
		if name, driver, ok := strings.Cut(line, " "); ok {
			s.networks[name] = driver
		}
	}
	s.cgroups, _ = filepath.Glob("/sys/fs/cgroup/*/" + cgroupName + "*")
	return s
}

// checkHost is the last cleanup: the host engine is in no swarm, and no network of the
// swarm's or of this test's is left. Networks of other users of this shared engine come
// and go meanwhile: only ours are judged, all are listed.
func (c *cluster) checkHost() {
	after := c.hostState()
	if after.swarm != "inactive" {
		c.t.Errorf("host engine swarm state %q after the test, want inactive", after.swarm)
	}
	var added, removed []string
	for name, driver := range after.networks {
		if _, ok := c.before.networks[name]; !ok {
			added = append(added, name+" ("+driver+")")
			if driver == "overlay" || name == "docker_gwbridge" || name == "ingress" || strings.Contains(name, c.id) {
				c.t.Errorf("network %s (%s) left on the host engine", name, driver)
			}
		}
	}
	for name := range c.before.networks {
		if _, ok := after.networks[name]; !ok {
			removed = append(removed, name)
		}
	}
	c.t.Logf("host engine after the test: swarm %s; docker network ls: %d networks, not there before: %v (others' work on this shared engine unless named above), gone since: %v",
		after.swarm, len(after.networks), added, removed)
	if left, _ := filepath.Glob("/sys/fs/cgroup/*/" + cgroupName + c.id); len(left) > 0 {
		c.t.Errorf("cgroup directories left: %v", left)
	}
	if _, err := os.Stat("/run/netns/" + netnsName + c.id); err == nil {
		c.t.Errorf("network namespace %s left", netnsName+c.id)
	}
	if c.dir != "" && exists(c.dir) {
		c.t.Errorf("%s left", c.dir)
	}
}

// sweep undoes what a previous run that was killed before its cleanups left, from its
// state file.
func sweep(t *testing.T) {
	dirs, _ := filepath.Glob(filepath.Join(os.TempDir(), dirPrefix+"*"))
	for _, d := range dirs {
		b, err := os.ReadFile(filepath.Join(d, "state.json"))
		var st state
		if err != nil || json.Unmarshal(b, &st) != nil || st.ID == "" {
			continue
		}
		t.Logf("sweeping what run %s left (%s)", st.ID, d)
		if st.Swarm {
			mine, _ := run(10*time.Second, nil, "docker", "node", "inspect", "self", "-f", "{{index .Spec.Labels \""+nodeLabel+"\"}}")
			if mine == st.ID {
				_, _ = run(time.Minute, nil, "docker", "swarm", "leave", "--force")
			}
		}
		if st.DockerPID > 0 {
			if cmdline, err := os.ReadFile("/proc/" + strconv.Itoa(st.DockerPID) + "/cmdline"); err == nil && bytes.Contains(cmdline, []byte(d)) {
				_ = syscall.Kill(st.DockerPID, syscall.SIGKILL)
				proc := "/proc/" + strconv.Itoa(st.DockerPID)
				eventually(t, 10*time.Second, "the stale worker dockerd gone", func() bool { return !exists(proc) })
			}
		}
		if st.Netns != "" {
			_, _ = run(10*time.Second, nil, "ip", "netns", "del", st.Netns)
		}
		if st.Veth != "" {
			_, _ = run(10*time.Second, nil, "ip", "link", "del", st.Veth)
		}
		if st.Route != "" {
			_, _ = run(10*time.Second, nil, "ip", "route", "del", "unreachable", st.Route)
		}
		if st.Gwbridge {
			_, _ = run(30*time.Second, nil, "docker", "network", "rm", "docker_gwbridge")
		}
		_ = removeCgroups(cgroupName + st.ID)
		ids, _ := run(time.Minute, nil, "docker", "ps", "-aq", "--filter", "label="+testLabel+"="+st.ID)
		if f := strings.Fields(ids); len(f) > 0 {
			_, _ = run(time.Minute, nil, "docker", append([]string{"rm", "-f"}, f...)...)
		}
		ids, _ = run(time.Minute, nil, "docker", "images", "-q", "--filter", "label="+testLabel+"="+st.ID)
		if f := strings.Fields(ids); len(f) > 0 {
			_, _ = run(time.Minute, nil, "docker", append([]string{"rmi", "-f"}, f...)...)
		}
		_ = os.RemoveAll(d)
	}
}

// eventually polls cond every 100ms until it returns true or within passes.
func eventually(t *testing.T, within time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", within, what)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

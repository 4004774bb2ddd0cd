package swarm

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/moby/moby/api/types/swarm"
	"github.com/moby/moby/client"
	"github.com/moby/moby/client/pkg/versions"
)

const configHCL = `runner {
  backend      = "swarm"
  listen       = "127.0.0.1:8080"
  admin_listen = "127.0.0.1:8081"
  watch        = false
}

service "kv" {
  builtin = "kv"
}

plugin "web" {
  image    = %q
  port     = 8080
  env      = { GREETING = %q }
  services = ["kv"]
  supervisor {
    cpus          = 0.5
    memory        = "48MiB"
    pids          = 64
    replicas      = 3
    start_timeout = "60s"
    drain_timeout = "10s"
    health {
      path     = "/healthz"
      interval = "1s"
    }
    placement {
      spread = "node.labels.zone"
    }
  }
}

plugin "pinned" {
  image    = %q
  port     = 8080
  services = ["kv"]
  supervisor {
    placement {
      constraints = ["node.labels.tier == plugins"]
    }
  }
}
`

// sandboxReport is examples/selfcheck's /sandbox.
type sandboxReport struct {
	Hostname     string `json:"hostname"`
	UID          string `json:"uid"`
	GID          string `json:"gid"`
	CapEff       string `json:"cap_eff"`
	CapBnd       string `json:"cap_bnd"`
	NoNewPrivs   string `json:"no_new_privs"`
	MemoryLimit  int64  `json:"memory_limit"`
	SwapLimit    int64  `json:"swap_limit"`
	PidsLimit    int64  `json:"pids_limit"`
	CPUQuotaUS   int64  `json:"cpu_quota_us"`
	CPUPeriodUS  int64  `json:"cpu_period_us"`
	RootReadOnly bool   `json:"root_read_only"`
	TmpWritable  bool   `json:"tmp_writable"`
	TmpOptions   string `json:"tmp_options"`
	PID1         string `json:"pid1"`
}

// task is a running task of one of the runner's services, as the manager sees it.
type task struct {
	ID, Node, Container, IP string
}

// tasks lists the running tasks of plugin's generation gen.
func (c *cluster) tasks(runnerID, plugin string, gen int) []task {
	c.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	name := fmt.Sprintf("xcore-%s-%d-%s", plugin, gen, runnerID)
	res, err := c.host.TaskList(ctx, client.TaskListOptions{Filters: client.Filters{}.Add("service", name).Add("desired-state", "running")})
	if err != nil {
		c.t.Fatal(err)
	}
	var out []task
	for _, t := range res.Items {
		if t.Status.State != swarm.TaskStateRunning {
			continue
		}
		tk := task{ID: t.ID, Node: t.NodeID}
		if cs := t.Status.ContainerStatus; cs != nil {
			tk.Container = cs.ContainerID
		}
		for _, a := range t.NetworksAttachments {
			if a.Network.Spec.Name == fmt.Sprintf("xcore-%s-%s", plugin, runnerID) && len(a.Addresses) > 0 {
				tk.IP = a.Addresses[0].Addr().String()
			}
		}
		out = append(out, tk)
	}
	return out
}

func (c *cluster) services(runnerID string) []string {
	out := c.must("docker", "service", "ls", "--filter", "label=io.xcore.runner="+runnerID, "--format", "{{.Name}}")
	return strings.Fields(out)
}

func TestSwarm(t *testing.T) {
	begin := time.Now()
	c := newCluster(t)
	t.Logf("cluster ready in %s", time.Since(begin).Round(time.Millisecond))
	ctx := context.Background()
	if _, err := c.host.Ping(ctx, client.PingOptions{NegotiateAPIVersion: true}); err != nil {
		t.Fatal(err)
	}
	api := c.host.ClientVersion()

	started := time.Now()
	r := c.startRunner(fmt.Sprintf(configHCL, c.images["selfcheck"], "hello", c.images["notes"]))
	t.Logf("runner container serving in %s (both plugins ready)", time.Since(started).Round(time.Millisecond))
	nodeOf := map[string]string{c.managerID: "manager"}
	if c.twoNodes {
		nodeOf[c.workerID] = "worker"
	}

	t.Run("serves through the runner", func(t *testing.T) {
		seen := map[string]bool{}
		eventually(t, 30*time.Second, "three tasks answering", func() bool {
			seen[strings.Fields(r.mustGet("/plugins/web/"))[2]] = true
			return len(seen) == 3
		})
		// pinned's services go through the sidecar on its own network, from its node.
		if code, body, err := r.get("/plugins/pinned/notes"); code != 200 || err != nil {
			t.Fatalf("notes list: %d %q %v", code, body, err)
		}
		req := "http://" + r.proxy + "/plugins/pinned/notes/swarm"
		put, err := newPut(req, "across nodes")
		if err != nil {
			t.Fatal(err)
		}
		resp, err := r.http.Do(put)
		if err != nil || resp.StatusCode >= 300 {
			t.Fatalf("PUT note: %v %v", resp, err)
		}
		resp.Body.Close()
		if got := r.mustGet("/plugins/pinned/notes/swarm"); got != "across nodes" {
			t.Errorf("note read back %q", got)
		}
	})

	t.Run("tasks on both nodes", func(t *testing.T) {
		if !c.twoNodes {
			t.Skipf("single-node fallback: %s", c.fallback)
		}
		nodes := map[string]int{}
		for _, tk := range c.tasks(r.id, "web", 1) {
			nodes[nodeOf[tk.Node]]++
		}
		t.Logf("web's 3 tasks (spread over node.labels.zone): %v", nodes)
		if nodes["manager"] == 0 || nodes["worker"] == 0 {
			t.Errorf("web's tasks by node: %v, want some on each", nodes)
		}
	})

	t.Run("placement constraints honoured", func(t *testing.T) {
		want := "worker"
		if !c.twoNodes {
			want = "manager"
		}
		ts := c.tasks(r.id, "pinned", 1)
		if len(ts) != 1 || nodeOf[ts[0].Node] != want {
			t.Errorf("pinned (node.labels.tier == plugins) runs on %v, want the %s", ts, want)
		}
	})

	t.Run("limits and hardening from inside each task", func(t *testing.T) {
		byHost := map[string]string{} // container short ID → node
		for _, tk := range c.tasks(r.id, "web", 1) {
			byHost[tk.Container[:12]] = nodeOf[tk.Node]
		}
		reports := map[string]sandboxReport{}
		eventually(t, 30*time.Second, "a report from every task", func() bool {
			var rep sandboxReport
			if err := json.Unmarshal([]byte(r.mustGet("/plugins/web/sandbox")), &rep); err != nil {
				t.Fatal(err)
			}
			reports[rep.Hostname] = rep
			return len(reports) == len(byHost)
		})
		nnpWanted := !versions.LessThan(api, "1.44")
		logs := r.logs()
		if !nnpWanted && !strings.Contains(logs, "does not apply no-new-privileges") {
			t.Errorf("Engine API %s cannot apply no-new-privileges and the runner did not say so", api)
		}
		for host, rep := range reports {
			node := byHost[host]
			t.Logf("inside task %s on the %s: uid %s gid %s cap_eff %s cap_bnd %s no_new_privs %s memory %d pids %d cpu %d/%d read-only root %v /tmp %q (writable %v) pid1 %q swap+memory %d",
				host, node, rep.UID, rep.GID, rep.CapEff, rep.CapBnd, rep.NoNewPrivs, rep.MemoryLimit, rep.PidsLimit, rep.CPUQuotaUS, rep.CPUPeriodUS, rep.RootReadOnly, rep.TmpOptions, rep.TmpWritable, rep.PID1, rep.SwapLimit)
			var bad []string
			check := func(ok bool, what string) {
				if !ok {
					bad = append(bad, what)
				}
			}
			check(rep.UID == "65532" && rep.GID == "65532", "uid/gid 65532")
			// A non-root process has no effective capability anyway: the bounding set
			// is what cap_drop ALL empties.
			check(strings.Trim(rep.CapEff, "0") == "" && rep.CapBnd != "" && strings.Trim(rep.CapBnd, "0") == "", "no capability (cap_eff and cap_bnd 0: cap_drop ALL)")
			check(rep.MemoryLimit == 48<<20, "memory limit 48MiB")
			check(rep.PidsLimit == 64, "pids limit 64")
			check(rep.CPUPeriodUS > 0 && rep.CPUQuotaUS*2 == rep.CPUPeriodUS, "cpu quota 0.5")
			check(rep.RootReadOnly, "read-only root")
			check(rep.TmpWritable && strings.Contains(rep.TmpOptions, "noexec") && strings.Contains(rep.TmpOptions, "nosuid") && strings.Contains(rep.TmpOptions, "nodev"), "a writable /tmp, noexec, nosuid, nodev")
			check(strings.Contains(rep.PID1, "init"), "an init as PID 1")
			check((rep.NoNewPrivs == "1") == nnpWanted, fmt.Sprintf("no_new_privs %v on API %s", nnpWanted, api))
			if len(bad) > 0 {
				t.Errorf("task %s on the %s: not applied: %s", host, node, strings.Join(bad, "; "))
			}
		}
		if c.twoNodes {
			nodes := map[string]bool{}
			for host := range reports {
				nodes[byHost[host]] = true
			}
			if !nodes["manager"] || !nodes["worker"] {
				t.Errorf("reports from %v, want both nodes", nodes)
			}
		}
	})

	t.Run("plugins cannot reach each other", func(t *testing.T) {
		web, pinned := c.tasks(r.id, "web", 1), c.tasks(r.id, "pinned", 1)
		if len(web) < 2 || len(pinned) != 1 {
			t.Fatalf("tasks: web %v pinned %v", web, pinned)
		}
		var ins struct {
			NetworkSettings struct {
				Networks map[string]struct{ IPAddress string }
			}
		}
		if err := json.Unmarshal([]byte(c.must("docker", "inspect", "--type", "container", "-f", "{{json .}}", r.name)), &ins); err != nil {
			t.Fatal(err)
		}
		runnerOnWeb := ins.NetworkSettings.Networks["xcore-web-"+r.id].IPAddress
		port, _ := os.ReadFile(filepath.Join(r.cfgDir, ".runner", "sidecar-port"))
		dial := func(from, path, addr string) string {
			return strings.TrimSpace(r.mustGet("/plugins/" + from + "/" + path + "?addr=" + addr))
		}
		if c.st.Route == "" {
			t.Logf("no unreachable route for %s (not root): the cross-plugin dial is not tried, its packets would leave this machine", c.pool)
		} else {
			if got := dial("web", "dial", pinned[0].IP+":8080"); !strings.HasPrefix(got, "error") {
				t.Errorf("web reached pinned's task %s: %q", pinned[0].IP, got)
			}
			if got := dial("pinned", "selftest", web[0].IP+":8080"); !strings.HasPrefix(got, "no connection") {
				t.Errorf("pinned reached web's task %s: %q", web[0].IP, got)
			}
		}
		for _, p := range []string{"8080", "8081"} {
			if got := dial("web", "dial", runnerOnWeb+":"+p); !strings.HasPrefix(got, "error") {
				t.Errorf("web reached the runner's port %s on its network (%s): %q", p, runnerOnWeb, got)
			}
		}
		// Controls: what a plugin may reach, it does.
		if got := dial("web", "dial", runnerOnWeb+":"+strings.TrimSpace(string(port))); got != "connected" {
			t.Errorf("web cannot reach the sidecar at %s: %q", runnerOnWeb, got)
		}
		if got := dial("web", "dial", web[1].IP+":8080"); got != "connected" {
			t.Errorf("web cannot reach its own other task (the dial itself is broken?): %q", got)
		}
	})

	t.Run("idle cost of the observation", func(t *testing.T) {
		idleCost(t, c, r)
	})

	t.Run("start-first replacement under 8-client load", func(t *testing.T) {
		before := r.status("web")
		r.write(fmt.Sprintf(configHCL, c.images["selfcheck"], "howdy", c.images["notes"]))
		l := r.startLoad(8, "/plugins/web/", 100000, 4*time.Minute)
		began := time.Now()
		l.waitRequests(t, 500) // load running before the change
		r.reload()
		st := r.waitStatus("web", "generation 2 serving with 3 tasks", 3*time.Minute, func(s pluginStatus) bool {
			return s.Generation == before.Generation+1 && s.Ready == 3 && s.State == "healthy"
		})
		eventually(t, 2*time.Minute, "generation 1's service removed", func() bool {
			return !slices.Contains(c.services(r.id), fmt.Sprintf("xcore-web-%d-%s", before.Generation, r.id))
		})
		took := time.Since(began)
		l.waitRequests(t, 500) // load on the new generation alone
		ok, failed, errs := l.end()
		t.Logf("replacement generation %d → %d under 8 clients: %d requests, %d failed, %s from reload to old service removed", before.Generation, st.Generation, ok+failed, failed, took.Round(time.Millisecond))
		if failed > 0 {
			t.Errorf("%d of %d requests failed across the replacement: %q", failed, ok+failed, errs)
		}
		if ok < 100 {
			t.Errorf("only %d requests: the load did not run", ok)
		}
		if body := r.mustGet("/plugins/web/"); !strings.HasPrefix(body, "howdy") {
			t.Errorf("after the replacement: %q", body)
		}
	})

	t.Run("a task killed on the worker is recovered", func(t *testing.T) {
		before := r.status("web")
		gen := before.Generation
		var victim task
		for _, tk := range c.tasks(r.id, "web", gen) {
			if !c.twoNodes || tk.Node == c.workerID {
				victim = tk
			}
		}
		if victim.ID == "" {
			t.Fatalf("no web task on the worker: %v", c.tasks(r.id, "web", gen))
		}
		l := r.startLoad(4, "/plugins/web/", 100000, 2*time.Minute)
		var env []string
		if c.twoNodes {
			env = []string{"DOCKER_HOST=unix://" + c.sock}
		}
		if out, err := run(time.Minute, env, "docker", "kill", victim.Container); err != nil {
			t.Fatalf("kill: %v %s", err, out)
		}
		killed := time.Now()
		st := r.waitStatus("web", "3 tasks ready again, without the killed one", 2*time.Minute, func(s pluginStatus) bool {
			return s.Ready == 3 && !slices.Contains(s.ids(), victim.ID) && s.Restarts > before.Restarts
		})
		recovered := time.Since(killed)
		ok, failed, errs := l.end()
		t.Logf("task %s killed on the %s: 3 ready again after %s (restarts %d → %d); under 4 clients %d requests, %d failed %q",
			victim.ID, nodeOf[victim.Node], recovered.Round(time.Millisecond), before.Restarts, st.Restarts, ok+failed, failed, errs)
		if st.Generation != gen {
			t.Errorf("generation %d → %d: a dead task is Swarm's to replace, not a new generation", gen, st.Generation)
		}
	})

	t.Run("adopted after kill -9 of the runner", func(t *testing.T) {
		web, pinned := r.status("web"), r.status("pinned")
		logs := strings.Count(r.logs(), "serving http://")
		c.must("docker", "kill", "-s", "KILL", r.name)
		c.must("docker", "start", r.name)
		r.proxy = c.must("docker", "port", r.name, "8080/tcp")
		r.admin = c.must("docker", "port", r.name, "8081/tcp")
		r.waitServing(logs)
		if got := r.status("web"); !sameSet(got.ids(), web.ids()) || got.Generation != web.Generation {
			t.Errorf("web after the restart: generation %d tasks %v, want the adopted %d %v", got.Generation, got.ids(), web.Generation, web.ids())
		}
		if got := r.status("pinned"); !sameSet(got.ids(), pinned.ids()) {
			t.Errorf("pinned after the restart: %v, want %v", got.ids(), pinned.ids())
		}
		if n := strings.Count(r.logs(), "adopted running container"); n < 4 {
			t.Errorf("%d adoptions logged, want 4", n)
		}
		// The runner has new addresses on the plugin networks: xcore.internal follows.
		if got := r.mustGet("/plugins/pinned/notes/swarm"); got != "across nodes" {
			t.Errorf("pinned's services after the restart: %q", got)
		}
	})

	t.Run("scaled in place 3 → 2 under load", func(t *testing.T) {
		before := r.status("web")
		r.write(strings.Replace(fmt.Sprintf(configHCL, c.images["selfcheck"], "howdy", c.images["notes"]), "replicas      = 3", "replicas      = 2", 1))
		l := r.startLoad(4, "/plugins/web/", 100000, 2*time.Minute)
		began := time.Now()
		code, plan := r.adminDo(http.MethodPost, "/v1/reload")
		if code != 200 || !strings.Contains(string(plan), "scale 3 → 2") {
			t.Fatalf("reload: %d %s; want a scale in place", code, plan)
		}
		st := r.waitStatus("web", "2 of 2 ready", 2*time.Minute, func(s pluginStatus) bool {
			return s.Replicas == 2 && s.Ready == 2 && s.State == "healthy"
		})
		eventually(t, 2*time.Minute, "2 tasks left running", func() bool { return len(c.tasks(r.id, "web", before.Generation)) == 2 })
		took := time.Since(began)
		l.waitRequests(t, 1000) // on the 2 tasks left
		ok, failed, errs := l.end()
		t.Logf("scale 3 → 2 in place: %s from reload to 2 tasks running; under 4 clients %d requests, %d failed %q", took.Round(time.Millisecond), ok+failed, failed, errs)
		if st.Generation != before.Generation {
			t.Errorf("generation %d → %d: a scale is not a replacement", before.Generation, st.Generation)
		}
		if failed > 0 {
			t.Errorf("%d of %d requests failed across the scale-down: %q", failed, ok+failed, errs)
		}
	})
}

func sameSet(a, b []string) bool {
	a, b = slices.Clone(a), slices.Clone(b)
	slices.Sort(a)
	slices.Sort(b)
	return slices.Equal(a, b)
}

// idleCost measures what watching an idle cluster costs: the runner's CPU (its task
// polls, service events and the health probes) and the host engine's, over 30 s.
func idleCost(t *testing.T, c *cluster, r *runnerCtr) {
	id := c.must("docker", "inspect", "-f", "{{.Id}}", r.name)
	usage := func() time.Duration {
		for _, p := range []string{"/sys/fs/cgroup/cpuacct/docker/" + id + "/cpuacct.usage", "/sys/fs/cgroup/cpu,cpuacct/docker/" + id + "/cpuacct.usage"} {
			if b, err := os.ReadFile(p); err == nil {
				n, _ := strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64)
				return time.Duration(n)
			}
		}
		return -1
	}
	pidCPU := func(pidfile string) time.Duration {
		b, err := os.ReadFile(pidfile)
		if err != nil {
			return -1
		}
		stat, err := os.ReadFile("/proc/" + strings.TrimSpace(string(b)) + "/stat")
		if err != nil {
			return -1
		}
		f := strings.Fields(string(stat[strings.LastIndexByte(string(stat), ')')+2:]))
		ut, _ := strconv.ParseInt(f[11], 10, 64)
		st, _ := strconv.ParseInt(f[12], 10, 64)
		return time.Duration(ut+st) * 10 * time.Millisecond // USER_HZ 100
	}
	const window = 30 * time.Second
	r0, h0, w0 := usage(), pidCPU("/var/run/docker.pid"), pidCPU(filepath.Join(c.dir, "docker.pid"))
	time.Sleep(window)
	r1, h1, w1 := usage(), pidCPU("/var/run/docker.pid"), pidCPU(filepath.Join(c.dir, "docker.pid"))
	pct := func(a, b time.Duration) string {
		if a < 0 || b < 0 {
			return "n/a"
		}
		return fmt.Sprintf("%.2f%% of a core", 100*float64(b-a)/float64(window))
	}
	t.Logf("idle for %s (2 plugins, 4 tasks, task listing every 2 s, probes every 1 s and 5 s): runner %s; host dockerd (manager; shared with other users of this engine) %s; worker dockerd %s",
		window, pct(r0, r1), pct(h0, h1), pct(w0, w1))
	if r0 >= 0 && float64(r1-r0)/float64(window) > 0.05 {
		t.Errorf("the idle runner used %s", pct(r0, r1))
	}
}

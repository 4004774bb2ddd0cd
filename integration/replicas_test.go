package integration

import (
	"fmt"
	"os/exec"
	"strings"
	"testing"
	"time"
)

func replicated(image string, replicas int, greeting string) string {
	return plugin("hello", image, fmt.Sprintf(`  env = { GREETING = %q }
  supervisor {
    replicas      = %d
    drain_timeout = "5s"
    stop_timeout  = "2s"
    health {
      path     = "/healthz"
      interval = "1s"
    }
    restart {
      backoff     = "200ms"
      max_backoff = "1s"
    }
  }
`, greeting, replicas))
}

// runningOf lists the running containers of plugin, by label.
func (rp *runnerProc) runningOf(plugin string) []string {
	out, _ := exec.Command("docker", "ps", "-q", "--filter", "label=io.xcore.runner="+rp.runnerID, "--filter", "label=io.xcore.plugin="+plugin).Output()
	return strings.Fields(string(out))
}

// Three instances serve one plugin; one is killed under load: the others carry every
// request (a request that broke on the dead one is retried on another), a fresh
// instance takes its slot, and no client sees a failure.
func TestReplicaKilledUnderLoad(t *testing.T) {
	t.Parallel()
	rp := startRunner(t, hcl("", replicated(images["hello"], 3, "hi")))
	if ids := rp.runningOf("hello"); len(ids) != 3 {
		t.Fatalf("%d running containers, want 3 replicas", len(ids))
	}
	_, ps, _ := rp.cli(t, "ps")
	if !strings.Contains(ps, "3/3") {
		t.Errorf("runner ps does not show 3/3 ready:\n%s", ps)
	}
	load := startLoad(t, rp.url("/plugins/hello/"), 8, 60*time.Second)
	load.waitRequests(t, 200) // traffic on all three first
	victim := rp.runningOf("hello")[1]
	killed := time.Now()
	if out, err := exec.Command("docker", "kill", victim).CombinedOutput(); err != nil {
		t.Fatalf("docker kill: %v %s", err, out)
	}
	rp.waitLog(30*time.Second, `msg="plugin restarted" plugin=hello`)
	back := time.Since(killed)
	load.waitRequests(t, 200) // and some traffic on the fresh instance
	res := load.stop()
	t.Logf("one of 3 replicas killed under 8-client load: %s; fresh instance serving after %s", res, back.Round(time.Millisecond))
	if res.failed != 0 {
		t.Errorf("%d failed requests while one replica of three was killed: %v", res.failed, res.errs)
	}
	ids := rp.runningOf("hello")
	if len(ids) != 3 || strings.Contains(strings.Join(ids, " "), victim[:12]) {
		t.Errorf("running after the kill: %v, want 3 without %s", ids, victim[:12])
	}
}

// A replicated plugin is replaced start-first as a set under load, and scaled in place
// without a new generation.
func TestReplicasReplacedAndScaled(t *testing.T) {
	t.Parallel()
	rp := startRunner(t, hcl("", replicated(images["hello"], 2, "v1")))
	load := startLoad(t, rp.url("/plugins/hello/"), 8, 60*time.Second)
	load.waitRequests(t, 200)
	writeFile(t, rp.config(), hcl("", replicated(images["hello"], 3, "v2")))
	rp.cli(t, "reload")
	rp.waitLog(30*time.Second, `msg="replaced plugin" plugin=hello`)
	load.waitRequests(t, 200)
	res := load.stop()
	t.Logf("2 replicas replaced by 3 under 8-client load: %s", res)
	if res.failed != 0 {
		t.Errorf("%d failed requests during the replacement of a set: %v", res.failed, res.errs)
	}
	if res.bodies["v1 from hello\n"] == 0 || res.bodies["v2 from hello\n"] == 0 {
		t.Errorf("want answers from both generations, got %v", res.bodies)
	}
	eventually(t, 30*time.Second, "3 instances of generation 2", func() bool { return len(rp.runningOf("hello")) == 3 })

	// Replicas alone: scaled in place, no new generation; the plan says so first.
	writeFile(t, rp.config(), hcl("", replicated(images["hello"], 1, "v2")))
	planCmd := exec.Command(runnerBin, "plan", "-c", rp.config())
	planCmd.Dir = rp.dir
	plan, _ := planCmd.CombinedOutput() // exit 2: changes
	if !strings.Contains(string(plan), "~ hello: scale 3 → 1") {
		t.Errorf("runner plan before scaling down:\n%s", plan)
	}
	load = startLoad(t, rp.url("/plugins/hello/"), 8, 60*time.Second)
	begin := time.Now()
	rp.cli(t, "reload")
	eventually(t, 30*time.Second, "scaled to 1", func() bool { return len(rp.runningOf("hello")) == 1 })
	t.Logf("scale 3 → 1: %s", time.Since(begin).Round(time.Millisecond))
	writeFile(t, rp.config(), hcl("", replicated(images["hello"], 4, "v2")))
	begin = time.Now()
	rp.cli(t, "reload")
	eventually(t, 30*time.Second, "scaled to 4", func() bool {
		_, ps, _ := rp.cli(t, "ps")
		return strings.Contains(ps, "4/4")
	})
	t.Logf("scale 1 → 4 (ready): %s", time.Since(begin).Round(time.Millisecond))
	res = load.stop()
	if res.failed != 0 {
		t.Errorf("%d failed requests while scaling: %v", res.failed, res.errs)
	}
	if strings.Count(rp.errOut(), `msg="replacing plugin" plugin=hello`) != 1 {
		t.Errorf("scaling replaced the generation:\n%s", rp.errOut())
	}
}

package integration

import (
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

func helloPlugin(image, greeting string) string {
	return plugin("hello", image, fmt.Sprintf(`  env = { GREETING = %q }
  supervisor {
    drain_timeout = "5s"
    stop_timeout = "2s"
    health { path = "/healthz" }
  }
`, greeting))
}

// Under load, a config edit (picked up by the file watcher) replaces hello start-first
// with zero failed requests; then a broken edit changes nothing; then a runner-side edit
// applies without a new container.
func TestReplaceOnConfigEditUnderLoad(t *testing.T) {
	t.Parallel()
	other := plugin("other", images["hello"], "  env = { GREETING = \"other\" }\n")
	rp := startRunner(t, hcl("  watch = true\n", helloPlugin(images["hello"], "v1"), other))
	gen1 := rp.container("hello")
	otherID := rp.container("other")

	load := startLoad(t, rp.url("/plugins/hello/"), 8, 30*time.Second)
	otherLoad := startLoad(t, rp.url("/plugins/other/"), 2, 30*time.Second)
	time.Sleep(500 * time.Millisecond) // some traffic on generation 1 first
	edited := time.Now()
	writeFile(t, rp.config(), hcl("  watch = true\n", helloPlugin(images["hello"], "v2"), other))
	rp.waitLog(30*time.Second, `msg="replaced plugin" plugin=hello`)
	swap := time.Since(edited)
	time.Sleep(500 * time.Millisecond) // and some on generation 2
	res, otherRes := load.stop(), otherLoad.stop()
	began := rp.logTime(`msg="replacing plugin" plugin=hello`)
	ready := rp.logTime(`msg="plugin ready" plugin=hello generation=2`)
	done := rp.logTime(`msg="replaced plugin" plugin=hello`)
	t.Logf("config edit → replacement begun %s → generation 2 healthy and routed %s → generation 1 drained+stopped+removed %s (total %s)",
		began.Sub(edited).Round(time.Millisecond), ready.Sub(began).Round(time.Millisecond), done.Sub(ready).Round(time.Millisecond), swap.Round(time.Millisecond))
	t.Logf("hello under replacement (8 clients): %s", res)
	t.Logf("other plugin meanwhile (2 clients): %s", otherRes)

	if res.failed != 0 || otherRes.failed != 0 {
		t.Errorf("failed requests during replacement: hello %d %v, other %d %v", res.failed, res.errs, otherRes.failed, otherRes.errs)
	}
	if res.bodies["v1 from hello\n"] == 0 || res.bodies["v2 from hello\n"] == 0 {
		t.Errorf("want answers from both generations, got %v", res.bodies)
	}
	if gen2 := rp.container("hello"); gen2 == gen1 {
		t.Error("same container after an env change")
	}
	if rp.container("other") != otherID {
		t.Error("an unrelated plugin was touched")
	}
	if out := docker(t, "ps", "-aq", "--filter", "id="+gen1); out != "" {
		t.Errorf("generation 1 still exists: %s", out)
	}
	if !strings.Contains(rp.errOut(), "env GREETING changed") || strings.Contains(rp.errOut(), "v2") {
		t.Errorf("the log must give the reason without the value:\n%s", rp.errOut())
	}

	// A broken config changes nothing; the diagnostic names file:line.
	gen2 := rp.container("hello")
	writeFile(t, rp.config(), hcl("  watch = true\n", helloPlugin(images["hello"], "v3"), other)+"plugin \"bad\" {\n  port = 0\n}\n")
	rp.waitLog(10*time.Second, "config reload rejected")
	if !strings.Contains(rp.errOut(), "plugins.hcl:") {
		t.Errorf("diagnostic without file:line:\n%s", rp.errOut())
	}
	if _, body := get(t, rp.url("/plugins/hello/")); body != "v2 from hello\n" || rp.container("hello") != gen2 {
		t.Errorf("a broken config changed what runs: %q", body)
	}

	// Runner-side settings apply live: same container, new timeout enforced.
	writeFile(t, rp.config(), hcl("  watch = true\n", strings.Replace(helloPlugin(images["hello"], "v2"), `drain_timeout = "5s"`, `drain_timeout = "5s"
    max_body = "10"`, 1), other))
	eventually(t, 10*time.Second, "max_body enforced", func() bool {
		resp, err := httpPost(rp.url("/plugins/hello/echo/x"), strings.Repeat("x", 100))
		return err == nil && resp == 413
	})
	if rp.container("hello") != gen2 {
		t.Error("a max_body change replaced the container")
	}
}

// `docker build -t` of a new image under the tag hello uses → replacement, no polling,
// zero failed requests.
func TestReplaceOnImageRebuildUnderLoad(t *testing.T) {
	t.Parallel()
	tag := "xcore-test/hello-rebuilt:" + testRunID
	docker(t, "tag", images["hello"], tag)
	rp := startRunner(t, hcl("", helloPlugin(tag, "hi")))
	gen1 := rp.container("hello")
	id1 := docker(t, "image", "inspect", "-f", "{{.Id}}", tag)

	load := startLoad(t, rp.url("/plugins/hello/"), 8, 30*time.Second)
	time.Sleep(300 * time.Millisecond)
	ctx := filepath.Join(t.TempDir(), "ctx")
	if err := os.MkdirAll(filepath.Join(ctx, "bin"), 0o755); err != nil {
		t.Fatal(err)
	}
	bin, _ := os.ReadFile(filepath.Join(buildDir, "hello", "bin", "hello"))
	_ = os.WriteFile(filepath.Join(ctx, "bin", "hello"), bin, 0o755)
	df, _ := os.ReadFile(filepath.Join(buildDir, "hello", "Dockerfile"))
	_ = os.WriteFile(filepath.Join(ctx, "Dockerfile"), df, 0o644)
	out, err := exec.Command("docker", "build", "-q", "--label", "io.xcore.test="+testRunID, "--label", "rebuilt=1", "-t", tag, ctx).CombinedOutput()
	if err != nil {
		t.Fatalf("docker build: %v\n%s", err, out)
	}
	built := time.Now()
	rp.waitLog(30*time.Second, `msg="plugin ready" plugin=hello generation=2`)
	serving := time.Since(built)
	rp.waitLog(30*time.Second, `msg="replaced plugin" plugin=hello`)
	res := load.stop()
	noticed := rp.logTime(`msg="replacing plugin" plugin=hello`).Sub(built)
	floor := dockerRunFloor(t, tag)
	t.Logf("docker build finished → replacement begun: %s; → generation 2 serving: %s (raw docker run → first 200 of the same image, same moment: %s)",
		noticed.Round(time.Millisecond), serving.Round(time.Millisecond), floor.Round(time.Millisecond))
	t.Logf("hello under image replacement (8 clients): %s", res)
	if res.failed != 0 {
		t.Errorf("%d failed requests: %v", res.failed, res.errs)
	}
	// The runner's part is noticing (an engine event, no polling); the rest is the
	// engine starting a container, which the floor measures.
	if noticed > time.Second {
		t.Errorf("replacement began %s after the build, want ≤ 1s", noticed)
	}
	if !strings.Contains(rp.errOut(), "now resolves to") {
		t.Errorf("the reason does not name the image change:\n%s", rp.errOut())
	}
	if rp.container("hello") == gen1 {
		t.Error("the same container serves after the rebuild")
	}
	if id2 := docker(t, "image", "inspect", "-f", "{{.Id}}", tag); id2 == id1 {
		t.Fatal("the rebuild did not change the image ID; the test proves nothing")
	}
}

// A generation that never becomes healthy is removed; the old one serves throughout.
func TestFailedReplacementKeepsServing(t *testing.T) {
	t.Parallel()
	base := func(env string) string {
		return plugin("hello", images["slow"], fmt.Sprintf(`  env = { %s }
  supervisor {
    start_timeout = "8s"
    stop_timeout = "1s"
    health { path = "/healthz" }
  }
`, env))
	}
	rp := startRunner(t, hcl("", base(`V = "1"`)))
	gen1 := rp.container("hello")
	for _, tc := range []struct{ name, env, reason string }{
		{"exits at once", `SLOW_EXIT_CODE = "3"`, "exited with code 3"},
		{"never healthy", `SLOW_HEALTH = "fail"`, "not healthy within start_timeout"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			load := startLoad(t, rp.url("/plugins/hello/"), 8, 30*time.Second)
			writeFile(t, rp.config(), hcl("", base(tc.env)))
			_ = rp.cmd.Process.Signal(syscall.SIGHUP)
			rp.waitLog(30*time.Second, tc.reason)
			res := load.stop()
			t.Logf("%s, under load: %s", tc.name, res)
			if res.failed != 0 {
				t.Errorf("%d failed requests: %v", res.failed, res.errs)
			}
			if rp.container("hello") != gen1 {
				t.Error("the old generation does not serve any more")
			}
			if ids := rp.containers(); len(ids) != 1 {
				t.Errorf("containers %v: the failed generation was not removed", ids)
			}
		})
	}
}

// kill -9 of the runner, then `runner up` again: the running containers are adopted
// as they are; `runner plan` then reports no changes.
func TestAdoptionAfterKill(t *testing.T) {
	t.Parallel()
	rp := startRunner(t, hcl("", helloPlugin(images["hello"], "hi"), plugin("slow", images["slow"], "")))
	ids := map[string]string{"hello": rp.container("hello"), "slow": rp.container("slow")}
	rp.kill()

	rp2 := startRunnerIn(t, rp.dir)
	for name, id := range ids {
		if got := rp2.container(name); got != id {
			t.Errorf("%s: container %s after restart, want the adopted %s", name, got, id)
		}
	}
	if n := len(rp2.containers()); n != 2 {
		t.Errorf("%d containers after restart, want 2", n)
	}
	if !strings.Contains(rp2.out(), "adopted") {
		t.Errorf("runner output does not say it adopted:\n%s", rp2.out())
	}
	if _, body := get(t, rp2.url("/plugins/hello/")); body != "hi from hello\n" {
		t.Errorf("adopted hello answers %q", body)
	}
	cmd := exec.Command(runnerBin, "plan", "-c", rp2.config())
	out, err := cmd.CombinedOutput()
	if err != nil || !strings.Contains(string(out), "no changes") {
		t.Errorf("runner plan: %v\n%s", err, out)
	}
	// A changed config: plan says what and exits 2, changing nothing.
	writeFile(t, rp2.config(), hcl("", helloPlugin(images["hello"], "changed"), plugin("slow", images["slow"], "")))
	cmd = exec.Command(runnerBin, "plan", "-c", rp2.config())
	out, err = cmd.CombinedOutput()
	if code := cmd.ProcessState.ExitCode(); code != 2 || !strings.Contains(string(out), "~ hello: replace (env GREETING changed)") || !strings.Contains(string(out), "= slow: unchanged") {
		t.Errorf("plan after an edit: exit %d (%v)\n%s", code, err, out)
	}
	if rp2.container("hello") != ids["hello"] {
		t.Error("runner plan changed something")
	}
}

// A plugin removed from the config goes after drain; the others never notice.
func TestRemovePlugin(t *testing.T) {
	t.Parallel()
	rp := startRunner(t, hcl("  watch = true\n", helloPlugin(images["hello"], "hi"), plugin("slow", images["slow"], "")))
	slowID := rp.container("slow")
	load := startLoad(t, rp.url("/plugins/hello/"), 4, 30*time.Second)
	writeFile(t, rp.config(), hcl("  watch = true\n", helloPlugin(images["hello"], "hi")))
	eventually(t, 30*time.Second, "slow's container gone", func() bool {
		return docker(t, "ps", "-aq", "--filter", "id="+slowID) == ""
	})
	res := load.stop()
	t.Logf("hello while slow was removed: %s", res)
	if res.failed != 0 {
		t.Errorf("%d failed requests on an unrelated plugin: %v", res.failed, res.errs)
	}
	resp, body := get(t, rp.url("/plugins/slow/"))
	wantProblem(t, resp, body, 404)
}

// dockerRunFloor is what the engine alone needs to start image and have it answer:
// `docker run -d -p 127.0.0.1::8080` until the first 200 from /healthz.
func dockerRunFloor(t *testing.T, image string) time.Duration {
	t.Helper()
	begin := time.Now()
	id := docker(t, "run", "-d", "--label", "io.xcore.test="+testRunID, "-p", "127.0.0.1::8080", image)
	defer exec.Command("docker", "rm", "-f", id).Run()
	addr := strings.Fields(docker(t, "port", id, "8080"))[0]
	eventually(t, 30*time.Second, "raw container answering", func() bool {
		resp, err := http.Get("http://" + addr + "/healthz")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == 200
	})
	return time.Since(begin)
}

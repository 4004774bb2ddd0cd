package integration

import (
	"bytes"
	"context"
	"encoding/base64"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/xcore/runner/registry/registrytest"
)

// The registry tests run go-containerregistry's registry on 127.0.0.1 inside the test
// process; dockerd pulls from it over plain HTTP (127.0.0.0/8 is an insecure registry
// by default). The images pushed are the example hello plugin, built FROM scratch in
// process, labelled with the run's label so that removeTestImages removes what the
// engine pulled.

func startTestRegistry(t *testing.T) *registrytest.Server {
	t.Helper()
	s, err := registrytest.Start()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		s.Close()
		// What the engine pulled from it, by name (the label catches the rest at exit).
		out, _ := exec.Command("docker", "images", "--format", "{{.Repository}}:{{.Tag}}", s.Host+"/*/*").Output()
		if refs := strings.Fields(string(out)); len(refs) > 0 {
			_ = exec.Command("docker", append([]string{"rmi", "-f"}, refs...)...).Run()
		}
	})
	return s
}

// helloImage is examples/hello FROM scratch, answering "<greeting> from hello", for
// platform arch (amd64 when empty).
func helloImage(t *testing.T, greeting, arch string) v1.Image {
	t.Helper()
	if arch == "" {
		arch = "amd64"
	}
	img, err := registrytest.Build(registrytest.Image{
		Binary:   filepath.Join(buildDir, "hello", "bin", "hello"),
		Env:      map[string]string{"GREETING": greeting},
		Labels:   map[string]string{"io.xcore.test": testRunID},
		Platform: v1.Platform{OS: "linux", Architecture: arch},
	})
	if err != nil {
		t.Fatal(err)
	}
	return img
}

func pushTo(t *testing.T, ref string, img any, user, pass string) string {
	t.Helper()
	d, err := registrytest.Push(context.Background(), ref, img, user, pass)
	if err != nil {
		t.Fatal(err)
	}
	return d
}

func shortDigest(d string) string { return d[:len("sha256:")+12] }

func followedHello(image, extra string) string {
	return plugin("hello", image, `  registry_poll = "1s"
`+extra+`  supervisor {
    drain_timeout = "5s"
    stop_timeout = "2s"
    health { path = "/healthz" }
  }
`)
}

// Under 8-client load, a push to the followed tag replaces the plugin start-first with
// zero failed requests; while nothing moved the registry saw manifest HEADs only.
func TestRegistryTagMoveUnderLoad(t *testing.T) {
	t.Parallel()
	reg := startTestRegistry(t)
	ref := reg.Host + "/team/hello:1.4"
	d1 := pushTo(t, ref, helloImage(t, "v1", ""), "", "")
	rp := startRunner(t, hcl("", followedHello(ref, "")))
	if !strings.Contains(rp.out(), "pulled  hello  "+ref+"  "+d1) {
		t.Errorf("runner up did not print the pull with its digest:\n%s", rp.out())
	}
	gen1 := rp.container("hello")
	if spec := docker(t, "inspect", "-f", `{{index .Config.Labels "io.xcore.spec"}}`, gen1); !strings.Contains(spec, `"image_digest":"`+d1+`"`) {
		t.Errorf("the container's spec label does not record the digest: %s", spec)
	}

	before := reg.Counts()
	eventually(t, 20*time.Second, "3 polls", func() bool { return reg.Counts().Since(before).ManifestHead >= 3 })
	idle := reg.Counts().Since(before)
	if idle.ManifestGet != 0 || idle.BlobGet != 0 || idle.BlobHead != 0 {
		t.Errorf("while nothing moved the registry served %s; want manifest HEADs only", idle)
	}

	load := startLoad(t, rp.url("/plugins/hello/"), 8, 60*time.Second)
	load.waitRequests(t, 200) // some traffic on generation 1 first
	v2 := helloImage(t, "v2", "")
	d2 := pushTo(t, ref, v2, "", "")
	pushed := time.Now() // the tag moved when the push ended
	rp.waitLog(60*time.Second, `msg="replaced plugin" plugin=hello`)
	load.waitRequests(t, 200) // and some on generation 2
	res := load.stop()
	serving := rp.logTime(`msg="new generation serving" plugin=hello`).Sub(pushed)
	noticed := rp.logTime(`msg="registry tag moved"`).Sub(pushed)
	t.Logf("push → move noticed %s → new generation serving %s (registry_poll 1s)", noticed.Round(time.Millisecond), serving.Round(time.Millisecond))
	t.Logf("hello under a registry replacement (8 clients): %s", res)
	if res.failed != 0 {
		t.Errorf("%d failed requests: %v", res.failed, res.errs)
	}
	if res.bodies["v1 from hello\n"] == 0 || res.bodies["v2 from hello\n"] == 0 {
		t.Errorf("want answers from both images, got %v", res.bodies)
	}
	want := "registry: " + ref + " moved " + shortDigest(d1) + " → " + shortDigest(d2)
	if !strings.Contains(rp.errOut(), `msg="replacing plugin" plugin=hello generation=1 reason="`+want+`"`) {
		t.Errorf("the log does not give the reason %q", want)
	}
	if rp.container("hello") == gen1 {
		t.Error("the same container serves after the move")
	}
}

// A multi-platform index: a push that changes only another platform's image replaces
// nothing (the engine recorded the index digest); one that changes this platform's does.
func TestRegistryIndexNoFalseReplacement(t *testing.T) {
	t.Parallel()
	reg := startTestRegistry(t)
	ref := reg.Host + "/team/multi:1"
	amd := helloImage(t, "v1", "amd64")
	index := func(imgs ...v1.Image) v1.ImageIndex {
		idx, err := registrytest.Index(imgs...)
		if err != nil {
			t.Fatal(err)
		}
		return idx
	}
	pushTo(t, ref, index(amd, helloImage(t, "arm-1", "arm64")), "", "")
	rp := startRunner(t, hcl("", followedHello(ref, "")))
	gen1 := rp.container("hello")

	pushTo(t, ref, index(amd, helloImage(t, "arm-2", "arm64")), "", "")
	before := reg.Counts()
	eventually(t, 20*time.Second, "3 polls", func() bool { return reg.Counts().Since(before).ManifestHead >= 3 })
	if rp.container("hello") != gen1 || strings.Contains(rp.errOut(), "registry tag moved") || strings.Count(rp.errOut(), `msg="pulling image"`) != 1 {
		t.Fatalf("an arm64-only push moved the amd64 plugin:\n%s", rp.errOut())
	}
	if got := reg.Counts().Since(before); got.BlobGet != 0 || got.ManifestGet > 2 {
		t.Errorf("after an arm64-only push the registry served %s; want HEADs and at most the two indexes read once", got)
	}

	pushTo(t, ref, index(helloImage(t, "v2", "amd64"), helloImage(t, "arm-2", "arm64")), "", "")
	rp.waitLog(60*time.Second, `msg="replaced plugin" plugin=hello`)
	if _, body := get(t, rp.url("/plugins/hello/")); body != "v2 from hello\n" {
		t.Errorf("after an amd64 push: %q", body)
	}
}

// Credentials from DOCKER_CONFIG reach the engine's pull; wrong ones fail that plugin
// with a message naming the registry, the repository and the file, and the others
// serve; the password appears in no log line, label, event, API answer or plan.
func TestRegistryCredentials(t *testing.T) {
	t.Parallel()
	const user, pass = "team", "Pa55-never-shown-7c1d"
	good, bad := startTestRegistry(t), startTestRegistry(t)
	good.RequireAuth(user, pass)
	bad.RequireAuth(user, "another-"+pass)
	okRef, badRef := good.Host+"/team/hello:1.4", bad.Host+"/team/hello:1.4"
	pushTo(t, okRef, helloImage(t, "v1", ""), user, pass)
	pushTo(t, badRef, helloImage(t, "v1", ""), user, "another-"+pass)
	cfgDir := t.TempDir()
	if err := registrytest.WriteDockerConfig(cfgDir, good.Host, user, pass); err != nil {
		t.Fatal(err)
	}
	// The same (wrong for it) credential for the second registry.
	if err := os.WriteFile(filepath.Join(cfgDir, "config.json"), []byte(fmt.Sprintf(`{"auths": {%q: {"auth": %q}, %q: {"auth": %q}}}`,
		good.Host, base64.StdEncoding.EncodeToString([]byte(user+":"+pass)), bad.Host, base64.StdEncoding.EncodeToString([]byte(user+":"+pass)))), 0o600); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	writeFile(t, filepath.Join(dir, "plugins.hcl"), hcl("", followedHello(okRef, ""), plugin("denied", badRef, "")))
	env := []string{"DOCKER_CONFIG=" + cfgDir}
	rp := startRunnerEnv(t, dir, env)
	events := rp.cliBackground(t, "events", "--json")

	if _, body := get(t, rp.url("/plugins/hello/")); body != "v1 from hello\n" {
		t.Errorf("hello (pulled with the config.json credential): %q", body)
	}
	wantErr := fmt.Sprintf("registry %s denied access to team/hello (check %s/config.json)", bad.Host, cfgDir)
	resp, body := get(t, rp.url("/plugins/denied/"))
	if p := wantProblem(t, resp, body, 503); !strings.HasSuffix(p.Detail, wantErr) {
		t.Errorf("denied: %q, want it to end with %q", p.Detail, wantErr)
	}
	code, ps, _ := rp.cli(t, "ps")
	if code != 0 || !strings.Contains(ps, "failed") || !strings.Contains(ps, "denied access to team/hello") {
		t.Errorf("ps:\n%s", ps)
	}
	// A restart pulls again (and is refused again): events see it.
	if code, _, errb := rp.cli(t, "restart", "denied"); code != 0 {
		t.Fatalf("restart: %s", errb)
	}
	eventually(t, 20*time.Second, "a second pull_failed", func() bool { return strings.Count(events.stdout(), `"type":"pull_failed"`) >= 1 })

	api := rp.adminAPI(t)
	var plugins bytes.Buffer
	_, _ = plugins.ReadFrom(api.request(t, "GET", "/v1/plugins").Body)
	planCmd := exec.Command(runnerBin, "plan", "-c", filepath.Join(dir, "plugins.hcl"))
	planCmd.Dir, planCmd.Env = dir, append(os.Environ(), env...)
	plan, _ := planCmd.CombinedOutput()
	labels := docker(t, "inspect", "-f", "{{json .Config.Labels}}", rp.container("hello"))
	basic := base64.StdEncoding.EncodeToString([]byte(user + ":" + pass))
	for what, out := range map[string]string{
		"runner log": rp.errOut(), "runner up output": rp.out(), "events": events.stdout(), "GET /v1/plugins": plugins.String(),
		"runner plan": string(plan), "container labels": labels, "runner ps": ps,
	} {
		if strings.Contains(out, pass) || strings.Contains(out, basic) {
			t.Errorf("the %s shows the credential:\n%s", what, out)
		}
	}
	if !strings.Contains(string(plan), "= hello: unchanged") || !strings.Contains(string(plan), "denied access to team/hello") {
		t.Errorf("runner plan:\n%s", plan)
	}
}

// The registry down at start: a plugin whose image the engine has serves (with a
// warning); one whose image it lacks fails with the registry's error while the other
// serves; once the registry is back the missing image is pulled on its own.
func TestRegistryDown(t *testing.T) {
	t.Parallel()
	reg := startTestRegistry(t)
	have, lack := reg.Host+"/team/hello:have", reg.Host+"/team/hello:lack"
	pushTo(t, have, helloImage(t, "have", ""), "", "")
	pushTo(t, lack, helloImage(t, "lack", ""), "", "")
	docker(t, "pull", "-q", have)
	reg.Stop()
	rp := startRunner(t, hcl("", followedHello(have, ""), plugin("lack", lack, "")), "--log-level", "debug")
	if _, body := get(t, rp.url("/plugins/hello/")); body != "have from hello\n" {
		t.Errorf("hello with its registry down: %q", body)
	}
	rp.waitLog(10*time.Second, "registry check failed; what runs keeps serving")
	resp, body := get(t, rp.url("/plugins/lack/"))
	if p := wantProblem(t, resp, body, 503); !strings.Contains(p.Detail, "registry "+reg.Host+" unreachable") {
		t.Errorf("lack: %q, want the registry's error", p.Detail)
	}
	if !strings.Contains(rp.out(), "FAILED") || !strings.Contains(rp.out(), "unreachable") {
		t.Errorf("runner up did not report the failed pull:\n%s", rp.out())
	}
	if err := reg.Resume(); err != nil {
		t.Fatal(err)
	}
	eventually(t, 30*time.Second, "lack served once the registry is back", func() bool {
		resp, err := httpGetBody(rp.url("/plugins/lack/"))
		return err == nil && resp == "lack from lack\n"
	})
	rp.waitLog(10*time.Second, "registry answers again")
}

// A pull that fails halfway (manifest served, blobs not) keeps the old generation
// serving, under load; it is retried and replaces once the registry serves again.
func TestRegistryPullFailsHalfway(t *testing.T) {
	t.Parallel()
	reg := startTestRegistry(t)
	ref := reg.Host + "/team/hello:1.4"
	pushTo(t, ref, helloImage(t, "v1", ""), "", "")
	rp := startRunner(t, hcl("", followedHello(ref, "")))
	gen1 := rp.container("hello")
	load := startLoad(t, rp.url("/plugins/hello/"), 4, 60*time.Second)
	reg.FailBlobs(true)
	pushTo(t, ref, helloImage(t, "v2", ""), "", "")
	rp.waitLog(30*time.Second, `msg="pull failed"`)
	if rp.container("hello") != gen1 {
		t.Error("the old generation stopped serving after a failed pull")
	}
	reg.FailBlobs(false)
	rp.waitLog(60*time.Second, `msg="replaced plugin" plugin=hello`)
	res := load.stop()
	t.Logf("hello across a failed then a good pull (4 clients): %s", res)
	if res.failed != 0 || res.bodies["v1 from hello\n"] == 0 || res.bodies["v2 from hello\n"] == 0 {
		t.Errorf("%d failed requests %v; bodies %v", res.failed, res.errs, res.bodies)
	}
}

// A slow registry blocks nothing: while a plugin's image comes through it, another
// plugin serves under load, the admin API answers at once and says "pulling", and the
// plugin's own route answers 503 at once.
func TestSlowRegistryBlocksNothing(t *testing.T) {
	t.Parallel()
	reg := startTestRegistry(t)
	ref := reg.Host + "/team/hello:slow"
	pushTo(t, ref, helloImage(t, "slow", ""), "", "")
	other := plugin("other", images["hello"], "  env = { GREETING = \"other\" }\n")
	rp := startRunner(t, hcl("", other))
	load := startLoad(t, rp.url("/plugins/other/"), 4, 60*time.Second)
	reg.Delay(1500 * time.Millisecond) // each request: a pull takes ~10 of them
	writeFile(t, rp.config(), hcl("", other, plugin("slow", ref, "")))
	_ = rp.cmd.Process.Signal(syscall.SIGHUP)
	rp.waitLog(10*time.Second, `msg="pulling image" image=`+ref)

	begin := time.Now()
	code, ps, _ := rp.cli(t, "ps")
	if took := time.Since(begin); code != 0 || took > 3*time.Second || !strings.Contains(ps, "pulling") {
		t.Errorf("runner ps took %s during a slow pull:\n%s", took, ps)
	}
	begin = time.Now()
	resp, body := get(t, rp.url("/plugins/slow/"))
	if took := time.Since(begin); took > time.Second || resp.StatusCode != 503 || !strings.Contains(body, "pulling "+ref) {
		t.Errorf("GET /plugins/slow/ during its pull: %d %s in %s", resp.StatusCode, body, took)
	}
	rp.waitLog(90*time.Second, `msg="pulled image" image=`+ref)
	res := load.stop()
	t.Logf("other plugin during a slow pull (4 clients): %s", res)
	if res.failed != 0 || res.max() > 2*time.Second {
		t.Errorf("other during the slow pull: %s %v", res, res.errs)
	}
	eventually(t, 30*time.Second, "slow served", func() bool {
		b, err := httpGetBody(rp.url("/plugins/slow/"))
		return err == nil && b == "slow from slow\n"
	})
}

// httpGetBody is a GET that reports failure instead of failing the test (for polling).
func httpGetBody(url string) (string, error) {
	c := &http.Client{Timeout: 5 * time.Second}
	resp, err := c.Get(url)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 {
		return string(b), fmt.Errorf("status %d", resp.StatusCode)
	}
	return string(b), err
}

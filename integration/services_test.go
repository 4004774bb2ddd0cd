package integration

import (
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

func notesPlugin(name, extra string, services ...string) string {
	return plugin(name, images["notes"], fmt.Sprintf("  services = [%s]\n  supervisor {\n    health { path = \"/healthz\" }\n%s  }\n", quoteList(services), extra))
}

func quoteList(ss []string) string {
	q := make([]string, len(ss))
	for i, s := range ss {
		q[i] = fmt.Sprintf("%q", s)
	}
	return strings.Join(q, ", ")
}

func do(t *testing.T, method, url, body string, header ...string) (int, string) {
	t.Helper()
	req, err := http.NewRequest(method, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// containerEnv returns one variable of a container's environment, as anyone with the
// Docker socket (or inside the container) sees it.
func containerEnv(t *testing.T, id, name string) string {
	t.Helper()
	for _, kv := range strings.Split(docker(t, "inspect", "-f", `{{join .Config.Env "\n"}}`, id), "\n") {
		if v, ok := strings.CutPrefix(kv, name+"="); ok {
			return v
		}
	}
	return ""
}

// sidecarURL is the runner's sidecar as the host reaches it: the runner network's gateway
// and the port the runner keeps in its state_dir.
func (rp *runnerProc) sidecarURL(t *testing.T) string {
	t.Helper()
	gw := docker(t, "network", "inspect", "-f", "{{(index .IPAM.Config 0).Gateway}}", "xcore-"+rp.runnerID)
	port, err := os.ReadFile(filepath.Join(rp.dir, ".runner", "sidecar-port"))
	if err != nil {
		t.Fatal(err)
	}
	return "http://" + gw + ":" + strings.TrimSpace(string(port))
}

func TestKVThroughSidecarSurvivesRestartAndReplacement(t *testing.T) {
	t.Parallel()
	svc := "service \"kv\" {\n  builtin = \"kv\"\n}\n"
	rp := startRunner(t, hcl("  watch = true\n", svc, notesPlugin("notes", "", "kv")))
	if code, body := do(t, "PUT", rp.url("/plugins/notes/notes/first"), "remember the milk"); code != 204 {
		t.Fatalf("PUT note: %d %s", code, body)
	}
	if code, body := do(t, "GET", rp.url("/plugins/notes/notes/first"), ""); code != 200 || body != "remember the milk" {
		t.Fatalf("GET note: %d %q", code, body)
	}
	// Replacement (an env change): the data is the runner's, not the container's.
	first := rp.container("notes")
	writeFile(t, rp.config(), hcl("  watch = true\n", svc, strings.Replace(notesPlugin("notes", "", "kv"), "services =", "env = { V = \"2\" }\n  services =", 1)))
	eventually(t, 60*time.Second, "replacement", func() bool { return rp.containerID("notes") != "" && rp.containerID("notes") != first })
	if code, body := do(t, "GET", rp.url("/plugins/notes/notes/first"), ""); code != 200 || body != "remember the milk" {
		t.Fatalf("after replacement: %d %q", code, body)
	}
	// Runner restart (SIGTERM removes the containers; the kv store stays in state_dir).
	if err := rp.terminate(time.Minute); err != nil {
		t.Fatalf("terminate: %v", err)
	}
	rp2 := startRunnerIn(t, rp.dir)
	if code, body := do(t, "GET", rp2.url("/plugins/notes/notes"), ""); code != 200 || !strings.Contains(body, `"first"`) {
		t.Fatalf("after runner restart: %d %q", code, body)
	}
}

func TestSidecarAuthAndNamespaces(t *testing.T) {
	t.Parallel()
	rp := startRunner(t, hcl("",
		"service \"kv\" {\n  builtin = \"kv\"\n}\nservice \"quotes\" {\n  url = \"http://127.0.0.1:9/\"\n}\n",
		notesPlugin("a", "", "kv"), notesPlugin("b", "", "kv", "quotes")))
	if code, _ := do(t, "PUT", rp.url("/plugins/a/notes/secret"), "a's data"); code != 204 {
		t.Fatalf("PUT: %d", code)
	}
	if code, _ := do(t, "GET", rp.url("/plugins/b/notes/secret"), ""); code != 404 {
		t.Errorf("b read a's note: %d, want 404 (separate namespaces)", code)
	}
	tokenA := containerEnv(t, rp.container("a"), "XCORE_TOKEN")
	tokenB := containerEnv(t, rp.container("b"), "XCORE_TOKEN")
	if tokenA == "" || tokenA == tokenB {
		t.Fatalf("tokens: a=%q b=%q", tokenA, tokenB)
	}
	sc := rp.sidecarURL(t)
	for _, tc := range []struct {
		name, path, token string
		want              int
	}{
		{"own endpoint", "/p/a/services/kv/kv/note:secret", tokenA, 200},
		{"no token", "/p/a/services/kv/kv/note:secret", "", 401},
		{"a's token on b's endpoint", "/p/b/services/kv/kv/note:secret", tokenA, 401},
		{"undeclared service", "/p/a/services/quotes/", tokenA, 403},
	} {
		var hdr []string
		if tc.token != "" {
			hdr = []string{"Authorization", "Bearer " + tc.token}
		}
		if code, body := do(t, "GET", sc+tc.path, "", hdr...); code != tc.want {
			t.Errorf("%s: %d %s, want %d", tc.name, code, body, tc.want)
		}
	}
}

func TestURLServiceCredentialsStayInTheRunner(t *testing.T) {
	t.Parallel()
	secret := "s3cret-" + testRunID
	var mu sync.Mutex
	var seen []string
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		seen = append(seen, r.Header.Get("Authorization"))
		mu.Unlock()
		fmt.Fprint(w, "a quote")
	}))
	defer up.Close()
	svc := func(cred string) string {
		return fmt.Sprintf("service \"quotes\" {\n  url = %q\n  headers = { Authorization = \"Bearer %s\" }\n}\n", up.URL, cred)
	}
	rp := startRunner(t, hcl("  watch = true\n", svc(secret), notesPlugin("notes", "", "quotes"), plugin("other", images["hello"], "")))
	if code, body := do(t, "GET", rp.url("/plugins/notes/quote"), ""); code != 200 || body != "a quote" {
		t.Fatalf("GET /quote: %d %q", code, body)
	}
	mu.Lock()
	if len(seen) != 1 || seen[0] != "Bearer "+secret {
		t.Errorf("upstream saw Authorization %q", seen)
	}
	mu.Unlock()
	id := rp.container("notes")
	if insp := docker(t, "inspect", id); strings.Contains(insp, secret) {
		t.Error("the credential is visible in docker inspect of the plugin")
	}

	// A header change applies live: no replacement, the next call carries it.
	writeFile(t, rp.config(), hcl("  watch = true\n", svc(secret+"-v2"), notesPlugin("notes", "", "quotes"), plugin("other", images["hello"], "")))
	eventually(t, 10*time.Second, "new header upstream", func() bool {
		do(t, "GET", rp.url("/plugins/notes/quote"), "")
		mu.Lock()
		defer mu.Unlock()
		return seen[len(seen)-1] == "Bearer "+secret+"-v2"
	})
	if rp.container("notes") != id {
		t.Error("a url service change replaced the plugin")
	}
	// Upstream down → 502 problem from the sidecar, quickly.
	up.Close()
	begin := time.Now()
	if code, _ := do(t, "GET", rp.url("/plugins/notes/quote"), ""); code != 502 || time.Since(begin) > 5*time.Second {
		t.Errorf("upstream down: %d after %s, want 502 quickly", code, time.Since(begin))
	}
	if err := rp.terminate(time.Minute); err != nil {
		t.Fatal(err)
	}
	if strings.Contains(rp.out()+rp.errOut(), secret) {
		t.Error("the credential appears in the runner's output")
	}
}

func TestNetworkNone(t *testing.T) {
	t.Parallel()
	rp := startRunner(t, hcl("", "service \"kv\" {\n  builtin = \"kv\"\n}\n",
		notesPlugin("sealed", "    network = \"none\"\n", "kv"), notesPlugin("open", "", "kv")))
	id := rp.container("sealed")
	if mode := docker(t, "inspect", "-f", "{{.HostConfig.NetworkMode}}", id); mode != "none" {
		t.Errorf("NetworkMode %q", mode)
	}
	if mounts := docker(t, "inspect", "-f", `{{range .Mounts}}{{.Destination}} {{end}}`, id); strings.TrimSpace(mounts) != "/run/xcore" {
		t.Errorf("mounts %q, want only /run/xcore", mounts)
	}
	if code, body := do(t, "PUT", rp.url("/plugins/sealed/notes/x"), "over a unix socket"); code != 204 {
		t.Fatalf("PUT through the proxy and the services socket: %d %s", code, body)
	}
	if code, body := do(t, "GET", rp.url("/plugins/sealed/notes/x"), ""); code != 200 || body != "over a unix socket" {
		t.Fatalf("GET: %d %q", code, body)
	}
	// The sidecar's TCP address: the open plugin reaches it, the sealed one cannot.
	target := strings.TrimPrefix(rp.sidecarURL(t), "http://")
	if _, body := do(t, "GET", rp.url("/plugins/open/selftest?addr="+target), ""); !strings.HasPrefix(body, "connected") {
		t.Fatalf("control: the bridge plugin cannot reach %s: %s", target, body)
	}
	if _, body := do(t, "GET", rp.url("/plugins/sealed/selftest?addr="+target), ""); !strings.HasPrefix(body, "no connection") {
		t.Errorf("network = none plugin connected to %s: %s", target, body)
	}
}

// Editing an env service replaces exactly its dependents; the others see no failure.
func TestEnvServiceChangeReplacesDependentsOnly(t *testing.T) {
	t.Parallel()
	cfg := func(v string) string {
		return hcl("  watch = true\n", fmt.Sprintf("service \"settings\" {\n  env = { FEATURE_X = %q }\n}\n", v),
			notesPlugin("dependent", "", "settings"), plugin("bystander", images["hello"], ""))
	}
	rp := startRunner(t, cfg("on"))
	dep, by := rp.container("dependent"), rp.container("bystander")
	if _, body := do(t, "GET", rp.url("/plugins/dependent/greeting"), ""); body != "FEATURE_X=on\n" {
		t.Fatalf("greeting %q", body)
	}
	load := startLoad(t, rp.url("/plugins/bystander/"), 4, 60*time.Second)
	writeFile(t, rp.config(), cfg("off"))
	rp.waitLog(60*time.Second, `msg="replaced plugin" plugin=dependent`)
	res := load.stop()
	t.Logf("bystander while a service change replaced its neighbour: %s", res)
	if res.failed != 0 {
		t.Errorf("%d failed requests on the bystander: %v", res.failed, res.errs)
	}
	if _, body := do(t, "GET", rp.url("/plugins/dependent/greeting"), ""); body != "FEATURE_X=off\n" {
		t.Errorf("after the change: %q", body)
	}
	if rp.container("dependent") == dep || rp.container("bystander") != by {
		t.Error("want exactly the dependent replaced")
	}
	if !strings.Contains(rp.errOut(), "env FEATURE_X changed") {
		t.Error("the replacement reason does not name the service's variable")
	}
}

// A counter through the real sidecar loses no update: 20 concurrent increments through
// the plugin (POST $KV_URL{key}?incr=1), and 20 concurrent read-increment-write cycles
// straight to the sidecar with If-Match and retries, each give the exact total.
func TestKVConcurrentUpdatesThroughSidecar(t *testing.T) {
	t.Parallel()
	rp := startRunner(t, hcl("", "service \"kv\" {\n  builtin = \"kv\"\n}\n", notesPlugin("counter", "", "kv")))
	const n = 20
	client := &http.Client{Timeout: 10 * time.Second}
	totals := make([]int, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			res, err := client.Post(rp.url("/plugins/counter/count/visits"), "", nil)
			if err != nil {
				t.Error(err)
				return
			}
			b, _ := io.ReadAll(res.Body)
			res.Body.Close()
			if res.StatusCode != 200 {
				t.Errorf("POST /count/visits: %d %s", res.StatusCode, b)
			}
			totals[i], _ = strconv.Atoi(string(b))
		})
	}
	wg.Wait()
	slices.Sort(totals)
	for i, got := range totals {
		if got != i+1 {
			t.Fatalf("the %d answers were %v, want 1 to %d once each", n, totals, n)
		}
	}

	// The plugin's own view, as $KV_URL{key} with its token from the host.
	token := containerEnv(t, rp.container("counter"), "XCORE_TOKEN")
	kvURL := containerEnv(t, rp.container("counter"), "KV_URL")
	base := rp.sidecarURL(t) + kvURL[strings.Index(kvURL, "/p/"):] // http://xcore.internal:port → the gateway
	auth := []string{"Authorization", "Bearer " + token}
	if code, body := do(t, "GET", base+"count:visits", "", auth...); code != 200 || body != strconv.Itoa(n) {
		t.Errorf("GET $KV_URL count:visits: %d %q, want %d", code, body, n)
	}

	if code, body := do(t, "PUT", base+"cas", "0", auth...); code != 204 {
		t.Fatalf("PUT cas: %d %s", code, body)
	}
	var retries atomic.Int64
	for range n {
		wg.Go(func() {
			for range 10 * n { // bounded: a write wins at least once per round
				req, _ := http.NewRequest("GET", base+"cas", nil)
				req.Header.Set(auth[0], auth[1])
				res, err := client.Do(req)
				if err != nil {
					t.Error(err)
					return
				}
				b, _ := io.ReadAll(res.Body)
				res.Body.Close()
				v, err := strconv.Atoi(string(b))
				tag := res.Header.Get("ETag")
				if res.StatusCode != 200 || err != nil || tag == "" {
					t.Errorf("GET cas: %d %q ETag %q", res.StatusCode, b, tag)
					return
				}
				req, _ = http.NewRequest("PUT", base+"cas", strings.NewReader(strconv.Itoa(v+1)))
				req.Header.Set(auth[0], auth[1])
				req.Header.Set("If-Match", tag)
				res, err = client.Do(req)
				if err != nil {
					t.Error(err)
					return
				}
				res.Body.Close()
				switch res.StatusCode {
				case 204:
					return
				case 412:
					retries.Add(1)
				default:
					t.Errorf("PUT cas If-Match: %d", res.StatusCode)
					return
				}
			}
			t.Errorf("no write won in %d attempts", 10*n)
		})
	}
	wg.Wait()
	// The first form of the URL names the same key.
	legacy := base + "kv/cas"
	if code, body := do(t, "GET", legacy, "", auth...); code != 200 || body != strconv.Itoa(n) {
		t.Errorf("after %d concurrent read-increment-writes: %d %q, want %d", n, code, body, n)
	}
	t.Logf("%d read-increment-writes through the sidecar: %d retries after a 412", n, retries.Load())
}

package swarm

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// runnerCtr is the runner in its container on the manager, as the README's
// "Running on a Swarm cluster" starts it.
type runnerCtr struct {
	c      *cluster
	name   string
	cfgDir string
	proxy  string // 127.0.0.1:port published for the proxy
	admin  string // ... and the admin API
	token  string
	id     string // the runner's instance id
	http   *http.Client
}

// startRunner writes plugins.hcl and starts the runner's container:
//
//	docker run -d -v /var/run/docker.sock:/var/run/docker.sock --group-add <socket gid> \
//	  -v <dir>:/etc/xcore -p 127.0.0.1::8080 -p 127.0.0.1::8081 <runner image> \
//	  up -c /etc/xcore/plugins.hcl
func (c *cluster) startRunner(hcl string) *runnerCtr {
	t := c.t
	r := &runnerCtr{c: c, name: "xcsw-runner-" + c.id, cfgDir: filepath.Join(c.dir, "cfg"),
		http: &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 16}}}
	if err := os.MkdirAll(r.cfgDir, 0o777); err != nil {
		t.Fatal(err)
	}
	_ = os.Chmod(r.cfgDir, 0o777) // the runner runs as 65532 and keeps its state_dir here
	r.write(hcl)
	var st syscall.Stat_t
	if err := syscall.Stat("/var/run/docker.sock", &st); err != nil {
		t.Fatalf("the runner's container needs the host engine's socket: %v", err)
	}
	// The runner stops gracefully first (it removes its services and networks), then
	// `runner down` removes whatever it did not; runs before the swarm is left.
	c.cleanup("stop the runner and remove what it ran", func() error {
		_, _ = run(90*time.Second, nil, "docker", "stop", "-t", "60", r.name)
		if logs, err := run(30*time.Second, nil, "docker", "logs", r.name); err == nil && t.Failed() {
			// Kept for whoever looks into the failure.
			name := filepath.Join(os.TempDir(), "xcore-swarmtest-"+c.id+"-runner.log")
			_ = os.WriteFile(name, []byte(logs), 0o644)
			t.Logf("runner log (last 60 lines; all of it in %s):\n%s", name, tail(logs, 60))
		}
		_, _ = run(30*time.Second, nil, "docker", "rm", "-f", r.name)
		out, err := run(2*time.Minute, nil, filepath.Join(c.dir, "img-runner", "bin", "runner"), "down", "--force", "--backend", "swarm", "-c", filepath.Join(r.cfgDir, "plugins.hcl"))
		t.Logf("runner down --backend swarm:\n%s", out)
		return err
	})
	c.must("docker", "run", "-d", "--name", r.name, "--label", testLabel+"="+c.id,
		"-v", "/var/run/docker.sock:/var/run/docker.sock", "--group-add", strconv.Itoa(int(st.Gid)),
		"-v", r.cfgDir+":/etc/xcore", "-p", "127.0.0.1::8080", "-p", "127.0.0.1::8081",
		c.images["runner"], "up", "-c", "/etc/xcore/plugins.hcl")
	r.proxy = c.must("docker", "port", r.name, "8080/tcp")
	r.admin = c.must("docker", "port", r.name, "8081/tcp")
	r.waitServing(0)
	b, err := os.ReadFile(filepath.Join(r.cfgDir, ".runner", "admin.token"))
	if err != nil {
		t.Fatal(err)
	}
	r.token = strings.TrimSpace(string(b))
	b, err = os.ReadFile(filepath.Join(r.cfgDir, ".runner", "runner-id"))
	if err != nil {
		t.Fatal(err)
	}
	r.id = strings.TrimSpace(string(b))
	return r
}

// write replaces plugins.hcl atomically.
func (r *runnerCtr) write(hcl string) {
	p := filepath.Join(r.cfgDir, "plugins.hcl")
	if err := os.WriteFile(p+".tmp", []byte(hcl), 0o644); err != nil {
		r.c.t.Fatal(err)
	}
	if err := os.Rename(p+".tmp", p); err != nil {
		r.c.t.Fatal(err)
	}
}

func (r *runnerCtr) logs() string {
	out, _ := run(30*time.Second, nil, "docker", "logs", r.name)
	return out
}

// waitServing waits for the n+1-th "serving" line of the runner (n: how many it printed
// before, for a restart).
func (r *runnerCtr) waitServing(n int) {
	t := r.c.t
	eventually(t, 4*time.Minute, "the runner serving", func() bool {
		logs := r.logs()
		if state, _ := run(10*time.Second, nil, "docker", "inspect", "-f", "{{.State.Status}}", r.name); state == "exited" {
			t.Fatalf("the runner's container exited:\n%s", tail(logs, 40))
		}
		return strings.Count(logs, "serving http://") > n
	})
}

// get sends GET path to the public proxy.
func (r *runnerCtr) get(path string) (int, string, error) {
	resp, err := r.http.Get("http://" + r.proxy + path)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), err
}

func (r *runnerCtr) mustGet(path string) string {
	r.c.t.Helper()
	code, body, err := r.get(path)
	if err != nil || code != 200 {
		r.c.t.Fatalf("GET %s: %d %q %v", path, code, body, err)
	}
	return body
}

// pluginStatus is the admin API's view of a plugin.
type pluginStatus struct {
	State      string `json:"state"`
	Generation int    `json:"generation"`
	Ready      int    `json:"ready"`
	Replicas   int    `json:"replicas"`
	Restarts   int    `json:"restarts"`
	LastError  string `json:"last_error"`
	Instances  []struct {
		Container string `json:"container"`
		Name      string `json:"name"`
		Endpoint  string `json:"endpoint"`
		State     string `json:"state"`
	} `json:"instances"`
}

func (p pluginStatus) ids() []string {
	var out []string
	for _, i := range p.Instances {
		out = append(out, i.Container)
	}
	return out
}

func (r *runnerCtr) adminDo(method, path string) (int, []byte) {
	r.c.t.Helper()
	req, _ := http.NewRequest(method, "http://"+r.admin+path, nil)
	req.Header.Set("Authorization", "Bearer "+r.token)
	resp, err := r.http.Do(req)
	if err != nil {
		r.c.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, b
}

func (r *runnerCtr) status(plugin string) pluginStatus {
	r.c.t.Helper()
	code, b := r.adminDo(http.MethodGet, "/v1/plugins/"+plugin)
	var s pluginStatus
	if code != 200 || json.Unmarshal(b, &s) != nil {
		r.c.t.Fatalf("GET /v1/plugins/%s: %d %s", plugin, code, b)
	}
	return s
}

func (r *runnerCtr) reload() {
	r.c.t.Helper()
	if code, b := r.adminDo(http.MethodPost, "/v1/reload"); code != 200 {
		r.c.t.Fatalf("reload: %d %s", code, b)
	}
}

// load is clients goroutines sending GET path through the proxy until stop is called
// (bounded by count and time all the same), counting what failed.
type load struct {
	ok, failed atomic.Int64
	mu         sync.Mutex
	errs       []string
	stop       chan struct{}
	wg         sync.WaitGroup
}

func (r *runnerCtr) startLoad(clients int, path string, maxEach int, maxFor time.Duration) *load {
	l := &load{stop: make(chan struct{})}
	deadline := time.Now().Add(maxFor)
	for range clients {
		l.wg.Go(func() {
			for i := 0; i < maxEach && time.Now().Before(deadline); i++ {
				select {
				case <-l.stop:
					return
				default:
				}
				code, body, err := r.get(path)
				if err != nil || code != 200 {
					l.failed.Add(1)
					l.mu.Lock()
					if len(l.errs) < 10 {
						l.errs = append(l.errs, fmt.Sprintf("%d %q %v", code, strings.TrimSpace(body), err))
					}
					l.mu.Unlock()
					continue
				}
				l.ok.Add(1)
			}
		})
	}
	return l
}

// waitRequests waits until n more requests than now have been answered: traffic on
// what serves at this point, counted rather than timed.
func (l *load) waitRequests(t *testing.T, n int64) {
	t.Helper()
	target := l.ok.Load() + l.failed.Load() + n
	eventually(t, time.Minute, fmt.Sprintf("%d more requests", n), func() bool { return l.ok.Load()+l.failed.Load() >= target })
}

func (l *load) end() (ok, failed int64, errs []string) {
	close(l.stop)
	l.wg.Wait()
	return l.ok.Load(), l.failed.Load(), l.errs
}

// waitStatus polls the admin API until cond holds for plugin.
func (r *runnerCtr) waitStatus(plugin, what string, within time.Duration, cond func(pluginStatus) bool) pluginStatus {
	r.c.t.Helper()
	var last pluginStatus
	eventually(r.c.t, within, what, func() bool {
		last = r.status(plugin)
		return cond(last)
	})
	return last
}

// newPut is a PUT of body to url.
func newPut(url, body string) (*http.Request, error) {
	return http.NewRequest(http.MethodPut, url, strings.NewReader(body))
}

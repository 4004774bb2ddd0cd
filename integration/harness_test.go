package integration

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// runnerProc is a `runner up` child process.
type runnerProc struct {
	t        *testing.T
	cmd      *exec.Cmd
	dir      string
	addr     string        // public proxy address, from the "serving" line
	startup  time.Duration // from exec to the "serving" line
	mu       sync.Mutex
	stdout   bytes.Buffer
	stderr   bytes.Buffer
	exited   chan struct{}
	exitErr  error
	runnerID string
}

var servingRE = regexp.MustCompile(`serving http://([0-9.:]+)/plugins/`)

// startRunner writes hcl to a fresh dir as plugins.hcl and runs `runner up` on it. It
// waits for the "serving" line, i.e. until every plugin is healthy or failed.
func startRunner(t *testing.T, hcl string, extraArgs ...string) *runnerProc {
	t.Helper()
	dir := t.TempDir()
	writeFile(t, filepath.Join(dir, "plugins.hcl"), hcl)
	return startRunnerIn(t, dir, extraArgs...)
}

// writeFile writes via a temp file and rename, as editors do, so a watcher never reads
// a half-written config.
func writeFile(t *testing.T, path, body string) {
	t.Helper()
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

// startRunnerIn runs `runner up` on dir/plugins.hcl (a second runner in the same dir is
// the same runner instance: same state_dir, same id).
func startRunnerIn(t *testing.T, dir string, extraArgs ...string) *runnerProc {
	t.Helper()
	return startRunnerEnv(t, dir, nil, extraArgs...)
}

// startRunnerEnv is startRunnerIn with extra environment variables (NAME=value) for the
// runner process only: tests run in parallel, so the test process's environment is not
// the place for them.
func startRunnerEnv(t *testing.T, dir string, env []string, extraArgs ...string) *runnerProc {
	t.Helper()
	return startRunnerCmd(t, dir, func(cmd *exec.Cmd) {
		if env != nil {
			cmd.Env = append(os.Environ(), env...)
		}
	}, extraArgs...)
}

// startRunnerCmd is startRunnerIn with the command adjusted by prepare before it starts
// (its environment, the namespaces it runs in).
func startRunnerCmd(t *testing.T, dir string, prepare func(*exec.Cmd), extraArgs ...string) *runnerProc {
	t.Helper()
	rp := &runnerProc{t: t, dir: dir, exited: make(chan struct{})}
	args := append([]string{"up", "-c", filepath.Join(dir, "plugins.hcl")}, extraArgs...)
	rp.cmd = exec.Command(runnerBin, args...)
	rp.cmd.Dir = dir
	prepare(rp.cmd)
	outR, outW := io.Pipe()
	rp.cmd.Stdout = outW
	rp.cmd.Stderr = &lockedWriter{mu: &rp.mu, w: &rp.stderr}
	begin := time.Now()
	if err := rp.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	// Cleanup is registered before anything can fail: kill the runner, then remove
	// whatever still carries its label, so a failing test leaks nothing.
	t.Cleanup(func() {
		rp.kill()
		rp.forceCleanup()
		if t.Failed() {
			t.Logf("runner stdout:\n%s\nrunner stderr:\n%s", rp.out(), rp.errOut())
		}
	})
	go func() {
		rp.exitErr = rp.cmd.Wait()
		outW.Close()
		close(rp.exited)
	}()
	serving := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(outR)
		for sc.Scan() {
			line := sc.Text()
			rp.mu.Lock()
			rp.stdout.WriteString(line + "\n")
			rp.mu.Unlock()
			if m := servingRE.FindStringSubmatch(line); m != nil {
				serving <- m[1]
			}
		}
	}()
	select {
	case rp.addr = <-serving:
		rp.startup = time.Since(begin)
	case <-rp.exited:
		t.Fatalf("runner exited before serving: %v\nstdout:\n%s\nstderr:\n%s", rp.exitErr, rp.out(), rp.errOut())
	case <-time.After(2 * time.Minute):
		t.Fatalf("runner not serving after 2m\nstdout:\n%s\nstderr:\n%s", rp.out(), rp.errOut())
	}
	id, err := os.ReadFile(filepath.Join(dir, ".runner", "runner-id"))
	if err != nil {
		t.Fatalf("runner id: %v", err)
	}
	rp.runnerID = strings.TrimSpace(string(id))
	return rp
}

func (rp *runnerProc) url(path string) string { return "http://" + rp.addr + path }

func (rp *runnerProc) out() string {
	rp.mu.Lock()
	defer rp.mu.Unlock()
	return rp.stdout.String()
}

func (rp *runnerProc) errOut() string {
	rp.mu.Lock()
	defer rp.mu.Unlock()
	return rp.stderr.String()
}

func (rp *runnerProc) config() string { return filepath.Join(rp.dir, "plugins.hcl") }

// logTime returns the time of the first runner log line containing s.
func (rp *runnerProc) logTime(s string) time.Time {
	rp.t.Helper()
	for _, line := range strings.Split(rp.errOut(), "\n") {
		if strings.Contains(line, s) && strings.HasPrefix(line, "time=") {
			ts, err := time.Parse(time.RFC3339Nano, strings.Fields(line)[0][len("time="):])
			if err == nil {
				return ts
			}
		}
	}
	rp.t.Fatalf("no log line with %q", s)
	return time.Time{}
}

// waitLog waits until the runner's stderr contains s.
func (rp *runnerProc) waitLog(within time.Duration, s string) {
	rp.t.Helper()
	eventually(rp.t, within, "runner log "+strconv.Quote(s), func() bool { return strings.Contains(rp.errOut(), s) })
}

// terminate sends SIGTERM and waits for the exit.
func (rp *runnerProc) terminate(within time.Duration) error {
	rp.t.Helper()
	_ = rp.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-rp.exited:
		return rp.exitErr
	case <-time.After(within):
		rp.t.Fatalf("runner did not exit within %s of SIGTERM", within)
		return nil
	}
}

func (rp *runnerProc) kill() {
	select {
	case <-rp.exited:
	default:
		_ = rp.cmd.Process.Kill()
		<-rp.exited
	}
}

// containers lists the IDs of containers carrying this runner's label.
func (rp *runnerProc) containers() []string {
	out, _ := exec.Command("docker", "ps", "-aq", "--filter", "label=io.xcore.runner="+rp.runnerID).Output()
	return strings.Fields(string(out))
}

// container returns the ID of the one running container of plugin.
func (rp *runnerProc) container(plugin string) string {
	rp.t.Helper()
	id := rp.containerID(plugin)
	if id == "" {
		rp.t.Fatalf("want one running container for plugin %s", plugin)
	}
	return id
}

// containerID is container without failing: "" unless exactly one runs.
func (rp *runnerProc) containerID(plugin string) string {
	out, _ := exec.Command("docker", "ps", "-q", "--filter", "label=io.xcore.runner="+rp.runnerID, "--filter", "label=io.xcore.plugin="+plugin).Output()
	ids := strings.Fields(string(out))
	if len(ids) != 1 {
		return ""
	}
	return ids[0]
}

func (rp *runnerProc) forceCleanup() {
	if rp.runnerID == "" {
		return
	}
	if ids := rp.containers(); len(ids) > 0 {
		_ = exec.Command("docker", append([]string{"rm", "-f"}, ids...)...).Run()
	}
	_ = exec.Command("docker", "network", "rm", "xcore-"+rp.runnerID).Run()
	removeHostRules(rp.runnerID) // a runner killed with -9 leaves its table
	// Images the runner built from plugin folders carry its label too.
	if out, _ := exec.Command("docker", "images", "-q", "--filter", "label=io.xcore.runner="+rp.runnerID).Output(); len(out) > 0 {
		_ = exec.Command("docker", append([]string{"rmi", "-f"}, strings.Fields(string(out))...)...).Run()
	}
}

type lockedWriter struct {
	mu *sync.Mutex
	w  io.Writer
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

// hcl renders a config with the runner's proxy and admin API on ephemeral loopback
// ports: tests run in parallel, each with its own `runner up`, and would fight over the
// default ports. `runner up` prints the admin address ("admin http://127.0.0.1:PORT/
// (token in FILE)") and the tests pass it on with --admin.
func hcl(runnerExtra string, plugins ...string) string {
	return fmt.Sprintf("runner {\n  listen = \"127.0.0.1:0\"\n  admin_listen = \"127.0.0.1:0\"\n%s}\n\n%s", runnerExtra, strings.Join(plugins, "\n"))
}

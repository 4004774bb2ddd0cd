package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// pluginConf is one plugin block of a bench config: the hello image under a name.
// startTimeout "" keeps the default.
type pluginConf struct {
	name, greeting, startTimeout string
}

// runnerConfig renders a plugins.hcl: listen ("" = an ephemeral loopback port) and
// admin_listen on an ephemeral loopback port, watch = true, and each plugin with health {
// path = "/healthz" }. reach "" keeps the default ("published").
func runnerConfig(image, reach, listen string, plugins ...pluginConf) string {
	if listen == "" {
		listen = "127.0.0.1:0"
	}
	var b strings.Builder
	fmt.Fprintf(&b, "runner {\n  listen       = %q\n  admin_listen = \"127.0.0.1:0\"\n  watch        = true\n", listen)
	if reach != "" {
		fmt.Fprintf(&b, "  reach        = %q\n", reach)
	}
	b.WriteString("}\n")
	for _, p := range plugins {
		start := ""
		if p.startTimeout != "" {
			start = fmt.Sprintf("    start_timeout = %q\n", p.startTimeout)
		}
		fmt.Fprintf(&b, `
plugin %q {
  image = %q
  port  = 8080
  env   = { GREETING = %q }
  supervisor {
    health { path = "/healthz" }
    drain_timeout = "%s"
    stop_timeout  = "2s"
%s  }
}
`, p.name, image, p.greeting, drainTimeout, start)
	}
	return b.String()
}

// drainTimeout of the bench plugins: long enough for the in-flight requests of the load
// (milliseconds), short enough that an old generation is gone soon after a replacement.
const drainTimeout = "1s"

// writeAtomic writes via a temp file and a rename, as editors do.
func writeAtomic(path, body string) error {
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, []byte(body), 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

var servingRE = regexp.MustCompile(`serving http://([0-9.:]+)/plugins/\S* — (\d+)/(\d+) plugins ready`)

// runnerProc is a `runner up` under a guard, in a temp dir of its own.
type runnerProc struct {
	dir, cfg         string
	outPath, errPath string
	outF, errF       *os.File
	cmd              *exec.Cmd
	stopIn           io.Closer
	exited           chan struct{}
	exitErr          error
	began            time.Time // just before the exec
	servingAt        time.Time // when the `serving` line was seen (20 ms polls)
	addr             string    // the proxy's host:port
	ready, total     int       // from the `serving` line
	stopped          bool
	keepDir          bool          // leftovers not all removed: cleanOwn() tries again
	logs             *[2]string    // stdout and stderr, kept when the temp dir goes
	stopTook         time.Duration // SIGTERM → exit
	exitIn           time.Duration // SIGTERM → exit bound; 0: runnerExitIn
}

// startRunner writes cfgText to a new temp dir and runs `bin up` there until it prints
// its `serving` line (bounded by within). On error everything it started is stopped and
// removed, and the error carries the runner's output.
func startRunner(ctx context.Context, bin, cfgText string, within time.Duration) (*runnerProc, error) {
	p, err := spawnRunner(bin, cfgText)
	if err != nil {
		return nil, err
	}
	if err := p.waitServing(ctx, within); err != nil {
		return nil, p.finish(err)
	}
	return p, nil
}

// spawnRunner writes cfgText to a new temp dir and starts `bin up` there. On error
// everything is removed.
func spawnRunner(bin, cfgText string) (*runnerProc, error) {
	dir, err := mkTemp("runner-")
	if err != nil {
		return nil, err
	}
	p := &runnerProc{dir: dir, cfg: filepath.Join(dir, "plugins.hcl"), exited: make(chan struct{})}
	fail := func(err error) (*runnerProc, error) {
		if p.cmd != nil {
			err = errors.Join(err, p.stop())
		}
		err = p.withLogs(err)
		p.closeFiles()
		_ = os.RemoveAll(dir)
		return nil, err
	}
	if err := writeAtomic(p.cfg, cfgText); err != nil {
		return fail(err)
	}
	// The runner writes to files, not pipes: if the bench dies, the runner must still be
	// able to log its shutdown (a write to a broken pipe on stdout/stderr kills a Go
	// program). In a subdirectory, so that the config watcher does not see the writes.
	logDir := filepath.Join(dir, "log")
	if err := os.Mkdir(logDir, 0o755); err != nil {
		return fail(err)
	}
	p.outPath, p.errPath = filepath.Join(logDir, "stdout"), filepath.Join(logDir, "stderr")
	if p.outF, err = os.Create(p.outPath); err != nil {
		return fail(err)
	}
	if p.errF, err = os.Create(p.errPath); err != nil {
		return fail(err)
	}

	// The runner runs under a guard (this program again, see guard.go) in its own process
	// group: a Ctrl-C in the terminal reaches the bench only, and the runner gets exactly
	// one SIGTERM when the guard's stdin closes, i.e. when the bench stops it or dies, even
	// by SIGKILL.
	self, err := os.Executable()
	if err != nil {
		return fail(err)
	}
	cmd := exec.Command(self, bin, "up", "-c", p.cfg)
	cmd.Env = append(os.Environ(), guardEnv+"=1")
	cmd.Dir = dir
	cmd.Stdout, cmd.Stderr = p.outF, p.errF
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	stopIn, err := cmd.StdinPipe()
	if err != nil {
		return fail(err)
	}
	p.stopIn = stopIn
	p.began = time.Now()
	if err := cmd.Start(); err != nil {
		return fail(fmt.Errorf("start %s: %w", bin, err))
	}
	p.cmd = cmd
	go func() {
		p.exitErr = cmd.Wait()
		close(p.exited)
	}()
	return p, nil
}

// waitServing waits for the runner's `serving` line, bounded by within.
func (p *runnerProc) waitServing(ctx context.Context, within time.Duration) error {
	deadline := time.After(within)
	for {
		if m := servingRE.FindStringSubmatch(p.stdout()); m != nil {
			p.servingAt = time.Now()
			p.addr = m[1]
			p.ready, _ = strconv.Atoi(m[2])
			p.total, _ = strconv.Atoi(m[3])
			return nil
		}
		select {
		case <-p.exited:
			return fmt.Errorf("runner exited before serving: %v", p.exitErr)
		case <-deadline:
			return fmt.Errorf("runner not serving after %s", within)
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
	}
}

func (p *runnerProc) stdout() string {
	if p.logs != nil {
		return p.logs[0]
	}
	b, _ := os.ReadFile(p.outPath)
	return string(b)
}

func (p *runnerProc) stderr() string {
	if p.logs != nil {
		return p.logs[1]
	}
	b, _ := os.ReadFile(p.errPath)
	return string(b)
}

// withLogs adds the runner's output to a non-nil err.
func (p *runnerProc) withLogs(err error) error {
	if err == nil || p.outPath == "" {
		return err
	}
	return fmt.Errorf("%w\nrunner stdout:\n%s\nrunner stderr (last 3000 bytes):\n%s", err, p.stdout(), tail(p.stderr(), 3000))
}

// url of a plugin's root through the runner's proxy.
func (p *runnerProc) url(plugin string) string {
	return "http://" + p.addr + "/plugins/" + plugin + "/"
}

// id is the runner's instance id (its containers' io.xcore.runner label).
func (p *runnerProc) id() string {
	b, _ := os.ReadFile(filepath.Join(p.dir, ".runner", "runner-id"))
	return strings.TrimSpace(string(b))
}

// pid of the runner itself: the guard's child.
func (p *runnerProc) pid() (int, error) {
	guard := p.cmd.Process.Pid
	if b, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%d/children", guard, guard)); err == nil {
		if f := strings.Fields(string(b)); len(f) > 0 {
			return strconv.Atoi(f[0])
		}
	}
	// No /proc/…/children: scan for the process whose parent is the guard.
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid)); err == nil {
			s := string(b)
			if i := strings.LastIndexByte(s, ')'); i > 0 {
				if f := strings.Fields(s[i+1:]); len(f) > 1 && f[1] == strconv.Itoa(guard) {
					return pid, nil
				}
			}
		}
	}
	return 0, fmt.Errorf("no child process of the guard %d", guard)
}

// rss is the runner's VmRSS in bytes.
func (p *runnerProc) rss() (int64, error) {
	pid, err := p.pid()
	if err != nil {
		return 0, err
	}
	return vmRSS(pid)
}

func vmRSS(pid int) (int64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			f := strings.Fields(rest) // "12345 kB"
			if len(f) == 2 && f[1] == "kB" {
				kb, err := strconv.ParseInt(f[0], 10, 64)
				return kb << 10, err
			}
		}
	}
	return 0, fmt.Errorf("no VmRSS in /proc/%d/status", pid)
}

// containers lists the ids of the runner's running containers of plugin ("" = all).
func (p *runnerProc) containers(ctx context.Context, plugin string) ([]string, error) {
	id := p.id()
	if id == "" {
		return nil, errors.New("runner id not written yet")
	}
	args := []string{"ps", "-q", "--filter", "label=io.xcore.runner=" + id}
	if plugin != "" {
		args = append(args, "--filter", "label=io.xcore.plugin="+plugin)
	}
	out, err := docker(ctx, args...)
	return strings.Fields(out), err
}

// stop has the guard SIGTERM the runner (once) and waits for it to exit (SIGKILL to the
// process group after runnerExitIn), then removes whatever still carries the runner's
// label: nothing, if it cleaned up as it should. Then it removes the temp dir.
func (p *runnerProc) stop() error {
	if p.stopped {
		return nil
	}
	p.stopped = true
	defer func() {
		p.logs = &[2]string{p.stdout(), p.stderr()}
		p.closeFiles()
		if !p.keepDir {
			_ = os.RemoveAll(p.dir)
		}
	}()
	var err error
	exitIn := p.exitIn
	if exitIn == 0 {
		exitIn = runnerExitIn
	}
	begin := time.Now()
	_ = p.stopIn.Close()
	select {
	case <-p.exited:
	case <-time.After(exitIn):
		_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
		<-p.exited
		err = fmt.Errorf("runner did not exit within %s of SIGTERM; killed", exitIn)
	}
	p.stopTook = time.Since(begin)
	if p.exitErr != nil && err == nil {
		err = fmt.Errorf("runner exited with %v after SIGTERM", p.exitErr)
	}
	left, clean := removeRunnerLeftovers(p.dir)
	if left > 0 && err == nil {
		err = fmt.Errorf("runner left %d container(s) behind after SIGTERM (removed now)", left)
	}
	p.keepDir = !clean // for cleanOwn() at the end of the run, which tries again
	return err
}

// finish stops the runner and returns err joined with the stop's error, with the
// runner's output when either is not nil.
func (p *runnerProc) finish(err error) error {
	return p.withLogs(errors.Join(err, p.stop()))
}

func (p *runnerProc) closeFiles() {
	for _, f := range []*os.File{p.outF, p.errF} {
		if f != nil {
			_ = f.Close()
		}
	}
}

// removeRunnerLeftovers removes the containers and network of the runner whose state is
// under dir (if its id was written) and returns how many containers it found. A runner
// killed while it was creating containers can still have creations in flight in the
// engine, so it tries a few times; clean reports whether nothing is left.
func removeRunnerLeftovers(dir string) (found int, clean bool) {
	b, err := os.ReadFile(filepath.Join(dir, ".runner", "runner-id"))
	id := strings.TrimSpace(string(b))
	if err != nil || id == "" {
		return 0, true
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	network := "xcore-" + id
	for attempt := range 4 {
		if attempt > 0 {
			time.Sleep(time.Second)
		}
		ids := dockerIDs(ctx, "label=io.xcore.runner="+id)
		if attempt == 0 {
			found = len(ids)
		}
		if len(ids) > 0 {
			_, _ = docker(ctx, append([]string{"rm", "-f"}, ids...)...)
		}
		out, err := docker(ctx, "network", "ls", "-q", "--filter", "name=^"+network+"$")
		if err != nil {
			continue
		}
		if out != "" {
			if _, err := docker(ctx, "network", "rm", network); err != nil {
				if staleEndpoints(ctx, network, id, err) {
					return found, true
				}
				continue
			}
		}
		if len(dockerIDs(ctx, "label=io.xcore.runner="+id)) == 0 {
			return found, true
		}
	}
	progress("cleanup: the containers or network of runner %s are not all gone; trying again at the end", id)
	return found, false
}

// staleEndpoints recognises a network the engine will not remove although no container is
// on it ("has active endpoints" with no container left, moby/moby#42119: Docker 20.10 can
// keep an endpoint of a container removed while it was being started). Retrying is
// futile until dockerd restarts, so the bench says so once and lets the temp dir go.
func staleEndpoints(ctx context.Context, network, runner string, rmErr error) bool {
	if !strings.Contains(rmErr.Error(), "has active endpoints") {
		return false
	}
	if len(dockerIDs(ctx, "network="+network)) > 0 || len(dockerIDs(ctx, "label=io.xcore.runner="+runner)) > 0 {
		return false
	}
	progress("cleanup: network %s has no container left but the engine still counts endpoints on it "+
		"(stale endpoints, moby/moby#42119); it cannot be removed until dockerd restarts: then `docker network rm %s`", network, network)
	return true
}

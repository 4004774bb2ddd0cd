package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"time"
)

const (
	benchLabel    = "io.xcore.bench=1"
	tempPrefix    = "xcore-bench-"
	oldBody       = "v1 from hello\n"
	newBody       = "v2 from hello\n"
	runnerStartIn = 90 * time.Second // runner up → "serving" line
	answerWithin  = 30 * time.Second // a started container → first 200
	runnerExitIn  = 60 * time.Second // SIGTERM → exit
)

// runnerConfig is the brief's plugins.hcl; reach "" keeps the default ("published").
func runnerConfig(image, greeting, reach string) string {
	reachLine := ""
	if reach != "" {
		reachLine = fmt.Sprintf("  reach  = %q\n", reach)
	}
	return fmt.Sprintf(`runner {
  listen = "127.0.0.1:0"
  watch  = true
%s}

plugin "hello" {
  image = %q
  port  = 8080
  env   = { GREETING = %q }
  supervisor {
    health { path = "/healthz" }
    drain_timeout = "5s"
    stop_timeout = "2s"
  }
}
`, reachLine, image, greeting)
}

// writeAtomic writes via a temp file and a rename, as editors do.
func writeAtomic(path, body string) error {
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, []byte(body), 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

var servingRE = regexp.MustCompile(`serving http://([0-9.:]+)/plugins/\S* — (\d+)/(\d+) plugins ready`)

// runnerStartFirst measures `runner up` with watch = true: the config edit replaces the
// plugin start-first.
func runnerStartFirst(ctx context.Context, bin, image, reach string) (res *result, err error) {
	dir, err := os.MkdirTemp("", tempPrefix)
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)
	cfg := filepath.Join(dir, "plugins.hcl")
	if err := writeAtomic(cfg, runnerConfig(image, "v1", reach)); err != nil {
		return nil, err
	}

	// The runner writes to files, not pipes: if the bench dies, the runner must still be
	// able to log its shutdown (a write to a broken pipe on stdout/stderr kills a Go
	// program). In a subdirectory, so that the config watcher does not see the writes.
	logDir := filepath.Join(dir, "log")
	if err := os.Mkdir(logDir, 0o755); err != nil {
		return nil, err
	}
	outPath, errPath := filepath.Join(logDir, "stdout"), filepath.Join(logDir, "stderr")
	outF, err := os.Create(outPath)
	if err != nil {
		return nil, err
	}
	defer outF.Close()
	errF, err := os.Create(errPath)
	if err != nil {
		return nil, err
	}
	defer errF.Close()
	readLog := func(path string) string { b, _ := os.ReadFile(path); return string(b) }

	// The runner runs under a guard (this program again, see guard.go) in its own process
	// group: a Ctrl-C in the terminal reaches the bench only, and the runner gets exactly
	// one SIGTERM when the guard's stdin closes, i.e. when the bench stops it or dies, even
	// by SIGKILL.
	self, err := os.Executable()
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(self, bin, "up", "-c", cfg)
	cmd.Env = append(os.Environ(), guardEnv+"=1")
	cmd.Dir = dir
	cmd.Stdout, cmd.Stderr = outF, errF
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	stopIn, err := cmd.StdinPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", bin, err)
	}
	exited := make(chan struct{})
	var exitErr error
	go func() {
		exitErr = cmd.Wait()
		close(exited)
	}()
	defer func() {
		if stopErr := stopRunner(cmd, stopIn, exited, dir); stopErr != nil {
			err = errors.Join(err, stopErr)
			res = nil
		}
		if err != nil {
			err = fmt.Errorf("%w\nrunner stdout:\n%s\nrunner stderr (last 3000 bytes):\n%s",
				err, readLog(outPath), tail(readLog(errPath), 3000))
		}
	}()

	var addr string
	deadline := time.After(runnerStartIn)
	for addr == "" {
		if m := servingRE.FindStringSubmatch(readLog(outPath)); m != nil {
			if m[2] != m[3] {
				return nil, fmt.Errorf("runner serving with %s/%s plugins ready", m[2], m[3])
			}
			addr = m[1]
			break
		}
		select {
		case <-exited:
			return nil, fmt.Errorf("runner exited before serving: %v", exitErr)
		case <-deadline:
			return nil, fmt.Errorf("runner not serving after %s", runnerStartIn)
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
	url := "http://" + addr + "/plugins/hello/"
	progress("  runner serving on %s", addr)
	if err := waitAnswer(ctx, url, oldBody); err != nil {
		return nil, err
	}
	name := fmt.Sprintf("xcore runner, start-first (reach = %q)", reachOrDefault(reach))
	var edit time.Time
	res, err = measure(ctx, name, reachOrDefault(reach), url, newBody, func(context.Context) (time.Time, error) {
		if err := writeAtomic(cfg, runnerConfig(image, "v2", reach)); err != nil {
			return time.Time{}, err
		}
		edit = time.Now()
		return edit, nil
	})
	if err == nil {
		progress("  runner log, from the edit: %s", phases(readLog(errPath), edit))
	}
	return res, err
}

// phases reads the runner's log: when the replacement began, when generation 2 was
// healthy and routed, when generation 1 was gone, relative to edit.
func phases(log string, edit time.Time) string {
	var out []string
	for _, p := range []struct{ what, msg string }{
		{"replacement begun", `msg="replacing plugin" plugin=hello`},
		{"generation 2 ready", `msg="plugin ready" plugin=hello generation=2`},
		{"generation 1 removed", `msg="replaced plugin" plugin=hello`},
	} {
		at := "not yet"
		for _, line := range strings.Split(log, "\n") {
			if !strings.Contains(line, p.msg) || !strings.HasPrefix(line, "time=") {
				continue
			}
			if ts, err := time.Parse(time.RFC3339Nano, strings.Fields(line)[0][len("time="):]); err == nil {
				at = "+" + ts.Sub(edit).Round(time.Millisecond).String()
			}
			break
		}
		out = append(out, p.what+" "+at)
	}
	return strings.Join(out, ", ")
}

func reachOrDefault(reach string) string {
	if reach == "" {
		return "published"
	}
	return reach
}

// stopRunner has the guard SIGTERM the runner and waits for it to exit (SIGKILL to the
// process group after runnerExitIn), then removes whatever still carries the runner's
// label: nothing, if it cleaned up as it should.
func stopRunner(cmd *exec.Cmd, stopIn io.Closer, exited <-chan struct{}, dir string) error {
	var err error
	_ = stopIn.Close()
	select {
	case <-exited:
	case <-time.After(runnerExitIn):
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		<-exited
		err = fmt.Errorf("runner did not exit within %s of SIGTERM; killed", runnerExitIn)
	}
	if left := removeRunnerLeftovers(dir); left > 0 && err == nil {
		err = fmt.Errorf("runner left %d container(s) behind after SIGTERM (removed now)", left)
	}
	return err
}

// removeRunnerLeftovers removes the containers and network of the runner whose state is
// under dir (if its id was written) and returns how many containers it found.
func removeRunnerLeftovers(dir string) int {
	b, err := os.ReadFile(filepath.Join(dir, ".runner", "runner-id"))
	id := strings.TrimSpace(string(b))
	if err != nil || id == "" {
		return 0
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	ids := dockerIDs(ctx, "label=io.xcore.runner="+id)
	if len(ids) > 0 {
		_, _ = docker(ctx, append([]string{"rm", "-f"}, ids...)...)
	}
	if out, err := docker(ctx, "network", "ls", "-q", "--filter", "name=^xcore-"+id+"$"); err == nil && out != "" {
		_, _ = docker(ctx, "network", "rm", "xcore-"+id)
	}
	return len(ids)
}

// stopFirst measures what `docker compose up -d` does on a config change: stop and remove
// the container, then run the new one on the same fixed host port.
func stopFirst(ctx context.Context, image string) (*result, error) {
	port, err := freePort()
	if err != nil {
		return nil, err
	}
	defer removeByLabel()
	run := func(ctx context.Context, greeting string) (string, error) {
		return docker(ctx, "run", "-d", "--label", benchLabel,
			"-e", "GREETING="+greeting, "-e", "PORT=8080", "-e", "XCORE_PLUGIN=hello",
			"-p", "127.0.0.1:"+strconv.Itoa(port)+":8080", image)
	}
	id, err := run(ctx, "v1")
	if err != nil {
		return nil, err
	}
	url := "http://127.0.0.1:" + strconv.Itoa(port) + "/"
	progress("  container %.12s on 127.0.0.1:%d", id, port)
	if err := waitAnswer(ctx, url, oldBody); err != nil {
		return nil, err
	}
	return measure(ctx, "stop-first recreate, fixed port (`docker compose up -d`)", "stop-first", url, newBody, func(ctx context.Context) (time.Time, error) {
		edit := time.Now()
		if _, err := docker(ctx, "stop", "-t", "2", id); err != nil {
			return edit, err
		}
		if _, err := docker(ctx, "rm", id); err != nil {
			return edit, err
		}
		id2, err := run(ctx, "v2")
		if err == nil {
			progress("  stop + rm + run took %s", time.Since(edit).Round(time.Millisecond))
			progress("  container %.12s on 127.0.0.1:%d", id2, port)
		}
		return edit, err
	})
}

// freePort picks a free port on 127.0.0.1 (free now; docker binds it right after).
func freePort() (int, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port, nil
}

// waitAnswer polls url until it answers 200 with body want, bounded by answerWithin.
func waitAnswer(ctx context.Context, url, want string) error {
	ctx, cancel := context.WithTimeout(ctx, answerWithin)
	defer cancel()
	client := &http.Client{Transport: &http.Transport{Proxy: nil, DisableKeepAlives: true}, Timeout: 2 * time.Second}
	var last string
	for {
		status, body, err := get(ctx, client, url)
		switch {
		case err == nil && status == http.StatusOK && body == want:
			return nil
		case err != nil:
			last = err.Error()
		default:
			last = fmt.Sprintf("status %d body %q", status, body)
		}
		if err := sleep(ctx, 50*time.Millisecond); err != nil {
			return fmt.Errorf("%s did not answer %q: %w (last: %s)", url, want, err, last)
		}
	}
}

func tail(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return "…" + s[len(s)-n:]
}

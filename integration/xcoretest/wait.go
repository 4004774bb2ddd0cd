package xcoretest

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"regexp"
	"slices"
	"strings"
	"time"

	"github.com/testcontainers/testcontainers-go/wait"
)

// endpoints is what Run reads back from the runner, which picked its own ports.
type endpoints struct {
	admin  string // host:port of the admin API, from the runner's start-up line
	token  string // the admin token, from its file in the container
	listen string // host:port of the public proxy, from GET /v1/runner
}

func (e *endpoints) complete() bool { return e.admin != "" && e.token != "" && e.listen != "" }

// adminLine matches the line `runner up` prints once its admin API listens
// (cmd/runner/up.go): "admin http://127.0.0.1:40123/ (token in /state/admin.token)".
var adminLine = regexp.MustCompile(`admin http://([^/\s]+)/ \(token in `)

// adminReady waits until the runner has started and, unless anyState, every plugin is
// healthy; on the way it fills ep. It fails at once when the runner exits or (unless
// anyState) a plugin is failed.
type adminReady struct {
	ep       *endpoints
	plugins  []string // must all be listed (those of WithConfig are found by the API)
	timeout  time.Duration
	anyState bool
}

var (
	_ wait.Strategy        = (*adminReady)(nil)
	_ wait.StrategyTimeout = (*adminReady)(nil)
)

// pluginStatus is the part of GET /v1/plugins this package looks at.
type pluginStatus struct {
	Name      string `json:"name"`
	State     string `json:"state"`
	LastError string `json:"last_error"`
}

// Timeout implements wait.StrategyTimeout.
func (w *adminReady) Timeout() *time.Duration { return &w.timeout }

func (w *adminReady) String() string { return "xcore runner admin API: every plugin healthy" }

// WaitUntilReady implements wait.Strategy.
func (w *adminReady) WaitUntilReady(ctx context.Context, target wait.StrategyTarget) error {
	ctx, cancel := context.WithTimeout(ctx, w.timeout)
	defer cancel()
	hc := &http.Client{Timeout: 2 * time.Second}
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for {
		if err := exited(ctx, target); err != nil {
			return err
		}
		done, waiting, err := w.step(ctx, hc, target)
		if err != nil || done {
			return err
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("runner not ready within %s: waiting for %s", w.timeout, waiting)
		case <-tick.C:
		}
	}
}

// step learns what it can; it reports whether the runner is ready, else what it is
// waiting for. The error is final (a failed plugin).
func (w *adminReady) step(ctx context.Context, hc *http.Client, target wait.StrategyTarget) (bool, string, error) {
	ep := w.ep
	if ep.admin == "" {
		if m := adminLine.FindStringSubmatch(logText(ctx, target)); m != nil {
			ep.admin = m[1]
		} else {
			return false, "the runner's admin API (its \"admin http://...\" line)", nil
		}
	}
	if ep.token == "" {
		b, err := copyFrom(ctx, target, tokenPath)
		if err != nil {
			return false, "the admin token file " + tokenPath, nil
		}
		ep.token = strings.TrimSpace(string(b))
	}
	if ep.listen == "" {
		// GET /v1/runner names the proxy address once the runner's Start returned, that is
		// once every plugin (those of WithConfig too) is healthy or failed.
		var info struct {
			Listen string `json:"listen"`
		}
		switch code, err := w.get(ctx, hc, "/v1/runner", &info); {
		case err != nil:
			return false, "the admin API (" + err.Error() + ")", nil
		case code != http.StatusOK:
			return false, fmt.Sprintf("the admin API (GET /v1/runner: %d)", code), nil
		case info.Listen == "":
			return false, "the runner to start its plugins", nil
		}
		ep.listen = info.Listen
	}
	if w.anyState {
		return true, "", nil
	}
	var list []pluginStatus
	code, err := w.get(ctx, hc, "/v1/plugins", &list)
	if err != nil || code != http.StatusOK {
		return false, fmt.Sprintf("the admin API (GET /v1/plugins: %d %v)", code, err), nil
	}
	var notReady []string
	for _, p := range list {
		switch p.State {
		case "healthy":
		case "failed":
			return false, "", fmt.Errorf("plugin %s failed: %s", p.Name, p.LastError)
		default:
			notReady = append(notReady, p.Name+" ("+p.State+")")
		}
	}
	for _, name := range w.plugins {
		if !slices.ContainsFunc(list, func(p pluginStatus) bool { return p.Name == name }) {
			notReady = append(notReady, name+" (not listed yet)")
		}
	}
	if len(notReady) > 0 {
		return false, "plugins " + strings.Join(notReady, ", "), nil
	}
	return true, "", nil
}

func (w *adminReady) get(ctx context.Context, hc *http.Client, path string, v any) (int, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+w.ep.admin+path, nil)
	if err != nil {
		return 0, err
	}
	req.Header.Set("Authorization", "Bearer "+w.ep.token)
	resp, err := hc.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
		return resp.StatusCode, nil
	}
	if err := json.NewDecoder(resp.Body).Decode(v); err != nil {
		return resp.StatusCode, fmt.Errorf("decode %s: %w", path, err)
	}
	return resp.StatusCode, nil
}

// exited returns an error, with the end of the runner's log, once the container is no
// longer running (a config error, no Docker socket access...).
func exited(ctx context.Context, target wait.StrategyTarget) error {
	st, err := target.State(ctx)
	if err != nil {
		return fmt.Errorf("runner container state: %w", err)
	}
	if st.Running {
		return nil
	}
	return fmt.Errorf("runner exited (%s, code %d) before it was ready; its log ends:\n%s", st.Status, st.ExitCode, lastLines(logText(ctx, target), 20))
}

// logText is the runner's log so far (small: the runner logs a few lines per plugin
// start), or a note saying why there is none.
func logText(ctx context.Context, target wait.StrategyTarget) string {
	rc, err := target.Logs(ctx)
	if err != nil {
		return "(no log: " + err.Error() + ")"
	}
	defer rc.Close()
	b, err := io.ReadAll(io.LimitReader(rc, 4<<20))
	if err != nil {
		return string(b) + "\n(log cut: " + err.Error() + ")"
	}
	return string(b)
}

// lastLines is the last n lines of s.
func lastLines(s string, n int) string {
	var lines []string
	sc := bufio.NewScanner(strings.NewReader(s))
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		lines = append(lines, sc.Text())
		if len(lines) > n {
			lines = lines[1:]
		}
	}
	return strings.Join(lines, "\n")
}

// copyFrom reads a small file out of a container.
func copyFrom(ctx context.Context, c interface {
	CopyFileFromContainer(context.Context, string) (io.ReadCloser, error)
}, path string) ([]byte, error) {
	rc, err := c.CopyFileFromContainer(ctx, path)
	if err != nil {
		return nil, fmt.Errorf("copy %s from the runner: %w", path, err)
	}
	defer rc.Close()
	b, err := io.ReadAll(io.LimitReader(rc, 64<<10))
	if err != nil {
		return nil, fmt.Errorf("copy %s from the runner: %w", path, err)
	}
	return b, nil
}

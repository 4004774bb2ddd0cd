package xcoretest

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/testcontainers/testcontainers-go/wait"
)

// errAddrInUse: the runner could not bind a port picked for it (someone took it).
var errAddrInUse = errors.New("address already in use")

// adminReady waits, through the runner's admin API, until the runner has started and
// every plugin is healthy. It fails at once when the runner exits or a plugin is failed.
type adminReady struct {
	adminURL  string
	tokenFile string   // in the container
	plugins   []string // must all be listed (plugins of WithConfig are found by the API)
	timeout   time.Duration

	token string // read from tokenFile; set once WaitUntilReady got it
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

func (w *adminReady) Timeout() *time.Duration { return &w.timeout }

func (w *adminReady) String() string { return "xcore runner admin API: every plugin healthy" }

func (w *adminReady) WaitUntilReady(ctx context.Context, target wait.StrategyTarget) error {
	ctx, cancel := context.WithTimeout(ctx, w.timeout)
	defer cancel()
	hc := &http.Client{Timeout: 2 * time.Second}
	tick := time.NewTicker(200 * time.Millisecond)
	defer tick.Stop()
	waiting := "the admin token file " + w.tokenFile
	for {
		if err := exited(ctx, target); err != nil {
			return err
		}
		if w.token == "" {
			if b, err := copyFrom(ctx, target, w.tokenFile); err == nil {
				w.token = strings.TrimSpace(string(b))
			}
		}
		if w.token != "" {
			done, what, err := w.check(ctx, hc)
			if err != nil || done {
				return err
			}
			waiting = what
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("runner not ready within %s: waiting for %s", w.timeout, waiting)
		case <-tick.C:
		}
	}
}

// check asks the admin API once. It reports whether the runner is ready, else what it is
// waiting for; the error is final (a failed plugin).
func (w *adminReady) check(ctx context.Context, hc *http.Client) (bool, string, error) {
	// GET /v1/runner names the proxy address once Start returned, that is once every
	// plugin (including those of WithConfig) is healthy or failed.
	var info struct {
		Listen string `json:"listen"`
	}
	switch code, err := w.get(ctx, hc, "/v1/runner", &info); {
	case err != nil:
		return false, "the admin API (" + err.Error() + ")", nil
	case code == http.StatusNotFound: // an older runner: the plugin states must do
	case code != http.StatusOK:
		return false, fmt.Sprintf("the admin API (GET /v1/runner: %d)", code), nil
	case info.Listen == "":
		return false, "the runner to start its plugins", nil
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
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, w.adminURL+path, nil)
	if err != nil {
		return 0, err
	}
	req.Header.Set("Authorization", "Bearer "+w.token)
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
// longer running (a config error, a port taken, no Docker socket access...).
func exited(ctx context.Context, target wait.StrategyTarget) error {
	st, err := target.State(ctx)
	if err != nil {
		return fmt.Errorf("runner container state: %w", err)
	}
	if st.Running {
		return nil
	}
	tail := logTail(ctx, target, 20)
	err = fmt.Errorf("runner exited (%s, code %d) before it was ready; its log ends:\n%s", st.Status, st.ExitCode, tail)
	if strings.Contains(tail, "address already in use") {
		err = fmt.Errorf("%w: %w", errAddrInUse, err)
	}
	return err
}

// logTail is the last n lines of the target's log.
func logTail(ctx context.Context, target wait.StrategyTarget, n int) string {
	rc, err := target.Logs(ctx)
	if err != nil {
		return "(no log: " + err.Error() + ")"
	}
	defer rc.Close()
	var lines []string
	sc := bufio.NewScanner(rc)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		lines = append(lines, sc.Text())
		if len(lines) > n {
			lines = lines[1:]
		}
	}
	return strings.Join(lines, "\n")
}

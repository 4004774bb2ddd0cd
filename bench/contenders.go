package main

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"strconv"
	"strings"
	"time"
)

const (
	oldBody       = "v1 from hello\n"
	newBody       = "v2 from hello\n"
	runnerStartIn = 90 * time.Second // runner up → "serving" line
	answerWithin  = 30 * time.Second // a started container → first 200
	runnerExitIn  = 45 * time.Second // SIGTERM → exit
)

// runnerStartFirst measures `runner up` with watch = true: the config edit replaces the
// plugin start-first.
func runnerStartFirst(ctx context.Context, bin, image, reach string) (*result, error) {
	p, err := startRunner(ctx, bin, runnerConfig(image, reach, "", pluginConf{name: "hello", greeting: "v1"}), runnerStartIn)
	if err != nil {
		return nil, err
	}
	res, err := func() (*result, error) {
		if p.ready != p.total {
			return nil, fmt.Errorf("runner serving with %d/%d plugins ready", p.ready, p.total)
		}
		url := p.url("hello")
		progress("  runner serving on %s", p.addr)
		if err := waitAnswer(ctx, url, oldBody); err != nil {
			return nil, err
		}
		name := fmt.Sprintf("xcore runner, start-first (reach = %q)", reachOrDefault(reach))
		var edit time.Time
		res, err := measure(ctx, name, reachOrDefault(reach), url, newBody, func(context.Context) (time.Time, error) {
			if err := writeAtomic(p.cfg, runnerConfig(image, reach, "", pluginConf{name: "hello", greeting: "v2"})); err != nil {
				return time.Time{}, err
			}
			edit = time.Now()
			return edit, nil
		})
		if err == nil {
			progress("  runner log, from the edit: %s", phases(p.stderr(), edit))
		}
		return res, err
	}()
	if err := p.finish(err); err != nil {
		return nil, err
	}
	return res, nil
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

// stopFirst measures what `docker compose up -d` does on a config change: stop and remove
// the container, then run the new one on the same fixed host port.
func stopFirst(ctx context.Context, image string) (*result, error) {
	port, err := freePort()
	if err != nil {
		return nil, err
	}
	defer removeByLabel()
	run := func(ctx context.Context, greeting string) (string, error) {
		return docker(ctx, "run", "-d", "--label", benchLabel(),
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

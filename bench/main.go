// Command bench measures "replacement under load": what clients see while a plugin's
// configuration changes, for the xcore runner and for the usual alternative, in one run.
//
// Load: 8 keep-alive clients, each a loop of GET with a 10s timeout; a transport error or
// a non-200 is a failed request. Each contender gets about 6s of load; ~1.5s in, the
// greeting of the hello example plugin changes from "v1" to "v2", and the load goes on
// until "v2 from hello" has answered for at least 1s. Contenders:
//
//   - xcore runner, start-first: `bin/runner up` on a temp plugins.hcl with watch = true;
//     the change is an atomic rewrite of that file (the runner starts the new generation,
//     waits until it is healthy, swaps the proxy backend, then drains and removes the old
//     one). Twice: reach = "published" and reach = "address".
//   - stop-first recreate on a fixed port, what `docker compose up -d` does: docker stop
//     -t 2, docker rm, docker run of the new container on the same 127.0.0.1 port.
//
// Reported per contender: requests, failed requests, latency p50/p99/max over all
// requests, and the time from the change to the first answer of the new version. Failed
// counts depend on how fast clients retry (a refused connection fails in microseconds), so
// the failure window (first to last failed request) is printed too.
//
// Run it with `make bench` (builds bin/runner and the example images first), or
// `go run ./bench [-out bench/RESULTS.md] [-runner bin/runner]` from the module root. It
// prints one markdown table on stdout, progress on stderr, and with -out also writes the
// table with a header (date, nproc, Go and Docker Engine versions, command). Traffic goes
// to 127.0.0.1 only; everything is bounded (3 minutes in all). Containers it runs carry
// the label io.xcore.bench=1 and are removed at the start and at the end (also on error
// or Ctrl-C), like the runner's own containers and the temp dirs. Do not run two benches
// at once: each removes the other's leftovers.
package main

import (
	"bytes"
	"context"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"time"
)

const benchTimeout = 3 * time.Minute

func main() {
	if os.Getenv(guardEnv) == "1" {
		os.Exit(guard(os.Args[1:]))
	}
	os.Exit(run())
}

func run() int {
	out := flag.String("out", "", "also write the table, with a header, to this `file`")
	bin := flag.String("runner", "bin/runner", "the runner `binary`")
	image := flag.String("image", "xcore-examples/hello:latest", "the hello example `image`")
	flag.Parse()

	ctx, cancel := context.WithTimeout(context.Background(), benchTimeout)
	defer cancel()
	ctx, stop := signal.NotifyContext(ctx, os.Interrupt, syscall.SIGTERM)
	defer stop()

	cleanup()
	defer cleanup()

	engine, err := preflight(ctx, *bin, *image)
	if err != nil {
		return fail(err)
	}
	if *bin, err = filepath.Abs(*bin); err != nil { // the runner runs in its temp dir
		return fail(err)
	}
	contenders := []struct {
		title string
		run   func(context.Context) (*result, error)
	}{
		{"runner start-first (published)", func(ctx context.Context) (*result, error) {
			return runnerStartFirst(ctx, *bin, *image, "")
		}},
		{"runner start-first (address)", func(ctx context.Context) (*result, error) {
			return runnerStartFirst(ctx, *bin, *image, "address")
		}},
		{"stop-first recreate (docker stop + rm + run)", func(ctx context.Context) (*result, error) {
			return stopFirst(ctx, *image)
		}},
	}
	var results []*result
	for _, c := range contenders {
		progress("%s…", c.title)
		r, err := c.run(ctx)
		if err != nil {
			if cerr := ctx.Err(); cerr != nil {
				err = fmt.Errorf("interrupted or over the %s bound (%v): %w", benchTimeout, context.Cause(ctx), err)
			}
			return fail(fmt.Errorf("%s: %w", c.title, err))
		}
		results = append(results, r)
	}

	table := render(results)
	fmt.Print(table)
	if *out != "" {
		if err := os.WriteFile(*out, []byte(header(engine)+table), 0o644); err != nil {
			return fail(err)
		}
		progress("wrote %s", *out)
	}
	return 0
}

func fail(err error) int {
	fmt.Fprintf(os.Stderr, "bench: FAILED: %v\n", err)
	return 1
}

func progress(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "bench: "+format+"\n", args...)
}

// preflight checks the engine, the runner binary and the image, and returns the engine
// version.
func preflight(ctx context.Context, bin, image string) (string, error) {
	engine, err := docker(ctx, "version", "--format", "{{.Server.Version}}")
	if err != nil {
		return "", fmt.Errorf("Docker Engine not reachable: %w", err)
	}
	if _, err := os.Stat(bin); err != nil {
		return "", fmt.Errorf("runner binary: %w (make build)", err)
	}
	if _, err := docker(ctx, "image", "inspect", "--format", "{{.Id}}", image); err != nil {
		return "", fmt.Errorf("image %s: %w (make images)", image, err)
	}
	return engine, nil
}

// docker runs the docker CLI and returns its trimmed stdout.
func docker(ctx context.Context, args ...string) (string, error) {
	var stdout, stderr bytes.Buffer
	cmd := exec.CommandContext(ctx, "docker", args...)
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("docker %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(stderr.String()))
	}
	return strings.TrimSpace(stdout.String()), nil
}

func dockerIDs(ctx context.Context, filter string) []string {
	out, _ := docker(ctx, "ps", "-aq", "--filter", filter)
	return strings.Fields(out)
}

// removeByLabel removes every container labelled io.xcore.bench=1.
func removeByLabel() {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if ids := dockerIDs(ctx, "label="+benchLabel); len(ids) > 0 {
		if _, err := docker(ctx, append([]string{"rm", "-f"}, ids...)...); err != nil {
			progress("cleanup: %v", err)
		}
	}
}

// cleanup removes the bench's containers and the temp dirs of runners of an earlier,
// interrupted bench (with whatever their runners left behind).
func cleanup() {
	removeByLabel()
	dirs, _ := filepath.Glob(filepath.Join(os.TempDir(), tempPrefix+"*"))
	for _, dir := range dirs {
		if n := removeRunnerLeftovers(dir); n > 0 {
			progress("cleanup: removed %d container(s) of an interrupted runner (%s)", n, dir)
		}
		_ = os.RemoveAll(dir)
	}
}

func header(engine string) string {
	nproc := fmt.Sprint(runtime.NumCPU())
	if b, err := exec.Command("nproc").Output(); err == nil {
		nproc = strings.TrimSpace(string(b))
	}
	return fmt.Sprintf(`# Replacement under load

- date: %s
- nproc: %s, Go: %s, Docker Engine: %s
- command: %s

%d keep-alive clients, each a loop of GET with a %s timeout (a transport error or a non-200
is a failure), ~%s of load per contender; the plugin's GREETING changes v1 → v2 %s in; the
load goes on until v2 has answered for %s. Latencies are over all requests, failed ones
included. "edit→new version serving" runs from the config rewrite (runner) or from the
start of `+"`docker stop`"+` (stop-first) to the first completed v2 answer. Timings are noisy;
compare rows of the same run. See the package comment of bench/main.go.

`, time.Now().UTC().Format(time.RFC3339), nproc, runtime.Version(), engine, command(),
		clients, clientTimeout, minLoad, triggerAfter, newServingFor)
}

// command is how this program was started, with `go run` recognised.
func command() string {
	args := strings.Join(os.Args[1:], " ")
	cmd := strings.TrimSpace(os.Args[0] + " " + args)
	if strings.Contains(os.Args[0], "go-build") {
		cmd = strings.TrimSpace("go run ./bench " + args)
	}
	if os.Getenv("MAKELEVEL") != "" {
		return "`make bench` → `" + cmd + "`"
	}
	return "`" + cmd + "`"
}

func render(rs []*result) string {
	var b strings.Builder
	b.WriteString("| contender | requests | failed | failed % | p50 | p99 | max latency | edit→new version serving |\n")
	b.WriteString("|---|---:|---:|---:|---:|---:|---:|---:|\n")
	for _, r := range rs {
		fmt.Fprintf(&b, "| %s | %d | %d | %.2f %% | %s | %s | %s | %s |\n", r.name, r.requests, r.failed,
			pct(r.failed, r.requests), ms(r.quantile(0.5)), ms(r.quantile(0.99)), ms(r.max()), ms(r.editToNew))
	}
	base := rs[len(rs)-1] // stop-first
	var failed, maxLat, window []string
	for _, r := range rs[:len(rs)-1] {
		failed = append(failed, fmt.Sprintf("%s %d/%d = %s", r.label, r.failed, base.failed, ratio(float64(r.failed), float64(base.failed))))
		maxLat = append(maxLat, fmt.Sprintf("%s %s×", r.label, ratio(float64(r.max()), float64(base.max()))))
	}
	for _, r := range rs {
		w := "none"
		if r.failed > 0 {
			w = ms(r.failWindow())
		}
		window = append(window, fmt.Sprintf("%s %s", r.label, w))
	}
	fmt.Fprintf(&b, "\nRatio of failed requests runner/stop-first: %s. Max latency runner/stop-first: %s.\n",
		strings.Join(failed, ", "), strings.Join(maxLat, ", "))
	fmt.Fprintf(&b, "Failure window (first → last failed request): %s.\n", strings.Join(window, "; "))
	return b.String()
}

func pct(n, of int) float64 {
	if of == 0 {
		return 0
	}
	return 100 * float64(n) / float64(of)
}

func ratio(a, b float64) string {
	if b == 0 {
		if a == 0 {
			return "n/a (both 0)"
		}
		return "∞"
	}
	return fmt.Sprintf("%.3g", a/b)
}

// ms formats a duration in milliseconds, or seconds from 1s up.
func ms(d time.Duration) string {
	switch {
	case d < 10*time.Millisecond:
		return fmt.Sprintf("%.2f ms", float64(d)/float64(time.Millisecond))
	case d < time.Second:
		return fmt.Sprintf("%.0f ms", float64(d)/float64(time.Millisecond))
	default:
		return fmt.Sprintf("%.2f s", d.Seconds())
	}
}

// Command bench measures the xcore runner side by side with its anchors, in one run on
// one machine, and reports ratios (issue 9). Sections:
//
//  1. Proxy throughput and latency (throughput.go): wrk -t2 -c32 -d5s --latency, keep-alive,
//     to the hello plugin directly (published port, or container IP:8080), through the
//     runner, through an nginx of our own with upstream keepalive, and through a stock
//     httputil.ReverseProxy (reverseproxy.go: this program again); with -baseline REV,
//     also through the runner built at REV (baseline.go); in both reach modes; a 14-byte
//     GET, a ~1 KiB GET and a 1 MiB POST echoed back; with the CPU time each proxy
//     process used per request (/proc/<pid>/stat). Then a streaming (SSE)
//     response's time-to-first-byte (sse.go): 200 sequential GET /events (3 events, 5 ms
//     apart) per target on one keep-alive connection.
//  2. Replacement under load (replace.go, load.go, contenders.go): 8 clients while the
//     plugin's config changes; the runner's start-first replacement vs a stop-first
//     recreate on a fixed port.
//  3. Config save → new generation serving (configsave.go), next to the floor: create +
//     start + first 200 of the same image straight over the Engine API.
//  4. Cold start of 10 and 50 plugins (coldstart.go) vs 8-way parallel raw runs.
//  5. Runner RSS (VmRSS) idle with 1, 10, 50 and 200 plugins and under the load of section 1.
//  6. Many plugins (scale.go): a runner with 200 plugins (reach = "address") next to one
//     with 1: the idle CPU of both (/proc/<pid>/stat) and throughput to one plugin of each
//     in alternating rounds.
//  7. Registry (registry.go): a push to a followed tag (registry_poll = "1s") → new
//     generation serving, next to the floor: the engine pulling a new image + create +
//     start + first 200; then the runner's CPU per poll with 200 followed tags
//     (BenchmarkRegistryPoll).
//  8. Replicas (replicas.go): a CPU-bound endpoint (hello's GET /work?ms=2) with 1 vs 2
//     replicas of one core each, side by side; failed requests while one of 3 replicas is
//     killed under 8 clients; scaling 1 → 4, config save → 4/4 ready.
//
// Then where proxy time goes (profile.go): the top of a CPU profile of
// BenchmarkProxyHandler. -smoke (smoke.go, `make bench-smoke`, part of `make test`) runs
// every section at tiny scale in under a minute, as a test.
//
// Run it with `make bench` (builds bin/runner and the example images first, installs wrk
// and nginx-light from Debian when missing), or `go run ./bench [-out bench/RESULTS.md]`
// from the module root. It prints the markdown on stdout, progress on stderr, and with
// -out also writes it to the file. Traffic goes to 127.0.0.1 and to the bench's own
// containers only; every load is bounded in count and time, each section by a budget and
// the whole run by measureFor plus a bounded teardown.
//
// Two benches may run at once (owner.go): containers the bench runs itself carry the
// label io.xcore.bench=<run id> (its pid and process start time), and its temp dirs (the
// runners' state dirs, nginx's) are under $TMPDIR/xcore-bench-run-<run id>. At the end,
// also on error or Ctrl-C, it removes its own containers, its runners' containers and
// networks, its nginx processes and temp dirs; at the start, those of benches whose
// process is gone, and nothing of a bench that still runs.
package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// Time bounds: measuring stops at measureFor (each section also has a budget of its own,
// so that a slow, shared host loses the end of one section rather than whole sections);
// what is still running then is stopped and removed, within a bounded teardown
// (runnerExitIn, the docker rm's minute). `make bench` stays under 10 minutes on 2 cores.
var measureFor = 8*time.Minute + 45*time.Second

// env is what every section gets.
type env struct {
	bin, image string
	tools      *tools
	loadFor    time.Duration // per wrk run
	rss        *rssTable
	root       string // module root (for the profile)
	// baseline is the runner built at -baseline's revision (section 1 measures it next
	// to bin), named baselineName; "" without -baseline.
	baseline, baselineName string
}

// section is one part of the document. run returns its markdown; with an error, what it
// returns is partial (or empty) and the error says why.
type section struct {
	key, title string
	budget     time.Duration
	run        func(context.Context, *env) (string, error)
}

func main() {
	if os.Getenv(guardEnv) == "1" {
		os.Exit(guard(os.Args[1:]))
	}
	if spec := os.Getenv(reverseProxyEnv); spec != "" {
		os.Exit(reverseProxyMain(spec))
	}
	os.Exit(run())
}

func run() int {
	out := flag.String("out", "", "also write the markdown to this `file`")
	bin := flag.String("runner", "bin/runner", "the runner `binary`")
	image := flag.String("image", "xcore-examples/hello:latest", "the hello example `image`")
	loadgen := flag.String("loadgen", "auto", "load generator: auto (wrk when installed), wrk, or go")
	loadFor := flag.Duration("d", 5*time.Second, "`duration` of each throughput run")
	useNginx := flag.Bool("nginx", true, "measure nginx rows when nginx is installed (false: skip them)")
	smoke := flag.Bool("smoke", false, "smoke run (make bench-smoke, CI): every section at tiny scale, under a minute; "+
		"fails when a section fails or a request fails during a start-first replacement; -out must not be RESULTS.md")
	flag.Func("cold", "comma-separated plugin `counts` of the cold start section (default 10,50)", func(v string) error {
		coldSizes = nil
		for _, f := range strings.Split(v, ",") {
			n, err := strconv.Atoi(strings.TrimSpace(f))
			if err != nil || n < 1 || n > 99 {
				return fmt.Errorf("bad count %q (1…99)", f)
			}
			coldSizes = append(coldSizes, n)
		}
		return nil
	})
	flag.IntVar(&scaleSize, "scale", scaleSize, "plugin `count` of the many-plugins section (2…500)")
	baseline := flag.String("baseline", "", "also measure, in section 1, the runner built at this git `revision` (e.g. main, HEAD~3): "+
		"the CPU per request of a change side by side with what it replaces")
	only := flag.String("only", "", "comma-separated `sections` to run (proxy,replace,config,cold,scale,registry,replicas,profile); default all")
	flag.Parse()
	if scaleSize < 2 || scaleSize > 500 {
		return fail(fmt.Errorf("-scale %d: want 2…500", scaleSize))
	}
	budget := func(full time.Duration) time.Duration { return full }
	if *smoke {
		if *out != "" && filepath.Base(*out) == "RESULTS.md" {
			return fail(errors.New("-smoke: its figures are not results; do not write them to RESULTS.md"))
		}
		set := map[string]bool{}
		flag.Visit(func(f *flag.Flag) { set[f.Name] = true })
		smokeScale(set, loadgen, loadFor)
		budget = func(time.Duration) time.Duration { return smokeBudget }
	}

	ctx, cancel := context.WithTimeout(context.Background(), measureFor)
	defer cancel()
	ctx, stop := signal.NotifyContext(ctx, os.Interrupt, syscall.SIGTERM)
	defer stop()

	if err := initRun(); err != nil {
		return fail(err)
	}
	cleanupStale()
	defer cleanOwn()

	engine, err := preflight(ctx, *bin, *image)
	if err != nil {
		return fail(err)
	}
	e := &env{image: *image, loadFor: *loadFor, rss: &rssTable{}}
	if e.bin, err = filepath.Abs(*bin); err != nil { // the runners run in temp dirs
		return fail(err)
	}
	if e.tools, err = findTools(*loadgen, *useNginx); err != nil {
		return fail(err)
	}
	if e.root, err = moduleRoot(); err != nil {
		return fail(err)
	}
	if *baseline != "" {
		if e.baseline, e.baselineName, err = buildBaseline(ctx, e.root, *baseline); err != nil {
			return fail(err)
		}
	}
	begin := time.Now()
	loadAvg := loadAverage()

	// Run order: the profile first (CPU only, leaves nothing behind), then the document's
	// order; the RSS table is filled by sections 1, 4 and 6, so it comes last. The budgets
	// add up to more than measureFor: a section that ends early leaves its time to the
	// next ones, and a slow host loses the end of the run, not every section's end.
	sections := []section{
		{"profile", "Where proxy time goes", budget(time.Minute), profileSection},
		{"proxy", "1. Proxy throughput and latency", budget(proxyBudget(*baseline != "")), proxySection},
		{"replace", "2. Replacement under load", budget(75 * time.Second), replaceSection},
		{"config", "3. Config save → new generation serving", budget(90 * time.Second), configSection},
		{"cold", "4. Cold start", budget(220 * time.Second), coldSection},
		{"scale", "6. Many plugins: the route table and idle CPU", budget(150 * time.Second), scaleSection},
		{"registry", "7. Registry: tag moved → new generation serving", budget(75 * time.Second), registrySection},
		{"replicas", "8. Replicas: a CPU-bound plugin, a killed instance, scaling", budget(90 * time.Second), replicasSection},
		{"rss", "5. Runner memory (VmRSS)", time.Second, func(context.Context, *env) (string, error) { return e.rss.render(), nil }},
	}
	docOrder := []string{"proxy", "replace", "config", "cold", "rss", "scale", "registry", "replicas", "profile"}
	parts := map[string]string{}
	failed := 0
	for _, s := range sections {
		if *only != "" && s.key != "rss" && !contains(strings.Split(*only, ","), s.key) {
			continue
		}
		var md strings.Builder
		fmt.Fprintf(&md, "\n## %s\n\n", s.title)
		if ctx.Err() != nil && s.key != "rss" {
			failed++
			fmt.Fprintf(&md, "**Not measured:** the run was interrupted or reached its %s bound first.\n", measureFor)
			parts[s.key] = md.String()
			continue
		}
		progress("== %s (budget %s)", s.title, s.budget)
		t0 := time.Now()
		sctx, cancel := context.WithTimeoutCause(ctx, s.budget, fmt.Errorf("over the section's %s budget", s.budget))
		out, err := s.run(sctx, e)
		serr := sctx.Err() // before cancel(), which would make every section look cancelled
		cancel()
		md.WriteString(out)
		if err != nil {
			// A section cut short by its budget or the run's bound reports what it
			// measured (a partial table says so); only errors, an interrupt, or a
			// section with nothing to show fail the run.
			cut := errors.Is(serr, context.DeadlineExceeded) // budget or run bound, not Ctrl-C
			var broken *promiseBroken
			if out == "" || !cut || *smoke || errors.As(err, &broken) {
				failed++
			}
			switch {
			case ctx.Err() != nil:
				err = fmt.Errorf("interrupted or over the run's %s bound: %w", measureFor, err)
			case serr != nil:
				err = fmt.Errorf("%v: %w", context.Cause(sctx), err)
			}
			progress("%s: FAILED: %v", s.title, err)
			first, _, _ := strings.Cut(err.Error(), "\n")
			what := "Not measured"
			switch {
			case errors.As(err, new(*promiseBroken)):
				what = "Failed"
			case out != "":
				what = "Incomplete"
			}
			fmt.Fprintf(&md, "\n**%s:** `%s`\n", what, first)
		}
		parts[s.key] = md.String()
		progress("   (%s)", time.Since(t0).Round(time.Second))
	}
	var body strings.Builder
	for _, k := range docOrder {
		body.WriteString(parts[k])
	}
	var budgets []string
	for _, s := range sections[:len(sections)-1] {
		budgets = append(budgets, fmt.Sprintf("%s %s", s.key, s.budget))
	}
	loadAvg += " before, " + loadAverage() + " after"
	doc := header(engine, e.tools, loadAvg, strings.Join(budgets, ", "), time.Since(begin), *smoke) + body.String()
	fmt.Print(doc)
	if *out != "" {
		if err := os.WriteFile(*out, []byte(doc), 0o644); err != nil {
			return fail(err)
		}
		progress("wrote %s", *out)
	}
	progress("done in %s", time.Since(begin).Round(time.Second))
	if *smoke && time.Since(begin) > smokeGoal {
		progress("WARNING: the smoke run took %s, over its goal of %s", time.Since(begin).Round(time.Second), smokeGoal)
	}
	if failed > 0 {
		fmt.Fprintf(os.Stderr, "bench: FAILED: %d section(s) failed (see above)\n", failed)
		return 1
	}
	return 0
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if strings.TrimSpace(x) == s {
			return true
		}
	}
	return false
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

func moduleRoot() (string, error) {
	out, err := exec.Command("go", "env", "GOMOD").Output()
	mod := strings.TrimSpace(string(out))
	if err != nil || mod == "" || mod == os.DevNull {
		return "", fmt.Errorf("run the bench inside the module (go env GOMOD: %q, %v)", mod, err)
	}
	return filepath.Dir(mod), nil
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

func loadAverage() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "unknown"
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return "unknown"
	}
	return strings.Join(f[:3], " ")
}

func header(engine string, t *tools, loadAvg, budgets string, took time.Duration, smoke bool) string {
	nproc := fmt.Sprint(runtime.NumCPU())
	if b, err := exec.Command("nproc").Output(); err == nil {
		nproc = strings.TrimSpace(string(b))
	}
	title := "# Benchmarks: the runner side by side with its anchors\n"
	if smoke {
		title = "# Bench SMOKE run: every section at tiny scale — these figures are not results\n"
	}
	return title + fmt.Sprintf(`
- date: %s (run took %s)
- nproc: %s, Go: %s, Docker Engine: %s
- load generator: %s; nginx: %s
- load average (1, 5, 15 min): %s the run (the host was not otherwise quiesced)
- time budgets: %s; the whole run %s (a section cut short says so)
- command: %s

Every number below was measured in this one run on this machine; compare rows of the same
run, and read ratios rather than absolute figures. Client, proxy, plugin and Docker share
the same %s cores. How each section measures is written under its table and in the package
comment of bench/main.go.
`, time.Now().UTC().Format(time.RFC3339), took.Round(time.Second), nproc, runtime.Version(), engine,
		t.loadDesc(), t.nginxDesc(), loadAvg, budgets, measureFor, command(), nproc)
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

func mib(b int64) string { return fmt.Sprintf("%.1f MiB", float64(b)/(1<<20)) }

// metOrMissed renders a goal check.
func metOrMissed(ok bool) string {
	if ok {
		return "met"
	}
	return "**missed**"
}

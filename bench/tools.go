package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// Load shape of the throughput runs (issue 9): wrk -t2 -c32 --latency.
const (
	loadThreads = 2
	loadConns   = 32
	maxPerConn  = 1_000_000 // the Go load generator's count bound per connection
	loadTimeout = 10 * time.Second
)

// tools are the external programs the bench uses, when installed.
type tools struct {
	wrk, wrkVersion     string // "" wrk: the Go load generator
	nginx, nginxVersion string // "" nginx: its rows are not measured
	wrkMissing          bool   // -loadgen auto and no wrk
	nginxSkip           string // why there are no nginx rows
}

func findTools(loadgen string, useNginx bool) (*tools, error) {
	t := &tools{}
	switch loadgen {
	case "auto", "wrk":
		if p, err := lookPath("wrk"); err == nil {
			t.wrk = p
			out, _ := exec.Command(p, "--version").CombinedOutput() // prints usage, exits 1
			t.wrkVersion = strings.TrimSpace(strings.SplitN(string(out), "[", 2)[0])
		} else if loadgen == "wrk" {
			return nil, fmt.Errorf("-loadgen wrk: %w (apt-get install wrk)", err)
		} else {
			t.wrkMissing = true
		}
	case "go":
	default:
		return nil, fmt.Errorf("-loadgen %q: want auto, wrk or go", loadgen)
	}
	switch p, err := lookPath("nginx"); {
	case !useNginx:
		t.nginxSkip = "-nginx=false"
	case err != nil:
		t.nginxSkip = "nginx not installed"
	default:
		t.nginx = p
		out, _ := exec.Command(p, "-v").CombinedOutput()
		t.nginxVersion = strings.TrimPrefix(strings.TrimSpace(string(out)), "nginx version: ")
	}
	return t, nil
}

// lookPath also looks in the sbin directories, where Debian puts nginx.
func lookPath(name string) (string, error) {
	if p, err := exec.LookPath(name); err == nil {
		return p, nil
	}
	for _, dir := range []string{"/usr/sbin", "/usr/local/sbin", "/sbin"} {
		p := filepath.Join(dir, name)
		if st, err := os.Stat(p); err == nil && !st.IsDir() && st.Mode()&0o111 != 0 {
			return p, nil
		}
	}
	return "", fmt.Errorf("%s not found in PATH or sbin", name)
}

func (t *tools) loadDesc() string {
	if t.wrk != "" {
		return fmt.Sprintf("%s (`-t%d -c%d --latency`)", t.wrkVersion, loadThreads, loadConns)
	}
	why := "-loadgen go"
	if t.wrkMissing {
		why = "wrk is not installed"
	}
	return fmt.Sprintf("the bench's Go load generator, %d keep-alive connections (%s)", loadConns, why)
}

func (t *tools) nginxDesc() string {
	switch {
	case t.nginx == "" && t.nginxSkip == "-nginx=false":
		return "not used (-nginx=false): its rows are skipped"
	case t.nginx == "":
		return "not installed (`apt-get install nginx-light`): its rows are skipped"
	}
	return t.nginxVersion
}

// request is one kind of request the throughput runs send.
type request struct {
	method, path string // path relative to the plugin's root, e.g. "echo/?q=…"
	body         []byte
}

// loadResult is what one load run measured.
type loadResult struct {
	requests int
	rps      float64
	p50, p99 time.Duration
	errors   int // socket errors + non-2xx/3xx
}

// load runs the load generator against base+req.path for d.
func (t *tools) load(ctx context.Context, tmp, base string, req request, d time.Duration) (*loadResult, error) {
	if t.wrk != "" {
		return t.runWrk(ctx, tmp, base+req.path, req, d)
	}
	return goLoad(ctx, base+req.path, req, d)
}

func (t *tools) runWrk(ctx context.Context, tmp, url string, req request, d time.Duration) (*loadResult, error) {
	args := []string{fmt.Sprintf("-t%d", loadThreads), fmt.Sprintf("-c%d", loadConns),
		fmt.Sprintf("-d%ds", int(d.Round(time.Second)/time.Second)), "--timeout", "10s", "--latency"}
	if req.method != http.MethodGet {
		script := filepath.Join(tmp, "request.lua")
		lua := fmt.Sprintf("wrk.method = %q\nwrk.body = string.rep(\"x\", %d)\nwrk.headers[\"Content-Type\"] = \"application/octet-stream\"\n",
			req.method, len(req.body))
		if !bytes.Equal(req.body, bytes.Repeat([]byte("x"), len(req.body))) {
			return nil, errors.New("wrk script: bodies other than x… are not supported")
		}
		if err := os.WriteFile(script, []byte(lua), 0o644); err != nil {
			return nil, err
		}
		args = append(args, "-s", script)
	}
	args = append(args, url)
	ctx, cancel := context.WithTimeout(ctx, d+30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, t.wrk, args...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return nil, fmt.Errorf("wrk %s: %w: %s%s", strings.Join(args, " "), err, stdout.String(), stderr.String())
	}
	r, err := parseWrk(stdout.String())
	if err != nil {
		return nil, fmt.Errorf("wrk %s: %w:\n%s", strings.Join(args, " "), err, stdout.String())
	}
	return r, nil
}

var (
	wrkRPS      = regexp.MustCompile(`(?m)^Requests/sec:\s+([0-9.]+)`)
	wrkRequests = regexp.MustCompile(`(?m)^\s*(\d+) requests in `)
	wrkLatency  = regexp.MustCompile(`(?m)^\s+(50|99)%\s+([0-9.]+)(us|ms|s|m)\s*$`)
	wrkSocket   = regexp.MustCompile(`Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)`)
	wrkNon2xx   = regexp.MustCompile(`Non-2xx or 3xx responses: (\d+)`)
)

func parseWrk(out string) (*loadResult, error) {
	r := &loadResult{}
	m := wrkRPS.FindStringSubmatch(out)
	if m == nil {
		return nil, errors.New("no Requests/sec")
	}
	r.rps, _ = strconv.ParseFloat(m[1], 64)
	if m := wrkRequests.FindStringSubmatch(out); m != nil {
		r.requests, _ = strconv.Atoi(m[1])
	}
	for _, m := range wrkLatency.FindAllStringSubmatch(out, -1) {
		d, err := time.ParseDuration(m[2] + m[3])
		if err != nil {
			return nil, err
		}
		if m[1] == "50" {
			r.p50 = d
		} else {
			r.p99 = d
		}
	}
	if r.p50 == 0 || r.p99 == 0 {
		return nil, errors.New("no latency distribution")
	}
	if m := wrkSocket.FindStringSubmatch(out); m != nil {
		for _, s := range m[1:] {
			n, _ := strconv.Atoi(s)
			r.errors += n
		}
	}
	if m := wrkNon2xx.FindStringSubmatch(out); m != nil {
		n, _ := strconv.Atoi(m[1])
		r.errors += n
	}
	return r, nil
}

// goLoad is the fallback when wrk is missing: loadConns goroutines, each a keep-alive loop
// of requests for d (and at most maxPerConn requests).
func goLoad(ctx context.Context, url string, req request, d time.Duration) (*loadResult, error) {
	tr := &http.Transport{Proxy: nil, MaxIdleConnsPerHost: loadConns, MaxConnsPerHost: loadConns, DisableCompression: true}
	defer tr.CloseIdleConnections()
	client := &http.Client{Transport: tr, Timeout: loadTimeout}
	ctx, cancel := context.WithTimeout(ctx, d+loadTimeout)
	defer cancel()
	begin := time.Now()
	deadline := begin.Add(d)
	var (
		mu     sync.Mutex
		lats   []time.Duration
		errs   int
		wg     sync.WaitGroup
		bodyRd = func() io.Reader { return bytes.NewReader(req.body) }
	)
	for range loadConns {
		wg.Go(func() {
			mine := make([]time.Duration, 0, 1<<14)
			bad := 0
			for n := 0; n < maxPerConn && time.Now().Before(deadline) && ctx.Err() == nil; n++ {
				hr, err := http.NewRequestWithContext(ctx, req.method, url, bodyRd())
				if err != nil {
					bad++
					break
				}
				t0 := time.Now()
				resp, err := client.Do(hr)
				if err == nil {
					_, err = io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
					if resp.StatusCode >= 400 {
						bad++
					}
				}
				if err != nil {
					bad++
				}
				mine = append(mine, time.Since(t0))
			}
			mu.Lock()
			lats = append(lats, mine...)
			errs += bad
			mu.Unlock()
		})
	}
	wg.Wait()
	if ctx.Err() != nil {
		return nil, ctx.Err()
	}
	took := time.Since(begin)
	if len(lats) == 0 {
		return nil, errors.New("no request completed")
	}
	slices.Sort(lats)
	q := func(f float64) time.Duration { return lats[int(float64(len(lats)-1)*f)] }
	return &loadResult{requests: len(lats), rps: float64(len(lats)) / took.Seconds(), p50: q(0.5), p99: q(0.99), errors: errs}, nil
}

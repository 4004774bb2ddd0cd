package main

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// reverseProxyEnv makes this program a stock httputil.ReverseProxy, the Go anchor of
// section 1: "<listen> <upstream>" (host:port each). /plugins/hello/ is stripped and the
// rest sent to the upstream over an http.Transport that keeps 64 idle connections (as
// nginx's keepalive 64; the default of 2 would dial most requests anew under 32
// connections of load). Nothing else: no limits, no route table, no metrics.
const reverseProxyEnv = "XCORE_BENCH_REVERSEPROXY"

func reverseProxyMain(spec string) int {
	listen, upstream, ok := strings.Cut(spec, " ")
	if !ok {
		fmt.Fprintf(os.Stderr, "bench reverseproxy: %s=%q: want \"<listen> <upstream>\"\n", reverseProxyEnv, spec)
		return 2
	}
	target := &url.URL{Scheme: "http", Host: upstream}
	rp := &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			pr.SetURL(target)
			pr.SetXForwarded()
		},
		Transport: &http.Transport{Proxy: nil, MaxIdleConnsPerHost: 64, DisableCompression: true},
	}
	mux := http.NewServeMux()
	mux.Handle("/plugins/hello/", http.StripPrefix("/plugins/hello", rp))
	err := http.ListenAndServe(listen, mux)
	fmt.Fprintf(os.Stderr, "bench reverseproxy: %v\n", err)
	return 1
}

// reverseProxyProc is a running stock ReverseProxy (this program again).
type reverseProxyProc struct {
	port   int
	cmd    *exec.Cmd
	exited chan struct{}
}

// startReverseProxy runs this program as a stock ReverseProxy of /plugins/hello/ to
// upstream (host:port), killed with the bench if the bench dies.
func startReverseProxy(ctx context.Context, upstream string) (*reverseProxyProc, error) {
	self, err := os.Executable()
	if err != nil {
		return nil, err
	}
	port, err := freePort()
	if err != nil {
		return nil, err
	}
	r := &reverseProxyProc{port: port, exited: make(chan struct{})}
	r.cmd = exec.Command(self)
	r.cmd.Env = append(os.Environ(), reverseProxyEnv+"="+r.addr()+" "+upstream)
	r.cmd.Stderr = os.Stderr
	r.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := r.cmd.Start(); err != nil {
		return nil, fmt.Errorf("start the stock ReverseProxy: %w", err)
	}
	go func() { _ = r.cmd.Wait(); close(r.exited) }()
	deadline := time.Now().Add(10 * time.Second)
	for {
		c, err := net.DialTimeout("tcp", r.addr(), time.Second)
		if err == nil {
			c.Close()
			return r, nil
		}
		select {
		case <-r.exited:
			return nil, fmt.Errorf("the stock ReverseProxy exited at start")
		case <-ctx.Done():
			r.stop()
			return nil, ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			r.stop()
			return nil, fmt.Errorf("the stock ReverseProxy is not listening on %s after 10s", r.addr())
		}
	}
}

func (r *reverseProxyProc) addr() string { return "127.0.0.1:" + strconv.Itoa(r.port) }

func (r *reverseProxyProc) stop() {
	_ = r.cmd.Process.Kill()
	<-r.exited
}

// procTree is pid and its descendants (nginx: the master and its workers), from
// /proc/<pid>/task/<pid>/children.
func procTree(pid int) []int {
	pids := []int{pid}
	for i := 0; i < len(pids); i++ {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%d/children", pids[i], pids[i]))
		if err != nil {
			continue
		}
		for _, f := range strings.Fields(string(b)) {
			if c, err := strconv.Atoi(f); err == nil {
				pids = append(pids, c)
			}
		}
	}
	return pids
}

// cpuOf is the CPU time (utime + stime of every thread) the processes pids have used.
func cpuOf(pids []int) (time.Duration, error) {
	var ticks int64
	for _, pid := range pids {
		t, err := cpuTicks(pid)
		if err != nil {
			return 0, err
		}
		ticks += t
	}
	return time.Duration(ticks) * time.Second / time.Duration(ticksPerSecond()), nil
}

var ticksPerSecond = sync.OnceValue(clockTicks)

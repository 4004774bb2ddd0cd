// Command selfcheck is a plugin that reports, from inside its container, what the engine
// actually applied: the limits and hardening a runner promises can be checked where they
// hold, on whatever node runs it (the swarm integration test asks every task).
//
//	GET /            "<greeting> from <hostname>": which instance answered
//	GET /healthz     ok
//	GET /sandbox     JSON: uid, gid, cap_eff, cap_bnd, no_new_privs, memory and pids limits, cpu
//	                 quota, read-only root, writable /tmp and its mount options, PID 1
//	GET /dial?addr=host:port  tries a TCP connection: "connected" or "error: ..."
//
// Environment: GREETING (default "hello").
package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"log"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/xcore/runner/plugin"
)

// report is what /sandbox answers. Limits are -1 when unlimited, 0 when unknown.
type report struct {
	Hostname     string `json:"hostname"`
	UID          string `json:"uid"` // effective
	GID          string `json:"gid"`
	CapEff       string `json:"cap_eff"` // hex mask
	CapBnd       string `json:"cap_bnd"` // the bounding set: what the process could ever gain (0 with cap_drop ALL)
	NoNewPrivs   string `json:"no_new_privs"`
	Seccomp      string `json:"seccomp"`
	MemoryLimit  int64  `json:"memory_limit"`
	SwapLimit    int64  `json:"swap_limit"` // memory+swap (cgroup v1 memsw) or swap (v2); 0 when not set
	PidsLimit    int64  `json:"pids_limit"`
	CPUQuotaUS   int64  `json:"cpu_quota_us"`
	CPUPeriodUS  int64  `json:"cpu_period_us"`
	RootReadOnly bool   `json:"root_read_only"`
	TmpWritable  bool   `json:"tmp_writable"`
	TmpOptions   string `json:"tmp_options"`
	PID1         string `json:"pid1"` // the command of PID 1 (an init when the engine adds one)
}

func main() {
	greeting := os.Getenv("GREETING")
	if greeting == "" {
		greeting = "hello"
	}
	host, _ := os.Hostname()
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) { fmt.Fprintln(w, "ok") })
	mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, r *http.Request) { fmt.Fprintf(w, "%s from %s\n", greeting, host) })
	mux.HandleFunc("GET /sandbox", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(inspect(host))
	})
	mux.HandleFunc("GET /dial", func(w http.ResponseWriter, r *http.Request) {
		c, err := net.DialTimeout("tcp", r.URL.Query().Get("addr"), 2*time.Second)
		if err != nil {
			fmt.Fprintf(w, "error: %v\n", err)
			return
		}
		c.Close()
		fmt.Fprintln(w, "connected")
	})
	if err := plugin.Serve(mux); err != nil {
		log.Fatalf("serve: %v", err)
	}
}

func inspect(host string) report {
	rep := report{Hostname: host}
	status := fields("/proc/self/status")
	rep.UID, rep.GID = word(status["Uid"], 1), word(status["Gid"], 1)
	rep.CapEff, rep.CapBnd, rep.NoNewPrivs, rep.Seccomp = status["CapEff"], status["CapBnd"], status["NoNewPrivs"], status["Seccomp"]
	// cgroup v1 mounts one hierarchy per controller, v2 one for all.
	rep.MemoryLimit = first(limit("/sys/fs/cgroup/memory/memory.limit_in_bytes"), limit("/sys/fs/cgroup/memory.max"))
	rep.SwapLimit = first(limit("/sys/fs/cgroup/memory/memory.memsw.limit_in_bytes"), limit("/sys/fs/cgroup/memory.swap.max"))
	rep.PidsLimit = first(limit("/sys/fs/cgroup/pids/pids.max"), limit("/sys/fs/cgroup/pids.max"))
	rep.CPUQuotaUS = first(limit("/sys/fs/cgroup/cpu/cpu.cfs_quota_us"), limit("/sys/fs/cgroup/cpu,cpuacct/cpu.cfs_quota_us"))
	rep.CPUPeriodUS = first(limit("/sys/fs/cgroup/cpu/cpu.cfs_period_us"), limit("/sys/fs/cgroup/cpu,cpuacct/cpu.cfs_period_us"))
	if b, err := os.ReadFile("/sys/fs/cgroup/cpu.max"); err == nil { // v2: "<quota|max> <period>"
		f := strings.Fields(string(b))
		if len(f) == 2 {
			rep.CPUQuotaUS, rep.CPUPeriodUS = parseLimit(f[0]), parseLimit(f[1])
		}
	}
	err := os.WriteFile("/.selfcheck", []byte("x"), 0o600)
	rep.RootReadOnly = errors.Is(err, syscall.EROFS)
	if err == nil {
		_ = os.Remove("/.selfcheck")
	}
	if f, err := os.CreateTemp("/tmp", "selfcheck"); err == nil {
		rep.TmpWritable = true
		f.Close()
		_ = os.Remove(f.Name())
	}
	if b, err := os.ReadFile("/proc/self/mounts"); err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			if f := strings.Fields(line); len(f) >= 4 && f[1] == "/tmp" {
				rep.TmpOptions = f[2] + " " + f[3]
			}
		}
	}
	if b, err := os.ReadFile("/proc/1/cmdline"); err == nil {
		rep.PID1 = strings.TrimSpace(strings.ReplaceAll(string(b), "\x00", " "))
	}
	return rep
}

// fields reads a "Key:\tvalue" file.
func fields(path string) map[string]string {
	out := map[string]string{}
	b, err := os.ReadFile(path)
	if err != nil {
		return out
	}
	for _, line := range strings.Split(string(b), "\n") {
		if k, v, ok := strings.Cut(line, ":"); ok {
			out[k] = strings.TrimSpace(v)
		}
	}
	return out
}

func word(s string, i int) string {
	if f := strings.Fields(s); len(f) > i {
		return f[i]
	}
	return ""
}

// limit reads a cgroup limit file: -1 for "max" or v1's "unlimited" (a huge number),
// 0 when it cannot be read.
func limit(path string) int64 {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0
	}
	return parseLimit(strings.TrimSpace(string(b)))
}

func parseLimit(s string) int64 {
	if s == "max" {
		return -1
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil {
		return 0
	}
	if n >= 1<<62 { // v1 writes "no limit" as PAGE_COUNTER_MAX pages in bytes
		return -1
	}
	return n
}

func first(vals ...int64) int64 {
	for _, v := range vals {
		if v != 0 {
			return v
		}
	}
	return 0
}

package integration

import (
	"bufio"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"
)

// startRunnerWithEnv is startRunner with extra environment variables for the runner
// process (NAME=value), e.g. a secret for env() in the config: the tests run in
// parallel, so the test process's own environment is not the place for it. Files are
// written to the runner's directory (name → content, 0600) before it starts.
func startRunnerWithEnv(t *testing.T, hcl string, env []string, files map[string]string, extraArgs ...string) *runnerProc {
	t.Helper()
	dir := t.TempDir()
	for name, body := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	writeFile(t, filepath.Join(dir, "plugins.hcl"), hcl)

	// The same steps as startRunnerIn, with cmd.Env set.
	rp := &runnerProc{t: t, dir: dir, exited: make(chan struct{})}
	args := append([]string{"up", "-c", filepath.Join(dir, "plugins.hcl")}, extraArgs...)
	rp.cmd = exec.Command(runnerBin, args...)
	rp.cmd.Dir = dir
	rp.cmd.Env = append(os.Environ(), env...)
	outR, outW := io.Pipe()
	rp.cmd.Stdout = outW
	rp.cmd.Stderr = &lockedWriter{mu: &rp.mu, w: &rp.stderr}
	begin := time.Now()
	if err := rp.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		rp.kill()
		rp.forceCleanup()
		if t.Failed() {
			t.Logf("runner stdout:\n%s\nrunner stderr:\n%s", rp.out(), rp.errOut())
		}
	})
	go func() {
		rp.exitErr = rp.cmd.Wait()
		outW.Close()
		close(rp.exited)
	}()
	serving := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(outR)
		for sc.Scan() {
			line := sc.Text()
			rp.mu.Lock()
			rp.stdout.WriteString(line + "\n")
			rp.mu.Unlock()
			if m := servingRE.FindStringSubmatch(line); m != nil {
				serving <- m[1]
			}
		}
	}()
	select {
	case rp.addr = <-serving:
		rp.startup = time.Since(begin)
	case <-rp.exited:
		t.Fatalf("runner exited before serving: %v\nstdout:\n%s\nstderr:\n%s", rp.exitErr, rp.out(), rp.errOut())
	case <-time.After(2 * time.Minute):
		t.Fatalf("runner not serving after 2m\nstdout:\n%s\nstderr:\n%s", rp.out(), rp.errOut())
	}
	id, err := os.ReadFile(filepath.Join(dir, ".runner", "runner-id"))
	if err != nil {
		t.Fatalf("runner id: %v", err)
	}
	rp.runnerID = strings.TrimSpace(string(id))
	return rp
}

// hardenedRunner is the runner block of the hardening tests: public proxy and admin API
// on ephemeral loopback ports, so parallel runners never collide.
const hardenedRunner = "  admin_listen = \"127.0.0.1:0\"\n"

var hdAdminRE = regexp.MustCompile(`admin http://([0-9.:]+)/`)

// hdAdminAddr is the admin API's address from the runner's "admin http://..." line, or
// "" when this build of the runner serves no admin API.
func hdAdminAddr(rp *runnerProc) string {
	if m := hdAdminRE.FindStringSubmatch(rp.out()); m != nil {
		return m[1]
	}
	return ""
}

// hdPort returns the port of a host:port address.
func hdPort(t *testing.T, addr string) string {
	t.Helper()
	_, p, err := net.SplitHostPort(addr)
	if err != nil {
		t.Fatalf("address %q: %v", addr, err)
	}
	return p
}

// hdGateway returns the gateway address of a Docker network: the IPAM gateway, or the
// first address of its subnet (the default bridge often lists no gateway).
func hdGateway(t *testing.T, network string) string {
	t.Helper()
	if gw := docker(t, "network", "inspect", "-f", `{{range .IPAM.Config}}{{.Gateway}} {{end}}`, network); strings.TrimSpace(gw) != "" {
		return strings.Fields(gw)[0]
	}
	subnet := strings.Fields(docker(t, "network", "inspect", "-f", `{{range .IPAM.Config}}{{.Subnet}} {{end}}`, network))
	if len(subnet) == 0 {
		t.Fatalf("network %s has no subnet", network)
	}
	p, err := netip.ParsePrefix(subnet[0])
	if err != nil {
		t.Fatal(err)
	}
	return p.Masked().Addr().Next().String()
}

// hdRSSKiB returns the resident set size of process pid (VmRSS in /proc/<pid>/status).
func hdRSSKiB(t *testing.T, pid int) int64 {
	t.Helper()
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			n, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			if err != nil {
				t.Fatalf("VmRSS %q: %v", v, err)
			}
			return n
		}
	}
	t.Fatalf("no VmRSS for pid %d", pid)
	return 0
}

// hdCLI runs the runner binary with args and env and returns its combined output.
func hdCLI(t *testing.T, dir string, env []string, args ...string) (string, error) {
	t.Helper()
	cmd := exec.Command(runnerBin, args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), env...)
	out, err := cmd.CombinedOutput()
	return string(out), err
}

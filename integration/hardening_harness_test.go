package integration

import (
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
)

// startRunnerWithEnv is startRunner with extra environment variables for the runner
// process (NAME=value), e.g. a secret for env() in the config, and files written to the
// runner's directory (name → content, 0600) before it starts.
func startRunnerWithEnv(t *testing.T, hcl string, env []string, files map[string]string, extraArgs ...string) *runnerProc {
	t.Helper()
	dir := t.TempDir()
	for name, body := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	writeFile(t, filepath.Join(dir, "plugins.hcl"), hcl)

	return startRunnerEnv(t, dir, env, extraArgs...)
}

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

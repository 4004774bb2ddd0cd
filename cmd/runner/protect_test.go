package main

import (
	"log/slog"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/xcore/runner/runner/admin"
	"github.com/xcore/runner/sandbox"
)

func TestProtectionLine(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		p    sandbox.Protected
		want string
	}{
		{"on", sandbox.Protected{Host: true, Egress: true, Rules: "nftables table inet xcore-abc"},
			"host protection on: plugins reach the host only at their sidecar (nftables table inet xcore-abc)"},
		{"off by config", sandbox.Protected{Egress: true, Rules: "nftables table inet xcore-abc"},
			"WARNING host protection off (runner { protect_host = false }): plugins can reach every service of the host; egress limits enforced (nftables table inet xcore-abc)"},
		{"unavailable", sandbox.Protected{Unavailable: "host protection unavailable: Docker runs rootless: ..."},
			"WARNING host protection unavailable: Docker runs rootless: ..."},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			if got := protectionLine(admin.NewHostProtection(tc.p)); got != tc.want {
				t.Errorf("got  %q\nwant %q", got, tc.want)
			}
		})
	}
}

// TestPsSaysWhenPluginsReachTheHost: `runner ps` ends with the host-protection line
// the admin API reports.
func TestPsSaysWhenPluginsReachTheHost(t *testing.T) {
	t.Parallel()
	const why = "host protection unavailable: the runner lacks CAP_NET_ADMIN in the host's network namespace"
	srv := httptest.NewServer(admin.New(admin.Options{
		Runner: &fakeRunner{statuses: fakeStatuses}, Token: cliToken, Logger: slog.New(slog.DiscardHandler),
		Protection: func() (sandbox.Protected, bool) { return sandbox.Protected{Unavailable: why}, true },
	}))
	t.Cleanup(srv.Close)
	tokFile := filepath.Join(t.TempDir(), "admin.token")
	if err := os.WriteFile(tokFile, []byte(cliToken+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	code, out, errb := runCLI(t, "ps", "--admin", srv.URL, "--token-file", tokFile)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errb)
	}
	lines := strings.Split(strings.TrimRight(out, "\n"), "\n")
	if last := lines[len(lines)-1]; last != "WARNING "+why {
		t.Errorf("last line of ps: %q, want the warning\n%s", last, out)
	}
	if len(lines) != 4 {
		t.Errorf("ps printed %d lines, want the header, 2 plugins and the warning:\n%s", len(lines), out)
	}
}

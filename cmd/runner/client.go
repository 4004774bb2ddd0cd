package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/http"
	"net/url"
	"os"
	"strings"

	"github.com/xcore/runner/config"
	"github.com/xcore/runner/runner/admin"
)

// envAdminListen overrides runner.admin_listen for `runner up` and for the CLI: two
// runners on one host (or parallel test runs) can each take an ephemeral port.
const envAdminListen = "XCORE_ADMIN_LISTEN"

// adminListen is where `runner up` serves the admin API.
func adminListen(r config.Runner) string {
	if v := os.Getenv(envAdminListen); v != "" {
		return v
	}
	return r.AdminListen
}

// adminFlags are the flags of every command that talks to the admin API.
type adminFlags struct {
	cfg       *string
	admin     *string
	tokenFile *string
	// quiet: no warning that the config does not validate (reload reports it itself).
	quiet bool
}

func addAdminFlags(fs *flag.FlagSet, cfg *string) *adminFlags {
	return &adminFlags{
		cfg:       cfg,
		admin:     fs.String("admin", "", "admin API `URL` (default: http://<runner.admin_listen> of the config)"),
		tokenFile: fs.String("token-file", "", "admin token `file` (default: runner.admin_token_file of the config)"),
	}
}

// adminClient talks to a running runner's admin API.
type adminClient struct {
	base      string // http://host:port
	addr      string // host:port, for messages
	token     string
	tokenFile string
	http      *http.Client
}

// client resolves the admin address and token: flags first, then the config file.
func (a *adminFlags) client(stderr io.Writer) (*adminClient, error) {
	var settings config.Runner
	if *a.admin == "" || *a.tokenFile == "" {
		var err error
		warn := stderr
		if a.quiet {
			warn = io.Discard
		}
		if settings, _, err = runnerSettings(*a.cfg, stderr, warn); err != nil {
			return nil, err
		}
	}
	c := &adminClient{http: &http.Client{}}
	raw := *a.admin
	if raw == "" {
		raw = adminListen(settings)
	}
	base, addr, err := baseURL(raw)
	if err != nil {
		return nil, fmt.Errorf("admin address: %w", err)
	}
	if _, port, _ := net.SplitHostPort(addr); port == "0" {
		return nil, fmt.Errorf("admin address %s is an ephemeral port: pass --admin http://HOST:PORT as printed by `runner up` (\"admin http://...\")", raw)
	}
	c.base, c.addr = base, addr
	c.tokenFile = *a.tokenFile
	if c.tokenFile == "" {
		c.tokenFile = settings.AdminTokenFile
	}
	c.token, err = admin.ReadToken(c.tokenFile)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("no admin token in %s: is `runner up` running with this config? (it creates the token)", c.tokenFile)
	}
	if err != nil {
		return nil, err
	}
	return c, nil
}

// baseURL turns "127.0.0.1:8081", ":8081" or "http://host:8081/" into a base URL
// without trailing slash, and host:port. An unspecified host means this machine.
func baseURL(raw string) (base, addr string, err error) {
	if !strings.Contains(raw, "://") {
		raw = "http://" + raw
	}
	u, err := url.Parse(raw)
	if err != nil {
		return "", "", err
	}
	if u.Scheme != "http" && u.Scheme != "https" {
		return "", "", fmt.Errorf("%s: want an http:// URL", raw)
	}
	host, port, err := net.SplitHostPort(u.Host)
	if err != nil {
		return "", "", fmt.Errorf("%s: want host:port", raw)
	}
	if host == "" || host == "0.0.0.0" || host == "::" {
		host = "127.0.0.1"
	}
	addr = net.JoinHostPort(host, port)
	return u.Scheme + "://" + addr + strings.TrimSuffix(u.Path, "/"), addr, nil
}

// errNotReachable says what to do when nothing answers.
func errNotReachable(addr string) error {
	return fmt.Errorf("runner not reachable at %s: is `runner up` running?", addr)
}

// do sends an authenticated request. Transport failures and 401 become errors a person
// can act on; other statuses are the caller's to judge.
func (c *adminClient) do(ctx context.Context, method, path string, body io.Reader) (*http.Response, error) {
	req, err := http.NewRequestWithContext(ctx, method, c.base+path, body)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Authorization", "Bearer "+c.token)
	resp, err := c.http.Do(req)
	if err != nil {
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		var op *net.OpError
		if errors.As(err, &op) && op.Op == "dial" {
			return nil, errNotReachable(c.addr)
		}
		return nil, fmt.Errorf("admin API at %s: %w", c.addr, err)
	}
	if resp.StatusCode == http.StatusUnauthorized {
		resp.Body.Close()
		return nil, fmt.Errorf("admin token rejected: check %s (it must be the file of the running runner)", c.tokenFile)
	}
	return resp, nil
}

// getJSON fetches path into v; a status other than 200 becomes an error.
func (c *adminClient) getJSON(ctx context.Context, path string, v any) error {
	resp, err := c.do(ctx, http.MethodGet, path, nil)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return problemError(resp)
	}
	if err := json.NewDecoder(resp.Body).Decode(v); err != nil {
		return fmt.Errorf("decode %s: %w", path, err)
	}
	return nil
}

// problemError turns an error answer into an error: its problem detail when there
// is one.
func problemError(resp *http.Response) error {
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	var p admin.Problem
	if json.Unmarshal(b, &p) == nil && p.Detail != "" {
		return errors.New(p.Detail)
	}
	if s := strings.TrimSpace(string(b)); s != "" {
		return fmt.Errorf("%s: %s", resp.Status, s)
	}
	return errors.New(resp.Status)
}

// parseArgs parses flags that may come before, between or after the positional
// arguments (`runner logs hello -f`), and returns the positional ones. "--" ends flags.
func parseArgs(fs *flag.FlagSet, args []string) ([]string, error) {
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				return nil, err
			}
			return nil, errUsage
		}
		rest := fs.Args()
		if len(rest) == 0 {
			return pos, nil
		}
		if consumed := len(args) - len(rest); consumed > 0 && args[consumed-1] == "--" {
			return append(pos, rest...), nil
		}
		pos = append(pos, rest[0])
		args = rest[1:]
	}
}

// wantArgs checks the number of positional arguments.
func wantArgs(fs *flag.FlagSet, pos []string, min, max int) error {
	if len(pos) < min || len(pos) > max {
		if len(pos) < min {
			fmt.Fprintln(fs.Output(), "missing arguments")
		} else {
			fmt.Fprintf(fs.Output(), "unexpected arguments: %v\n", pos[max:])
		}
		fs.Usage()
		return errUsage
	}
	return nil
}

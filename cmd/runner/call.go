package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"sort"
	"strings"
	"time"

	"github.com/xcore/runner/runner/admin"
)

// headerFlags collects repeated -H 'Name: value' flags.
type headerFlags []string

func (h *headerFlags) String() string { return strings.Join(*h, ", ") }
func (h *headerFlags) Set(v string) error {
	name, _, ok := strings.Cut(v, ":")
	if !ok || strings.TrimSpace(name) == "" {
		return fmt.Errorf("want 'Name: value', got %q", v)
	}
	*h = append(*h, v)
	return nil
}

func cmdCall(args []string, stdout, stderr io.Writer) error {
	fs, cfgPath := newFlagsArgs("call", " <plugin> [METHOD] <path>", "Send one request to a plugin through the runner's public proxy (runner.listen)\nand print the response body; with -i, the status line and headers first.\nMETHOD defaults to GET, or POST with -d. Exits 1 on a 5xx answer.\n\nExample: runner call hello POST /echo/x -d '{\"a\":1}' -H 'Content-Type: application/json'", stderr)
	af := addAdminFlags(fs, cfgPath)
	data := fs.String("d", "", "request `body`; @file reads a file, @- standard input")
	var headers headerFlags
	fs.Var(&headers, "H", "request `header` 'Name: value' (repeatable)")
	include := fs.Bool("i", false, "print the status line and the response headers")
	proxyURL := fs.String("proxy", "", "public proxy `URL` (default: http://<runner.listen>; asks the admin API when that port is 0)")
	timeout := fs.Duration("timeout", time.Minute, "give up after this `duration`")
	pos, err := parseArgs(fs, args)
	if err != nil {
		return err
	}
	if err := wantArgs(fs, pos, 2, 3); err != nil {
		return err
	}
	plugin, method, path := pos[0], http.MethodGet, pos[len(pos)-1]
	dataSet := false
	fs.Visit(func(f *flag.Flag) {
		if f.Name == "d" {
			dataSet = true
		}
	})
	if dataSet {
		method = http.MethodPost
	}
	if len(pos) == 3 {
		method = strings.ToUpper(pos[1])
	}
	if !strings.HasPrefix(path, "/") {
		path = "/" + path
	}

	sigCtx, stop := interruptible()
	defer stop()
	ctx, cancel := context.WithTimeout(sigCtx, *timeout)
	defer cancel()

	base := *proxyURL
	if base == "" {
		if base, err = proxyBase(ctx, af, stderr); err != nil {
			return err
		}
	}
	base, addr, err := baseURL(base)
	if err != nil {
		return fmt.Errorf("proxy address: %w", err)
	}

	var body io.Reader
	if dataSet {
		b, err := readData(*data)
		if err != nil {
			return err
		}
		body = strings.NewReader(string(b))
	}
	req, err := http.NewRequestWithContext(ctx, method, base+"/plugins/"+url.PathEscape(plugin)+path, body)
	if err != nil {
		return fmt.Errorf("request: %w", err)
	}
	for _, h := range headers {
		name, value, _ := strings.Cut(h, ":")
		req.Header.Add(strings.TrimSpace(name), strings.TrimSpace(value))
	}
	if host := req.Header.Get("Host"); host != "" {
		req.Host = host
	}
	resp, err := http.DefaultTransport.RoundTrip(req) // no redirects followed: show what the plugin said
	if err != nil {
		var op *net.OpError
		switch {
		case errors.As(err, &op) && op.Op == "dial":
			return errNotReachable(addr)
		case errors.Is(err, context.DeadlineExceeded):
			return fmt.Errorf("%s %s: no answer within %s", method, req.URL, *timeout)
		case sigCtx.Err() != nil:
			return errReported
		}
		return fmt.Errorf("%s %s: %w", method, req.URL, err)
	}
	defer resp.Body.Close()
	if *include {
		fmt.Fprintf(stdout, "%s %s\n", resp.Proto, resp.Status)
		names := make([]string, 0, len(resp.Header))
		for k := range resp.Header {
			names = append(names, k)
		}
		sort.Strings(names)
		for _, k := range names {
			for _, v := range resp.Header[k] {
				fmt.Fprintf(stdout, "%s: %s\n", k, v)
			}
		}
		fmt.Fprintln(stdout)
	}
	if _, err := io.Copy(stdout, resp.Body); err != nil && sigCtx.Err() == nil {
		return fmt.Errorf("read response: %w", err)
	}
	if resp.StatusCode >= 500 {
		if !*include {
			fmt.Fprintf(stderr, "runner call: %s\n", resp.Status)
		}
		return errReported
	}
	return nil
}

// proxyBase is the public proxy's address from the config; when its port is 0 (chosen
// at start), the running runner's admin API tells it.
func proxyBase(ctx context.Context, af *adminFlags, stderr io.Writer) (string, error) {
	settings, _, err := runnerSettings(*af.cfg, stderr, stderr)
	if err != nil {
		return "", err
	}
	listen := settings.Listen
	if _, port, err := net.SplitHostPort(listen); err == nil && port != "0" {
		return listen, nil
	}
	c, err := af.client(stderr)
	if err != nil {
		return "", fmt.Errorf("runner.listen %s is an ephemeral port, so the admin API must tell the address: %w (or pass --proxy URL)", listen, err)
	}
	var info admin.Info
	if err := c.getJSON(ctx, "/v1/runner", &info); err != nil {
		return "", err
	}
	if info.Listen == "" {
		return "", errors.New("the runner is still starting: its proxy does not listen yet")
	}
	return info.Listen, nil
}

// readData reads the -d argument: literal, @file or @- (standard input).
func readData(d string) ([]byte, error) {
	name, ok := strings.CutPrefix(d, "@")
	if !ok {
		return []byte(d), nil
	}
	if name == "-" {
		return io.ReadAll(os.Stdin)
	}
	b, err := os.ReadFile(name)
	if err != nil {
		return nil, fmt.Errorf("read -d %s: %w", d, err)
	}
	return b, nil
}

package runner

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"time"

	"github.com/xcore/runner/config"
	"github.com/xcore/runner/sandbox"
)

// prober checks a plugin from the runner's side: scratch images have no shell, so Docker
// HEALTHCHECKs cannot run inside them.
type prober struct{}

func newProber() *prober { return &prober{} }

// probeConn is the connection a plugin's health probes reuse from one probe to the next.
// A probe on it is one write and one read on the probing goroutine: a new connection per
// probe (handshake, teardown) and http.Transport's two goroutines per connection cost an
// idle runner with 200 plugins probed every 5 s about 4 % of a core. Owned by one
// goroutine at a time (the plugin's supervisor); the zero value is ready to use.
type probeConn struct {
	endpoint string
	conn     net.Conn
	br       *bufio.Reader
}

// Close closes the kept connection, if any.
func (k *probeConn) Close() {
	if k != nil && k.conn != nil {
		k.conn.Close()
		k.conn, k.br = nil, nil
	}
}

// probe runs one check of endpoint (host:port, or unix:<socket>). With a health path, it
// wants a 2xx/3xx answer. Without one it wants the plugin to be listening: a TCP connect
// when the runner dials the container itself, but an HTTP answer of any status through a
// published port, because Docker's userland proxy accepts connections even when nothing
// listens behind it. kc keeps the HTTP connection for the next probe; nil: a connection
// for this probe only.
func (p *prober) probe(ctx context.Context, kc *probeConn, endpoint string, h config.Health, published bool) error {
	ctx, cancel := context.WithTimeout(ctx, h.Timeout)
	defer cancel()
	if sock, ok := strings.CutPrefix(endpoint, "unix:"); ok {
		return p.probeUnix(ctx, sock, h)
	}
	if h.Path == "" && !published {
		var d net.Dialer
		c, err := d.DialContext(ctx, "tcp", endpoint)
		if err != nil {
			return err
		}
		return c.Close()
	}
	path := h.Path
	if path == "" {
		path = "/"
	}
	if kc == nil {
		kc = &probeConn{}
		defer kc.Close()
	}
	status, err := kc.get(ctx, endpoint, path)
	if err != nil {
		return err
	}
	if h.Path != "" && status >= 400 {
		return fmt.Errorf("GET %s: status %d", h.Path, status)
	}
	return nil
}

// get sends GET path to endpoint on the kept connection (dialled when there is none or
// it is for another endpoint) and returns the answer's status. A kept connection that
// fails is closed, and the request tried once more on a new one: the plugin may have
// closed it while idle.
func (k *probeConn) get(ctx context.Context, endpoint, path string) (int, error) {
	if k.endpoint != endpoint {
		k.Close()
		k.endpoint = endpoint
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+endpoint+path, nil)
	if err != nil {
		return 0, err
	}
	req.Header.Set("User-Agent", "xcore-runner-health")
	deadline, _ := ctx.Deadline()
	for {
		fresh := k.conn == nil
		if fresh {
			var d net.Dialer
			c, err := d.DialContext(ctx, "tcp", endpoint)
			if err != nil {
				return 0, err
			}
			k.conn, k.br = c, bufio.NewReaderSize(c, 4<<10)
		}
		status, err := k.roundTrip(req, deadline)
		if err == nil {
			return status, nil
		}
		k.Close()
		if fresh || ctx.Err() != nil {
			return 0, err
		}
	}
}

// roundTrip writes req and reads its answer, all before deadline; the body is drained
// (up to 64 KiB) so that the connection can carry the next probe.
func (k *probeConn) roundTrip(req *http.Request, deadline time.Time) (int, error) {
	_ = k.conn.SetDeadline(deadline)
	if err := req.Write(k.conn); err != nil {
		return 0, err
	}
	resp, err := http.ReadResponse(k.br, req)
	if err != nil {
		return 0, err
	}
	n, _ := io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	resp.Body.Close()
	if resp.Close || n == 64<<10 {
		k.Close() // the plugin wants it closed, or the rest of the body is unread
	}
	return resp.StatusCode, nil
}

// probeUnix probes a network = "none" plugin over its socket: connecting is the TCP
// probe's equivalent; with a path, an HTTP GET over the socket.
func (p *prober) probeUnix(ctx context.Context, sock string, h config.Health) error {
	var d net.Dialer
	if h.Path == "" {
		c, err := d.DialContext(ctx, "unix", sock)
		if err != nil {
			return err
		}
		return c.Close()
	}
	client := &http.Client{Transport: &http.Transport{
		DisableKeepAlives: true,
		DialContext:       func(ctx context.Context, _, _ string) (net.Conn, error) { return d.DialContext(ctx, "unix", sock) },
	}}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://plugin"+h.Path, nil)
	if err != nil {
		return err
	}
	resp, err := client.Do(req)
	if err != nil {
		return err
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	resp.Body.Close()
	if resp.StatusCode >= 400 {
		return fmt.Errorf("GET %s: status %d", h.Path, resp.StatusCode)
	}
	return nil
}

// startPollInterval: while a plugin starts, probe often so "ready" is reported promptly;
// the configured interval is for the steady state.
const startPollInterval = 50 * time.Millisecond

// waitHealthy probes until the plugin answers, the container exits, or ctx (bounded by
// start_timeout) ends.
func (r *Runner) waitHealthy(ctx context.Context, ctr sandbox.Container, pc *config.Plugin) error {
	published := r.config().Runner.Reach != config.ReachAddress
	h := pc.Supervisor.Health
	tick := time.NewTicker(startPollInterval)
	defer tick.Stop()
	var lastErr error
	lastInspect := time.Now()
	var kc probeConn
	defer kc.Close()
	for {
		if lastErr = r.prober.probe(ctx, &kc, ctr.Endpoint, h, published); lastErr == nil {
			return nil
		}
		r.log.Debug("start probe failed", "container", ctr.Name, "err", lastErr)
		// A container that exited will never become healthy: say why at once instead
		// of waiting out start_timeout.
		if time.Since(lastInspect) > 500*time.Millisecond {
			lastInspect = time.Now()
			if cur, err := r.sb.Inspect(ctx, ctr.ID); err == nil && !cur.Running {
				return exitError(cur)
			}
		}
		select {
		case <-ctx.Done():
			if errors.Is(ctx.Err(), context.DeadlineExceeded) {
				return fmt.Errorf("not healthy within start_timeout %s: %w", pc.Supervisor.StartTimeout, lastErr)
			}
			return ctx.Err()
		case <-tick.C:
		}
	}
}

// probeUntil is waitHealthy bounded by within: for containers found running (adoption),
// which either answer promptly or are not worth keeping.
func (r *Runner) probeUntil(ctx context.Context, ctr sandbox.Container, pc *config.Plugin, within time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, within)
	defer cancel()
	return r.waitHealthy(ctx, ctr, pc)
}

func exitError(c sandbox.Container) error {
	return fmt.Errorf("%s before becoming healthy", c.ExitReason())
}

package runner

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"time"

	"github.com/xcore/runner/config"
	"github.com/xcore/runner/proxy"
	"github.com/xcore/runner/sandbox"
)

// probeConn is the transport a plugin's health probes reuse from one probe to the
// next: the proxy's own (proxy.NewUpstream), one kept-alive connection per plugin, the
// request written and the answer read on the probing goroutine. A new connection per
// probe and http.Transport's two goroutines per connection cost an idle runner with 200
// plugins probed every 5 s about 4 % of a core. Owned by one goroutine at a time (the
// plugin's supervisor); the zero value is ready to use.
type probeConn struct {
	endpoint sandbox.Endpoint
	rt       proxy.Upstream
}

// Close closes the kept connection, if any.
func (k *probeConn) Close() {
	if k != nil && k.rt != nil {
		k.rt.CloseIdleConnections()
		k.rt = nil
	}
}

// transport returns the transport to endpoint, a new one when the endpoint changed (a
// new instance).
func (k *probeConn) transport(endpoint sandbox.Endpoint) proxy.Upstream {
	if k.rt == nil || k.endpoint != endpoint {
		k.Close()
		k.endpoint = endpoint
		k.rt = proxy.NewUpstream(endpoint.Network, endpoint.Address, 1)
	}
	return k.rt
}

// probe checks a plugin instance from the runner's side (scratch images have no shell,
// so engine health checks cannot run inside them): one check of endpoint. With a health
// path, it wants a 2xx/3xx answer. Without one it wants the plugin to be listening: a
// connect, unless something accepts connections on the plugin's behalf (a proxied
// endpoint), where it wants an HTTP answer of any status. kc keeps the connection for the
// next probe; nil: a connection for this probe only.
func probe(ctx context.Context, kc *probeConn, endpoint sandbox.Endpoint, h config.Health) error {
	ctx, cancel := context.WithTimeout(ctx, h.Timeout)
	defer cancel()
	if h.Path == "" && !endpoint.Proxied {
		var d net.Dialer
		c, err := d.DialContext(ctx, endpoint.Network, endpoint.Address)
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
	host := endpoint.Address
	if endpoint.Network == "unix" {
		host = "plugin"
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+host+path, nil)
	if err != nil {
		return err
	}
	req.Header.Set("User-Agent", "xcore-runner-health")
	resp, err := kc.transport(endpoint).RoundTrip(req)
	if err != nil {
		return err
	}
	// Read to the end (up to 64 KiB) so that the connection carries the next probe.
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	resp.Body.Close()
	if h.Path != "" && resp.StatusCode >= 400 {
		return fmt.Errorf("GET %s: status %d", h.Path, resp.StatusCode)
	}
	return nil
}

// startPollInterval: while a plugin starts, probe often so "ready" is reported promptly;
// the configured interval is for the steady state.
const startPollInterval = 50 * time.Millisecond

// waitHealthy probes until the plugin answers, the container exits, or ctx (bounded by
// start_timeout) ends.
func (r *Runner) waitHealthy(ctx context.Context, ctr sandbox.Instance, pc *config.Plugin) error {
	h := pc.Supervisor.Health
	tick := time.NewTicker(startPollInterval)
	defer tick.Stop()
	var lastErr error
	lastInspect := time.Now()
	var kc probeConn
	defer kc.Close()
	for {
		if lastErr = probe(ctx, &kc, ctr.Endpoint, h); lastErr == nil {
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
func (r *Runner) probeUntil(ctx context.Context, ctr sandbox.Instance, pc *config.Plugin, within time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, within)
	defer cancel()
	return r.waitHealthy(ctx, ctr, pc)
}

func exitError(c sandbox.Instance) error {
	return fmt.Errorf("%s before becoming healthy", c.ExitReason())
}

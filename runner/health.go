package runner

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"time"

	"github.com/xcore/runner/config"
)

// prober checks a plugin from the runner's side: scratch images have no shell, so Docker
// HEALTHCHECKs cannot run inside them.
type prober struct {
	client *http.Client
}

func newProber() *prober {
	return &prober{client: &http.Client{
		Transport: &http.Transport{Proxy: nil, DisableKeepAlives: true, MaxIdleConns: -1},
		// Redirects are an answer: a plugin that redirects is alive.
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}}
}

// probe runs one check of endpoint (host:port). With a health path, it wants a 2xx/3xx
// answer. Without one it wants the plugin to be listening: a TCP connect when the runner
// dials the container itself, but an HTTP answer of any status through a published port,
// because Docker's userland proxy accepts connections even when nothing listens behind it.
func (p *prober) probe(ctx context.Context, endpoint string, h config.Health, published bool) error {
	ctx, cancel := context.WithTimeout(ctx, h.Timeout)
	defer cancel()
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
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+endpoint+path, nil)
	if err != nil {
		return err
	}
	req.Header.Set("User-Agent", "xcore-runner-health")
	resp, err := p.client.Do(req)
	if err != nil {
		return err
	}
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

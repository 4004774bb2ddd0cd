package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"strings"
	"time"
)

// engineAPI talks to the Docker Engine API directly (stdlib HTTP over the unix socket),
// for the raw floors: the same create/start/inspect calls that `docker run -d` makes,
// without a CLI process per call.
type engineAPI struct {
	client *http.Client
	base   string
}

func newEngineAPI() (*engineAPI, error) {
	host := os.Getenv("DOCKER_HOST")
	if host == "" {
		host = "unix:///var/run/docker.sock"
	}
	u, err := url.Parse(host)
	if err != nil {
		return nil, fmt.Errorf("DOCKER_HOST %q: %w", host, err)
	}
	tr := &http.Transport{Proxy: nil, MaxIdleConnsPerHost: 16}
	switch u.Scheme {
	case "unix":
		path := u.Path
		tr.DialContext = func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", path)
		}
		return &engineAPI{client: &http.Client{Transport: tr, Timeout: time.Minute}, base: "http://docker"}, nil
	case "tcp":
		return &engineAPI{client: &http.Client{Transport: tr, Timeout: time.Minute}, base: "http://" + u.Host}, nil
	}
	return nil, fmt.Errorf("DOCKER_HOST %q: only unix:// and tcp:// are supported", host)
}

func (a *engineAPI) do(ctx context.Context, method, path string, in, out any) error {
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return err
		}
		body = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, a.base+path, body)
	if err != nil {
		return err
	}
	if in != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := a.client.Do(req)
	if err != nil {
		return fmt.Errorf("engine %s %s: %w", method, path, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if resp.StatusCode >= 300 {
		return fmt.Errorf("engine %s %s: %d %s", method, path, resp.StatusCode, strings.TrimSpace(string(b)))
	}
	if out != nil {
		return json.Unmarshal(b, out)
	}
	return nil
}

// rawRun creates and starts a hello container with the runner's limits and hardening
// (sandbox/spec.go), published on an ephemeral 127.0.0.1 port like `docker run -d -p
// 127.0.0.1::8080`, on Docker's default bridge, labelled io.xcore.bench=<run id>. It returns the
// container id and its published host:port.
func (a *engineAPI) rawRun(ctx context.Context, image, name, greeting string) (string, string, error) {
	const mem = 256 << 20
	create := map[string]any{
		"Image":        image,
		"Env":          []string{"PORT=8080", "XCORE_PLUGIN=" + name, "XCORE_PREFIX=/plugins/" + name, "GREETING=" + greeting},
		"User":         "65532:65532",
		"Labels":       map[string]string{benchLabelKey: runID},
		"ExposedPorts": map[string]any{"8080/tcp": map[string]any{}},
		"HostConfig": map[string]any{
			"NanoCpus": 1e9, "Memory": mem, "MemorySwap": mem, "PidsLimit": 256,
			"CapDrop": []string{"ALL"}, "SecurityOpt": []string{"no-new-privileges"},
			"ReadonlyRootfs": true, "Tmpfs": map[string]string{"/tmp": "rw,noexec,nosuid,nodev,size=64m"},
			"LogConfig":    map[string]any{"Type": "json-file", "Config": map[string]string{"max-size": "10m", "max-file": "3"}},
			"PortBindings": map[string]any{"8080/tcp": []map[string]string{{"HostIp": "127.0.0.1", "HostPort": ""}}},
		},
	}
	var created struct{ Id string }
	if err := a.do(ctx, http.MethodPost, "/containers/create", create, &created); err != nil {
		return "", "", err
	}
	if err := a.do(ctx, http.MethodPost, "/containers/"+created.Id+"/start", nil, nil); err != nil {
		return created.Id, "", err
	}
	var inspect struct {
		NetworkSettings struct {
			Ports map[string][]struct{ HostIp, HostPort string }
		}
	}
	if err := a.do(ctx, http.MethodGet, "/containers/"+created.Id+"/json", nil, &inspect); err != nil {
		return created.Id, "", err
	}
	for _, b := range inspect.NetworkSettings.Ports["8080/tcp"] {
		if b.HostIp == "127.0.0.1" && b.HostPort != "" {
			return created.Id, "127.0.0.1:" + b.HostPort, nil
		}
	}
	return created.Id, "", fmt.Errorf("container %.12s: no published port", created.Id)
}

func (a *engineAPI) remove(ctx context.Context, id string) error {
	return a.do(ctx, http.MethodDelete, "/containers/"+id+"?force=true", nil, nil)
}

// waitStatus200 polls url every 5 ms (fresh connection each time) until it answers 200
// with body want, bounded by within; it returns when the answer arrived.
func waitStatus200(ctx context.Context, client *http.Client, url, want string, within time.Duration) (time.Time, error) {
	ctx, cancel := context.WithTimeout(ctx, within)
	defer cancel()
	var last string
	for {
		status, body, err := get(ctx, client, url)
		if err == nil && status == http.StatusOK && (want == "" || body == want) {
			return time.Now(), nil
		}
		if err != nil {
			last = err.Error()
		} else {
			last = fmt.Sprintf("status %d body %q", status, body)
		}
		if err := sleep(ctx, 5*time.Millisecond); err != nil {
			return time.Time{}, fmt.Errorf("%s did not answer %q: %w (last: %s)", url, want, err, last)
		}
	}
}

// pollClient: short timeouts, no keep-alive (a new container is a new server).
func pollClient() *http.Client {
	return &http.Client{Transport: &http.Transport{Proxy: nil, DisableKeepAlives: true}, Timeout: 2 * time.Second}
}

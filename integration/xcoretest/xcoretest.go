// Package xcoretest runs the xcore runner (the xcore-runner image) in a container through
// testcontainers-go, so that a plugin team can test its plugin image exactly as it will
// run in production: behind the runner's proxy, in a hardened container, with its
// services.
//
//	r, err := xcoretest.Run(ctx, xcoretest.WithPlugin("team", "team-plugin:dev"))
//	t.Cleanup(func() { _ = r.Terminate(context.Background()) }) // before checking err
//	if err != nil {
//		t.Fatal(err)
//	}
//	resp, err := http.Get(r.PluginURL("team")) // http://127.0.0.1:<port>/plugins/team/
//
// Run returns once every plugin is healthy, according to the runner's admin API; a plugin
// that fails to start makes Run fail with the runner's reason.
//
// The runner container runs on the host network with the Docker socket mounted (it
// creates the plugin containers next to itself), so this package needs a local Docker
// Engine on Linux, and the plugin images must be local: nothing is pulled. The runner
// image is xcore-runner:latest (`make image` in the runner repository) unless WithImage
// says otherwise.
//
// Ryuk, testcontainers-go's reaper, works where it is available. On hosts where its image
// cannot be pulled, or where testcontainers-go would guess a non-loopback host address,
// set
//
//	TESTCONTAINERS_RYUK_DISABLED=true
//	TESTCONTAINERS_HOST_OVERRIDE=127.0.0.1
//
// and always Terminate the Runner (t.Cleanup): Terminate stops the runner gracefully, so
// that it removes its plugin containers and network, then removes the runner container.
package xcoretest

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/moby/moby/api/types/container"
	"github.com/moby/moby/client"
	"github.com/testcontainers/testcontainers-go"
)

// DefaultImage is the runner image Run starts unless WithImage says otherwise.
const DefaultImage = "xcore-runner:latest"

// Label is set (to "xcoretest") on every runner container this package starts.
const Label = "io.xcore.test"

const (
	configPath    = "/etc/xcore/plugins.hcl"
	stateDir      = "/state"
	tokenPath     = stateDir + "/admin.token"
	runnerIDPath  = stateDir + "/runner-id"
	dockerSocket  = "/var/run/docker.sock"
	stopTimeout   = 60 * time.Second
	portAttempts  = 3
	defaultPort   = 8080
	defaultWaitUp = 60 * time.Second
)

// Runner is a running xcore runner container.
type Runner struct {
	testcontainers.Container

	listen  string // 127.0.0.1:port of the public proxy
	admin   string // 127.0.0.1:port of the admin API
	token   string
	plugins []string
	done    bool // terminated
}

type plugin struct {
	name, image string
	lines       []string
}

type service struct{ name, body string }

type options struct {
	image    string
	timeout  time.Duration
	services []service
	plugins  []plugin
	extra    []string
}

// Option configures Run.
type Option func(*options)

// WithImage sets the runner image (default DefaultImage).
func WithImage(ref string) Option { return func(o *options) { o.image = ref } }

// WithConfig appends hcl verbatim to the generated plugins.hcl: services and plugins
// written by hand. The runner block is generated; do not add one.
func WithConfig(hcl string) Option { return func(o *options) { o.extra = append(o.extra, hcl) } }

// WithPlugin adds `plugin "name" { image = "<image>"; port = 8080; <hclLines> }`. Each
// line is an attribute or block of the plugin, e.g. `env = { GREETING = "hi" }`,
// `services = ["kv"]` or "supervisor {\n  health { path = \"/healthz\" }\n}" (HCL
// wants a nested block on a line of its own); a line `port = N` replaces the default
// port. The image must exist locally. A second WithPlugin with the same name replaces
// the first.
func WithPlugin(name, image string, hclLines ...string) Option {
	return func(o *options) {
		p := plugin{name: name, image: image, lines: hclLines}
		for i := range o.plugins {
			if o.plugins[i].name == name {
				o.plugins[i] = p
				return
			}
		}
		o.plugins = append(o.plugins, p)
	}
}

// WithService adds `service "name" { <hclBody> }`, e.g.
// WithService("kv", `builtin = "kv"`) or WithService("settings", `env = { X = "1" }`).
// A second WithService with the same name replaces the first.
func WithService(name, hclBody string) Option {
	return func(o *options) {
		s := service{name: name, body: hclBody}
		for i := range o.services {
			if o.services[i].name == name {
				o.services[i] = s
				return
			}
		}
		o.services = append(o.services, s)
	}
}

// WithStartupTimeout bounds how long Run waits for the runner and every plugin to be
// healthy (default 60s).
func WithStartupTimeout(d time.Duration) Option { return func(o *options) { o.timeout = d } }

// Run starts the runner with the given options and waits until every plugin is healthy.
// On error the Runner may still be non-nil (a half-started container): Terminate it.
func Run(ctx context.Context, opts ...Option) (*Runner, error) {
	o := options{image: DefaultImage, timeout: defaultWaitUp}
	for _, opt := range opts {
		opt(&o)
	}
	if err := checkImage(ctx, o.image); err != nil {
		return nil, err
	}
	gid, err := socketGroup(dockerSocketPath())
	if err != nil {
		return nil, err
	}
	// Two free loopback ports are picked and released before the runner binds them;
	// another process may take one in between, so that case is retried with new ports.
	for attempt := 1; ; attempt++ {
		r, err := run(ctx, &o, gid)
		if errors.Is(err, errAddrInUse) && attempt < portAttempts {
			_ = r.Terminate(ctx)
			continue
		}
		return r, err
	}
}

func run(ctx context.Context, o *options, gid int) (*Runner, error) {
	ports, err := freePorts(2)
	if err != nil {
		return nil, err
	}
	listen := net.JoinHostPort("127.0.0.1", strconv.Itoa(ports[0]))
	admin := net.JoinHostPort("127.0.0.1", strconv.Itoa(ports[1]))
	hcl := render(o, listen, admin)

	names := make([]string, len(o.plugins))
	for i, p := range o.plugins {
		names[i] = p.name
	}
	ready := &adminReady{adminURL: "http://" + admin, tokenFile: tokenPath, plugins: names, timeout: o.timeout}
	socket := dockerSocketPath()
	req := testcontainers.GenericContainerRequest{
		ContainerRequest: testcontainers.ContainerRequest{
			Image:  o.image,
			Labels: map[string]string{Label: "xcoretest"},
			Files: []testcontainers.ContainerFile{{
				Reader: strings.NewReader(hcl), ContainerFilePath: configPath, FileMode: 0o644,
			}},
			HostConfigModifier: func(hc *container.HostConfig) {
				hc.NetworkMode = "host"
				hc.Binds = append(hc.Binds, socket+":"+dockerSocket)
				hc.GroupAdd = append(hc.GroupAdd, strconv.Itoa(gid))
			},
			WaitingFor: ready,
		},
		Started: true,
	}
	c, err := testcontainers.GenericContainer(ctx, req)
	var r *Runner
	if c != nil {
		r = &Runner{Container: c, listen: listen, admin: admin, token: ready.token, plugins: names}
	}
	if err != nil {
		return r, fmt.Errorf("run xcore runner: %w", err)
	}
	return r, nil
}

// PluginURL is the proxy URL of plugin name, ending in a slash:
// http://127.0.0.1:<port>/plugins/<name>/.
func (r *Runner) PluginURL(name string) string {
	return "http://" + r.listen + "/plugins/" + name + "/"
}

// AdminURL is the base URL of the runner's admin API (http://127.0.0.1:<port>, no
// trailing slash); every request needs `Authorization: Bearer <Token()>`.
func (r *Runner) AdminURL() string { return "http://" + r.admin }

// Token is the runner's admin token; "" if Run failed before the runner created it.
func (r *Runner) Token() string { return r.token }

// Logs returns what the runner wrote so far, stdout and stderr interleaved.
func (r *Runner) Logs(ctx context.Context) (string, error) {
	rc, err := r.Container.Logs(ctx)
	if err != nil {
		return "", fmt.Errorf("read runner logs: %w", err)
	}
	defer rc.Close()
	b, err := io.ReadAll(rc)
	if err != nil && !errors.Is(err, io.EOF) {
		return string(b), fmt.Errorf("read runner logs: %w", err)
	}
	return string(b), nil
}

// Terminate stops the runner gracefully (SIGTERM, up to 60s: it drains its proxy and
// removes its plugin containers and network), then removes the runner container. If the
// runner left containers or its network behind, Terminate removes them and says so in
// its error. It is safe on a nil Runner and a no-op once it succeeded.
func (r *Runner) Terminate(ctx context.Context) error {
	if r == nil || r.Container == nil || r.done {
		return nil
	}
	id, _ := r.instanceID(ctx) // "" when the runner never got that far
	timeout := stopTimeout
	var errs []error
	if err := r.Container.Stop(ctx, &timeout); err != nil && !isNotFound(err) {
		errs = append(errs, fmt.Errorf("stop runner: %w", err))
	}
	if id != "" {
		errs = append(errs, sweep(ctx, id))
	}
	if err := r.Container.Terminate(ctx); err != nil && !isNotFound(err) {
		errs = append(errs, fmt.Errorf("terminate runner: %w", err))
	} else {
		r.done = true
	}
	return errors.Join(errs...)
}

// instanceID reads the runner's instance id, which labels its plugin containers
// (io.xcore.runner=<id>) and names its network (xcore-<id>).
func (r *Runner) instanceID(ctx context.Context) (string, error) {
	b, err := copyFrom(ctx, r.Container, runnerIDPath)
	return strings.TrimSpace(string(b)), err
}

// copyFrom reads a small file out of a container.
func copyFrom(ctx context.Context, c interface {
	CopyFileFromContainer(context.Context, string) (io.ReadCloser, error)
}, path string) ([]byte, error) {
	rc, err := c.CopyFileFromContainer(ctx, path)
	if err != nil {
		return nil, fmt.Errorf("copy %s from the runner: %w", path, err)
	}
	defer rc.Close()
	b, err := io.ReadAll(io.LimitReader(rc, 64<<10))
	if err != nil {
		return nil, fmt.Errorf("copy %s from the runner: %w", path, err)
	}
	return b, nil
}

// sweep removes what a runner that did not stop gracefully left behind: containers
// labelled with its id and its network. It is an error to have found any.
func sweep(ctx context.Context, id string) error {
	cli, err := testcontainers.NewDockerClientWithOpts(ctx)
	if err != nil {
		return fmt.Errorf("check runner leftovers: %w", err)
	}
	defer cli.Close()
	list, err := cli.ContainerList(ctx, client.ContainerListOptions{
		All: true, Filters: make(client.Filters).Add("label", "io.xcore.runner="+id),
	})
	if err != nil {
		return fmt.Errorf("check runner leftovers: %w", err)
	}
	var left []string
	var errs []error
	for _, c := range list.Items {
		left = append(left, strings.TrimPrefix(firstOr(c.Names, c.ID), "/"))
		if _, err := cli.ContainerRemove(ctx, c.ID, client.ContainerRemoveOptions{Force: true, RemoveVolumes: true}); err != nil && !isNotFound(err) {
			errs = append(errs, fmt.Errorf("remove container %s: %w", c.ID, err))
		}
	}
	if _, err := cli.NetworkRemove(ctx, "xcore-"+id, client.NetworkRemoveOptions{}); err == nil {
		left = append(left, "network xcore-"+id)
	} else if !isNotFound(err) {
		errs = append(errs, fmt.Errorf("remove network xcore-%s: %w", id, err))
	}
	if len(left) > 0 {
		errs = append([]error{fmt.Errorf("runner %s did not clean up after itself; removed %s", id, strings.Join(left, ", "))}, errs...)
	}
	return errors.Join(errs...)
}

func firstOr(s []string, def string) string {
	if len(s) > 0 {
		return s[0]
	}
	return def
}

// checkImage fails early, with a hint, when the runner image is missing: testcontainers-go
// would otherwise try to pull it.
func checkImage(ctx context.Context, ref string) error {
	cli, err := testcontainers.NewDockerClientWithOpts(ctx)
	if err != nil {
		return fmt.Errorf("connect to docker: %w", err)
	}
	defer cli.Close()
	if _, err := cli.ImageInspect(ctx, ref); err != nil {
		if isNotFound(err) {
			return fmt.Errorf("runner image %s not found locally: build it with `make image` in the runner repository, or pass WithImage", ref)
		}
		return fmt.Errorf("inspect runner image %s: %w", ref, err)
	}
	return nil
}

// dockerSocketPath is the host's Docker socket: DOCKER_HOST when it is a unix socket,
// else /var/run/docker.sock.
func dockerSocketPath() string {
	if h, ok := strings.CutPrefix(os.Getenv("DOCKER_HOST"), "unix://"); ok && h != "" {
		return h
	}
	return dockerSocket
}

// socketGroup is the group owning the Docker socket: the runner (uid 65532) joins it to
// use the socket.
func socketGroup(path string) (int, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return 0, fmt.Errorf("stat docker socket: %w", err)
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return 0, fmt.Errorf("stat docker socket %s: no owner information on this platform", path)
	}
	return int(st.Gid), nil
}

// freePorts returns n distinct free TCP ports on 127.0.0.1.
func freePorts(n int) ([]int, error) {
	var lns []net.Listener
	defer func() {
		for _, ln := range lns {
			ln.Close()
		}
	}()
	ports := make([]int, 0, n)
	for range n {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, fmt.Errorf("pick a free port: %w", err)
		}
		lns = append(lns, ln)
		ports = append(ports, ln.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
}

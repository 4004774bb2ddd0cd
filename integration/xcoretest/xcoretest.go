// Package xcoretest is the testcontainers-go module of the xcore runner: it runs the
// runner image in a container, with the plugins and services of its options, so that a
// plugin team tests its plugin image exactly as it will run in production: behind the
// runner's proxy, in a hardened container, with its services.
//
//	ctr, err := xcoretest.Run(ctx, "xcore-runner:latest",
//		xcoretest.WithPlugin("team", "team-plugin:dev"),
//	)
//	testcontainers.CleanupContainer(t, ctr) // before checking err
//	if err != nil {
//		t.Fatal(err)
//	}
//	resp, err := http.Get(ctr.PluginURL("team")) // http://127.0.0.1:<port>/plugins/team/
//
// Like every module, Run takes testcontainers.ContainerCustomizer options: the module's
// own (WithPlugin, WithService, WithConfig, WithStartupTimeout, WithDockerConfig) and the
// generic ones of testcontainers-go (testcontainers.WithEnv, WithLogger,
// WithWaitStrategy, ...), applied after the module's defaults so that they win. Run
// returns once every plugin is healthy according to the runner's admin API; a plugin
// that fails to start makes Run fail with the runner's reason.
//
// The runner picks its own ports (the proxy and the admin API listen on 127.0.0.1:0)
// and Run reads them back, so two tests never race for a port. The runner container
// runs on the host network with the Docker socket mounted (it creates the plugin
// containers next to itself), so the package needs a local Docker Engine on Linux.
// The runner finds plugin images as in production: build local ones with BuildImage;
// WithDockerConfig gives it credentials for a private registry.
//
// Ryuk, testcontainers-go's reaper, works where it is available. On hosts where its
// image cannot be pulled, or where testcontainers-go would guess a non-loopback host
// address, set
//
//	TESTCONTAINERS_RYUK_DISABLED=true
//	TESTCONTAINERS_HOST_OVERRIDE=127.0.0.1
//
// and always terminate the container (testcontainers.CleanupContainer): the module's
// Terminate stops the runner gracefully, so that it removes its plugin containers and
// network, then removes the runner container.
package xcoretest

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/moby/moby/api/types/container"
	"github.com/testcontainers/testcontainers-go"
)

// DefaultImage is the runner image that `make image` builds in the runner's repository.
const DefaultImage = "xcore-runner:latest"

// Label is set, to "xcoretest", on every runner container Run starts and every image
// BuildImage builds.
const Label = "io.xcore.test"

const (
	configPath   = "/etc/xcore/plugins.hcl"
	stateDir     = "/state"
	tokenPath    = stateDir + "/admin.token"
	runnerIDPath = stateDir + "/runner-id"
	dockerSocket = "/var/run/docker.sock"
	// stopTimeout is the runner's grace on Terminate: it drains its proxy and stops
	// every plugin (each with its own stop_timeout) before it exits.
	stopTimeout   = 60 * time.Second
	defaultPort   = 8080
	defaultWaitUp = 60 * time.Second
)

// Container is a running xcore runner. It embeds the generic testcontainers.Container,
// so that testcontainers.CleanupContainer and every generic method work on it.
type Container struct {
	testcontainers.Container

	ep   *endpoints
	done bool // terminated
}

// Run starts the runner image img (e.g. DefaultImage) with the given options and waits
// until the runner has started every plugin and each is healthy. On error the Container
// may be non-nil (a container that started but never got ready): terminate it, e.g. with
// testcontainers.CleanupContainer called before the error check.
func Run(ctx context.Context, img string, opts ...testcontainers.ContainerCustomizer) (*Container, error) {
	settings := options{timeout: defaultWaitUp}
	for _, opt := range opts {
		if o, ok := opt.(Option); ok {
			if err := o(&settings); err != nil {
				return nil, fmt.Errorf("xcoretest: %w", err)
			}
		}
	}
	if err := checkImage(ctx, img); err != nil {
		return nil, err
	}
	socket := dockerSocketPath()
	gid, err := socketGroup(socket)
	if err != nil {
		return nil, err
	}

	ep := &endpoints{}
	ready := &adminReady{ep: ep, plugins: settings.pluginNames(), timeout: settings.timeout}
	moduleOpts := []testcontainers.ContainerCustomizer{
		testcontainers.WithLabels(map[string]string{Label: "xcoretest"}),
		testcontainers.WithEnv(map[string]string{"XCORE_ADMIN_LISTEN": listenAddr}),
		testcontainers.WithFiles(testcontainers.ContainerFile{
			Reader: strings.NewReader(render(&settings)), ContainerFilePath: configPath, FileMode: 0o644,
		}),
		// Host network: the runner publishes plugin ports on the host's 127.0.0.1 (or
		// dials their addresses), and its own ports are the host's.
		testcontainers.WithHostConfigModifier(func(hc *container.HostConfig) {
			hc.NetworkMode = "host"
			hc.Binds = append(hc.Binds, socket+":"+dockerSocket)
			hc.GroupAdd = append(hc.GroupAdd, strconv.Itoa(gid))
		}),
		testcontainers.CustomizeRequestOption(func(req *testcontainers.GenericContainerRequest) error {
			req.WaitingFor = ready
			return nil
		}),
	}
	ctr, err := testcontainers.Run(ctx, img, append(moduleOpts, opts...)...)
	var c *Container
	if ctr != nil {
		c = &Container{Container: ctr, ep: ep}
	}
	if err != nil {
		return c, fmt.Errorf("run xcore runner %s: %w", img, err)
	}
	if !ep.complete() {
		// A wait strategy of the caller's replaced the module's: the addresses are still
		// to be read, whatever state the plugins are in.
		find := &adminReady{ep: ep, timeout: settings.timeout, anyState: true}
		if err := find.WaitUntilReady(ctx, ctr); err != nil {
			return c, fmt.Errorf("run xcore runner %s: %w", img, err)
		}
	}
	return c, nil
}

// PluginURL is the proxy URL of plugin name, ending in a slash:
// http://127.0.0.1:<port>/plugins/<name>/.
func (c *Container) PluginURL(name string) string {
	return "http://" + c.ep.listen + "/plugins/" + name + "/"
}

// AdminURL is the base URL of the runner's admin API (http://127.0.0.1:<port>, no
// trailing slash); every request needs "Authorization: Bearer <Token()>".
func (c *Container) AdminURL() string { return "http://" + c.ep.admin }

// Token is the runner's admin token.
func (c *Container) Token() string { return c.ep.token }

// Terminate stops the runner gracefully (SIGTERM, 60 seconds unless
// testcontainers.StopTimeout says otherwise: it drains its proxy and removes its plugin
// containers and network), then removes the runner container. If the runner left
// containers or its network behind, Terminate removes them and says so in its error.
// It is safe on a nil Container and a no-op once it succeeded.
func (c *Container) Terminate(ctx context.Context, opts ...testcontainers.TerminateOption) error {
	if c == nil || c.Container == nil || c.done {
		return nil
	}
	o := testcontainers.NewTerminateOptions(ctx, append([]testcontainers.TerminateOption{testcontainers.StopTimeout(stopTimeout)}, opts...)...)
	ctx = o.Context()
	id, _ := c.instanceID(ctx) // "" when the runner never got that far
	var errs []error
	if err := c.Container.Stop(ctx, o.StopTimeout()); err != nil && !isNotFound(err) {
		errs = append(errs, fmt.Errorf("stop runner: %w", err))
	}
	if id != "" {
		errs = append(errs, sweep(ctx, id))
	}
	if err := c.Container.Terminate(ctx, opts...); err != nil && !isNotFound(err) {
		errs = append(errs, fmt.Errorf("terminate runner: %w", err))
	} else {
		c.done = true
	}
	return errors.Join(errs...)
}

// instanceID reads the runner's instance id, which labels its plugin containers
// (io.xcore.runner=<id>) and names its network (xcore-<id>).
func (c *Container) instanceID(ctx context.Context) (string, error) {
	b, err := copyFrom(ctx, c.Container, runnerIDPath)
	return strings.TrimSpace(string(b)), err
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

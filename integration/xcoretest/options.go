package xcoretest

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/testcontainers/testcontainers-go"
)

// Option is an option of this module: it changes the plugins.hcl Run gives the runner,
// or how long Run waits. It implements testcontainers.ContainerCustomizer so that module
// and generic options go in one list; Run applies it, not testcontainers-go.
type Option func(*options) error

// Customize implements testcontainers.ContainerCustomizer. It changes nothing in the
// request: Run reads every Option first and renders the config from all of them.
func (Option) Customize(*testcontainers.GenericContainerRequest) error { return nil }

var _ testcontainers.ContainerCustomizer = Option(nil)

type plugin struct {
	name, image string
	lines       []string
}

type service struct{ name, body string }

type options struct {
	timeout  time.Duration
	services []service
	plugins  []plugin
	extra    []string
}

func (o *options) pluginNames() []string {
	names := make([]string, len(o.plugins))
	for i, p := range o.plugins {
		names[i] = p.name
	}
	return names
}

// WithPlugin adds `plugin "name" { image = "<image>"; port = 8080; <hclLines> }`. Each
// line is an attribute or block of the plugin, e.g. `env = { GREETING = "hi" }`,
// `services = ["kv"]` or "supervisor {\n  health { path = \"/healthz\" }\n}" (HCL
// wants a nested block on a line of its own); a line `port = N` replaces the default
// port. The image must exist locally (see BuildImage). A second WithPlugin with the same
// name replaces the first.
func WithPlugin(name, image string, hclLines ...string) Option {
	return func(o *options) error {
		if name == "" || image == "" {
			return errors.New("WithPlugin: name and image must not be empty")
		}
		p := plugin{name: name, image: image, lines: hclLines}
		for i := range o.plugins {
			if o.plugins[i].name == name {
				o.plugins[i] = p
				return nil
			}
		}
		o.plugins = append(o.plugins, p)
		return nil
	}
}

// WithService adds `service "name" { <hclBody> }`, e.g.
// WithService("kv", `builtin = "kv"`) or WithService("settings", `env = { X = "1" }`).
// A second WithService with the same name replaces the first.
func WithService(name, hclBody string) Option {
	return func(o *options) error {
		if name == "" {
			return errors.New("WithService: name must not be empty")
		}
		s := service{name: name, body: hclBody}
		for i := range o.services {
			if o.services[i].name == name {
				o.services[i] = s
				return nil
			}
		}
		o.services = append(o.services, s)
		return nil
	}
}

// WithConfig appends hcl verbatim to the generated plugins.hcl: services and plugins
// written by hand. Run generates the runner block; do not add one.
func WithConfig(hcl string) Option {
	return func(o *options) error {
		o.extra = append(o.extra, hcl)
		return nil
	}
}

// WithStartupTimeout bounds how long Run waits for the runner and every plugin to be
// healthy (default 60s).
func WithStartupTimeout(d time.Duration) Option {
	return func(o *options) error {
		if d <= 0 {
			return fmt.Errorf("WithStartupTimeout(%s): want a positive duration", d)
		}
		o.timeout = d
		return nil
	}
}

// dockerConfigDir is where WithDockerConfig puts the registry credentials in the runner
// container.
const dockerConfigDir = "/etc/xcore/docker"

// WithDockerConfig gives the runner the registry credentials of a Docker config
// directory (what DOCKER_CONFIG names, ~/.docker by default), so that it can pull plugin
// images from a private registry: dir/config.json is copied into the runner container,
// readable by the runner's non-root user, and DOCKER_CONFIG points at it. Credentials
// must be in the file ("auths"): the runner image has no credential helper to run.
func WithDockerConfig(dir string) testcontainers.CustomizeRequestOption {
	return func(req *testcontainers.GenericContainerRequest) error {
		src := filepath.Join(dir, "config.json")
		if _, err := os.Stat(src); err != nil {
			return fmt.Errorf("WithDockerConfig: %w", err)
		}
		// Copied, not bind-mounted: a user's config.json is usually 0600 and owned by
		// someone the runner (uid 65532) is not.
		req.Files = append(req.Files, testcontainers.ContainerFile{
			HostFilePath: src, ContainerFilePath: dockerConfigDir + "/config.json", FileMode: 0o444,
		})
		if req.Env == nil {
			req.Env = map[string]string{}
		}
		req.Env["DOCKER_CONFIG"] = dockerConfigDir
		return nil
	}
}

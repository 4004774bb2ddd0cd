package runner

import (
	"context"
	"io"
	"net/http"
	"net/netip"
	"time"

	"github.com/xcore/runner/proxy"
	"github.com/xcore/runner/sandbox"
)

// Sandbox is what the runner needs of an engine backend; sandbox/docker implements it
// and tests use a fake.
type Sandbox interface {
	Images
	Protector
	EnsureNetwork(ctx context.Context) (sandbox.Network, error)
	// RemoveNetwork removes the runner's network; kept, when not empty, says why it is
	// still there (not an error).
	RemoveNetwork(ctx context.Context) (kept string, err error)
	Run(ctx context.Context, spec sandbox.Spec) (sandbox.Instance, error)
	Inspect(ctx context.Context, id string) (sandbox.Instance, error)
	Stop(ctx context.Context, id string, timeout time.Duration) error
	Remove(ctx context.Context, id string) error
	List(ctx context.Context) ([]sandbox.Instance, error)
	Events(ctx context.Context) <-chan sandbox.Event
	Logs(ctx context.Context, id string, follow bool, tail int) (io.ReadCloser, error)
}

// Images resolves what a plugin runs: an image reference, or a folder to build.
type Images interface {
	ResolveImage(ctx context.Context, ref string) (id string, err error)
	// BuildImage resolves a plugin folder to its image, building it when build is true
	// and it is not built yet (progress gets the builder's lines).
	BuildImage(ctx context.Context, plugin, dir string, build bool, progress func(string)) (ref, id string, err error)
}

// Router is the public proxy as the runner drives it; proxy.Proxy implements it.
type Router interface {
	http.Handler
	SetReady(name string, b proxy.Backend)
	SetNotReady(name, reason string) // 503 + Retry-After: it will serve soon
	SetFailed(name, reason string)   // 503: it will not serve until its config changes
	Remove(name string)
	// Released is closed once an instance is out of the route and idle.
	Released(name, id string) <-chan struct{}
	// Alive: the instance passed a health probe (the proxy may balance to it again).
	Alive(name, id string)
	// SetGoneCheck: how the proxy asks whether an instance it failed to reach stopped.
	SetGoneCheck(proxy.GoneFunc)
	InFlight(name string) int
	SetTrustedProxies([]netip.Prefix) // runner { trusted_proxies }, live
	Close()                           // close idle upstream connections
}

var _ Router = (*proxy.Proxy)(nil)

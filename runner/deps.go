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

// Sandbox is what the runner needs of the container engine; sandbox.Client implements it
// and tests use a fake.
type Sandbox interface {
	ResolveImage(ctx context.Context, ref string) (string, error)
	EnsureNetwork(ctx context.Context) (sandbox.Network, error)
	RemoveNetwork(ctx context.Context) (bool, error)
	Run(ctx context.Context, spec sandbox.ContainerSpec) (sandbox.Container, error)
	Inspect(ctx context.Context, id string) (sandbox.Container, error)
	Stop(ctx context.Context, id string, timeout time.Duration) error
	Remove(ctx context.Context, id string) error
	List(ctx context.Context) ([]sandbox.Container, error)
	Events(ctx context.Context) <-chan sandbox.Event
	Logs(ctx context.Context, id string, follow bool, tail int) (io.ReadCloser, error)
	Build(ctx context.Context, bc sandbox.BuildContext, tag, plugin string, progress func(string)) (string, error)
}

// Router is the public proxy as the runner drives it; proxy.Proxy implements it.
type Router interface {
	http.Handler
	SetReady(name string, b proxy.Backend)
	SetNotReady(name, reason string)
	Remove(name string)
	InFlight(name string) int
	InFlightGeneration(name string, generation int) int
	SetTrustedProxies([]netip.Prefix) // runner { trusted_proxies }, live
	Close()                           // close idle upstream connections
}

var (
	_ Sandbox = (*sandbox.Client)(nil)
	_ Router  = (*proxy.Proxy)(nil)
)

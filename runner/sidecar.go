package runner

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/xcore/runner/config"
	"github.com/xcore/runner/sandbox"
	"github.com/xcore/runner/services"
)

// Services is what the runner needs of the services package: the sidecar endpoints
// and the tokens that open them.
type Services interface {
	SetConfig(svcs map[string]*config.Service, declared map[string][]string)
	Token(plugin string, gen int) string
	Allow(plugin string, gen int)
	Revoke(plugin string, gen int)
	Handler() http.Handler
	PluginHandler(plugin string) http.Handler
	Close() error
}

var _ Services = (*services.Manager)(nil)

// The sidecar's host name inside plugin containers (an ExtraHosts entry): the gateway of
// the runner network, where the runner listens. Docker's host-gateway would be docker0's
// address, which is another network.
const sidecarHost = "xcore.internal"

// sidecar hosts the services endpoints: one TCP listener on the runner network's gateway
// for bridge plugins, and one unix socket per container of a network = "none" plugin.
type sidecar struct {
	svc      Services
	log      *slog.Logger
	stateDir string
	secret   []byte
	gateway  netip.Addr
	port     int // 0: no TCP sidecar

	srv *http.Server

	mu     sync.Mutex
	socks  map[string]*http.Server // "plugin/gen/replica" → its services.sock server
	tokens map[string]map[int]bool // "plugin/gen" → the replicas holding its token
}

// startSidecar listens on gateway at the port this state_dir used before (so the
// NAME_URLs in running containers — and their snapshots — stay valid across runner
// restarts), or a fresh one.
func startSidecar(svc Services, log *slog.Logger, stateDir string, secret []byte, gateway netip.Addr) (*sidecar, error) {
	sc := &sidecar{svc: svc, log: log, stateDir: stateDir, secret: secret, gateway: gateway, socks: map[string]*http.Server{}, tokens: map[string]map[int]bool{}}
	if !gateway.IsValid() {
		log.Warn("no runner network gateway: bridge plugins cannot reach services")
		return sc, nil
	}
	portFile := filepath.Join(stateDir, "sidecar-port")
	port, _ := ReadSidecarPort(stateDir)
	ln, err := net.Listen("tcp", netip.AddrPortFrom(gateway, uint16(port)).String())
	if err != nil && port != 0 {
		log.Warn("sidecar port taken; using a new one (plugins with services will be replaced)", "port", port, "err", err)
		ln, err = net.Listen("tcp", netip.AddrPortFrom(gateway, 0).String())
	}
	if err != nil {
		return nil, fmt.Errorf("sidecar listen on %s: %w", gateway, err)
	}
	sc.port = ln.Addr().(*net.TCPAddr).Port
	if err := os.WriteFile(portFile, []byte(strconv.Itoa(sc.port)+"\n"), 0o600); err != nil {
		ln.Close()
		return nil, fmt.Errorf("write %s: %w", portFile, err)
	}
	sc.srv = &http.Server{Handler: svc.Handler(), ReadHeaderTimeout: 10 * time.Second, IdleTimeout: 120 * time.Second}
	go func() { _ = sc.srv.Serve(ln) }()
	log.Info("services sidecar listening", "addr", ln.Addr().String(), "host", sidecarHost)
	return sc, nil
}

// ReadSidecarPort returns the sidecar port a runner of stateDir listens (or listened) on.
func ReadSidecarPort(stateDir string) (int, error) {
	b, err := os.ReadFile(filepath.Join(stateDir, "sidecar-port"))
	if err != nil {
		return 0, err
	}
	return strconv.Atoi(strings.TrimSpace(string(b)))
}

// serviceEnv adds what a plugin needs to reach its declared services: NAME_URL for each
// service with an endpoint (kv, url) and the values of env services. It is part of the
// snapshot, so it must be the same for the same config and sidecar port. Port 0 is an
// error for a runner (its sidecar did not start) but not for `runner plan` before any
// runner used the state_dir: nothing can run then, and the plan says "add" either way.
func serviceEnv(env map[string]string, cfg *config.Config, p *config.Plugin, port int, planning bool) error {
	endpoints := false
	for _, name := range p.Services {
		s := cfg.Services[name]
		if s == nil {
			continue
		}
		maps.Copy(env, s.Env)
		if s.Builtin == "" && s.URL == "" {
			continue
		}
		endpoints = true
		switch {
		case p.Supervisor.Network == config.NetworkNone:
			// Host ignored: the plugin dials XCORE_SERVICES_SOCKET.
			env[services.EnvName(name)] = fmt.Sprintf("http://%s/services/%s/", sidecarHost, name)
		case port == 0 && !planning:
			return fmt.Errorf("service %q: the runner's services sidecar is not available", name)
		default:
			env[services.EnvName(name)] = fmt.Sprintf("http://%s:%d/p/%s/services/%s/", sidecarHost, port, p.Name, name)
		}
	}
	if p.Supervisor.Network == config.NetworkNone {
		env["XCORE_SOCKET"] = sandbox.SocketDir + "/plugin.sock"
		if endpoints {
			env["XCORE_SERVICES_SOCKET"] = sandbox.SocketDir + "/services.sock"
		}
	}
	return nil
}

// runDir is the host folder of one network = "none" instance: unguessable (an HMAC of
// the runner secret) yet recomputable, so an adopted instance's sockets are found again.
func (sc *sidecar) runDir(plugin string, gen, replica int) string {
	mac := hmac.New(sha256.New, sc.secret)
	fmt.Fprintf(mac, "rundir/%s/%d/%d", plugin, gen, replica)
	return filepath.Join(sc.stateDir, "run", fmt.Sprintf("%s-%d-%d-%s", plugin, gen, replica, hex.EncodeToString(mac.Sum(nil))[:16]))
}

// prepare completes spec for its instance: the token (never in the snapshot: it is new
// for every generation), where the sidecar listens for a bridge plugin, and for
// network = "none" the run folder with the services socket. The token is valid from now
// until the last instance of the generation is released.
func (sc *sidecar) prepare(spec *sandbox.Spec) error {
	spec.Env = maps.Clone(spec.Env)
	if sc.svc != nil {
		spec.Env["XCORE_TOKEN"] = sc.svc.Token(spec.Plugin, spec.Generation)
	}
	sc.hold(spec.Plugin, spec.Generation, spec.Replica)
	if spec.Network != sandbox.NetworkNone {
		if sc.gateway.IsValid() {
			spec.SidecarHost, spec.SidecarAddr = sidecarHost, sc.gateway
		}
		return nil
	}
	spec.RunDir = sc.runDir(spec.Plugin, spec.Generation, spec.Replica)
	return sc.serveSocket(spec.Plugin, spec.Generation, spec.Replica, spec.RunDir)
}

// hold records an instance of generation gen as holding the generation's token.
func (sc *sidecar) hold(plugin string, gen, replica int) {
	key := fmt.Sprintf("%s/%d", plugin, gen)
	sc.mu.Lock()
	if sc.tokens[key] == nil {
		sc.tokens[key] = map[int]bool{}
	}
	first := len(sc.tokens[key]) == 0
	sc.tokens[key][replica] = true
	sc.mu.Unlock()
	if first && sc.svc != nil {
		sc.svc.Allow(plugin, gen)
	}
}

// serveSocket creates the run folder and serves the plugin's services on services.sock in
// it. Permissions: the parent is 0711 (not listable), the folder 0777 so the plugin's
// non-root user can create plugin.sock, the socket 0666 (only this container mounts it).
func (sc *sidecar) serveSocket(plugin string, gen, replica int, dir string) error {
	if err := os.MkdirAll(filepath.Dir(dir), 0o711); err != nil {
		return fmt.Errorf("run dir: %w", err)
	}
	if err := os.Chmod(filepath.Dir(dir), 0o711); err != nil {
		return fmt.Errorf("run dir: %w", err)
	}
	if err := os.MkdirAll(dir, 0o777); err != nil {
		return fmt.Errorf("run dir: %w", err)
	}
	if err := os.Chmod(dir, 0o777); err != nil { // umask must not narrow it
		return fmt.Errorf("run dir: %w", err)
	}
	if sc.svc == nil {
		return nil
	}
	sock := filepath.Join(dir, "services.sock")
	_ = os.Remove(sock) // a previous runner's, for an adopted container
	ln, err := net.Listen("unix", sock)
	if err != nil {
		return fmt.Errorf("services socket: %w", err)
	}
	if err := os.Chmod(sock, 0o666); err != nil {
		ln.Close()
		return fmt.Errorf("services socket: %w", err)
	}
	srv := &http.Server{Handler: sc.svc.PluginHandler(plugin), ReadHeaderTimeout: 10 * time.Second}
	sc.mu.Lock()
	sc.socks[fmt.Sprintf("%s/%d/%d", plugin, gen, replica)] = srv
	sc.mu.Unlock()
	go func() { _ = srv.Serve(ln) }()
	return nil
}

// adopt re-arms the sidecar for an instance a previous runner process started: its
// token becomes valid again and, for network = "none", its services socket is served
// again.
func (sc *sidecar) adopt(plugin string, gen, replica int, none bool) error {
	sc.hold(plugin, gen, replica)
	if !none {
		return nil
	}
	return sc.serveSocket(plugin, gen, replica, sc.runDir(plugin, gen, replica))
}

// release ends what prepare or adopt set up for an instance that is gone; the token of
// its generation goes with the generation's last instance.
func (sc *sidecar) release(plugin string, gen, replica int) {
	tokKey, sockKey := fmt.Sprintf("%s/%d", plugin, gen), fmt.Sprintf("%s/%d/%d", plugin, gen, replica)
	sc.mu.Lock()
	last := false
	if held := sc.tokens[tokKey]; held[replica] {
		delete(held, replica)
		if len(held) == 0 {
			delete(sc.tokens, tokKey)
			last = true
		}
	}
	srv := sc.socks[sockKey]
	delete(sc.socks, sockKey)
	sc.mu.Unlock()
	if last && sc.svc != nil {
		sc.svc.Revoke(plugin, gen)
	}
	if srv != nil {
		_ = srv.Close()
		_ = os.RemoveAll(sc.runDir(plugin, gen, replica))
	}
}

// close stops every listener; the caller closes the services (and their store).
func (sc *sidecar) close(ctx context.Context) error {
	var errs []error
	if sc.srv != nil {
		if err := sc.srv.Shutdown(ctx); err != nil {
			errs = append(errs, fmt.Errorf("sidecar: %w", err))
		}
	}
	sc.mu.Lock()
	socks := sc.socks
	sc.socks = map[string]*http.Server{}
	sc.mu.Unlock()
	for _, srv := range socks {
		_ = srv.Close()
	}
	return errors.Join(errs...)
}

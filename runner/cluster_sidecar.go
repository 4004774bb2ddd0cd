package runner

import (
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"time"
)

// startClusterSidecar prepares the services sidecar of a runner on a cluster. Its port is
// decided now, because every NAME_URL carries it (and is in the snapshot): the port this
// state_dir used before, or a free one. It listens nowhere yet: listenOn adds a listener
// on the runner's address on each plugin network as the runner joins it, so that a plugin
// reaches the sidecar on its own network only, and nothing else of the runner.
func startClusterSidecar(svc Services, log *slog.Logger, stateDir string, secret []byte, _ netip.Addr) (*sidecar, error) {
	sc := &sidecar{svc: svc, log: log, stateDir: stateDir, secret: secret, socks: map[string]*http.Server{}, tokens: map[string]map[int]bool{}}
	port, _ := ReadSidecarPort(stateDir)
	if port == 0 {
		// Free on every address of the runner's container, so on each plugin network too.
		ln, err := net.Listen("tcp", ":0")
		if err != nil {
			return nil, fmt.Errorf("sidecar port: %w", err)
		}
		port = ln.Addr().(*net.TCPAddr).Port
		ln.Close()
	}
	sc.port = port
	portFile := filepath.Join(stateDir, "sidecar-port")
	if err := os.WriteFile(portFile, []byte(strconv.Itoa(port)+"\n"), 0o600); err != nil {
		return nil, fmt.Errorf("write %s: %w", portFile, err)
	}
	log.Info("services sidecar port chosen; listening on each plugin network", "port", port, "host", sidecarHost)
	return sc, nil
}

// netKey is the key of a plugin network's listener among the sidecar's servers.
func netKey(plugin string) string { return "net/" + plugin }

// listenOn serves the sidecar at addr (the runner's address on plugin's network), once.
func (sc *sidecar) listenOn(plugin string, addr netip.Addr) error {
	if sc.svc == nil || sc.port == 0 || !addr.IsValid() {
		return nil
	}
	sc.mu.Lock()
	defer sc.mu.Unlock()
	if _, ok := sc.socks[netKey(plugin)]; ok {
		return nil
	}
	ln, err := net.Listen("tcp", netip.AddrPortFrom(addr, uint16(sc.port)).String())
	if err != nil {
		return fmt.Errorf("sidecar listen on %s's network: %w", plugin, err)
	}
	srv := &http.Server{Handler: sc.svc.Handler(), ReadHeaderTimeout: 10 * time.Second, IdleTimeout: 120 * time.Second}
	sc.socks[netKey(plugin)] = srv
	go func() { _ = srv.Serve(ln) }()
	sc.log.Info("services sidecar listening", "plugin", plugin, "addr", ln.Addr().String(), "host", sidecarHost)
	return nil
}

// stopListening closes the listener on plugin's network (the plugin is gone).
func (sc *sidecar) stopListening(plugin string) {
	sc.mu.Lock()
	srv := sc.socks[netKey(plugin)]
	delete(sc.socks, netKey(plugin))
	sc.mu.Unlock()
	if srv != nil {
		_ = srv.Close()
	}
}

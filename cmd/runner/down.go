package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"sort"
	"sync"
	"time"

	"github.com/xcore/runner/config"
	"github.com/xcore/runner/runner"
)

// defaultStopTimeout applies to containers of plugins that are no longer configured.
const defaultStopTimeout = 10 * time.Second

func cmdDown(args []string, stdout, stderr io.Writer) error {
	fs, cfgPath := newFlags("down", "Stop and remove every container, the network and the host rules of the runner of\nthis config (found by their Docker labels and the runner id), also when the runner\nis not running — after a crash, a kill -9 or `runner up --keep`. Needs Docker, not\nthe admin API.", stderr)
	force := fs.Bool("force", false, "go ahead even when a runner answers on the admin address (it would restart what is removed)")
	backendName := backendFlag(fs)
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	// An invalid config must not keep anyone from cleaning up: the runner block is enough.
	settings, cfg, err := runnerSettings(*cfgPath, stderr, stderr)
	if err != nil {
		return err
	}
	id, known, err := runner.ReadInstanceID(settings.StateDir)
	if err != nil {
		return err
	}
	if !known {
		fmt.Fprintf(stdout, "nothing to remove: no runner has used state_dir %s\n", settings.StateDir)
		return nil
	}
	if addr := adminListen(settings); !*force && answers(addr) {
		return fmt.Errorf("a runner answers at %s: stop it instead (Ctrl-C or SIGTERM removes its containers), or pass --force", addr)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	sb, err := openBackend(ctx, chosenBackend(*backendName, settings), id, slog.New(slog.DiscardHandler), false)
	if err != nil {
		return err
	}
	defer sb.Close()
	if cl, ok := sb.(runner.Cluster); ok {
		return downCluster(ctx, cl, sb, id, stdout, stderr)
	}
	ctrs, err := sb.List(ctx)
	if err != nil {
		return err
	}
	sort.Slice(ctrs, func(i, j int) bool { return ctrs[i].Name < ctrs[j].Name })
	if len(ctrs) == 0 {
		fmt.Fprintf(stdout, "no containers of runner %s\n", id)
	}

	// Concurrently: each container gets its own stop_timeout, not the sum of them.
	var mu sync.Mutex
	var failed int
	var wg sync.WaitGroup
	for _, c := range ctrs {
		grace := defaultStopTimeout
		if p := pluginOf(cfg, c.Plugin); p != nil && p.Supervisor.StopTimeout > 0 {
			grace = p.Supervisor.StopTimeout
		}
		wg.Go(func() {
			err := sb.Stop(ctx, c.ID, grace)
			if rerr := sb.Remove(ctx, c.ID); err == nil {
				err = rerr
			}
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				failed++
				fmt.Fprintf(stderr, "container %s: %v\n", c.Name, err)
				return
			}
			fmt.Fprintf(stdout, "removed container %s (plugin %s, generation %d)\n", c.Name, c.Plugin, c.Generation)
		})
	}
	wg.Wait()
	kept, err := sb.RemoveNetwork(ctx)
	switch {
	case err != nil:
		fmt.Fprintf(stderr, "network %s: %v\n", sb.NetworkName(), err)
		failed++
	case kept != "":
		fmt.Fprintln(stderr, kept)
		failed++
	default:
		fmt.Fprintf(stdout, "network %s removed (or already gone)\n", sb.NetworkName())
	}
	// After the containers: the rules protect the host for as long as a plugin runs.
	removed, err := sb.Unprotect(ctx)
	switch {
	case errors.Is(err, os.ErrPermission):
		// Only a runner with CAP_NET_ADMIN can have installed them; this one cannot tell.
		fmt.Fprintf(stderr, "host rules (%s) not checked: %v\n", sb.HostRules(), err)
	case err != nil:
		fmt.Fprintf(stderr, "host rules (%s): %v\n", sb.HostRules(), err)
		failed++
	case removed:
		fmt.Fprintf(stdout, "host rules %s removed\n", sb.HostRules())
	}
	if failed > 0 {
		return fmt.Errorf("%d objects could not be removed", failed)
	}
	return nil
}

// downCluster removes every generation (service) of runner id on a cluster, then its
// networks: Swarm stops the tasks with their services.
func downCluster(ctx context.Context, cl runner.Cluster, sb backend, id string, stdout, stderr io.Writer) error {
	deps, err := cl.Generations(ctx)
	if err != nil {
		return err
	}
	sort.Slice(deps, func(i, j int) bool { return deps[i].Name < deps[j].Name })
	if len(deps) == 0 {
		fmt.Fprintf(stdout, "no services of runner %s\n", id)
	}
	failed := 0
	for _, d := range deps {
		if err := cl.RemoveGeneration(ctx, d.Plugin, d.Generation); err != nil {
			failed++
			fmt.Fprintf(stderr, "service %s: %v\n", d.Name, err)
			continue
		}
		fmt.Fprintf(stdout, "removed service %s (plugin %s, generation %d, %d tasks)\n", d.Name, d.Plugin, d.Generation, d.Replicas)
	}
	kept, err := sb.RemoveNetwork(ctx)
	switch {
	case err != nil:
		fmt.Fprintf(stderr, "networks: %v\n", err)
		failed++
	case kept != "":
		fmt.Fprintln(stderr, kept)
		failed++
	default:
		fmt.Fprintf(stdout, "networks %s removed (or already gone)\n", sb.NetworkName())
	}
	if failed > 0 {
		return fmt.Errorf("%d objects could not be removed", failed)
	}
	return nil
}

// answers reports whether something accepts connections at addr (a running runner's
// admin API). An ephemeral port (":0") cannot be checked.
func answers(addr string) bool {
	host, port, err := net.SplitHostPort(addr)
	if err != nil || port == "0" {
		return false
	}
	if host == "" || host == "0.0.0.0" || host == "::" {
		host = "127.0.0.1"
	}
	conn, err := net.DialTimeout("tcp", net.JoinHostPort(host, port), time.Second)
	if err != nil {
		return false
	}
	conn.Close()
	return true
}

func pluginOf(cfg *config.Config, name string) *config.Plugin {
	if cfg == nil {
		return nil
	}
	return cfg.Plugins[name]
}

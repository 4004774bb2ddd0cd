package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"sync"
	"sync/atomic"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/xcore/runner/config"
	"github.com/xcore/runner/proxy"
	"github.com/xcore/runner/registry/remote"
	"github.com/xcore/runner/runner"
	"github.com/xcore/runner/runner/admin"
	"github.com/xcore/runner/sandbox/swarm"
)

func cmdUp(args []string, stdout, stderr io.Writer) error {
	fs, cfgPath := newFlags("up", "Start every plugin of the config, each in its own limited container, and serve\nthem at http://<listen>/plugins/<name>/ until SIGINT/SIGTERM; then drain\nin-flight requests and remove the containers.", stderr)
	keep := fs.Bool("keep", false, "leave plugin containers running on exit (same as runner { keep_on_exit = true })")
	backendName := backendFlag(fs)
	level := fs.String("log-level", "info", "log `level`: debug, info, warn, error")
	format := fs.String("log-format", "text", "log `format`: text or json")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	log, err := newLogger(stderr, *level, *format)
	if err != nil {
		return err
	}
	tuneGC(log)
	cfg, err := loadConfigFor(*cfgPath, *backendName, stderr)
	if err != nil {
		return err
	}

	// First SIGINT/SIGTERM: graceful shutdown. A second Ctrl-C forces the exit; a repeated
	// SIGTERM does not (process managers may signal a whole group, and abandoning the
	// cleanup would leave containers behind).
	sigs := make(chan os.Signal, 2)
	signal.Notify(sigs, os.Interrupt, syscall.SIGTERM)
	defer signal.Stop(sigs)
	ctx, stop := context.WithCancel(context.Background())
	defer stop()
	done := make(chan struct{})
	defer close(done)
	go func() {
		first := true
		for {
			var sig os.Signal
			select {
			case sig = <-sigs:
			case <-done:
				return
			}
			switch {
			case first:
				first = false
				stop()
			case sig == os.Interrupt:
				fmt.Fprintln(stderr, "second interrupt: exiting now; containers may be left running (the next `runner up` adopts or removes them)")
				os.Exit(130)
			default:
				fmt.Fprintln(stderr, "already shutting down")
			}
		}
	}()

	id, err := runner.InstanceID(cfg.Runner.StateDir)
	if err != nil {
		return err
	}
	// The admin listener is bound before anything starts: a busy port fails at once. On a
	// swarm where to listen depends on the runner's container: the backend comes first.
	var sb backend
	if cfg.Runner.Backend == config.BackendSwarm {
		if sb, err = openBackend(ctx, cfg.Runner.Backend, id, log, true); err != nil {
			return err
		}
		defer sb.Close()
	}
	listen, adminAddr, err := listenAddrs(ctx, sb, cfg.Runner, stderr)
	if err != nil {
		return err
	}
	token, err := admin.LoadOrCreateToken(cfg.Runner.AdminTokenFile)
	if err != nil {
		return err
	}
	aln, err := net.Listen("tcp", adminAddr)
	if err != nil {
		return fmt.Errorf("admin API: listen %s: %w (another runner? set runner.admin_listen or %s)", adminAddr, err, envAdminListen)
	}
	defer aln.Close()
	if sb == nil {
		if sb, err = openBackend(ctx, cfg.Runner.Backend, id, log, true); err != nil {
			return err
		}
		defer sb.Close()
	}

	metrics := admin.NewMetrics(prometheus.NewRegistry())
	px := proxy.New(proxy.Options{TrustedProxies: cfg.Runner.TrustedProxies, Logger: log, Observer: metrics})
	var outMu sync.Mutex // status lines and pull progress share stdout
	r := runner.New(runner.Options{
		Config: cfg, ConfigPath: *cfgPath, Sandbox: sb, Router: px,
		Logger: log, Keep: *keep, OnStatus: statusPrinter(stdout, &outMu), Listen: listen,
		Registry: remote.New(remote.Options{Logger: log}),
	})
	pullEvents, unsubscribePulls := r.Subscribe()
	stopPulls := printPulls(stdout, &outMu, isTerminalWriter(stdout), pullEvents, r.Pulls)
	defer func() {
		unsubscribePulls()
		stopPulls()
	}()
	metrics.SetSource(admin.Source{Statuses: r.Statuses, InFlight: px.InFlight})
	var proxyAddr atomic.Pointer[string]
	stopAdmin := serveAdmin(aln, r, admin.Options{
		Runner: r, Token: token, TokenFile: cfg.Runner.AdminTokenFile, Metrics: metrics, Logger: log,
		History: admin.NewHistory(100),
		Version: versionString(),
		ProxyAddr: func() string {
			if a := proxyAddr.Load(); a != nil {
				return *a
			}
			return ""
		},
		Protection: r.Protected,
	})
	defer stopAdmin() // after the runner's Shutdown: the API reports the plugins stopping
	fmt.Fprintf(stdout, "admin http://%s/ (token in %s)\n", aln.Addr(), cfg.Runner.AdminTokenFile)

	begin := time.Now()
	startErr := r.Start(ctx)
	if p, ok := r.Protected(); ok {
		fmt.Fprintln(stdout, protectionLine(admin.NewHostProtection(p)))
	}
	if startErr == nil {
		addr := r.Addr().String()
		proxyAddr.Store(&addr)
		ready := 0
		for _, s := range r.Statuses() {
			if s.State == runner.StateHealthy {
				ready++
			}
		}
		fmt.Fprintf(stdout, "serving http://%s/plugins/<name>/ — %d/%d plugins ready in %s; Ctrl-C to stop\n",
			r.Addr(), ready, len(cfg.Plugins), time.Since(begin).Round(time.Millisecond))
		hup := make(chan os.Signal, 1)
		signal.Notify(hup, syscall.SIGHUP)
		defer signal.Stop(hup)
	wait:
		for {
			select {
			case <-ctx.Done():
				break wait
			case <-hup:
				log.Info("SIGHUP: reloading config")
				r.Reload()
			}
		}
	}
	stop()
	fmt.Fprintln(stderr, "shutting down: draining requests, stopping plugins (Ctrl-C again to force)")
	sctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	shutErr := r.Shutdown(sctx)
	fmt.Fprintln(stdout, stoppedLine(r.Stopped(), sb.NetworkName()))
	if startErr != nil {
		return startErr
	}
	return shutErr
}

// protectionLine says what plugins can reach of the host, for `runner up` and `ps`:
// a promise the runner cannot keep is a warning, never left unsaid.
func protectionLine(h *admin.HostProtection) string {
	switch {
	case h.Unavailable != "":
		return "WARNING " + h.Unavailable
	case !h.Enforced:
		return "WARNING host protection off (runner { protect_host = false }): plugins can reach every service of the host; egress limits enforced (" + h.Rules + ")"
	}
	return "host protection on: plugins reach the host only at their sidecar (" + h.Rules + ")"
}

// stoppedLine is `runner up`'s last line: what its shutdown left behind, if anything.
func stoppedLine(rep runner.ShutdownReport, network string) string {
	if rep.Kept {
		return "stopped: plugins left running (keep_on_exit); the next `runner up` adopts them"
	}
	plural := "s"
	if rep.Removed == 1 {
		plural = ""
	}
	if rep.Network == "removed" {
		return fmt.Sprintf("stopped: removed %d container%s and network %s", rep.Removed, plural, network)
	}
	return fmt.Sprintf("stopped: removed %d container%s; %s", rep.Removed, plural, rep.Network)
}

// listenAddrs are where the proxy and the admin API listen. On a swarm the runner is in a
// container: a loopback or wildcard host becomes the container's own address (where
// `docker run -p 127.0.0.1:8080:8080` delivers), never an address on a plugin network; and
// it states the hardening promises the cluster's engine cannot keep.
func listenAddrs(ctx context.Context, sb backend, r config.Runner, stderr io.Writer) (listen, adminAddr string, err error) {
	listen, adminAddr = r.Listen, adminListen(r)
	s, ok := sb.(*swarm.Client)
	if !ok {
		return listen, adminAddr, nil
	}
	writeGaps(stderr, "warning: backend swarm (Engine API "+s.APIVersion()+") does not apply ", s.Gaps())
	if listen, err = s.ListenAddr(ctx, listen); err != nil {
		return "", "", err
	}
	if adminAddr, err = s.ListenAddr(ctx, adminAddr); err != nil {
		return "", "", err
	}
	return listen, adminAddr, nil
}

// serveAdmin serves the admin API on ln and counts the runner's events into o.Metrics
// until the returned function is called; that function ends the event and log streams,
// shuts the server down and waits for every goroutine it started.
func serveAdmin(ln net.Listener, r *runner.Runner, o admin.Options) func() {
	log := o.Logger
	// Subscribed before the runner starts: the start-up is counted and recorded too.
	events, unsubscribe := r.Subscribe()
	recent, unsubscribeRecent := r.Subscribe()
	mctx, stopMetrics := context.WithCancel(context.Background())
	// Streams (events, followed logs) never go idle: cancelling the base context of
	// their requests ends them, so that Shutdown does not wait for them.
	base, endStreams := context.WithCancel(context.Background())
	srv := &http.Server{
		Handler:           admin.New(o),
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       120 * time.Second,
		MaxHeaderBytes:    64 << 10,
		BaseContext:       func(net.Listener) context.Context { return base },
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelDebug),
	}
	var wg sync.WaitGroup
	wg.Go(func() { o.Metrics.Run(mctx, events) })
	wg.Go(func() { o.History.Run(mctx, recent) })
	wg.Go(func() {
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Error("admin API stopped", "err", err)
		}
	})
	var once sync.Once
	return func() {
		once.Do(func() {
			endStreams()
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			if err := srv.Shutdown(ctx); err != nil {
				_ = srv.Close()
			}
			stopMetrics()
			unsubscribe()
			unsubscribeRecent()
			wg.Wait()
		})
	}
}

// statusPrinter prints one line per plugin each time what serves it changes: ready
// (with the generation, endpoint and start time) or failed (with the reason).
func statusPrinter(stdout io.Writer, mu *sync.Mutex) func(runner.Status) {
	// mu: OnStatus is called from plugin goroutines, and the pull lines share stdout.
	out := tabwriter.NewWriter(stdout, 0, 0, 2, ' ', 0)
	type shown struct {
		state runner.State
		gen   int
		err   string
	}
	last := map[string]shown{}
	return func(s runner.Status) {
		mu.Lock()
		defer mu.Unlock()
		now := shown{s.State, s.Generation, s.LastError}
		if last[s.Name] == now {
			return
		}
		last[s.Name] = now
		switch {
		case s.State == runner.StateHealthy && s.Adopted:
			fmt.Fprintf(out, "adopted\t%s\t%s\t%s\tgeneration %d\t\n", s.Name, s.Image, s.Endpoint, s.Generation)
		case s.State == runner.StateHealthy && s.LastError != "":
			fmt.Fprintf(out, "KEPT\t%s\t%s\t%s\n", s.Name, s.Image, s.LastError)
		case s.State == runner.StateHealthy:
			fmt.Fprintf(out, "ready\t%s\t%s\t%s\tgeneration %d\t%s\n", s.Name, s.Image, s.Endpoint, s.Generation, s.Took.Round(time.Millisecond))
		case s.State == runner.StateFailed:
			fmt.Fprintf(out, "FAILED\t%s\t%s\t%s\n", s.Name, s.Image, s.LastError)
		default:
			return
		}
		out.Flush()
	}
}

// Package plugin holds the few lines every example plugin shares: where to listen
// (PORT, or XCORE_SOCKET when the plugin has no network) and a graceful stop on SIGTERM,
// so that the runner's stop_timeout is a grace period and not a guillotine.
package plugin

import (
	"context"
	"errors"
	"log"
	"net"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"
)

// Listen opens the listener the runner told the plugin to use.
func Listen() (net.Listener, error) {
	if sock := os.Getenv("XCORE_SOCKET"); sock != "" {
		_ = os.Remove(sock)
		return net.Listen("unix", sock)
	}
	port := os.Getenv("PORT")
	if port == "" {
		port = "8080"
	}
	return net.Listen("tcp", ":"+port)
}

// Serve serves h on ln until SIGTERM/SIGINT, then lets in-flight requests finish. It
// returns nil after a graceful stop and the serve error otherwise (e.g. listener closed).
func Serve(ln net.Listener, h http.Handler) error {
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	select {
	case err := <-errc:
		if errors.Is(err, http.ErrServerClosed) {
			return nil
		}
		return err
	case <-ctx.Done():
		log.Printf("%s: shutting down", os.Getenv("XCORE_PLUGIN"))
		sctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		return srv.Shutdown(sctx)
	}
}

// Package plugin is the small kit for writing an xcore plugin in Go: it does the parts
// that depend on the runner (where to listen, how to stop, how to call the plugin's
// services, what the proxy tells each request) so that a plugin is its handlers and
// nothing else:
//
//	func main() {
//		mux := http.NewServeMux()
//		mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, r *http.Request) {
//			fmt.Fprintln(w, "hello")
//		})
//		if err := plugin.Serve(mux); err != nil {
//			log.Fatal(err)
//		}
//	}
//
// Serve listens where the runner says (PORT, or the unix socket XCORE_SOCKET of a plugin
// with network = "none"), answers the runner's health probe on GET /healthz when the
// handler has no route for it, and on SIGTERM stops accepting connections and lets
// in-flight requests finish. Client calls the services the plugin declared, with the
// plugin's credential (XCORE_TOKEN) added for those endpoints only, over the services
// socket when the plugin has no network. ServiceURL, RequestID, Prefix and PublicPath
// read what the runner put in the environment and in each request.
//
// The package uses the standard library only, so that a plugin's static binary (and its
// FROM scratch image) stays small.
package plugin

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"
)

// drainTimeout bounds how long Serve waits for in-flight requests after SIGTERM. It is
// the runner's default stop_timeout, after which the runner kills the container anyway;
// by the time the runner signals a plugin its proxy has already drained it
// (drain_timeout), so what is left is long streams.
const drainTimeout = 10 * time.Second

// healthzPath is the path of the health probe Serve answers when the handler does not.
const healthzPath = "/healthz"

// Serve serves h where the runner told the plugin to listen (see Listen) until the
// process gets SIGTERM or SIGINT. It logs (package log) where it listens and when it
// stops. Then it stops accepting connections, waits for
// in-flight requests to finish and returns nil. Requests still running after 10 seconds
// (the runner's default stop_timeout, after which it kills the container) are cut and
// Serve says so in its error. Serve returns an error at once when it cannot listen.
//
// A GET or HEAD /healthz that h answers with 404 Not Found (because it has no route for
// it) is answered "ok" instead, so that the runner's probe, health { path = "/healthz" },
// works for every plugin; a handler that serves /healthz itself keeps its answer.
func Serve(h http.Handler) error {
	ln, err := Listen()
	if err != nil {
		return err
	}
	return ServeListener(ln, h)
}

// Listen opens the listener the runner told the plugin to use: the unix socket
// $XCORE_SOCKET when it is set (a plugin with network = "none"; a stale socket file is
// removed first), else TCP port $PORT on every interface (8080 when PORT is not set,
// e.g. when the binary runs outside the runner).
func Listen() (net.Listener, error) {
	if sock := os.Getenv("XCORE_SOCKET"); sock != "" {
		if err := os.Remove(sock); err != nil && !errors.Is(err, os.ErrNotExist) {
			return nil, fmt.Errorf("listen on XCORE_SOCKET %s: remove stale socket: %w", sock, err)
		}
		ln, err := net.Listen("unix", sock)
		if err != nil {
			return nil, fmt.Errorf("listen on XCORE_SOCKET: %w", err)
		}
		return ln, nil
	}
	port := os.Getenv("PORT")
	if port == "" {
		port = "8080"
	}
	ln, err := net.Listen("tcp", ":"+port)
	if err != nil {
		return nil, fmt.Errorf("listen on PORT %s: %w", port, err)
	}
	return ln, nil
}

// ServeListener is Serve on a listener the caller opened (with Listen, or its own), for
// a plugin that must keep a hand on it. When ln fails (e.g. the plugin closed it),
// ServeListener lets in-flight requests finish as after a signal and returns the
// listener's error.
func ServeListener(ln net.Listener, h http.Handler) error {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	return serve(ctx, ln, h, drainTimeout)
}

// serve serves h on ln until ctx is done (the signal), then drains for up to drain. The
// signal is a context so that tests can stop a server without signalling themselves.
func serve(ctx context.Context, ln net.Listener, h http.Handler, drain time.Duration) error {
	srv := &http.Server{Handler: withHealthz(h), ReadHeaderTimeout: 10 * time.Second}
	log.Printf("%s listening on %s", pluginName(), ln.Addr())
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()

	var serveErr error
	select {
	case err := <-errc: // the listener failed, or the plugin closed it
		serveErr = fmt.Errorf("serve: %w", err)
	case <-ctx.Done():
		log.Printf("%s: shutting down: no new connections, finishing in-flight requests", pluginName())
	}
	dctx, cancel := context.WithTimeout(context.Background(), drain)
	defer cancel()
	var drainErr error
	if err := srv.Shutdown(dctx); err != nil {
		_ = srv.Close() // cut what is left: once serve returns, nothing may keep serving
		drainErr = fmt.Errorf("shutdown: requests still running after %s were cut: %w", drain, err)
	}
	if serveErr == nil {
		<-errc // http.ErrServerClosed: the serving goroutine is done
	}
	return errors.Join(serveErr, drainErr)
}

func pluginName() string {
	if n := os.Getenv("XCORE_PLUGIN"); n != "" {
		return n
	}
	return "plugin"
}

// withHealthz answers GET/HEAD /healthz with "ok" when h answers it with 404.
func withHealthz(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != healthzPath || (r.Method != http.MethodGet && r.Method != http.MethodHead) {
			h.ServeHTTP(w, r)
			return
		}
		nf := &notFound{ResponseWriter: w}
		h.ServeHTTP(nf, r)
		if !nf.caught {
			return
		}
		hdr := w.Header()
		clear(hdr) // what h set for its 404 (Content-Type, X-Content-Type-Options)
		hdr.Set("Content-Type", "text/plain; charset=utf-8")
		hdr.Set("Cache-Control", "no-store")
		w.WriteHeader(http.StatusOK)
		if r.Method == http.MethodGet {
			_, _ = io.WriteString(w, "ok\n")
		}
	})
}

// notFound passes an answer through unless its status is 404, which it swallows.
type notFound struct {
	http.ResponseWriter
	wrote  bool
	caught bool
}

func (n *notFound) WriteHeader(code int) {
	if n.wrote {
		return
	}
	if code >= 100 && code < 200 && code != http.StatusSwitchingProtocols {
		n.ResponseWriter.WriteHeader(code) // informational: the real status follows
		return
	}
	n.wrote = true
	if code == http.StatusNotFound {
		n.caught = true
		return
	}
	n.ResponseWriter.WriteHeader(code)
}

func (n *notFound) Write(b []byte) (int, error) {
	if !n.wrote {
		n.WriteHeader(http.StatusOK)
	}
	if n.caught {
		return len(b), nil
	}
	return n.ResponseWriter.Write(b)
}

// Unwrap lets http.ResponseController reach the real writer (Flush, deadlines).
func (n *notFound) Unwrap() http.ResponseWriter { return n.ResponseWriter }

// Flush implements http.Flusher for handlers that assert it rather than use
// http.ResponseController.
func (n *notFound) Flush() {
	if !n.wrote {
		n.WriteHeader(http.StatusOK)
	}
	if f, ok := n.ResponseWriter.(http.Flusher); ok && !n.caught {
		f.Flush()
	}
}

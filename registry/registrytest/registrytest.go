// Package registrytest runs a real registry for tests and benchmarks:
// go-containerregistry's pkg/registry (an OCI distribution server) on 127.0.0.1, which
// dockerd pulls from over plain HTTP (127.0.0.0/8 is an insecure registry by default).
// It counts the requests it serves by kind, can demand basic auth, and can misbehave on
// request (429 with Retry-After, blobs that fail mid-pull, slowness), so that tests see
// what a runner does against a registry without a mock. It also builds images FROM
// scratch out of a static binary and pushes them (no engine needed).
package registrytest

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/subtle"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	ggcr "github.com/google/go-containerregistry/pkg/registry"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// Counts is what the registry served, by kind of request.
type Counts struct {
	Ping, ManifestHead, ManifestGet, BlobGet, BlobHead, Writes, Refused int64
}

// Server is a registry on 127.0.0.1:<free port>.
type Server struct {
	Host    string // 127.0.0.1:PORT
	handler http.Handler

	lmu  sync.Mutex // guards srv and done across Stop and Resume
	srv  *http.Server
	done chan struct{}

	ping, mhead, mget, bget, bhead, writes, refused atomic.Int64

	mu         sync.Mutex
	user, pass string        // basic auth, when user != ""
	throttle   int           // answer this many more requests with 429
	retryAfter string        // the Retry-After of those 429s
	failBlobs  bool          // blob GETs answer 404: a pull fails halfway
	delay      time.Duration // every request waits this long first
}

// Start serves a fresh, empty registry until Close.
func Start() (*Server, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	s := &Server{Host: ln.Addr().String()}
	s.handler = s.wrap(ggcr.New(ggcr.Logger(log.New(io.Discard, "", 0))))
	s.serve(ln)
	return s, nil
}

func (s *Server) serve(ln net.Listener) {
	srv := &http.Server{Handler: s.handler, ReadHeaderTimeout: 10 * time.Second}
	done := make(chan struct{})
	s.lmu.Lock()
	s.srv, s.done = srv, done
	s.lmu.Unlock()
	go func() {
		defer close(done)
		_ = srv.Serve(ln)
	}()
}

// Close stops the registry (connections in flight are cut).
func (s *Server) Close() { s.Stop() }

// Stop makes the registry unreachable: its port refuses connections, those in flight
// are cut. Resume serves the same content again on the same port.
func (s *Server) Stop() {
	s.lmu.Lock()
	srv, done := s.srv, s.done
	s.srv = nil
	s.lmu.Unlock()
	if srv != nil {
		_ = srv.Close()
		<-done
	}
}

// Resume serves again on the same address after Stop.
func (s *Server) Resume() error {
	ln, err := net.Listen("tcp", s.Host)
	if err != nil {
		return err
	}
	s.serve(ln)
	return nil
}

// Counts returns the requests served so far.
func (s *Server) Counts() Counts {
	return Counts{Ping: s.ping.Load(), ManifestHead: s.mhead.Load(), ManifestGet: s.mget.Load(),
		BlobGet: s.bget.Load(), BlobHead: s.bhead.Load(), Writes: s.writes.Load(), Refused: s.refused.Load()}
}

// RequireAuth makes every request need basic auth with user and pass.
func (s *Server) RequireAuth(user, pass string) {
	s.mu.Lock()
	s.user, s.pass = user, pass
	s.mu.Unlock()
}

// Throttle answers the next n requests with 429 and Retry-After: retryAfter ("" for none).
func (s *Server) Throttle(n int, retryAfter string) {
	s.mu.Lock()
	s.throttle, s.retryAfter = n, retryAfter
	s.mu.Unlock()
}

// FailBlobs makes blob GETs answer 404 (manifests still answer): a pull that starts
// and fails halfway.
func (s *Server) FailBlobs(fail bool) {
	s.mu.Lock()
	s.failBlobs = fail
	s.mu.Unlock()
}

// Delay makes every request wait d before it is served: a slow registry.
func (s *Server) Delay(d time.Duration) {
	s.mu.Lock()
	s.delay = d
	s.mu.Unlock()
}

func (s *Server) wrap(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.mu.Lock()
		user, pass, delay, failBlobs := s.user, s.pass, s.delay, s.failBlobs
		throttled, retryAfter := s.throttle > 0, s.retryAfter
		if throttled {
			s.throttle--
		}
		s.mu.Unlock()
		if delay > 0 {
			select {
			case <-time.After(delay):
			case <-r.Context().Done():
				return
			}
		}
		if throttled {
			s.refused.Add(1)
			if retryAfter != "" {
				w.Header().Set("Retry-After", retryAfter)
			}
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusTooManyRequests)
			_, _ = io.WriteString(w, `{"errors":[{"code":"TOOMANYREQUESTS","message":"slow down"}]}`)
			return
		}
		if user != "" {
			u, p, ok := r.BasicAuth()
			if !ok || subtle.ConstantTimeCompare([]byte(u), []byte(user)) != 1 || subtle.ConstantTimeCompare([]byte(p), []byte(pass)) != 1 {
				s.refused.Add(1)
				w.Header().Set("WWW-Authenticate", `Basic realm="registrytest"`)
				w.Header().Set("Content-Type", "application/json")
				w.WriteHeader(http.StatusUnauthorized)
				_, _ = io.WriteString(w, `{"errors":[{"code":"UNAUTHORIZED","message":"authentication required"}]}`)
				return
			}
		}
		kind := classify(r)
		switch kind {
		case "ping":
			s.ping.Add(1)
		case "manifest-head":
			s.mhead.Add(1)
		case "manifest-get":
			s.mget.Add(1)
		case "blob-get":
			s.bget.Add(1)
			if failBlobs {
				w.Header().Set("Content-Type", "application/json")
				w.WriteHeader(http.StatusNotFound)
				_, _ = io.WriteString(w, `{"errors":[{"code":"BLOB_UNKNOWN","message":"blob unknown to registry"}]}`)
				return
			}
		case "blob-head":
			s.bhead.Add(1)
		default:
			s.writes.Add(1)
		}
		next.ServeHTTP(w, r)
	})
}

func classify(r *http.Request) string {
	p := r.URL.Path
	switch {
	case p == "/v2/" || p == "/v2":
		return "ping"
	case strings.Contains(p, "/manifests/") && r.Method == http.MethodHead:
		return "manifest-head"
	case strings.Contains(p, "/manifests/") && r.Method == http.MethodGet:
		return "manifest-get"
	case strings.Contains(p, "/blobs/") && !strings.Contains(p, "/uploads") && r.Method == http.MethodGet:
		return "blob-get"
	case strings.Contains(p, "/blobs/") && !strings.Contains(p, "/uploads") && r.Method == http.MethodHead:
		return "blob-head"
	}
	return "write"
}

// WriteDockerConfig writes dir/config.json with an auths entry for host, as
// `docker login` writes it (dir is what DOCKER_CONFIG names).
func WriteDockerConfig(dir, host, user, pass string) error {
	cfg := map[string]any{"auths": map[string]any{
		host: map[string]string{"auth": base64.StdEncoding.EncodeToString([]byte(user + ":" + pass))},
	}}
	b, err := json.MarshalIndent(cfg, "", "  ")
	if err != nil {
		return err
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(dir, "config.json"), b, 0o600)
}

// Image is what Build puts in an image FROM scratch.
type Image struct {
	Binary     string            // a static binary, copied to /<base name>
	Entrypoint []string          // default: the binary
	Env        map[string]string // image environment (the plugin's env overrides it)
	Files      map[string]string // extra files: path → content (a way to make a new digest)
	Labels     map[string]string // image labels (tests clean up the images they pull by label)
	Platform   v1.Platform       // default linux/amd64
}

// Build makes the image: one layer with the binary and the files, user 65532:65532.
func Build(spec Image) (v1.Image, error) {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	add := func(path string, mode int64, data []byte) error {
		if err := tw.WriteHeader(&tar.Header{Name: strings.TrimPrefix(path, "/"), Mode: mode, Size: int64(len(data)), Typeflag: tar.TypeReg}); err != nil {
			return err
		}
		_, err := tw.Write(data)
		return err
	}
	bin := "/" + filepath.Base(spec.Binary)
	if spec.Binary != "" {
		data, err := os.ReadFile(spec.Binary)
		if err != nil {
			return nil, err
		}
		if err := add(bin, 0o755, data); err != nil {
			return nil, err
		}
	}
	for path, content := range spec.Files {
		if err := add(path, 0o644, []byte(content)); err != nil {
			return nil, err
		}
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	layerBytes := buf.Bytes()
	layer, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(layerBytes)), nil })
	if err != nil {
		return nil, err
	}
	img, err := mutate.AppendLayers(empty.Image, layer)
	if err != nil {
		return nil, err
	}
	cf, err := img.ConfigFile()
	if err != nil {
		return nil, err
	}
	cf = cf.DeepCopy()
	p := spec.Platform
	if p.OS == "" {
		p = v1.Platform{OS: "linux", Architecture: "amd64"}
	}
	cf.OS, cf.Architecture, cf.Variant = p.OS, p.Architecture, p.Variant
	cf.Config.User = "65532:65532"
	cf.Config.Entrypoint = spec.Entrypoint
	if cf.Config.Entrypoint == nil && spec.Binary != "" {
		cf.Config.Entrypoint = []string{bin}
	}
	for k, v := range spec.Env {
		cf.Config.Env = append(cf.Config.Env, k+"="+v)
	}
	cf.Config.Labels = spec.Labels
	return mutate.ConfigFile(img, cf)
}

// Index makes a multi-platform index of imgs, each under its config's platform.
func Index(imgs ...v1.Image) (v1.ImageIndex, error) {
	var adds []mutate.IndexAddendum
	for _, img := range imgs {
		cf, err := img.ConfigFile()
		if err != nil {
			return nil, err
		}
		adds = append(adds, mutate.IndexAddendum{Add: img, Descriptor: v1.Descriptor{
			Platform: &v1.Platform{OS: cf.OS, Architecture: cf.Architecture, Variant: cf.Variant},
		}})
	}
	return mutate.IndexMediaType(mutate.AppendManifests(empty.Index, adds...), types.DockerManifestList), nil
}

// Push writes img (a v1.Image or a v1.ImageIndex) to ref ("127.0.0.1:PORT/team/hello:1.4")
// with user and pass (empty: anonymous) and returns its digest.
func Push(ctx context.Context, ref string, img any, user, pass string) (string, error) {
	r, err := name.ParseReference(ref)
	if err != nil {
		return "", err
	}
	opts := []remote.Option{remote.WithContext(ctx)}
	if user != "" {
		opts = append(opts, remote.WithAuth(&authn.Basic{Username: user, Password: pass}))
	}
	switch v := img.(type) {
	case v1.Image:
		if err := remote.Write(r, v, opts...); err != nil {
			return "", fmt.Errorf("push %s: %w", ref, err)
		}
		d, err := v.Digest()
		return d.String(), err
	case v1.ImageIndex:
		if err := remote.WriteIndex(r, v, opts...); err != nil {
			return "", fmt.Errorf("push %s: %w", ref, err)
		}
		d, err := v.Digest()
		return d.String(), err
	}
	return "", fmt.Errorf("push %s: %T is neither an image nor an index", ref, img)
}

// Since is the difference b - a, request kind by kind.
func (a Counts) Since(b Counts) Counts {
	return Counts{Ping: a.Ping - b.Ping, ManifestHead: a.ManifestHead - b.ManifestHead, ManifestGet: a.ManifestGet - b.ManifestGet,
		BlobGet: a.BlobGet - b.BlobGet, BlobHead: a.BlobHead - b.BlobHead, Writes: a.Writes - b.Writes, Refused: a.Refused - b.Refused}
}

func (a Counts) String() string {
	return "ping " + strconv.FormatInt(a.Ping, 10) + ", manifest HEAD " + strconv.FormatInt(a.ManifestHead, 10) +
		", manifest GET " + strconv.FormatInt(a.ManifestGet, 10) + ", blob GET " + strconv.FormatInt(a.BlobGet, 10) +
		", blob HEAD " + strconv.FormatInt(a.BlobHead, 10) + ", writes " + strconv.FormatInt(a.Writes, 10) +
		", refused " + strconv.FormatInt(a.Refused, 10)
}

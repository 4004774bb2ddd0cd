package remote

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/xcore/runner/registry"
	"github.com/xcore/runner/registry/registrytest"
)

type anonymous struct{}

func (anonymous) Resolve(authn.Resource) (authn.Authenticator, error) { return authn.Anonymous, nil }

func startRegistry(t *testing.T) *registrytest.Server {
	t.Helper()
	s, err := registrytest.Start()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close)
	return s
}

// image builds a small distinct image for platform os/arch.
func image(t *testing.T, content, arch string) v1.Image {
	t.Helper()
	img, err := registrytest.Build(registrytest.Image{Files: map[string]string{"/version": content}, Platform: v1.Platform{OS: "linux", Architecture: arch}})
	if err != nil {
		t.Fatal(err)
	}
	return img
}

func push(t *testing.T, ref string, img any) string {
	t.Helper()
	d, err := registrytest.Push(context.Background(), ref, img, "", "")
	if err != nil {
		t.Fatal(err)
	}
	return d
}

func parse(t *testing.T, s string) registry.Ref {
	t.Helper()
	r, err := registry.Parse(s)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

var amd64 = registry.Platform{OS: "linux", Architecture: "amd64"}

// A poll is one manifest HEAD: no GET of a manifest or a blob (registries count those
// against pull limits), and the authentication is not redone each time.
func TestHeadIsOneRequest(t *testing.T) {
	t.Parallel()
	s := startRegistry(t)
	want := push(t, s.Host+"/team/hello:1.4", image(t, "v1", "amd64"))
	c := New(Options{Keychain: anonymous{}})
	ref := parse(t, s.Host+"/team/hello:1.4")
	before := s.Counts()
	for range 5 {
		res, err := c.Check(context.Background(), ref, []string{want}, amd64)
		if err != nil {
			t.Fatal(err)
		}
		if res.Moved || res.Remote != want {
			t.Fatalf("registry.Check = %+v, want not moved from %s", res, want)
		}
	}
	got := s.Counts().Since(before)
	if got.ManifestHead != 5 || got.ManifestGet != 0 || got.BlobGet != 0 || got.Ping > 1 {
		t.Errorf("5 checks cost %s; want 5 manifest HEADs, at most 1 ping, no GET", got)
	}
}

func TestCheckMoved(t *testing.T) {
	t.Parallel()
	s := startRegistry(t)
	ref := parse(t, s.Host+"/team/hello:1.4")
	d1 := push(t, ref.String(), image(t, "v1", "amd64"))
	c := New(Options{Keychain: anonymous{}})
	if res, err := c.Check(context.Background(), ref, nil, amd64); err != nil || !res.Moved {
		t.Errorf("nothing local: registry.Check = %+v, %v; want moved (to pull)", res, err)
	}
	d2 := push(t, ref.String(), image(t, "v2", "amd64"))
	res, err := c.Check(context.Background(), ref, []string{d1}, amd64)
	if err != nil || !res.Moved || res.Remote != d2 {
		t.Errorf("after a push: registry.Check = %+v, %v; want moved to %s", res, err, d2)
	}
}

// A multi-platform index: no move is seen while this platform's manifest stays the
// same, whether the engine recorded the index digest or the platform manifest's.
func TestCheckIndex(t *testing.T) {
	t.Parallel()
	s := startRegistry(t)
	ref := parse(t, s.Host+"/team/multi:1")
	a, b := image(t, "a", "amd64"), image(t, "b", "arm64")
	idx1, err := registrytest.Index(a, b)
	if err != nil {
		t.Fatal(err)
	}
	i1 := push(t, ref.String(), idx1)
	ad, _ := a.Digest()
	c := New(Options{Keychain: anonymous{}})
	ctx := context.Background()

	for _, tc := range []struct {
		name  string
		local []string
	}{{"engine lists the index", []string{i1}}, {"engine lists the platform manifest", []string{ad.String()}}} {
		res, err := c.Check(ctx, ref, tc.local, amd64)
		if err != nil || res.Moved || !res.Known {
			t.Errorf("%s: registry.Check = %+v, %v; want known, not moved", tc.name, res, err)
		}
	}
	// The index is read once, then known by its digest.
	before := s.Counts()
	for range 3 {
		if res, err := c.Check(ctx, ref, []string{ad.String()}, amd64); err != nil || res.Moved {
			t.Fatalf("registry.Check = %+v, %v", res, err)
		}
	}
	if got := s.Counts().Since(before); got.ManifestGet != 0 || got.ManifestHead != 3 {
		t.Errorf("3 checks of a known index cost %s; want HEADs only", got)
	}

	// Only arm64 changes: no move for amd64.
	idx2, _ := registrytest.Index(a, image(t, "b2", "arm64"))
	i2 := push(t, ref.String(), idx2)
	res, err := c.Check(ctx, ref, []string{i1}, amd64)
	if err != nil || res.Moved || res.Remote != i2 {
		t.Errorf("arm64 changed: registry.Check = %+v, %v; want not moved (remote %s)", res, err, i2)
	}
	// amd64 changes: a move.
	idx3, _ := registrytest.Index(image(t, "a3", "amd64"), image(t, "b2", "arm64"))
	i3 := push(t, ref.String(), idx3)
	res, err = c.Check(ctx, ref, []string{i1}, amd64)
	if err != nil || !res.Moved || res.Remote != i3 {
		t.Errorf("amd64 changed: registry.Check = %+v, %v; want moved to %s", res, err, i3)
	}
}

// Credentials come from DOCKER_CONFIG's config.json; a refusal names the registry,
// the repository and the file to check, and no secret. Not parallel: it sets
// DOCKER_CONFIG.
func TestCredentials(t *testing.T) {
	const user, pass = "team", "s3cret-Pa55word"
	s := startRegistry(t)
	s.RequireAuth(user, pass)
	ref := parse(t, s.Host+"/team/hello:1.4")
	want, err := registrytest.Push(context.Background(), ref.String(), image(t, "v1", "amd64"), user, pass)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	t.Setenv("DOCKER_CONFIG", dir)
	if err := registrytest.WriteDockerConfig(dir, s.Host, user, "wrong-"+pass); err != nil {
		t.Fatal(err)
	}
	c := New(Options{})
	wantDenied(t, c, ref, s.Host, dir, pass)

	// Fixed in config.json: the next try reads it again.
	if err := registrytest.WriteDockerConfig(dir, s.Host, user, pass); err != nil {
		t.Fatal(err)
	}
	d, err := c.Head(context.Background(), ref)
	if err != nil || d.Digest != want {
		t.Fatalf("right password: %+v, %v", d, err)
	}
	cred, err := c.Auth(context.Background(), ref)
	if err != nil || cred.Username != user || cred.Password != pass || cred.Server != s.Host {
		t.Fatalf("Auth = %v (user %q), %v", cred, cred.Username, err)
	}
	// However it is printed, a credential shows nothing.
	var logged bytes.Buffer
	slog.New(slog.NewTextHandler(&logged, nil)).Info("pull", "auth", cred)
	slog.New(slog.NewJSONHandler(&logged, nil)).Info("pull", "auth", cred)
	js, _ := json.Marshal(struct{ Auth registry.Credential }{cred})
	for _, out := range []string{fmt.Sprint(cred), fmt.Sprintf("%+v", cred), fmt.Sprintf("%#v", cred), fmt.Sprintf("%v", &cred), logged.String(), string(js)} {
		if strings.Contains(out, pass) || strings.Contains(out, user) {
			t.Errorf("a credential printed as %q", out)
		}
	}
}

// wantDenied checks that c is refused ref with wrong credentials, with an error that
// names the registry, the repository and the config file to check, and not the secret.
func wantDenied(t *testing.T, c *Client, ref registry.Ref, host, dir, secret string) {
	t.Helper()
	_, err := c.Head(context.Background(), ref)
	want := fmt.Sprintf("registry %s denied access to team/hello (check %s/config.json)", host, dir)
	if !errors.Is(err, registry.ErrDenied) || err.Error() != want {
		t.Errorf("wrong credentials: %v; want %q", err, want)
	}
	if err != nil && strings.Contains(err.Error(), secret) {
		t.Errorf("the error shows the secret: %v", err)
	}
}

// A 429 keeps us away for its Retry-After: nothing is sent until then, and the
// registry's single 429 is not retried behind our back.
func TestRateLimit(t *testing.T) {
	t.Parallel()
	s := startRegistry(t)
	ref := parse(t, s.Host+"/team/hello:1.4")
	push(t, ref.String(), image(t, "v1", "amd64"))
	c := New(Options{Keychain: anonymous{}})
	var mu sync.Mutex
	now := time.Now()
	c.limits.now = func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	ctx := context.Background()
	if _, err := c.Head(ctx, ref); err != nil { // authenticated, kept
		t.Fatal(err)
	}

	s.Throttle(1, "30")
	_, err := c.Head(ctx, ref)
	if !errors.Is(err, registry.ErrRateLimited) || registry.RetryAfter(err) != 30*time.Second {
		t.Fatalf("429: %v (retry after %s), want rate limited for 30s", err, registry.RetryAfter(err))
	}
	before := s.Counts()
	for range 3 {
		if _, err := c.Head(ctx, ref); !errors.Is(err, registry.ErrRateLimited) {
			t.Fatalf("within Retry-After: %v, want rate limited", err)
		}
	}
	if got := s.Counts().Since(before); got != (registrytest.Counts{}) {
		t.Errorf("within Retry-After the registry saw %s; want nothing", got)
	}
	mu.Lock()
	now = now.Add(31 * time.Second)
	mu.Unlock()
	if _, err := c.Head(ctx, ref); err != nil {
		t.Errorf("after Retry-After: %v", err)
	}
	if got := s.Counts().Refused; got != 1 {
		t.Errorf("the registry refused %d requests; want the one 429, not retried", got)
	}

	// Without a usable Retry-After: the default wait.
	s.Throttle(1, "")
	if _, err := c.Head(ctx, ref); registry.RetryAfter(err) != time.Minute {
		t.Errorf("429 without Retry-After: %v, want a one-minute wait", err)
	}
}

func TestUnreachableAndNotFound(t *testing.T) {
	t.Parallel()
	s := startRegistry(t)
	c := New(Options{Keychain: anonymous{}})
	ctx := context.Background()
	_, err := c.Head(ctx, parse(t, s.Host+"/team/nope:1"))
	if !errors.Is(err, registry.ErrNotFound) || err.Error() != "registry "+s.Host+" has no "+s.Host+"/team/nope:1" {
		t.Errorf("unknown tag: %v", err)
	}

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close() // nothing listens there now
	_, err = c.Head(ctx, parse(t, addr+"/team/hello:1"))
	if !errors.Is(err, registry.ErrUnreachable) || !strings.HasPrefix(err.Error(), "registry "+addr+" unreachable: ") || !strings.Contains(err.Error(), "connection refused") {
		t.Errorf("closed port: %v", err)
	}
}

// Credentials from a credential helper program, as `docker login` leaves them with
// credsStore or credHelpers: the runner runs `docker-credential-<name> get` from PATH
// (a real program here, a shell script that logs each call), and a wrong secret from it
// is reported like a wrong password in config.json. Not parallel: it sets DOCKER_CONFIG
// and PATH.
func TestCredentialHelpers(t *testing.T) {
	const user, pass = "team", "h3lper-Pa55word"
	s := startRegistry(t)
	s.RequireAuth(user, pass)
	ref := parse(t, s.Host+"/team/hello:1.4")
	want, err := registrytest.Push(context.Background(), ref.String(), image(t, "v1", "amd64"), user, pass)
	if err != nil {
		t.Fatal(err)
	}
	bin := t.TempDir()
	calls := filepath.Join(bin, "calls")
	secret := filepath.Join(bin, "secret")
	// The helper protocol: the action as argument, the server on stdin, JSON on stdout.
	script := "#!/bin/sh\nread server\necho \"$1 $server\" >> " + calls + "\n" +
		"printf '{\"ServerURL\":\"%s\",\"Username\":\"" + user + "\",\"Secret\":\"%s\"}' \"$server\" \"$(cat " + secret + ")\"\n"
	if err := os.WriteFile(filepath.Join(bin, "docker-credential-xcoretest"), []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	t.Setenv("PATH", bin+string(os.PathListSeparator)+os.Getenv("PATH"))

	for _, tc := range []struct{ name, config string }{
		{"credHelpers", `{"credHelpers": {"` + s.Host + `": "xcoretest"}}`},
		{"credsStore", `{"credsStore": "xcoretest"}`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			t.Setenv("DOCKER_CONFIG", dir)
			if err := os.WriteFile(filepath.Join(dir, "config.json"), []byte(tc.config), 0o600); err != nil {
				t.Fatal(err)
			}
			os.Remove(calls)
			if err := os.WriteFile(secret, []byte("wrong-"+pass), 0o600); err != nil {
				t.Fatal(err)
			}
			c := New(Options{})
			wantDenied(t, c, ref, s.Host, dir, pass)

			if err := os.WriteFile(secret, []byte(pass), 0o600); err != nil {
				t.Fatal(err)
			}
			d, err := c.Head(context.Background(), ref)
			if err != nil || d.Digest != want {
				t.Fatalf("helper with the right secret: %+v, %v", d, err)
			}
			cred, err := c.Auth(context.Background(), ref)
			if err != nil || cred.Username != user || cred.Password != pass {
				t.Fatalf("Auth = user %q, %v; want the helper's", cred.Username, err)
			}
			log, _ := os.ReadFile(calls)
			if !strings.Contains(string(log), "get "+s.Host) {
				t.Errorf("the helper was not asked for %s; its calls: %q", s.Host, log)
			}
		})
	}
}

// Package remote asks container registries the one question the runner asks on its own
// — "what does this tag point at now?" — with a manifest HEAD, which registries do not
// count against pull limits, using the credentials Docker users keep
// (~/.docker/config.json, DOCKER_CONFIG, credential helpers). It honours 429 and
// Retry-After and never retries into a rate limit. It imports no engine client: the pull
// itself goes through the engine (sandbox/docker), with the credential found here.
package remote

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"slices"
	"sync"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	ggcr "github.com/google/go-containerregistry/pkg/v1/remote"

	"github.com/xcore/runner/registry"
)

// requestTimeout bounds one question to a registry (HEAD, or an index GET): a slow
// registry makes a poll fail and back off, never hang.
const requestTimeout = 30 * time.Second

// Options configures a Client.
type Options struct {
	// Keychain finds credentials; nil: authn.DefaultKeychain (~/.docker/config.json,
	// DOCKER_CONFIG, credsStore and credHelpers).
	Keychain authn.Keychain
	// Transport is the HTTP transport every request goes through (one, reused: kept-alive
	// connections and one token exchange per repository); nil: a default one.
	Transport http.RoundTripper
	// DefaultRetryAfter is how long a 429 without a usable Retry-After keeps us away;
	// 0: one minute.
	DefaultRetryAfter time.Duration
	Logger            *slog.Logger
	UserAgent         string
}

// Client asks registries what tags point at. Safe for concurrent use.
type Client struct {
	keychain authn.Keychain
	limits   *limiter
	opts     []ggcr.Option
	log      *slog.Logger

	mu     sync.Mutex
	puller *ggcr.Puller
	// platformOf caches, per index digest (immutable content), the digest of its
	// manifest for a platform: asked once, never again.
	platformOf map[string]string
}

// New returns a client; nothing is contacted until asked.
func New(o Options) *Client {
	if o.Keychain == nil {
		o.Keychain = authn.DefaultKeychain
	}
	if o.Transport == nil {
		o.Transport = NewTransport()
	}
	if o.DefaultRetryAfter <= 0 {
		o.DefaultRetryAfter = time.Minute
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	if o.UserAgent == "" {
		o.UserAgent = "xcore-runner"
	}
	lim := &limiter{next: o.Transport, until: map[string]time.Time{}, fallback: o.DefaultRetryAfter, now: time.Now}
	c := &Client{keychain: o.Keychain, limits: lim, log: o.Logger, platformOf: map[string]string{}}
	c.opts = []ggcr.Option{
		ggcr.WithTransport(lim),
		ggcr.WithAuthFromKeychain(o.Keychain),
		ggcr.WithUserAgent(o.UserAgent),
		// Network flakes get one quick retry; a 429 none (the limiter keeps us away for
		// its Retry-After), and anything longer is the caller's backoff.
		ggcr.WithRetryBackoff(ggcr.Backoff{Duration: 250 * time.Millisecond, Factor: 2, Jitter: 0.1, Steps: 2}),
		ggcr.WithRetryStatusCodes(http.StatusRequestTimeout, http.StatusBadGateway, http.StatusServiceUnavailable, http.StatusGatewayTimeout),
	}
	return c
}

// NewTransport is the Client's default transport: kept-alive connections, enough of
// them per registry for the checks the runner makes at once, bounded dials and answers.
func NewTransport() *http.Transport {
	return &http.Transport{
		Proxy:                 http.ProxyFromEnvironment,
		DialContext:           (&net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
		ForceAttemptHTTP2:     true,
		MaxIdleConns:          100,
		MaxIdleConnsPerHost:   16,
		IdleConnTimeout:       90 * time.Second,
		TLSHandshakeTimeout:   10 * time.Second,
		ResponseHeaderTimeout: requestTimeout,
	}
}

// pullerFor returns the reused puller: it keeps one authenticated transport per
// repository, so a poll is one HEAD, not a ping, a token exchange and a HEAD.
func (c *Client) pullerFor() (*ggcr.Puller, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.puller == nil {
		p, err := ggcr.NewPuller(c.opts...)
		if err != nil {
			return nil, err
		}
		c.puller = p
	}
	return c.puller, nil
}

// forget drops the puller after a refusal, so that credentials fixed in config.json
// are read again on the next try.
func (c *Client) forget() {
	c.mu.Lock()
	c.puller = nil
	c.mu.Unlock()
}

// Head asks what ref points at now: one manifest HEAD.
func (c *Client) Head(ctx context.Context, ref registry.Ref) (registry.Descriptor, error) {
	if err := c.limits.check(ref.Registry()); err != nil {
		return registry.Descriptor{}, c.classify(ref, err)
	}
	p, err := c.pullerFor()
	if err != nil {
		return registry.Descriptor{}, err
	}
	nref := ref.Name()
	ctx, cancel := context.WithTimeout(ctx, requestTimeout)
	defer cancel()
	d, err := p.Head(ctx, nref)
	if err != nil {
		return registry.Descriptor{}, c.classify(ref, err)
	}
	return registry.Descriptor{Digest: d.Digest.String(), MediaType: string(d.MediaType), Size: d.Size}, nil
}

// registry.Check heads ref and compares the answer with local, the digests of ref's repository
// that the engine lists for the image it runs (empty: the engine has none). An index
// whose digest the engine does not list is looked into (one GET per index digest,
// cached): when its manifest for platform, or that of an index the engine does list,
// is what the engine has, the tag moved for other platforms only — no move here.
func (c *Client) Check(ctx context.Context, ref registry.Ref, local []string, platform registry.Platform) (registry.Check, error) {
	d, err := c.Head(ctx, ref)
	if err != nil {
		return registry.Check{}, err
	}
	res := registry.Check{Remote: d.Digest}
	if len(local) == 0 {
		res.Moved = true
		return res, nil
	}
	if slices.Contains(local, d.Digest) {
		res.Known = true
		return res, nil
	}
	if !d.Index() {
		res.Moved = true
		return res, nil
	}
	mine, err := c.platformDigest(ctx, ref, d.Digest, platform)
	if err != nil {
		return registry.Check{}, err
	}
	if slices.Contains(local, mine) {
		res.Known = true
		return res, nil
	}
	// The engine may list the previous index, not a platform manifest: compare what
	// both indexes hold for this platform. A digest that is no index fails to parse as
	// one and counts as a move.
	for _, l := range local {
		if prev, err := c.platformDigest(ctx, ref, l, platform); err == nil && prev == mine {
			res.Known = true
			return res, nil
		}
	}
	res.Moved = true
	return res, nil
}

// platformDigest returns the digest of the manifest for platform inside the index
// ref@index.
func (c *Client) platformDigest(ctx context.Context, ref registry.Ref, index string, platform registry.Platform) (string, error) {
	c.mu.Lock()
	mine, ok := c.platformOf[index]
	c.mu.Unlock()
	if ok {
		if mine == "" {
			return "", fmt.Errorf("%s is not an index for %s", index, platform)
		}
		return mine, nil
	}
	if err := c.limits.check(ref.Registry()); err != nil {
		return "", c.classify(ref, err)
	}
	p, err := c.pullerFor()
	if err != nil {
		return "", err
	}
	ctx, cancel := context.WithTimeout(ctx, requestTimeout)
	defer cancel()
	desc, err := p.Get(ctx, ref.Repo().Digest(index))
	if err != nil {
		return "", c.classify(ref, err)
	}
	mine = ""
	if im, err := v1.ParseIndexManifest(bytes.NewReader(desc.Manifest)); err == nil && (desc.MediaType.IsIndex()) {
		want := v1.Platform{OS: platform.OS, Architecture: platform.Architecture, Variant: platform.Variant}
		for _, m := range im.Manifests {
			if m.Platform != nil && m.Platform.Satisfies(want) {
				mine = m.Digest.String()
				break
			}
		}
	}
	c.mu.Lock()
	if len(c.platformOf) > 4096 {
		clear(c.platformOf) // immutable answers; a bound, not an eviction policy
	}
	c.platformOf[index] = mine
	c.mu.Unlock()
	if mine == "" {
		return "", fmt.Errorf("%s is not an index with a manifest for %s", index, platform)
	}
	return mine, nil
}

// Auth returns the credential Docker users keep for ref's registry (anonymous: the
// zero registry.Credential), for the engine's pull.
func (c *Client) Auth(ctx context.Context, ref registry.Ref) (registry.Credential, error) {
	a, err := authn.Resolve(ctx, c.keychain, ref.Repo())
	if err != nil {
		return registry.Credential{}, fmt.Errorf("credentials for %s: %w (check %s)", ref.Registry(), err, registry.ConfigHint())
	}
	if a == authn.Anonymous {
		return registry.Credential{}, nil
	}
	cfg, err := authn.Authorization(ctx, a)
	if err != nil {
		return registry.Credential{}, fmt.Errorf("credentials for %s: %w (check %s)", ref.Registry(), err, registry.ConfigHint())
	}
	return registry.Credential{
		Username: cfg.Username, Password: cfg.Password,
		IdentityToken: cfg.IdentityToken, RegistryToken: cfg.RegistryToken,
		Server: ref.Registry(),
	}, nil
}

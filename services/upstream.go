package services

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"strings"
	"time"
)

// upstream is a url service's target and credentials, parsed once per SetConfig.
type upstream struct {
	target  *url.URL
	headers http.Header // canonical keys; secret: never logged, never in an error body
	host    string      // a configured Host header
}

// newUpstream parses raw; its error names neither raw (it may hold a password) nor a
// header value.
func newUpstream(raw string, headers map[string]string) (*upstream, error) {
	u, err := url.Parse(raw)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, errors.New("url is not an absolute http or https URL")
	}
	up := &upstream{target: u, headers: make(http.Header, len(headers))}
	for k, v := range headers {
		if strings.EqualFold(k, "Host") {
			up.host = v
			continue
		}
		up.headers.Set(k, v)
	}
	// Userinfo in the url is a credential too: send it as basic auth unless a header
	// sets Authorization, and keep it out of the request URL.
	if u.User != nil {
		if up.headers.Get("Authorization") == "" {
			pw, _ := u.User.Password()
			r := &http.Request{Header: http.Header{}}
			r.SetBasicAuth(u.User.Username(), pw)
			up.headers.Set("Authorization", r.Header.Get("Authorization"))
		}
		u.User = nil
	}
	return up, nil
}

func newTransport(lim limits) *http.Transport {
	return &http.Transport{
		Proxy: http.ProxyFromEnvironment,
		DialContext: (&net.Dialer{
			Timeout:   lim.dial,
			KeepAlive: 30 * time.Second,
		}).DialContext,
		ForceAttemptHTTP2:     true,
		MaxIdleConns:          100,
		MaxIdleConnsPerHost:   32,
		IdleConnTimeout:       90 * time.Second,
		TLSHandshakeTimeout:   lim.dial,
		ResponseHeaderTimeout: lim.header,
		ExpectContinueTimeout: time.Second,
	}
}

// forwardKey carries a request's forward through ReverseProxy to rewrite and proxyError.
type forwardKey struct{}

type forward struct {
	up      *upstream
	path    string // below /services/<name>, decoded
	rawPath string // the same, escaped
	rec     *recorder
}

// forward proxies r to svc's upstream. rest is the escaped path below /services/<name>.
func (m *Manager) forward(w *recorder, r *http.Request, svc *route, rest string) {
	if svc.up == nil {
		w.err = errors.New("upstream url does not parse")
		writeProblem(w, http.StatusBadGateway, fmt.Sprintf("service %q is misconfigured", svc.name))
		return
	}
	path, err := url.PathUnescape(rest)
	if err != nil || hasDotSegment(path) {
		// A ".." would climb above the upstream's base path with the credentials attached.
		writeProblem(w, http.StatusBadRequest, "path is not canonical ('.' or '..' segment, or a bad escape)")
		return
	}
	f := &forward{up: svc.up, path: path, rawPath: rest, rec: w}
	m.rp.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), forwardKey{}, f)))
}

func hasDotSegment(p string) bool {
	for seg := range strings.SplitSeq(p, "/") {
		if seg == "." || seg == ".." {
			return true
		}
	}
	return false
}

// rewrite points the outbound request at the upstream: the prefix is already gone
// (f.path), the upstream's path is joined in front and its query merged. The plugin's
// own credentials are dropped before the service's are set.
func rewrite(pr *httputil.ProxyRequest) {
	f := pr.In.Context().Value(forwardKey{}).(*forward)
	out := pr.Out
	out.URL.Path = f.path
	out.URL.RawPath = ""
	if f.rawPath != f.path {
		out.URL.RawPath = f.rawPath
	}
	pr.SetURL(f.up.target)
	out.Header.Del("Authorization")
	out.Header.Del("Proxy-Authorization")
	for k, vs := range f.up.headers {
		out.Header[k] = append([]string(nil), vs...)
	}
	if f.up.host != "" {
		out.Host = f.up.host
	}
}

// proxyError maps a transport error: refused or unreachable → 502, no response headers
// in time → 504, client gone → nothing (499 in the log). The body never carries err: it
// may name internal addresses.
func (m *Manager) proxyError(w http.ResponseWriter, r *http.Request, err error) {
	f := r.Context().Value(forwardKey{}).(*forward)
	f.rec.err = err
	switch {
	case r.Context().Err() != nil:
		f.rec.status = 499
	case isTimeout(err):
		writeProblem(w, http.StatusGatewayTimeout, "upstream did not answer in time")
	default:
		writeProblem(w, http.StatusBadGateway, "upstream connection failed")
	}
}

// isTimeout reports a timeout other than connecting: a dial timeout means the upstream
// is down (502), like a refused connection.
func isTimeout(err error) bool {
	var op *net.OpError
	if errors.As(err, &op) && op.Op == "dial" {
		return false
	}
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

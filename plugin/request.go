package plugin

import (
	"net/http"
	"strings"
)

// RequestID is the id the runner's proxy gave r (its X-Request-Id header): the runner
// logs it and returns it to the client, so a plugin that logs it too lets anyone follow
// one request through both logs. It is "" for a request that did not come through the
// proxy (the runner's health probe, a test calling the handler directly).
func RequestID(r *http.Request) string {
	return r.Header.Get("X-Request-Id")
}

// Prefix is the path under which clients reach the plugin, "/plugins/<name>", from the
// X-Forwarded-Prefix header the proxy sets; the proxy strips it before the plugin sees
// the path. It is "" for a request that did not come through the proxy, and for a value
// that is not a plain absolute path (so it cannot turn a link into another site's).
func Prefix(r *http.Request) string {
	p := r.Header.Get("X-Forwarded-Prefix")
	if !strings.HasPrefix(p, "/") || strings.HasPrefix(p, "//") || strings.ContainsAny(p, "\\?#\r\n\t ") {
		return ""
	}
	return strings.TrimRight(p, "/")
}

// PublicPath is path (a path of the plugin, as its handlers see it) as clients must ask
// for it: Prefix(r) + path, e.g. "/notes/1" → "/plugins/notes/notes/1". Use it for
// links, redirects and Location headers; without it a link to "/notes/1" would leave the
// plugin. A path without a leading slash gets one.
func PublicPath(r *http.Request, path string) string {
	if !strings.HasPrefix(path, "/") {
		path = "/" + path
	}
	return Prefix(r) + path
}

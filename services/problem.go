package services

import (
	"encoding/json"
	"net/http"
	"strconv"
)

// headerError marks a response made by the sidecar itself, not by an upstream, so a
// plugin can tell a 502 of ours from its billing API's own 502 (same as the proxy's).
const headerError = "X-Xcore-Error"

// Problem is the RFC 9457 body of an error made by the sidecar. Its detail never holds
// a header value or an upstream's error text.
type Problem struct {
	Type   string `json:"type"`
	Title  string `json:"title"`
	Status int    `json:"status"`
	Detail string `json:"detail,omitempty"`
}

func writeProblem(w http.ResponseWriter, status int, detail string) {
	body, _ := json.Marshal(Problem{
		Type:   "about:blank",
		Title:  http.StatusText(status),
		Status: status,
		Detail: detail,
	})
	h := w.Header()
	h.Set("Content-Type", "application/problem+json")
	h.Set("Content-Length", strconv.Itoa(len(body)))
	h.Set("Cache-Control", "no-store")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set(headerError, "1")
	w.WriteHeader(status)
	_, _ = w.Write(body)
}

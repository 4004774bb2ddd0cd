package admin

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"

	"github.com/xcore/runner/runner"
)

// Puller is the optional part of a Runner that pulls images now (`runner pull`);
// *runner.Runner implements it.
type Puller interface {
	Pull(ctx context.Context, names []string) ([]runner.PullResult, error)
}

var _ Puller = (*runner.Runner)(nil)

// PullRequest is the body of POST /v1/pull: the plugins whose images to pull (none:
// every plugin with a registry image).
type PullRequest struct {
	Plugins []string `json:"plugins"`
}

// pull pulls now and answers when the pulls have ended, with what changed.
func (s *server) pull(w http.ResponseWriter, r *http.Request) {
	p, ok := s.rt.(Puller)
	if !ok {
		writeProblem(w, http.StatusNotImplemented, "this runner does not pull images")
		return
	}
	var req PullRequest
	if r.ContentLength != 0 {
		if err := json.NewDecoder(http.MaxBytesReader(w, r.Body, 64<<10)).Decode(&req); err != nil {
			writeProblem(w, http.StatusBadRequest, "body: want {\"plugins\": [\"name\", ...]}: "+err.Error())
			return
		}
	}
	res, err := p.Pull(r.Context(), req.Plugins)
	switch {
	case errors.Is(err, runner.ErrUnknownPlugin):
		writeProblem(w, http.StatusNotFound, err.Error())
		return
	case r.Context().Err() != nil:
		return // the client left
	case err != nil:
		writeProblem(w, http.StatusUnprocessableEntity, err.Error())
		return
	}
	if res == nil {
		res = []runner.PullResult{}
	}
	writeJSON(w, http.StatusOK, res)
}

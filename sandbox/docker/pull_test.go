package docker

import (
	"testing"

	"github.com/moby/moby/api/types/jsonstream"

	"github.com/xcore/runner/sandbox"
)

// The engine's pull messages (as 20.10 sends them) become bytes and layers done.
func TestPullTracker(t *testing.T) {
	t.Parallel()
	msg := func(id, status string, cur, total int64) jsonstream.Message {
		m := jsonstream.Message{ID: id, Status: status}
		if total > 0 {
			m.Progress = &jsonstream.Progress{Current: cur, Total: total}
		}
		return m
	}
	var tr pullTracker
	steps := []struct {
		m    jsonstream.Message
		want sandbox.PullProgress
	}{
		{msg("1.4", "Pulling from team/hello", 0, 0), sandbox.PullProgress{}},
		{msg("aaa", "Pulling fs layer", 0, 0), sandbox.PullProgress{Layers: 1}},
		{msg("bbb", "Already exists", 0, 0), sandbox.PullProgress{Layers: 2, LayersDone: 1}},
		{msg("aaa", "Downloading", 400, 1000), sandbox.PullProgress{Layers: 2, LayersDone: 1, Done: 400, Total: 1000}},
		{msg("aaa", "Downloading", 900, 1000), sandbox.PullProgress{Layers: 2, LayersDone: 1, Done: 900, Total: 1000}},
		{msg("aaa", "Download complete", 0, 0), sandbox.PullProgress{Layers: 2, LayersDone: 1, Done: 1000, Total: 1000}},
		{msg("aaa", "Extracting", 500, 1000), sandbox.PullProgress{Layers: 2, LayersDone: 1, Done: 1000, Total: 1000}},
		{msg("aaa", "Pull complete", 0, 0), sandbox.PullProgress{Layers: 2, LayersDone: 2, Done: 1000, Total: 1000}},
		{msg("", "Digest: sha256:cd34", 0, 0), sandbox.PullProgress{Layers: 2, LayersDone: 2, Done: 1000, Total: 1000, Digest: "sha256:cd34"}},
	}
	for i, s := range steps {
		tr.add(s.m)
		if got := tr.progress(); got != s.want {
			t.Errorf("after message %d (%s %s): %+v, want %+v", i, s.m.ID, s.m.Status, got, s.want)
		}
	}
}

func TestPullPercent(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		p    sandbox.PullProgress
		want int
	}{
		{sandbox.PullProgress{}, 0},
		{sandbox.PullProgress{Layers: 2, Done: 430, Total: 1000}, 43},
		{sandbox.PullProgress{Layers: 2, LayersDone: 1, Done: 1000, Total: 1000}, 99},
		{sandbox.PullProgress{Layers: 4, LayersDone: 1}, 25},
		{sandbox.PullProgress{Layers: 2, LayersDone: 2, Done: 10, Total: 1000}, 100},
	} {
		if got := tc.p.Percent(); got != tc.want {
			t.Errorf("%+v: %d%%, want %d%%", tc.p, got, tc.want)
		}
	}
}

package admin

import (
	"encoding/json"

	"github.com/xcore/runner/runner"
)

// PluginStatus is a plugin's status as the API shows it (GET /v1/plugins, the events'
// status): runner.Status, whose duration says its unit in its name — took_ms — rather
// than being a bare number of nanoseconds that a JSON consumer has to guess.
type PluginStatus struct {
	runner.Status
	TookMS int64 `json:"took_ms"` // from start request to healthy, in milliseconds
	// Took hides runner.Status.Took (nanoseconds) from the JSON: a field less nested
	// wins, and left nil it is omitted. A raw message, so that the "took" of an older
	// runner still decodes.
	Took json.RawMessage `json:"took,omitempty"`
}

// NewPluginStatus is st as the API shows it.
func NewPluginStatus(st runner.Status) PluginStatus {
	return PluginStatus{Status: st, TookMS: st.Took.Milliseconds()}
}

// Event is an event as the API shows it (GET /v1/events): its status a PluginStatus and
// its duration in milliseconds, duration_ms.
type Event struct {
	runner.Event
	Status     *PluginStatus `json:"status,omitempty"`      // with "state" events
	DurationMS int64         `json:"duration_ms,omitempty"` // replacements: start → old removed
	// Duration hides runner.Event.Duration (nanoseconds); see PluginStatus.Took.
	Duration json.RawMessage `json:"duration,omitempty"`
}

// NewEvent is ev as the API shows it.
func NewEvent(ev runner.Event) Event {
	out := Event{Event: ev, DurationMS: ev.Duration.Milliseconds()}
	if ev.Status != nil {
		st := NewPluginStatus(*ev.Status)
		out.Status = &st
	}
	return out
}

func pluginStatuses(list []runner.Status) []PluginStatus {
	out := make([]PluginStatus, len(list))
	for i, st := range list {
		out[i] = NewPluginStatus(st)
	}
	return out
}

package runner

import (
	"sync"
	"time"
)

// EventType says what an Event reports.
type EventType string

const (
	EventState       EventType = "state"     // a plugin's status changed
	EventReplacing   EventType = "replacing" // a replacement began (Reason)
	EventReplaced    EventType = "replaced"  // a replacement finished (Duration)
	EventReplaceFail EventType = "replace_failed"
	EventRestart     EventType = "restart"      // a crashed/unhealthy plugin was started again
	EventCrash       EventType = "crash"        // the serving container died or failed its probes (Reason)
	EventProbeFailed EventType = "probe_failed" // one health probe failed
	EventReload      EventType = "reload"       // a config reload was applied or rejected (Message)
	EventPlanError   EventType = "plan_error"   // a plugin's desired state cannot be computed (Reason): nothing changes for it

	EventPullStarted   EventType = "pull_started"   // the plugin's image is being pulled (Image, Reason)
	EventPullDone      EventType = "pull_done"      // it was pulled (Image, Digest, Bytes, Duration)
	EventPullFailed    EventType = "pull_failed"    // the pull failed (Image, Message, Duration); what runs keeps serving
	EventRegistryMoved EventType = "registry_moved" // the followed tag moved in its registry (Image, Digest, Reason)
)

// Event is one thing that happened, for the admin API's event stream and the metrics.
type Event struct {
	Time     time.Time     `json:"time"`
	Type     EventType     `json:"type"`
	Plugin   string        `json:"plugin,omitempty"`
	Status   *Status       `json:"status,omitempty"`   // with EventState
	Reason   string        `json:"reason,omitempty"`   // why (replacements, crashes)
	Message  string        `json:"message,omitempty"`  // human summary (reloads, failures)
	Duration time.Duration `json:"duration,omitempty"` // replacements: start → old removed
	OK       bool          `json:"ok,omitempty"`       // reloads: applied
	Image    string        `json:"image,omitempty"`    // pulls and registry moves: the reference
	Digest   string        `json:"digest,omitempty"`   // pull_done: pulled; registry_moved: moved to
	Bytes    int64         `json:"bytes,omitempty"`    // pull_done: bytes downloaded (the image's size when the engine gave no sizes)
}

// bus fans events out to subscribers. A slow subscriber loses events rather than
// slowing a supervisor down.
type bus struct {
	mu   sync.Mutex
	subs map[chan Event]struct{}
}

// Subscribe returns a channel of every event from now on and a function that ends the
// subscription (and closes the channel).
func (r *Runner) Subscribe() (<-chan Event, func()) {
	ch := make(chan Event, 256)
	r.bus.mu.Lock()
	if r.bus.subs == nil {
		r.bus.subs = map[chan Event]struct{}{}
	}
	r.bus.subs[ch] = struct{}{}
	r.bus.mu.Unlock()
	var once sync.Once
	return ch, func() {
		once.Do(func() {
			r.bus.mu.Lock()
			delete(r.bus.subs, ch)
			r.bus.mu.Unlock()
			close(ch)
		})
	}
}

func (r *Runner) publish(ev Event) {
	if ev.Time.IsZero() {
		ev.Time = time.Now()
	}
	r.bus.mu.Lock()
	defer r.bus.mu.Unlock()
	for ch := range r.bus.subs {
		select {
		case ch <- ev:
		default:
		}
	}
}

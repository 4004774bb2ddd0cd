package runner

import "time"

// State is where a plugin is in its life.
type State string

const (
	StatePending    State = "pending"
	StatePulling    State = "pulling" // its image is being pulled: not failed, not ready yet
	StateStarting   State = "starting"
	StateHealthy    State = "healthy"
	StateUnhealthy  State = "unhealthy"  // health probes failing, not yet restarted
	StateRestarting State = "restarting" // crashed or unhealthy: waiting out the backoff
	StateFailed     State = "failed"
	StateStopped    State = "stopped"
)

// Status is a read-only view of one plugin, for the CLI and the admin API.
type Status struct {
	Name       string           `json:"name"`
	State      State            `json:"state"`
	Generation int              `json:"generation"`
	Image      string           `json:"image"`
	ImageID    string           `json:"image_id"`
	Snapshot   string           `json:"snapshot"`
	Container  string           `json:"container"` // container ID of the first ready instance
	Endpoint   string           `json:"endpoint"`  // where the proxy reaches it (host:port, unix:<path>)
	StartedAt  time.Time        `json:"started_at"`
	Took       time.Duration    `json:"took"`        // from start request to healthy (ns)
	Adopted    bool             `json:"adopted"`     // taken over from a previous runner process, not started
	LastChange string           `json:"last_change"` // why the current generation replaced the previous one
	LastError  string           `json:"last_error"`  // the last failure, including a replacement that failed
	Restarts   int              `json:"restarts"`    // containers started again after a crash or failed health
	LastExit   string           `json:"last_exit"`   // why the last container stopped serving ("exit code 2", "OOM killed")
	Ready      int              `json:"ready"`       // instances of the serving generation in the route
	Replicas   int              `json:"replicas"`    // instances the serving generation has
	Instances  []InstanceStatus `json:"instances"`
	// Pull is the pull under way of the plugin's image, if any (while it is pulling,
	// or while the next image of a moved tag is).
	Pull *PullStatus `json:"pull,omitempty"`
}

// InstanceStatus is one instance of the serving generation.
type InstanceStatus struct {
	Replica   int    `json:"replica"`
	Container string `json:"container"` // container ID; empty while none runs in the slot
	Name      string `json:"name,omitempty"`
	Endpoint  string `json:"endpoint,omitempty"`
	State     State  `json:"state"`
	Restarts  int    `json:"restarts"`
	LastExit  string `json:"last_exit,omitempty"`
}

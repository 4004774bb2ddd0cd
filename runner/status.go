package runner

import "time"

// State is where a plugin is in its life.
type State string

const (
	StatePending    State = "pending"
	StateStarting   State = "starting"
	StateHealthy    State = "healthy"
	StateUnhealthy  State = "unhealthy"  // health probes failing, not yet restarted
	StateRestarting State = "restarting" // crashed or unhealthy: waiting out the backoff
	StateFailed     State = "failed"
	StateStopped    State = "stopped"
)

// Status is a read-only view of one plugin, for the CLI and the admin API.
type Status struct {
	Name       string
	State      State
	Generation int
	Image      string
	ImageID    string
	Snapshot   string
	Container  string // container ID
	Endpoint   string // host:port the proxy dials
	StartedAt  time.Time
	Took       time.Duration // from start request to healthy
	Adopted    bool          // taken over from a previous runner process, not started
	LastChange string        // why the current generation replaced the previous one
	LastError  string        // the last failure, including a replacement that failed
	Restarts   int           // containers started again after a crash or failed health
	LastExit   string        // why the last container stopped serving ("exit code 2", "OOM killed")
}

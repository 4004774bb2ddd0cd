package sandbox

// Labels on every container and network the runner creates. Docker is the source of truth:
// these labels are how a runner finds (and later adopts or collects) what it owns.
const (
	LabelPrefix     = "io.xcore."
	LabelRunner     = LabelPrefix + "runner"     // runner instance id (from state_dir)
	LabelPlugin     = LabelPrefix + "plugin"     // plugin name
	LabelGeneration = LabelPrefix + "generation" // 1, 2, ... per plugin
	LabelSnapshot   = LabelPrefix + "snapshot"   // hash of what the container is made of
	LabelImage      = LabelPrefix + "image"      // resolved image ID
	LabelReplica    = LabelPrefix + "replica"    // the instance's slot in its generation (0..replicas-1)
	// LabelSpec is the snapshot encoding of the spec (env values as digests only), so
	// a later runner or `runner plan` can say WHAT differs, not just that it does.
	LabelSpec = LabelPrefix + "spec"
)

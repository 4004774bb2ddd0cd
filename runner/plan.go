package runner

import (
	"fmt"
	"sort"
	"strings"

	"github.com/xcore/runner/sandbox"
	"github.com/xcore/runner/snapshot"
)

// Action is what a plan does to one plugin.
type Action string

const (
	ActionAdd       Action = "add"       // nothing runs for it: start a generation
	ActionAdopt     Action = "unchanged" // a running generation already matches: keep it
	ActionScale     Action = "scale"     // a running generation matches but has another number of instances
	ActionReplace   Action = "replace"   // what runs differs: start-first replacement
	ActionRemove    Action = "remove"    // no longer configured: drain, stop, remove
	ActionUnplanned Action = "error"     // the desired state cannot be computed (e.g. image missing)
	ActionPull      Action = "pulling"   // its image is being pulled: what runs keeps running until it is there
)

// Desired is what should run for one plugin: the snapshot of its instances and how many,
// or why it cannot be computed.
type Desired struct {
	Spec     snapshot.Spec
	Hash     string
	Replicas int // not in the snapshot: changing it scales the running generation in place
	Err      error
}

// Op is one step of a plan with its cause.
type Op struct {
	Plugin  string
	Action  Action
	Reason  string
	Current []sandbox.Instance // the running generation it keeps, scales or replaces
	Stale   []sandbox.Instance // every other instance of the plugin: removed
	Want    int                // ActionScale: the instances wanted
}

// Plan is the ordered list of operations, one per plugin (sorted by name).
type Plan []Op

// Changes reports whether applying the plan would change anything that runs.
func (p Plan) Changes() bool {
	for _, op := range p {
		if op.Action != ActionAdopt || len(op.Stale) > 0 {
			return true
		}
	}
	return false
}

// Errors lists the plugins whose desired state cannot be computed, with why.
func (p Plan) Errors() []string {
	var out []string
	for _, op := range p {
		if op.Action == ActionUnplanned {
			out = append(out, op.Plugin+": "+op.Reason)
		}
	}
	return out
}

var actionSymbol = map[Action]string{ActionAdd: "+", ActionAdopt: "=", ActionScale: "~", ActionReplace: "~", ActionRemove: "-", ActionUnplanned: "!", ActionPull: "…"}

// String is the human (and golden-test) form: one line per plugin.
func (p Plan) String() string {
	var b strings.Builder
	for _, op := range p {
		fmt.Fprintf(&b, "%s %s: %s", actionSymbol[op.Action], op.Plugin, op.Action)
		if op.Action == ActionScale {
			fmt.Fprintf(&b, " %d → %d", len(op.Current), op.Want)
		}
		if op.Reason != "" {
			fmt.Fprintf(&b, " (%s)", op.Reason)
		}
		if len(op.Stale) > 0 && op.Action != ActionRemove {
			fmt.Fprintf(&b, "; remove %d stale container(s)", len(op.Stale))
		}
		b.WriteByte('\n')
	}
	return b.String()
}

// MakePlan compares desired snapshots with what the engine says runs (observed, by
// label). Pure: no engine, no clock. For each plugin the newest generation with running
// instances whose snapshot matches is kept (and scaled when it has another number of
// them); otherwise the newest generation with running instances is replaced (and serves
// until its successor is healthy); every other instance of the plugin is stale.
func MakePlan(desired map[string]Desired, observed []sandbox.Instance) Plan {
	byPlugin := map[string][]sandbox.Instance{}
	for _, c := range observed {
		byPlugin[c.Plugin] = append(byPlugin[c.Plugin], c)
	}
	names := make([]string, 0, len(desired)+len(byPlugin))
	for n := range desired {
		names = append(names, n)
	}
	for n := range byPlugin {
		if _, ok := desired[n]; !ok {
			names = append(names, n)
		}
	}
	sort.Strings(names)

	plan := make(Plan, 0, len(names))
	for _, name := range names {
		insts := byPlugin[name]
		d, want := desired[name]
		op := Op{Plugin: name}
		switch {
		case !want:
			op.Action, op.Reason, op.Stale = ActionRemove, "no longer configured", insts
		case isPulling(d.Err):
			op.Action, op.Reason = ActionPull, pullingRef(d.Err)
			op.Current = newestRunning(insts, "")
			op.Stale = others(insts, op.Current)
		case d.Err != nil:
			op.Action, op.Reason = ActionUnplanned, d.Err.Error()
			op.Current = newestRunning(insts, "")
			op.Stale = others(insts, op.Current)
		default:
			op.Action = ActionAdd
			if cur := newestRunning(insts, d.Hash); cur != nil {
				op.Action, op.Current = ActionAdopt, cur
				if n := max(d.Replicas, 1); len(cur) != n {
					op.Action, op.Want = ActionScale, n
				}
			} else if cur := newestRunning(insts, ""); cur != nil {
				op.Action, op.Current, op.Reason = ActionReplace, cur, replaceReason(cur[0], d.Spec)
			}
			op.Stale = others(insts, op.Current)
		}
		plan = append(plan, op)
	}
	return plan
}

// newestRunning returns the running instances of the newest generation that has any
// (with snapshot hash, when hash is not empty), by replica.
func newestRunning(insts []sandbox.Instance, hash string) []sandbox.Instance {
	gen := 0
	for _, c := range insts {
		if c.Running && (hash == "" || c.Snapshot == hash) {
			gen = max(gen, c.Generation)
		}
	}
	if gen == 0 {
		return nil
	}
	var out []sandbox.Instance
	for _, c := range insts {
		if c.Running && c.Generation == gen && (hash == "" || c.Snapshot == hash) {
			out = append(out, c)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Replica < out[j].Replica })
	return out
}

// others is insts without keep.
func others(insts, keep []sandbox.Instance) []sandbox.Instance {
	var out []sandbox.Instance
	for _, c := range insts {
		if !containsID(keep, c.ID) {
			out = append(out, c)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

func containsID(insts []sandbox.Instance, id string) bool {
	for _, c := range insts {
		if c.ID == id {
			return true
		}
	}
	return false
}

// replaceReason explains why cur does not match: the field diff when its label can be
// decoded, else the bare fact.
func replaceReason(cur sandbox.Instance, want snapshot.Spec) string {
	if old, err := snapshot.Decode(cur.SpecLabel); err == nil {
		if r := snapshot.Diff(old, want).String(); r != "" {
			return r
		}
	}
	return fmt.Sprintf("snapshot %.12s differs", cur.Snapshot)
}

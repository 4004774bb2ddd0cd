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
	ActionAdopt     Action = "unchanged" // a running container already matches: keep it
	ActionReplace   Action = "replace"   // what runs differs: start-first replacement
	ActionRemove    Action = "remove"    // no longer configured: drain, stop, remove
	ActionUnplanned Action = "error"     // the desired state cannot be computed (e.g. image missing)
)

// Desired is what should run for one plugin: the snapshot of its container, or why it
// cannot be computed.
type Desired struct {
	Spec snapshot.Spec
	Hash string
	Err  error
}

// Op is one step of a plan with its cause.
type Op struct {
	Plugin  string
	Action  Action
	Reason  string
	Current *sandbox.Container  // the running container it keeps or replaces
	Stale   []sandbox.Container // other containers of the plugin: removed
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

// String is the human (and golden-test) form: one line per plugin.
func (p Plan) String() string {
	var b strings.Builder
	for _, op := range p {
		sym := map[Action]string{ActionAdd: "+", ActionAdopt: "=", ActionReplace: "~", ActionRemove: "-", ActionUnplanned: "!"}[op.Action]
		fmt.Fprintf(&b, "%s %s: %s", sym, op.Plugin, op.Action)
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

// MakePlan compares desired snapshots with what Docker says runs (observed, by label).
// Pure: no Docker, no clock. For each plugin the running container whose snapshot
// matches is kept; otherwise the newest running one is replaced (and serves until its
// successor is healthy); every other container of the plugin is stale.
func MakePlan(desired map[string]Desired, observed []sandbox.Container) Plan {
	byPlugin := map[string][]sandbox.Container{}
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
		ctrs := byPlugin[name]
		// Newest generation first: it is the one that was serving.
		sort.Slice(ctrs, func(i, j int) bool { return ctrs[i].Generation > ctrs[j].Generation })
		d, want := desired[name]
		op := Op{Plugin: name}
		switch {
		case !want:
			op.Action, op.Reason, op.Stale = ActionRemove, "no longer configured", ctrs
		case d.Err != nil:
			op.Action, op.Reason = ActionUnplanned, d.Err.Error()
			if cur := newestRunning(ctrs); cur != nil {
				op.Current = cur
			}
		default:
			op.Action, op.Current = ActionAdd, nil
			if cur := matching(ctrs, d.Hash); cur != nil {
				op.Action, op.Current = ActionAdopt, cur
			} else if cur := newestRunning(ctrs); cur != nil {
				op.Action, op.Current, op.Reason = ActionReplace, cur, replaceReason(*cur, d.Spec)
			}
			for _, c := range ctrs {
				if op.Current == nil || c.ID != op.Current.ID {
					op.Stale = append(op.Stale, c)
				}
			}
		}
		plan = append(plan, op)
	}
	return plan
}

func matching(ctrs []sandbox.Container, hash string) *sandbox.Container {
	for i, c := range ctrs {
		if c.Running && c.Snapshot == hash {
			return &ctrs[i]
		}
	}
	return nil
}

func newestRunning(ctrs []sandbox.Container) *sandbox.Container {
	for i, c := range ctrs {
		if c.Running {
			return &ctrs[i]
		}
	}
	return nil
}

// replaceReason explains why cur does not match: the field diff when its label can be
// decoded, else the bare fact.
func replaceReason(cur sandbox.Container, want snapshot.Spec) string {
	if old, err := snapshot.Decode(cur.SpecLabel); err == nil {
		if r := snapshot.Diff(old, want).String(); r != "" {
			return r
		}
	}
	return fmt.Sprintf("snapshot %.12s differs", cur.Snapshot)
}

package snapshot

import (
	"maps"
	"slices"
	"strconv"
	"strings"
	"unicode"

	"github.com/docker/go-units"
)

// Change is one difference between what runs and what is desired. Field names the
// config path ("image", "command", "env.GREETING", "port", "publish",
// "supervisor.memory", ..., "services"); Before and After are display forms. For
// "image" they are "<ref> <image ID> [<registry digest>]" ("-" for an unknown ref); for
// an env key they are the value's Digest, "" when absent — never the value.
type Change struct{ Field, Before, After string }

// String is the human reason, built only when someone logs it.
func (c Change) String() string {
	if key, ok := strings.CutPrefix(c.Field, "env."); ok {
		switch {
		case c.Before == "":
			return "env " + key + " added"
		case c.After == "":
			return "env " + key + " removed"
		}
		return "env " + key + " changed"
	}
	if c.Field == "image" {
		oldRef, oldID, oldDigest := splitImage(c.Before)
		newRef, newID, newDigest := splitImage(c.After)
		switch {
		case oldRef == newRef && newRef != "" && oldDigest != "" && newDigest != "" && oldDigest != newDigest:
			// The tag moved in its registry: say it in the registry's terms.
			return "registry: " + newRef + " moved " + shortID(oldDigest) + " → " + shortID(newDigest)
		case oldDigest != "" && newDigest != "" && oldDigest != newDigest:
			return "image " + display(oldRef) + " → " + display(newRef) + " (" + shortID(oldDigest) + " → " + shortID(newDigest) + ")"
		case oldRef == newRef && newRef != "":
			return "image " + newRef + " now resolves to " + shortID(newID) + " (was " + shortID(oldID) + ")"
		case oldRef == newRef:
			return "image " + shortID(oldID) + " → " + shortID(newID)
		}
		return "image " + display(oldRef) + " → " + display(newRef) + " (" + shortID(oldID) + " → " + shortID(newID) + ")"
	}
	return c.Field + " " + c.Before + " → " + c.After
}

// Changes lists differences in a stable order.
type Changes []Change

// String joins the reasons with "; "; "" when nothing changed.
func (cs Changes) String() string {
	parts := make([]string, len(cs))
	for i, c := range cs {
		parts[i] = c.String()
	}
	return strings.Join(parts, "; ")
}

// Diff lists what differs from old (what runs) to new (what is desired), in the order
// image, command, env (by key), port, publish, cpus, memory, pids, network, read_only,
// user, runtime, services, placement. It compares the same canonical forms Hash does, so an empty
// result means equal hashes, and either side may come from Decode.
func Diff(old, new Spec) Changes {
	o, n := canon(old), canon(new)
	var cs Changes
	add := func(field, before, after string) {
		cs = append(cs, Change{Field: field, Before: before, After: after})
	}
	if o.ImageID != n.ImageID {
		// The ref alone is a name: it changes nothing unless the ID does.
		add("image", joinImage(validUTF8(old.ImageRef), o.ImageID, validUTF8(old.ImageDigest)), joinImage(validUTF8(new.ImageRef), n.ImageID, validUTF8(new.ImageDigest)))
	}
	if !slices.Equal(o.Command, n.Command) {
		add("command", list(o.Command), list(n.Command))
	}
	keys := slices.Sorted(maps.Keys(o.Env))
	for k := range n.Env {
		if _, ok := o.Env[k]; !ok {
			keys = append(keys, k)
		}
	}
	slices.Sort(keys)
	for _, k := range keys {
		if o.Env[k] != n.Env[k] {
			add("env."+k, o.Env[k], n.Env[k])
		}
	}
	if o.Port != n.Port {
		add("port", strconv.Itoa(o.Port), strconv.Itoa(n.Port))
	}
	if o.Publish != n.Publish {
		add("publish", strconv.FormatBool(o.Publish), strconv.FormatBool(n.Publish))
	}
	if o.CPUs != n.CPUs {
		add("supervisor.cpus", o.CPUs, n.CPUs)
	}
	if o.Memory != n.Memory {
		before, after := units.BytesSize(float64(o.Memory)), units.BytesSize(float64(n.Memory))
		if before == after { // 4 significant digits hid the difference
			before, after = strconv.FormatInt(o.Memory, 10)+"B", strconv.FormatInt(n.Memory, 10)+"B"
		}
		add("supervisor.memory", before, after)
	}
	if o.Pids != n.Pids {
		add("supervisor.pids", strconv.FormatInt(o.Pids, 10), strconv.FormatInt(n.Pids, 10))
	}
	if o.Network != n.Network {
		add("supervisor.network", display(o.Network), display(n.Network))
	}
	if o.ReadOnly != n.ReadOnly {
		add("supervisor.read_only", strconv.FormatBool(o.ReadOnly), strconv.FormatBool(n.ReadOnly))
	}
	if o.User != n.User {
		add("supervisor.user", display(o.User), display(n.User))
	}
	if o.Runtime != n.Runtime {
		add("supervisor.runtime", display(o.Runtime), display(n.Runtime))
	}
	if !slices.Equal(o.Services, n.Services) {
		add("services", list(o.Services), list(n.Services))
	}
	if !slices.Equal(o.Placement, n.Placement) {
		add("supervisor.placement", list(o.Placement), list(n.Placement))
	}
	return cs
}

// joinImage is the display form of an image in a Change: ref, ID and, for a registry
// image, its digest, separated by spaces ("-" for an unknown ref).
func joinImage(ref, id, digest string) string {
	if ref == "" {
		ref = "-"
	}
	s := ref + " " + id
	if digest != "" {
		s += " " + digest
	}
	return s
}

// splitImage undoes joinImage; a ref, an image ID and a digest contain no spaces (a ref
// that does, being invalid, is cut at its last space).
func splitImage(s string) (ref, id, digest string) {
	f := strings.Split(s, " ")
	switch {
	case len(f) >= 3 && strings.HasPrefix(f[len(f)-1], digestPrefix):
		ref, id, digest = strings.Join(f[:len(f)-2], " "), f[len(f)-2], f[len(f)-1]
	case len(f) >= 2:
		ref, id = strings.Join(f[:len(f)-1], " "), f[len(f)-1]
	default:
		id = s
	}
	if ref == "-" {
		ref = ""
	}
	return ref, id, digest
}

// shortID is "sha256:" + 12 hex, like `docker images`.
func shortID(id string) string {
	if hexPart, ok := strings.CutPrefix(id, digestPrefix); ok && len(hexPart) > 12 {
		return digestPrefix + hexPart[:12]
	}
	return display(id)
}

// display quotes a value only when it would otherwise be invisible or ambiguous.
func display(s string) string {
	if s == "" || strings.ContainsFunc(s, func(r rune) bool { return unicode.IsSpace(r) || !unicode.IsPrint(r) || r == '"' }) {
		return strconv.Quote(s)
	}
	return s
}

func list(items []string) string {
	parts := make([]string, len(items))
	for i, s := range items {
		parts[i] = display(s)
	}
	return "[" + strings.Join(parts, " ") + "]"
}

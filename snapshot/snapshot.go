// Package snapshot owns the answer to "must this plugin's container be replaced?": a
// canonical, order-independent hash of what one container is made of, a label encoding
// of it that never carries an env value (so a later process can explain a difference
// from Docker labels alone), and a human Diff that becomes the replacement's reason.
package snapshot

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"
	"unicode/utf8"
)

// Spec is what one plugin's container is made of. Runner-side settings (timeouts,
// max_concurrent, max_body, health, restart, a url service's upstream/headers) are
// deliberately NOT here: they apply live, without a new container.
//
// Strings are taken as UTF-8; invalid bytes count as U+FFFD, as encoding/json (and so
// the Docker API) would send them.
type Spec struct {
	ImageRef string // the configured reference; for reasons only, NOT hashed (a tag is a name; what it resolves to is ImageID)
	ImageID  string // resolved image ID "sha256:..."; hashed
	// ImageDigest is the registry's digest of the image ("sha256:…", of the manifest or
	// the multi-platform index), "" for an image that never came from a registry. It is
	// how a registry image is known and explained (`registry: team/hello:1.4 moved A →
	// B`) but NOT hashed: the image ID it resolves to is what the container is made of,
	// and one image reaches the engine under several digests (an index and its
	// platform manifest, a re-push) — hashing those would replace identical containers.
	ImageDigest string
	Command     []string          // nil and empty are the same
	Env         map[string]string // the full rendered environment; values may be secrets
	Port        int
	Publish     bool // Port published on the host: a port binding is part of the container
	CPUs        float64
	Memory      int64 // bytes
	Pids        int64
	Network     string // "bridge" | "none"
	ReadOnly    bool
	User        string
	Runtime     string
	Services    []string // a set: order and duplicates don't matter
	// Placement is where a cluster may run the instances (constraints, and
	// "spread=<label>"), a set; empty on a single host, where it is not part of what
	// runs (and leaves the hash of a spec without it unchanged).
	Placement []string
}

// labelVersion guards Decode against labels written by a runner with another format.
const labelVersion = 1

// canonical is the hashed form: every field normalised so that equal containers marshal
// to equal bytes. json.Marshal sorts map keys; CPUs is a string because NaN/Inf do not
// marshal as JSON numbers and -0 must equal 0.
type canonical struct {
	ImageID  string            `json:"image_id"`
	Command  []string          `json:"command"`
	Env      map[string]string `json:"env"` // values are digests
	Port     int               `json:"port"`
	Publish  bool              `json:"publish"`
	CPUs     string            `json:"cpus"`
	Memory   int64             `json:"memory"`
	Pids     int64             `json:"pids"`
	Network  string            `json:"network"`
	ReadOnly bool              `json:"read_only"`
	User     string            `json:"user"`
	Runtime  string            `json:"runtime"`
	Services []string          `json:"services"`
	// omitempty: a spec without placement hashes as before placement existed.
	Placement []string `json:"placement,omitempty"`
}

// label is the Encode form: the canonical fields plus what only explains (ImageRef,
// ImageDigest).
type label struct {
	V           int    `json:"v"`
	ImageRef    string `json:"image_ref"`
	ImageDigest string `json:"image_digest,omitempty"`
	canonical
}

func canon(s Spec) canonical {
	c := canonical{
		ImageID:  validUTF8(s.ImageID),
		Command:  make([]string, 0, len(s.Command)),
		Env:      make(map[string]string, len(s.Env)),
		Port:     s.Port,
		Publish:  s.Publish,
		CPUs:     formatCPUs(s.CPUs),
		Memory:   s.Memory,
		Pids:     s.Pids,
		Network:  validUTF8(s.Network),
		ReadOnly: s.ReadOnly,
		User:     validUTF8(s.User),
		Runtime:  validUTF8(s.Runtime),
		Services: make([]string, 0, len(s.Services)),
	}
	for _, a := range s.Command {
		c.Command = append(c.Command, validUTF8(a))
	}
	for k, v := range s.Env {
		k, d := validUTF8(k), Digest(v)
		// Two keys that differ only in invalid bytes collapse into one; keep the larger
		// digest so the result does not depend on map iteration order.
		if prev, ok := c.Env[k]; !ok || d > prev {
			c.Env[k] = d
		}
	}
	for _, name := range s.Services {
		c.Services = append(c.Services, validUTF8(name))
	}
	slices.Sort(c.Services)
	c.Services = slices.Compact(c.Services)
	for _, p := range s.Placement {
		c.Placement = append(c.Placement, validUTF8(p))
	}
	slices.Sort(c.Placement)
	c.Placement = slices.Compact(c.Placement)
	return c
}

// Hash is the hex SHA-256 of the canonical form of s. ImageRef and ImageDigest are
// excluded and env values count by digest only, so Hash(s) == Hash(Decode(Encode(s))).
func Hash(s Spec) string {
	sum := sha256.Sum256(mustMarshal(canon(s)))
	return hex.EncodeToString(sum[:])
}

// Encode renders s for a container label: compact JSON of every field, ImageRef
// included, with each env value replaced by its Digest so no value (possibly a
// credential) is ever written to a label.
func Encode(s Spec) string {
	return string(mustMarshal(label{V: labelVersion, ImageRef: validUTF8(s.ImageRef), ImageDigest: validUTF8(s.ImageDigest), canonical: canon(s)}))
}

// Decode parses an Encode result. Env values come back as digests, which Hash and Diff
// treat as equal to the values they digest.
func Decode(text string) (Spec, error) {
	var l label
	dec := json.NewDecoder(strings.NewReader(text))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&l); err != nil {
		return Spec{}, fmt.Errorf("decode snapshot label: %w", err)
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return Spec{}, errors.New("decode snapshot label: trailing data")
	}
	if l.V != labelVersion {
		return Spec{}, fmt.Errorf("decode snapshot label: unsupported version %d", l.V)
	}
	cpus, err := strconv.ParseFloat(l.CPUs, 64)
	if err != nil {
		return Spec{}, fmt.Errorf("decode snapshot label: cpus: %w", err)
	}
	for k, v := range l.Env {
		if !isDigest(v) {
			return Spec{}, fmt.Errorf("decode snapshot label: env %s: value is not a digest", k)
		}
	}
	return Spec{
		ImageRef:    l.ImageRef,
		ImageDigest: l.ImageDigest,
		ImageID:     l.ImageID,
		Command:     l.Command,
		Env:         l.Env,
		Port:        l.Port,
		Publish:     l.Publish,
		CPUs:        cpus,
		Memory:      l.Memory,
		Pids:        l.Pids,
		Network:     l.Network,
		ReadOnly:    l.ReadOnly,
		User:        l.User,
		Runtime:     l.Runtime,
		Services:    l.Services,
		Placement:   l.Placement,
	}, nil
}

const digestPrefix = "sha256:"

// Digest is how an env value appears in a label and counts in Hash and Diff:
// "sha256:" + the first 16 hex of its SHA-256. A value that already has that shape is
// returned as is, so a decoded Spec hashes like the one it was encoded from. (A real
// value of exactly that shape is therefore indistinguishable from the value it would
// digest — a 2^-64 coincidence.)
func Digest(value string) string {
	if isDigest(value) {
		return value
	}
	sum := sha256.Sum256([]byte(value))
	return digestPrefix + hex.EncodeToString(sum[:8])
}

func isDigest(v string) bool {
	hexPart, ok := strings.CutPrefix(v, digestPrefix)
	if !ok || len(hexPart) != 16 {
		return false
	}
	for _, r := range hexPart {
		if !('0' <= r && r <= '9' || 'a' <= r && r <= 'f') {
			return false
		}
	}
	return true
}

func formatCPUs(f float64) string {
	if f == 0 {
		f = 0 // -0 is no different container
	}
	return strconv.FormatFloat(f, 'g', -1, 64)
}

// validUTF8 replaces each invalid byte with U+FFFD exactly as json.Marshal does, so two
// strings are equal here iff they marshal equal: Diff then agrees with Hash.
func validUTF8(s string) string {
	if utf8.ValidString(s) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); {
		r, n := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && n == 1 {
			b.WriteRune(utf8.RuneError)
		} else {
			b.WriteString(s[i : i+n])
		}
		i += n
	}
	return b.String()
}

func mustMarshal(v any) []byte {
	// Only strings, ints, bools and a string map: marshalling cannot fail.
	b, err := json.Marshal(v)
	if err != nil {
		panic("snapshot: marshal: " + err.Error())
	}
	return b
}

package sandbox

import (
	"fmt"
	"log/slog"
)

// Image is a local image as the engine knows it.
type Image struct {
	ID string // "sha256:…": what instances are created from
	// RepoDigests are the registry digests the engine recorded for the image when it
	// pulled or pushed it ("team/hello@sha256:…", the engine's familiar names); empty
	// for an image built or loaded here and never pushed.
	RepoDigests []string
	Size        int64 // bytes, unpacked
}

// Platform is the engine's platform: which manifest of a multi-platform index it runs.
type Platform struct {
	OS, Architecture, Variant string
}

func (p Platform) String() string {
	s := p.OS + "/" + p.Architecture
	if p.Variant != "" {
		s += "/" + p.Variant
	}
	return s
}

// RegistryAuth is a registry credential handed to the engine for one pull. Every
// format a log line, an error or an encoder could use prints it as "[redacted]".
type RegistryAuth struct {
	Username, Password, IdentityToken, RegistryToken string
	ServerAddress                                    string // the registry host
}

func (a RegistryAuth) String() string               { return "[redacted]" }
func (a RegistryAuth) GoString() string             { return "sandbox.RegistryAuth{[redacted]}" }
func (a RegistryAuth) LogValue() slog.Value         { return slog.StringValue("[redacted]") }
func (a RegistryAuth) MarshalJSON() ([]byte, error) { return []byte(`"[redacted]"`), nil }

// Format keeps fmt's verbs (%v, %+v, %#v, %s, %q) from printing the fields.
func (a RegistryAuth) Format(f fmt.State, verb rune) { _, _ = f.Write([]byte("[redacted]")) }

// PullProgress is how far a pull is: bytes the engine reported for the layers it
// downloads (small layers may come without sizes: Layers counts them all).
type PullProgress struct {
	Done, Total        int64 // bytes
	Layers, LayersDone int
	Digest             string // the registry digest pulled, once the engine said it
}

// Percent is the progress in percent: by bytes when the engine gave sizes, by layers
// otherwise; 100 only once every layer is done.
func (p PullProgress) Percent() int {
	switch {
	case p.Layers == 0:
		return 0
	case p.LayersDone >= p.Layers:
		return 100
	case p.Total > 0:
		return min(99, int(p.Done*100/p.Total))
	}
	return p.LayersDone * 100 / p.Layers
}

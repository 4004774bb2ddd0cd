package registry

import (
	"errors"
	"fmt"
	"log/slog"
	"time"
)

// Kinds of registry failure, for errors.Is.
var (
	ErrUnreachable = errors.New("registry unreachable")
	ErrDenied      = errors.New("registry denied access")
	ErrNotFound    = errors.New("not in the registry")
	ErrRateLimited = errors.New("registry rate limit")
)

// Error is a registry's answer (or silence), said for a human: which registry, which
// repository, what to do. It never carries a credential: the messages it wraps come
// from the HTTP exchange, whose URLs carry none.
type Error struct {
	Kind       error // ErrUnreachable, ErrDenied, ErrNotFound, ErrRateLimited, or nil
	Registry   string
	Repo       string        // repository path, e.g. team/hello
	Ref        string        // the reference asked for, as configured
	RetryAfter time.Duration // ErrRateLimited: how long the registry asked us to stay away
	Err        error
}

func (e *Error) Error() string {
	switch e.Kind {
	case ErrDenied:
		return fmt.Sprintf("registry %s denied access to %s (check %s)", e.Registry, e.Repo, ConfigHint())
	case ErrUnreachable:
		return fmt.Sprintf("registry %s unreachable: %v", e.Registry, e.Err)
	case ErrNotFound:
		return fmt.Sprintf("registry %s has no %s", e.Registry, e.Ref)
	case ErrRateLimited:
		return fmt.Sprintf("registry %s rate-limits us (429): next try in %s", e.Registry, e.RetryAfter.Round(time.Second))
	}
	return fmt.Sprintf("registry %s: %v", e.Registry, e.Err)
}

func (e *Error) Unwrap() []error {
	if e.Kind == nil {
		return []error{e.Err}
	}
	return []error{e.Kind, e.Err}
}

// RetryAfter is how long err asks the caller to wait before asking that registry
// again (a 429's Retry-After); 0 when it does not say.
func RetryAfter(err error) time.Duration {
	var e *Error
	if errors.As(err, &e) && e.Kind == ErrRateLimited {
		return e.RetryAfter
	}
	return 0
}

// engine without ever being written down.
type Credential struct {
	Username, Password, IdentityToken, RegistryToken string
	Server                                           string // the registry host it is for
}

// Anonymous reports whether c carries no secret at all.
func (c Credential) Anonymous() bool {
	return c.Username == "" && c.Password == "" && c.IdentityToken == "" && c.RegistryToken == ""
}

func (c Credential) String() string   { return "[redacted]" }
func (c Credential) GoString() string { return "registry.Credential{[redacted]}" }

// LogValue keeps slog from printing the fields.
func (c Credential) LogValue() slog.Value { return slog.StringValue("[redacted]") }

// Format keeps fmt's verbs (%v, %+v, %#v, %s, %q) from printing the fields.
func (c Credential) Format(f fmt.State, verb rune) { _, _ = f.Write([]byte("[redacted]")) }

// MarshalJSON keeps encoders from printing the fields.
func (c Credential) MarshalJSON() ([]byte, error) { return []byte(`"[redacted]"`), nil }

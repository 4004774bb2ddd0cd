package hostguard

import (
	"errors"
	"os"
	"syscall"
)

// UnavailableError says which promise the runner cannot keep and why. Install and Check
// return it when netfilter cannot be programmed; the backend builds one with
// Unavailable for what only it can see (rootless Docker, Docker Desktop, a remote
// DOCKER_HOST).
type UnavailableError struct {
	// HostProtection: the promise broken is host protection (and with it egress limits).
	// False: only egress limits were asked for (protect_host = false).
	HostProtection bool
	Reason         string // why, in words an operator acts on
	Err            error  // the underlying error, if any
}

func (e *UnavailableError) Error() string {
	s := "egress limits unavailable: " + e.Reason
	if e.HostProtection {
		s = "host protection unavailable: " + e.Reason
	}
	if e.Err != nil {
		s += " (" + e.Err.Error() + ")"
	}
	if e.HostProtection {
		return s + `: plugins can reach host services listening on 0.0.0.0, and egress = "none" or a CIDR list cannot be enforced`
	}
	return s + `: a plugin with egress = "none" or a CIDR list could reach any address`
}

func (e *UnavailableError) Unwrap() error { return e.Err }

// Reasons the backend detects before calling Install. Each names where the containers'
// traffic really goes, which is why rules in this host's netfilter would not apply.
const (
	ReasonRootless = "Docker runs rootless: container traffic goes through rootlesskit's network namespace, " +
		"not this host's netfilter"
	ReasonDesktop = "Docker Desktop runs containers in a VM whose netfilter the runner cannot program"
	ReasonRemote  = "DOCKER_HOST is a remote engine: its containers run on another machine"
)

// Unavailable is the error for a reason found outside this package (see the Reason
// constants). hostProtection says whether host protection was asked for.
func Unavailable(hostProtection bool, reason string) *UnavailableError {
	return &UnavailableError{HostProtection: hostProtection, Reason: reason}
}

// unavailable classifies a netlink error from programming nf_tables.
func unavailable(hostProtection bool, err error) *UnavailableError {
	return &UnavailableError{HostProtection: hostProtection, Reason: reason(err), Err: err}
}

// reason turns an nf_tables error into what the operator must know.
func reason(err error) string {
	switch {
	case errors.Is(err, os.ErrPermission): // EPERM, EACCES: nfnetlink checks CAP_NET_ADMIN on every message
		return "the runner lacks CAP_NET_ADMIN in the host's network namespace (run it as root or grant CAP_NET_ADMIN)"
	case errors.Is(err, syscall.EPROTONOSUPPORT), errors.Is(err, syscall.EAFNOSUPPORT):
		return "the kernel has no nf_tables netlink interface (nfnetlink not available)"
	case errors.Is(err, syscall.ENOENT), errors.Is(err, syscall.EOPNOTSUPP), errors.Is(err, syscall.EINVAL):
		// A missing expression or set type (nft_ct, concatenated ranges) shows as one of these.
		return "the kernel's nf_tables lacks a feature the rules need (conntrack, inet tables, " +
			"concatenated interval sets: Linux 5.6 or later)"
	}
	return "programming nf_tables failed"
}

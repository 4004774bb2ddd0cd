package swarm

import (
	"context"

	"github.com/xcore/runner/sandbox"
)

// notEnforced is why a cluster gets neither host protection nor egress limits: tasks run
// on every node of the swarm, behind overlays whose traffic each node's own netfilter
// handles; the runner programs none of them.
const notEnforced = "host protection and egress limits are not enforced on a swarm cluster: " +
	"tasks run on other nodes, whose netfilter the runner does not program; " +
	"plugins can reach what their node and its overlay reach, and egress = \"none\" or a CIDR list cannot be enforced"

// Protect tells what a cluster cannot keep (see notEnforced): the runner says so at
// start, in ps and the admin API, and refuses to start a plugin whose egress is limited.
func (c *Client) Protect(context.Context, sandbox.Protection) (sandbox.Protected, error) {
	return sandbox.Protected{Unavailable: notEnforced}, nil
}

// SetEgress has nothing to enforce (see Protect).
func (c *Client) SetEgress(context.Context, map[string]sandbox.Egress) error { return nil }

// Unprotect has no rules to remove.
func (c *Client) Unprotect(context.Context) (bool, error) { return false, nil }

// HostRules names where the rules would live: nowhere on a cluster.
func (c *Client) HostRules() string { return "none on a swarm cluster" }

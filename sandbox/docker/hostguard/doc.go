// Package hostguard keeps plugins off the host and inside their egress limits by
// programming the kernel's netfilter (nf_tables, over netlink with google/nftables; no
// nft or iptables binary, no Docker client). The Docker backend calls it; it knows only
// a bridge interface, its subnets, the sidecar's address and container addresses.
//
// # The promise
//
// A container on the runner's network reaches the host only at the sidecar (TCP, the
// gateway address and port) and with replies to connections the host opened. Every
// other packet it sends to any address of the host — the gateway, eth0's address,
// docker0's, an IPv6 or link-local one, a port the host DNATs elsewhere — is dropped.
// Where a container's egress is "none" or a CIDR list, what it sends through the host
// to anywhere else is dropped unless the destination is in the list.
//
// Why this is needed: traffic from a container to its gateway (or any host address)
// goes through the host's INPUT hook, which Docker's rules never filter and
// enable_icc=false does not touch; a service listening on 0.0.0.0 answers plugins.
//
// # Why the rules apply whatever Docker's iptables backend is
//
// The rules live in a table of their own, family inet (IPv4 and IPv6 in one), named
// inet xcore-<runner id>, with base chains on the input and forward hooks. Docker's
// rules live elsewhere: with iptables-nft in the tables ip filter / ip nat (this host:
// iptables v1.8.9 (nf_tables)), with iptables-legacy in x_tables. Netfilter runs every
// base chain registered on a hook, from every table and from x_tables alike, in
// priority order; an accept ends only the chain that says it, while a drop is final for
// the packet. So our drop holds whatever Docker (or anyone) accepts, and our accepts
// never open anything Docker drops — the table can only take away. Checked: the tests
// put ACCEPT rules for the bridge in INPUT and FORWARD of both iptables-nft and
// iptables-legacy (v4 and v6), and the drops still hold. Checked by hand against Docker
// 20.10 on a host whose iptables is v1.8.9 (nf_tables) with legacy tables present: from
// a hardened container on an enable_icc=false network, a host listener on 0.0.0.0
// answered through the gateway and through eth0's address before Install and through
// neither after; the sidecar and the host's connections to a container kept working;
// egress "none" dropped a destination routed through the host (and the embedded DNS
// resolver's forwarded queries); after kill -9 and a new Install there was one table,
// and after Remove the listener answered again.
//
// The chains match the bridge by name (iifname), so they cover every address family and
// address a container may use, including ones it was not given. They filter at
// priority filter (0). DNAT happens earlier (prerouting, -100), so a port the host
// forwards elsewhere shows in the forward chain as ct status dnat, where host
// protection drops it.
//
// # Lifetime
//
// Install replaces any table of the same runner id in one transaction (add, delete,
// create: the kernel applies a batch atomically), so a runner restarted after kill -9
// has exactly one table and never a moment without one. Uninstall removes it; Remove
// removes it by runner id without a Guard (`runner down` after a crash). Nothing else
// is ever touched: every object is inside the runner's own table.
//
// Egress is kept per container address in sets (known4/6: registered addresses,
// restrict4/6: restricted ones, allow4/6: address . allowed destination, concatenated
// interval sets), so a change is one netlink batch of set elements and no rule is
// rebuilt. Every container is registered, "all" included, and what an unregistered
// address sends through the host is dropped: a container that starts sends nothing
// anywhere but the sidecar until the backend has given its address a policy, so the
// moment between a container's start and SetEgress fails closed.
//
// Containers cannot forge their source address for the egress rules: plugins run with
// every capability dropped, so without CAP_NET_RAW they cannot send raw packets.
//
// # When it cannot
//
// Without CAP_NET_ADMIN, without nf_tables, or when the network's bridge is not an
// interface of this host (Docker Desktop's VM, rootless Docker's namespace, a remote
// engine), Install and Check return an *UnavailableError that names the promise that
// cannot be kept and why. The backend reports what only it can see (rootless, Desktop,
// a remote DOCKER_HOST) with Unavailable and the Reason constants.
package hostguard

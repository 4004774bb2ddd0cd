package runner

import (
	"context"
	"fmt"
	"net/netip"
	"reflect"
	"sort"

	"github.com/xcore/runner/config"
	"github.com/xcore/runner/sandbox"
)

// Protector keeps plugins off the host and inside their egress while the runner runs;
// part of Sandbox (sandbox/docker programs an nftables table of the runner's own).
type Protector interface {
	// Protect installs the rules, once the network exists and the sidecar listens and
	// before the first instance starts. Rules that cannot be installed here are
	// reported in Protected.Unavailable; an error is for what must stop the runner.
	Protect(ctx context.Context, p sandbox.Protection) (sandbox.Protected, error)
	// SetEgress gives every configured plugin its policy, in place: the instances that
	// run get it at once, no replacement (egress is not in the snapshot).
	SetEgress(ctx context.Context, plugins map[string]sandbox.Egress) error
	// Unprotect removes the rules; removed says whether there were any.
	Unprotect(ctx context.Context) (removed bool, err error)
}

// protect asks the backend for host protection and each plugin's egress, and tells
// what it got: a promise it cannot keep is said plainly, never skipped in silence.
func (r *Runner) protect(ctx context.Context, cfg *config.Config) error {
	p := sandbox.Protection{ProtectHost: cfg.Runner.ProtectHost, Egress: egressOf(cfg)}
	if sc := r.sidecar; sc != nil && sc.gateway.IsValid() && sc.port != 0 {
		p.Sidecar = []netip.AddrPort{netip.AddrPortFrom(sc.gateway, uint16(sc.port))}
	}
	st, err := r.sb.Protect(ctx, p)
	if err != nil {
		return err
	}
	r.protected.Store(&st)
	switch {
	case st.Unavailable != "":
		r.log.Warn(st.Unavailable)
	case !st.Host:
		r.log.Warn("host protection off (runner { protect_host = false }): plugins reach every service of the host; egress limits are enforced", "rules", st.Rules)
	default:
		r.log.Info("host protection on: plugins reach the host only at the sidecar", "rules", st.Rules, "sidecar", fmt.Sprint(p.Sidecar))
	}
	return nil
}

// Protected is what the backend enforces of host protection and egress; false before
// Start asked for it.
func (r *Runner) Protected() (sandbox.Protected, bool) {
	st := r.protected.Load()
	if st == nil {
		return sandbox.Protected{}, false
	}
	return *st, true
}

// updateEgress applies a reload's egress settings to what runs, in place.
func (r *Runner) updateEgress(ctx context.Context, old, next *config.Config) {
	if r.protected.Load() == nil {
		return
	}
	was, now := egressOf(old), egressOf(next)
	for _, name := range sortedNames(now) {
		if prev, ok := was[name]; ok && !reflect.DeepEqual(prev, now[name]) {
			r.log.Info("egress changed: applies to the running instances, no replacement", "plugin", name, "from", prev.String(), "to", now[name].String())
		}
	}
	if err := r.sb.SetEgress(ctx, now); err != nil {
		r.log.Error("egress not applied to every running instance", "err", err)
		r.publish(Event{Type: EventReload, Message: "egress not applied to every running instance: " + err.Error()})
	}
}

// refuseUnenforceable makes the desired state of a bridge plugin whose egress limit
// the backend cannot enforce an error saying why: it does not start (what runs of it
// keeps running, as for any change that cannot be applied).
func (r *Runner) refuseUnenforceable(cfg *config.Config, desired map[string]Desired) {
	st, ok := r.Protected()
	if !ok || st.Egress {
		return
	}
	for name, p := range cfg.Plugins {
		sup := p.Supervisor
		if sup.Network == config.NetworkNone || !sup.Egress.Restrict || desired[name].Err != nil {
			continue
		}
		why := st.Unavailable
		if why == "" {
			why = "the backend enforces no egress limits"
		}
		desired[name] = Desired{Err: fmt.Errorf("egress = %s cannot be enforced: %s", sup.Egress, why)}
	}
}

// unprotect removes the host rules on exit (not with keep_on_exit: they stay with the
// plugins that keep running, and the next runner replaces them).
func (r *Runner) unprotect(ctx context.Context, errs *[]error) {
	if r.protected.Load() == nil {
		return
	}
	removed, err := r.sb.Unprotect(ctx)
	switch {
	case err != nil:
		*errs = append(*errs, err)
	case removed:
		r.log.Info("host rules removed")
	}
}

// egressOf is each plugin's egress setting.
func egressOf(cfg *config.Config) map[string]sandbox.Egress {
	out := make(map[string]sandbox.Egress, len(cfg.Plugins))
	for name, p := range cfg.Plugins {
		out[name] = sandbox.Egress(p.Supervisor.Egress)
	}
	return out
}

func sortedNames[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

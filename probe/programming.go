package probe

import (
	"fmt"
	"net/netip"
	"slices"
	"time"

	"github.com/svcprobe/svcprobe/discovery"
)

// Network programming latency (issue 21): after a change the data plane has to follow (a Service
// appears with ready endpoints, goes from no ready endpoint to one, its ports or ClusterIPs
// change; for DNS a new name or a new answer), the scheduler probes the stage it affects at a
// short cadence until the stage shows the change, and records how long that took from the
// change's start. While it waits the stage is programming, not failed; past the ceiling it fails
// with reason not_programmed.

// Programming configures the measurement. A zero Ceiling turns it off (the Settle rule alone
// then holds back the failures that follow a change).
type Programming struct {
	// Cadence is how often a stage being programmed is probed again (--probe.programming.cadence).
	Cadence time.Duration
	// Ceiling is how long a change may take (--probe.programming.ceiling): past it the stage
	// fails with ReasonNotProgrammed.
	Ceiling time.Duration
}

// DefaultProgramming: every 250 ms, up to 60 s (the scalability SLO's threshold is 30 s).
var DefaultProgramming = Programming{Cadence: 250 * time.Millisecond, Ceiling: 60 * time.Second}

// programmingAttempt bounds one attempt at a stage being programmed: a VIP without rules may
// swallow packets until the stage's timeout, and the measurement's resolution is one attempt
// plus the cadence.
const programmingAttempt = time.Second

// ProgrammingStages are the stages whose latency is measured.
var ProgrammingStages = []Stage{StageProxy, StageDNS}

// Programmed is the end of one measurement: the data plane showed the change (Done, after
// Latency), or it did not within the ceiling (neither Done nor Abandoned: not_programmed), or
// there is nothing left to show (Abandoned: the stage no longer applies, e.g. the endpoints went
// again; no latency).
type Programmed struct {
	Stage     Stage
	Since     time.Time // the change's start: the slice's last-change-trigger-time or the event
	At        time.Time // when the stage first showed it (Done), or gave up
	Latency   time.Duration
	Done      bool
	Abandoned bool
}

// ProgrammingSink is told about programming measurements; a ResultSink may implement it.
type ProgrammingSink interface {
	// Programming says a change of t is being programmed in stage since the given time.
	Programming(t *discovery.Target, stage Stage, since time.Time)
	// Programmed ends a measurement.
	Programmed(t *discovery.Target, p Programmed)
}

// programmingChanges returns, for the change from old to t seen at now (old nil: t is new to the
// scheduler), the stages whose data plane has to follow it, each with the change's start.
func programmingChanges(old, t *discovery.Target, now time.Time, ceiling time.Duration) map[Stage]time.Time {
	if ceiling <= 0 || t.Kind == discovery.KindExternalName {
		return nil
	}
	// A Service listed at start, or one known for longer than the ceiling, is not a change.
	fresh := old != nil || (!t.Created.IsZero() && now.Sub(t.Created) < ceiling)
	if !fresh {
		return nil
	}
	// The change's start: the slices' last-change-trigger-time when it is recent (kube-proxy
	// measures from it too), else now (the event).
	start := now
	if tt := t.ChangeTriggered; !tt.IsZero() && !tt.After(now) && now.Sub(tt) < ceiling {
		start = tt
	}
	out := map[Stage]time.Time{}
	ready := len(t.ReadyEndpoints()) > 0 || (t.PublishNotReadyAddresses && len(t.Endpoints) > 0)
	if len(t.ClusterIPs) > 0 && len(t.Ports) > 0 && ready {
		switch {
		case old == nil, len(old.ReadyEndpoints()) == 0 && !(old.PublishNotReadyAddresses && len(old.Endpoints) > 0):
			out[StageProxy] = start
		case !slices.Equal(old.ClusterIPs, t.ClusterIPs), !samePorts(old.Ports, t.Ports):
			out[StageProxy] = now // a change of the Service, not of its endpoints
		}
	}
	switch {
	case old == nil:
		if len(t.ClusterIPs) > 0 || (t.Kind == discovery.KindHeadless && ready) {
			out[StageDNS] = start
		}
	case len(t.ClusterIPs) > 0 && !slices.Equal(old.ClusterIPs, t.ClusterIPs):
		out[StageDNS] = now
	case t.Kind == discovery.KindHeadless && ready && !slices.Equal(answerOf(old), answerOf(t)):
		out[StageDNS] = start
	}
	if len(out) == 0 {
		return nil
	}
	return out
}

// samePorts compares what kube-proxy programs of the ports: number and protocol.
func samePorts(a, b []discovery.Port) bool {
	return slices.EqualFunc(a, b, func(x, y discovery.Port) bool { return x.Port == y.Port && x.Protocol == y.Protocol })
}

// answerOf is a headless Service's DNS answer (publishedAddresses), sorted, without repeats.
func answerOf(t *discovery.Target) []netip.Addr {
	out := publishedAddresses(t)
	slices.SortFunc(out, func(a, b netip.Addr) int { return a.Compare(b) })
	return slices.Compact(out)
}

// notProgrammed turns the failure of a stage whose change did not arrive within the ceiling
// into the not_programmed failure, keeping what the stage saw.
func notProgrammed(r Result, since time.Time, ceiling time.Duration) Result {
	r.Reason = ReasonNotProgrammed
	seen := r.Detail
	r.Detail = fmt.Sprintf("a change made at %s was not in the data plane %s later, and still is not", since.UTC().Format(time.RFC3339), ceiling)
	if seen != "" {
		r.Detail += ": " + seen
	}
	switch r.Stage {
	case StageDNS:
		r.Hint = "Cluster DNS does not serve the change: check CoreDNS's logs and its watch of the API (coredns_kubernetes_dns_programming_duration_seconds), and that it runs."
	default:
		r.Hint = "The service proxy did not program the change: check kube-proxy on this node (its logs, kubeproxy_sync_proxy_rules_last_timestamp_seconds, --iptables-min-sync-period or --nftables-min-sync-period) and that it runs."
	}
	return r
}

// ProgrammingAttempt bounds one attempt at a stage being programmed (see programmingAttempt).
const ProgrammingAttempt = programmingAttempt

// RecentChanges is, for a one-shot look at t (svcprobe diagnose: no earlier build to compare
// with), the stages whose data plane is following the Service's creation within the ceiling. An
// older Service's endpoint change is not followed: without the earlier build a one-shot look cannot
// tell a first ready endpoint (which the VIP must follow) from any other change, and would wait
// out the ceiling on a VIP that is broken for another reason.
func RecentChanges(t *discovery.Target, now time.Time, ceiling time.Duration) map[Stage]time.Time {
	return programmingChanges(nil, t, now, ceiling)
}

// NotProgrammed is notProgrammed for callers outside the scheduler (diagnose).
func NotProgrammed(r Result, since time.Time, ceiling time.Duration) Result {
	return notProgrammed(r, since, ceiling)
}

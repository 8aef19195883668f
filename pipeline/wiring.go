package pipeline

import (
	"time"

	"github.com/svcprobe/svcprobe/probe"
)

// Wiring is the shape of what New assembled, without the tunable numbers: which stages run in
// which order, which of them dial through the pipeline's budget and address guard, whether the
// guard consults the informers, and how the scheduler and discovery are set up. Pipelines built
// from configurations that differ only in budgets, intervals and address ranges have equal
// Wirings; the bench's test compares its pipeline's with the exporter's default one.
type Wiring struct {
	Stages []probe.Stage // in runbook order
	// Guarded stages dial every socket through a Dialer with the pipeline's Budget and Guard.
	Guarded []probe.Stage
	// Budgeted stages query DNS through the pipeline's Budget (their nameservers come from
	// resolv.conf, not from Service objects, so no guard applies).
	Budgeted []probe.Stage
	// Bypass stages reach the network around the pipeline's budget or guard, or are of a kind
	// Wiring does not know (a new stage: teach Wiring about it). Want none.
	Bypass []probe.Stage
	// GuardKnowsInformers: the guard allows the ClusterIPs and Pod IPs the informers know.
	GuardKnowsInformers bool
	Settle              time.Duration // the scheduler's --probe.settle
	Programming         bool          // the scheduler measures network programming latency
	ClusterDNS          bool          // the scheduler runs the cluster DNS round
	Sampling            bool          // node mode: a sample of Services per interval
	Workloads           bool          // discovery watches the workloads
	NetworkPolicies     bool          // discovery evaluates NetworkPolicies
}

// Wiring describes p.
func (p *Pipeline) Wiring() Wiring {
	w := Wiring{
		GuardKnowsInformers: p.Guard != nil && p.Guard.Known != nil,
		Settle:              p.SchedulerConfig.Settle,
		Programming:         p.SchedulerConfig.Programming.Ceiling > 0,
		ClusterDNS:          p.SchedulerConfig.ClusterDNS != nil,
		Sampling:            p.SchedulerConfig.SampleSize > 0,
		Workloads:           p.Config.Workloads,
		NetworkPolicies:     p.Config.NetworkPolicies,
	}
	guarded := func(d *probe.Dialer) bool {
		return d != nil && p.Guard != nil && d.Guard == p.Guard && d.Budget == p.Budget
	}
	for _, pr := range p.Probers {
		s := pr.Stage()
		w.Stages = append(w.Stages, s)
		var d *probe.Dialer
		switch v := pr.(type) {
		case probe.SpecProber, probe.EndpointsProber: // the API's objects only
			continue
		case *probe.DNSProber:
			if v.Budget == p.Budget {
				w.Budgeted = append(w.Budgeted, s)
			} else {
				w.Bypass = append(w.Bypass, s)
			}
			continue
		case *probe.PodProber:
			d = v.Dialer
		case *probe.ProxyProber:
			d = v.Dialer
		case *probe.NodePortProber:
			d = v.Dialer
		case *probe.LoadBalancerProber:
			d = v.Dialer
		case *probe.HairpinProber:
			d = v.Dialer
		}
		if guarded(d) {
			w.Guarded = append(w.Guarded, s)
		} else {
			w.Bypass = append(w.Bypass, s)
		}
	}
	return w
}

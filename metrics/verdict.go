package metrics

import (
	"slices"

	"github.com/svcprobe/svcprobe/probe"
)

// Layer is the broken layer a verdict names.
type Layer string

// The layers, in the order the verdict checks them.
const (
	LayerOK        Layer = "ok"
	LayerMissing   Layer = "missing"
	LayerSpec      Layer = "spec"
	LayerEndpoints Layer = "endpoints"
	LayerPod       Layer = "pod"
	LayerProxy     Layer = "proxy"
	LayerDNS       Layer = "dns"
	LayerHairpin   Layer = "hairpin"
	// LayerIdle is not a broken layer: the Service's workload is scaled to zero on purpose
	// (reason scaled_to_zero). It pages nobody and counts against no SLO.
	LayerIdle Layer = "idle"
	// LayerPolicy is not a broken layer either: the cluster's NetworkPolicies do not let svcprobe
	// reach the Service's Pods (reason denied_by_network_policy), so it cannot say whether they
	// answer. It pages nobody; the status page names the policy.
	LayerPolicy Layer = "policy"
)

// Layers lists every layer.
var Layers = []Layer{LayerOK, LayerMissing, LayerIdle, LayerPolicy, LayerSpec, LayerEndpoints, LayerDNS, LayerPod, LayerProxy, LayerHairpin}

// Intended reports whether a verdict is a state the cluster's owner set up on purpose (idle):
// neither ok nor broken, and nothing to page on.
func (l Layer) Intended() bool { return l == LayerIdle || l == LayerPolicy }

// VIPTally counts other Services by what their VIP did at their latest probe: cross-Service
// evidence for what kube-proxy does on this node.
type VIPTally struct{ OK, Failed int }

// MostFail reports whether at least half of the other VIPs (and at least one) failed: kube-proxy
// is failing more than one Service.
func (v VIPTally) MostFail() bool { return v.Failed > 0 && v.Failed >= v.OK }

// MostAnswer reports whether most other VIPs answered: kube-proxy forwards on this node.
func (v VIPTally) MostAnswer() bool { return v.OK > 0 && v.OK > v.Failed }

// Evidence is what a verdict rests on.
type Evidence struct {
	// Results are the Service's latest stage results.
	Results map[probe.Stage]probe.Result
	// Windows are its network stages' windows of recent rounds; a stage without one is judged by
	// its latest result alone (the spec and endpoints stages, which read the API, not packets).
	Windows map[probe.Stage]Window
	// Cluster is the latest cluster DNS round (nil before the first).
	Cluster *probe.ClusterDNSResult
	// OtherVIPs tallies the other Services' VIPs (their proxy stage at its latest probe).
	OtherVIPs VIPTally
}

// stage returns a stage's state and the reason the verdict gives for it: the latest reason when
// failed, partial when degraded. ran is false when the stage was skipped or not probed yet.
func (ev Evidence) stage(s probe.Stage) (st State, reason probe.Reason, ran bool) {
	r, ok := ev.Results[s]
	if !ok || r.Outcome == probe.Skipped {
		return "", "", false
	}
	if w, ok := ev.Windows[s]; ok && w.Rounds > 0 {
		switch w.State {
		case StateFailed:
			if r.Outcome == probe.Failed {
				return StateFailed, r.Reason, true
			}
		case StateDegraded:
			return StateDegraded, probe.ReasonPartial, true
		}
		return StateOK, probe.ReasonSuccess, true
	}
	if r.Outcome == probe.Failed {
		return StateFailed, r.Reason, true
	}
	return StateOK, probe.ReasonSuccess, true
}

// answered reports whether a stage ran and passed at its latest round: evidence, measured now,
// that its layer works.
func (ev Evidence) answered(s probe.Stage) bool {
	r, ok := ev.Results[s]
	return ok && r.Outcome == probe.OK
}

// proxyWorks reports whether kube-proxy demonstrably forwards on this node: the cluster DNS
// Service's own VIP answered, or most other Services' VIPs did.
func (ev Evidence) proxyWorks() bool {
	return (ev.Cluster != nil && ev.Cluster.ServiceVIPUp()) || ev.OtherVIPs.MostAnswer()
}

// Verdict names the one layer to blame from a Service's latest results and the cluster DNS round
// alone (no windows, no other Services): what one-shot callers have.
func Verdict(results map[probe.Stage]probe.Result, cluster *probe.ClusterDNSResult) (Layer, probe.Reason) {
	return Decide(Evidence{Results: results, Cluster: cluster})
}

// Decide names the one layer to blame, following the dependencies between the layers. Each
// network stage counts by its window (see window.snapshot): failed, or degraded (the reason is
// then partial), or ok; one failed round among good ones blames nothing.
//
//  0. idle: the selector matches no Pod because its workloads are scaled to zero on purpose (the
//     spec stage skipped with scaled_to_zero): intended, nothing is blamed.
//  1. spec: a Service that selects nothing or targets a port nobody has cannot work further down.
//     (After endpoints: policy, when NetworkPolicy denies the exporter every endpoint the pod stage
//     would dial: intended, nothing is blamed. Some denied: those are not dialed, the rest judged.)
//  2. endpoints: no ready endpoints, nothing to reach.
//  3. pod: the backends themselves do not answer on IP:targetPort; the VIP failing too is a
//     consequence, not a second cause (a VIP round that failed while the Pods failed directly
//     does not count in the proxy stage's window at all). So is a VIP (or NodePort) failing
//     while the pod stage failed in one of its last two windows of rounds, unless the proxy
//     stage's closer look has seen every Pod answer since: pod, partial (a flaky Pod fails the
//     VIP's connections that land on it in rounds where its own check passed).
//  4. proxy: the Pods answer directly but the ClusterIP does not — unless the VIP leads only to
//     the exporter's own Pod (the hairpin Service, or the exporter's metrics Service with one
//     replica) while kube-proxy demonstrably works (the cluster DNS Service's VIP answers, or
//     most other VIPs do): then the hairpin path is what fails, and the verdict says hairpin.
//  5. proxy, NodePort path: the nodeport stage failed. With the ClusterIP answering from the
//     same Pod network the reason is nodeport_unreachable (nodeport_unreachable_from_node when
//     dialed from the node's own network); when the proxy stage did not run, the nodeport
//     stage's own reason. After the ClusterIP check, before dns (a NodePort uses no DNS). When
//     the NodePort answers but kube-proxy's health check on healthCheckNodePort does not say 200
//     although this node has a ready endpoint (externalTrafficPolicy Local), health_check_failing;
//     when it says 200 on a node without a ready endpoint (the load balancer sends traffic there
//     and kube-proxy drops it), health_check_stale.
//  6. proxy, load-balancer path: the loadbalancer stage failed (a LoadBalancer Service's ingress
//     IP, which kube-proxy serves on the node for in-cluster clients). With the ClusterIP
//     answering from the same Pod network the reason is load_balancer_unreachable; otherwise the
//     stage's own. After the NodePort check, before dns (an ingress IP uses no DNS).
//  7. dns: the name does not resolve right. When every nameserver is dead (timeout, refused,
//     unreachable) the reason says which resolver: node_local_dns_unreachable for a node-local
//     cache, resolver_unreachable for a nameserver that is not the DNS Service. When it is the
//     DNS Service's ClusterIP, the DNS Pods answer directly and other Services' VIPs fail too,
//     the service proxy is what broke DNS and the verdict says proxy — never for a Service whose
//     own ClusterIP answered in its latest round.
//  8. hairpin: everything else works but the exporter cannot reach itself through its Service.
//
// A stage that did not run (skipped, or not yet probed) blames nothing.
func Decide(ev Evidence) (Layer, probe.Reason) {
	l, r, _ := ev.decide()
	return l, r
}

// DecideFamily is Decide and the IP family the blamed stage failed on alone (probe.Result.Family:
// one family of a dual-stack Service, or an IPv6-only Service's): "" when nothing is blamed, when
// the failure is not confined to one family, and for IPv4-only Services, as before dual-stack.
// The family of the stage's latest failed round; a degraded window with a good latest round says
// none.
func DecideFamily(ev Evidence) (Layer, probe.Reason, probe.Family) {
	l, r, s := ev.decide()
	if res, ok := ev.Results[s]; ok && s != "" && res.Outcome == probe.Failed {
		return l, r, res.Family
	}
	return l, r, ""
}

// decide is Decide, with the stage whose result the verdict rests on ("" for none).
func (ev Evidence) decide() (Layer, probe.Reason, probe.Stage) {
	if r, ok := ev.Results[probe.StageSpec]; ok && r.Reason == probe.ReasonScaledToZero {
		return LayerIdle, probe.ReasonScaledToZero, ""
	}
	bad := func(s probe.Stage) (probe.Reason, State, bool) {
		st, reason, ran := ev.stage(s)
		return reason, st, ran && st != StateOK
	}
	for _, step := range []struct {
		stage probe.Stage
		layer Layer
	}{{probe.StageSpec, LayerSpec}, {probe.StageEndpoints, LayerEndpoints}} {
		if reason, _, ok := bad(step.stage); ok {
			return step.layer, reason, step.stage
		}
	}
	// Every ready endpoint the pod stage would dial is denied by NetworkPolicy: svcprobe cannot
	// see the Pods, by the cluster's design.
	if r, ok := ev.Results[probe.StagePod]; ok && r.Outcome == probe.Skipped && r.Reason == probe.ReasonDeniedByNetworkPolicy {
		return LayerPolicy, probe.ReasonDeniedByNetworkPolicy, ""
	}
	if reason, _, ok := bad(probe.StagePod); ok {
		return LayerPod, reason, probe.StagePod
	}
	// The Pods failed lately (in the last two windows' worth of rounds), and the VIP (or
	// NodePort) fails now: a VIP whose connections land on a Pod that fails some of them fails
	// too, in rounds where the Pod's own check happened to pass. Those Pods, not the proxy.
	// And a VIP that failed while direct connections to its Pods failed too (the proxy stage's
	// closer look) is those Pods.
	_, _, proxyBad := bad(probe.StageProxy)
	if proxyBad && ev.Results[probe.StageProxy].PodsFailing > 0 {
		return LayerPod, probe.ReasonPartial, probe.StageProxy
	}
	if w, ok := ev.Windows[probe.StagePod]; ok && w.FailedWithin(2*w.Size) {
		if slices.ContainsFunc(probe.Stages, func(s probe.Stage) bool { _, _, b := bad(s); return s.ThroughProxy() && b }) {
			return LayerPod, probe.ReasonPartial, ""
		}
	}
	if reason, _, ok := bad(probe.StageProxy); ok {
		_, _, hairpinBad := bad(probe.StageHairpin)
		if (ev.Results[probe.StageProxy].SelfOnly || hairpinBad) && ev.proxyWorks() {
			return LayerHairpin, reason, probe.StageProxy
		}
		return LayerProxy, reason, probe.StageProxy
	}
	if reason, st, ok := bad(probe.StageNodePort); ok {
		switch r := ev.Results[probe.StageNodePort].Reason; r {
		case probe.ReasonHealthCheckFailing, probe.ReasonHealthCheckStale:
			// kube-proxy's health check on this node says the wrong thing: not 200 although the
			// node has a local endpoint (and its NodePort answers), or 200 although it has none.
			return LayerProxy, r, probe.StageNodePort
		}
		if _, _, ran := ev.stage(probe.StageProxy); ran && ev.answered(probe.StageProxy) {
			if ev.Results[probe.StageNodePort].FromNode {
				return LayerProxy, probe.ReasonNodePortUnreachableFromNode, probe.StageNodePort
			}
			if st == StateFailed {
				return LayerProxy, probe.ReasonNodePortUnreachable, probe.StageNodePort
			}
		}
		return LayerProxy, reason, probe.StageNodePort
	}
	if reason, st, ok := bad(probe.StageLoadBalancer); ok {
		if _, _, ran := ev.stage(probe.StageProxy); ran && ev.answered(probe.StageProxy) && st == StateFailed {
			return LayerProxy, probe.ReasonLoadBalancerUnreachable, probe.StageLoadBalancer
		}
		return LayerProxy, reason, probe.StageLoadBalancer
	}
	if reason, st, ok := bad(probe.StageDNS); ok {
		if st == StateFailed && ev.Cluster != nil {
			if class, dead := ev.Cluster.DeadResolver(); dead {
				switch class {
				case probe.ResolverNodeLocal:
					return LayerDNS, probe.ReasonNodeLocalDNSUnreachable, probe.StageDNS
				case probe.ResolverOther:
					return LayerDNS, probe.ReasonResolverUnreachable, probe.StageDNS
				}
			}
			if ev.Cluster.ProxySuspect() && ev.OtherVIPs.MostFail() && !ev.answered(probe.StageProxy) {
				return LayerProxy, reason, probe.StageDNS
			}
		}
		return LayerDNS, reason, probe.StageDNS
	}
	if reason, _, ok := bad(probe.StageHairpin); ok {
		return LayerHairpin, reason, probe.StageHairpin
	}
	return LayerOK, probe.ReasonSuccess, ""
}

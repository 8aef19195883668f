package metrics

import (
	"net/netip"
	"strings"
	"testing"

	"github.com/svcprobe/svcprobe/probe"
)

func ok(s probe.Stage) probe.Result {
	return probe.Result{Stage: s, Outcome: probe.OK, Reason: probe.ReasonSuccess}
}
func fail(s probe.Stage, r probe.Reason) probe.Result {
	return probe.Result{Stage: s, Outcome: probe.Failed, Reason: r}
}
func skip(s probe.Stage) probe.Result {
	return probe.Result{Stage: s, Outcome: probe.Skipped, Reason: probe.ReasonNotProbed}
}

// denied is a stage skipped because NetworkPolicy denies the exporter its endpoints.
func denied(s probe.Stage) probe.Result {
	return probe.Result{Stage: s, Outcome: probe.Skipped, Reason: probe.ReasonDeniedByNetworkPolicy}
}

// notEvaluated is a stage skipped because a node agent does not know whether the policies let it
// reach the endpoints (their Pods run on other nodes).
func notEvaluated(s probe.Stage) probe.Result {
	return probe.Result{Stage: s, Outcome: probe.Skipped, Reason: probe.ReasonPolicyNotEvaluated}
}

// idleSkip is a stage skipped because the Service's workload is scaled to zero.
func idleSkip(s probe.Stage) probe.Result {
	return probe.Result{Stage: s, Outcome: probe.Skipped, Reason: probe.ReasonScaledToZero}
}

func results(rs ...probe.Result) map[probe.Stage]probe.Result {
	m := map[probe.Stage]probe.Result{}
	for _, s := range probe.Stages {
		m[s] = ok(s)
	}
	m[probe.StageHairpin] = skip(probe.StageHairpin)
	m[probe.StageNodePort] = skip(probe.StageNodePort)
	for _, r := range rs {
		m[r.Stage] = r
	}
	return m
}

// dnsServiceIP is the cluster DNS Service's ClusterIP in the fixtures.
var dnsServiceIP = netip.MustParseAddr("198.19.0.10")

func dnsCheck(ok bool, r probe.Reason) probe.Check {
	if ok {
		r = probe.ReasonSuccess
	}
	return probe.Check{Reason: r}
}

// clusterDNS builds a cluster DNS round: the VIP answering or not, the DNS Pods answering or not.
func clusterDNS(vip bool, pods ...bool) *probe.ClusterDNSResult {
	c := &probe.ClusterDNSResult{Canary: dnsCheck(vip, probe.ReasonTimeout), VIP: []probe.Check{dnsCheck(vip, probe.ReasonTimeout)},
		Class: []probe.ResolverClass{probe.ResolverService}, ServiceIPs: []netip.Addr{dnsServiceIP}}
	for i, up := range pods {
		c.Pods = append(c.Pods, probe.PodDNSCheck{Name: string(rune('a' + i)), Check: dnsCheck(up, probe.ReasonTimeout)})
	}
	return c
}

func TestVerdictTable(t *testing.T) {
	cases := []struct {
		name    string
		results map[probe.Stage]probe.Result
		cluster *probe.ClusterDNSResult
		layer   Layer
		reason  probe.Reason
		windows map[probe.Stage]Window // nil: every stage judged by its latest result
		others  VIPTally               // the other Services' VIPs
	}{
		{"healthy", results(), clusterDNS(true, true, true), LayerOK, probe.ReasonSuccess, nil, VIPTally{}},
		{"selector typo", results(fail(probe.StageSpec, probe.ReasonSelectorMatchesNoPods), fail(probe.StageEndpoints, probe.ReasonNoEndpoints), skip(probe.StagePod), skip(probe.StageProxy)), nil, LayerSpec, probe.ReasonSelectorMatchesNoPods, nil, VIPTally{}},
		// Intended is not broken: the workload is scaled to zero; spec and endpoints skipped.
		{"scaled to zero: idle", results(idleSkip(probe.StageSpec), idleSkip(probe.StageEndpoints), skip(probe.StagePod), skip(probe.StageProxy)), clusterDNS(true, true), LayerIdle, probe.ReasonScaledToZero, nil, VIPTally{}},
		// Idle even while the name does not resolve (a headless Service publishes nothing).
		{"scaled to zero, headless name fails: idle", results(idleSkip(probe.StageSpec), idleSkip(probe.StageEndpoints), fail(probe.StageDNS, probe.ReasonNXDomain), skip(probe.StagePod), skip(probe.StageProxy)), clusterDNS(true, true), LayerIdle, probe.ReasonScaledToZero, nil, VIPTally{}},
		// A workload that wants replicas but has no Pod: the selector is right (spec passes), the
		// endpoints are what is missing.
		{"workload wants replicas, no Pod: endpoints", results(fail(probe.StageEndpoints, probe.ReasonNoEndpoints), skip(probe.StagePod), skip(probe.StageProxy)), nil, LayerEndpoints, probe.ReasonNoEndpoints, nil, VIPTally{}},
		// NetworkPolicy denies the exporter every endpoint: policy (intended), and the VIP stages
		// skipped with the same reason blame nothing.
		{"policy denies every endpoint: policy", results(denied(probe.StagePod), denied(probe.StageProxy)), clusterDNS(true, true), LayerPolicy, probe.ReasonDeniedByNetworkPolicy, nil, VIPTally{}},
		// A node agent that cannot evaluate the policies for the endpoints on other nodes did not
		// dial them: nothing is blamed, and it is not "policy" either (not known to be denied).
		{"policy not evaluated on this node: ok, not policy", results(notEvaluated(probe.StagePod), notEvaluated(probe.StageProxy)), clusterDNS(true, true), LayerOK, probe.ReasonSuccess, nil, VIPTally{}},
		// Some denied, the others answer: ok (the denied ones are not dialed, not failed).
		{"policy denies some endpoints, the rest answer: ok", results(denied(probe.StageProxy)), clusterDNS(true, true), LayerOK, probe.ReasonSuccess, nil, VIPTally{}},
		// Spec before policy: a typo is a typo whatever the policies.
		{"spec before policy", results(fail(probe.StageSpec, probe.ReasonTargetPortUnresolved), denied(probe.StagePod)), nil, LayerSpec, probe.ReasonTargetPortUnresolved, nil, VIPTally{}},
		{"named port unresolved", results(fail(probe.StageSpec, probe.ReasonTargetPortUnresolved), fail(probe.StageEndpoints, probe.ReasonNoReadyEndpoints)), nil, LayerSpec, probe.ReasonTargetPortUnresolved, nil, VIPTally{}},
		{"protocol mismatch", results(fail(probe.StageSpec, probe.ReasonProtocolMismatch)), nil, LayerSpec, probe.ReasonProtocolMismatch, nil, VIPTally{}},
		{"no ready endpoints", results(fail(probe.StageEndpoints, probe.ReasonNoReadyEndpoints), skip(probe.StagePod), skip(probe.StageProxy)), nil, LayerEndpoints, probe.ReasonNoReadyEndpoints, nil, VIPTally{}},
		{"wrong targetPort: pods refuse, VIP too", results(fail(probe.StagePod, probe.ReasonRefused), fail(probe.StageProxy, probe.ReasonRefused)), clusterDNS(true, true), LayerPod, probe.ReasonRefused, nil, VIPTally{}},
		{"kube-proxy broken, DNS fine", results(fail(probe.StageProxy, probe.ReasonUnreachable)), clusterDNS(true, true), LayerProxy, probe.ReasonUnreachable, nil, VIPTally{}},
		// Network programming (issue 21): a change that never reached the data plane within the
		// ceiling is the layer that should have programmed it, with its own reason; Pods that
		// refuse still come first (the VIP could not have answered anyway).
		{"change never programmed by the proxy: proxy/not_programmed", results(fail(probe.StageProxy, probe.ReasonNotProgrammed)), clusterDNS(true, true), LayerProxy, probe.ReasonNotProgrammed, nil, VIPTally{}},
		{"new name never served: dns/not_programmed", results(fail(probe.StageDNS, probe.ReasonNotProgrammed)), clusterDNS(true, true), LayerDNS, probe.ReasonNotProgrammed, nil, VIPTally{}},
		{"pods refuse, VIP never programmed: pod", results(fail(probe.StagePod, probe.ReasonRefused), fail(probe.StageProxy, probe.ReasonNotProgrammed)), clusterDNS(true, true), LayerPod, probe.ReasonRefused, nil, VIPTally{}},
		// The case the precedence exists for: rules flushed, so the DNS VIP fails too, but the DNS
		// Pods answer directly. The verdict is proxy, not dns.
		{"kube-proxy flushed: VIP and DNS fail", results(fail(probe.StageProxy, probe.ReasonUnreachable), fail(probe.StageDNS, probe.ReasonTimeout)), clusterDNS(false, true, true), LayerProxy, probe.ReasonUnreachable, nil, VIPTally{}},
		// A headless Service has no VIP of its own: the DNS Service's VIP failing while its Pods
		// answer, with the other Services' VIPs failing too, is the proxy.
		{"headless during kube-proxy flush: only DNS fails", results(skip(probe.StageProxy), fail(probe.StageDNS, probe.ReasonTimeout)), clusterDNS(false, true, true), LayerProxy, probe.ReasonTimeout, nil, VIPTally{Failed: 5}},
		{"DNS pods dead", results(fail(probe.StageDNS, probe.ReasonRefused)), clusterDNS(false, false, false), LayerDNS, probe.ReasonRefused, nil, VIPTally{}},
		{"service DNS wrong, cluster DNS fine", results(fail(probe.StageDNS, probe.ReasonWrongAnswer)), clusterDNS(true, true), LayerDNS, probe.ReasonWrongAnswer, nil, VIPTally{}},
		{"no cluster DNS round yet", results(fail(probe.StageDNS, probe.ReasonTimeout)), nil, LayerDNS, probe.ReasonTimeout, nil, VIPTally{}},
		{"hairpin", results(fail(probe.StageHairpin, probe.ReasonTimeout)), clusterDNS(true, true), LayerHairpin, probe.ReasonTimeout, nil, VIPTally{}},
		// hairpin_mode off: the hairpin Service's VIP leads back to the exporter, so its proxy
		// check fails too; kube-proxy demonstrably works (the DNS VIP answers): hairpin.
		{"hairpin off: hairpin Service's VIP fails too", results(fail(probe.StageProxy, probe.ReasonTimeout), fail(probe.StageHairpin, probe.ReasonTimeout)), clusterDNS(true, true, true), LayerHairpin, probe.ReasonTimeout, nil, VIPTally{}},
		{"hairpin off: the exporter's own metrics Service", results(probe.Result{Stage: probe.StageProxy, Outcome: probe.Failed, Reason: probe.ReasonTimeout, SelfOnly: true}), clusterDNS(true, true), LayerHairpin, probe.ReasonTimeout, nil, VIPTally{}},
		// The same failures with kube-proxy gone (DNS VIP dead, DNS Pods fine) stay proxy.
		{"kube-proxy flushed: hairpin Service", results(fail(probe.StageProxy, probe.ReasonUnreachable), fail(probe.StageHairpin, probe.ReasonUnreachable)), clusterDNS(false, true, true), LayerProxy, probe.ReasonUnreachable, nil, VIPTally{}},
		{"kube-proxy flushed: self-only Service", results(probe.Result{Stage: probe.StageProxy, Outcome: probe.Failed, Reason: probe.ReasonUnreachable, SelfOnly: true}), clusterDNS(false, true, true), LayerProxy, probe.ReasonUnreachable, nil, VIPTally{}},
		// One of two DNS replicas dead: the DNS VIP fails for the queries sent to it, the other
		// replica answers directly. That is DNS, not the proxy.
		{"one DNS replica dead", results(fail(probe.StageDNS, probe.ReasonTimeout)), clusterDNS(false, true, false), LayerDNS, probe.ReasonTimeout, nil, VIPTally{}},
		// NodePort: the ClusterIP answers from the same Pod network, the NodePort on the node's
		// address does not: kube-proxy's NodePort path on that node, with its own reason.
		{"NodePort fails, ClusterIP works", results(fail(probe.StageNodePort, probe.ReasonTimeout)), clusterDNS(true, true), LayerProxy, probe.ReasonNodePortUnreachable, nil, VIPTally{}},
		{"NodePort refused, ClusterIP works", results(fail(probe.StageNodePort, probe.ReasonRefused)), nil, LayerProxy, probe.ReasonNodePortUnreachable, nil, VIPTally{}},
		// From the node's own network (hostNetwork agent): the Windows "NodePort from the node" case.
		{"NodePort fails from the node, ClusterIP works", results(probe.Result{Stage: probe.StageNodePort, Outcome: probe.Failed, Reason: probe.ReasonTimeout, FromNode: true}), clusterDNS(true, true), LayerProxy, probe.ReasonNodePortUnreachableFromNode, nil, VIPTally{}},
		{"NodePort and ClusterIP fail from the node: the VIP's reason", results(fail(probe.StageProxy, probe.ReasonRefused), probe.Result{Stage: probe.StageNodePort, Outcome: probe.Failed, Reason: probe.ReasonTimeout, FromNode: true}), clusterDNS(true, true), LayerProxy, probe.ReasonRefused, nil, VIPTally{}},
		{"NodePort and ClusterIP fail: the VIP's reason", results(fail(probe.StageProxy, probe.ReasonUnreachable), fail(probe.StageNodePort, probe.ReasonTimeout)), clusterDNS(true, true), LayerProxy, probe.ReasonUnreachable, nil, VIPTally{}},
		{"NodePort fails, proxy stage skipped: the stage's reason", results(skip(probe.StageProxy), fail(probe.StageNodePort, probe.ReasonTimeout)), nil, LayerProxy, probe.ReasonTimeout, nil, VIPTally{}},
		{"pods refuse: NodePort failing is a consequence", results(fail(probe.StagePod, probe.ReasonRefused), fail(probe.StageNodePort, probe.ReasonRefused)), nil, LayerPod, probe.ReasonRefused, nil, VIPTally{}},
		{"health check fails, NodePort and ClusterIP answer", results(fail(probe.StageNodePort, probe.ReasonHealthCheckFailing)), clusterDNS(true, true), LayerProxy, probe.ReasonHealthCheckFailing, nil, VIPTally{}},
		{"health check fails from the node", results(probe.Result{Stage: probe.StageNodePort, Outcome: probe.Failed, Reason: probe.ReasonHealthCheckFailing, FromNode: true}), clusterDNS(true, true), LayerProxy, probe.ReasonHealthCheckFailing, nil, VIPTally{}},
		{"health check fails and the Pods fail: pod", results(fail(probe.StageNodePort, probe.ReasonHealthCheckFailing), fail(probe.StagePod, probe.ReasonRefused)), clusterDNS(true, true), LayerPod, probe.ReasonRefused, nil, VIPTally{}},
		// 200 from the health check of a node without a local endpoint: the load balancer sends
		// there and kube-proxy drops it. Its own reason, from the Pod network or the node's.
		{"health check says 200 without a local endpoint", results(fail(probe.StageNodePort, probe.ReasonHealthCheckStale)), clusterDNS(true, true), LayerProxy, probe.ReasonHealthCheckStale, nil, VIPTally{}},
		{"health check says 200 without a local endpoint, from the node", results(probe.Result{Stage: probe.StageNodePort, Outcome: probe.Failed, Reason: probe.ReasonHealthCheckStale, FromNode: true}), clusterDNS(true, true), LayerProxy, probe.ReasonHealthCheckStale, nil, VIPTally{}},
		{"health check stale and the ClusterIP fails: the VIP's reason", results(fail(probe.StageProxy, probe.ReasonRefused), fail(probe.StageNodePort, probe.ReasonHealthCheckStale)), clusterDNS(true, true), LayerProxy, probe.ReasonRefused, nil, VIPTally{}},
		{"NodePort and DNS fail: NodePort first", results(fail(probe.StageNodePort, probe.ReasonTimeout), fail(probe.StageDNS, probe.ReasonNXDomain)), clusterDNS(true, true), LayerProxy, probe.ReasonNodePortUnreachable, nil, VIPTally{}},
		// LoadBalancer from inside: the ingress IP (kube-proxy's rules for it on this node) fails
		// while the ClusterIP answers from the same Pod network: proxy, with its own reason.
		{"ingress IP fails, ClusterIP works", results(fail(probe.StageLoadBalancer, probe.ReasonTimeout)), clusterDNS(true, true), LayerProxy, probe.ReasonLoadBalancerUnreachable, nil, VIPTally{}},
		{"ingress IP and ClusterIP fail: the VIP's reason", results(fail(probe.StageProxy, probe.ReasonUnreachable), fail(probe.StageLoadBalancer, probe.ReasonTimeout)), clusterDNS(true, true), LayerProxy, probe.ReasonUnreachable, nil, VIPTally{}},
		{"ingress IP fails, proxy stage skipped: the stage's reason", results(skip(probe.StageProxy), fail(probe.StageLoadBalancer, probe.ReasonRefused)), nil, LayerProxy, probe.ReasonRefused, nil, VIPTally{}},
		{"pods refuse: the ingress IP failing is a consequence", results(fail(probe.StagePod, probe.ReasonRefused), fail(probe.StageLoadBalancer, probe.ReasonRefused)), nil, LayerPod, probe.ReasonRefused, nil, VIPTally{}},
		{"NodePort and ingress IP fail, ClusterIP works: NodePort first", results(fail(probe.StageNodePort, probe.ReasonTimeout), fail(probe.StageLoadBalancer, probe.ReasonTimeout)), clusterDNS(true, true), LayerProxy, probe.ReasonNodePortUnreachable, nil, VIPTally{}},
		{"ingress IP and DNS fail: ingress IP first", results(fail(probe.StageLoadBalancer, probe.ReasonTimeout), fail(probe.StageDNS, probe.ReasonNXDomain)), clusterDNS(true, true), LayerProxy, probe.ReasonLoadBalancerUnreachable, nil, VIPTally{}},
		{"NodePort fine, DNS wrong", results(ok(probe.StageNodePort), fail(probe.StageDNS, probe.ReasonNXDomain)), clusterDNS(true, true), LayerDNS, probe.ReasonNXDomain, nil, VIPTally{}},
		{"hairpin wrong backend", results(fail(probe.StageHairpin, probe.ReasonWrongBackend)), nil, LayerHairpin, probe.ReasonWrongBackend, nil, VIPTally{}},
		{"only cheap stages yet", map[probe.Stage]probe.Result{probe.StageSpec: ok(probe.StageSpec), probe.StageEndpoints: ok(probe.StageEndpoints)}, nil, LayerOK, probe.ReasonSuccess, nil, VIPTally{}},

		// Windows: one failed round among good ones makes no verdict; two in a row do; a share
		// of failed rounds, apart, is partial and held through the rounds that pass; a hard
		// failure that ends is ok at the first good round.
		{"window: one failed round among good ones", results(fail(probe.StageProxy, probe.ReasonTimeout)), clusterDNS(true, true), LayerOK, probe.ReasonSuccess,
			wins(probe.StageProxy, "++++++++-"), VIPTally{}},
		{"window: two failed rounds in a row", results(fail(probe.StageProxy, probe.ReasonTimeout)), clusterDNS(true, true), LayerProxy, probe.ReasonTimeout,
			wins(probe.StageProxy, "++++++--"), VIPTally{}},
		{"window: the only round failed", results(fail(probe.StageProxy, probe.ReasonTimeout)), clusterDNS(true, true), LayerProxy, probe.ReasonTimeout,
			wins(probe.StageProxy, "-"), VIPTally{}},
		{"window: VIP failing a share of rounds, held while this round passed", results(), clusterDNS(true, true), LayerProxy, probe.ReasonPartial,
			wins(probe.StageProxy, "+-+--+-+"), VIPTally{OK: 9}},
		{"window: VIP failing a share of rounds, failing now", results(fail(probe.StageProxy, probe.ReasonTimeout)), clusterDNS(true, true), LayerProxy, probe.ReasonPartial,
			wins(probe.StageProxy, "++-++-"), VIPTally{OK: 9}},
		{"window: hard failure ended, recovery at once", results(), clusterDNS(true, true), LayerOK, probe.ReasonSuccess,
			wins(probe.StageProxy, "++++----+"), VIPTally{}},
		{"window: a lone failure after a hard failure ended is one failure among good ones", results(fail(probe.StageProxy, probe.ReasonTimeout)), clusterDNS(true, true), LayerOK, probe.ReasonSuccess,
			wins(probe.StageProxy, "+----+-"), VIPTally{}},
		{"window: rounds where some connections failed do not close as a hard failure", results(fail(probe.StageProxy, probe.ReasonTimeout)), clusterDNS(true, true), LayerProxy, probe.ReasonPartial,
			wins(probe.StageProxy, "++pp+-"), VIPTally{OK: 9}},
		{"window: partial failure held while a failed round is left in the window", results(), clusterDNS(true, true), LayerProxy, probe.ReasonPartial,
			wins(probe.StageProxy, "-+-+++++++"), VIPTally{}},
		{"window: partial failure aged out of the window", results(), clusterDNS(true, true), LayerOK, probe.ReasonSuccess,
			wins(probe.StageProxy, "-+-++++++++"), VIPTally{}},
		{"window: a VIP failing most rounds, one run, intermittent within rounds: held after a good round", results(), clusterDNS(true, true), LayerProxy, probe.ReasonPartial,
			wins(probe.StageProxy, "+ppppppp+"), VIPTally{OK: 9}},
		{"window: once held as partial, a later hard run that ends does not clear it", results(), clusterDNS(true, true), LayerProxy, probe.ReasonPartial,
			wins(probe.StageProxy, "+pp--------+"), VIPTally{}},
		{"window: a hard failure that began and ended mid-round (mixed edges) ends: ok at once", results(), clusterDNS(true, true), LayerOK, probe.ReasonSuccess,
			wins(probe.StageProxy, "+p---p+"), VIPTally{}},
		{"window: mixed rounds inside a run are a fault that comes and goes: held after it ends", results(), clusterDNS(true, true), LayerProxy, probe.ReasonPartial,
			wins(probe.StageProxy, "+pp--+"), VIPTally{}},
		{"window: a long hard failure out of a healthy window ends: ok at once", results(), clusterDNS(true, true), LayerOK, probe.ReasonSuccess,
			wins(probe.StageProxy, "+-------+"), VIPTally{}},
		{"window: flaky Pod is pod, partial, before the VIP it also fails", results(fail(probe.StageProxy, probe.ReasonTimeout)), clusterDNS(true, true), LayerPod, probe.ReasonPartial,
			merge(wins(probe.StagePod, "+-+-++-+"), wins(probe.StageProxy, "+++++-+-")), VIPTally{}},
		{"window: the VIP fails while the Pods failed in a round of the window: pod, partial", results(fail(probe.StageProxy, probe.ReasonTimeout)), clusterDNS(true, true), LayerPod, probe.ReasonPartial,
			merge(wins(probe.StagePod, "+++++-+"), wins(probe.StageProxy, "+++++--")), VIPTally{OK: 9}},
		{"window: the NodePort fails while the Pods failed in a round of the window: pod, partial", results(fail(probe.StageNodePort, probe.ReasonTimeout)), clusterDNS(true, true), LayerPod, probe.ReasonPartial,
			merge(wins(probe.StagePod, "++++-++"), wins(probe.StageNodePort, "+++++--")), VIPTally{OK: 9}},
		{"window: the VIP fails soon after the Pods' closed hard failure: pod, partial", results(fail(probe.StageProxy, probe.ReasonTimeout)), clusterDNS(true, true), LayerPod, probe.ReasonPartial,
			merge(wins(probe.StagePod, "+--+++"), wins(probe.StageProxy, "+++++--")), VIPTally{OK: 9}},
		{"window: the VIP fails two windows after the Pods last failed: proxy", results(fail(probe.StageProxy, probe.ReasonTimeout)), clusterDNS(true, true), LayerProxy, probe.ReasonTimeout,
			merge(wins(probe.StagePod, "-"+strings.Repeat("+", 2*DefaultWindow)), wins(probe.StageProxy, "+++++--")), VIPTally{OK: 9}},
		{"window: the VIP fails, the Pods clean over the window: proxy", results(fail(probe.StageProxy, probe.ReasonTimeout)), clusterDNS(true, true), LayerProxy, probe.ReasonTimeout,
			merge(wins(probe.StagePod, "+++++++"), wins(probe.StageProxy, "+++++--")), VIPTally{OK: 9}},
		{"window: DNS failing a share of rounds", results(), clusterDNS(true, true), LayerDNS, probe.ReasonPartial,
			wins(probe.StageDNS, "-+-+++"), VIPTally{}},
		{"window: hairpin Service's VIP partial while kube-proxy works: hairpin", results(probe.Result{Stage: probe.StageProxy, Outcome: probe.OK, Reason: probe.ReasonSuccess, SelfOnly: true}), clusterDNS(true, true), LayerHairpin, probe.ReasonPartial,
			wins(probe.StageProxy, "-+-+"), VIPTally{}},
		{"window: NodePort partial while the ClusterIP answers", results(ok(probe.StageNodePort)), clusterDNS(true, true), LayerProxy, probe.ReasonPartial,
			wins(probe.StageNodePort, "-+-+"), VIPTally{}},

		// Resolvers: which nameserver is dead decides the reason, and only the DNS Service's own
		// VIP failing while other VIPs fail too is the proxy.
		{"node-local cache dead", results(fail(probe.StageDNS, probe.ReasonTimeout)), resolverDNS(probe.ResolverNodeLocal, false, true, true), LayerDNS, probe.ReasonNodeLocalDNSUnreachable, nil, VIPTally{OK: 9}},
		{"node-local cache dead, headless, other VIPs failing too: still dns", results(skip(probe.StageProxy), fail(probe.StageDNS, probe.ReasonTimeout)), resolverDNS(probe.ResolverNodeLocal, false, true, true), LayerDNS, probe.ReasonNodeLocalDNSUnreachable, nil, VIPTally{Failed: 9}},
		{"nameserver is not the DNS Service and is dead", results(fail(probe.StageDNS, probe.ReasonTimeout)), resolverDNS(probe.ResolverOther, false, true, true), LayerDNS, probe.ReasonResolverUnreachable, nil, VIPTally{Failed: 3}},
		{"nameserver not the DNS Service refuses", results(fail(probe.StageDNS, probe.ReasonRefused)), resolverDNS(probe.ResolverOther, false, true), LayerDNS, probe.ReasonResolverUnreachable, nil, VIPTally{}},
		{"node-local cache answers SERVFAIL: not dead, the stage's reason", results(fail(probe.StageDNS, probe.ReasonServFail)), resolverWith(probe.ResolverNodeLocal, probe.ReasonServFail, true), LayerDNS, probe.ReasonServFail, nil, VIPTally{}},
		{"only the DNS Service's VIP fails, other VIPs answer: dns", results(skip(probe.StageProxy), fail(probe.StageDNS, probe.ReasonTimeout)), clusterDNS(false, true, true), LayerDNS, probe.ReasonTimeout, nil, VIPTally{OK: 9}},
		{"DNS VIP and other VIPs fail, but this Service's own ClusterIP answered: dns", results(fail(probe.StageDNS, probe.ReasonTimeout)), clusterDNS(false, true, true), LayerDNS, probe.ReasonTimeout, nil, VIPTally{Failed: 9}},
		{"DNS VIP fails, no other Service to compare: dns", results(skip(probe.StageProxy), fail(probe.StageDNS, probe.ReasonTimeout)), clusterDNS(false, true, true), LayerDNS, probe.ReasonTimeout, nil, VIPTally{}},
		{"hairpin off with a node-local resolver: other VIPs show kube-proxy works", results(fail(probe.StageProxy, probe.ReasonTimeout), fail(probe.StageHairpin, probe.ReasonTimeout)), resolverDNS(probe.ResolverNodeLocal, true, true), LayerHairpin, probe.ReasonTimeout, nil, VIPTally{OK: 5}},
		{"hairpin Service fails, no evidence kube-proxy works: proxy", results(fail(probe.StageProxy, probe.ReasonTimeout), fail(probe.StageHairpin, probe.ReasonTimeout)), resolverDNS(probe.ResolverNodeLocal, true, true), LayerProxy, probe.ReasonTimeout, nil, VIPTally{Failed: 5}},
	}
	covered := map[Layer]bool{LayerMissing: true} // missing is decided by the collector; see TestExpectedServiceMissing
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			layer, reason := Decide(Evidence{Results: c.results, Cluster: c.cluster, Windows: c.windows, OtherVIPs: c.others})
			if layer != c.layer || reason != c.reason {
				t.Fatalf("verdict %s/%s, want %s/%s", layer, reason, c.layer, c.reason)
			}
		})
		covered[c.layer] = true
	}
	for _, l := range Layers {
		if !covered[l] {
			t.Errorf("layer %s has no case in the table", l)
		}
	}
}

// wins builds one stage's window from rounds, oldest first: '+' a round that passed, '-' one that
// failed in every attempt, 'p' one where one connection of four failed (the window code itself, so
// the table tests the rule end to end).
func wins(s probe.Stage, rounds string) map[probe.Stage]Window {
	w := newWindow(DefaultWindow)
	for _, c := range rounds {
		switch c {
		case '-':
			w.add(fail(s, probe.ReasonTimeout), false)
		case 'p': // a round where one connection of four to the same address failed
			w.add(probe.Result{Stage: s, Outcome: probe.Failed, Reason: probe.ReasonTimeout, Failing: 1, Total: 4, Intermittent: true}, false)
		default:
			w.add(ok(s), false)
		}
	}
	return map[probe.Stage]Window{s: w.snapshot()}
}

func merge(ms ...map[probe.Stage]Window) map[probe.Stage]Window {
	out := map[probe.Stage]Window{}
	for _, m := range ms {
		for k, v := range m {
			out[k] = v
		}
	}
	return out
}

// resolverDNS is clusterDNS with a nameserver of the given class.
func resolverDNS(class probe.ResolverClass, vip bool, pods ...bool) *probe.ClusterDNSResult {
	c := clusterDNS(vip, pods...)
	c.Class = []probe.ResolverClass{class}
	return c
}

// resolverWith is a cluster DNS round whose one nameserver, of class, failed with reason.
func resolverWith(class probe.ResolverClass, reason probe.Reason, pods ...bool) *probe.ClusterDNSResult {
	c := resolverDNS(class, false, pods...)
	c.VIP[0].Reason = reason
	return c
}

// fam is a failed result confined to one IP family (probe.Result.Family, set by probe.Run).
func fam(r probe.Result, f probe.Family) probe.Result {
	r.Family = f
	return r
}

// TestVerdictFamily: the verdict names the IP family its failure is confined to, from the stage
// it blames, and only that stage's.
func TestVerdictFamily(t *testing.T) {
	v6 := probe.FamilyIPv6
	for _, c := range []struct {
		name    string
		results map[probe.Stage]probe.Result
		windows map[probe.Stage]Window
		layer   Layer
		reason  probe.Reason
		family  probe.Family
	}{
		{"healthy: no family", results(), nil, LayerOK, probe.ReasonSuccess, ""},
		// The IPv6 proxy rules only are gone: the IPv4 ClusterIP answers, the IPv6 one does not.
		{"IPv6 VIP fails, IPv4 answers: proxy, ipv6", results(fam(fail(probe.StageProxy, probe.ReasonTimeout), v6)), nil, LayerProxy, probe.ReasonTimeout, v6},
		// AAAA records missing for a dual-stack Service.
		{"AAAA missing: dns, ipv6", results(fam(fail(probe.StageDNS, probe.ReasonNoAnswer), v6)), nil, LayerDNS, probe.ReasonNoAnswer, v6},
		// An IPv6-only Service whose backend listens on IPv4 only: the Pods refuse, the VIP too.
		{"IPv6 backend not listening: pod, ipv6", results(fam(fail(probe.StagePod, probe.ReasonRefused), v6), fam(fail(probe.StageProxy, probe.ReasonRefused), v6)), nil, LayerPod, probe.ReasonRefused, v6},
		// Both families fail: no family.
		{"both families fail: proxy, no family", results(fail(probe.StageProxy, probe.ReasonTimeout)), nil, LayerProxy, probe.ReasonTimeout, ""},
		// The family is the blamed stage's: the pod stage fails on both, the VIP on IPv4 only.
		{"pod fails on both, VIP on IPv4: pod, no family", results(fail(probe.StagePod, probe.ReasonRefused), fam(fail(probe.StageProxy, probe.ReasonRefused), probe.FamilyIPv4)), nil, LayerPod, probe.ReasonRefused, ""},
		// A degraded window whose latest round passed: partial, and no family (nothing failed now).
		{"degraded, latest round ok: no family", results(), wins(probe.StageProxy, "-+-+-+"), LayerProxy, probe.ReasonPartial, ""},
		// A failure the family does not explain stays without one even if a family is on another
		// stage that passed.
		{"ipv6 only on a stage that passed: no family", results(fam(ok(probe.StageProxy), v6), fail(probe.StageDNS, probe.ReasonNXDomain)), nil, LayerDNS, probe.ReasonNXDomain, ""},
	} {
		ev := Evidence{Results: c.results, Windows: c.windows, Cluster: clusterDNS(true, true, true)}
		layer, reason, family := DecideFamily(ev)
		if layer != c.layer || reason != c.reason || family != c.family {
			t.Errorf("%s: %s/%s/%q, want %s/%s/%q", c.name, layer, reason, family, c.layer, c.reason, c.family)
		}
		if l, r := Decide(ev); l != layer || r != reason {
			t.Errorf("%s: Decide %s/%s, DecideFamily %s/%s", c.name, l, r, layer, reason)
		}
	}
}

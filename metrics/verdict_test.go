package metrics

import (
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

func dnsCheck(ok bool, r probe.Reason) probe.Check {
	if ok {
		r = probe.ReasonSuccess
	}
	return probe.Check{Reason: r}
}

// clusterDNS builds a cluster DNS round: the VIP answering or not, the DNS Pods answering or not.
func clusterDNS(vip bool, pods ...bool) *probe.ClusterDNSResult {
	c := &probe.ClusterDNSResult{Canary: dnsCheck(vip, probe.ReasonTimeout), VIP: []probe.Check{dnsCheck(vip, probe.ReasonTimeout)}}
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
	}{
		{"healthy", results(), clusterDNS(true, true, true), LayerOK, probe.ReasonSuccess},
		{"selector typo", results(fail(probe.StageSpec, probe.ReasonSelectorMatchesNoPods), fail(probe.StageEndpoints, probe.ReasonNoEndpoints), skip(probe.StagePod), skip(probe.StageProxy)), nil, LayerSpec, probe.ReasonSelectorMatchesNoPods},
		{"named port unresolved", results(fail(probe.StageSpec, probe.ReasonTargetPortUnresolved), fail(probe.StageEndpoints, probe.ReasonNoReadyEndpoints)), nil, LayerSpec, probe.ReasonTargetPortUnresolved},
		{"protocol mismatch", results(fail(probe.StageSpec, probe.ReasonProtocolMismatch)), nil, LayerSpec, probe.ReasonProtocolMismatch},
		{"no ready endpoints", results(fail(probe.StageEndpoints, probe.ReasonNoReadyEndpoints), skip(probe.StagePod), skip(probe.StageProxy)), nil, LayerEndpoints, probe.ReasonNoReadyEndpoints},
		{"wrong targetPort: pods refuse, VIP too", results(fail(probe.StagePod, probe.ReasonRefused), fail(probe.StageProxy, probe.ReasonRefused)), clusterDNS(true, true), LayerPod, probe.ReasonRefused},
		{"kube-proxy broken, DNS fine", results(fail(probe.StageProxy, probe.ReasonUnreachable)), clusterDNS(true, true), LayerProxy, probe.ReasonUnreachable},
		// The case the precedence exists for: rules flushed, so the DNS VIP fails too, but the DNS
		// Pods answer directly. The verdict is proxy, not dns.
		{"kube-proxy flushed: VIP and DNS fail", results(fail(probe.StageProxy, probe.ReasonUnreachable), fail(probe.StageDNS, probe.ReasonTimeout)), clusterDNS(false, true, true), LayerProxy, probe.ReasonUnreachable},
		{"headless during kube-proxy flush: only DNS fails", results(skip(probe.StageProxy), fail(probe.StageDNS, probe.ReasonTimeout)), clusterDNS(false, true, true), LayerProxy, probe.ReasonTimeout},
		{"DNS pods dead", results(fail(probe.StageDNS, probe.ReasonRefused)), clusterDNS(false, false, false), LayerDNS, probe.ReasonRefused},
		{"service DNS wrong, cluster DNS fine", results(fail(probe.StageDNS, probe.ReasonWrongAnswer)), clusterDNS(true, true), LayerDNS, probe.ReasonWrongAnswer},
		{"no cluster DNS round yet", results(fail(probe.StageDNS, probe.ReasonTimeout)), nil, LayerDNS, probe.ReasonTimeout},
		{"hairpin", results(fail(probe.StageHairpin, probe.ReasonTimeout)), clusterDNS(true, true), LayerHairpin, probe.ReasonTimeout},
		// hairpin_mode off: the hairpin Service's VIP leads back to the exporter, so its proxy
		// check fails too; kube-proxy demonstrably works (the DNS VIP answers): hairpin.
		{"hairpin off: hairpin Service's VIP fails too", results(fail(probe.StageProxy, probe.ReasonTimeout), fail(probe.StageHairpin, probe.ReasonTimeout)), clusterDNS(true, true, true), LayerHairpin, probe.ReasonTimeout},
		{"hairpin off: the exporter's own metrics Service", results(probe.Result{Stage: probe.StageProxy, Outcome: probe.Failed, Reason: probe.ReasonTimeout, SelfOnly: true}), clusterDNS(true, true), LayerHairpin, probe.ReasonTimeout},
		// The same failures with kube-proxy gone (DNS VIP dead, DNS Pods fine) stay proxy.
		{"kube-proxy flushed: hairpin Service", results(fail(probe.StageProxy, probe.ReasonUnreachable), fail(probe.StageHairpin, probe.ReasonUnreachable)), clusterDNS(false, true, true), LayerProxy, probe.ReasonUnreachable},
		{"kube-proxy flushed: self-only Service", results(probe.Result{Stage: probe.StageProxy, Outcome: probe.Failed, Reason: probe.ReasonUnreachable, SelfOnly: true}), clusterDNS(false, true, true), LayerProxy, probe.ReasonUnreachable},
		// One of two DNS replicas dead: the DNS VIP fails for the queries sent to it, the other
		// replica answers directly. That is DNS, not the proxy.
		{"one DNS replica dead", results(fail(probe.StageDNS, probe.ReasonTimeout)), clusterDNS(false, true, false), LayerDNS, probe.ReasonTimeout},
		// NodePort: the ClusterIP answers from the same Pod network, the NodePort on the node's
		// address does not: kube-proxy's NodePort path on that node, with its own reason.
		{"NodePort fails, ClusterIP works", results(fail(probe.StageNodePort, probe.ReasonTimeout)), clusterDNS(true, true), LayerProxy, probe.ReasonNodePortUnreachable},
		{"NodePort refused, ClusterIP works", results(fail(probe.StageNodePort, probe.ReasonRefused)), nil, LayerProxy, probe.ReasonNodePortUnreachable},
		// From the node's own network (hostNetwork agent): the Windows "NodePort from the node" case.
		{"NodePort fails from the node, ClusterIP works", results(probe.Result{Stage: probe.StageNodePort, Outcome: probe.Failed, Reason: probe.ReasonTimeout, FromNode: true}), clusterDNS(true, true), LayerProxy, probe.ReasonNodePortUnreachableFromNode},
		{"NodePort and ClusterIP fail from the node: the VIP's reason", results(fail(probe.StageProxy, probe.ReasonRefused), probe.Result{Stage: probe.StageNodePort, Outcome: probe.Failed, Reason: probe.ReasonTimeout, FromNode: true}), clusterDNS(true, true), LayerProxy, probe.ReasonRefused},
		{"NodePort and ClusterIP fail: the VIP's reason", results(fail(probe.StageProxy, probe.ReasonUnreachable), fail(probe.StageNodePort, probe.ReasonTimeout)), clusterDNS(true, true), LayerProxy, probe.ReasonUnreachable},
		{"NodePort fails, proxy stage skipped: the stage's reason", results(skip(probe.StageProxy), fail(probe.StageNodePort, probe.ReasonTimeout)), nil, LayerProxy, probe.ReasonTimeout},
		{"pods refuse: NodePort failing is a consequence", results(fail(probe.StagePod, probe.ReasonRefused), fail(probe.StageNodePort, probe.ReasonRefused)), nil, LayerPod, probe.ReasonRefused},
		{"NodePort and DNS fail: NodePort first", results(fail(probe.StageNodePort, probe.ReasonTimeout), fail(probe.StageDNS, probe.ReasonNXDomain)), clusterDNS(true, true), LayerProxy, probe.ReasonNodePortUnreachable},
		{"NodePort fine, DNS wrong", results(ok(probe.StageNodePort), fail(probe.StageDNS, probe.ReasonNXDomain)), clusterDNS(true, true), LayerDNS, probe.ReasonNXDomain},
		{"hairpin wrong backend", results(fail(probe.StageHairpin, probe.ReasonWrongBackend)), nil, LayerHairpin, probe.ReasonWrongBackend},
		{"only cheap stages yet", map[probe.Stage]probe.Result{probe.StageSpec: ok(probe.StageSpec), probe.StageEndpoints: ok(probe.StageEndpoints)}, nil, LayerOK, probe.ReasonSuccess},
	}
	covered := map[Layer]bool{LayerMissing: true} // missing is decided by the collector; see TestExpectedServiceMissing
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			layer, reason := Verdict(c.results, c.cluster)
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

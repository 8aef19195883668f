package metrics

import "github.com/svcprobe/svcprobe/probe"

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
)

// Layers lists every layer.
var Layers = []Layer{LayerOK, LayerMissing, LayerSpec, LayerEndpoints, LayerDNS, LayerPod, LayerProxy, LayerHairpin}

// Verdict names the one layer to blame, following the dependencies between the layers:
//
//  1. spec: a Service that selects nothing or targets a port nobody has cannot work further down.
//  2. endpoints: no ready endpoints, nothing to reach.
//  3. pod: the backends themselves do not answer on IP:targetPort; the VIP failing too is a
//     consequence, not a second cause.
//  4. proxy: the Pods answer directly but the ClusterIP does not — unless the VIP leads only to
//     the exporter's own Pod (the hairpin Service, or the exporter's metrics Service with one
//     replica) while the cluster DNS Service IP answers: kube-proxy works, the hairpin path does
//     not, and the verdict says hairpin.
//  5. proxy, NodePort path: the nodeport stage failed (a NodePort or LoadBalancer Service does
//     not answer on nodeIP:nodePort). With the ClusterIP answering from the same Pod network the
//     reason is nodeport_unreachable: kube-proxy's NodePort rules (or a host firewall) on that
//     node, not the Service; in node mode the node is the agent's own ("NodePort from the node
//     itself fails", a known Windows failure). When the proxy stage did not run, the reason is the
//     nodeport stage's own. Dialed from the node's own network (a hostNetwork agent), the reason
//     is nodeport_unreachable_from_node: the node cannot reach its own NodePort, the Windows
//     limitation. It comes after the ClusterIP check (a broken VIP explains a broken
//     NodePort, not the other way round) and before dns (a NodePort does not use DNS).
//  6. dns: the name does not resolve right — unless the cluster DNS Pods answer when asked
//     directly while the DNS Service IP does not: then the service proxy is what broke DNS, and
//     the verdict says proxy.
//  7. hairpin: everything else works but the exporter cannot reach itself through its Service.
//
// A stage that did not run (skipped, or not yet probed) blames nothing.
func Verdict(results map[probe.Stage]probe.Result, cluster *probe.ClusterDNSResult) (Layer, probe.Reason) {
	failed := func(s probe.Stage) (probe.Reason, bool) {
		r, ok := results[s]
		return r.Reason, ok && r.Outcome == probe.Failed
	}
	for _, step := range []struct {
		stage probe.Stage
		layer Layer
	}{{probe.StageSpec, LayerSpec}, {probe.StageEndpoints, LayerEndpoints}, {probe.StagePod, LayerPod}} {
		if reason, ok := failed(step.stage); ok {
			return step.layer, reason
		}
	}
	if reason, ok := failed(probe.StageProxy); ok {
		_, hairpinFailed := failed(probe.StageHairpin)
		if (results[probe.StageProxy].SelfOnly || hairpinFailed) && cluster != nil && cluster.VIPUp() {
			return LayerHairpin, reason
		}
		return LayerProxy, reason
	}
	if reason, ok := failed(probe.StageNodePort); ok {
		if r, ran := results[probe.StageProxy]; ran && r.Outcome == probe.OK {
			if results[probe.StageNodePort].FromNode {
				return LayerProxy, probe.ReasonNodePortUnreachableFromNode
			}
			return LayerProxy, probe.ReasonNodePortUnreachable
		}
		return LayerProxy, reason
	}
	if reason, ok := failed(probe.StageDNS); ok {
		if cluster != nil && cluster.ProxySuspect() {
			return LayerProxy, reason
		}
		return LayerDNS, reason
	}
	if reason, ok := failed(probe.StageHairpin); ok {
		return LayerHairpin, reason
	}
	return LayerOK, probe.ReasonSuccess
}

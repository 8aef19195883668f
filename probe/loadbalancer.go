package probe

import (
	"context"
	"net/netip"
	"strings"

	"github.com/svcprobe/svcprobe/discovery"
)

// LoadBalancerProber connects to the ingress IPs of a LoadBalancer Service
// (status.loadBalancer.ingress, ipMode VIP or unset) on every probed port, from this Pod: the
// path a Pod takes when it calls its own cluster's load balancer. kube-proxy answers such traffic
// on the node (it programs the ingress IPs as it programs ClusterIPs), so the load balancer
// itself is never reached and the cloud is never called: what fails here is the node's service
// proxy for the ingress IP (runbook: "Is kube-proxy working?", its load-balancer path).
//
// The ingress IPs come from the Service's status, written by the cloud controller (RBAC on
// services/status); the AddressGuard counts them as the Service's own addresses.
type LoadBalancerProber struct {
	Dialer *Dialer
	// NodeName is this Pod's node (--node-name, NODE_NAME); "" when unknown. With
	// externalTrafficPolicy: Local kube-proxy may send in-cluster traffic for an ingress IP only
	// to the node's own endpoints (unless it tells Pod traffic apart, --detect-local-mode), so such
	// a Service is probed only from a node with a local ready endpoint.
	NodeName string
	// Connections bounds the connections per round to each ingress IP and port: min(ready
	// endpoints, Connections), each a new one (--probe.vip-connections; 0 means 1).
	Connections int
}

func (p *LoadBalancerProber) Stage() Stage { return StageLoadBalancer }

func (p *LoadBalancerProber) Probe(ctx context.Context, t *discovery.Target) Result {
	switch {
	case t.Kind != discovery.KindLoadBalancer:
		return skipped(StageLoadBalancer, "not a LoadBalancer Service")
	case len(t.LoadBalancerIPs) == 0:
		return skipped(StageLoadBalancer, "no ingress IP in status.loadBalancer that kube-proxy serves in-cluster (none yet, a hostname, or ipMode Proxy)")
	case len(t.ReadyEndpoints()) == 0:
		return skipped(StageLoadBalancer, "no ready endpoints to proxy to (see the endpoints stage)")
	}
	eps := t.ReadyEndpoints()
	if t.ExternalTrafficLocal {
		var r Result
		if eps, r = localOnly(StageLoadBalancer, t, p.NodeName, "externalTrafficPolicy",
			"the ingress IP may lead only to endpoints on the client's node", "the ingress IP may lead only to local endpoints here"); eps == nil {
			return r
		}
	}
	if r, denied := deniedSkip(StageLoadBalancer, t, eps); denied {
		return r
	}
	var jobs []job
	for _, ip := range t.LoadBalancerIPs {
		for pi, port := range t.ProbedPorts() {
			kind, h := kindFor(t, port, port.Port)
			if kind == kindNone || port.Port <= 0 {
				continue
			}
			addr := netip.AddrPortFrom(ip, uint16(port.Port))
			jobs = append(jobs, job{addr: addr, host: addr.String(), kind: kind, http: h, port: pi,
				subject: subjectAddr(addr, kind) + " (load balancer ingress of " + t.Key() + ")"})
		}
	}
	checks, failing, total, intermittent := runRepeated(ctx, p.Dialer, t, StageLoadBalancer, jobs, connectionsFor(len(eps), p.Connections))
	r := fromRepeated(StageLoadBalancer, checks, failing, total, intermittent, "no TCP ports (UDP is probed on port 53 only)")
	if r.Outcome == Failed {
		ips := make([]string, len(t.LoadBalancerIPs))
		for i, a := range t.LoadBalancerIPs {
			ips[i] = a.String()
		}
		r.Hint = "The load balancer's ingress IP does not answer from this Pod, which kube-proxy serves on the node itself " +
			"(in-cluster clients never reach the load balancer). If the proxy stage passes, the ClusterIP works from the same " +
			"Pod network, so kube-proxy's rules for the ingress IP on this node are what is missing: check " +
			"iptables-save -t nat | grep '" + strings.Join(ips, "\\|") + "' (the KUBE-SERVICES jump to KUBE-EXT-…), or " +
			"nft list map ip kube-proxy service-ips in nftables mode (ClusterIP, external and load-balancer IPs), and that the IP's ipMode is VIP."
	}
	return r
}

package probe

import (
	"context"
	"net/netip"
	"strconv"
	"strings"

	"github.com/svcprobe/svcprobe/discovery"
)

// NodePortProber connects to nodeIP:nodePort for every probed port of a NodePort or LoadBalancer
// Service, on the addresses of the node this Pod runs on (runbook: "Is kube-proxy working?", its
// NodePort path). The source is this Pod: on the Pod network (the default; the restricted Pod
// Security Standard forbids hostNetwork) it is a Pod reaching its node's NodePort; an agent run
// with hostNetwork is the node reaching its own NodePort (FromNode), the Windows failure
// "NodePort from the node itself", which the verdict names apart.
//
// The node addresses come from the operator (--node.address, or HOST_IP from the downward API's
// status.hostIP), not from a Service object; the AddressGuard counts them as in-cluster. No Node
// objects are read, so the exporter needs no RBAC on nodes.
type NodePortProber struct {
	Dialer *Dialer
	// NodeAddrs are this node's addresses. Empty: the stage is skipped.
	NodeAddrs []netip.Addr
	// NodeName is this Pod's node (--node-name, NODE_NAME); "" when unknown. Services with
	// externalTrafficPolicy: Local are probed only when it names a node with a ready endpoint.
	NodeName string
	// FromNode says the prober shares the node's network namespace (hostNetwork: its Pod IP is
	// one of NodeAddrs), so its dials to NodeAddrs are the node reaching its own NodePorts.
	FromNode bool
	// Connections bounds the connections per round to each NodePort: min(ready endpoints it
	// leads to, Connections), each a new one (--probe.vip-connections; 0 means 1).
	Connections int
}

// SharesNodeNetwork reports whether one of podIPs is one of nodeAddrs: a Pod with hostNetwork
// has the node's addresses as its own.
func SharesNodeNetwork(podIPs, nodeAddrs []netip.Addr) bool {
	for _, p := range podIPs {
		for _, n := range nodeAddrs {
			if p.Unmap() == n.Unmap() {
				return true
			}
		}
	}
	return false
}

func (p *NodePortProber) Stage() Stage { return StageNodePort }

func (p *NodePortProber) Probe(ctx context.Context, t *discovery.Target) Result {
	switch {
	case t.Kind != discovery.KindNodePort && t.Kind != discovery.KindLoadBalancer:
		return skipped(StageNodePort, "not a NodePort or LoadBalancer Service")
	case len(p.NodeAddrs) == 0:
		return skipped(StageNodePort, "no node address known: set --node.address or HOST_IP (downward API status.hostIP)")
	case len(t.ReadyEndpoints()) == 0:
		return skipped(StageNodePort, "no ready endpoints to proxy to (see the endpoints stage)")
	}
	if t.ExternalTrafficLocal {
		// kube-proxy answers such a NodePort only on nodes with a local endpoint; elsewhere it
		// drops external clients on purpose, and a failure there would be a false alarm.
		if eps, r := localOnly(StageNodePort, t, p.NodeName, "externalTrafficPolicy",
			"the NodePort answers only on nodes with a local endpoint", "the NodePort is meant not to answer here"); eps == nil {
			if p.NodeName == "" {
				return r
			}
			return p.noLocalEndpoint(ctx, t, r)
		}
	}
	addrs := p.addrsFor(t)
	if len(addrs) == 0 {
		return skipped(StageNodePort, "no node address of the Service's IP families")
	}
	if r, denied := deniedSkip(StageNodePort, t, t.ReadyEndpoints()); denied {
		return r
	}
	node := ""
	if p.NodeName != "" {
		node = ", node " + p.NodeName
	}
	var jobs []job
	for _, ip := range addrs {
		for pi, port := range t.ProbedPorts() {
			if port.NodePort <= 0 {
				continue // a LoadBalancer with allocateLoadBalancerNodePorts: false
			}
			// How to probe is the Service port's business (DNS on 53, HTTP when annotated).
			kind, h := kindFor(t, port, port.Port)
			if kind == kindNone {
				continue
			}
			addr := netip.AddrPortFrom(ip, uint16(port.NodePort))
			jobs = append(jobs, job{addr: addr, host: addr.String(), kind: kind, http: h, port: pi,
				subject: subjectAddr(addr, kind) + " (nodePort of " + portRef(port) + node + ")"})
		}
	}
	ready := len(t.ReadyEndpoints())
	if t.ExternalTrafficLocal {
		ready = len(t.ReadyEndpointsOn(p.NodeName)) // the NodePort leads only to the node's own
	}
	checks, failing, total, intermittent := runRepeated(ctx, p.Dialer, t, StageNodePort, jobs, connectionsFor(ready, p.Connections))
	r := fromRepeated(StageNodePort, checks, failing, total, intermittent, "no TCP NodePorts (UDP is probed on port 53 only)")
	r.FromNode = p.FromNode
	if r.Outcome != Skipped {
		p.healthCheck(ctx, t, addrs, node, &r)
	}
	if r.Outcome == Failed && r.Reason == ReasonHealthCheckFailing {
		r.Hint = "The NodePort answers on this node and the node has a ready endpoint of the Service, but kube-proxy's health check " +
			"(GET /healthz on healthCheckNodePort " + strconv.Itoa(int(t.HealthCheckNodePort)) + ") does not say 200: an external load balancer " +
			"that asks it takes this node out (or keeps sending to it on no answer). Check kube-proxy on this node (its logs, " +
			"--healthz-bind-address and that its service health servers listen: ss -ltnp | grep " + strconv.Itoa(int(t.HealthCheckNodePort)) +
			"), a host firewall on that port, and the body of the answer (localEndpoints)."
	} else if r.Outcome == Failed && p.FromNode {
		r.Hint = "The NodePort does not answer when the node dials its own address (this prober runs on the node's network). " +
			"If the proxy stage passes, the ClusterIP works from the node, so only the node's own path to its NodePorts is broken: " +
			"on Windows nodes that is a known limitation (reach NodePorts from another node or a Pod); on Linux check kube-proxy's " +
			"--nodeport-addresses and the KUBE-NODEPORTS jump in the nat OUTPUT chain (iptables-save -t nat | grep " + t.Namespace + "/" + t.Name +
			"), ports " + nodePorts(t) + "."
	} else if r.Outcome == Failed {
		r.Hint = "The NodePort does not answer on this node's address. If the proxy stage passes, the ClusterIP works from " +
			"the same Pod network, so kube-proxy's NodePort rules on this node are what is broken: check its " +
			"--nodeport-addresses, the KUBE-NODEPORTS chain (iptables-save | grep " + t.Namespace + "/" + t.Name +
			"; nftables mode: nft list map ip kube-proxy service-nodeports), a host firewall on ports " + nodePorts(t) + ", and on Windows nodes the known limit that a " +
			"NodePort may not answer from the node itself (try it from another node)."
	}
	return r
}

// healthCheck asks kube-proxy's service health server on this node's healthCheckNodePort (a
// LoadBalancer Service with externalTrafficPolicy Local; the prober has already found a ready
// endpoint on its node, so 200 is the only right answer), once per node address, when the
// NodePort itself answered. A failed health check fails the stage with
// ReasonHealthCheckFailing; its checks are added to the stage's either way. node is the subjects'
// ", node NAME" suffix (empty when the node is unknown).
func (p *NodePortProber) healthCheck(ctx context.Context, t *discovery.Target, addrs []netip.Addr, node string, r *Result) {
	if !t.ExternalTrafficLocal || t.HealthCheckNodePort <= 0 || t.Kind != discovery.KindLoadBalancer {
		return
	}
	var jobs []job
	for _, ip := range addrs {
		addr := netip.AddrPortFrom(ip, uint16(t.HealthCheckNodePort))
		jobs = append(jobs, job{addr: addr, host: addr.String(), kind: kindHTTP,
			http:    discovery.HTTPOptions{Path: "/healthz", StatusMin: 200, StatusMax: 200},
			subject: "http://" + addr.String() + "/healthz (healthCheckNodePort" + node + ")"})
	}
	checks := runJobs(ctx, p.Dialer, t, StageNodePort, jobs)
	r.Checks = append(r.Checks, checks...)
	if r.Outcome != OK {
		return // the NodePort's own failure says more
	}
	for _, c := range checks {
		if notDialed(c.Reason) || c.OK() {
			continue
		}
		r.Outcome, r.Reason, r.Detail = Failed, ReasonHealthCheckFailing, c.Subject+": "+c.Detail
		r.Failing, r.Total = 1, 1
		r.Intermittent = false
		return
	}
}

// noLocalEndpoint is the stage on a node without a ready endpoint of a Service with
// externalTrafficPolicy Local (skip, the localOnly result). The NodePort is meant not to answer
// here and is not dialed; for a LoadBalancer Service with a healthCheckNodePort, kube-proxy's
// health check on this node is asked instead, and it must not say 200: 200 tells the external
// load balancer that this node can serve, and kube-proxy drops what it then sends (no local
// endpoint). 503 (kube-proxy's answer without local endpoints) or no answer (the load balancer
// takes the node out) pass; 200 fails the stage with ReasonHealthCheckStale. The checks are
// rewritten to say that: a 503 is the check's success.
func (p *NodePortProber) noLocalEndpoint(ctx context.Context, t *discovery.Target, skip Result) Result {
	if t.Kind != discovery.KindLoadBalancer || t.HealthCheckNodePort <= 0 {
		return skip
	}
	addrs := p.addrsFor(t)
	if len(addrs) == 0 {
		return skip
	}
	var jobs []job
	for _, ip := range addrs {
		addr := netip.AddrPortFrom(ip, uint16(t.HealthCheckNodePort))
		jobs = append(jobs, job{addr: addr, host: addr.String(), kind: kindHTTP,
			http:    discovery.HTTPOptions{Path: "/healthz", StatusMin: 200, StatusMax: 200},
			subject: "http://" + addr.String() + "/healthz (healthCheckNodePort, node " + p.NodeName + ", no local endpoint)"})
	}
	checks := runJobs(ctx, p.Dialer, t, StageNodePort, jobs)
	for i, c := range checks {
		switch {
		case c.OK():
			checks[i].Reason = ReasonHealthCheckStale
			checks[i].Detail = "HTTP 200: kube-proxy tells the load balancer this node can serve, but it has no ready endpoint of the Service"
		case c.Reason == ReasonHTTPStatus || c.Reason == ReasonRefused || c.Reason == ReasonTimeout ||
			c.Reason == ReasonReset || c.Reason == ReasonUnreachable:
			checks[i].Reason = ReasonSuccess
			checks[i].Detail = c.Detail + " (not 200: the load balancer leaves this node out, as it should without a local endpoint)"
		}
	}
	r := fromChecks(StageNodePort, checks, skip.Detail)
	r.FromNode = p.FromNode
	switch r.Outcome {
	case OK:
		r.Detail = skip.Detail + "; kube-proxy's health check does not say 200 here, as it should"
	case Failed:
		if r.Reason == ReasonHealthCheckStale {
			hc := strconv.Itoa(int(t.HealthCheckNodePort))
			r.Hint = "Node " + p.NodeName + " has no ready endpoint of the Service (externalTrafficPolicy: Local), but GET /healthz on its " +
				"healthCheckNodePort " + hc + " answers 200: an external load balancer that asks it sends traffic to this node, and " +
				"kube-proxy drops it there. kube-proxy's view of the endpoints on this node is stale (its logs, restarts, " +
				"sync errors; compare the answer's localEndpoints with kubectl get endpointslices -l kubernetes.io/service-name=" + t.Name +
				" -n " + t.Namespace + "), or something else answers on that port (ss -ltnp | grep " + hc + ", a NAT rule for it)."
		}
	}
	return r
}

// addrsFor keeps the node addresses of a family the Service has: an IPv4-only Service has no
// NodePort on the node's IPv6 address.
func (p *NodePortProber) addrsFor(t *discovery.Target) []netip.Addr {
	if len(t.ClusterIPs) == 0 {
		return p.NodeAddrs
	}
	var out []netip.Addr
	for _, a := range p.NodeAddrs {
		for _, c := range t.ClusterIPs {
			if a.Unmap().Is4() == c.Unmap().Is4() {
				out = append(out, a.Unmap())
				break
			}
		}
	}
	return out
}

func nodePorts(t *discovery.Target) string {
	var ps []string
	for _, p := range t.ProbedPorts() {
		if p.NodePort > 0 {
			ps = append(ps, strconv.Itoa(int(p.NodePort))+"/"+strings.ToLower(string(protocolOf(p))))
		}
	}
	return strings.Join(ps, ", ")
}

// leadsOnlyTo reports whether every one of eps (at least one) is one of self.
func leadsOnlyTo(self []netip.Addr, eps []discovery.Endpoint) bool {
	if len(self) == 0 || len(eps) == 0 {
		return false
	}
	for _, e := range eps {
		for _, a := range e.Addresses {
			found := false
			for _, s := range self {
				if s.Unmap() == a.Unmap() {
					found = true
					break
				}
			}
			if !found {
				return false
			}
		}
	}
	return true
}

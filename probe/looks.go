package probe

import (
	"context"
	"fmt"

	"github.com/svcprobe/svcprobe/discovery"
)

// DefaultConnections is how many connections a round makes to each VIP and port, at most
// (--probe.vip-connections).
const DefaultConnections = 4

// connectionsFor is how many connections a round makes to each of a Service's VIP addresses and
// ports: one per ready endpoint it may lead to, at most max (at least 1). kube-proxy picks a
// backend per new connection, so with a stale rule for one of three backends one connection in
// three fails, and four connections catch it in about 80% of rounds where one would in 33%.
func connectionsFor(ready, limit int) int {
	return max(1, min(ready, limit))
}

// runRepeated dials each job n times, each a new connection, and folds the n attempts of a job
// into one check: the first failure (its detail saying how many of the n failed) or, when all
// answered, the first answer. It also returns the attempts that failed and those made, the
// stage's Failing and Total, and whether some job both answered and failed (intermittent). Jobs
// whose address the AddressGuard refuses are not repeated.
func runRepeated(ctx context.Context, d *Dialer, t *discovery.Target, stage Stage, jobs []job, n int) (checks []Check, failing, total int, intermittent bool) {
	n = max(1, n)
	all := make([]job, 0, len(jobs)*n)
	reps := make([]int, len(jobs))
	for i, j := range jobs {
		reps[i] = 1
		if n > 1 && j.deniedBy == "" && d.Guard.Allowed(t, j.addr.Addr()) {
			reps[i] = n
		}
		for range reps[i] {
			all = append(all, j)
		}
	}
	raw := runJobs(ctx, d, t, stage, all)
	checks = make([]Check, len(jobs))
	at := 0
	for i := range jobs {
		group := raw[at : at+reps[i]]
		at += reps[i]
		c := group[0]
		failed := 0
		for _, g := range group {
			if notDialed(g.Reason) {
				continue
			}
			total++
			if !g.OK() {
				if failed == 0 {
					c = g
				}
				failed++
			}
			c.Duration = max(c.Duration, g.Duration)
		}
		failing += failed
		if failed > 0 && failed < len(group) {
			intermittent = true
		}
		if len(group) > 1 {
			if failed > 0 {
				c.Detail = fmt.Sprintf("%d of %d connections failed: %s", failed, len(group), c.Detail)
			} else {
				c.Detail = fmt.Sprintf("%d of %d connections answered: %s", len(group), len(group), c.Detail)
			}
		}
		checks[i] = c
	}
	return checks, failing, total, intermittent
}

// fromRepeated is fromChecks over folded checks, with Failing and Total counting connections.
func fromRepeated(s Stage, checks []Check, failing, total int, intermittent bool, why string) Result {
	r := fromChecks(s, checks, why)
	if r.Outcome != Skipped {
		r.Failing, r.Total, r.Intermittent = failing, total, intermittent
	}
	return r
}

// localOnly is, for a Service whose traffic policy (policy: internalTrafficPolicy or
// externalTrafficPolicy) is Local, the ready endpoints on node, this prober's: what the path may
// lead to from here. When the node is unknown (why names the path's limit) or has none (none says
// it is meant not to answer), it returns nil and the stage's skipped result instead.
func localOnly(s Stage, t *discovery.Target, node, policy, why, none string) ([]discovery.Endpoint, Result) {
	if node == "" {
		return nil, skipped(s, policy+": Local and this Pod's node is unknown (--node-name, NODE_NAME): "+why)
	}
	eps := t.ReadyEndpointsOn(node)
	if len(eps) == 0 {
		return nil, skipped(s, policy+": Local and no ready endpoint on node "+node+": "+none)
	}
	return eps, Result{}
}

// deniedSkip is the result of a VIP stage (proxy, nodeport) when NetworkPolicy denies the exporter
// one of the ready endpoints the VIP leads to on a probed port: kube-proxy would send some of the
// connections there and they would be dropped by design, so the VIP's answer says nothing of the
// proxy. The same when whether a policy denies it is not known on this node
// (discovery.Endpoint.PolicyNotEvaluated). ok is false when nothing is denied.
func deniedSkip(s Stage, t *discovery.Target, eps []discovery.Endpoint) (Result, bool) {
	for _, ep := range eps {
		if ep.PolicyNotEvaluated {
			r := skipped(s, fmt.Sprintf("pod %s runs on another node and the namespace's NetworkPolicies select Pods by labels this node agent does not watch: "+
				"the virtual IP leads there too, and whether its answer would say anything of the service proxy is not known here", ep.PodName))
			r.Reason = ReasonPolicyNotEvaluated
			return r, true
		}
		for _, p := range t.ProbedPorts() {
			if by := ep.Denied[discovery.PortKey(p)]; by != "" {
				r := skipped(s, fmt.Sprintf("NetworkPolicy %s does not allow ingress from this exporter to pod %s on %s: "+
					"the virtual IP leads there too, so its answer would say nothing of the service proxy", by, ep.PodName, portRef(p)))
				r.Reason = ReasonDeniedByNetworkPolicy
				return r, true
			}
		}
	}
	return Result{}, false
}

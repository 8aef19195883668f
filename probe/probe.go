package probe

import (
	"context"
	"net/netip"
	"slices"
	"strings"
	"time"

	"github.com/svcprobe/svcprobe/discovery"
)

// Stage is one step of the runbook.
type Stage string

// The stages, in runbook order.
const (
	StageSpec      Stage = "spec"
	StageEndpoints Stage = "endpoints"
	StageDNS       Stage = "dns"
	StagePod       Stage = "pod"
	StageProxy     Stage = "proxy"
	StageNodePort  Stage = "nodeport"
	// StageLoadBalancer dials a LoadBalancer Service's ingress IPs from the Pod network.
	StageLoadBalancer Stage = "loadbalancer"
	StageHairpin      Stage = "hairpin"
)

// Stages lists every stage in runbook order.
var Stages = []Stage{StageSpec, StageEndpoints, StageDNS, StagePod, StageProxy, StageNodePort, StageLoadBalancer, StageHairpin}

// ThroughProxy reports whether a stage reaches the Service's Pods through the service proxy (its
// ClusterIP, a NodePort, a load balancer's ingress IP): a Pod that fails its connections fails
// this stage's too, and the verdict and the window tell that apart from the proxy.
func (s Stage) ThroughProxy() bool {
	return s == StageProxy || s == StageNodePort || s == StageLoadBalancer
}

// Reason is the outcome of a probe, from a closed set (it becomes a label value).
type Reason string

// The closed set of reasons.
const (
	ReasonSuccess   Reason = "success"
	ReasonNotProbed Reason = "not_probed"

	ReasonSelectorMatchesNoPods Reason = "selector_matches_no_pods"
	ReasonTargetPortUnresolved  Reason = "target_port_unresolved"
	ReasonProtocolMismatch      Reason = "protocol_mismatch"

	ReasonNoEndpoints      Reason = "no_endpoints"
	ReasonNoReadyEndpoints Reason = "no_ready_endpoints"

	ReasonTimeout     Reason = "timeout"
	ReasonNXDomain    Reason = "nxdomain"
	ReasonServFail    Reason = "servfail"
	ReasonRefused     Reason = "refused"
	ReasonWrongAnswer Reason = "wrong_answer"
	ReasonNoAnswer    Reason = "no_answer"

	ReasonReset         Reason = "reset"
	ReasonUnreachable   Reason = "unreachable"
	ReasonHTTPStatus    Reason = "http_status"
	ReasonPortExhausted Reason = "port_exhausted"
	ReasonWrongBackend  Reason = "wrong_backend"
	ReasonBudget        Reason = "budget_exhausted"
	ReasonError         Reason = "error"

	// ReasonExternalNotAllowed: the address is outside the cluster and not allowed by
	// --probe.allow-external, so it was not dialed (see AddressGuard).
	ReasonExternalNotAllowed Reason = "external_not_allowed"

	// ReasonNodePortUnreachable is a verdict reason, not a stage's: the NodePort does not answer on
	// the node's address while the same Service answers on its ClusterIP from the same Pod network
	// (the nodeport stage's own reason, timeout or refused, says how it failed). In node mode the
	// address is the agent's own node: the "NodePort from the node itself fails" case.
	ReasonNodePortUnreachable Reason = "nodeport_unreachable"

	// ReasonNodePortUnreachableFromNode is nodeport_unreachable measured from the node itself: the
	// prober shares the node's network (a hostNetwork agent: its Pod IP is a node address), so the
	// NodePort fails for traffic the node sends to its own address while the ClusterIP answers.
	// That is a known Windows limitation (the host's load balancer does not NAT the node's own
	// traffic to a NodePort) and, on Linux, kube-proxy's locally-originated NodePort path (the
	// KUBE-NODEPORTS jump in the nat OUTPUT chain, --nodeport-addresses, localhost NodePorts).
	ReasonNodePortUnreachableFromNode Reason = "nodeport_unreachable_from_node"

	// ReasonPartial is a verdict reason, not a stage's: the stage fails in a share of its recent
	// rounds (its window is degraded), e.g. a VIP failing one connection in three, a flaky Pod.
	ReasonPartial Reason = "partial"
	// ReasonNodeLocalDNSUnreachable is a verdict reason: every nameserver of resolv.conf is dead
	// and it is a node-local DNS cache (NodeLocal DNSCache), not the cluster DNS Service.
	ReasonNodeLocalDNSUnreachable Reason = "node_local_dns_unreachable"
	// ReasonResolverUnreachable is a verdict reason: every nameserver of resolv.conf is dead and
	// it is neither the cluster DNS Service's ClusterIP nor a node-local cache.
	ReasonResolverUnreachable Reason = "resolver_unreachable"
	// ReasonScaledToZero: the selector matches no Pod because every workload whose Pod template
	// it matches wants no replica (discovery.Target.ScaledToZero). The spec and endpoints stages
	// skip with it, and the verdict is idle: intended, not broken.
	ReasonScaledToZero Reason = "scaled_to_zero"
	// ReasonDeniedByNetworkPolicy: the cluster's NetworkPolicies do not let the exporter reach the
	// endpoint on that port (discovery.Endpoint.Denied), so it was not dialed: the policy working
	// as its owner set it up, not a failure of the Pod. The verdict is policy.
	ReasonDeniedByNetworkPolicy Reason = "denied_by_network_policy"
	// ReasonPolicyNotEvaluated: a node agent watching only its node's Pods does not know the
	// labels of an endpoint's Pod on another node, and the namespace's NetworkPolicies depend on
	// them (discovery.Endpoint.PolicyNotEvaluated): the endpoint is not dialed from this node, and
	// nothing is blamed for it. The central exporter evaluates it.
	ReasonPolicyNotEvaluated Reason = "policy_not_evaluated"
	// ReasonNotProgrammed: a change the data plane has to follow (a new Service, its first ready
	// endpoint, new ports or ClusterIPs, a new DNS answer) did not show in the proxy or dns stage
	// within --probe.programming.ceiling (issue 21).
	ReasonNotProgrammed Reason = "not_programmed"
	// ReasonLoadBalancerUnreachable is a verdict reason: a LoadBalancer Service's ingress IP does
	// not answer from the Pod network while its ClusterIP does (the loadbalancer stage failed,
	// the proxy stage answered): kube-proxy's rules for the ingress IP are what is missing.
	ReasonLoadBalancerUnreachable Reason = "load_balancer_unreachable"
	// ReasonHealthCheckFailing: a LoadBalancer Service with externalTrafficPolicy Local has a
	// ready endpoint on this prober's node, its NodePort answers, but kube-proxy's health check
	// (GET /healthz on the node's healthCheckNodePort) does not answer 200: the external load
	// balancer takes the node out (503) or cannot ask it (no answer) although it can serve. The
	// nodeport stage's reason, and the verdict's (proxy, on that node).
	ReasonHealthCheckFailing Reason = "health_check_failing"
	// ReasonHealthCheckStale: a LoadBalancer Service with externalTrafficPolicy Local has no
	// ready endpoint on this prober's node, but kube-proxy's health check there answers 200: the
	// external load balancer sends traffic to a node that drops it (kube-proxy's view of the
	// endpoints is stale, or something else answers on the port). The nodeport stage's reason,
	// and the verdict's (proxy, on that node).
	ReasonHealthCheckStale Reason = "health_check_stale"
)

// Reasons is the closed set, for documentation and tests.
var Reasons = []Reason{
	ReasonSuccess, ReasonNotProbed,
	ReasonSelectorMatchesNoPods, ReasonTargetPortUnresolved, ReasonProtocolMismatch,
	ReasonNoEndpoints, ReasonNoReadyEndpoints,
	ReasonTimeout, ReasonNXDomain, ReasonServFail, ReasonRefused, ReasonWrongAnswer, ReasonNoAnswer,
	ReasonReset, ReasonUnreachable, ReasonHTTPStatus, ReasonPortExhausted, ReasonWrongBackend,
	ReasonBudget, ReasonError, ReasonExternalNotAllowed, ReasonNodePortUnreachable, ReasonNodePortUnreachableFromNode,
	ReasonPartial, ReasonNodeLocalDNSUnreachable, ReasonResolverUnreachable, ReasonScaledToZero,
	ReasonDeniedByNetworkPolicy, ReasonPolicyNotEvaluated, ReasonNotProgrammed, ReasonLoadBalancerUnreachable,
	ReasonHealthCheckFailing, ReasonHealthCheckStale,
}

// Outcome says whether a stage passed, failed or did not apply.
type Outcome int

const (
	// Skipped: the stage does not apply to this Service (e.g. proxy for a headless Service).
	Skipped Outcome = iota
	OK
	Failed
)

func (o Outcome) String() string {
	switch o {
	case OK:
		return "ok"
	case Failed:
		return "failed"
	}
	return "skipped"
}

// Check is one piece of evidence of a stage: what was asked, what was seen.
type Check struct {
	Subject  string        // e.g. "198.18.0.5:9376 (pod hostnames-abc)", "A hostnames.default.svc.cluster.local"
	Reason   Reason        // success or why not
	Detail   string        // what was seen, in words
	Duration time.Duration // zero for checks that open no socket
	// Pod and Addr name the endpoint a pod-stage check dialed (for per-endpoint series).
	Pod  string
	Addr string
}

// OK reports whether the check succeeded.
func (c Check) OK() bool { return c.Reason == ReasonSuccess }

// Family is an IP family of a dual-stack Service's addresses.
type Family string

const (
	FamilyIPv4 Family = "ipv4"
	FamilyIPv6 Family = "ipv6"
)

// FamilyOf is the family of an address (IPv4-mapped IPv6 counts as IPv4).
func FamilyOf(a netip.Addr) Family {
	if a.Unmap().Is4() {
		return FamilyIPv4
	}
	return FamilyIPv6
}

// Family is the IP family a check dialed (its Addr) or asked for (an A or AAAA question); ""
// when it has none (SRV, spec, endpoints).
func (c Check) Family() Family {
	if a, err := netip.ParseAddr(c.Addr); err == nil {
		return FamilyOf(a)
	}
	switch {
	case strings.HasPrefix(c.Subject, "AAAA "):
		return FamilyIPv6
	case strings.HasPrefix(c.Subject, "A "):
		return FamilyIPv4
	}
	return ""
}

// onlyFamily is the family of every failed check when a check of another family passed (a
// dual-stack Service that fails on one family only), or when every check with a family is IPv6
// (an IPv6-only Service: the family says where to look in a dual-stack cluster). "" otherwise
// (both fail, an IPv4-only Service, no family), so IPv4-only clusters see no family at all.
func onlyFamily(checks []Check) Family {
	var failed Family
	passed := map[Family]bool{}
	any4 := false
	for _, c := range checks {
		if notDialed(c.Reason) {
			continue
		}
		f := c.Family()
		any4 = any4 || f == FamilyIPv4
		if c.OK() {
			passed[f] = true
			continue
		}
		if f == "" || (failed != "" && failed != f) {
			return ""
		}
		failed = f
	}
	if failed == FamilyIPv6 && !any4 {
		return FamilyIPv6
	}
	if failed == "" {
		return ""
	}
	for f := range passed {
		if f != "" && f != failed {
			return failed
		}
	}
	return ""
}

// Result is the outcome of one stage against one Service.
type Result struct {
	Stage    Stage
	Outcome  Outcome
	Reason   Reason // ReasonSuccess when OK; the first failure otherwise
	Detail   string // one line for humans
	Hint     string // what to check next, for a failing stage
	Checks   []Check
	Duration time.Duration
	At       time.Time
	// Failing and Total count failing checks among all, e.g. 1 of 3 endpoints (degraded).
	Failing, Total int
	// SelfOnly marks a proxy result whose VIP leads only to the exporter's own Pod: its traffic
	// takes the hairpin path, so a failure there may be hairpin rather than the proxy.
	SelfOnly bool
	// FromNode marks a nodeport result dialed from the node's own network (see
	// ReasonNodePortUnreachableFromNode).
	FromNode bool
	// Family is set on a failed result whose failed checks are all of one IP family while a
	// check of the other passed (that family alone fails a dual-stack Service), or whose checks
	// are all IPv6 (an IPv6-only Service); see onlyFamily.
	Family Family
	// Intermittent marks a round in which one address answered some of its connections and
	// failed others (the proxy and nodeport stages' repeated connections): a partial failure
	// seen within one round, which no hard failure produces.
	Intermittent bool
	// PodsFailing counts the direct connections to the ready endpoints that failed when the
	// proxy stage looked closer after an intermittent round (see ProxyProber.lookCloser): the
	// VIP's failures are then the Pods', which answer some connections and not others.
	PodsFailing int
	// LookedCloser marks a proxy result whose closer look ran; with PodsFailing 0 every direct
	// connection to the Pods answered: evidence, in this round, that the Pods serve.
	LookedCloser bool
}

// Prober runs one stage against one target. Implementations must honour ctx's deadline.
type Prober interface {
	Stage() Stage
	Probe(ctx context.Context, t *discovery.Target) Result
}

// notDialed reports whether a check's reason says its address was never dialed: the SSRF guard
// refused it, a NetworkPolicy denies the exporter, or whether one does is not known here. Such
// checks neither pass nor fail.
func notDialed(r Reason) bool {
	return r == ReasonExternalNotAllowed || r == ReasonDeniedByNetworkPolicy || r == ReasonPolicyNotEvaluated
}

// skipped builds the result of a stage that does not apply.
func skipped(s Stage, why string) Result {
	return Result{Stage: s, Outcome: Skipped, Reason: ReasonNotProbed, Detail: why}
}

// fromChecks folds checks into a result: OK when every check succeeded, else the first failure's
// reason. An empty list is a skip. Checks the AddressGuard refused measured nothing: they are kept
// as evidence but neither pass nor fail, and a stage with nothing else is skipped with their reason.
func fromChecks(s Stage, checks []Check, why string) Result {
	if len(checks) == 0 {
		return skipped(s, why)
	}
	blocked := 0
	for _, c := range checks {
		if notDialed(c.Reason) {
			blocked++
		}
	}
	if blocked == len(checks) {
		// Say "not evaluated" when any check says it: "denied" (layer policy) is claimed only
		// when every endpoint is known to be denied.
		first := checks[0]
		if i := slices.IndexFunc(checks, func(c Check) bool { return c.Reason == ReasonPolicyNotEvaluated }); i >= 0 {
			first = checks[i]
		}
		r := skipped(s, first.Subject+": "+first.Detail)
		r.Reason, r.Checks = first.Reason, checks
		return r
	}
	r := Result{Stage: s, Outcome: OK, Reason: ReasonSuccess, Checks: checks, Total: len(checks) - blocked}
	for _, c := range checks {
		if notDialed(c.Reason) {
			continue
		}
		if !c.OK() {
			if r.Failing == 0 {
				r.Outcome, r.Reason, r.Detail = Failed, c.Reason, c.Subject+": "+c.Detail
			}
			r.Failing++
		}
	}
	return r
}

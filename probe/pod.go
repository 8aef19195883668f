package probe

import (
	"context"
	"fmt"
	"net/netip"
	"sort"
	"strings"
	"sync"

	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/svcprobe/svcprobe/discovery"
)

// dnsPort is the only UDP port probed: UDP has no handshake, so without an application protocol
// there is no way to tell "open" from "dropped". DNS is the one UDP protocol every cluster runs.
const dnsPort = 53

// protocolOf returns the port's protocol with the API default (TCP) applied.
func protocolOf(p discovery.Port) discovery.Protocol {
	if p.Protocol == "" {
		return "TCP"
	}
	return p.Protocol
}

// probeKind is how one port is probed.
type probeKind int

const (
	kindNone probeKind = iota // not probed (UDP other than 53, SCTP)
	kindTCP
	kindHTTP
	kindDNS
)

// kindFor chooses how to probe a Service port whose resolved number (on the Pod or the VIP) is n.
func kindFor(t *discovery.Target, p discovery.Port, n int32) (probeKind, discovery.HTTPOptions) {
	switch protocolOf(p) {
	case "TCP":
		if h, ok := t.Options.HTTPFor(p); ok {
			return kindHTTP, h
		}
		return kindTCP, discovery.HTTPOptions{}
	case "UDP":
		if n == dnsPort {
			return kindDNS, discovery.HTTPOptions{}
		}
	}
	return kindNone, discovery.HTTPOptions{}
}

// job is one socket-level probe, prepared before running so that checks keep a stable order.
type job struct {
	addr    netip.AddrPort
	host    string // HTTP Host header
	kind    probeKind
	http    discovery.HTTPOptions
	subject string
	port    int // index in the probed ports, for hints
	podName string
	// deniedBy names the NetworkPolicies that deny the exporter this address and port: the job is
	// not dialed (ReasonDeniedByNetworkPolicy).
	deniedBy string
	// notEvaluated: whether a NetworkPolicy lets the exporter in is not known on this node
	// (discovery.Endpoint.PolicyNotEvaluated): not dialed (ReasonPolicyNotEvaluated).
	notEvaluated bool
}

func (j job) run(ctx context.Context, d *Dialer) Check {
	switch j.kind {
	case kindHTTP:
		c, _ := d.HTTP(ctx, j.addr, j.host, j.http, j.subject)
		return c
	case kindDNS:
		return d.DNSUDP(ctx, j.addr, j.subject)
	}
	return d.TCP(ctx, j.addr, j.subject)
}

// runJobs runs every job concurrently and returns the checks in job order. Concurrency is bounded
// by the Dialer's Budget, which every socket goes through; goroutines merely wait for it. It is
// also where the Dialer's AddressGuard sees every address taken from t: a refused one is never
// dialed, and the Service is logged once.
func runJobs(ctx context.Context, d *Dialer, t *discovery.Target, stage Stage, jobs []job) []Check {
	checks := make([]Check, len(jobs))
	var blocked []netip.Addr
	var wg sync.WaitGroup
	for i, j := range jobs {
		if j.deniedBy != "" {
			checks[i] = Check{Subject: j.subject, Reason: ReasonDeniedByNetworkPolicy, Pod: j.podName, Addr: j.addr.Addr().String(),
				Detail: "not dialed: NetworkPolicy " + j.deniedBy + " does not allow ingress from this exporter"}
			continue
		}
		if j.notEvaluated {
			checks[i] = Check{Subject: j.subject, Reason: ReasonPolicyNotEvaluated, Pod: j.podName, Addr: j.addr.Addr().String(),
				Detail: "not dialed: the Pod runs on another node and the namespace's NetworkPolicies select Pods by labels this node agent does not watch (--node.pods=all)"}
			continue
		}
		if a := j.addr.Addr(); !d.Guard.Allowed(t, a) {
			checks[i] = blockedCheck(j.subject, a)
			checks[i].Pod, checks[i].Addr = j.podName, a.String()
			blocked = append(blocked, a)
			continue
		}
		wg.Go(func() {
			c := j.run(ctx, d)
			c.Pod, c.Addr = j.podName, j.addr.Addr().String()
			checks[i] = c
		})
	}
	wg.Wait()
	d.Guard.noteBlocked(t, stage, blocked)
	return checks
}

// subjectAddr is "ip:port", with "/udp" for UDP so that TCP and UDP 53 are told apart.
func subjectAddr(a netip.AddrPort, k probeKind) string {
	if k == kindDNS {
		return a.String() + "/udp"
	}
	return a.String()
}

// PodProber connects to every ready endpoint on every probed port (runbook: "Does the Service
// work by Pod IP?"): TCP connect, HTTP GET when the Service asks for it, a DNS query on UDP 53.
type PodProber struct {
	Dialer *Dialer
	// Spread, when above 1, spreads a Service's endpoints over that many rounds (--probe.pod.spread):
	// see spread.go. 0 or 1 dials every ready endpoint every round.
	Spread int

	mu     sync.Mutex
	spread map[types.UID]*podSpread
}

func (p *PodProber) Stage() Stage { return StagePod }

func (p *PodProber) Probe(ctx context.Context, t *discovery.Target) Result {
	if t.Kind == discovery.KindExternalName {
		return skipped(StagePod, "ExternalName Service: no Pods")
	}
	eps := t.ReadyEndpoints() // terminating and not-ready endpoints are expected not to answer
	if len(eps) == 0 {
		return skipped(StagePod, "no ready endpoints (see the endpoints stage)")
	}
	ports := t.ProbedPorts()
	jobs, unresolved := podJobs(t, eps, ports)
	why := "no TCP ports (UDP not probed)"
	if len(unresolved) > 0 {
		why = fmt.Sprintf("nothing to probe: targetPort of %s not resolved (see the spec stage); UDP is probed on port 53 only", strings.Join(dedup(unresolved), ", "))
	}
	var checks []Check
	if p.Spread > 1 && len(jobs) > 0 {
		checks = p.runSpread(ctx, t, jobs)
	} else {
		checks = runJobs(ctx, p.Dialer, t, StagePod, jobs)
	}
	r := fromChecks(StagePod, checks, why)
	if r.Outcome == Failed {
		r.Hint = podHint(ports, jobs, checks)
	}
	return r
}

// podJobs prepares one job per ready endpoint and probed port, on the endpoint's first address
// and the port the Service sends traffic to there. unresolved names the ports whose targetPort
// an endpoint does not resolve.
func podJobs(t *discovery.Target, eps []discovery.Endpoint, ports []discovery.Port) (jobs []job, unresolved []string) {
	for _, ep := range eps {
		if len(ep.Addresses) == 0 {
			continue
		}
		// An EndpointSlice's addresses are fungible: consumers use the first one.
		ip := ep.Addresses[0]
		for pi, port := range ports {
			n, ok := endpointPort(ep, port)
			if !ok {
				unresolved = append(unresolved, portRef(port))
				continue
			}
			kind, h := kindFor(t, port, n)
			if kind == kindNone {
				continue
			}
			addr := netip.AddrPortFrom(ip, uint16(n))
			subject := subjectAddr(addr, kind)
			if ep.PodName != "" {
				subject += " (pod " + ep.PodName + ")"
			}
			jobs = append(jobs, job{addr: addr, host: addr.String(), kind: kind, http: h,
				subject: subject, port: pi, podName: ep.PodName, deniedBy: ep.Denied[discovery.PortKey(port)],
				notEvaluated: ep.PolicyNotEvaluated})
		}
	}
	return jobs, unresolved
}

// endpointPort resolves the Pod port of a Service port on one endpoint: from the EndpointSlice
// (named targetPorts are resolved there per Pod), else from a numeric targetPort, else (unset
// targetPort) the Service port itself, which is what the API server defaults it to.
func endpointPort(ep discovery.Endpoint, p discovery.Port) (int32, bool) {
	if n, ok := ep.EndpointPort(p); ok && n > 0 {
		return n, true
	}
	switch {
	case p.TargetPort.Type == intstr.Int && p.TargetPort.IntVal > 0:
		return p.TargetPort.IntVal, true
	case p.TargetPort.Type == intstr.Int && p.TargetPort.IntVal == 0 && p.Port > 0:
		return p.Port, true
	}
	return 0, false // a named targetPort the slice does not resolve
}

// portRef names a Service port for humans: `port "http" (80 -> targetPort web)`.
func portRef(p discovery.Port) string {
	name := ""
	if p.Name != "" {
		name = fmt.Sprintf("%q ", p.Name)
	}
	target := p.TargetPort.String()
	if p.TargetPort.Type == intstr.Int && p.TargetPort.IntVal == 0 {
		target = fmt.Sprint(p.Port)
	}
	return fmt.Sprintf("port %s(%d -> targetPort %s)", name, p.Port, target)
}

func dedup(s []string) []string {
	sort.Strings(s)
	out := s[:0]
	for i, v := range s {
		if i == 0 || v != s[i-1] {
			out = append(out, v)
		}
	}
	return out
}

// podHint says what to look at next. When every ready endpoint refuses the same Service port,
// the Pods are up (they are ready) but nothing listens where the Service sends traffic: the
// classic targetPort/containerPort mismatch. Otherwise the failing Pods themselves are suspect.
func podHint(ports []discovery.Port, jobs []job, checks []Check) string {
	for pi, port := range ports {
		total, refused := 0, 0
		var nums []string
		for i, j := range jobs {
			if j.port != pi || notDialed(checks[i].Reason) {
				continue
			}
			total++
			if checks[i].Reason == ReasonRefused {
				refused++
				nums = append(nums, fmt.Sprint(j.addr.Port()))
			}
		}
		if total > 0 && refused == total {
			return fmt.Sprintf("Every ready endpoint refuses %s on Pod port %s: the Service's targetPort is the likely cause. "+
				"Compare it with the containerPort the process listens on (kubectl get pod -o yaml; kubectl exec <pod> -- ss -lnt).",
				portRef(port), strings.Join(dedup(nums), ","))
		}
	}
	var pods []string
	dropped, rejected := 0, 0
	for i, j := range jobs {
		if !checks[i].OK() && !notDialed(checks[i].Reason) {
			if j.podName != "" {
				pods = append(pods, j.podName)
			} else {
				pods = append(pods, j.addr.Addr().String())
			}
			switch checks[i].Reason {
			case ReasonTimeout:
				dropped++
			case ReasonRefused, ReasonReset:
				rejected++
			}
		}
	}
	hint := fmt.Sprintf("Check the failing Pods (%s): their logs (kubectl logs), restarts and readiness probe, "+
		"and whether the process listens on the port (kubectl exec <pod> -- ss -lnt).", strings.Join(dedup(pods), ", "))
	switch {
	case dropped > 0 && rejected == 0:
		// No answer at all: the SYN went unanswered, which a live Pod's kernel never does on its own.
		hint += " The connections time out (no answer, not a refusal): a firewall or a NetworkPolicy in front of the " +
			"Pod drops them, or the Pod's network is gone (kubectl get networkpolicy -n <namespace>; the node's CNI)."
	case rejected > 0 && dropped == 0:
		hint += " The connections are refused: the Pod is reachable but nothing listens on that port."
	}
	return hint
}

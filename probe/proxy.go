package probe

import (
	"context"
	"fmt"
	"net/netip"
	"slices"

	"github.com/svcprobe/svcprobe/discovery"
)

// ProxyProber connects to every ClusterIP (both families on a dual-stack Service) on every probed
// port (runbook: "Does the Service work by IP?"). It takes the same path as a client Pod on this
// node would: through kube-proxy's rules for the VIP.
type ProxyProber struct {
	Dialer *Dialer
	// Self are the exporter Pod's own addresses (empty outside a Pod). A Service whose every
	// ready endpoint is one of them is reached through the hairpin path; the result says so.
	Self []netip.Addr
}

func (p *ProxyProber) Stage() Stage { return StageProxy }

func (p *ProxyProber) Probe(ctx context.Context, t *discovery.Target) Result {
	switch {
	case t.Kind == discovery.KindExternalName:
		return skipped(StageProxy, "ExternalName Service: no virtual IP")
	case t.Kind == discovery.KindHeadless || len(t.ClusterIPs) == 0:
		return skipped(StageProxy, "headless Service: no virtual IP")
	case len(t.ReadyEndpoints()) == 0:
		// kube-proxy rejects (or drops) traffic to a VIP without endpoints; that is the
		// endpoints stage's failure, not the proxy's.
		return skipped(StageProxy, "no ready endpoints to proxy to (see the endpoints stage)")
	}
	// The Service's DNS name as Host: virtual hosts on the backend see what a client would send.
	// The cluster domain is left out on purpose: it is not known here and "svc" suffices in-cluster.
	host := t.Name + "." + t.Namespace + ".svc"
	ports := t.ProbedPorts()
	var jobs []job
	for _, ip := range t.ClusterIPs {
		for pi, port := range ports {
			kind, h := kindFor(t, port, port.Port)
			if kind == kindNone || port.Port <= 0 {
				continue
			}
			addr := netip.AddrPortFrom(ip, uint16(port.Port))
			hostHeader := host
			if port.Port != 80 {
				hostHeader = fmt.Sprintf("%s:%d", host, port.Port)
			}
			jobs = append(jobs, job{addr: addr, host: hostHeader, kind: kind, http: h,
				subject: subjectAddr(addr, kind) + " (service " + t.Key() + ")", port: pi})
		}
	}
	r := fromChecks(StageProxy, runJobs(ctx, p.Dialer, jobs), "no TCP ports (UDP not probed)")
	r.SelfOnly = p.selfOnly(t)
	if r.Outcome == Failed && r.SelfOnly {
		r.Hint = "The Service's virtual IP leads only to this exporter's own Pod, so this is the hairpin path: " +
			"a Pod reaching itself through its Service. Check the bridge port's hairpin mode (kubelet --hairpin-mode, " +
			"the CNI's hairpinMode) and that kube-proxy masquerades hairpin traffic."
	} else if r.Outcome == Failed {
		r.Hint = "The Service's virtual IP does not answer; if the pod stage passes, the Pods do, so the " +
			"translation VIP -> Pod is broken on this node. Check that kube-proxy runs here " +
			"(kubectl -n kube-system get pods -l k8s-app=kube-proxy -o wide; its logs) and that its rules " +
			"for the Service exist (iptables-save | grep " + t.Namespace + "/" + t.Name + ", the KUBE-SERVICES chain; " +
			"or ipvsadm -Ln / nft list ruleset)."
	}
	return r
}

// selfOnly reports whether every ready endpoint of t is this Pod.
func (p *ProxyProber) selfOnly(t *discovery.Target) bool {
	if len(p.Self) == 0 {
		return false
	}
	for _, e := range t.ReadyEndpoints() {
		for _, a := range e.Addresses {
			if !slices.Contains(p.Self, a.Unmap()) {
				return false
			}
		}
	}
	return true
}

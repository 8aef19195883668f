package probe

import (
	"context"
	"fmt"
	"net/netip"
	"sync"
	"time"

	"github.com/miekg/dns"
	"github.com/svcprobe/svcprobe/discovery"
)

// ClusterDNSProber checks cluster DNS itself, once per round rather than once per Service: the
// canary a Pod would use (kubernetes.default through the search list), each nameserver of
// resolv.conf (the DNS Service IP), and each DNS Pod asked directly. Comparing the last two tells
// "the DNS Service IP is not forwarded" from "DNS is down".
type ClusterDNSProber struct {
	Budget        *Budget
	Conf          ResolvConf
	ClusterDomain string // "cluster.local" when empty
	// Resolvers classifies each nameserver (the DNS Service's ClusterIP, a node-local cache, or
	// another resolver).
	Resolvers ResolverClassifier
}

// DNSServer is one Pod behind the cluster DNS Service.
type DNSServer struct {
	Name string // Pod name
	Addr netip.AddrPort
}

// PodDNSCheck is the check of one DNS Pod asked directly.
type PodDNSCheck struct {
	Name  string
	Check Check
}

// ClusterDNSResult is one round of cluster DNS checks.
type ClusterDNSResult struct {
	Canary Check   // kubernetes.default through the search list and Conf.Servers
	VIP    []Check // one per Conf.Servers entry, each asked alone, in resolv.conf order
	// Class is each VIP entry's nameserver class, in the same order.
	Class []ResolverClass
	// ServiceIPs are the cluster DNS Service's ClusterIPs when the round ran (nil when unknown).
	ServiceIPs []netip.Addr
	Pods       []PodDNSCheck // one per DNS Pod, in the order given
	At         time.Time
}

// VIPUp reports whether any resolv.conf nameserver answered.
func (r ClusterDNSResult) VIPUp() bool {
	for _, c := range r.VIP {
		if c.OK() {
			return true
		}
	}
	return false
}

// ClassOf is the class of the i-th nameserver (ResolverUnknown when not classified).
func (r ClusterDNSResult) ClassOf(i int) ResolverClass {
	if i < len(r.Class) && r.Class[i] != "" {
		return r.Class[i]
	}
	return ResolverUnknown
}

// ServiceVIPUp reports whether a nameserver that is the cluster DNS Service's ClusterIP answered:
// kube-proxy forwards at least that VIP.
func (r ClusterDNSResult) ServiceVIPUp() bool {
	for i, c := range r.VIP {
		if c.OK() && r.ClassOf(i) == ResolverService {
			return true
		}
	}
	return false
}

// unreachable reports whether a check failed the way a dead or unforwarded address fails
// (timeout, refused, unreachable), as opposed to a DNS server that answers badly.
func unreachable(c Check) bool {
	switch c.Reason {
	case ReasonTimeout, ReasonRefused, ReasonUnreachable:
		return true
	}
	return false
}

// DeadResolver reports, when every resolv.conf nameserver failed with timeout, refused or
// unreachable, which class is to blame: the DNS Service's ClusterIP when one of them is it (the
// proxy may be what broke it), else unknown when one of them is of unknown class, else a
// node-local cache when one of them is one, else another resolver. ok is false when some
// nameserver answered or failed otherwise.
func (r ClusterDNSResult) DeadResolver() (class ResolverClass, ok bool) {
	if len(r.VIP) == 0 {
		return "", false
	}
	service, unknown, nodeLocal := false, false, false
	for i, c := range r.VIP {
		if !unreachable(c) {
			return "", false
		}
		switch r.ClassOf(i) {
		case ResolverService:
			service = true
		case ResolverUnknown:
			unknown = true
		case ResolverNodeLocal:
			nodeLocal = true
		}
	}
	switch {
	case service:
		return ResolverService, true
	case unknown:
		return ResolverUnknown, true
	case nodeLocal:
		return ResolverNodeLocal, true
	}
	return ResolverOther, true
}

// PodsUp counts the DNS Pods that answered with a record. A Pod answering SERVFAIL or NXDOMAIN is
// down: it is reachable but cannot resolve the one name every cluster has.
func (r ClusterDNSResult) PodsUp() (up, total int) {
	for _, p := range r.Pods {
		if p.Check.OK() {
			up++
		}
	}
	return up, len(r.Pods)
}

// DownPods names the DNS Pods that did not answer with a record, in the order given.
func (r ClusterDNSResult) DownPods() []string {
	var out []string
	for _, p := range r.Pods {
		if !p.Check.OK() {
			out = append(out, p.Name)
		}
	}
	return out
}

// ProxySuspect reports that every resolv.conf nameserver failed with timeout, refused or
// unreachable, that they are the cluster DNS Service's ClusterIP (a node-local cache or another
// resolver is reached without kube-proxy), and that every DNS Pod answered when asked directly:
// DNS works, the way to it through the Service IP does not, which is kube-proxy's (or the CNI's
// service routing) job. REFUSED counts whether it is a refused socket or a REFUSED rcode: a DNS
// Pod that answers directly would not refuse through the Service IP unless the Service IP leads
// elsewhere. SERVFAIL and NXDOMAIN through the Service IP do not count: they mean DNS itself is
// unwell. This is only a suspicion: the verdict also wants other Services' VIPs to fail.
func (r ClusterDNSResult) ProxySuspect() bool {
	if class, ok := r.DeadResolver(); !ok || class != ResolverService {
		return false
	}
	for i := range r.VIP {
		if r.ClassOf(i) != ResolverService {
			return false
		}
	}
	// Every DNS Pod must answer directly: with one replica dead, the Service IP fails for the
	// queries kube-proxy sends to it, and that is DNS's fault, not the proxy's.
	up, total := r.PodsUp()
	return up > 0 && up == total
}

// Probe runs the checks concurrently, so a dead nameserver eating its whole timeout does not
// starve the Pod checks that tell why it is dead. Each query still takes a token from Budget;
// with a Budget concurrency below the number of checks some may wait and then report
// budget_exhausted, which ProxySuspect never takes as evidence.
func (p *ClusterDNSProber) Probe(ctx context.Context, servers []DNSServer) ClusterDNSResult {
	res := ClusterDNSResult{
		At:    time.Now(),
		VIP:   make([]Check, len(p.Conf.Servers)),
		Class: make([]ResolverClass, len(p.Conf.Servers)),
		Pods:  make([]PodDNSCheck, len(servers)),
	}
	domain := dnsClusterDomain(p.ClusterDomain)
	fqdn := "kubernetes.default.svc." + domain + "."
	// The kubernetes Service has the cluster's primary IP family, as does the DNS Service IP
	// kubelet writes into resolv.conf, so ask for that family's records.
	qtype := dns.TypeA
	if len(p.Conf.Servers) > 0 && p.Conf.Servers[0].Addr().Unmap().Is6() {
		qtype = dns.TypeAAAA
	}
	qname := dns.TypeToString[qtype]

	var wg sync.WaitGroup
	wg.Go(func() {
		l := dnsWalk(ctx, p.Budget, p.Conf.Servers, p.Conf.Candidates("kubernetes.default"), qtype)
		res.Canary = clusterDNSCheck(qname+" kubernetes.default via search path", l, true)
	})
	if p.Resolvers.ServiceIPs != nil {
		res.ServiceIPs = p.Resolvers.ServiceIPs()
	}
	for i, srv := range p.Conf.Servers {
		res.Class[i] = p.Resolvers.Classify(srv.Addr())
		wg.Go(func() {
			l := dnsWalk(ctx, p.Budget, []netip.AddrPort{srv}, []string{fqdn}, qtype)
			res.VIP[i] = clusterDNSCheck(fmt.Sprintf("%s %s @%s", qname, fqdn, srv), l, false)
		})
	}
	for i, s := range servers {
		wg.Go(func() {
			l := dnsWalk(ctx, p.Budget, []netip.AddrPort{s.Addr}, []string{fqdn}, qtype)
			c := clusterDNSCheck(fmt.Sprintf("%s %s @%s (pod %s)", qname, fqdn, s.Addr, s.Name), l, false)
			c.Pod, c.Addr = s.Name, s.Addr.String()
			res.Pods[i] = PodDNSCheck{Name: s.Name, Check: c}
		})
	}
	wg.Wait()
	return res
}

// clusterDNSCheck turns a lookup into a check: any record will do, since the prober does not know
// the kubernetes Service's IP and only cares that DNS resolves it.
func clusterDNSCheck(subject string, l dnsLookup, walk bool) Check {
	c := Check{Subject: subject, Reason: l.reason, Detail: l.detail, Duration: l.rtt}
	if l.reason == ReasonSuccess {
		var got []string
		for _, rr := range l.records {
			switch rr := rr.(type) {
			case *dns.A:
				got = append(got, rr.A.String())
			case *dns.AAAA:
				got = append(got, rr.AAAA.String())
			}
		}
		c.Detail = fmt.Sprint(got) + l.source(walk)
	}
	return c
}

// DNSServersFrom picks the DNS Pods to ask directly from the cluster DNS Service's endpoints:
// ready, not terminating, on their UDP DNS port.
func DNSServersFrom(eps []discovery.Endpoint) []DNSServer {
	var out []DNSServer
	for _, ep := range eps {
		if !ep.Ready || ep.Terminating || len(ep.Addresses) == 0 {
			continue
		}
		for _, p := range ep.Ports {
			if p.Protocol == "UDP" && (p.Port == 53 || p.Name == "dns") {
				name := ep.PodName
				if name == "" {
					name = ep.Addresses[0].String()
				}
				out = append(out, DNSServer{Name: name, Addr: netip.AddrPortFrom(ep.Addresses[0], uint16(p.Port))})
				break
			}
		}
	}
	return out
}

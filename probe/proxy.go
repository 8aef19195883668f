package probe

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"time"

	"github.com/miekg/dns"

	"github.com/svcprobe/svcprobe/discovery"
)

// maxExternalAddrs bounds how many addresses of an ExternalName's answer are dialed: a DNS answer
// is outside the Service's control and must not multiply the probe's cost.
const maxExternalAddrs = 8

// ProxyProber connects to every ClusterIP (both families on a dual-stack Service) on every probed
// port (runbook: "Does the Service work by IP?"). It takes the same path as a client Pod on this
// node would: through kube-proxy's rules for the VIP.
type ProxyProber struct {
	Dialer *Dialer
	// Self are the exporter Pod's own addresses (empty outside a Pod). A Service whose every
	// ready endpoint is one of them is reached through the hairpin path; the result says so.
	Self []netip.Addr
	// DNSServers resolve an ExternalName that is a host name (the resolv.conf nameservers, as a
	// client Pod would). Its DNS tokens come from Dialer.Budget.
	DNSServers []netip.AddrPort
	// NodeName is this Pod's node (--node-name, NODE_NAME); "" when unknown. A Service with
	// internalTrafficPolicy: Local is probed only when it names a node with a ready endpoint.
	NodeName string
	// Connections bounds the connections per round to each VIP and port: min(ready endpoints,
	// Connections), each a new one (--probe.vip-connections; 0 means 1).
	Connections int
	// Timeout bounds the closer look at the Pods (see lookCloser), which starts after the VIP's
	// connections have taken their time, often a whole timeout: it gets a timeout of its own
	// (--probe.timeout; 0 means DefaultCloserTimeout).
	Timeout time.Duration
}

// DefaultCloserTimeout is the closer look's timeout when ProxyProber.Timeout is not set.
const DefaultCloserTimeout = 2 * time.Second

func (p *ProxyProber) Stage() Stage { return StageProxy }

func (p *ProxyProber) Probe(ctx context.Context, t *discovery.Target) Result {
	switch {
	case t.Kind == discovery.KindExternalName:
		return p.probeExternalName(ctx, t)
	case t.Kind == discovery.KindHeadless || len(t.ClusterIPs) == 0:
		return skipped(StageProxy, "headless Service: no virtual IP")
	case len(t.ReadyEndpoints()) == 0:
		// kube-proxy rejects (or drops) traffic to a VIP without endpoints; that is the
		// endpoints stage's failure, not the proxy's.
		return skipped(StageProxy, "no ready endpoints to proxy to (see the endpoints stage)")
	}
	eps := t.ReadyEndpoints()
	if t.InternalTrafficLocal {
		// The VIP leads only to endpoints on the client's node (the node agents' hairpin Service):
		// on a node without one kube-proxy drops the traffic by design.
		var r Result
		if eps, r = localOnly(StageProxy, t, p.NodeName, "internalTrafficPolicy",
			"the VIP leads only to endpoints on the client's node", "the VIP is meant not to answer here"); eps == nil {
			return r
		}
	}
	if r, denied := deniedSkip(StageProxy, t, eps); denied {
		return r
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
	checks, failing, total, intermittent := runRepeated(ctx, p.Dialer, t, StageProxy, jobs, connectionsFor(len(eps), p.Connections))
	r := fromRepeated(StageProxy, checks, failing, total, intermittent, "no TCP ports (UDP not probed)")
	r.SelfOnly = leadsOnlyTo(p.Self, eps)
	if r.Outcome == Failed && r.Intermittent && !r.SelfOnly {
		p.lookCloser(ctx, t, eps, &r)
	}
	if r.PodsFailing > 0 {
		r.Hint = "Some connections to the virtual IP failed and others answered, and direct connections to the Pods " +
			"fail too: the Pods answer only part of their connections (see the pod stage). Check the failing Pod's " +
			"logs, its resources and limits, and a firewall or policy in front of it."
	} else if r.Outcome == Failed && r.SelfOnly {
		r.Hint = "The Service's virtual IP leads only to this exporter's own Pod, so this is the hairpin path: " +
			"a Pod reaching itself through its Service. Check the bridge port's hairpin mode (kubelet --hairpin-mode, " +
			"the CNI's hairpinMode) and that kube-proxy masquerades hairpin traffic."
	} else if r.Outcome == Failed {
		r.Hint = "The Service's virtual IP does not answer; if the pod stage passes, the Pods do, so the " +
			"translation VIP -> Pod is broken on this node. Check that kube-proxy runs here " +
			"(kubectl -n kube-system get pods -l k8s-app=kube-proxy -o wide; its logs) and that its rules " +
			"for the Service exist: iptables mode, iptables-save | grep " + t.Namespace + "/" + t.Name + " (the KUBE-SERVICES chain); " +
			"nftables mode, nft list map ip kube-proxy service-ips (ip6 for IPv6) and the chain service-…-" + t.Namespace + "/" + t.Name + "; " +
			"IPVS mode, ipvsadm -Ln."
	}
	return r
}

// probeExternalName connects where a client of an ExternalName Service ends up: the externalName
// itself when it is an IP address, else the addresses cluster DNS gives for it, on each probed
// port. Those addresses are whatever the Service's author (or the external zone) says, so the
// Dialer's AddressGuard decides which may be dialed; refused ones are reported, never dialed.
func (p *ProxyProber) probeExternalName(ctx context.Context, t *discovery.Target) Result {
	name := strings.TrimSuffix(strings.TrimSpace(t.ExternalName), ".")
	if name == "" {
		return skipped(StageProxy, "ExternalName Service without an externalName")
	}
	var ports []discovery.Port
	for _, port := range t.ProbedPorts() {
		if kind, _ := kindFor(t, port, port.Port); kind != kindNone && port.Port > 0 {
			ports = append(ports, port)
		}
	}
	if len(ports) == 0 {
		return skipped(StageProxy, "ExternalName Service without TCP ports: nothing to connect to (the dns stage checks its CNAME)")
	}
	addrs, failed := p.resolveExternal(ctx, name)
	if failed != nil {
		r := fromChecks(StageProxy, []Check{*failed}, "")
		r.Hint = fmt.Sprintf("The externalName %s does not resolve through the cluster's DNS (%v), so no client of the Service can connect: "+
			"check the name, and that cluster DNS forwards it upstream (the DNS server's forward/upstream configuration).", name, p.DNSServers)
		return r
	}
	var jobs []job
	for _, ip := range addrs {
		for pi, port := range ports {
			kind, h := kindFor(t, port, port.Port)
			addr := netip.AddrPortFrom(ip, uint16(port.Port))
			host := name
			if port.Port != 80 {
				host = fmt.Sprintf("%s:%d", name, port.Port)
			}
			jobs = append(jobs, job{addr: addr, host: host, kind: kind, http: h,
				subject: subjectAddr(addr, kind) + " (externalName " + name + ")", port: pi})
		}
	}
	r := fromChecks(StageProxy, runJobs(ctx, p.Dialer, t, StageProxy, jobs), "")
	if r.Outcome == Failed {
		r.Hint = fmt.Sprintf("The ExternalName Service's destination %s (%v) does not answer: check that it is up and that the cluster "+
			"may reach it (egress network policy, firewalls on the way).", name, addrs)
	}
	return r
}

// resolveExternal returns the addresses of an externalName: itself when it is an IP address, else
// its A and AAAA records (CNAME chains included) from the resolv.conf servers. When nothing
// resolves it returns the failing check instead.
func (p *ProxyProber) resolveExternal(ctx context.Context, name string) ([]netip.Addr, *Check) {
	if a, err := netip.ParseAddr(name); err == nil {
		return []netip.Addr{a.Unmap()}, nil
	}
	fqdn := dns.Fqdn(name)
	c := Check{Subject: "A/AAAA " + fqdn}
	var addrs []netip.Addr
	var why []string
	for _, qtype := range []uint16{dns.TypeA, dns.TypeAAAA} {
		ans, err := dnsAsk(ctx, p.Dialer.Budget, p.DNSServers, fqdn, qtype)
		c.Duration += ans.rtt
		switch {
		case err != nil:
			if c.Reason == "" {
				c.Reason = dnsReasonOf(err)
			}
			why = append(why, dns.TypeToString[qtype]+": "+err.Error())
			continue
		case ans.msg.Rcode != dns.RcodeSuccess:
			if c.Reason == "" {
				c.Reason = rcodeReason(ans.msg.Rcode)
			}
			why = append(why, fmt.Sprintf("%s: %s from %s", dns.TypeToString[qtype], dns.RcodeToString[ans.msg.Rcode], ans.server))
			continue
		}
		for _, rr := range dnsRecords(ans.msg, fqdn, qtype) {
			switch rr := rr.(type) {
			case *dns.A:
				if a, ok := netip.AddrFromSlice(rr.A); ok {
					addrs = append(addrs, a.Unmap())
				}
			case *dns.AAAA:
				if a, ok := netip.AddrFromSlice(rr.AAAA); ok {
					addrs = append(addrs, a)
				}
			}
		}
	}
	if addrs = sortedAddrs(addrs); len(addrs) > 0 {
		return addrs[:min(len(addrs), maxExternalAddrs)], nil
	}
	if c.Reason == "" || c.Reason == ReasonSuccess {
		c.Reason = ReasonNoAnswer
		why = append(why, "no A or AAAA record")
	}
	c.Detail = truncate(strings.Join(why, "; "), maxErrorDetail)
	return nil, &c
}

// Bounds of the closer look: endpoints, and new connections to each.
const (
	closerEndpoints   = 8
	closerConnections = 3
	closerJobs        = 16 // endpoint and port pairs, at most
)

// lookCloser tells a VIP that fails part of its connections from Pods that do. kube-proxy picks a
// backend per connection, so a Pod that drops one SYN in two fails the VIP's connections that land
// on it, in rounds where the pod stage's one connection to it happened to pass; nothing in the VIP's
// answers says which. After an intermittent round it connects to up to closerEndpoints ready
// endpoints directly, closerConnections times each: when some of those fail too, the Pods are
// failing (r.PodsFailing), and the verdict does not blame the proxy. It costs nothing in the
// rounds that pass or fail hard.
func (p *ProxyProber) lookCloser(ctx context.Context, t *discovery.Target, eps []discovery.Endpoint, r *Result) {
	jobs, _ := podJobs(t, eps[:min(len(eps), closerEndpoints)], t.ProbedPorts())
	jobs = jobs[:min(len(jobs), closerJobs)] // a Service of many ports: bounded all the same
	if len(jobs) == 0 || errors.Is(ctx.Err(), context.Canceled) {
		return
	}
	// A timeout of its own: the stage's deadline is spent by the VIP's connections that timed
	// out, and a direct connection failing for want of time would blame the Pods. Shutdown (the
	// parent cancelled) still ends it.
	timeout := p.Timeout
	if timeout <= 0 {
		timeout = DefaultCloserTimeout
	}
	cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), timeout)
	defer cancel()
	stop := context.AfterFunc(ctx, func() {
		if errors.Is(ctx.Err(), context.Canceled) {
			cancel()
		}
	})
	defer stop()
	checks, failing, total, _ := runRepeated(cctx, p.Dialer, t, StagePod, jobs, closerConnections)
	r.LookedCloser = total > 0
	if failing == 0 {
		r.Detail += fmt.Sprintf("; %d direct connections to %d Pods all answered", total, len(jobs))
		return
	}
	r.PodsFailing = failing
	for _, c := range checks {
		if !c.OK() {
			r.Detail += fmt.Sprintf("; direct connections to the Pods failed too (%d of %d): %s", failing, total, c.Subject+": "+c.Detail)
			break
		}
	}
}

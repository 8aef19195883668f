package probe

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"time"

	"github.com/miekg/dns"

	"github.com/svcprobe/svcprobe/discovery"
)

const (
	// defaultDNSAttemptTimeout bounds one query when the caller's context has no deadline; it is
	// glibc's default "options timeout:5".
	defaultDNSAttemptTimeout = 5 * time.Second
	// dnsUDPSize is the EDNS0 buffer we advertise: a headless Service with a few dozen endpoints
	// fits in one datagram, and replies stay below the size where IP fragmentation starts.
	dnsUDPSize = 1232
	// defaultClusterDomain is kubelet's default --cluster-domain.
	defaultClusterDomain = "cluster.local"
)

// DNSProber checks that cluster DNS publishes a Service the way the Kubernetes DNS specification
// says: A/AAAA records with the cluster IPs (endpoint addresses for headless Services), a CNAME
// for ExternalName Services, SRV records for named ports, and the same answers through the
// resolv.conf search list that Pods use for short names.
//
// It asks only names inside the cluster domain and never follows a CNAME out of it.
type DNSProber struct {
	Budget        *Budget    // every datagram and TCP retry takes a DNS token from it
	Conf          ResolvConf // the prober Pod's resolv.conf: servers in order, search list, ndots
	ClusterDomain string     // "cluster.local" when empty
	// Resolvers classifies the nameservers, so that a hint names a node-local cache or a resolver
	// that is not the DNS Service when that is what does not answer.
	Resolvers ResolverClassifier
}

// Stage implements Prober.
func (p *DNSProber) Stage() Stage { return StageDNS }

// resolverHint names the nameservers when none of them is the cluster DNS Service: a node-local
// cache or another resolver. "" when one is (or may be) the DNS Service: the usual hints apply.
func (p *DNSProber) resolverHint() string {
	if len(p.Conf.Servers) == 0 {
		return ""
	}
	nodeLocal := true
	for _, s := range p.Conf.Servers {
		switch p.Resolvers.Classify(s.Addr()) {
		case ResolverService, ResolverUnknown:
			return ""
		case ResolverOther:
			nodeLocal = false
		}
	}
	if nodeLocal {
		return fmt.Sprintf(nodeLocalHint, p.Conf.Servers)
	}
	return fmt.Sprintf(resolverHint, p.Conf.Servers)
}

// dnsStageCheck is a check plus whether it went through the search list, which the hint needs to
// tell a broken search list from a broken record.
type dnsStageCheck struct {
	Check
	searchPath bool
}

// Probe implements Prober. Queries are sent one after another in a fixed order (records, search
// path, SRV) so the checks come out in the same order every round.
func (p *DNSProber) Probe(ctx context.Context, t *discovery.Target) Result {
	start := time.Now()
	var checks []dnsStageCheck
	switch t.Kind {
	case discovery.KindExternalName:
		if t.ExternalName == "" {
			return dnsSkipped(StageDNS, "the Service has no externalName to publish", start)
		}
		checks = p.externalNameChecks(ctx, t)
	case discovery.KindHeadless:
		want := publishedAddresses(t)
		if len(want) == 0 {
			// Nothing to publish is the endpoints stage's finding; failing here would blame DNS.
			return dnsSkipped(StageDNS, "no ready endpoints to publish", start)
		}
		checks = p.addressChecks(ctx, t, want, true)
	default:
		if len(t.ClusterIPs) == 0 {
			return dnsSkipped(StageDNS, "the Service has no cluster IP to publish", start)
		}
		checks = p.addressChecks(ctx, t, t.ClusterIPs, false)
	}

	plain := make([]Check, len(checks))
	for i, c := range checks {
		plain[i] = c.Check
	}
	r := fromChecks(StageDNS, plain, "no DNS record to check")
	r.At = start
	if r.Outcome == Failed {
		r.Hint = p.hint(t, checks)
	}
	return r
}

func dnsSkipped(s Stage, why string, at time.Time) Result {
	r := skipped(s, why)
	r.At = at
	return r
}

func (p *DNSProber) domain() string { return dnsClusterDomain(p.ClusterDomain) }

func dnsClusterDomain(d string) string {
	if d = strings.Trim(d, "."); d == "" {
		return defaultClusterDomain
	}
	return d
}

// serviceFQDN is the name the DNS specification gives a Service: <name>.<ns>.svc.<domain>.
func serviceFQDN(t *discovery.Target, domain string) string {
	return t.Name + "." + t.Namespace + ".svc." + domain + "."
}

// publishedAddresses is what DNS should return for a headless Service: the ready endpoints, or
// all of them when publishNotReadyAddresses is set (the EndpointSlice controller then marks every
// address ready, terminating ones included, so DNS publishes them all).
func publishedAddresses(t *discovery.Target) []netip.Addr {
	eps := t.ReadyEndpoints()
	if t.PublishNotReadyAddresses {
		eps = t.Endpoints
	}
	var out []netip.Addr
	for _, e := range eps {
		out = append(out, e.Addresses...)
	}
	return out
}

// addressChecks asks A and/or AAAA for the Service's FQDN (only the families it has, so a
// single-stack Service is not failed for an empty AAAA), then the short name through the search
// list, then SRV for the named ports.
func (p *DNSProber) addressChecks(ctx context.Context, t *discovery.Target, want []netip.Addr, headless bool) []dnsStageCheck {
	fqdn := serviceFQDN(t, p.domain())
	v4, v6 := splitFamilies(want)
	if len(v4) == 0 && len(v6) == 0 {
		return nil
	}
	// The search list below ends at the FQDN asked here: one question, asked once per round.
	memo := dnsMemo{}
	var out []dnsStageCheck
	if len(v4) > 0 {
		out = append(out, dnsStageCheck{Check: p.addrCheck(ctx, memo, "A "+fqdn, []string{fqdn}, dns.TypeA, v4)})
	}
	if len(v6) > 0 {
		out = append(out, dnsStageCheck{Check: p.addrCheck(ctx, memo, "AAAA "+fqdn, []string{fqdn}, dns.TypeAAAA, v6)})
	}

	// The search list does not depend on the record type, so one family is enough: the
	// Service's primary one (the first cluster IP), IPv4 for a dual-stack headless Service.
	qtype, fam := dns.TypeA, v4
	if len(v4) == 0 || (!headless && t.ClusterIPs[0].Unmap().Is6()) {
		qtype, fam = dns.TypeAAAA, v6
	}
	short := t.Name + "." + t.Namespace
	subject := fmt.Sprintf("%s %s via search path", dns.TypeToString[qtype], short)
	out = append(out, dnsStageCheck{Check: p.addrCheck(ctx, memo, subject, p.Conf.Candidates(short), qtype, fam), searchPath: true})

	return append(out, p.srvChecks(ctx, t, fqdn, headless)...)
}

// addrCheck walks names for qtype and compares the addresses with want, as sets.
func (p *DNSProber) addrCheck(ctx context.Context, memo dnsMemo, subject string, names []string, qtype uint16, want []netip.Addr) Check {
	l := dnsWalkMemo(ctx, p.Budget, p.Conf.Servers, names, qtype, memo)
	c := Check{Subject: subject, Duration: l.rtt}
	if l.reason != ReasonSuccess {
		c.Reason, c.Detail = l.reason, l.detail
		return c
	}
	var got []netip.Addr
	for _, rr := range l.records {
		switch rr := rr.(type) {
		case *dns.A:
			if a, ok := netip.AddrFromSlice(rr.A); ok {
				got = append(got, a.Unmap())
			}
		case *dns.AAAA:
			if a, ok := netip.AddrFromSlice(rr.AAAA); ok {
				got = append(got, a)
			}
		}
	}
	got = sortedAddrs(got)
	if !slices.Equal(got, want) {
		c.Reason, c.Detail = ReasonWrongAnswer, fmt.Sprintf("got %v want %v", got, want)
	} else {
		c.Reason, c.Detail = ReasonSuccess, fmt.Sprintf("%v", got)
	}
	c.Detail += l.source(len(names) > 1)
	return c
}

// srvChecks asks SRV for each named TCP/UDP port among the probed ports. For a ClusterIP-style
// Service the record must carry the Service port; for a headless one it carries each endpoint's
// target port, which may differ per Pod, so any non-zero port will do.
func (p *DNSProber) srvChecks(ctx context.Context, t *discovery.Target, fqdn string, headless bool) []dnsStageCheck {
	var out []dnsStageCheck
	for _, port := range t.ProbedPorts() {
		proto := strings.ToLower(string(port.Protocol))
		if proto == "" {
			proto = "tcp" // the API server's default
		}
		if port.Name == "" || (proto != "tcp" && proto != "udp") {
			continue
		}
		name := "_" + port.Name + "._" + proto + "." + fqdn
		l := dnsWalk(ctx, p.Budget, p.Conf.Servers, []string{name}, dns.TypeSRV)
		c := Check{Subject: "SRV " + name, Duration: l.rtt}
		if l.reason != ReasonSuccess {
			c.Reason, c.Detail = l.reason, l.detail
			out = append(out, dnsStageCheck{Check: c})
			continue
		}
		var ports []uint16
		for _, rr := range l.records {
			if srv, ok := rr.(*dns.SRV); ok {
				ports = append(ports, srv.Port)
			}
		}
		slices.Sort(ports)
		ports = slices.Compact(ports)
		switch {
		case headless && slices.ContainsFunc(ports, func(n uint16) bool { return n != 0 }):
			c.Reason, c.Detail = ReasonSuccess, fmt.Sprintf("ports %v", ports)
		case headless:
			c.Reason, c.Detail = ReasonWrongAnswer, fmt.Sprintf("got ports %v want a non-zero port", ports)
		case slices.Contains(ports, uint16(port.Port)):
			c.Reason, c.Detail = ReasonSuccess, fmt.Sprintf("port %d", port.Port)
		default:
			c.Reason, c.Detail = ReasonWrongAnswer, fmt.Sprintf("got ports %v want %d", ports, port.Port)
		}
		c.Detail += l.source(false)
		out = append(out, dnsStageCheck{Check: c})
	}
	return out
}

// externalNameChecks asks CNAME for the FQDN and for the short name through the search list. The
// CNAME is compared, never followed: where it points is outside the cluster and not ours to query.
func (p *DNSProber) externalNameChecks(ctx context.Context, t *discovery.Target) []dnsStageCheck {
	fqdn := serviceFQDN(t, p.domain())
	short := t.Name + "." + t.Namespace
	return []dnsStageCheck{
		{Check: p.cnameCheck(ctx, "CNAME "+fqdn, []string{fqdn}, t.ExternalName)},
		{Check: p.cnameCheck(ctx, "CNAME "+short+" via search path", p.Conf.Candidates(short), t.ExternalName), searchPath: true},
	}
}

func (p *DNSProber) cnameCheck(ctx context.Context, subject string, names []string, want string) Check {
	l := dnsWalk(ctx, p.Budget, p.Conf.Servers, names, dns.TypeCNAME)
	c := Check{Subject: subject, Duration: l.rtt}
	if l.reason != ReasonSuccess {
		c.Reason, c.Detail = l.reason, l.detail
		return c
	}
	var got []string
	for _, rr := range l.records {
		if cn, ok := rr.(*dns.CNAME); ok {
			got = append(got, cn.Target)
		}
	}
	if len(got) == 1 && sameName(got[0], want) {
		c.Reason, c.Detail = ReasonSuccess, got[0]
	} else {
		c.Reason, c.Detail = ReasonWrongAnswer, fmt.Sprintf("got %v want [%s]", got, dns.Fqdn(want))
	}
	c.Detail += l.source(len(names) > 1)
	return c
}

// sameName compares DNS names the way DNS does: case-insensitively, with or without the root dot.
func sameName(a, b string) bool {
	return strings.EqualFold(strings.TrimSuffix(a, "."), strings.TrimSuffix(b, "."))
}

// hint says where to look next. A failure of the search path alone points at resolv.conf; every
// query timing out points at cluster DNS as a whole; otherwise the first failure decides.
func (p *DNSProber) hint(t *discovery.Target, checks []dnsStageCheck) string {
	var first *dnsStageCheck
	searchOnly, allTimeout := true, true
	for i := range checks {
		c := &checks[i]
		if c.OK() {
			allTimeout = false
			continue
		}
		if first == nil {
			first = c
		}
		if !c.searchPath {
			searchOnly = false
		}
		if c.Reason != ReasonTimeout {
			allTimeout = false
		}
	}
	if first == nil {
		return ""
	}
	if first.Reason == ReasonBudget {
		return "the prober's own DNS query budget ran out before asking; this says nothing about the Service: raise the DNS QPS budget or lengthen the probe interval"
	}
	if searchOnly {
		return fmt.Sprintf("the full name resolves but %s.%s does not through the search list: a Pod's resolv.conf should search %s.svc.%s, svc.%s and %s with ndots:5; this one searches %v with ndots:%d",
			t.Name, t.Namespace, t.Namespace, p.domain(), p.domain(), p.domain(), p.Conf.Search, p.Conf.Ndots)
	}
	if allTimeout || first.Reason == ReasonRefused || first.Reason == ReasonUnreachable {
		if h := p.resolverHint(); h != "" {
			return h
		}
	}
	if allTimeout {
		return fmt.Sprintf("no DNS server replied (%v): check from a Pod whether kubernetes.default resolves at all, and whether the DNS Pods (k8s-app=kube-dns in kube-system) are Running and Ready; if they answer when asked directly, kube-proxy is not forwarding the DNS Service IP", p.Conf.Servers)
	}
	switch first.Reason {
	case ReasonTimeout:
		return "some queries got no reply in time: a DNS Pod may be overloaded or unreachable while the others work; compare the cluster DNS health and the DNS Pods' restarts and CPU throttling"
	case ReasonNXDomain:
		return fmt.Sprintf("DNS does not know this name: check that the Service exists under this name in namespace %s, that the cluster domain really is %s, and that the DNS Pods' logs show no errors watching the API server", t.Namespace, p.domain())
	case ReasonServFail:
		return "the DNS server failed to answer: read the DNS Pods' logs for API server or upstream errors, and check their readiness"
	case ReasonRefused:
		return fmt.Sprintf("the DNS server refused, or nothing listens where resolv.conf points (%v): check that the nameserver is the cluster DNS Service IP and that the DNS server serves the %s zone", p.Conf.Servers, p.domain())
	case ReasonWrongAnswer:
		return "DNS answers with something other than what the Service holds now: the Service may have been deleted and recreated with a new IP (or its externalName or ports changed) while a cache, in the DNS Pods or a node-local cache, still serves the old record; it should clear within the record TTL"
	case ReasonNoAnswer:
		return "the name exists but has no record of the asked type: for SRV, check the port's name and protocol; for A or AAAA, check the Service's IP families against what the DNS server publishes"
	case ReasonUnreachable:
		return fmt.Sprintf("the DNS server (%v) is unreachable from the prober: check the routes to the DNS Service IP and any network policy on egress to port 53", p.Conf.Servers)
	}
	return "the DNS exchange failed unexpectedly; the check details carry the error"
}

// splitFamilies returns the IPv4 and IPv6 addresses of addrs, each sorted and without duplicates.
func splitFamilies(addrs []netip.Addr) (v4, v6 []netip.Addr) {
	for _, a := range addrs {
		if a = a.Unmap(); a.Is4() {
			v4 = append(v4, a)
		} else if a.IsValid() {
			v6 = append(v6, a)
		}
	}
	return sortedAddrs(v4), sortedAddrs(v6)
}

func sortedAddrs(a []netip.Addr) []netip.Addr {
	slices.SortFunc(a, netip.Addr.Compare)
	return slices.Compact(a)
}

// dnsLookup is the outcome of asking one record type at a list of candidate names.
type dnsLookup struct {
	reason  Reason         // success when some candidate had records of the type
	detail  string         // why not, for a failure
	name    string         // the candidate that ended the walk
	server  netip.AddrPort // who answered it
	records []dns.RR       // records of the asked type
	passed  []string       // candidates passed over, with why
	rtt     time.Duration  // time spent waiting for replies, budget waits excluded
}

// source says who answered, and for a search walk which candidate it was and what came before.
func (l dnsLookup) source(walk bool) string {
	s := " from " + l.server.String()
	if walk {
		s += " for " + l.name
		if len(l.passed) > 0 {
			s += " after " + strings.Join(l.passed, ", ")
		}
	}
	return s
}

// dnsWalk asks for qtype at each name in order and stops at the first name that has records of
// that type or fails with anything other than NXDOMAIN or an empty NOERROR, which is how glibc
// walks the search list.
func dnsWalk(ctx context.Context, b *Budget, servers []netip.AddrPort, names []string, qtype uint16) dnsLookup {
	return dnsWalkMemo(ctx, b, servers, names, qtype, nil)
}

// dnsMemo holds the answers of one stage run, so that a question asked twice in it (the search
// list ends at the FQDN the stage has just asked) is sent once. Only one goroutine uses it.
type dnsMemo map[dnsQuestion]dnsMemoEntry

type dnsQuestion struct {
	name  string
	qtype uint16
}

type dnsMemoEntry struct {
	ans dnsAnswer
	err error
}

// ask is dnsAsk through the memo (a nil memo asks every time). A reused answer adds no time.
func (m dnsMemo) ask(ctx context.Context, b *Budget, servers []netip.AddrPort, name string, qtype uint16) (dnsAnswer, error) {
	k := dnsQuestion{strings.ToLower(name), qtype}
	if e, ok := m[k]; ok {
		e.ans.rtt = 0
		return e.ans, e.err
	}
	ans, err := dnsAsk(ctx, b, servers, name, qtype)
	if m != nil && dnsReasonOf(err) != ReasonBudget {
		m[k] = dnsMemoEntry{ans, err}
	}
	return ans, err
}

// dnsWalkMemo is dnsWalk asking through memo.
func dnsWalkMemo(ctx context.Context, b *Budget, servers []netip.AddrPort, names []string, qtype uint16, memo dnsMemo) dnsLookup {
	var l dnsLookup
	if len(names) == 0 {
		l.reason, l.detail = ReasonError, "no name to ask"
		return l
	}
	nodata := false
	for _, name := range names {
		l.name = name
		ans, err := memo.ask(ctx, b, servers, name, qtype)
		l.rtt += ans.rtt
		if err != nil {
			l.reason, l.detail = dnsReasonOf(err), err.Error()
			if len(names) > 1 {
				l.detail = name + ": " + l.detail
			}
			return l
		}
		l.server = ans.server
		switch rc := ans.msg.Rcode; rc {
		case dns.RcodeSuccess:
			if l.records = dnsRecords(ans.msg, name, qtype); len(l.records) > 0 {
				l.reason = ReasonSuccess
				return l
			}
			nodata = true
			l.passed = append(l.passed, fmt.Sprintf("%s (no %s record)", name, dns.TypeToString[qtype]))
		case dns.RcodeNameError:
			l.passed = append(l.passed, name+" (NXDOMAIN)")
		default:
			l.reason = rcodeReason(rc)
			l.detail = fmt.Sprintf("%s from %s", dns.RcodeToString[rc], ans.server)
			if len(names) > 1 {
				l.detail = name + ": " + l.detail
			}
			return l
		}
	}
	// Nothing had records. Like glibc, "no data" wins over "no such name" when any name existed.
	l.reason = ReasonNXDomain
	if nodata {
		l.reason = ReasonNoAnswer
	}
	l.detail = strings.Join(l.passed, ", ") + " from " + l.server.String()
	return l
}

// dnsRecords picks the records of qtype from the answer section. Addresses may hang off a CNAME
// chain, so their owner is not checked; CNAME and SRV records must be for the name asked.
func dnsRecords(m *dns.Msg, name string, qtype uint16) []dns.RR {
	var out []dns.RR
	for _, rr := range m.Answer {
		h := rr.Header()
		if h.Rrtype != qtype {
			continue
		}
		if qtype != dns.TypeA && qtype != dns.TypeAAAA && !sameName(h.Name, name) {
			continue
		}
		out = append(out, rr)
	}
	return out
}

func rcodeReason(rcode int) Reason {
	switch rcode {
	case dns.RcodeSuccess:
		return ReasonSuccess
	case dns.RcodeNameError:
		return ReasonNXDomain
	case dns.RcodeServerFailure:
		return ReasonServFail
	case dns.RcodeRefused:
		return ReasonRefused
	}
	return ReasonError
}

// dnsAnswer is a reply to one question and who gave it.
type dnsAnswer struct {
	msg    *dns.Msg
	server netip.AddrPort
	rtt    time.Duration // over every server tried
}

// dnsError is a question that got no reply, with the reason it is reported under.
type dnsError struct {
	reason Reason
	err    error
}

func (e *dnsError) Error() string { return e.err.Error() }
func (e *dnsError) Unwrap() error { return e.err }

// dnsReasonOf maps an exchange error to a reason: a failure already judged by dnsAsk keeps its
// reason, anything else goes through the package's shared classification.
func dnsReasonOf(err error) Reason {
	var de *dnsError
	if errors.As(err, &de) {
		return de.reason
	}
	r, _ := classify(err)
	return r
}

// dnsAsk sends one question to servers in order, like a stub resolver: the next server is asked
// only when the previous one gave no reply at all (timeout, socket error); any reply, SERVFAIL
// and REFUSED included, is final. Each datagram and each TCP retry takes a token from b, so the
// DNS QPS budget holds however many servers and retries a question needs.
func dnsAsk(ctx context.Context, b *Budget, servers []netip.AddrPort, name string, qtype uint16) (dnsAnswer, error) {
	var ans dnsAnswer
	if b == nil {
		return ans, &dnsError{ReasonError, errors.New("no probe budget configured")}
	}
	if len(servers) == 0 {
		return ans, &dnsError{ReasonError, errors.New("no DNS server configured")}
	}
	q := new(dns.Msg)
	q.SetQuestion(name, qtype)
	q.SetEdns0(dnsUDPSize, false)

	var firstReason Reason
	var failures []string
	for i, srv := range servers {
		if ctx.Err() != nil {
			// Do not take a budget token for a query that cannot be waited for.
			if firstReason == "" {
				firstReason = ReasonTimeout
			}
			failures = append(failures, srv.String()+": not asked, the probe deadline had passed")
			continue
		}
		msg, rtt, err := dnsAskServer(ctx, b, srv, q, len(servers)-i)
		ans.rtt += rtt
		if err == nil {
			ans.msg, ans.server = msg, srv
			return ans, nil
		}
		reason := dnsReasonOf(err)
		if reason == ReasonBudget {
			// Our own limit, not the server's fault: another server would not help.
			return ans, &dnsError{ReasonBudget, err}
		}
		if firstReason == "" {
			firstReason = reason
		}
		_, words := classify(err)
		failures = append(failures, srv.String()+": "+words)
	}
	// The first server's failure names the reason: it is the one every Pod asks first.
	return ans, &dnsError{firstReason, errors.New(strings.Join(failures, "; "))}
}

// dnsAskServer asks one server over UDP and again over TCP when the reply is truncated.
func dnsAskServer(ctx context.Context, b *Budget, srv netip.AddrPort, q *dns.Msg, serversLeft int) (*dns.Msg, time.Duration, error) {
	release, err := b.DNS(ctx)
	if err != nil {
		return nil, 0, fmt.Errorf("%w: %w", errBudget, err)
	}
	// Split what is left of the deadline among the servers still to try, so a dead first server
	// leaves time for the next one, as resolv.conf's per-server timeout does. The budget wait
	// above uses the whole deadline: waiting for our own budget is not the server's slowness.
	actx, cancel := dnsAttemptContext(ctx, serversLeft)
	defer cancel()
	start := time.Now()
	r, err := dnsExchange(actx, "udp", srv, q)
	rtt := time.Since(start)
	release()
	if err != nil || !r.Truncated {
		return r, rtt, err
	}

	release, err = b.DNS(actx)
	if err != nil {
		return nil, rtt, fmt.Errorf("TCP retry after a truncated reply: %w: %w", errBudget, err)
	}
	defer release()
	start = time.Now()
	r, err = dnsExchange(actx, "tcp", srv, q)
	rtt += time.Since(start)
	if err != nil {
		return nil, rtt, fmt.Errorf("TCP retry after a truncated reply: %w", err)
	}
	return r, rtt, nil
}

func dnsAttemptContext(ctx context.Context, serversLeft int) (context.Context, context.CancelFunc) {
	dl, ok := ctx.Deadline()
	if !ok {
		return context.WithTimeout(ctx, defaultDNSAttemptTimeout)
	}
	return context.WithTimeout(ctx, time.Until(dl)/time.Duration(max(serversLeft, 1)))
}

// dnsExchange is one exchange over network ("udp" or "tcp"), bounded by ctx's deadline alone.
func dnsExchange(ctx context.Context, network string, srv netip.AddrPort, q *dns.Msg) (*dns.Msg, error) {
	dl, _ := ctx.Deadline()
	left := time.Until(dl)
	if left <= 0 {
		return nil, context.DeadlineExceeded
	}
	// Setting Timeout replaces miekg/dns's 2s default, which would otherwise cap the deadline.
	c := dns.Client{Net: network, Timeout: left}
	r, _, err := c.ExchangeContext(ctx, q, srv.String())
	if err != nil {
		return nil, err
	}
	// miekg/dns matches the ID only; a reply to another question is not an answer to ours.
	if len(r.Question) > 0 {
		got, want := r.Question[0], q.Question[0]
		if got.Qtype != want.Qtype || !sameName(got.Name, want.Name) {
			return nil, fmt.Errorf("reply is for %s %s, not the question asked", dns.TypeToString[got.Qtype], got.Name)
		}
	}
	return r, nil
}

package probe

import (
	"context"
	"net"
	"net/netip"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/svcprobe/svcprobe/discovery"
)

// fakeDNS is an in-process DNS server on loopback. It answers from rrs, NXDOMAIN for names it
// does not know, and can be told to force an rcode, to stay silent, or to truncate UDP replies.
type fakeDNS struct {
	mu        sync.Mutex
	rrs       map[string][]dns.RR // by lower-case owner name
	rcode     map[string]int      // forced rcode by lower-case owner name
	allRcode  int                 // forced rcode for every name when non-zero
	silent    bool                // never reply: a dead server
	truncUDP  bool                // reply over UDP with TC set and no records
	questions []string            // "TYPE name" of every question received, UDP and TCP
	overTCP   int                 // how many of them came over TCP
}

func newFakeDNS(t *testing.T, records ...string) *fakeDNS {
	t.Helper()
	f := &fakeDNS{rrs: map[string][]dns.RR{}, rcode: map[string]int{}}
	for _, s := range records {
		f.add(t, s)
	}
	return f
}

func (f *fakeDNS) add(t *testing.T, record string) {
	t.Helper()
	rr, err := dns.NewRR(record)
	if err != nil {
		t.Fatalf("bad test record %q: %v", record, err)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	name := strings.ToLower(rr.Header().Name)
	f.rrs[name] = append(f.rrs[name], rr)
}

func (f *fakeDNS) force(name string, rcode int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.rcode[strings.ToLower(name)] = rcode
}

func (f *fakeDNS) tcpCount() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.overTCP
}

func (f *fakeDNS) asked() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.questions...)
}

func (f *fakeDNS) ServeDNS(w dns.ResponseWriter, req *dns.Msg) {
	if len(req.Question) != 1 {
		return
	}
	q := req.Question[0]
	name := strings.ToLower(q.Name)
	_, udp := w.RemoteAddr().(*net.UDPAddr)

	f.mu.Lock()
	f.questions = append(f.questions, dns.TypeToString[q.Qtype]+" "+name)
	if !udp {
		f.overTCP++
	}
	silent, trunc, all := f.silent, f.truncUDP && udp, f.allRcode
	forced, isForced := f.rcode[name]
	rrs := f.rrs[name]
	f.mu.Unlock()

	if silent {
		return
	}
	m := new(dns.Msg)
	m.SetReply(req)
	m.Authoritative = true
	switch {
	case all != 0:
		m.Rcode = all
	case isForced:
		m.Rcode = forced
	case trunc:
		m.Truncated = true
	case len(rrs) == 0:
		m.Rcode = dns.RcodeNameError
	default:
		for _, rr := range rrs {
			if rr.Header().Rrtype == q.Qtype {
				m.Answer = append(m.Answer, dns.Copy(rr))
			}
		}
	}
	_ = w.WriteMsg(m)
}

// serveFakeDNS starts f on a fresh UDP port of 127.0.0.1 and stops it when the test ends.
func serveFakeDNS(t *testing.T, f *fakeDNS) netip.AddrPort {
	t.Helper()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("listen udp: %v", err)
	}
	startDNSServer(t, &dns.Server{PacketConn: pc, Handler: f})
	return pc.LocalAddr().(*net.UDPAddr).AddrPort()
}

// serveFakeDNSWithTCP also listens on TCP on the same port number, for truncation retries.
func serveFakeDNSWithTCP(t *testing.T, f *fakeDNS) netip.AddrPort {
	t.Helper()
	addr := serveFakeDNS(t, f)
	l, err := net.Listen("tcp", addr.String())
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("TCP port %d is taken, cannot pair it with the UDP one: %v", addr.Port(), err)
		}
		t.Skipf("TCP port %d is taken, cannot pair it with the UDP one: %v", addr.Port(), err)
	}
	startDNSServer(t, &dns.Server{Listener: l, Handler: f})
	return addr
}

func startDNSServer(t *testing.T, srv *dns.Server) {
	t.Helper()
	started := make(chan struct{})
	srv.NotifyStartedFunc = func() { close(started) }
	done := make(chan error, 1)
	go func() { done <- srv.ActivateAndServe() }()
	select {
	case <-started:
	case err := <-done:
		t.Fatalf("DNS server did not start: %v", err)
	}
	t.Cleanup(func() {
		if err := srv.Shutdown(); err != nil {
			t.Errorf("DNS server shutdown: %v", err)
		}
		<-done
	})
}

// closedUDPPort returns a loopback UDP address nothing listens on, so a query gets ECONNREFUSED.
func closedUDPPort(t *testing.T) netip.AddrPort {
	t.Helper()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("listen udp: %v", err)
	}
	addr := pc.LocalAddr().(*net.UDPAddr).AddrPort()
	if err := pc.Close(); err != nil {
		t.Fatalf("close: %v", err)
	}
	return addr
}

func testBudget(t *testing.T) *Budget {
	t.Helper()
	b, err := NewBudget(BudgetConfig{Concurrency: 8, DNSQPS: 10000, NewConnsPerSecond: 10000})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// kubeletConf is what kubelet writes for a Pod in namespace default with ClusterFirst.
func kubeletConf(servers ...netip.AddrPort) ResolvConf {
	return ResolvConf{
		Servers: servers,
		Search:  []string{"default.svc.cluster.local", "svc.cluster.local", "cluster.local"},
		Ndots:   5,
	}
}

func dnsCtx(t *testing.T, d time.Duration) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

func clusterIPTarget(ips ...string) *discovery.Target {
	t := &discovery.Target{Namespace: "default", Name: "hostnames", Kind: discovery.KindClusterIP}
	for _, s := range ips {
		t.ClusterIPs = append(t.ClusterIPs, netip.MustParseAddr(s))
	}
	return t
}

// Test data addresses come from the documentation ranges; nothing ever connects to them, they
// only travel inside DNS answers.
const fqdnHostnames = "hostnames.default.svc.cluster.local."

func runDNSProbe(t *testing.T, conf ResolvConf, target *discovery.Target, timeout time.Duration) Result {
	t.Helper()
	p := &DNSProber{Budget: testBudget(t), Conf: conf, ClusterDomain: "cluster.local"}
	if p.Stage() != StageDNS {
		t.Fatalf("Stage() = %q", p.Stage())
	}
	return p.Probe(dnsCtx(t, timeout), target)
}

// findCheck returns the check with this exact subject, else the first whose subject contains it.
func findCheck(t *testing.T, r Result, subjectPart string) Check {
	t.Helper()
	for _, c := range r.Checks {
		if c.Subject == subjectPart {
			return c
		}
	}
	for _, c := range r.Checks {
		if strings.Contains(c.Subject, subjectPart) {
			return c
		}
	}
	t.Fatalf("no check with %q in its subject among %+v", subjectPart, r.Checks)
	return Check{}
}

func wantOK(t *testing.T, r Result) {
	t.Helper()
	if r.Outcome != OK || r.Reason != ReasonSuccess || r.Failing != 0 {
		t.Fatalf("want ok, got %s %s %q (hint %q) checks %+v", r.Outcome, r.Reason, r.Detail, r.Hint, r.Checks)
	}
}

func wantFailed(t *testing.T, r Result, reason Reason) {
	t.Helper()
	if r.Outcome != Failed || r.Reason != reason {
		t.Fatalf("want failed %s, got %s %s %q checks %+v", reason, r.Outcome, r.Reason, r.Detail, r.Checks)
	}
	if r.Hint == "" {
		t.Errorf("a failed stage needs a hint")
	}
}

func TestDNSClusterIPSuccess(t *testing.T) {
	f := newFakeDNS(t, fqdnHostnames+" 5 IN A 192.0.2.10")
	srv := serveFakeDNS(t, f)
	r := runDNSProbe(t, kubeletConf(srv), clusterIPTarget("192.0.2.10"), 2*time.Second)
	wantOK(t, r)
	if r.Stage != StageDNS || r.At.IsZero() {
		t.Errorf("stage %q at %v", r.Stage, r.At)
	}
	// A for the FQDN, then A through the search path; no AAAA for a single-stack Service.
	if len(r.Checks) != 2 || r.Checks[0].Subject != "A "+fqdnHostnames || !strings.Contains(r.Checks[1].Subject, "search path") {
		t.Fatalf("checks %+v", r.Checks)
	}
	for _, q := range f.asked() {
		if strings.HasPrefix(q, "AAAA") {
			t.Errorf("asked %s of a single-stack Service", q)
		}
	}
	// kubelet's search list finds hostnames.default via svc.cluster.local, after one NXDOMAIN.
	if d := r.Checks[1].Detail; !strings.Contains(d, "for "+fqdnHostnames) || !strings.Contains(d, "NXDOMAIN") {
		t.Errorf("search path detail %q does not say which candidate answered", d)
	}
}

func TestDNSDualStack(t *testing.T) {
	f := newFakeDNS(t,
		fqdnHostnames+" 5 IN A 192.0.2.10",
		fqdnHostnames+" 5 IN AAAA 2001:db8::10",
	)
	srv := serveFakeDNS(t, f)
	r := runDNSProbe(t, kubeletConf(srv), clusterIPTarget("2001:db8::10", "192.0.2.10"), 2*time.Second)
	wantOK(t, r)
	findCheck(t, r, "AAAA "+fqdnHostnames)
	// IPv6 is the primary family here, so the search path is checked with AAAA.
	if c := findCheck(t, r, "search path"); !strings.HasPrefix(c.Subject, "AAAA ") {
		t.Errorf("search path subject %q: want the primary family", c.Subject)
	}

	// The same server missing the AAAA record fails the AAAA check only.
	f2 := newFakeDNS(t, fqdnHostnames+" 5 IN A 192.0.2.10")
	r = runDNSProbe(t, kubeletConf(serveFakeDNS(t, f2)), clusterIPTarget("192.0.2.10", "2001:db8::10"), 2*time.Second)
	wantFailed(t, r, ReasonNoAnswer)
	if c := findCheck(t, r, "AAAA "+fqdnHostnames); c.Reason != ReasonNoAnswer {
		t.Errorf("AAAA check %+v", c)
	}
	if c := findCheck(t, r, "A "+fqdnHostnames); !c.OK() {
		t.Errorf("A check %+v", c)
	}
}

func headlessTarget() *discovery.Target {
	return &discovery.Target{
		Namespace: "default", Name: "hostnames", Kind: discovery.KindHeadless,
		Ports: []discovery.Port{{Name: "http", Port: 80, Protocol: "TCP"}},
		Endpoints: []discovery.Endpoint{
			{Addresses: []netip.Addr{netip.MustParseAddr("192.0.2.21")}, Ready: true},
			{Addresses: []netip.Addr{netip.MustParseAddr("192.0.2.22")}, Ready: true},
			{Addresses: []netip.Addr{netip.MustParseAddr("192.0.2.23")}, Ready: false},
			{Addresses: []netip.Addr{netip.MustParseAddr("192.0.2.24")}, Ready: true, Terminating: true},
		},
	}
}

func TestDNSHeadless(t *testing.T) {
	srvRecord := "_http._tcp." + fqdnHostnames + " 5 IN SRV 0 50 9376 192-0-2-21." + fqdnHostnames
	f := newFakeDNS(t,
		fqdnHostnames+" 5 IN A 192.0.2.22",
		fqdnHostnames+" 5 IN A 192.0.2.21",
		srvRecord,
	)
	conf := kubeletConf(serveFakeDNS(t, f))
	r := runDNSProbe(t, conf, headlessTarget(), 2*time.Second)
	wantOK(t, r)
	// The SRV of a headless Service carries the target port, not the Service port.
	if c := findCheck(t, r, "SRV _http._tcp."+fqdnHostnames); !strings.Contains(c.Detail, "9376") {
		t.Errorf("SRV detail %q", c.Detail)
	}

	// Publishing the not-ready address too, while DNS still has only the ready ones, is wrong.
	target := headlessTarget()
	target.PublishNotReadyAddresses = true
	r = runDNSProbe(t, conf, target, 2*time.Second)
	wantFailed(t, r, ReasonWrongAnswer)
	c := findCheck(t, r, "A "+fqdnHostnames)
	if want := "got [192.0.2.21 192.0.2.22] want [192.0.2.21 192.0.2.22 192.0.2.23 192.0.2.24]"; !strings.HasPrefix(c.Detail, want) {
		t.Errorf("detail %q, want it to start with %q", c.Detail, want)
	}
}

func TestDNSHeadlessWithoutReadyEndpointsIsSkipped(t *testing.T) {
	f := newFakeDNS(t)
	conf := kubeletConf(serveFakeDNS(t, f))
	target := headlessTarget()
	for i := range target.Endpoints {
		target.Endpoints[i].Ready = false
	}
	r := runDNSProbe(t, conf, target, 2*time.Second)
	if r.Outcome != Skipped || r.Reason != ReasonNotProbed || !strings.Contains(r.Detail, "no ready endpoints") {
		t.Fatalf("got %s %s %q", r.Outcome, r.Reason, r.Detail)
	}
	if q := f.asked(); len(q) != 0 {
		t.Errorf("a skipped stage asked %v", q)
	}
}

func externalNameTarget(name string) *discovery.Target {
	return &discovery.Target{Namespace: "default", Name: "hostnames", Kind: discovery.KindExternalName, ExternalName: name}
}

func TestDNSExternalName(t *testing.T) {
	f := newFakeDNS(t, fqdnHostnames+" 5 IN CNAME Backend.Example.COM.")
	conf := kubeletConf(serveFakeDNS(t, f))

	// Case and the trailing dot do not matter.
	r := runDNSProbe(t, conf, externalNameTarget("backend.example.com"), 2*time.Second)
	wantOK(t, r)
	if len(r.Checks) != 2 {
		t.Fatalf("want the FQDN and the search path checks, got %+v", r.Checks)
	}

	r = runDNSProbe(t, conf, externalNameTarget("other.example.com"), 2*time.Second)
	wantFailed(t, r, ReasonWrongAnswer)
	if c := r.Checks[0]; !strings.Contains(c.Detail, "other.example.com") || !strings.Contains(c.Detail, "Backend.Example.COM") {
		t.Errorf("detail %q should show what was got and wanted", c.Detail)
	}

	// The CNAME is never followed: only names inside the cluster domain were asked.
	for _, q := range f.asked() {
		if !strings.HasSuffix(q, ".cluster.local.") {
			t.Errorf("asked %q, outside the cluster domain", q)
		}
		if !strings.HasPrefix(q, "CNAME ") {
			t.Errorf("asked %q: only CNAME questions are needed", q)
		}
	}
}

func TestDNSReasons(t *testing.T) {
	target := clusterIPTarget("192.0.2.10")
	tests := []struct {
		name   string
		setup  func(f *fakeDNS)
		reason Reason
	}{
		{"nxdomain", func(f *fakeDNS) {}, ReasonNXDomain},
		{"servfail", func(f *fakeDNS) { f.allRcode = dns.RcodeServerFailure }, ReasonServFail},
		{"refused", func(f *fakeDNS) { f.allRcode = dns.RcodeRefused }, ReasonRefused},
		{"wrong answer", func(f *fakeDNS) { f.add(t, fqdnHostnames+" 5 IN A 192.0.2.99") }, ReasonWrongAnswer},
		// The name exists (it has an AAAA record) but has no A record.
		{"no answer", func(f *fakeDNS) { f.add(t, fqdnHostnames+" 5 IN AAAA 2001:db8::10") }, ReasonNoAnswer},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f := newFakeDNS(t)
			tc.setup(f)
			r := runDNSProbe(t, kubeletConf(serveFakeDNS(t, f)), target, 2*time.Second)
			wantFailed(t, r, tc.reason)
			if c := r.Checks[0]; c.Subject != "A "+fqdnHostnames || c.Reason != tc.reason {
				t.Errorf("first check %+v", c)
			}
			if tc.reason == ReasonWrongAnswer && !strings.Contains(r.Detail, "got [192.0.2.99] want [192.0.2.10]") {
				t.Errorf("detail %q", r.Detail)
			}
		})
	}
}

func TestDNSTimeout(t *testing.T) {
	f := newFakeDNS(t, fqdnHostnames+" 5 IN A 192.0.2.10")
	f.silent = true
	r := runDNSProbe(t, kubeletConf(serveFakeDNS(t, f)), clusterIPTarget("192.0.2.10"), 300*time.Millisecond)
	wantFailed(t, r, ReasonTimeout)
	if r.Failing != r.Total {
		t.Errorf("every check should time out, %d of %d did", r.Failing, r.Total)
	}
	if !strings.Contains(r.Hint, "kubernetes.default") {
		t.Errorf("hint %q should send the reader to cluster DNS health", r.Hint)
	}
}

func TestDNSConnectionRefused(t *testing.T) {
	r := runDNSProbe(t, kubeletConf(closedUDPPort(t)), clusterIPTarget("192.0.2.10"), 2*time.Second)
	wantFailed(t, r, ReasonRefused)
	if !strings.Contains(r.Detail, "refused") {
		t.Errorf("detail %q", r.Detail)
	}
}

func TestDNSBudgetExhausted(t *testing.T) {
	f := newFakeDNS(t, fqdnHostnames+" 5 IN A 192.0.2.10")
	conf := kubeletConf(serveFakeDNS(t, f))
	b, err := NewBudget(BudgetConfig{Concurrency: 1, DNSQPS: 0.01, NewConnsPerSecond: 1})
	if err != nil {
		t.Fatal(err)
	}
	// Take the only token: the next one is 100s away, far beyond the probe deadline.
	release, err := b.DNS(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	release()
	p := &DNSProber{Budget: b, Conf: conf}
	r := p.Probe(dnsCtx(t, time.Second), clusterIPTarget("192.0.2.10"))
	wantFailed(t, r, ReasonBudget)
	if q := f.asked(); len(q) != 0 {
		t.Errorf("asked %v without budget", q)
	}
	if !strings.Contains(r.Hint, "budget") {
		t.Errorf("hint %q", r.Hint)
	}
}

func TestDNSBudgetIsUsedForEveryQuery(t *testing.T) {
	f := newFakeDNS(t,
		fqdnHostnames+" 5 IN A 192.0.2.10",
		fqdnHostnames+" 5 IN AAAA 2001:db8::10",
		"_http._tcp."+fqdnHostnames+" 5 IN SRV 0 100 80 "+fqdnHostnames,
	)
	conf := kubeletConf(serveFakeDNS(t, f))
	// A burst of 2 and 20 queries per second: the probe's 5 queries must wait for tokens.
	b, err := NewBudget(BudgetConfig{Concurrency: 2, DNSQPS: 20, NewConnsPerSecond: 1})
	if err != nil {
		t.Fatal(err)
	}
	target := clusterIPTarget("192.0.2.10", "2001:db8::10")
	target.Ports = []discovery.Port{{Name: "http", Port: 80, Protocol: "TCP"}}
	p := &DNSProber{Budget: b, Conf: conf}
	wantOK(t, p.Probe(dnsCtx(t, 10*time.Second), target))
	if n := len(f.asked()); n <= 2 {
		t.Fatalf("only %d queries, the test needs more than the burst", n)
	}
	if waits, _ := b.Waits(BudgetDNSQPS); waits == 0 {
		t.Errorf("%d queries with a burst of 2 never waited for the DNS budget", len(f.asked()))
	}
}

func TestDNSSearchPathBrokenWhileFQDNWorks(t *testing.T) {
	f := newFakeDNS(t, fqdnHostnames+" 5 IN A 192.0.2.10")
	srv := serveFakeDNS(t, f)
	conf := ResolvConf{Servers: []netip.AddrPort{srv}, Search: []string{"default.svc.cluster.local"}, Ndots: 5}
	r := runDNSProbe(t, conf, clusterIPTarget("192.0.2.10"), 2*time.Second)
	wantFailed(t, r, ReasonNXDomain)
	if !r.Checks[0].OK() {
		t.Errorf("the FQDN check should pass: %+v", r.Checks[0])
	}
	c := findCheck(t, r, "search path")
	if c.Reason != ReasonNXDomain || !strings.Contains(c.Detail, "hostnames.default.default.svc.cluster.local.") || !strings.Contains(c.Detail, "hostnames.default. (NXDOMAIN)") {
		t.Errorf("search path check %+v should list the candidates tried", c)
	}
	if !strings.Contains(r.Hint, "search") || !strings.Contains(r.Hint, "ndots") {
		t.Errorf("hint %q should point at the search list and ndots", r.Hint)
	}
	// The walk is glibc's: with ndots:5 the search list first, then the name as is.
	want := []string{"A " + fqdnHostnames, "A hostnames.default.default.svc.cluster.local.", "A hostnames.default."}
	if got := f.asked(); strings.Join(got, "|") != strings.Join(want, "|") {
		t.Errorf("asked %v, want %v", got, want)
	}
}

func TestDNSSearchPathStopsAtFirstError(t *testing.T) {
	f := newFakeDNS(t, fqdnHostnames+" 5 IN A 192.0.2.10")
	f.force("hostnames.default.default.svc.cluster.local.", dns.RcodeServerFailure)
	r := runDNSProbe(t, kubeletConf(serveFakeDNS(t, f)), clusterIPTarget("192.0.2.10"), 2*time.Second)
	wantFailed(t, r, ReasonServFail)
	want := []string{"A " + fqdnHostnames, "A hostnames.default.default.svc.cluster.local."}
	if got := f.asked(); strings.Join(got, "|") != strings.Join(want, "|") {
		t.Errorf("asked %v, want the walk to stop at the SERVFAIL: %v", got, want)
	}
	if c := findCheck(t, r, "search path"); c.Reason != ReasonServFail {
		t.Errorf("search path check %+v", c)
	}
}

func TestDNSSRVNamedPort(t *testing.T) {
	target := clusterIPTarget("192.0.2.10")
	target.Ports = []discovery.Port{
		{Name: "http", Port: 80, Protocol: "TCP"},
		{Name: "dns", Port: 53, Protocol: "UDP"},
		{Port: 9000, Protocol: "TCP"},             // unnamed: no SRV record exists
		{Name: "sctp", Port: 7, Protocol: "SCTP"}, // not asked
	}
	f := newFakeDNS(t,
		fqdnHostnames+" 5 IN A 192.0.2.10",
		"_http._tcp."+fqdnHostnames+" 5 IN SRV 0 100 80 "+fqdnHostnames,
		"_dns._udp."+fqdnHostnames+" 5 IN SRV 0 100 5353 "+fqdnHostnames,
	)
	r := runDNSProbe(t, kubeletConf(serveFakeDNS(t, f)), target, 2*time.Second)
	wantFailed(t, r, ReasonWrongAnswer)
	if c := findCheck(t, r, "SRV _http._tcp."); !c.OK() {
		t.Errorf("http SRV %+v", c)
	}
	c := findCheck(t, r, "SRV _dns._udp.")
	if c.Reason != ReasonWrongAnswer || !strings.Contains(c.Detail, "got ports [5353] want 53") {
		t.Errorf("dns SRV %+v", c)
	}
	if r.Total != 4 {
		t.Errorf("want A, search path and two SRV checks, got %+v", r.Checks)
	}

	// A port whose name DNS does not know.
	target.Ports = []discovery.Port{{Name: "metrics", Port: 9090, Protocol: "TCP"}}
	r = runDNSProbe(t, kubeletConf(serveFakeDNS(t, f)), target, 2*time.Second)
	wantFailed(t, r, ReasonNXDomain)
	if c := findCheck(t, r, "SRV _metrics._tcp."); c.Reason != ReasonNXDomain {
		t.Errorf("metrics SRV %+v", c)
	}
}

func TestDNSFallsBackToSecondServerOnTimeout(t *testing.T) {
	dead := newFakeDNS(t)
	dead.silent = true
	live := newFakeDNS(t, fqdnHostnames+" 5 IN A 192.0.2.10")
	conf := kubeletConf(serveFakeDNS(t, dead), serveFakeDNS(t, live))
	r := runDNSProbe(t, conf, clusterIPTarget("192.0.2.10"), time.Second)
	wantOK(t, r)
	if len(dead.asked()) == 0 {
		t.Errorf("the first server was never asked")
	}
	if !strings.Contains(r.Checks[0].Detail, conf.Servers[1].String()) {
		t.Errorf("detail %q should name the server that answered", r.Checks[0].Detail)
	}
}

func TestDNSNoFallbackOnAReply(t *testing.T) {
	first := newFakeDNS(t)
	first.allRcode = dns.RcodeServerFailure
	second := newFakeDNS(t, fqdnHostnames+" 5 IN A 192.0.2.10")
	conf := kubeletConf(serveFakeDNS(t, first), serveFakeDNS(t, second))
	r := runDNSProbe(t, conf, clusterIPTarget("192.0.2.10"), 2*time.Second)
	wantFailed(t, r, ReasonServFail)
	if q := second.asked(); len(q) != 0 {
		t.Errorf("a SERVFAIL reply is final for a stub resolver, yet the second server was asked %v", q)
	}
}

func TestDNSTruncatedReplyRetriesOverTCP(t *testing.T) {
	f := newFakeDNS(t, fqdnHostnames+" 5 IN A 192.0.2.10")
	f.truncUDP = true
	conf := kubeletConf(serveFakeDNSWithTCP(t, f))
	r := runDNSProbe(t, conf, clusterIPTarget("192.0.2.10"), 2*time.Second)
	wantOK(t, r)
	// Every question was asked twice: over UDP, then again over TCP.
	asked := f.asked()
	if n := f.tcpCount(); n == 0 || 2*n != len(asked) {
		t.Errorf("%d of %d questions came over TCP, want half: %v", n, len(asked), asked)
	}
}

// TestDNSSearchPathReusesTheFQDNAnswer: the search list ends at the FQDN the stage asked a moment
// before; the question goes to the server once per round, and both checks still pass on it.
func TestDNSSearchPathReusesTheFQDNAnswer(t *testing.T) {
	f := newFakeDNS(t, fqdnHostnames+" 5 IN A 192.0.2.10")
	r := runDNSProbe(t, kubeletConf(serveFakeDNS(t, f)), clusterIPTarget("192.0.2.10"), 2*time.Second)
	if r.Outcome != OK {
		t.Fatalf("outcome %v (%s), want ok", r.Outcome, r.Detail)
	}
	if c := findCheck(t, r, "search path"); !c.OK() || !strings.Contains(c.Detail, "192.0.2.10") {
		t.Errorf("search path check %+v, want success with the FQDN's address", c)
	}
	n := 0
	for _, q := range f.asked() {
		if q == "A "+fqdnHostnames {
			n++
		}
	}
	if n != 1 {
		t.Errorf("A %s asked %d times in one round (%v), want once", fqdnHostnames, n, f.asked())
	}
}

// A dead nameserver that is a node-local cache, or another resolver, gets a hint that names it;
// one that is (or may be) the DNS Service keeps the cluster DNS hint.
func TestDNSHintNamesTheResolver(t *testing.T) {
	f := newFakeDNS(t, fqdnHostnames+" 5 IN A 192.0.2.10")
	f.silent = true
	conf := kubeletConf(serveFakeDNS(t, f))
	svc := func() []netip.Addr { return []netip.Addr{netip.MustParseAddr("198.19.0.10")} }
	for _, c := range []struct {
		name string
		rc   ResolverClassifier
		want string
	}{
		{"node-local", ResolverClassifier{ServiceIPs: svc, NodeLocal: []netip.Addr{netip.MustParseAddr("127.0.0.1")}}, "node-local DNS cache"},
		{"other resolver", ResolverClassifier{ServiceIPs: svc}, "not the cluster DNS Service's IP"},
		{"the DNS Service", ResolverClassifier{ServiceIPs: func() []netip.Addr { return []netip.Addr{netip.MustParseAddr("127.0.0.1")} }}, "kubernetes.default"},
		{"unknown", ResolverClassifier{}, "kubernetes.default"},
	} {
		t.Run(c.name, func(t *testing.T) {
			p := &DNSProber{Budget: testBudget(t), Conf: conf, ClusterDomain: "cluster.local", Resolvers: c.rc}
			r := p.Probe(dnsCtx(t, 300*time.Millisecond), clusterIPTarget("192.0.2.10"))
			wantFailed(t, r, ReasonTimeout)
			if !strings.Contains(r.Hint, c.want) {
				t.Errorf("hint %q, want it to contain %q", r.Hint, c.want)
			}
		})
	}
}

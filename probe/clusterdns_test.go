package probe

import (
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"
	"github.com/svcprobe/svcprobe/discovery"
)

const fqdnKubernetes = "kubernetes.default.svc.cluster.local."

// kubernetesDNS is a healthy DNS Pod: it knows the kubernetes Service.
func kubernetesDNS(t *testing.T) *fakeDNS {
	return newFakeDNS(t, fqdnKubernetes+" 5 IN A 192.0.2.1")
}

// runClusterDNS runs a round whose nameservers are the cluster DNS Service's ClusterIP, as
// kubelet writes resolv.conf with the default dnsPolicy.
func runClusterDNS(t *testing.T, vips []netip.AddrPort, pods []DNSServer, timeout time.Duration) ClusterDNSResult {
	t.Helper()
	var ips []netip.Addr
	for _, v := range vips {
		ips = append(ips, v.Addr())
	}
	return runClusterDNSWith(t, ResolverClassifier{ServiceIPs: func() []netip.Addr { return ips }}, vips, pods, timeout)
}

func runClusterDNSWith(t *testing.T, rc ResolverClassifier, vips []netip.AddrPort, pods []DNSServer, timeout time.Duration) ClusterDNSResult {
	t.Helper()
	p := &ClusterDNSProber{Budget: testBudget(t), Conf: kubeletConf(vips...), ClusterDomain: "cluster.local", Resolvers: rc}
	return p.Probe(dnsCtx(t, timeout), pods)
}

// The same dead nameservers, when they are not the DNS Service's ClusterIP: a node-local cache
// or another resolver is reached without kube-proxy, so nothing points at the proxy, and the
// round says which class died.
func TestClusterDNSDeadResolverIsNotTheProxy(t *testing.T) {
	pods := []DNSServer{{Name: "coredns-a", Addr: serveFakeDNS(t, kubernetesDNS(t))}}
	for _, c := range []struct {
		name string
		rc   ResolverClassifier
		want ResolverClass
	}{
		{"node-local by flag", ResolverClassifier{NodeLocal: []netip.Addr{netip.MustParseAddr("127.0.0.1")},
			ServiceIPs: func() []netip.Addr { return []netip.Addr{netip.MustParseAddr("198.19.0.10")} }}, ResolverNodeLocal},
		{"another resolver", ResolverClassifier{ServiceIPs: func() []netip.Addr { return []netip.Addr{netip.MustParseAddr("198.19.0.10")} }}, ResolverOther},
		{"DNS Service unknown", ResolverClassifier{}, ResolverUnknown},
	} {
		t.Run(c.name, func(t *testing.T) {
			r := runClusterDNSWith(t, c.rc, []netip.AddrPort{closedUDPPort(t)}, pods, 500*time.Millisecond)
			if r.ProxySuspect() {
				t.Errorf("proxy suspect with a dead %s nameserver", c.want)
			}
			if class, dead := r.DeadResolver(); !dead || class != c.want {
				t.Errorf("dead resolver %v %q, want true %q", dead, class, c.want)
			}
			if r.ClassOf(0) != c.want {
				t.Errorf("class %q, want %q", r.ClassOf(0), c.want)
			}
		})
	}
}

func TestResolverClassify(t *testing.T) {
	svc := netip.MustParseAddr("198.19.0.10")
	rc := ResolverClassifier{ServiceIPs: func() []netip.Addr { return []netip.Addr{svc} }, NodeLocal: []netip.Addr{netip.MustParseAddr("198.18.5.5")}}
	for addr, want := range map[string]ResolverClass{
		"198.19.0.10": ResolverService, "::ffff:198.19.0.10": ResolverService,
		"169.254.20.10": ResolverNodeLocal, "fe80::10": ResolverNodeLocal, "198.18.5.5": ResolverNodeLocal,
		"198.18.9.9": ResolverOther,
	} {
		if got := rc.Classify(netip.MustParseAddr(addr)); got != want {
			t.Errorf("%s: %q, want %q", addr, got, want)
		}
	}
	if got := (ResolverClassifier{}).Classify(netip.MustParseAddr("198.19.0.10")); got != ResolverUnknown {
		t.Errorf("without the DNS Service's IPs: %q, want unknown", got)
	}
	if got := (ResolverClassifier{}).Classify(netip.MustParseAddr("169.254.20.10")); got != ResolverNodeLocal {
		t.Errorf("link-local without the DNS Service's IPs: %q, want node_local", got)
	}
}

func TestClusterDNSHealthy(t *testing.T) {
	vip := serveFakeDNS(t, kubernetesDNS(t))
	pods := []DNSServer{
		{Name: "coredns-a", Addr: serveFakeDNS(t, kubernetesDNS(t))},
		{Name: "coredns-b", Addr: serveFakeDNS(t, kubernetesDNS(t))},
	}
	before := time.Now()
	r := runClusterDNS(t, []netip.AddrPort{vip}, pods, 2*time.Second)
	if !r.Canary.OK() || !strings.Contains(r.Canary.Subject, "search path") {
		t.Errorf("canary %+v", r.Canary)
	}
	if !r.VIPUp() || len(r.VIP) != 1 || r.VIP[0].Subject != "A "+fqdnKubernetes+" @"+vip.String() {
		t.Errorf("VIP %+v", r.VIP)
	}
	if up, total := r.PodsUp(); up != 2 || total != 2 {
		t.Errorf("pods up %d/%d, want 2/2", up, total)
	}
	if r.ProxySuspect() {
		t.Errorf("proxy suspect while everything works")
	}
	if r.At.Before(before) {
		t.Errorf("At %v is before the probe started", r.At)
	}
}

func TestClusterDNSOnePodServFail(t *testing.T) {
	broken := newFakeDNS(t)
	broken.allRcode = dns.RcodeServerFailure
	pods := []DNSServer{
		{Name: "coredns-a", Addr: serveFakeDNS(t, kubernetesDNS(t))},
		{Name: "coredns-b", Addr: serveFakeDNS(t, broken)},
	}
	r := runClusterDNS(t, []netip.AddrPort{serveFakeDNS(t, kubernetesDNS(t))}, pods, 2*time.Second)
	if up, total := r.PodsUp(); up != 1 || total != 2 {
		t.Errorf("pods up %d/%d, want 1/2", up, total)
	}
	if got := r.DownPods(); !slices.Equal(got, []string{"coredns-b"}) {
		t.Errorf("down pods %v, want [coredns-b]", got)
	}
	if c := r.Pods[1]; c.Name != "coredns-b" || c.Check.Reason != ReasonServFail || !strings.Contains(c.Check.Subject, "coredns-b") {
		t.Errorf("pod check %+v", c)
	}
	if !r.VIPUp() || r.ProxySuspect() {
		t.Errorf("VIP up %v, proxy suspect %v: want up and not suspect", r.VIPUp(), r.ProxySuspect())
	}
}

func TestClusterDNSVIPDeadPodsAnswer(t *testing.T) {
	// Two resolv.conf nameservers, neither forwarded: one port refuses, the other drops packets.
	silent := newFakeDNS(t)
	silent.silent = true
	vips := []netip.AddrPort{closedUDPPort(t), serveFakeDNS(t, silent)}
	pods := []DNSServer{{Name: "coredns-a", Addr: serveFakeDNS(t, kubernetesDNS(t))}}
	r := runClusterDNS(t, vips, pods, 500*time.Millisecond)
	if r.VIP[0].Reason != ReasonRefused || r.VIP[1].Reason != ReasonTimeout {
		t.Errorf("VIP checks %+v, want refused then timeout", r.VIP)
	}
	if r.VIPUp() {
		t.Errorf("VIP up")
	}
	if r.Canary.OK() {
		t.Errorf("canary %+v succeeded through dead nameservers", r.Canary)
	}
	if up, _ := r.PodsUp(); up != 1 {
		t.Errorf("the pod asked directly should answer: %+v", r.Pods)
	}
	if !r.ProxySuspect() {
		t.Errorf("DNS Pods answer while the Service IP does not: want proxy suspect")
	}
}

func TestClusterDNSAllDead(t *testing.T) {
	silent := newFakeDNS(t)
	silent.silent = true
	pods := []DNSServer{
		{Name: "coredns-a", Addr: closedUDPPort(t)},
		{Name: "coredns-b", Addr: serveFakeDNS(t, silent)},
	}
	r := runClusterDNS(t, []netip.AddrPort{serveFakeDNS(t, silent)}, pods, 300*time.Millisecond)
	if r.VIPUp() {
		t.Errorf("VIP up")
	}
	if up, total := r.PodsUp(); up != 0 || total != 2 {
		t.Errorf("pods up %d/%d, want 0/2", up, total)
	}
	if r.ProxySuspect() {
		t.Errorf("nothing answers anywhere: DNS is down, not the proxy")
	}
}

func TestClusterDNSVIPServFailIsNotProxy(t *testing.T) {
	// The Service IP leads to a DNS server that replies: the proxy did its job.
	broken := newFakeDNS(t)
	broken.allRcode = dns.RcodeServerFailure
	pods := []DNSServer{{Name: "coredns-a", Addr: serveFakeDNS(t, kubernetesDNS(t))}}
	r := runClusterDNS(t, []netip.AddrPort{serveFakeDNS(t, broken)}, pods, 2*time.Second)
	if r.VIPUp() || r.ProxySuspect() {
		t.Errorf("VIP up %v, proxy suspect %v: want neither", r.VIPUp(), r.ProxySuspect())
	}
}

func TestClusterDNSAsksIPv6WhenTheVIPIsIPv6(t *testing.T) {
	pod := newFakeDNS(t, fqdnKubernetes+" 5 IN AAAA 2001:db8::1")
	p := &ClusterDNSProber{Budget: testBudget(t), Conf: ResolvConf{Servers: []netip.AddrPort{netip.MustParseAddrPort("[::1]:9")}}}
	// The VIP is an unused IPv6 loopback port; the answer that matters is the Pod's.
	r := p.Probe(dnsCtx(t, time.Second), []DNSServer{{Name: "coredns-a", Addr: serveFakeDNS(t, pod)}})
	if !r.Pods[0].Check.OK() || !strings.HasPrefix(r.Pods[0].Check.Subject, "AAAA ") {
		t.Errorf("pod check %+v, want an AAAA answer", r.Pods[0].Check)
	}
}

func TestDNSServersFrom(t *testing.T) {
	ip := func(s string) []netip.Addr { return []netip.Addr{netip.MustParseAddr(s)} }
	udp53 := []discovery.EndpointPort{{Name: "dns", Port: 53, Protocol: "UDP"}, {Name: "dns-tcp", Port: 53, Protocol: "TCP"}}
	got := DNSServersFrom([]discovery.Endpoint{
		{Addresses: ip("198.18.0.53"), Ready: true, PodName: "coredns-0", Ports: udp53},
		{Addresses: ip("198.18.0.54"), Ready: false, PodName: "coredns-1", Ports: udp53},                   // not ready
		{Addresses: ip("198.18.0.55"), Ready: true, Terminating: true, PodName: "coredns-2", Ports: udp53}, // leaving
		{Addresses: ip("198.18.0.56"), Ready: true, Ports: []discovery.EndpointPort{{Name: "metrics", Port: 9153, Protocol: "TCP"}}},
		{Addresses: ip("198.18.0.57"), Ready: true, Ports: udp53}, // no Pod: named by its address
	})
	want := []DNSServer{
		{Name: "coredns-0", Addr: netip.MustParseAddrPort("198.18.0.53:53")},
		{Name: "198.18.0.57", Addr: netip.MustParseAddrPort("198.18.0.57:53")},
	}
	if !slices.Equal(got, want) {
		t.Fatalf("got %v, want %v", got, want)
	}
}

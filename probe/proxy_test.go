package probe

import (
	"context"
	"net"
	"net/http"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/svcprobe/svcprobe/discovery"
)

// vipTarget is a Service whose ClusterIPs are loopback addresses (standing in for the VIP)
// with one ready endpoint (never dialed by the proxy stage).
func vipTarget(port discovery.Port, vips ...netip.Addr) *discovery.Target {
	return &discovery.Target{
		Namespace: "default", Name: "hostnames", Kind: discovery.KindClusterIP,
		ClusterIPs: vips, Selector: map[string]string{"app": "hostnames"},
		Ports: []discovery.Port{port},
		Endpoints: []discovery.Endpoint{{
			Addresses: []netip.Addr{netip.MustParseAddr("127.0.0.1")}, Ready: true, PodName: "hostnames-a",
		}},
	}
}

func tcpPort(name string, port uint16) discovery.Port {
	return discovery.Port{Name: name, Port: int32(port), TargetPort: intstr.FromInt32(9376), Protocol: "TCP"}
}

func probeProxy(t *testing.T, d *Dialer, tgt *discovery.Target) Result {
	t.Helper()
	r := (&ProxyProber{Dialer: d}).Probe(shortCtx(t, 5*time.Second), tgt)
	if r.Stage != StageProxy {
		t.Errorf("stage %q, want %q", r.Stage, StageProxy)
	}
	return r
}

func TestProxyProberSuccess(t *testing.T) {
	s := newTCPServer(t, "127.0.0.1", 0)
	r := probeProxy(t, &Dialer{Budget: looseBudget(t)}, vipTarget(tcpPort("web", s.addr.Port()), s.addr.Addr()))
	if r.Outcome != OK || r.Total != 1 {
		t.Fatalf("result %v %s %q total %d, want ok 1", r.Outcome, r.Reason, r.Detail, r.Total)
	}
	if want := s.addr.String() + " (service default/hostnames)"; r.Checks[0].Subject != want {
		t.Errorf("subject %q, want %q", r.Checks[0].Subject, want)
	}
	if n := s.accepted.Load(); n == 0 {
		time.Sleep(50 * time.Millisecond)
		if s.accepted.Load() == 0 {
			t.Error("the VIP listener saw no connection")
		}
	}
}

// TestProxyProberDualStack: each ClusterIP is a separate path (iptables vs ip6tables rules).
func TestProxyProberDualStack(t *testing.T) {
	v4 := newTCPServer(t, "127.0.0.1", 0)
	ln, err := net.Listen("tcp", net.JoinHostPort("::1", strconv.Itoa(int(v4.addr.Port()))))
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("no IPv6 loopback on the same port: %v", err)
		}
		t.Skipf("no IPv6 loopback on the same port: %v", err)
	}
	_ = ln.Close()
	v6 := newTCPServer(t, "::1", v4.addr.Port())
	r := probeProxy(t, &Dialer{Budget: looseBudget(t)}, vipTarget(tcpPort("web", v4.addr.Port()), v4.addr.Addr(), v6.addr.Addr()))
	if r.Outcome != OK || r.Total != 2 {
		t.Fatalf("result %v %s total %d (%q), want ok with both families", r.Outcome, r.Reason, r.Total, subjects(r))
	}
	if !strings.HasPrefix(r.Checks[1].Subject, "[::1]:") {
		t.Errorf("second check %q, want the IPv6 ClusterIP", r.Checks[1].Subject)
	}
}

func TestProxyProberFailureHint(t *testing.T) {
	dead := freeTCPPort(t, "127.0.0.1")
	r := probeProxy(t, &Dialer{Budget: looseBudget(t)}, vipTarget(tcpPort("web", dead.Port()), dead.Addr()))
	if r.Outcome != Failed || r.Reason != ReasonRefused || r.Failing != 1 {
		t.Fatalf("result %v %s failing %d, want failed refused", r.Outcome, r.Reason, r.Failing)
	}
	for _, want := range []string{"kube-proxy", "KUBE-SERVICES", "default/hostnames", "nft list map ip kube-proxy service-ips", "ipvsadm -Ln"} {
		if !strings.Contains(r.Hint, want) {
			t.Errorf("hint %q lacks %q", r.Hint, want)
		}
	}
}

// TestProxyProberHTTP: the annotation's HTTP check also runs against the VIP, with the Service's
// name as Host.
func TestProxyProberHTTP(t *testing.T) {
	var host atomic.Value
	addr := httpServerOn(t, "127.0.0.1", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		host.Store(r.Host)
		if r.URL.Path != "/healthz" {
			w.WriteHeader(http.StatusNotFound)
		}
	}))
	tgt := vipTarget(tcpPort("web", addr.Port()), addr.Addr())
	tgt.Options.HTTP = map[string]discovery.HTTPOptions{"web": {Path: "/healthz", StatusMin: 200, StatusMax: 299}}
	r := probeProxy(t, &Dialer{Budget: looseBudget(t)}, tgt)
	if r.Outcome != OK || !strings.Contains(r.Checks[0].Detail, "HTTP 200") {
		t.Fatalf("result %v %s %q, want an HTTP 200", r.Outcome, r.Reason, r.Detail)
	}
	if want := "hostnames.default.svc:" + strconv.Itoa(int(addr.Port())); host.Load() != want {
		t.Errorf("Host %q, want %q", host.Load(), want)
	}
}

// TestProxyProberSkips: no VIP (headless, ExternalName) or nothing behind it: skipped, no dial.
func TestProxyProberSkips(t *testing.T) {
	d := &Dialer{dialContext: func(_ context.Context, _, address string) (net.Conn, error) {
		t.Errorf("dialed %s for a skipped Service", address)
		return nil, dialErr(syscall.ECONNREFUSED)
	}}
	vip := netip.MustParseAddr("127.0.0.1")
	headless := vipTarget(tcpPort("web", 80))
	headless.Kind = discovery.KindHeadless
	// An ExternalName is dialed only on its ports (TestExternalName* in guard_test.go); without
	// any there is nothing to connect to.
	external := &discovery.Target{Namespace: "default", Name: "ext", Kind: discovery.KindExternalName, ExternalName: "example.com"}
	notReady := vipTarget(tcpPort("web", 80), vip)
	notReady.Endpoints[0].Ready = false
	noEndpoints := vipTarget(tcpPort("web", 80), vip)
	noEndpoints.Endpoints = nil
	udpOnly := vipTarget(discovery.Port{Name: "syslog", Port: 514, Protocol: "UDP"}, vip)
	for name, tgt := range map[string]*discovery.Target{
		"headless": headless, "external name": external, "no ready endpoint": notReady,
		"no endpoints": noEndpoints, "UDP only": udpOnly,
	} {
		if r := probeProxy(t, d, tgt); r.Outcome != Skipped || r.Reason != ReasonNotProbed || r.Detail == "" {
			t.Errorf("%s: result %v %s %q, want skipped with a reason", name, r.Outcome, r.Reason, r.Detail)
		}
	}
}

// TestProxyProberUDPDNS: a Service on UDP 53 gets a DNS query to its VIP.
func TestProxyProberUDPDNS(t *testing.T) {
	var dialed []string
	d := &Dialer{Budget: looseBudget(t), dialContext: func(_ context.Context, network, address string) (net.Conn, error) {
		dialed = append(dialed, network+" "+address)
		return nil, dialErr(syscall.ECONNREFUSED) // no packet leaves
	}}
	tgt := vipTarget(discovery.Port{Name: "dns", Port: 53, TargetPort: intstr.FromInt32(53), Protocol: "UDP"}, netip.MustParseAddr("127.0.0.1"))
	r := probeProxy(t, d, tgt)
	if r.Total != 1 || r.Reason != ReasonRefused || len(dialed) != 1 || dialed[0] != "udp 127.0.0.1:53" {
		t.Fatalf("result %s total %d, dialed %q; want one refused DNS query to udp 127.0.0.1:53", r.Reason, r.Total, dialed)
	}
}

// A VIP whose only endpoint is the exporter's own Pod is the hairpin path: the result says so,
// and the hint points at hairpin mode rather than kube-proxy.
func TestProxyProberSelfOnly(t *testing.T) {
	vip := netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), freeTCPPort(t, "127.0.0.1").Port())
	tgt := vipTarget(tcpPort("web", vip.Port()), vip.Addr()) // its endpoint is 127.0.0.1
	self := &ProxyProber{Dialer: &Dialer{Budget: looseBudget(t)}, Self: []netip.Addr{netip.MustParseAddr("127.0.0.1")}}
	r := self.Probe(shortCtx(t, 5*time.Second), tgt)
	if r.Outcome != Failed || !r.SelfOnly || !strings.Contains(r.Hint, "hairpin") {
		t.Fatalf("result %v self-only %v hint %q", r.Outcome, r.SelfOnly, r.Hint)
	}
	other := &ProxyProber{Dialer: &Dialer{Budget: looseBudget(t)}, Self: []netip.Addr{netip.MustParseAddr("127.0.0.9")}}
	if r := other.Probe(shortCtx(t, 5*time.Second), tgt); r.SelfOnly || strings.Contains(r.Hint, "hairpin") {
		t.Fatalf("another Pod's Service marked self-only: %+v", r)
	}
}

// A VIP that fails one connection in three (a stale rule for one of three backends): the proxy
// stage makes min(ready endpoints, Connections) new connections per round and counts each, so
// the round fails and Failing/Total say how much.
func TestProxyProberConnectionsCatchPartialVIP(t *testing.T) {
	s := newTCPServer(t, "127.0.0.1", 0)
	var n atomic.Int64
	var direct atomic.Int64
	d := &Dialer{Budget: looseBudget(t), dialContext: func(ctx context.Context, network, address string) (net.Conn, error) {
		var nd net.Dialer
		if address != s.addr.String() {
			// A direct connection to an endpoint (the closer look): the Pods answer, through
			// the test's own server; no packet goes to the endpoint's address.
			direct.Add(1)
			return nd.DialContext(ctx, network, s.addr.String())
		}
		if n.Add(1)%3 == 0 { // every third connection meets the stale rule
			return nil, dialErr(syscall.EHOSTUNREACH)
		}
		return nd.DialContext(ctx, network, address)
	}}
	tgt := vipTarget(tcpPort("web", s.addr.Port()), s.addr.Addr())
	for i := range 3 {
		ip := netip.AddrFrom4([4]byte{198, 18, 0, byte(10 + i)})
		tgt.Endpoints = append(tgt.Endpoints, discovery.Endpoint{Addresses: []netip.Addr{ip}, Ready: true, PodName: "hostnames-" + strconv.Itoa(i)})
	}
	// Four ready endpoints, Connections 4: four connections, one of them (at least) failing.
	r := (&ProxyProber{Dialer: d, Connections: 4}).Probe(shortCtx(t, 5*time.Second), tgt)
	if r.Outcome != Failed || r.Reason != ReasonUnreachable {
		t.Fatalf("result %v %s %q, want failed unreachable", r.Outcome, r.Reason, r.Detail)
	}
	if r.Total != 4 || r.Failing != 1 || !r.Intermittent {
		t.Errorf("failing %d of %d connections, intermittent %v; want 1 of 4, intermittent", r.Failing, r.Total, r.Intermittent)
	}
	if len(r.Checks) != 1 || !strings.Contains(r.Checks[0].Detail, "1 of 4 connections failed") {
		t.Errorf("checks %+v, want one folded check saying 1 of 4 connections failed", r.Checks)
	}
	if got := n.Load(); got != 4 {
		t.Errorf("%d dials, want 4", got)
	}
	// The intermittent round made the stage look closer: each of the four endpoints three times,
	// all answering, so the VIP's failures are not the Pods'.
	if got := direct.Load(); got != 4*closerConnections || r.PodsFailing != 0 || !strings.Contains(r.Detail, "all answered") {
		t.Errorf("closer look: %d direct dials, pods failing %d, detail %q; want %d, 0, all answered", got, r.PodsFailing, r.Detail, 4*closerConnections)
	}
	direct.Store(0)

	// Bounded by the ready endpoints: one endpoint, one connection, whatever Connections says.
	n.Store(0)
	one := vipTarget(tcpPort("web", s.addr.Port()), s.addr.Addr())
	r = (&ProxyProber{Dialer: d, Connections: 4}).Probe(shortCtx(t, 5*time.Second), one)
	if r.Outcome != OK || r.Total != 1 || n.Load() != 1 {
		t.Errorf("one endpoint: %v total %d, %d dials; want ok, 1 connection", r.Outcome, r.Total, n.Load())
	}
	// And by Connections: 1 is one dial per VIP and port, as before.
	n.Store(0)
	r = (&ProxyProber{Dialer: d, Connections: 1}).Probe(shortCtx(t, 5*time.Second), tgt)
	if r.Total != 1 || n.Load() != 1 {
		t.Errorf("Connections 1: total %d, %d dials; want 1", r.Total, n.Load())
	}
}

// A Pod that drops every other SYN fails the VIP's connections that land on it; the closer look
// after the intermittent round finds it failing direct connections too, and says so.
func TestProxyProberLookCloserFindsFlakyPod(t *testing.T) {
	s := newTCPServer(t, "127.0.0.1", 0)
	flaky := netip.MustParseAddr("198.18.0.11")
	var vip, toFlaky atomic.Int64
	d := &Dialer{Budget: looseBudget(t), dialContext: func(ctx context.Context, network, address string) (net.Conn, error) {
		var nd net.Dialer
		ap := netip.MustParseAddrPort(address)
		switch {
		case ap == s.addr:
			if vip.Add(1)%2 == 0 { // the VIP's connections that land on the flaky Pod
				return nil, dialErr(syscall.ETIMEDOUT)
			}
		case ap.Addr() == flaky:
			if toFlaky.Add(1)%2 == 0 {
				return nil, dialErr(syscall.ETIMEDOUT)
			}
		}
		return nd.DialContext(ctx, network, s.addr.String()) // never a packet to an endpoint's address
	}}
	tgt := vipTarget(tcpPort("web", s.addr.Port()), s.addr.Addr())
	tgt.Endpoints = append(tgt.Endpoints, discovery.Endpoint{Addresses: []netip.Addr{flaky}, Ready: true, PodName: "flaky"})
	r := (&ProxyProber{Dialer: d, Connections: 4}).Probe(shortCtx(t, 5*time.Second), tgt)
	if r.Outcome != Failed || !r.Intermittent {
		t.Fatalf("result %v intermittent %v %q, want a failed, intermittent round", r.Outcome, r.Intermittent, r.Detail)
	}
	if r.PodsFailing == 0 || !strings.Contains(r.Detail, "pod flaky") || !strings.Contains(r.Hint, "Pods answer only part") {
		t.Errorf("pods failing %d, detail %q, hint %q; want the flaky Pod named and the Pods blamed", r.PodsFailing, r.Detail, r.Hint)
	}
	// A hard failure (every connection refused) does not look closer: no extra dial.
	toFlaky.Store(0)
	hard := &Dialer{Budget: looseBudget(t), dialContext: func(ctx context.Context, network, address string) (net.Conn, error) {
		if address != s.addr.String() {
			toFlaky.Add(1)
		}
		return nil, dialErr(syscall.ECONNREFUSED)
	}}
	r = (&ProxyProber{Dialer: hard, Connections: 4}).Probe(shortCtx(t, 5*time.Second), tgt)
	if r.Outcome != Failed || r.Intermittent || toFlaky.Load() != 0 || r.PodsFailing != 0 || r.LookedCloser {
		t.Errorf("hard failure: intermittent %v, %d direct dials, pods failing %d; want none", r.Intermittent, toFlaky.Load(), r.PodsFailing)
	}
}

// The VIP's failing connections time out and spend the stage's whole deadline (a blackholed
// backend); the closer look gets a timeout of its own, so the Pods answering directly are seen
// answering, not failed for want of time (found in the lab's vip-partial).
func TestProxyProberLookCloserOwnTimeout(t *testing.T) {
	s := newTCPServer(t, "127.0.0.1", 0)
	var vip atomic.Int64
	d := &Dialer{Budget: looseBudget(t), dialContext: func(ctx context.Context, network, address string) (net.Conn, error) {
		if address == s.addr.String() && vip.Add(1)%2 == 0 {
			<-ctx.Done() // a SYN into a blackhole: no answer until the deadline
			return nil, ctx.Err()
		}
		var nd net.Dialer
		return nd.DialContext(ctx, network, s.addr.String()) // the Pods answer; no packet to their addresses
	}}
	tgt := vipTarget(tcpPort("web", s.addr.Port()), s.addr.Addr())
	tgt.Endpoints = append(tgt.Endpoints, discovery.Endpoint{Addresses: []netip.Addr{netip.MustParseAddr("198.18.0.11")}, Ready: true, PodName: "b"})
	p := &ProxyProber{Dialer: d, Connections: 4, Timeout: 2 * time.Second}
	r := Run(shortCtx(t, 10*time.Second), p, tgt, 200*time.Millisecond, time.Now())
	if r.Outcome != Failed || !r.Intermittent {
		t.Fatalf("result %v intermittent %v %q, want a failed, intermittent round", r.Outcome, r.Intermittent, r.Detail)
	}
	if r.PodsFailing != 0 || !r.LookedCloser || !strings.Contains(r.Detail, "all answered") {
		t.Errorf("pods failing %d, detail %q: the closer look ran out of the stage's spent deadline", r.PodsFailing, r.Detail)
	}
	// Shutdown (the parent cancelled) ends the closer look too.
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if r := p.Probe(ctx, tgt); r.PodsFailing != 0 {
		t.Errorf("cancelled: pods failing %d, want no closer look", r.PodsFailing)
	}
}

func TestConnectionsFor(t *testing.T) {
	for _, c := range []struct{ ready, limit, want int }{{0, 4, 1}, {1, 4, 1}, {3, 4, 3}, {9, 4, 4}, {9, 0, 1}, {9, 1, 1}} {
		if got := connectionsFor(c.ready, c.limit); got != c.want {
			t.Errorf("connectionsFor(%d, %d) = %d, want %d", c.ready, c.limit, got, c.want)
		}
	}
}

// NetworkPolicy denies the exporter an endpoint: the pod stage does not dial it (its check says
// denied, neither passing nor failing), the others are judged as usual; with every endpoint
// denied the stage is skipped with that reason. The VIP stages, which would land there too, skip.
func TestDeniedEndpointsNotDialed(t *testing.T) {
	var dialed []string
	d := &Dialer{Budget: looseBudget(t), dialContext: func(_ context.Context, network, address string) (net.Conn, error) {
		dialed = append(dialed, address)
		return nil, dialErr(syscall.ECONNREFUSED) // no packet leaves
	}}
	port := tcpPort("http", 80)
	tgt := vipTarget(port, netip.MustParseAddr("127.0.0.1"))
	tgt.Endpoints[0].Denied = map[string]string{"http": "default/default-deny"}
	r := (&PodProber{Dialer: d}).Probe(shortCtx(t, 5*time.Second), tgt)
	if r.Outcome != Skipped || r.Reason != ReasonDeniedByNetworkPolicy || len(dialed) != 0 || !strings.Contains(r.Detail, "default/default-deny") {
		t.Fatalf("every endpoint denied: %v %s %q, dialed %v; want skipped denied_by_network_policy naming the policy, nothing dialed", r.Outcome, r.Reason, r.Detail, dialed)
	}
	// A second endpoint not denied: dialed, and its refusal fails the stage; the denied one does not count.
	tgt.Endpoints = append(tgt.Endpoints, discovery.Endpoint{Addresses: []netip.Addr{netip.MustParseAddr("127.0.0.2")}, Ready: true, PodName: "hostnames-b"})
	r = (&PodProber{Dialer: d}).Probe(shortCtx(t, 5*time.Second), tgt)
	if r.Outcome != Failed || r.Reason != ReasonRefused || r.Total != 1 || len(dialed) != 1 || dialed[0] != "127.0.0.2:9376" {
		t.Fatalf("one denied, one refusing: %v %s total %d, dialed %v; want failed refused over 1 check, only 127.0.0.2 dialed", r.Outcome, r.Reason, r.Total, dialed)
	}
	dialed = nil
	for _, p := range []Prober{&ProxyProber{Dialer: d, Connections: 4}} {
		if r := p.Probe(shortCtx(t, 5*time.Second), tgt); r.Outcome != Skipped || r.Reason != ReasonDeniedByNetworkPolicy || len(dialed) != 0 {
			t.Errorf("%s: %v %s, dialed %v; want skipped denied_by_network_policy, nothing dialed", p.Stage(), r.Outcome, r.Reason, dialed)
		}
	}
}

// A node agent that does not know the labels of a Pod on another node, in a namespace whose
// policies depend on them (Endpoint.PolicyNotEvaluated): the pod stage does not dial it and
// blames nothing for it; with every endpoint so, or some denied and some not evaluated, the stage
// is skipped as not evaluated (never "denied", which is layer policy); the VIP stages skip too.
func TestPolicyNotEvaluatedEndpointsNotDialed(t *testing.T) {
	var dialed []string
	d := &Dialer{Budget: looseBudget(t), dialContext: func(_ context.Context, network, address string) (net.Conn, error) {
		dialed = append(dialed, address)
		return nil, dialErr(syscall.ECONNREFUSED) // no packet leaves
	}}
	port := tcpPort("http", 80)
	tgt := vipTarget(port, netip.MustParseAddr("127.0.0.1"))
	tgt.PodsOnNode = "node-2"
	tgt.Endpoints[0].PolicyNotEvaluated = true
	r := (&PodProber{Dialer: d}).Probe(shortCtx(t, 5*time.Second), tgt)
	if r.Outcome != Skipped || r.Reason != ReasonPolicyNotEvaluated || len(dialed) != 0 || !strings.Contains(r.Detail, "another node") {
		t.Fatalf("every endpoint not evaluated: %v %s %q, dialed %v; want skipped policy_not_evaluated, nothing dialed", r.Outcome, r.Reason, r.Detail, dialed)
	}
	// A denied endpoint first, the not-evaluated one second: still not evaluated, not denied.
	denied := discovery.Endpoint{Addresses: []netip.Addr{netip.MustParseAddr("127.0.0.3")}, Ready: true, PodName: "hostnames-c",
		Ports: tgt.Endpoints[0].Ports, Denied: map[string]string{"http": "default/default-deny"}}
	tgt.Endpoints = append([]discovery.Endpoint{denied}, tgt.Endpoints...)
	if r := (&PodProber{Dialer: d}).Probe(shortCtx(t, 5*time.Second), tgt); r.Outcome != Skipped || r.Reason != ReasonPolicyNotEvaluated || len(dialed) != 0 {
		t.Fatalf("one denied, one not evaluated: %v %s, dialed %v; want skipped policy_not_evaluated", r.Outcome, r.Reason, dialed)
	}
	// An endpoint this node evaluated (or need not): dialed and judged as usual.
	tgt.Endpoints = append(tgt.Endpoints, discovery.Endpoint{Addresses: []netip.Addr{netip.MustParseAddr("127.0.0.2")}, Ready: true, PodName: "hostnames-b"})
	r = (&PodProber{Dialer: d}).Probe(shortCtx(t, 5*time.Second), tgt)
	if r.Outcome != Failed || r.Reason != ReasonRefused || r.Total != 1 || len(dialed) != 1 || dialed[0] != "127.0.0.2:9376" {
		t.Fatalf("one refusing next to not-evaluated ones: %v %s total %d, dialed %v; want failed refused over 1 check, only 127.0.0.2 dialed", r.Outcome, r.Reason, r.Total, dialed)
	}
	dialed = nil
	tgt.Endpoints = tgt.Endpoints[1:] // no denied one left: the VIP stages skip for the not-evaluated one
	for _, p := range []Prober{&ProxyProber{Dialer: d, Connections: 4}} {
		if r := p.Probe(shortCtx(t, 5*time.Second), tgt); r.Outcome != Skipped || r.Reason != ReasonPolicyNotEvaluated || len(dialed) != 0 {
			t.Errorf("%s: %v %s, dialed %v; want skipped policy_not_evaluated, nothing dialed", p.Stage(), r.Outcome, r.Reason, dialed)
		}
	}
}

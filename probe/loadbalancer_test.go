package probe

import (
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/svcprobe/svcprobe/discovery"
	"k8s.io/apimachinery/pkg/util/intstr"
)

// lbTarget is a LoadBalancer Service with ClusterIP 127.0.0.1, ingress IP lb, one ready endpoint
// on node1, and one TCP port.
func lbTarget(lb netip.Addr, port uint16) *discovery.Target {
	return &discovery.Target{
		UID: "uid-lb", Namespace: "default", Name: "shop", Kind: discovery.KindLoadBalancer,
		ClusterIPs: []netip.Addr{netip.MustParseAddr("127.0.0.1")}, LoadBalancerIPs: []netip.Addr{lb},
		Selector: map[string]string{"app": "shop"},
		Ports:    []discovery.Port{{Name: "http", Port: int32(port), TargetPort: intstr.FromInt32(8080), Protocol: "TCP", NodePort: 30080}},
		Endpoints: []discovery.Endpoint{{
			Addresses: []netip.Addr{netip.MustParseAddr("127.0.0.1")}, Ready: true, PodName: "shop-a", NodeName: "node1",
		}},
	}
}

func probeLB(t *testing.T, p *LoadBalancerProber, tgt *discovery.Target) Result {
	t.Helper()
	r := Run(shortCtx(t, 5*time.Second), p, tgt, 2*time.Second, time.Now())
	if r.Stage != StageLoadBalancer {
		t.Errorf("stage %q, want %q", r.Stage, StageLoadBalancer)
	}
	return r
}

// The ingress IP answers: ok, dialed on the Service port, as many connections as ready endpoints
// (up to Connections); it refuses: failed, with a hint naming the ingress IP's rules.
func TestLoadBalancerProber(t *testing.T) {
	s := newTCPServer(t, "127.0.0.4", 0)
	p := &LoadBalancerProber{Dialer: &Dialer{Budget: looseBudget(t)}, Connections: 4}
	tgt := lbTarget(s.addr.Addr(), s.addr.Port())
	tgt.Endpoints = append(tgt.Endpoints, discovery.Endpoint{Addresses: []netip.Addr{netip.MustParseAddr("127.0.0.2")}, Ready: true, PodName: "shop-b", NodeName: "node2"})
	r := probeLB(t, p, tgt)
	if r.Outcome != OK || r.Total != 2 || len(r.Checks) != 1 {
		t.Fatalf("result %v %s %q total %d, want ok over 2 connections in 1 check", r.Outcome, r.Reason, r.Detail, r.Total)
	}
	if want := s.addr.String() + " (load balancer ingress of default/shop)"; r.Checks[0].Subject != want {
		t.Errorf("subject %q, want %q", r.Checks[0].Subject, want)
	}
	waitFor(t, "two connections to the ingress IP", func() bool { return s.accepted.Load() >= 2 })

	free := freeTCPPort(t, "127.0.0.4")
	r = probeLB(t, p, lbTarget(free.Addr(), free.Port()))
	if r.Outcome != Failed || r.Reason != ReasonRefused {
		t.Fatalf("result %v %s %q, want failed refused", r.Outcome, r.Reason, r.Detail)
	}
	if !strings.Contains(r.Hint, "127.0.0.4") || !strings.Contains(r.Hint, "KUBE-EXT") || !strings.Contains(r.Hint, "nft list map ip kube-proxy service-ips") {
		t.Errorf("hint does not point at the ingress IP's rules: %q", r.Hint)
	}
}

// What the stage leaves alone, and why.
func TestLoadBalancerProberSkips(t *testing.T) {
	rec := &recordingDialer{}
	p := &LoadBalancerProber{Dialer: &Dialer{Budget: looseBudget(t), dialContext: rec.dial}}
	lb := netip.MustParseAddr("127.0.0.4")
	notLB := lbTarget(lb, 80)
	notLB.Kind = discovery.KindNodePort
	noIP := lbTarget(lb, 80)
	noIP.LoadBalancerIPs = nil
	noReady := lbTarget(lb, 80)
	noReady.Endpoints[0].Ready = false
	localElsewhere := lbTarget(lb, 80)
	localElsewhere.ExternalTrafficLocal = true
	denied := lbTarget(lb, 80)
	denied.Endpoints[0].Denied = map[string]string{"http": "default/deny"}
	for name, c := range map[string]struct {
		p      *LoadBalancerProber
		tgt    *discovery.Target
		reason Reason
		detail string
	}{
		"not a LoadBalancer":                 {p, notLB, ReasonNotProbed, "not a LoadBalancer"},
		"no ingress IP":                      {p, noIP, ReasonNotProbed, "no ingress IP"},
		"no ready endpoint":                  {p, noReady, ReasonNotProbed, "no ready endpoints"},
		"eTP Local, node unknown":            {p, localElsewhere, ReasonNotProbed, "node is unknown"},
		"eTP Local, no endpoint on the node": {&LoadBalancerProber{Dialer: p.Dialer, NodeName: "node2"}, localElsewhere, ReasonNotProbed, "no ready endpoint on node node2"},
		"denied by NetworkPolicy":            {p, denied, ReasonDeniedByNetworkPolicy, "default/deny"},
	} {
		r := probeLB(t, c.p, c.tgt)
		if r.Outcome != Skipped || r.Reason != c.reason || !strings.Contains(r.Detail, c.detail) {
			t.Errorf("%s: %v %s %q, want skipped %s mentioning %q", name, r.Outcome, r.Reason, r.Detail, c.reason, c.detail)
		}
	}
	if len(rec.got()) != 0 {
		t.Fatalf("dialed %v while skipping", rec.got())
	}
	// eTP Local on the node with the endpoint: probed.
	s := newTCPServer(t, "127.0.0.4", 0)
	here := lbTarget(s.addr.Addr(), s.addr.Port())
	here.ExternalTrafficLocal = true
	if r := probeLB(t, &LoadBalancerProber{Dialer: &Dialer{Budget: looseBudget(t)}, NodeName: "node1"}, here); r.Outcome != OK {
		t.Fatalf("eTP Local with a local endpoint: %v %s %q, want ok", r.Outcome, r.Reason, r.Detail)
	}
}

// The guard lets a Service's own ingress IPs be dialed (the cloud controller wrote them in its
// status), not another Service's, nor anything else outside the cluster.
func TestGuardAllowsOwnLoadBalancerIPs(t *testing.T) {
	g := &AddressGuard{ClusterCIDRs: []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")}}
	lb := netip.MustParseAddr("203.0.113.10")
	tgt := lbTarget(lb, 80)
	if !g.Allowed(tgt, lb) || !g.Allowed(tgt, netip.MustParseAddr("::ffff:203.0.113.10")) {
		t.Fatal("the Service's own ingress IP is refused")
	}
	other := lbTarget(netip.MustParseAddr("203.0.113.11"), 80)
	if g.Allowed(other, lb) || g.Allowed(nil, lb) {
		t.Fatal("an ingress IP is allowed for another Service, or for none")
	}
	rec := &recordingDialer{}
	r := probeLB(t, &LoadBalancerProber{Dialer: &Dialer{Budget: looseBudget(t), Guard: &AddressGuard{}, dialContext: rec.dial}}, tgt)
	if len(rec.got()) != 1 || rec.got()[0] != "tcp 203.0.113.10:80" || r.Reason == ReasonExternalNotAllowed {
		t.Fatalf("the own ingress IP through the guard: %s, dialed %v; want dialed once", r.Reason, rec.got())
	}
}

// The stages that reach the Pods through the service proxy: the ClusterIP, a NodePort and a load
// balancer's ingress IP, and no other (the store and the verdict explain their failures by the
// Pods' own).
func TestStageThroughProxy(t *testing.T) {
	want := map[Stage]bool{StageProxy: true, StageNodePort: true, StageLoadBalancer: true}
	for _, s := range Stages {
		if s.ThroughProxy() != want[s] {
			t.Errorf("%s.ThroughProxy() = %v, want %v", s, s.ThroughProxy(), want[s])
		}
	}
}

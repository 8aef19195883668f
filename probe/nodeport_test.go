package probe

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/svcprobe/svcprobe/discovery"
	"k8s.io/apimachinery/pkg/util/intstr"
)

// nodePortTarget is a NodePort Service with ClusterIP 127.0.0.1, one ready endpoint on node1,
// and one TCP port whose nodePort is nodePort. The node address is a loopback address too.
func nodePortTarget(nodePort uint16) *discovery.Target {
	return &discovery.Target{
		UID: "uid-np", Namespace: "default", Name: "web", Kind: discovery.KindNodePort,
		ClusterIPs: []netip.Addr{netip.MustParseAddr("127.0.0.1")}, Selector: map[string]string{"app": "web"},
		Ports: []discovery.Port{{Name: "http", Port: 80, TargetPort: intstr.FromInt32(8080), Protocol: "TCP", NodePort: int32(nodePort)}},
		Endpoints: []discovery.Endpoint{{
			Addresses: []netip.Addr{netip.MustParseAddr("127.0.0.1")}, Ready: true, PodName: "web-a", NodeName: "node1",
		}},
	}
}

func probeNodePort(t *testing.T, p *NodePortProber, tgt *discovery.Target) Result {
	t.Helper()
	r := Run(shortCtx(t, 5*time.Second), p, tgt, 2*time.Second, time.Now())
	if r.Stage != StageNodePort {
		t.Errorf("stage %q, want %q", r.Stage, StageNodePort)
	}
	return r
}

func TestNodePortProberSuccess(t *testing.T) {
	s := newTCPServer(t, "127.0.0.1", 0)
	p := &NodePortProber{Dialer: &Dialer{Budget: looseBudget(t)}, NodeAddrs: []netip.Addr{s.addr.Addr()}, NodeName: "node1"}
	r := probeNodePort(t, p, nodePortTarget(s.addr.Port()))
	if r.Outcome != OK || r.Total != 1 {
		t.Fatalf("result %v %s %q total %d, want ok with 1 check", r.Outcome, r.Reason, r.Detail, r.Total)
	}
	if want := s.addr.String() + ` (nodePort of port "http" (80 -> targetPort 8080), node node1)`; r.Checks[0].Subject != want {
		t.Errorf("subject %q, want %q", r.Checks[0].Subject, want)
	}
	waitFor(t, "the NodePort listener to see the connection", func() bool { return s.accepted.Load() > 0 })
}

func TestNodePortProberRefused(t *testing.T) {
	free := freeTCPPort(t, "127.0.0.1")
	p := &NodePortProber{Dialer: &Dialer{Budget: looseBudget(t)}, NodeAddrs: []netip.Addr{free.Addr()}}
	r := probeNodePort(t, p, nodePortTarget(free.Port()))
	if r.Outcome != Failed || r.Reason != ReasonRefused {
		t.Fatalf("result %v %s %q, want failed refused", r.Outcome, r.Reason, r.Detail)
	}
	if !strings.Contains(r.Hint, "KUBE-NODEPORTS") || !strings.Contains(r.Hint, strconv.Itoa(int(free.Port()))+"/tcp") {
		t.Errorf("hint does not point at the NodePort rules: %q", r.Hint)
	}
}

// A prober on the node's own network (hostNetwork: its Pod IP is a node address) marks its
// result FromNode, and its hint is about the node reaching its own NodePort; on the Pod network
// it is not marked.
func TestNodePortProberFromNode(t *testing.T) {
	free := freeTCPPort(t, "127.0.0.1")
	node := []netip.Addr{free.Addr()}
	for _, c := range []struct {
		podIPs []netip.Addr
		want   bool
	}{
		{[]netip.Addr{netip.MustParseAddr("127.0.0.9")}, false},
		{nil, false},
		{[]netip.Addr{netip.MustParseAddr("::ffff:" + free.Addr().String())}, true},
		{[]netip.Addr{netip.MustParseAddr("fd00::1"), free.Addr()}, true},
	} {
		from := SharesNodeNetwork(c.podIPs, node)
		if from != c.want {
			t.Errorf("SharesNodeNetwork(%v, %v) = %v, want %v", c.podIPs, node, from, c.want)
		}
		p := &NodePortProber{Dialer: &Dialer{Budget: looseBudget(t)}, NodeAddrs: node, FromNode: from}
		r := probeNodePort(t, p, nodePortTarget(free.Port()))
		if r.Outcome != Failed || r.FromNode != c.want {
			t.Fatalf("pod IPs %v: result %v %s from node %v, want failed from node %v", c.podIPs, r.Outcome, r.Reason, r.FromNode, c.want)
		}
		if got := strings.Contains(r.Hint, "dials its own address"); got != c.want {
			t.Errorf("pod IPs %v: hint %q", c.podIPs, r.Hint)
		}
	}
}

// Windows' failure "NodePort from the node itself" shows as a timeout or a reset on Winsock; the
// stage classifies injected Winsock errors the same way as on Linux.
func TestNodePortProberWindowsErrors(t *testing.T) {
	for _, c := range []struct {
		errno syscall.Errno
		want  Reason
	}{{wsaetimedout, ReasonTimeout}, {wsaeconnrefused, ReasonRefused}, {wsaenobufs, ReasonPortExhausted}} {
		err := dialErr(c.errno)
		d := &Dialer{Budget: looseBudget(t), dialContext: func(context.Context, string, string) (net.Conn, error) { return nil, err }}
		p := &NodePortProber{Dialer: d, NodeAddrs: []netip.Addr{netip.MustParseAddr("127.0.0.1")}}
		if r := probeNodePort(t, p, nodePortTarget(30080)); r.Reason != c.want {
			t.Errorf("errno %d: reason %s, want %s", c.errno, r.Reason, c.want)
		}
	}
}

func TestNodePortProberSkips(t *testing.T) {
	rec := &recordingDialer{}
	d := &Dialer{Budget: looseBudget(t), dialContext: rec.dial}
	lo := []netip.Addr{netip.MustParseAddr("127.0.0.1")}
	clusterIP := nodePortTarget(30080)
	clusterIP.Kind = discovery.KindClusterIP
	noEndpoints := nodePortTarget(30080)
	noEndpoints.Endpoints = nil
	etpLocal := nodePortTarget(30080)
	etpLocal.ExternalTrafficLocal = true
	noNodePort := nodePortTarget(30080)
	noNodePort.Kind, noNodePort.Ports[0].NodePort = discovery.KindLoadBalancer, 0
	v6only := nodePortTarget(30080)
	v6only.ClusterIPs = []netip.Addr{netip.MustParseAddr("::1")}
	for _, c := range []struct {
		name string
		p    *NodePortProber
		t    *discovery.Target
		why  string
	}{
		{"ClusterIP Service", &NodePortProber{Dialer: d, NodeAddrs: lo}, clusterIP, "not a NodePort"},
		{"no node address", &NodePortProber{Dialer: d}, nodePortTarget(30080), "--node.address"},
		{"no ready endpoints", &NodePortProber{Dialer: d, NodeAddrs: lo}, noEndpoints, "no ready endpoints"},
		{"eTP Local, node unknown", &NodePortProber{Dialer: d, NodeAddrs: lo}, etpLocal, "--node-name"},
		{"eTP Local, no local endpoint", &NodePortProber{Dialer: d, NodeAddrs: lo, NodeName: "node2"}, etpLocal, "no ready endpoint on node node2"},
		{"LoadBalancer without NodePorts", &NodePortProber{Dialer: d, NodeAddrs: lo}, noNodePort, "no TCP NodePorts"},
		{"node address of another family", &NodePortProber{Dialer: d, NodeAddrs: lo}, v6only, "IP families"},
	} {
		t.Run(c.name, func(t *testing.T) {
			r := probeNodePort(t, c.p, c.t)
			if r.Outcome != Skipped || !strings.Contains(r.Detail, c.why) {
				t.Fatalf("result %v %q, want skipped saying %q", r.Outcome, r.Detail, c.why)
			}
		})
	}
	if got := rec.got(); len(got) != 0 {
		t.Fatalf("skipped stages dialed %v", got)
	}
	// eTP Local with a ready endpoint on this node is probed.
	r := probeNodePort(t, &NodePortProber{Dialer: d, NodeAddrs: lo, NodeName: "node1"}, etpLocal)
	if r.Outcome != Failed || len(rec.got()) != 1 || rec.got()[0] != "tcp 127.0.0.1:30080" {
		t.Fatalf("eTP Local on the endpoint's node: %v %s, dialed %v", r.Outcome, r.Reason, rec.got())
	}
}

// Node addresses from the flags or the downward API are in the cluster: the guard lets them through,
// and nothing else that a Service does not own.
func TestGuardAllowsNodeAddresses(t *testing.T) {
	g := &AddressGuard{NodeAddrs: []netip.Addr{netip.MustParseAddr("127.0.0.3")}}
	if !g.Allowed(nil, netip.MustParseAddr("127.0.0.3")) || !g.Allowed(nil, netip.MustParseAddr("::ffff:127.0.0.3")) {
		t.Fatal("the node address is refused")
	}
	if g.Allowed(nil, netip.MustParseAddr("127.0.0.4")) {
		t.Fatal("an address that is no node's is allowed")
	}
	rec := &recordingDialer{}
	d := &Dialer{Budget: looseBudget(t), Guard: &AddressGuard{}, dialContext: rec.dial}
	r := probeNodePort(t, &NodePortProber{Dialer: d, NodeAddrs: []netip.Addr{netip.MustParseAddr("127.0.0.5")}}, nodePortTarget(30080))
	if r.Reason != ReasonExternalNotAllowed || len(rec.got()) != 0 {
		t.Fatalf("a node address the guard does not know: %s, dialed %v", r.Reason, rec.got())
	}
}

// internalTrafficPolicy: Local (the node agents' hairpin Service): the proxy stage probes the VIP
// only on a node with a local endpoint, and SelfOnly considers only the local endpoints.
func TestProxyProberInternalTrafficLocal(t *testing.T) {
	rec := &recordingDialer{}
	d := &Dialer{Budget: looseBudget(t), dialContext: rec.dial}
	tgt := vipTarget(tcpPort("hairpin", 9817), netip.MustParseAddr("127.0.0.1"))
	tgt.InternalTrafficLocal = true
	tgt.Endpoints = []discovery.Endpoint{
		{Addresses: []netip.Addr{netip.MustParseAddr("127.0.0.1")}, Ready: true, NodeName: "node1"},
		{Addresses: []netip.Addr{netip.MustParseAddr("127.0.0.2")}, Ready: true, NodeName: "node2"},
	}
	for node, why := range map[string]string{"": "--node-name", "node3": "no ready endpoint on node node3"} {
		r := (&ProxyProber{Dialer: d, NodeName: node}).Probe(shortCtx(t, time.Second), tgt)
		if r.Outcome != Skipped || !strings.Contains(r.Detail, why) {
			t.Errorf("node %q: %v %q, want skipped saying %q", node, r.Outcome, r.Detail, why)
		}
	}
	if len(rec.got()) != 0 {
		t.Fatalf("dialed %v", rec.got())
	}
	r := (&ProxyProber{Dialer: d, NodeName: "node1", Self: []netip.Addr{netip.MustParseAddr("127.0.0.1")}}).Probe(shortCtx(t, time.Second), tgt)
	if r.Outcome != Failed || !r.SelfOnly || len(rec.got()) != 1 {
		t.Fatalf("on node1: %v SelfOnly %v dialed %v, want a failed self-only probe of the VIP", r.Outcome, r.SelfOnly, rec.got())
	}
}

// kube-proxy's service health server for a LoadBalancer Service with externalTrafficPolicy Local,
// on the prober's node, which has a ready endpoint: 200 passes; 503 (the node claims no local
// endpoint) or no answer fails the stage with health_check_failing while the NodePort answers; a
// failing NodePort keeps its own reason; without a healthCheckNodePort nothing more is asked.
// healthServer is a fake kube-proxy service health server: it answers every request with its
// status (and a body like kube-proxy's) and records the paths asked.
type healthServer struct {
	addr   netip.AddrPort
	mu     sync.Mutex
	status int
	asked  []string
}

func newHealthServer(t *testing.T, status int) *healthServer {
	t.Helper()
	h := &healthServer{status: status}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h.mu.Lock()
		h.asked = append(h.asked, r.URL.Path)
		code := h.status
		h.mu.Unlock()
		w.WriteHeader(code)
		fmt.Fprintf(w, `{"service":{"namespace":"default","name":"web"},"localEndpoints":%d}`, map[bool]int{true: 1}[code == 200])
	}))
	t.Cleanup(srv.Close)
	h.addr = netip.MustParseAddrPort(strings.TrimPrefix(srv.URL, "http://"))
	return h
}

func (h *healthServer) setStatus(code int) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.status = code
}

// takeAsked returns the paths asked since the last call.
func (h *healthServer) takeAsked() []string {
	h.mu.Lock()
	defer h.mu.Unlock()
	a := h.asked
	h.asked = nil
	return a
}

func TestNodePortProberHealthCheck(t *testing.T) {
	np := newTCPServer(t, "127.0.0.1", 0)
	hs := newHealthServer(t, 200)
	hcAddr := hs.addr
	target := func(hcPort uint16, nodePort uint16) *discovery.Target {
		tg := nodePortTarget(nodePort)
		tg.Kind, tg.ExternalTrafficLocal, tg.HealthCheckNodePort = discovery.KindLoadBalancer, true, int32(hcPort)
		return tg
	}
	p := &NodePortProber{Dialer: &Dialer{Budget: looseBudget(t)}, NodeAddrs: []netip.Addr{np.addr.Addr()}, NodeName: "node1"}

	r := probeNodePort(t, p, target(hcAddr.Port(), np.addr.Port()))
	if r.Outcome != OK || len(r.Checks) != 2 {
		t.Fatalf("health check 200: %v %s %q with %d checks, want ok with the NodePort's and the health check's", r.Outcome, r.Reason, r.Detail, len(r.Checks))
	}
	if asked := hs.takeAsked(); len(asked) != 1 || asked[0] != "/healthz" {
		t.Errorf("health server asked %v, want GET /healthz once", asked)
	}
	hs.setStatus(503)

	r = probeNodePort(t, p, target(hcAddr.Port(), np.addr.Port()))
	if r.Outcome != Failed || r.Reason != ReasonHealthCheckFailing || !strings.Contains(r.Detail, "503") {
		t.Fatalf("health check 503: %v %s %q, want failed health_check_failing saying 503", r.Outcome, r.Reason, r.Detail)
	}
	if !strings.Contains(r.Hint, "healthCheckNodePort "+strconv.Itoa(int(hcAddr.Port()))) {
		t.Errorf("hint does not name the health check port: %q", r.Hint)
	}

	free := freeTCPPort(t, "127.0.0.1")
	r = probeNodePort(t, p, target(free.Port(), np.addr.Port()))
	if r.Outcome != Failed || r.Reason != ReasonHealthCheckFailing {
		t.Fatalf("health check not answering: %v %s %q, want failed health_check_failing", r.Outcome, r.Reason, r.Detail)
	}

	// The NodePort itself refused: its reason, not the health check's.
	r = probeNodePort(t, p, target(hcAddr.Port(), free.Port()))
	if r.Outcome != Failed || r.Reason != ReasonRefused {
		t.Fatalf("NodePort refused: %v %s, want failed refused", r.Outcome, r.Reason)
	}

	// Cluster policy or no healthCheckNodePort: the health server is not asked.
	hs.takeAsked()
	cluster := target(hcAddr.Port(), np.addr.Port())
	cluster.ExternalTrafficLocal = false
	for _, tg := range []*discovery.Target{cluster, target(0, np.addr.Port())} {
		if r := probeNodePort(t, p, tg); r.Outcome != OK || len(r.Checks) != 1 {
			t.Fatalf("%v %s with %d checks, want ok with the NodePort's check only", r.Outcome, r.Reason, len(r.Checks))
		}
	}
	if asked := hs.takeAsked(); len(asked) != 0 {
		t.Errorf("health server asked %v for a Service without a health check", asked)
	}
}

// On a node without a ready endpoint of a LoadBalancer Service with externalTrafficPolicy Local
// the NodePort is not dialed and kube-proxy's health check must not say 200: 503 or no answer
// pass (the load balancer leaves the node out), 200 fails the stage with health_check_stale (the
// load balancer sends there and kube-proxy drops it). Without a node name, a health check port or
// for a NodePort Service, the stage stays skipped and nothing is asked.
func TestNodePortProberHealthCheckNoLocalEndpoint(t *testing.T) {
	hs := newHealthServer(t, 503)
	hcAddr := hs.addr
	np := newTCPServer(t, "127.0.0.1", 0)
	target := func(hcPort uint16) *discovery.Target {
		tg := nodePortTarget(np.addr.Port()) // its one ready endpoint runs on node1
		tg.Kind, tg.ExternalTrafficLocal, tg.HealthCheckNodePort = discovery.KindLoadBalancer, true, int32(hcPort)
		return tg
	}
	p := &NodePortProber{Dialer: &Dialer{Budget: looseBudget(t)}, NodeAddrs: []netip.Addr{hcAddr.Addr()}, NodeName: "node2"}
	takeAsked := hs.takeAsked

	r := probeNodePort(t, p, target(hcAddr.Port()))
	if r.Outcome != OK || len(r.Checks) != 1 || !r.Checks[0].OK() || !strings.Contains(r.Checks[0].Detail, "503") {
		t.Fatalf("503 without a local endpoint: %v %s %q checks %+v, want ok with one passed check saying 503", r.Outcome, r.Reason, r.Detail, r.Checks)
	}
	if a := takeAsked(); len(a) != 1 || a[0] != "/healthz" {
		t.Errorf("health server asked %v, want GET /healthz once", a)
	}
	if np.accepted.Load() != 0 {
		t.Errorf("the NodePort was dialed on a node without a local endpoint")
	}

	hs.setStatus(200)
	r = probeNodePort(t, p, target(hcAddr.Port()))
	if r.Outcome != Failed || r.Reason != ReasonHealthCheckStale || r.Failing != 1 || r.Total != 1 {
		t.Fatalf("200 without a local endpoint: %v %s %q %d/%d, want failed health_check_stale 1/1", r.Outcome, r.Reason, r.Detail, r.Failing, r.Total)
	}
	if !strings.Contains(r.Hint, "node2") || !strings.Contains(r.Hint, "healthCheckNodePort "+strconv.Itoa(int(hcAddr.Port()))) {
		t.Errorf("hint does not name the node and the port: %q", r.Hint)
	}
	takeAsked()

	// No answer at all: the load balancer leaves the node out too.
	free := freeTCPPort(t, "127.0.0.1")
	if r := probeNodePort(t, p, target(free.Port())); r.Outcome != OK || len(r.Checks) != 1 || !r.Checks[0].OK() {
		t.Fatalf("health check refused without a local endpoint: %v %s %q, want ok", r.Outcome, r.Reason, r.Detail)
	}

	// Nothing asked: no node name, no health check port, a NodePort Service.
	unknown := &NodePortProber{Dialer: p.Dialer, NodeAddrs: p.NodeAddrs}
	nodePortSvc := target(hcAddr.Port())
	nodePortSvc.Kind = discovery.KindNodePort
	for name, c := range map[string]struct {
		p  *NodePortProber
		tg *discovery.Target
	}{"node unknown": {unknown, target(hcAddr.Port())}, "no healthCheckNodePort": {p, target(0)}, "NodePort Service": {p, nodePortSvc}} {
		if r := probeNodePort(t, c.p, c.tg); r.Outcome != Skipped || len(r.Checks) != 0 {
			t.Errorf("%s: %v %s with %d checks, want skipped with none", name, r.Outcome, r.Reason, len(r.Checks))
		}
	}
	if a := takeAsked(); len(a) != 0 {
		t.Errorf("health server asked %v where it should not be", a)
	}
}

// A dual-stack Service whose NodePort answers on the node's IPv4 address and not on its IPv6 one:
// the stage fails and says which family alone fails; with both failing, no family.
func TestNodePortProberFamily(t *testing.T) {
	if ln, err := net.Listen("tcp", "[::1]:0"); err != nil {
		t.Fatalf("no IPv6 loopback here: %v", err)
	} else {
		ln.Close()
	}
	s := newTCPServer(t, "127.0.0.1", 0)
	v4, v6 := netip.MustParseAddr("127.0.0.1"), netip.MustParseAddr("::1")
	tg := nodePortTarget(s.addr.Port())
	tg.ClusterIPs = []netip.Addr{v4, v6}
	p := &NodePortProber{Dialer: &Dialer{Budget: looseBudget(t)}, NodeAddrs: []netip.Addr{v4, v6}, NodeName: "node1"}
	r := probeNodePort(t, p, tg)
	if r.Outcome != Failed || r.Family != FamilyIPv6 || len(r.Checks) != 2 {
		t.Fatalf("IPv4 answers, IPv6 does not: %v %s family %q with %d checks, want failed, family ipv6, 2 checks", r.Outcome, r.Reason, r.Family, len(r.Checks))
	}
	free := freeTCPPort(t, "127.0.0.1")
	tg = nodePortTarget(free.Port())
	tg.ClusterIPs = []netip.Addr{v4, v6}
	if r := probeNodePort(t, p, tg); r.Outcome != Failed || r.Family != "" {
		t.Fatalf("both families refused: %v family %q, want failed with no family", r.Outcome, r.Family)
	}
}

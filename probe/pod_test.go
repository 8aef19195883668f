package probe

import (
	"context"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/svcprobe/svcprobe/discovery"
)

// webPort is a Service port "web" (80) whose targetPort is the name "http", resolved per
// endpoint by the EndpointSlice, as in a real cluster where each test listener has its own port.
var webPort = discovery.Port{Name: "web", Port: 80, TargetPort: intstr.FromString("http"), Protocol: "TCP"}

// readyEndpoint is a ready endpoint of Pod pod at addr, publishing port name -> addr's port.
func readyEndpoint(pod string, addr netip.AddrPort, portName string) discovery.Endpoint {
	return discovery.Endpoint{
		Addresses: []netip.Addr{addr.Addr()},
		Ready:     true, Serving: true,
		PodName: pod,
		Ports:   []discovery.EndpointPort{{Name: portName, Port: int32(addr.Port()), Protocol: "TCP"}},
	}
}

func podTarget(ports []discovery.Port, eps ...discovery.Endpoint) *discovery.Target {
	return &discovery.Target{
		Namespace: "default", Name: "hostnames", Kind: discovery.KindClusterIP,
		ClusterIPs: []netip.Addr{netip.MustParseAddr("127.0.0.1")},
		Selector:   map[string]string{"app": "hostnames"},
		Ports:      ports, Endpoints: eps,
	}
}

func probePods(t *testing.T, d *Dialer, tgt *discovery.Target) Result {
	t.Helper()
	r := (&PodProber{Dialer: d}).Probe(shortCtx(t, 5*time.Second), tgt)
	if r.Stage != StagePod {
		t.Errorf("stage %q, want %q", r.Stage, StagePod)
	}
	return r
}

func subjects(r Result) []string {
	var s []string
	for _, c := range r.Checks {
		s = append(s, c.Subject)
	}
	return s
}

func TestPodProberAllAnswer(t *testing.T) {
	a := newTCPServer(t, "127.0.0.1", 0)
	b := newTCPServer(t, "127.0.0.2", 0)
	r := probePods(t, &Dialer{Budget: looseBudget(t)}, podTarget([]discovery.Port{webPort},
		readyEndpoint("hostnames-a", a.addr, "web"), readyEndpoint("hostnames-b", b.addr, "web")))
	if r.Outcome != OK || r.Reason != ReasonSuccess || r.Failing != 0 || r.Total != 2 {
		t.Fatalf("result %v %s failing %d/%d (%s), want ok 0/2", r.Outcome, r.Reason, r.Failing, r.Total, r.Detail)
	}
	want := []string{a.addr.String() + " (pod hostnames-a)", b.addr.String() + " (pod hostnames-b)"}
	if got := subjects(r); strings.Join(got, "|") != strings.Join(want, "|") {
		t.Errorf("subjects %q, want %q", got, want)
	}
	if r.Hint != "" {
		t.Errorf("hint %q on success", r.Hint)
	}
}

// TestPodProberDegraded: one of three endpoints refuses; the stage fails and says 1 of 3.
func TestPodProberDegraded(t *testing.T) {
	a := newTCPServer(t, "127.0.0.1", 0)
	b := newTCPServer(t, "127.0.0.2", 0)
	dead := freeTCPPort(t, "127.0.0.3")
	r := probePods(t, &Dialer{Budget: looseBudget(t)}, podTarget([]discovery.Port{webPort},
		readyEndpoint("hostnames-a", a.addr, "web"),
		readyEndpoint("hostnames-b", b.addr, "web"),
		readyEndpoint("hostnames-c", dead, "web")))
	if r.Outcome != Failed || r.Reason != ReasonRefused || r.Failing != 1 || r.Total != 3 {
		t.Fatalf("result %v %s failing %d/%d, want failed refused 1/3", r.Outcome, r.Reason, r.Failing, r.Total)
	}
	if !strings.Contains(r.Detail, "hostnames-c") {
		t.Errorf("detail %q does not name the failing Pod", r.Detail)
	}
	if !strings.Contains(r.Hint, "hostnames-c") || strings.Contains(r.Hint, "targetPort is the likely cause") {
		t.Errorf("hint %q: want the failing Pod, not the targetPort", r.Hint)
	}
	for i, want := range []Reason{ReasonSuccess, ReasonSuccess, ReasonRefused} {
		if r.Checks[i].Reason != want {
			t.Errorf("check %d (%s): %s, want %s", i, r.Checks[i].Subject, r.Checks[i].Reason, want)
		}
	}
	// Each check names its endpoint, for the per-endpoint series and the unreachable count.
	if c := r.Checks[2]; c.Pod != "hostnames-c" || c.Addr != "127.0.0.3" {
		t.Errorf("check 2 names pod %q addr %q, want hostnames-c 127.0.0.3", c.Pod, c.Addr)
	}
}

// TestPodProberAllRefuseBlamesTargetPort: ready Pods that all refuse the same port are up but
// listen elsewhere: the hint points at the Service's targetPort.
func TestPodProberAllRefuseBlamesTargetPort(t *testing.T) {
	port := discovery.Port{Name: "web", Port: 80, TargetPort: intstr.FromInt32(9376), Protocol: "TCP"}
	r := probePods(t, &Dialer{Budget: looseBudget(t)}, podTarget([]discovery.Port{port},
		readyEndpoint("hostnames-a", freeTCPPort(t, "127.0.0.1"), "web"),
		readyEndpoint("hostnames-b", freeTCPPort(t, "127.0.0.2"), "web")))
	if r.Outcome != Failed || r.Failing != 2 || r.Total != 2 {
		t.Fatalf("result %v failing %d/%d, want failed 2/2", r.Outcome, r.Failing, r.Total)
	}
	for _, want := range []string{"targetPort", "9376", `"web"`, "containerPort"} {
		if !strings.Contains(r.Hint, want) {
			t.Errorf("hint %q lacks %q", r.Hint, want)
		}
	}
}

// TestPodProberSkipsNotReadyAndTerminating: endpoints that are not ready or are terminating are
// expected not to answer; probing them would blame a rollout.
func TestPodProberSkipsNotReadyAndTerminating(t *testing.T) {
	ready := newTCPServer(t, "127.0.0.1", 0)
	untouchable := newTCPServer(t, "127.0.0.4", 0)
	notReady := readyEndpoint("hostnames-starting", untouchable.addr, "web")
	notReady.Ready, notReady.Serving = false, false
	terminating := readyEndpoint("hostnames-leaving", untouchable.addr, "web")
	terminating.Terminating = true // still Ready: a Service with publishNotReadyAddresses
	r := probePods(t, &Dialer{Budget: looseBudget(t)}, podTarget([]discovery.Port{webPort},
		notReady, readyEndpoint("hostnames-a", ready.addr, "web"), terminating))
	if r.Outcome != OK || r.Total != 1 {
		t.Fatalf("result %v total %d (%q), want ok with the one ready endpoint", r.Outcome, r.Total, subjects(r))
	}
	time.Sleep(50 * time.Millisecond) // a connection would be in the accept queue by now
	if n := untouchable.accepted.Load(); n != 0 {
		t.Fatalf("not-ready/terminating endpoint got %d connections, want none", n)
	}
}

func TestPodProberNoReadyEndpointsIsSkipped(t *testing.T) {
	ep := readyEndpoint("hostnames-a", netip.MustParseAddrPort("127.0.0.1:9"), "web")
	ep.Ready = false
	d := &Dialer{dialContext: func(context.Context, string, string) (net.Conn, error) {
		t.Error("dialed with no ready endpoint")
		return nil, syscall.ECONNREFUSED
	}}
	for _, tgt := range []*discovery.Target{podTarget([]discovery.Port{webPort}), podTarget([]discovery.Port{webPort}, ep)} {
		if r := probePods(t, d, tgt); r.Outcome != Skipped || r.Reason != ReasonNotProbed {
			t.Errorf("result %v %s, want skipped", r.Outcome, r.Reason)
		}
	}
}

// TestPodProberUDP: UDP is probed on 53 only (a DNS query), never elsewhere, and SCTP not at all.
func TestPodProberUDP(t *testing.T) {
	udp := func(name string, port int32) discovery.Port {
		return discovery.Port{Name: name, Port: port, TargetPort: intstr.FromInt32(port), Protocol: "UDP"}
	}
	sctp := discovery.Port{Name: "sctp", Port: 3868, TargetPort: intstr.FromInt32(3868), Protocol: "SCTP"}
	ep := discovery.Endpoint{Addresses: []netip.Addr{netip.MustParseAddr("127.0.0.1")}, Ready: true, PodName: "p"}

	var mu sync.Mutex
	var dialed []string
	// No packet is sent: the hook records the dial and refuses it.
	d := &Dialer{Budget: looseBudget(t), dialContext: func(_ context.Context, network, address string) (net.Conn, error) {
		mu.Lock()
		dialed = append(dialed, network+" "+address)
		mu.Unlock()
		return nil, dialErr(syscall.ECONNREFUSED)
	}}

	r := probePods(t, d, podTarget([]discovery.Port{udp("syslog", 514), sctp}, ep))
	if r.Outcome != Skipped || r.Detail != "no TCP ports (UDP not probed)" {
		t.Errorf("UDP 514 + SCTP: result %v %q, want skipped: no TCP ports (UDP not probed)", r.Outcome, r.Detail)
	}
	if len(dialed) != 0 {
		t.Fatalf("dialed %q for ports that are not probed", dialed)
	}

	r = probePods(t, d, podTarget([]discovery.Port{udp("dns", 53), udp("syslog", 514)}, ep))
	if r.Total != 1 || r.Checks[0].Subject != "127.0.0.1:53/udp (pod p)" || r.Reason != ReasonRefused {
		t.Fatalf("UDP 53: checks %q reason %s, want one DNS check on 127.0.0.1:53/udp", subjects(r), r.Reason)
	}
	if len(dialed) != 1 || dialed[0] != "udp 127.0.0.1:53" {
		t.Errorf("dialed %q, want [udp 127.0.0.1:53]", dialed)
	}
}

// httpServerOn starts an httptest server on a given loopback IP (httptest picks 127.0.0.1).
func httpServerOn(t *testing.T, ip string, h http.Handler) netip.AddrPort {
	t.Helper()
	ln, err := net.Listen("tcp", net.JoinHostPort(ip, "0"))
	if err != nil {
		t.Fatal(err)
	}
	s := httptest.NewUnstartedServer(h)
	_ = s.Listener.Close()
	s.Listener = ln
	s.Start()
	t.Cleanup(s.Close)
	return mustAddrPort(t, ln.Addr())
}

// TestPodProberHTTPAndOrder: HTTP where the annotation asks for it, TCP elsewhere; checks are in
// endpoint order, then port order, whatever order the concurrent probes finish in.
func TestPodProberHTTPAndOrder(t *testing.T) {
	ports := []discovery.Port{
		{Name: "web", Port: 80, TargetPort: intstr.FromString("http"), Protocol: "TCP"},
		{Name: "raw", Port: 81, TargetPort: intstr.FromString("raw"), Protocol: "TCP"},
	}
	var eps []discovery.Endpoint
	var want []string
	for i, ip := range []string{"127.0.0.1", "127.0.0.2"} {
		delay := time.Duration(1-i) * 200 * time.Millisecond // the first endpoint answers last
		web := httpServerOn(t, ip, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.URL.Path != "/healthz" {
				w.WriteHeader(http.StatusNotFound)
				return
			}
			time.Sleep(delay)
		}))
		raw := newTCPServer(t, ip, 0).addr
		pod := []string{"pod-a", "pod-b"}[i]
		eps = append(eps, discovery.Endpoint{
			Addresses: []netip.Addr{web.Addr()}, Ready: true, PodName: pod,
			Ports: []discovery.EndpointPort{{Name: "web", Port: int32(web.Port())}, {Name: "raw", Port: int32(raw.Port())}},
		})
		want = append(want, web.String()+" (pod "+pod+")", raw.String()+" (pod "+pod+")")
	}
	tgt := podTarget(ports, eps...)
	tgt.Options.HTTP = map[string]discovery.HTTPOptions{"web": {Path: "/healthz", StatusMin: 200, StatusMax: 299}}
	r := probePods(t, &Dialer{Budget: looseBudget(t)}, tgt)
	if got := subjects(r); strings.Join(got, "|") != strings.Join(want, "|") {
		t.Fatalf("subjects\n%q, want\n%q", got, want)
	}
	if r.Outcome != OK || r.Total != 4 {
		t.Fatalf("result %v total %d (%s), want ok 4", r.Outcome, r.Total, r.Detail)
	}
	for i, c := range r.Checks {
		isHTTP := strings.Contains(c.Detail, "HTTP 200")
		if isHTTP != (i%2 == 0) {
			t.Errorf("check %q: %q, want HTTP on web only", c.Subject, c.Detail)
		}
	}
}

// TestPodProberConcurrent: endpoints are probed at once, not one after the other.
func TestPodProberConcurrent(t *testing.T) {
	const delay = 300 * time.Millisecond
	var eps []discovery.Endpoint
	for range 3 {
		s := httptest.NewServer(http.HandlerFunc(func(http.ResponseWriter, *http.Request) { time.Sleep(delay) }))
		t.Cleanup(s.Close)
		eps = append(eps, readyEndpoint("p", mustAddrPort(t, s.Listener.Addr()), "web"))
	}
	tgt := podTarget([]discovery.Port{webPort}, eps...)
	tgt.Options.HTTP = map[string]discovery.HTTPOptions{"": {Path: "/", StatusMin: 200, StatusMax: 299}}
	start := time.Now()
	r := probePods(t, &Dialer{Budget: looseBudget(t)}, tgt)
	if r.Outcome != OK {
		t.Fatalf("result %v %s %s", r.Outcome, r.Reason, r.Detail)
	}
	if took := time.Since(start); took >= 3*delay {
		t.Errorf("3 endpoints of %v each took %v: probed one after the other", delay, took)
	}
}

func TestPodProberHTTPStatus(t *testing.T) {
	s := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.WriteHeader(http.StatusServiceUnavailable)
	}))
	defer s.Close()
	tgt := podTarget([]discovery.Port{webPort}, readyEndpoint("p", mustAddrPort(t, s.Listener.Addr()), "web"))
	tgt.Options.HTTP = map[string]discovery.HTTPOptions{"80": {Path: "/ready", StatusMin: 200, StatusMax: 399}}
	r := probePods(t, &Dialer{Budget: looseBudget(t)}, tgt)
	if r.Outcome != Failed || r.Reason != ReasonHTTPStatus || !strings.Contains(r.Detail, "503") {
		t.Fatalf("result %v %s %q, want failed http_status 503", r.Outcome, r.Reason, r.Detail)
	}
}

// TestPodProberTargetPortFallback: a slice without the port falls back to a numeric targetPort,
// or to the Service port when targetPort is unset; a named one cannot be resolved.
func TestPodProberTargetPortFallback(t *testing.T) {
	s := newTCPServer(t, "127.0.0.1", 0)
	bare := discovery.Endpoint{Addresses: []netip.Addr{s.addr.Addr()}, Ready: true, PodName: "p"}
	d := &Dialer{Budget: looseBudget(t)}

	numeric := discovery.Port{Name: "web", Port: 80, TargetPort: intstr.FromInt32(int32(s.addr.Port())), Protocol: "TCP"}
	if r := probePods(t, d, podTarget([]discovery.Port{numeric}, bare)); r.Outcome != OK || r.Total != 1 {
		t.Errorf("numeric targetPort: %v %s %q", r.Outcome, r.Reason, r.Detail)
	}
	unset := discovery.Port{Name: "web", Port: int32(s.addr.Port())} // protocol defaults to TCP
	if r := probePods(t, d, podTarget([]discovery.Port{unset}, bare)); r.Outcome != OK || r.Total != 1 {
		t.Errorf("unset targetPort: %v %s %q", r.Outcome, r.Reason, r.Detail)
	}
	named := discovery.Port{Name: "web", Port: 80, TargetPort: intstr.FromString("http"), Protocol: "TCP"}
	r := probePods(t, d, podTarget([]discovery.Port{named}, bare))
	if r.Outcome != Skipped || !strings.Contains(r.Detail, "targetPort http") {
		t.Errorf("unresolved named targetPort: %v %q, want skipped naming it", r.Outcome, r.Detail)
	}
}

func TestPodProberBudgetExhausted(t *testing.T) {
	s := newTCPServer(t, "127.0.0.1", 0)
	r := (&PodProber{Dialer: &Dialer{Budget: heldBudget(t)}}).Probe(shortCtx(t, 50*time.Millisecond),
		podTarget([]discovery.Port{webPort}, readyEndpoint("p", s.addr, "web")))
	if r.Outcome != Failed || r.Reason != ReasonBudget {
		t.Fatalf("result %v %s, want failed budget_exhausted", r.Outcome, r.Reason)
	}
}

// The hint tells a drop (timeout: a firewall or policy) from a reject (refused: nothing listens).
func TestPodHintDropOrReject(t *testing.T) {
	ports := []discovery.Port{{Name: "http", Port: 80, Protocol: "TCP"}}
	jobs := []job{{podName: "a", port: 0, addr: netip.MustParseAddrPort("198.18.0.10:9376")}, {podName: "b", port: 0, addr: netip.MustParseAddrPort("198.18.0.11:9376")}}
	drop := podHint(ports, jobs, []Check{{Reason: ReasonTimeout}, {Reason: ReasonSuccess}})
	if !strings.Contains(drop, "NetworkPolicy") || strings.Contains(drop, "nothing listens") {
		t.Errorf("timeout hint %q, want the drop named", drop)
	}
	reject := podHint(ports, jobs, []Check{{Reason: ReasonRefused}, {Reason: ReasonSuccess}})
	if !strings.Contains(reject, "nothing listens") || strings.Contains(reject, "NetworkPolicy") {
		t.Errorf("refused hint %q, want nothing-listens", reject)
	}
}

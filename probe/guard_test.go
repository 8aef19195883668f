package probe

import (
	"bytes"
	"context"
	"log/slog"
	"net"
	"net/netip"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/svcprobe/svcprobe/discovery"
)

// recordingDialer refuses every dial without sending a packet and records what was asked: a
// guard test must prove that a refused address was never dialed, without ever dialing it.
type recordingDialer struct {
	mu     sync.Mutex
	dialed []string
}

func (r *recordingDialer) dial(_ context.Context, network, address string) (net.Conn, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.dialed = append(r.dialed, network+" "+address)
	return nil, dialErr(syscall.ECONNREFUSED)
}

func (r *recordingDialer) got() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]string(nil), r.dialed...)
}

func prefixes(t *testing.T, ss ...string) []netip.Prefix {
	t.Helper()
	var out []netip.Prefix
	for _, s := range ss {
		out = append(out, netip.MustParsePrefix(s))
	}
	return out
}

func TestAddressGuardAllowed(t *testing.T) {
	metadata := netip.MustParseAddr("169.254.169.254")
	tgt := &discovery.Target{
		ClusterIPs: []netip.Addr{netip.MustParseAddr("10.96.0.10")},
		Pods:       []discovery.Pod{{Name: "p", IPs: []netip.Addr{netip.MustParseAddr("10.244.1.5")}}},
	}
	known := func(a netip.Addr) bool { return a == netip.MustParseAddr("10.244.9.9") }
	g := &AddressGuard{ClusterCIDRs: prefixes(t, "10.100.0.0/16"), AllowExternal: prefixes(t, "192.0.2.0/24"), Known: known}
	for _, c := range []struct {
		addr string
		want bool
	}{
		{"10.96.0.10", true},        // the target's own ClusterIP
		{"10.244.1.5", true},        // a Pod its selector matches
		{"::ffff:10.244.1.5", true}, // the same, IPv4-mapped
		{"10.244.9.9", true},        // a ClusterIP or Pod IP the informers know
		{"10.100.3.4", true},        // in --cluster.cidr
		{"192.0.2.7", true},         // in --probe.allow-external
		{"169.254.169.254", false},  // cloud metadata
		{"127.0.0.2", false},
		{"10.244.1.6", false}, // next to a Pod, but no Pod
		{"fe80::1%eth0", false},
	} {
		if got := g.Allowed(tgt, netip.MustParseAddr(c.addr)); got != c.want {
			t.Errorf("Allowed(%s) = %v, want %v", c.addr, got, c.want)
		}
	}
	if !(*AddressGuard)(nil).Allowed(nil, metadata) {
		t.Error("a nil guard must allow everything (tests and benchmarks build Dialers without one)")
	}
	if (&AddressGuard{}).Allowed(nil, metadata) {
		t.Error("an empty guard allowed the metadata address")
	}
}

// A selector-less Service whose hand-written EndpointSlice points at the metadata address: the pod
// stage must not dial it, must say why, and must log the Service once however often it runs.
func TestPodStageNeverDialsOutsideTheCluster(t *testing.T) {
	rec := &recordingDialer{}
	var logs bytes.Buffer
	var logMu sync.Mutex
	g := &AddressGuard{Log: slog.New(slog.NewTextHandler(&lockedWriter{w: &logs, mu: &logMu}, nil))}
	d := &Dialer{Budget: looseBudget(t), Guard: g, dialContext: rec.dial}
	tgt := &discovery.Target{
		UID: "uid-evil", Namespace: "default", Name: "evil", Kind: discovery.KindClusterIP,
		ClusterIPs: []netip.Addr{netip.MustParseAddr("127.0.0.1")},
		Ports:      []discovery.Port{tcpPort("http", 80)},
		Endpoints: []discovery.Endpoint{
			{Addresses: []netip.Addr{netip.MustParseAddr("169.254.169.254")}, Ready: true},
		},
	}
	for range 3 {
		r := probePods(t, d, tgt)
		if r.Outcome != Skipped || r.Reason != ReasonExternalNotAllowed || !strings.Contains(r.Detail, "--probe.allow-external=169.254.169.254/32") {
			t.Fatalf("result %v %s %q, want skipped as external_not_allowed with the flag to allow it", r.Outcome, r.Reason, r.Detail)
		}
	}
	if got := rec.got(); len(got) != 0 {
		t.Fatalf("dialed %v", got)
	}
	logMu.Lock()
	n := strings.Count(logs.String(), "service=default/evil")
	logMu.Unlock()
	if n != 1 {
		t.Fatalf("logged the Service %d times, want once:\n%s", n, logs.String())
	}

	// One blocked endpoint next to a real one: the real one decides, the blocked one is evidence.
	tgt.Endpoints = append(tgt.Endpoints, discovery.Endpoint{Addresses: []netip.Addr{netip.MustParseAddr("127.0.0.1")}, Ready: true})
	r := probePods(t, d, tgt)
	if r.Outcome != Failed || r.Reason != ReasonRefused || r.Total != 1 || r.Failing != 1 || len(r.Checks) != 2 {
		t.Fatalf("result %v %s total %d failing %d checks %d, want the dialed endpoint alone to count", r.Outcome, r.Reason, r.Total, r.Failing, len(r.Checks))
	}
	if got := rec.got(); len(got) != 1 || got[0] != "tcp 127.0.0.1:9376" {
		t.Fatalf("dialed %v, want only 127.0.0.1:9376", got)
	}
}

type lockedWriter struct {
	w  *bytes.Buffer
	mu *sync.Mutex
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

func externalTarget(name string, ports ...discovery.Port) *discovery.Target {
	return &discovery.Target{UID: "uid-ext", Namespace: "default", Name: "ext", Kind: discovery.KindExternalName,
		ExternalName: name, Ports: ports}
}

// An ExternalName that is an IP address: refused unless allowed, and then really probed.
func TestExternalNameAddressIsGuarded(t *testing.T) {
	srv := newTCPServer(t, "127.0.0.2", 0)
	tgt := externalTarget("127.0.0.2", tcpPort("web", srv.addr.Port()))
	guard := &AddressGuard{ClusterCIDRs: prefixes(t, "10.0.0.0/8")}
	p := &ProxyProber{Dialer: &Dialer{Budget: looseBudget(t), Guard: guard}}
	r := p.Probe(shortCtx(t, 5*time.Second), tgt)
	if r.Outcome != Skipped || r.Reason != ReasonExternalNotAllowed {
		t.Fatalf("result %v %s %q, want skipped as external_not_allowed", r.Outcome, r.Reason, r.Detail)
	}
	if n := srv.accepted.Load(); n != 0 {
		t.Fatalf("the refused address got %d connections", n)
	}

	guard.AllowExternal = prefixes(t, "127.0.0.2/32")
	r = p.Probe(shortCtx(t, 5*time.Second), tgt)
	if r.Outcome != OK || r.Reason != ReasonSuccess {
		t.Fatalf("allowed: result %v %s %q, want success", r.Outcome, r.Reason, r.Detail)
	}
	waitFor(t, "the allowed address to see the connection", func() bool { return srv.accepted.Load() == 1 })
}

// An ExternalName that is a host name: its DNS answer decides where the probe would go, and an
// answer outside the cluster is never dialed; an answer inside it (a ClusterIP the informers know)
// is probed like any other address.
func TestExternalNameDNSAnswerIsGuarded(t *testing.T) {
	f := newFakeDNS(t,
		"evil.example. 30 IN A 169.254.169.254",
		"inside.example. 30 IN A 127.0.0.1",
		"inside.example. 30 IN AAAA ::1",
	)
	server := serveFakeDNS(t, f)
	rec := &recordingDialer{}
	known := func(a netip.Addr) bool { return a == netip.MustParseAddr("127.0.0.1") }
	p := &ProxyProber{Dialer: &Dialer{Budget: looseBudget(t), Guard: &AddressGuard{Known: known}, dialContext: rec.dial},
		DNSServers: []netip.AddrPort{server}}

	r := p.Probe(shortCtx(t, 5*time.Second), externalTarget("evil.example", tcpPort("http", 80)))
	if r.Outcome != Skipped || r.Reason != ReasonExternalNotAllowed || !strings.Contains(r.Detail, "169.254.169.254") {
		t.Fatalf("result %v %s %q, want skipped as external_not_allowed naming the answer", r.Outcome, r.Reason, r.Detail)
	}
	if got := rec.got(); len(got) != 0 {
		t.Fatalf("dialed %v for a DNS answer outside the cluster", got)
	}

	r = p.Probe(shortCtx(t, 5*time.Second), externalTarget("inside.example.", tcpPort("http", 80)))
	// 127.0.0.1 is known and dialed (refused by the recorder); ::1 is not and is only evidence.
	if r.Outcome != Failed || r.Reason != ReasonRefused || r.Total != 1 || len(r.Checks) != 2 {
		t.Fatalf("result %v %s total %d checks %v", r.Outcome, r.Reason, r.Total, r.Checks)
	}
	if got := rec.got(); len(got) != 1 || got[0] != "tcp 127.0.0.1:80" {
		t.Fatalf("dialed %v, want tcp 127.0.0.1:80 only", got)
	}

	// A name that does not resolve fails the stage with the DNS reason; nothing is dialed.
	r = p.Probe(shortCtx(t, 5*time.Second), externalTarget("nowhere.example", tcpPort("http", 80)))
	if r.Outcome != Failed || r.Reason != ReasonNXDomain || r.Hint == "" {
		t.Fatalf("result %v %s %q, want failed as nxdomain with a hint", r.Outcome, r.Reason, r.Detail)
	}
	if got := rec.got(); len(got) != 1 {
		t.Fatalf("dialed %v", got)
	}
}

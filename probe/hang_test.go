package probe

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"
	"k8s.io/apimachinery/pkg/types"

	"github.com/svcprobe/svcprobe/discovery"
)

// silentHTTP accepts connections and never answers; each handler ends when the prober hangs up.
func silentHTTP(t *testing.T) netip.AddrPort {
	t.Helper()
	return rawServer(t, func(c *net.TCPConn) {
		defer c.Close()
		_, _ = io.Copy(io.Discard, c) // read the request, never reply, until the prober's RST
	})
}

// blackholed returns a loopback address whose SYNs are dropped, as a black-holed IP's would be: a
// listener with a backlog of 0 whose accept queue is filled with connections nobody accepts. The
// kernel then drops further SYNs, and a connect hangs until its deadline.
func blackholed(t *testing.T) netip.AddrPort {
	t.Helper()
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = unix.Close(fd) })
	if err := unix.Bind(fd, &unix.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}); err != nil {
		t.Fatal(err)
	}
	if err := unix.Listen(fd, 0); err != nil {
		t.Fatal(err)
	}
	sa, err := unix.Getsockname(fd)
	if err != nil {
		t.Fatal(err)
	}
	addr := netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), uint16(sa.(*unix.SockaddrInet4).Port))
	var fillers []net.Conn
	t.Cleanup(func() {
		for _, c := range fillers {
			_ = c.Close()
		}
	})
	for range 32 {
		c, err := net.DialTimeout("tcp", addr.String(), 300*time.Millisecond)
		if err != nil {
			if ne, ok := err.(net.Error); ok && ne.Timeout() {
				return addr // the queue is full: connects hang now
			}
			t.Fatalf("filling the accept queue of %s: %v", addr, err)
		}
		fillers = append(fillers, c)
	}
	msg := fmt.Sprintf("32 connections to a listener with backlog 0 all completed: cannot stage a black hole on this kernel (net.ipv4.tcp_abort_on_overflow? %d fillers)", len(fillers))
	if os.Getenv("CI") == "true" {
		t.Fatal(msg)
	}
	t.Skip(msg)
	return addr
}

func httpOpts() discovery.Options {
	return discovery.Options{HTTP: map[string]discovery.HTTPOptions{"": {Path: "/healthz", StatusMin: 200, StatusMax: 399}}}
}

// hangTarget is a Service whose VIP and one ready endpoint are both addr.
func hangTarget(uid string, addr netip.AddrPort, opts discovery.Options) *discovery.Target {
	return &discovery.Target{
		UID: types.UID(uid), Namespace: "default", Name: uid, Kind: discovery.KindClusterIP,
		ClusterIPs: []netip.Addr{addr.Addr()},
		Ports:      []discovery.Port{tcpPort("web", addr.Port())},
		Endpoints: []discovery.Endpoint{{Addresses: []netip.Addr{addr.Addr()}, Ready: true, PodName: uid + "-pod",
			Ports: []discovery.EndpointPort{{Name: "web", Port: int32(addr.Port()), Protocol: "TCP"}}}},
		Options: opts,
		Version: 1,
	}
}

// Each kind of hang — an HTTP server that accepts and never answers, a DNS server that never
// replies, a black-holed address — ends at the stage timeout with reason timeout.
func TestHangingProbesEndAtTheTimeout(t *testing.T) {
	const timeout = 300 * time.Millisecond
	silent := newFakeDNS(t)
	silent.silent = true
	silentDNS := serveFakeDNS(t, silent)
	httpHang, hole := silentHTTP(t), blackholed(t)
	budget := looseBudget(t)
	d := &Dialer{Budget: budget}
	cases := []struct {
		name string
		p    Prober
		t    *discovery.Target
	}{
		{"pod: HTTP never answers", &PodProber{Dialer: d}, hangTarget("http", httpHang, httpOpts())},
		{"proxy: HTTP never answers", &ProxyProber{Dialer: d}, hangTarget("http", httpHang, httpOpts())},
		{"pod: black hole (TCP)", &PodProber{Dialer: d}, hangTarget("hole", hole, discovery.Options{})},
		{"pod: black hole (HTTP)", &PodProber{Dialer: d}, hangTarget("hole", hole, httpOpts())},
		{"proxy: black hole", &ProxyProber{Dialer: d}, hangTarget("hole", hole, discovery.Options{})},
		{"dns: server never replies", &DNSProber{Budget: budget, Conf: kubeletConf(silentDNS)}, hangTarget("dns", hole, discovery.Options{})},
		{"proxy: ExternalName through a DNS server that never replies", &ProxyProber{Dialer: d, DNSServers: []netip.AddrPort{silentDNS}},
			&discovery.Target{UID: "ext", Namespace: "default", Name: "ext", Kind: discovery.KindExternalName, ExternalName: "db.example.com",
				Ports: []discovery.Port{tcpPort("db", 5432)}}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			done := make(chan Result, 1)
			start := time.Now()
			go func() { done <- Run(context.Background(), c.p, c.t, timeout, start) }()
			var r Result
			select {
			case r = <-done:
			case <-time.After(20 * time.Second):
				t.Fatal("the stage still runs 20s after its 300ms timeout")
			}
			took := time.Since(start)
			if r.Outcome != Failed || r.Reason != ReasonTimeout {
				t.Fatalf("result %v %s %q, want failed with timeout", r.Outcome, r.Reason, r.Detail)
			}
			// Generous: the point is that it ends near the timeout, not at the kernel's minutes.
			if took < timeout/2 || took > timeout+5*time.Second {
				t.Fatalf("took %s with a %s timeout", took, timeout)
			}
		})
	}
}

// timedSink records when each target's network stages came back.
type timedSink struct {
	mu      sync.Mutex
	at      map[types.UID][]time.Time
	reasons map[types.UID]map[Reason]int
}

func (s *timedSink) Record(t *discovery.Target, rs []Result) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, r := range rs {
		if r.Stage == StagePod {
			s.at[t.UID] = append(s.at[t.UID], time.Now())
			if s.reasons[t.UID] == nil {
				s.reasons[t.UID] = map[Reason]int{}
			}
			s.reasons[t.UID][r.Reason]++
		}
	}
}
func (s *timedSink) Forget(types.UID)                  {}
func (s *timedSink) RecordClusterDNS(ClusterDNSResult) {}

func (s *timedSink) times(uid types.UID) []time.Time {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]time.Time(nil), s.at[uid]...)
}

// Fifty Services that hang (half never answer HTTP, half are black-holed) next to one healthy
// Service: the healthy one keeps its interval, within the exporter's budgets. Without the stage
// timeout the hanging probes would hold every worker and the healthy Service would stop being
// probed after its first round.
func TestFiftyHangingTargetsDoNotDelayAHealthyOne(t *testing.T) {
	const (
		interval = time.Second
		timeout  = 300 * time.Millisecond
		hanging  = 50
	)
	httpHang, hole := silentHTTP(t), blackholed(t)
	healthy := newTCPServer(t, "127.0.0.1", 0)
	budget, err := NewBudget(BudgetConfig{Concurrency: 128, DNSQPS: 1000, NewConnsPerSecond: 1000})
	if err != nil {
		t.Fatal(err)
	}
	d := &Dialer{Budget: budget}
	sink := &timedSink{at: map[types.UID][]time.Time{}, reasons: map[types.UID]map[Reason]int{}}
	s, err := NewScheduler(SchedulerConfig{Interval: interval, Timeout: timeout, Workers: 64},
		[]Prober{EndpointsProber{}, &PodProber{Dialer: d}, &ProxyProber{Dialer: d}}, sink, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { s.Run(ctx); close(done) }()
	defer func() {
		cancel()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			t.Error("scheduler did not stop")
		}
	}()
	for i := range hanging {
		addr, opts := httpHang, httpOpts()
		if i%2 == 1 {
			addr, opts = hole, discovery.Options{}
		}
		s.Upsert(hangTarget(fmt.Sprintf("hang-%02d", i), addr, opts))
	}
	s.Upsert(hangTarget("healthy", healthy.addr, discovery.Options{}))

	const window = 8 * time.Second
	time.Sleep(window)
	at := sink.times("healthy")
	var maxGap time.Duration
	for i := 1; i < len(at); i++ {
		maxGap = max(maxGap, at[i].Sub(at[i-1]))
	}
	sink.mu.Lock()
	healthyReasons, hangReasons := sink.reasons["healthy"], sink.reasons["hang-00"]
	holeReasons := sink.reasons["hang-01"]
	sink.mu.Unlock()
	t.Logf("healthy: %d probes in %s, largest gap %s, results %v; a hanging one: %v; a black-holed one: %v; budget waits %v",
		len(at), window, maxGap, healthyReasons, hangReasons, holeReasons, func() uint64 { n, _ := budget.Waits(BudgetConcurrency); return n }())
	// About 8 probes expected; a stuck scheduler gives 1. Generous bounds for a loaded machine.
	if want := int(window / interval / 2); len(at) < want {
		t.Fatalf("the healthy Service was probed %d times in %s at a %s interval, want at least %d", len(at), window, interval, want)
	}
	if maxGap > 3*interval {
		t.Fatalf("the healthy Service waited %s between probes at a %s interval", maxGap, interval)
	}
	if healthyReasons[ReasonSuccess] != len(at) {
		t.Fatalf("the healthy Service's pod stage: %v, want only successes", healthyReasons)
	}
	if hangReasons[ReasonTimeout] < 2 || holeReasons[ReasonTimeout] < 2 {
		t.Fatalf("the hanging Services did not come round again with timeouts: %v %v", hangReasons, holeReasons)
	}
}

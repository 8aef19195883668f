package probe

import (
	"context"
	"net/netip"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/svcprobe/svcprobe/discovery"
)

func progTarget(ready int, mutate ...func(*discovery.Target)) *discovery.Target {
	t := &discovery.Target{UID: "u", Namespace: "ns", Name: "web", Kind: discovery.KindClusterIP,
		ClusterIPs: []netip.Addr{netip.MustParseAddr("198.19.0.10")},
		Ports:      []discovery.Port{{Name: "http", Port: 80, Protocol: "TCP"}}}
	for i := range ready {
		t.Endpoints = append(t.Endpoints, discovery.Endpoint{Ready: true, Addresses: []netip.Addr{netip.AddrFrom4([4]byte{198, 18, 0, byte(10 + i)})}})
	}
	for _, m := range mutate {
		m(t)
	}
	return t
}

// Which changes the data plane has to follow, and from when.
func TestProgrammingChanges(t *testing.T) {
	now := time.Date(2026, 12, 3, 12, 0, 0, 0, time.UTC)
	ceiling := time.Minute
	created := func(ago time.Duration) func(*discovery.Target) {
		return func(t *discovery.Target) { t.Created = now.Add(-ago) }
	}
	trigger := func(ago time.Duration) func(*discovery.Target) {
		return func(t *discovery.Target) { t.ChangeTriggered = now.Add(-ago) }
	}
	headless := func(t *discovery.Target) { t.Kind, t.ClusterIPs = discovery.KindHeadless, nil }
	for _, c := range []struct {
		name     string
		old, new *discovery.Target
		want     map[Stage]time.Time
	}{
		{"listed at start (created long ago): nothing", nil, progTarget(2, created(time.Hour)), nil},
		{"listed at start (no creation time): nothing", nil, progTarget(2), nil},
		{"created now with ready endpoints: proxy and dns from the trigger time", nil, progTarget(2, created(2*time.Second), trigger(time.Second)),
			map[Stage]time.Time{StageProxy: now.Add(-time.Second), StageDNS: now.Add(-time.Second)}},
		{"created now, no ready endpoint: dns only (the VIP has nothing to lead to)", nil, progTarget(0, created(time.Second)),
			map[Stage]time.Time{StageDNS: now}},
		{"first ready endpoint: proxy from the trigger time", progTarget(0), progTarget(1, trigger(3*time.Second)),
			map[Stage]time.Time{StageProxy: now.Add(-3 * time.Second)}},
		{"trigger time older than the ceiling: from the event", progTarget(0), progTarget(1, trigger(2*time.Minute)),
			map[Stage]time.Time{StageProxy: now}},
		{"trigger time in the future (clock skew): from the event", progTarget(0), progTarget(1, trigger(-5*time.Second)),
			map[Stage]time.Time{StageProxy: now}},
		{"one more ready endpoint: nothing to measure", progTarget(1), progTarget(2, trigger(time.Second)), nil},
		{"endpoints gone: nothing to measure", progTarget(2), progTarget(0), nil},
		{"a new port: proxy from the event", progTarget(2), progTarget(2, func(t *discovery.Target) { t.Ports[0].Port = 8080 }),
			map[Stage]time.Time{StageProxy: now}},
		{"a renamed port: nothing (kube-proxy programs numbers)", progTarget(2), progTarget(2, func(t *discovery.Target) { t.Ports[0].Name = "web" }), nil},
		{"a new ClusterIP: proxy and dns", progTarget(2), progTarget(2, func(t *discovery.Target) { t.ClusterIPs = []netip.Addr{netip.MustParseAddr("198.19.0.11")} }),
			map[Stage]time.Time{StageProxy: now, StageDNS: now}},
		{"headless gains an endpoint: dns from the trigger time", progTarget(1, headless), progTarget(2, headless, trigger(time.Second)),
			map[Stage]time.Time{StageDNS: now.Add(-time.Second)}},
		{"headless loses one but keeps one: dns", progTarget(2, headless), progTarget(1, headless),
			map[Stage]time.Time{StageDNS: now}},
		{"headless loses its last: nothing (no answer to wait for)", progTarget(1, headless), progTarget(0, headless), nil},
		{"ExternalName: nothing", nil, progTarget(0, created(0), func(t *discovery.Target) { t.Kind, t.ClusterIPs = discovery.KindExternalName, nil }), nil},
	} {
		t.Run(c.name, func(t *testing.T) {
			got := programmingChanges(c.old, c.new, now, ceiling)
			if len(got) != len(c.want) {
				t.Fatalf("got %v, want %v", got, c.want)
			}
			for st, w := range c.want {
				if !got[st].Equal(w) {
					t.Fatalf("%s from %s, want %s (all: %v)", st, got[st], w, got)
				}
			}
		})
	}
	if got := programmingChanges(nil, progTarget(2, created(time.Second)), now, 0); got != nil {
		t.Fatalf("ceiling 0 (off) measured %v", got)
	}
}

// clockProber fails until its Service's change is "programmed" (at a set time), then answers.
type clockProber struct {
	stage Stage
	mu    sync.Mutex
	until time.Time // zero: never programmed
	calls int
}

func (p *clockProber) Stage() Stage { return p.stage }
func (p *clockProber) Probe(context.Context, *discovery.Target) Result {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.calls++
	if p.until.IsZero() || time.Now().Before(p.until) {
		return Result{Outcome: Failed, Reason: ReasonTimeout, Detail: "no answer"}
	}
	return Result{Outcome: OK, Reason: ReasonSuccess}
}

type progSink struct {
	*memSink
	mu    sync.Mutex
	going map[Stage]time.Time
	ended []Programmed
	// failedWhileGoing counts failed results of a stage recorded while it was being programmed.
	failedWhileGoing int
}

func (s *progSink) Record(t *discovery.Target, rs []Result) {
	s.mu.Lock()
	for _, r := range rs {
		if _, ok := s.going[r.Stage]; ok && r.Outcome == Failed && r.Reason != ReasonNotProgrammed {
			s.failedWhileGoing++
		}
	}
	s.mu.Unlock()
	s.memSink.Record(t, rs)
}
func (s *progSink) Programming(_ *discovery.Target, st Stage, since time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.going[st] = since
}
func (s *progSink) Programmed(_ *discovery.Target, p Programmed) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.going, p.Stage)
	s.ended = append(s.ended, p)
}
func (s *progSink) done() []Programmed {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.ended)
}

func startProgScheduler(t *testing.T, cfg SchedulerConfig, probers ...Prober) (*Scheduler, *progSink) {
	t.Helper()
	sink := &progSink{memSink: newMemSink(), going: map[Stage]time.Time{}}
	s, err := NewScheduler(cfg, probers, sink, nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { s.Run(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	return s, sink
}

// A new Service whose VIP the proxy programs 700 ms after its creation: the proxy stage is
// programming meanwhile (no failure recorded, probed again at the cadence), then its latency is
// measured from the change's start within one attempt plus the cadence; the rechecks run the
// proxy stage alone. A change that never comes fails not_programmed at the ceiling; a VIP whose
// Pods refuse directly is not waited for.
func TestSchedulerMeasuresProgrammingLatency(t *testing.T) {
	cfg := SchedulerConfig{Interval: 5 * time.Second, Timeout: 200 * time.Millisecond, Workers: 2, Settle: 3 * time.Second,
		Programming: Programming{Cadence: 50 * time.Millisecond, Ceiling: 1500 * time.Millisecond}}
	t.Run("programmed after a delay", func(t *testing.T) {
		proxy := &clockProber{stage: StageProxy}
		pod := &fakeProber{stage: StagePod}
		s, sink := startProgScheduler(t, cfg, proxy, pod)
		created := time.Now()
		delay := 700 * time.Millisecond
		proxy.mu.Lock()
		proxy.until = created.Add(delay)
		proxy.mu.Unlock()
		s.Upsert(progTarget(2, func(t *discovery.Target) { t.Created = created; t.Version = 1 }))
		waitFor(t, "the measurement ends", func() bool { return len(sink.done()) > 0 })
		p := sink.done()[0]
		if !p.Done || p.Stage != StageProxy {
			t.Fatalf("ended %+v, want proxy done", p)
		}
		if p.Latency < delay || p.Latency > delay+cfg.Programming.Cadence+100*time.Millisecond {
			t.Fatalf("latency %s, want %s within one cadence (%s)", p.Latency, delay, cfg.Programming.Cadence)
		}
		if r, ok := sink.result("u", StageProxy); !ok || r.Outcome != OK {
			t.Fatalf("proxy result after programming: %+v %v", r, ok)
		}
		// The pod stage runs in full rounds only: the first, and the Service's regular slot when
		// it falls within the measurement (slots are aligned to the wall clock, so the next one
		// can come at any time within an interval of the first probe). The rechecks at the
		// cadence (about 14) run the proxy stage alone.
		proxy.mu.Lock()
		proxyRuns := proxy.calls
		proxy.mu.Unlock()
		if n, rounds := pod.count("u"), 2+int(time.Since(created)/cfg.Interval); n < 1 || n > rounds || proxyRuns-n < 3 {
			t.Fatalf("the pod stage ran %d times (at most %d full rounds), the proxy stage %d: rechecks run the stages being programmed alone", n, rounds, proxyRuns)
		}
		if sink.failedWhileGoing != 0 {
			t.Fatalf("%d proxy failures recorded while programming", sink.failedWhileGoing)
		}
		proxy.mu.Lock()
		calls := proxy.calls
		proxy.mu.Unlock()
		// The first probe comes within Interval/10 (500 ms) of the change; from then on, every
		// cadence: at least a few attempts before the delay's end.
		if calls < 3 {
			t.Fatalf("proxy probed %d times in %s, want rechecks at the cadence", calls, delay)
		}
		if s.Stats().ProgrammingHeld.Load() == 0 {
			t.Fatal("held attempts not counted")
		}
	})
	t.Run("never programmed", func(t *testing.T) {
		proxy := &clockProber{stage: StageProxy}
		cfg := cfg
		cfg.Interval = time.Second // rounds after the ceiling come at the interval
		s, sink := startProgScheduler(t, cfg, proxy)
		s.Upsert(progTarget(2, func(t *discovery.Target) { t.Created = time.Now(); t.Version = 1 }))
		waitFor(t, "the measurement gives up", func() bool { return len(sink.done()) > 0 })
		p := sink.done()[0]
		if p.Done || p.Abandoned || p.Latency < cfg.Programming.Ceiling {
			t.Fatalf("ended %+v, want given up after the ceiling", p)
		}
		r, ok := sink.result("u", StageProxy)
		if !ok || r.Outcome != Failed || r.Reason != ReasonNotProgrammed {
			t.Fatalf("proxy result %+v, want failed not_programmed", r)
		}
		// The next rounds keep the reason while the stage fails, not the attempt's own (timeout).
		records := func() int { sink.memSink.mu.Lock(); defer sink.memSink.mu.Unlock(); return sink.memSink.records["u"] }
		n := records()
		waitFor(t, "a later round", func() bool { return records() > n+1 })
		if r, _ := sink.result("u", StageProxy); r.Reason != ReasonNotProgrammed {
			t.Fatalf("a later round's failure says %s, want still not_programmed", r.Reason)
		}
		// Until the change arrives: then the stage passes and the reason goes with it.
		proxy.mu.Lock()
		proxy.until = time.Now()
		proxy.mu.Unlock()
		waitFor(t, "proxy ok", func() bool { r, _ := sink.result("u", StageProxy); return r.Outcome == OK })
		proxy.mu.Lock()
		proxy.until = time.Time{} // broken again, for another reason: its own reason now
		proxy.mu.Unlock()
		waitFor(t, "proxy failing with its own reason", func() bool {
			r, _ := sink.result("u", StageProxy)
			return r.Outcome == Failed && r.Reason == ReasonTimeout
		})
	})
	t.Run("pods refusing: the VIP's failure is theirs, recorded", func(t *testing.T) {
		proxy := &clockProber{stage: StageProxy}
		pod := &failingProber{stage: StagePod, failFirst: -1}
		s, sink := startProgScheduler(t, cfg, proxy, pod)
		s.Upsert(progTarget(2, func(t *discovery.Target) { t.Created = time.Now(); t.Version = 1 }))
		waitFor(t, "the measurement abandoned", func() bool { return len(sink.done()) > 0 })
		if p := sink.done()[0]; !p.Abandoned {
			t.Fatalf("ended %+v, want abandoned", p)
		}
		if r, ok := sink.result("u", StageProxy); !ok || r.Outcome != Failed || r.Reason != ReasonTimeout {
			t.Fatalf("proxy result %+v %v, want its own failure recorded at once", r, ok)
		}
		if s.Stats().ProgrammingHeld.Load() != 0 {
			t.Fatal("a proxy failure behind failing Pods was held as programming")
		}
	})
	t.Run("listed at start: measured by nobody, settle as before", func(t *testing.T) {
		proxy := &clockProber{stage: StageProxy}
		s, sink := startProgScheduler(t, cfg, proxy)
		s.Upsert(progTarget(2, func(t *discovery.Target) { t.Created = time.Now().Add(-time.Hour); t.Version = 1 }))
		waitFor(t, "its failure held back by settle", func() bool { return s.Stats().Settling.Load() > 0 })
		sink.mu.Lock()
		defer sink.mu.Unlock()
		if len(sink.ended) != 0 || len(sink.going) != 0 || s.Stats().ProgrammingHeld.Load() != 0 {
			t.Fatalf("a Service listed at start was measured: %v %v", sink.ended, sink.going)
		}
	})
	t.Run("first ready endpoint of a known Service", func(t *testing.T) {
		proxy := &clockProber{stage: StageProxy}
		s, sink := startProgScheduler(t, cfg, proxy)
		s.Upsert(progTarget(0, func(t *discovery.Target) { t.Version = 1 }))
		time.Sleep(100 * time.Millisecond)
		ready := time.Now()
		proxy.mu.Lock()
		proxy.until = ready.Add(400 * time.Millisecond)
		proxy.mu.Unlock()
		s.Upsert(progTarget(1, func(t *discovery.Target) { t.Version = 2; t.ChangeTriggered = ready.Add(-200 * time.Millisecond) }))
		waitFor(t, "the measurement ends", func() bool { return len(sink.done()) > 0 })
		p := sink.done()[0]
		// From the slice's trigger time, 200 ms before the event: 600 ms.
		if !p.Done || p.Latency < 600*time.Millisecond || p.Latency > 600*time.Millisecond+cfg.Programming.Cadence+100*time.Millisecond {
			t.Fatalf("ended %+v, want done after ~600ms", p)
		}
	})
}

var _ ProgrammingSink = (*progSink)(nil)

// A one-shot look (diagnose) has no earlier build: a Service created within the ceiling is
// following its creation; an older one is not, even when its slices changed lately (a first
// ready endpoint cannot be told from any other change without the earlier build).
func TestRecentChanges(t *testing.T) {
	now := time.Now()
	if got := RecentChanges(progTarget(2, func(t *discovery.Target) { t.Created = now.Add(-time.Second) }), now, time.Minute); got[StageProxy].IsZero() || got[StageDNS].IsZero() {
		t.Fatalf("just created: %v", got)
	}
	old := func(t *discovery.Target) { t.Created = now.Add(-time.Hour) }
	if got := RecentChanges(progTarget(2, old, func(t *discovery.Target) { t.ChangeTriggered = now.Add(-2 * time.Second) }), now, time.Minute); got != nil {
		t.Fatalf("an old Service whose endpoints changed: %v", got)
	}
}

package probe

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/svcprobe/svcprobe/discovery"
	"k8s.io/apimachinery/pkg/types"
)

type fakeProber struct {
	stage Stage
	hang  map[types.UID]bool // block until ctx ends for these
	mu    sync.Mutex
	calls map[types.UID]int
}

func (f *fakeProber) Stage() Stage { return f.stage }

func (f *fakeProber) Probe(ctx context.Context, t *discovery.Target) Result {
	f.mu.Lock()
	if f.calls == nil {
		f.calls = map[types.UID]int{}
	}
	f.calls[t.UID]++
	f.mu.Unlock()
	if f.hang[t.UID] {
		<-ctx.Done()
		return Result{Outcome: Failed, Reason: ReasonTimeout}
	}
	return Result{Outcome: OK, Reason: ReasonSuccess}
}

func (f *fakeProber) count(uid types.UID) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.calls[uid]
}

type memSink struct {
	mu        sync.Mutex
	results   map[types.UID]map[Stage]Result
	records   map[types.UID]int
	forgotten map[types.UID]bool
	cluster   int
}

func newMemSink() *memSink {
	return &memSink{results: map[types.UID]map[Stage]Result{}, records: map[types.UID]int{}, forgotten: map[types.UID]bool{}}
}

func (m *memSink) Record(t *discovery.Target, rs []Result) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.results[t.UID] == nil {
		m.results[t.UID] = map[Stage]Result{}
	}
	for _, r := range rs {
		m.results[t.UID][r.Stage] = r
	}
	m.records[t.UID]++
}
func (m *memSink) Forget(uid types.UID) {
	m.mu.Lock()
	defer m.mu.Unlock()
	delete(m.results, uid)
	m.forgotten[uid] = true
}
func (m *memSink) RecordClusterDNS(ClusterDNSResult) { m.mu.Lock(); m.cluster++; m.mu.Unlock() }

func (m *memSink) has(uid types.UID, s Stage) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	_, ok := m.results[uid][s]
	return ok
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func startScheduler(t *testing.T, cfg SchedulerConfig, probers ...Prober) (*Scheduler, *memSink) {
	t.Helper()
	sink := newMemSink()
	s, err := NewScheduler(cfg, probers, sink, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { s.Run(ctx); close(done) }()
	t.Cleanup(func() {
		cancel()
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			t.Error("scheduler did not stop")
		}
	})
	return s, sink
}

func TestSchedulerCheapStagesRunOnUpsert(t *testing.T) {
	spec := &fakeProber{stage: StageSpec}
	pod := &fakeProber{stage: StagePod}
	s, sink := startScheduler(t, SchedulerConfig{Interval: time.Hour, Timeout: time.Second, Workers: 1}, spec, pod)
	s.Upsert(&discovery.Target{UID: "a", Version: 1})
	// No waiting: the spec result is recorded before Upsert returns.
	if !sink.has("a", StageSpec) {
		t.Fatal("spec result not recorded synchronously on Upsert")
	}
	waitFor(t, "network stage soon after upsert", func() bool { return sink.has("a", StagePod) })
	if s.Pending() != 0 {
		t.Fatalf("pending %d after the first probe", s.Pending())
	}
}

func TestSchedulerProbesEveryInterval(t *testing.T) {
	pod := &fakeProber{stage: StagePod}
	s, _ := startScheduler(t, SchedulerConfig{Interval: 100 * time.Millisecond, Timeout: 50 * time.Millisecond, Workers: 2}, pod)
	s.Upsert(&discovery.Target{UID: "a", Version: 1})
	// Rounds is counted after the round's stages return, so wait on it (waiting on the prober's
	// own count and then reading Rounds raced: a CI run read 2 right after the third call).
	waitFor(t, "three rounds counted", func() bool { return s.Stats().Rounds.Load() >= 3 })
	if n := pod.count("a"); n < 3 {
		t.Fatalf("the prober ran %d times in 3 rounds", n)
	}
}

func TestSchedulerSlowTargetDoesNotDelayOthers(t *testing.T) {
	pod := &fakeProber{stage: StagePod, hang: map[types.UID]bool{"slow": true}}
	s, _ := startScheduler(t, SchedulerConfig{Interval: 100 * time.Millisecond, Timeout: 100 * time.Millisecond, Workers: 2}, pod)
	s.Upsert(&discovery.Target{UID: "slow", Version: 1})
	s.Upsert(&discovery.Target{UID: "fast", Version: 1})
	waitFor(t, "fast probed repeatedly while slow hangs", func() bool { return pod.count("fast") >= 4 })
	// The slow one is bounded by its timeout: it comes round again too.
	waitFor(t, "slow probed again after its timeout", func() bool { return pod.count("slow") >= 2 })
}

func TestSchedulerDeleteForgets(t *testing.T) {
	pod := &fakeProber{stage: StagePod}
	s, sink := startScheduler(t, SchedulerConfig{Interval: 50 * time.Millisecond, Timeout: 20 * time.Millisecond, Workers: 1}, pod)
	s.Upsert(&discovery.Target{UID: "a", Version: 1})
	waitFor(t, "probed", func() bool { return sink.has("a", StagePod) })
	s.Delete("a", "default/a")
	n := pod.count("a")
	time.Sleep(200 * time.Millisecond) // several intervals: no probe may come back for a deleted target
	if sink.has("a", StagePod) || !sink.forgotten["a"] {
		t.Fatal("deleted target still has results")
	}
	if pod.count("a") > n+1 { // at most the one in flight at Delete
		t.Fatalf("deleted target probed %d more times", pod.count("a")-n)
	}
}

func TestSchedulerClusterDNSEachInterval(t *testing.T) {
	var mu sync.Mutex
	calls := 0
	_, sink := startScheduler(t, SchedulerConfig{Interval: 50 * time.Millisecond, Timeout: 20 * time.Millisecond, Workers: 1,
		ClusterDNS: func(context.Context) ClusterDNSResult { mu.Lock(); calls++; mu.Unlock(); return ClusterDNSResult{} }})
	waitFor(t, "cluster DNS rounds", func() bool { sink.mu.Lock(); defer sink.mu.Unlock(); return sink.cluster >= 2 })
}

func TestSchedulerConfigValidate(t *testing.T) {
	for _, c := range []SchedulerConfig{
		{Interval: 0, Timeout: time.Second, Workers: 1},
		{Interval: time.Second, Timeout: -time.Second, Workers: 1},
		{Interval: time.Second, Timeout: 2 * time.Second, Workers: 1},
		{Interval: time.Second, Timeout: time.Second, Workers: 0},
	} {
		if c.Validate() == nil {
			t.Errorf("%+v accepted", c)
		}
	}
}

func TestNextSlotSpreadsAndCountsSkips(t *testing.T) {
	s := &Scheduler{cfg: SchedulerConfig{Interval: 10 * time.Second}}
	now := time.Unix(1000, 0)
	buckets := map[int64]bool{}
	for i := range 100 {
		slot := s.nextSlot(types.UID(fmt.Sprintf("uid-%d", i)), now, now)
		if !slot.After(now) || slot.Sub(now) > 11*time.Second {
			t.Fatalf("next slot %s not within one interval of %s", slot, now)
		}
		buckets[int64(slot.Sub(now)/time.Second)] = true
	}
	if len(buckets) < 8 {
		t.Fatalf("100 Services fall in only %d of 10 one-second buckets: not spread", len(buckets))
	}
	// A probe that overran three intervals counts the slots it missed.
	s.nextSlot("uid-a", now, now.Add(35*time.Second))
	if got := s.stats.Skipped.Load(); got < 2 {
		t.Fatalf("skipped %d, want at least 2", got)
	}
}

func TestCoveragePeriod(t *testing.T) {
	for _, c := range []struct {
		n, size int
		want    time.Duration
	}{{0, 0, 15 * time.Second}, {100, 0, 15 * time.Second}, {0, 10, 15 * time.Second}, {10, 10, 15 * time.Second},
		{11, 10, 30 * time.Second}, {1000, 64, 16 * 15 * time.Second}} {
		if got := CoveragePeriod(c.n, c.size, 15*time.Second); got != c.want {
			t.Errorf("CoveragePeriod(%d, %d) = %s, want %s", c.n, c.size, got, c.want)
		}
	}
}

// Node mode's sample: with 20 Services and a sample of 5 per interval, every Service is probed
// within the coverage period ceil(20/5) × interval, no interval probes much more than the sample,
// and the Always Service (the hairpin one) is probed every interval.
func TestSchedulerSampleCoversEveryServiceWithinThePeriod(t *testing.T) {
	const n, size, iv = 20, 5, 200 * time.Millisecond
	pod := &fakeProber{stage: StagePod}
	s, _ := startScheduler(t, SchedulerConfig{Interval: iv, Timeout: 50 * time.Millisecond, Workers: 4, SampleSize: size,
		Always: func(t *discovery.Target) bool { return t.UID == "hairpin" }}, pod)
	start := time.Now()
	for i := range n {
		s.Upsert(&discovery.Target{UID: types.UID(fmt.Sprintf("svc-%02d", i)), Version: 1})
	}
	s.Upsert(&discovery.Target{UID: "hairpin", Version: 1})
	if s.Pending() != 1 {
		t.Fatalf("pending %d, want 1 (only the always-probed Service counts for readiness)", s.Pending())
	}
	period := CoveragePeriod(n+1, size, iv) // 21 Services: 5 windows
	if got := time.Duration(s.Stats().PeriodNanos.Load()); got != period {
		t.Fatalf("coverage period %s, want %s", got, period)
	}
	waitFor(t, "every Service probed once", func() bool {
		for i := range n {
			if pod.count(types.UID(fmt.Sprintf("svc-%02d", i))) == 0 {
				return false
			}
		}
		return true
	})
	took := time.Since(start)
	if took > period+period/2 {
		t.Errorf("covering every Service took %s, the coverage period is %s", took, period)
	}
	// Once the set is complete, each sampled Service is probed about once per period, not once
	// per interval. (While the Services were being added the period grew with them and the first
	// slots were laid on the shorter grids of the time, so the first period is not measured: a
	// CI run counted 31 probes of 20 Services there.)
	counts := func() (per []int, hairpin int) {
		for i := range n {
			per = append(per, pod.count(types.UID(fmt.Sprintf("svc-%02d", i))))
		}
		return per, pod.count("hairpin")
	}
	before, h0 := counts()
	const periods = 2
	time.Sleep(periods * period)
	after, h1 := counts()
	for i := range n {
		// At most one per period, plus one for a slot at the window's edge; once per interval
		// would be periods*5 = 10.
		if d := after[i] - before[i]; d > periods+1 {
			t.Errorf("svc-%02d probed %d times in %d coverage periods (%s each): the sample does not bound it", i, d, periods, period)
		}
	}
	if h := h1 - h0; h < int(periods*period/iv)-2 {
		t.Errorf("the always-probed Service was probed %d times in %s (interval %s)", h, periods*period, iv)
	}
	// A change does not bring a sampled Service forward.
	c0 := pod.count("svc-00")
	s.Upsert(&discovery.Target{UID: "svc-00", Version: 2})
	time.Sleep(iv / 2)
	if c1 := pod.count("svc-00"); c1 > c0+1 {
		t.Errorf("a change probed a sampled Service %d more times at once", c1-c0)
	}
}

// failingProber fails its first failFirst calls (every call when failFirst < 0), then succeeds.
type failingProber struct {
	stage     Stage
	failFirst int
	mu        sync.Mutex
	calls     int
}

func (f *failingProber) Stage() Stage { return f.stage }

func (f *failingProber) Probe(context.Context, *discovery.Target) Result {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls++
	if f.failFirst < 0 || f.calls <= f.failFirst {
		return Result{Outcome: Failed, Reason: ReasonRefused}
	}
	return Result{Outcome: OK, Reason: ReasonSuccess}
}

func (m *memSink) result(uid types.UID, s Stage) (Result, bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	r, ok := m.results[uid][s]
	return r, ok
}

// Right after a Service appears or changes, a data-plane failure (kube-proxy not yet synced) is
// held back for Settle and probed again; one that lasts past Settle is recorded; one that is gone
// by then never is; the pod stage (not the data plane) is recorded at once; Settle 0 holds
// nothing back.
func TestSchedulerSettleHoldsBackDataPlaneFailures(t *testing.T) {
	// Interval 2s: a new target's first probe comes within Interval/10, well inside settle.
	const settle = time.Second
	const interval = 2 * time.Second
	t.Run("lasting failure recorded after settle", func(t *testing.T) {
		proxy := &failingProber{stage: StageProxy, failFirst: -1}
		pod := &failingProber{stage: StagePod, failFirst: -1}
		s, sink := startScheduler(t, SchedulerConfig{Interval: interval, Timeout: 100 * time.Millisecond, Workers: 1, Settle: settle}, proxy, pod)
		start := time.Now()
		s.Upsert(&discovery.Target{UID: "a", Version: 1})
		waitFor(t, "pod failure recorded", func() bool { r, ok := sink.result("a", StagePod); return ok && r.Outcome == Failed })
		if _, ok := sink.result("a", StageProxy); ok {
			t.Fatalf("proxy failure recorded %s after the Service appeared, within settle %s", time.Since(start), settle)
		}
		if s.Stats().Settling.Load() == 0 {
			t.Fatal("held-back failure not counted")
		}
		if r, _ := sink.result("a", StagePod); r.Outcome != Failed {
			t.Fatal("the pod stage's failure was held back too")
		}
		waitFor(t, "proxy failure recorded after settle", func() bool { r, ok := sink.result("a", StageProxy); return ok && r.Outcome == Failed })
		if took := time.Since(start); took < settle {
			t.Fatalf("proxy failure recorded after %s, before settle %s", took, settle)
		}
	})
	t.Run("transient failure never recorded", func(t *testing.T) {
		proxy := &failingProber{stage: StageProxy, failFirst: 1}
		s, sink := startScheduler(t, SchedulerConfig{Interval: interval, Timeout: 100 * time.Millisecond, Workers: 1, Settle: settle}, proxy)
		s.Upsert(&discovery.Target{UID: "a", Version: 1})
		waitFor(t, "proxy ok after settle", func() bool { r, ok := sink.result("a", StageProxy); return ok && r.Outcome == OK })
		if got := s.Stats().Settling.Load(); got != 1 {
			t.Fatalf("settling failures %d, want 1", got)
		}
	})
	t.Run("a change restarts it", func(t *testing.T) {
		proxy := &failingProber{stage: StageProxy, failFirst: -1}
		s, sink := startScheduler(t, SchedulerConfig{Interval: interval, Timeout: 100 * time.Millisecond, Workers: 1, Settle: settle}, proxy)
		s.Upsert(&discovery.Target{UID: "a", Version: 1})
		waitFor(t, "proxy failure recorded", func() bool { r, ok := sink.result("a", StageProxy); return ok && r.Outcome == Failed })
		proxy.mu.Lock()
		proxy.failFirst, proxy.calls = 1, 0 // fails once more right after the change, then works
		proxy.mu.Unlock()
		held := s.Stats().Settling.Load()
		s.Upsert(&discovery.Target{UID: "a", Version: 2})
		waitFor(t, "proxy ok after the change settled", func() bool { r, _ := sink.result("a", StageProxy); return r.Outcome == OK })
		if s.Stats().Settling.Load() != held+1 {
			t.Fatalf("settling failures %d, want %d", s.Stats().Settling.Load(), held+1)
		}
	})
	t.Run("zero settle records at once", func(t *testing.T) {
		proxy := &failingProber{stage: StageProxy, failFirst: -1}
		s, sink := startScheduler(t, SchedulerConfig{Interval: interval, Timeout: 100 * time.Millisecond, Workers: 1}, proxy)
		start := time.Now()
		s.Upsert(&discovery.Target{UID: "a", Version: 1})
		waitFor(t, "proxy failure recorded", func() bool { r, ok := sink.result("a", StageProxy); return ok && r.Outcome == Failed })
		if took := time.Since(start); took > settle {
			t.Errorf("recorded after %s without settle", took)
		}
		if s.Stats().Settling.Load() != 0 {
			t.Error("settling counted without settle")
		}
	})
}

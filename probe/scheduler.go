package probe

import (
	"container/heap"
	"context"
	"fmt"
	"hash/fnv"
	"log/slog"
	"maps"
	"math/rand/v2"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/svcprobe/svcprobe/discovery"
	"k8s.io/apimachinery/pkg/types"
)

// ResultSink receives what the scheduler measured. The metrics store implements it.
type ResultSink interface {
	Record(t *discovery.Target, results []Result)
	Forget(uid types.UID)
	RecordClusterDNS(r ClusterDNSResult)
}

// SchedulerConfig sets the pace.
type SchedulerConfig struct {
	Interval time.Duration // every target is probed once per interval
	Timeout  time.Duration // per stage
	Workers  int           // targets probed at once
	// ClusterDNS, when set, runs once per interval (the canary and each DNS Pod).
	ClusterDNS func(ctx context.Context) ClusterDNSResult
	// SampleSize, when > 0 (node mode), bounds the Services probed per interval: each is probed
	// once per coverage period ceil(N / SampleSize) × Interval (N the Services known), at a phase
	// of that period given by a hash of its UID, so about SampleSize a interval. A change to a
	// sampled Service does not bring its probe forward (a node agent on every node would turn
	// each endpoint change into a burst). Zero probes every Service every interval.
	SampleSize int
	// Always names the Services probed every interval even when sampling (the hairpin Service).
	Always func(t *discovery.Target) bool
	// Settle is how long after a Service or its endpoints change (or first appear) the data
	// plane may lag the API: kube-proxy programs the VIP and NodePort rules, CoreDNS serves the
	// new records, moments after the informers see the change. A failure of the dns, proxy,
	// nodeport or hairpin stage in a probe that started within Settle of the change is not
	// recorded (the stage keeps its last result) and the Service is probed again when Settle has
	// passed; a failure then counts. Zero records every result at once.
	Settle time.Duration
	// Programming measures how long the data plane takes to follow a change (see Programming);
	// the stages it measures are exempt from Settle while it does.
	Programming Programming
}

// settleStages are the stages whose answers come from the data plane (kube-proxy, CoreDNS),
// which follows the API a moment later.
var settleStages = map[Stage]bool{StageDNS: true, StageProxy: true, StageNodePort: true, StageLoadBalancer: true, StageHairpin: true}

// Validate rejects absurd settings at start.
func (c SchedulerConfig) Validate() error {
	switch {
	case c.Interval <= 0:
		return fmt.Errorf("--probe.interval must be positive, got %s", c.Interval)
	case c.Timeout <= 0:
		return fmt.Errorf("--probe.timeout must be positive, got %s", c.Timeout)
	case c.Timeout > c.Interval:
		return fmt.Errorf("--probe.timeout (%s) must not exceed --probe.interval (%s)", c.Timeout, c.Interval)
	case c.Workers < 1:
		return fmt.Errorf("workers must be at least 1, got %d", c.Workers)
	case c.SampleSize < 0:
		return fmt.Errorf("--node.sample-size must not be negative, got %d", c.SampleSize)
	case c.Settle < 0:
		return fmt.Errorf("--probe.settle must not be negative, got %s", c.Settle)
	case c.Programming.Ceiling < 0:
		return fmt.Errorf("--probe.programming.ceiling must not be negative, got %s", c.Programming.Ceiling)
	case c.Programming.Ceiling > 0 && c.Programming.Cadence <= 0:
		return fmt.Errorf("--probe.programming.cadence must be positive, got %s", c.Programming.Cadence)
	case c.Programming.Ceiling > 0 && c.Programming.Cadence > c.Programming.Ceiling:
		return fmt.Errorf("--probe.programming.cadence (%s) must not exceed --probe.programming.ceiling (%s)", c.Programming.Cadence, c.Programming.Ceiling)
	}
	return nil
}

// Scheduler keeps the set of targets and probes each once per interval, spread over the interval
// by a hash of the UID plus jitter, so thousands of Services do not fire at once. A new or changed
// target gets its cheap stages (spec, endpoints) at once, in the caller's goroutine, and its
// network stages within moments.
type Scheduler struct {
	cfg     SchedulerConfig
	cheap   []Prober // spec, endpoints: no sockets, run on every change
	network []Prober // dns, pod, proxy, hairpin
	sink    ResultSink
	log     *slog.Logger

	mu      sync.Mutex
	entries map[types.UID]*entry
	queue   entryHeap
	wake    chan struct{}

	stats SchedulerStats
}

// SchedulerStats are the scheduler's self-metrics.
type SchedulerStats struct {
	Rounds        atomic.Uint64 // target probes completed
	Skipped       atomic.Uint64 // a target was due while its previous probe still ran
	LagNanos      atomic.Int64  // how late the last probe started against its slot
	MaxLagNanos   atomic.Int64  // the largest lag since start
	Pending       atomic.Int64  // targets never probed yet (sampled ones not counted)
	ClusterRounds atomic.Uint64
	Settling      atomic.Uint64 // failures held back because the target had just changed (Settle)
	// ProgrammingHeld counts the failures of a stage being programmed that were held back (the
	// change not yet in the data plane, within the ceiling); each was probed again.
	ProgrammingHeld atomic.Uint64
	// PeriodNanos is the coverage period: the longest time between two probes of a Service
	// (the interval, or ceil(N / SampleSize) × interval when sampling).
	PeriodNanos atomic.Int64
}

type entry struct {
	t       *discovery.Target
	next    time.Time
	index   int // in the heap; -1 when not queued
	running bool
	probed  bool
	pending bool      // counted in Stats().Pending until its first probe
	changed time.Time // when the target last appeared or changed (SchedulerConfig.Settle)
	// programming holds, per stage, the start of a change the data plane has yet to show
	// (SchedulerConfig.Programming); only, when set, the stages the next probe runs alone (a
	// recheck of stages being programmed, at the cadence).
	programming map[Stage]time.Time
	only        map[Stage]bool
	// unprogrammed holds, per stage, the start of a change that did not arrive within the
	// ceiling: the stage's failures keep reason not_programmed until it passes (the change, or
	// a later one, arrived) or no longer applies.
	unprogrammed map[Stage]time.Time
}

// NewScheduler builds a scheduler over the given probers.
func NewScheduler(cfg SchedulerConfig, probers []Prober, sink ResultSink, log *slog.Logger) (*Scheduler, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	s := &Scheduler{cfg: cfg, sink: sink, log: log, entries: map[types.UID]*entry{}, wake: make(chan struct{}, 1)}
	s.stats.PeriodNanos.Store(int64(cfg.Interval))
	for _, p := range probers {
		switch p.Stage() {
		case StageSpec, StageEndpoints:
			s.cheap = append(s.cheap, p)
		default:
			s.network = append(s.network, p)
		}
	}
	return s, nil
}

// Stats returns the scheduler's counters.
func (s *Scheduler) Stats() *SchedulerStats { return &s.stats }

// Upsert adds or updates a target (discovery.Sink).
func (s *Scheduler) Upsert(t *discovery.Target) {
	now := time.Now()
	// The cheap stages answer "does it have ready endpoints" the moment the slice changes.
	results := make([]Result, 0, len(s.cheap))
	for _, p := range s.cheap {
		results = append(results, s.run(context.Background(), p, t, now))
	}
	s.sink.Record(t, results)

	s.mu.Lock()
	e, ok := s.entries[t.UID]
	sampled := s.sampled(t)
	if !ok {
		e = &entry{index: -1, pending: !sampled}
		s.entries[t.UID] = e
		if e.pending {
			s.stats.Pending.Add(1)
		}
		s.stats.PeriodNanos.Store(int64(CoveragePeriod(len(s.entries), s.cfg.SampleSize, s.cfg.Interval)))
	}
	var started map[Stage]time.Time
	if !ok || e.t.Version != t.Version {
		e.changed = now
		var old *discovery.Target
		if ok {
			old = e.t
		}
		for st, since := range programmingChanges(old, t, now, s.cfg.Programming.Ceiling) {
			if _, going := e.programming[st]; going {
				continue // the earlier change is not in yet: measure from it
			}
			if e.programming == nil {
				e.programming = map[Stage]time.Time{}
			}
			e.programming[st] = since
			delete(e.unprogrammed, st) // a new change, measured anew
			if started == nil {
				started = map[Stage]time.Time{}
			}
			started[st] = since
		}
	}
	e.t = t
	if ps, ok := s.sink.(ProgrammingSink); ok {
		for st, since := range started {
			ps.Programming(t, st, since)
		}
	}
	// Probe the network stages soon, spread a little so a burst of changes is not a burst of dials.
	soon := now.Add(time.Duration(rand.Int64N(int64(min(s.cfg.Interval/10, time.Second)) + 1)))
	if sampled && len(started) == 0 {
		// Its own phase of the coverage period, first probe included: the sample's bound holds
		// from the start, and a change does not bring the probe forward (unless the data plane
		// has to follow it: the measurement of its programming starts now, bounded by the
		// ceiling).
		if e.index < 0 && !e.running {
			e.next = s.nextSlot(t.UID, time.Time{}, now)
			heap.Push(&s.queue, e)
		}
	} else if e.index < 0 && !e.running {
		e.next = soon
		heap.Push(&s.queue, e)
	} else if e.index >= 0 && soon.Before(e.next) {
		e.next = soon
		heap.Fix(&s.queue, e.index)
	}
	s.mu.Unlock()
	s.poke()
}

// Delete removes a target and its results (discovery.Sink).
func (s *Scheduler) Delete(uid types.UID, _ string) {
	s.mu.Lock()
	if e, ok := s.entries[uid]; ok {
		if e.index >= 0 {
			heap.Remove(&s.queue, e.index)
		}
		if e.pending {
			s.stats.Pending.Add(-1)
		}
		delete(s.entries, uid)
		s.stats.PeriodNanos.Store(int64(CoveragePeriod(len(s.entries), s.cfg.SampleSize, s.cfg.Interval)))
	}
	s.mu.Unlock()
	s.sink.Forget(uid)
	for _, p := range s.network {
		if f, ok := p.(forgetter); ok {
			f.Forget(uid) // state a stage keeps per Service (the pod stage's spreading)
		}
	}
}

// forgetter is a Prober that keeps per-Service state, dropped when the Service is deleted.
type forgetter interface{ Forget(uid types.UID) }

func (s *Scheduler) poke() {
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

// Pending returns how many targets have not been probed yet (readiness waits for zero).
func (s *Scheduler) Pending() int { return int(s.stats.Pending.Load()) }

// Run probes until ctx ends, then waits for in-flight probes (which see ctx cancelled).
func (s *Scheduler) Run(ctx context.Context) {
	work := make(chan *entry)
	var wg sync.WaitGroup
	for range s.cfg.Workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for e := range work {
				s.probe(ctx, e)
			}
		}()
	}
	if s.cfg.ClusterDNS != nil {
		wg.Add(1)
		go func() {
			defer wg.Done()
			s.clusterLoop(ctx)
		}()
	}
	defer func() {
		close(work)
		wg.Wait()
	}()
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	for {
		s.mu.Lock()
		var due *entry
		wait := time.Hour
		if len(s.queue) > 0 {
			head := s.queue[0]
			if d := time.Until(head.next); d <= 0 {
				due = heap.Pop(&s.queue).(*entry)
				due.running = true
			} else {
				wait = d
			}
		}
		s.mu.Unlock()
		if due != nil {
			select {
			case work <- due:
				continue
			case <-ctx.Done():
				return
			}
		}
		timer.Reset(wait)
		select {
		case <-ctx.Done():
			return
		case <-s.wake:
		case <-timer.C:
		}
	}
}

// probe runs the network stages of one target, then schedules its next slot.
func (s *Scheduler) probe(ctx context.Context, e *entry) {
	s.mu.Lock()
	t, slot, changed, only := e.t, e.next, e.changed, e.only
	e.only = nil
	progs := maps.Clone(e.programming)
	s.mu.Unlock()
	start := time.Now()
	lag := start.Sub(slot)
	s.stats.LagNanos.Store(int64(lag))
	for {
		m := s.stats.MaxLagNanos.Load()
		if int64(lag) <= m || s.stats.MaxLagNanos.CompareAndSwap(m, int64(lag)) {
			break
		}
	}
	cheap, network := s.cheap, s.network
	if only != nil { // a recheck of the stages being programmed
		cheap, network = nil, slices.DeleteFunc(slices.Clone(network), func(p Prober) bool { return !only[p.Stage()] })
	}
	results := make([]Result, len(cheap)+len(network))
	for i, p := range cheap {
		results[i] = s.run(ctx, p, t, start)
	}
	var wg sync.WaitGroup
	for i, p := range network {
		wg.Add(1)
		go func() {
			defer wg.Done()
			timeout := s.cfg.Timeout
			if _, ok := progs[p.Stage()]; ok {
				timeout = min(timeout, programmingAttempt)
			}
			results[len(cheap)+i] = Run(ctx, p, t, timeout, start)
		}()
	}
	wg.Wait()
	if ctx.Err() != nil {
		return // shutting down: a cancelled probe is not a failure of the Service
	}
	s.stats.Rounds.Add(1)

	s.mu.Lock()
	defer s.mu.Unlock()
	e.running = false
	if cur, ok := s.entries[t.UID]; !ok || cur != e {
		return // deleted while probing: its results must not come back
	}
	if e.t.Version != t.Version {
		// Upsert already recorded the new target's spec and endpoints; do not overwrite them.
		results = results[len(cheap):]
	}
	results = s.programmed(e, t, results, progs)
	var recheck time.Time
	if s.cfg.Settle > 0 && start.Sub(changed) < s.cfg.Settle {
		kept := results[:0]
		for _, r := range results {
			if _, measured := progs[r.Stage]; measured {
				kept = append(kept, r) // programming decided about it
				continue
			}
			if r.Outcome == Failed && settleStages[r.Stage] {
				recheck = changed.Add(s.cfg.Settle)
				s.stats.Settling.Add(1)
				continue
			}
			kept = append(kept, r)
		}
		results = kept
	}
	s.sink.Record(t, results)
	e.probed = true
	if e.pending {
		e.pending = false
		s.stats.Pending.Add(-1)
	}
	if e.t.Version != t.Version && !s.sampled(e.t) {
		e.next = time.Now() // changed while probing: probe again now
	} else {
		e.next = s.nextSlot(t.UID, slot, time.Now())
		if !recheck.IsZero() && recheck.Before(e.next) {
			e.next = recheck // a failure held back while the data plane settles: look again then
		}
		if len(e.programming) > 0 {
			// Stages still being programmed: again at the cadence, those stages alone.
			if again := time.Now().Add(s.cfg.Programming.Cadence); again.Before(e.next) {
				e.next = again
				e.only = map[Stage]bool{}
				for st := range e.programming {
					e.only[st] = true
				}
			}
		}
	}
	heap.Push(&s.queue, e)
	s.poke()
}

// programmed settles the measurements of the stages in progs (being programmed when the probe
// started) against their results, and returns the results to record: a stage that shows the
// change ends its measurement (its latency from the change's start to the end of the attempt);
// a failure within the ceiling is held back (not recorded; the stage is probed again at the
// cadence); past it, the failure is recorded as not_programmed; a skipped stage ends it (nothing
// to program any more), and so does a proxy failure in a round where the Pods failed directly
// (recorded as it is). Called with s.mu held.
func (s *Scheduler) programmed(e *entry, t *discovery.Target, results []Result, progs map[Stage]time.Time) []Result {
	if len(progs) == 0 && len(e.unprogrammed) == 0 {
		return results
	}
	ps, _ := s.sink.(ProgrammingSink)
	end := func(p Programmed) {
		if e.programming[p.Stage] == p.Since {
			delete(e.programming, p.Stage)
		}
		if ps != nil {
			ps.Programmed(t, p)
		}
	}
	now := time.Now()
	// Pods that do not answer directly cannot answer through the VIP: a proxy failure then is
	// theirs, not a change waiting to be programmed (the VIP of a Service whose new endpoints
	// refuse would otherwise be "programming" until the ceiling, then not_programmed).
	podFailed := slices.ContainsFunc(results, func(r Result) bool { return r.Stage == StagePod && r.Outcome == Failed })
	kept := results[:0]
	for _, r := range results {
		since, ok := progs[r.Stage]
		if !ok {
			if was, stuck := e.unprogrammed[r.Stage]; stuck {
				switch {
				case r.Outcome != Failed, r.Stage == StageProxy && podFailed:
					delete(e.unprogrammed, r.Stage) // it arrived, no longer applies, or the Pods explain it
				case r.Reason != ReasonBudget && r.Reason != ReasonPortExhausted:
					r = notProgrammed(r, was, s.cfg.Programming.Ceiling)
				}
			}
			kept = append(kept, r)
			continue
		}
		switch {
		case r.Outcome == Skipped, r.Outcome == Failed && r.Stage == StageProxy && podFailed:
			// Nothing left to program, or the Pods explain the VIP: the result is recorded as it is.
			end(Programmed{Stage: r.Stage, Since: since, At: now, Abandoned: true})
		case r.Outcome == OK:
			at := r.At.Add(r.Duration)
			end(Programmed{Stage: r.Stage, Since: since, At: at, Latency: max(0, at.Sub(since)), Done: true})
		case r.Reason == ReasonBudget || r.Reason == ReasonPortExhausted:
			// The exporter's own limit: says nothing about the change; keep measuring.
			s.stats.ProgrammingHeld.Add(1)
			continue
		case now.Sub(since) < s.cfg.Programming.Ceiling:
			s.stats.ProgrammingHeld.Add(1)
			continue
		default:
			r = notProgrammed(r, since, s.cfg.Programming.Ceiling)
			if e.unprogrammed == nil {
				e.unprogrammed = map[Stage]time.Time{}
			}
			e.unprogrammed[r.Stage] = since
			end(Programmed{Stage: r.Stage, Since: since, At: now, Latency: now.Sub(since)})
		}
		kept = append(kept, r)
	}
	return kept
}

// sampled reports whether t is probed once per coverage period rather than every interval.
func (s *Scheduler) sampled(t *discovery.Target) bool {
	return s.cfg.SampleSize > 0 && (s.cfg.Always == nil || !s.cfg.Always(t))
}

// period is how often t is probed: the interval, or when sampling the coverage period
// ceil(N / SampleSize) × interval. Called with s.mu held.
func (s *Scheduler) period(t *discovery.Target) time.Duration {
	if !s.sampled(t) {
		return s.cfg.Interval
	}
	return CoveragePeriod(len(s.entries), s.cfg.SampleSize, s.cfg.Interval)
}

// CoveragePeriod returns ceil(n / sampleSize) × interval: within it every one of n Services is
// probed once (interval when sampleSize is 0).
func CoveragePeriod(n, sampleSize int, interval time.Duration) time.Duration {
	if sampleSize <= 0 {
		return interval
	}
	return time.Duration(max(1, (n+sampleSize-1)/sampleSize)) * interval
}

// nextSlot keeps each target on its own phase of its period (the interval, or the coverage period
// when sampled): the slot after prev that is still in the future. Slots missed because a probe
// overran are counted as skipped rounds. Called with s.mu held.
func (s *Scheduler) nextSlot(uid types.UID, prev, now time.Time) time.Time {
	iv := s.cfg.Interval
	if e, ok := s.entries[uid]; ok && e.t != nil {
		iv = s.period(e.t)
	}
	phase := time.Duration(hashUID(uid) % uint64(iv))
	base := now.Truncate(iv).Add(phase)
	for !base.After(now) {
		base = base.Add(iv)
	}
	if missed := int64(base.Sub(prev)/iv) - 1; missed > 0 && !prev.IsZero() {
		s.stats.Skipped.Add(uint64(missed))
	}
	// Jitter of up to 1% of the interval keeps Services that hash alike from dialing in lockstep.
	return base.Add(time.Duration(rand.Int64N(int64(s.cfg.Interval/100) + 1)))
}

func hashUID(uid types.UID) uint64 {
	h := fnv.New64a()
	h.Write([]byte(uid))
	return h.Sum64()
}

func (s *Scheduler) run(ctx context.Context, p Prober, t *discovery.Target, now time.Time) Result {
	return Run(ctx, p, t, s.cfg.Timeout, now)
}

// Run runs one stage under its timeout and stamps the result with the stage, the wall time it
// took and the round it belongs to. The scheduler and the one-shot diagnose both use it.
func Run(ctx context.Context, p Prober, t *discovery.Target, timeout time.Duration, round time.Time) Result {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	start := time.Now()
	r := p.Probe(ctx, t)
	r.Stage = p.Stage()
	r.Duration = time.Since(start)
	r.At = round
	if r.Outcome == Failed && r.Family == "" {
		r.Family = onlyFamily(r.Checks)
	}
	return r
}

func (s *Scheduler) clusterLoop(ctx context.Context) {
	t := time.NewTicker(s.cfg.Interval)
	defer t.Stop()
	for {
		cctx, cancel := context.WithTimeout(ctx, s.cfg.Timeout)
		r := s.cfg.ClusterDNS(cctx)
		cancel()
		if ctx.Err() != nil {
			return
		}
		s.stats.ClusterRounds.Add(1)
		s.sink.RecordClusterDNS(r)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// entryHeap orders entries by their next slot.
type entryHeap []*entry

func (h entryHeap) Len() int           { return len(h) }
func (h entryHeap) Less(i, j int) bool { return h[i].next.Before(h[j].next) }
func (h entryHeap) Swap(i, j int) {
	h[i], h[j] = h[j], h[i]
	h[i].index, h[j].index = i, j
}
func (h *entryHeap) Push(x any) {
	e := x.(*entry)
	e.index = len(*h)
	*h = append(*h, e)
}
func (h *entryHeap) Pop() any {
	old := *h
	e := old[len(old)-1]
	old[len(old)-1] = nil
	*h = old[:len(old)-1]
	e.index = -1
	return e
}

package metrics

import (
	"maps"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/svcprobe/svcprobe/discovery"
	"github.com/svcprobe/svcprobe/probe"
	"k8s.io/apimachinery/pkg/types"
)

// Store holds the latest results per Service, keyed by UID, and the counters since the Service
// appeared. It implements probe.ResultSink.
type Store struct {
	mu       sync.RWMutex
	services map[types.UID]*serviceState
	cluster  *probe.ClusterDNSResult
	observe  func(probe.Result) // feeds the per-stage duration histogram
	// observeProgramming feeds the programming latency histogram; inProgress counts the
	// Services with a change being programmed, by stage.
	observeProgramming func(probe.Programmed)
	inProgress         map[probe.Stage]int
	window             int // rounds per network stage window (--verdict.window)
	// inconclusive counts, exporter-wide, the stage runs that failed on the exporter's own limits
	// (ExporterLimited), by stage and reason.
	inconclusive map[stageResult]uint64
	// refused counts, exporter-wide, the stage runs the SSRF guard refused whole (every address
	// outside the cluster and not allowed), by stage.
	refused map[probe.Stage]uint64
	// byName finds a Service's UID by namespace/name (Lookup).
	byName map[string]types.UID
	// tally is the cross-Service evidence (what every Service's VIP did at its latest probe),
	// kept up to date at each Record, Forget and cluster DNS change: the sum of the services' vip.
	tally VIPTally
}

// maxVerdictChanges is how many verdict changes a Service keeps (VerdictChange).
const maxVerdictChanges = 5

// VerdictChange is a change of a Service's verdict layer: from At on, the verdict was Layer (with
// Reason at that time).
type VerdictChange struct {
	At     time.Time
	Layer  Layer
	Reason probe.Reason
}

// StageCount is how often a stage ran for a Service, conclusively (not skipped, not limited by
// the exporter: ExporterLimited), and how many of those runs failed.
type StageCount struct {
	Runs, Failures uint64
}

type stageResult struct {
	stage  probe.Stage
	reason probe.Reason
}

type serviceState struct {
	target  *discovery.Target
	results map[probe.Stage]probe.Result
	counts  map[probe.Stage]StageCount
	last    time.Time // last network probe
	windows map[probe.Stage]*window
	// inconclusive is each stage's latest run that failed on the exporter's own limits, since
	// its last conclusive one (ExporterLimited).
	inconclusive map[probe.Stage]probe.Result
	// vip is what this Service contributes to Store.tally.
	vip vip
	// changes are the last verdict layer changes, oldest first (the last one: the current layer,
	// since when), as decided at each Record.
	changes []VerdictChange
	// programming holds the changes being programmed (their start, by stage), programmed the
	// last measurement of each stage.
	programming map[probe.Stage]time.Time
	programmed  map[probe.Stage]probe.Programmed
}

// ExporterLimited reports whether r failed on the exporter's own limits, not the Service's: its
// probe budget ran out before the stage could start (budget_exhausted), or the exporter could not
// open a socket (port_exhausted: no ephemeral port or file descriptor left). Such a run says
// nothing about the Service. The store keeps it out of the Service's results, window and counters
// (the previous result holds, marked inconclusive on the status page) and counts it exporter-wide
// (svcprobe_probes_inconclusive_total, alert SvcprobeProbesInconclusive).
func ExporterLimited(r probe.Result) bool {
	return r.Outcome == probe.Failed && (r.Reason == probe.ReasonBudget || r.Reason == probe.ReasonPortExhausted)
}

// NewStore returns an empty store whose network stages keep DefaultWindow rounds.
func NewStore() *Store {
	return &Store{services: map[types.UID]*serviceState{}, window: DefaultWindow, inconclusive: map[stageResult]uint64{},
		refused: map[probe.Stage]uint64{}, byName: map[string]types.UID{}, inProgress: map[probe.Stage]int{}}
}

// SetWindow sets how many rounds each network stage's window keeps (at least 2). Call it before
// the first Record.
func (s *Store) SetWindow(n int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.window = max(2, n)
}

// windowed reports whether a stage's verdict comes from a window of rounds: the stages that
// measure the data plane. spec and endpoints read the API, whose state needs no second look.
func windowed(s probe.Stage) bool { return s != probe.StageSpec && s != probe.StageEndpoints }

// Record keeps the results of one probe of t (probe.ResultSink).
func (s *Store) Record(t *discovery.Target, results []probe.Result) {
	s.mu.Lock()
	defer s.mu.Unlock()
	st, ok := s.services[t.UID]
	if !ok {
		st = &serviceState{results: map[probe.Stage]probe.Result{}, counts: map[probe.Stage]StageCount{},
			windows: map[probe.Stage]*window{}}
		s.services[t.UID] = st
	}
	st.target = t
	s.byName[t.Namespace+"/"+t.Name] = t.UID
	// A VIP or NodePort failing in a round where the Pods failed directly is explained by them.
	// So is a VIP whose closer look found the Pods failing some direct connections too; that is
	// a failure of the Pods, which their window remembers.
	podFailed := false
	for _, r := range results {
		if r.Outcome == probe.Failed && !ExporterLimited(r) && (r.Stage == probe.StagePod || r.PodsFailing > 0) {
			podFailed = true
		}
	}
	for _, r := range results {
		if ExporterLimited(r) {
			if st.inconclusive == nil {
				st.inconclusive = map[probe.Stage]probe.Result{}
			}
			st.inconclusive[r.Stage] = r
			s.inconclusive[stageResult{r.Stage, r.Reason}]++
			continue
		}
		delete(st.inconclusive, r.Stage)
		st.results[r.Stage] = r
		if windowed(r.Stage) {
			if r.Outcome == probe.Skipped {
				delete(st.windows, r.Stage) // it no longer applies: its old rounds say nothing now
			} else {
				w := st.windows[r.Stage]
				if w == nil {
					w = newWindow(s.window)
					st.windows[r.Stage] = w
				}
				w.add(r, podFailed && r.Outcome == probe.Failed && r.Stage.ThroughProxy())
			}
			if w := st.windows[probe.StagePod]; w != nil && r.Stage == probe.StageProxy {
				switch {
				case r.PodsFailing > 0:
					w.noteFailure()
				case r.LookedCloser && !podFailed:
					// Every Pod answered the closer look, in a round where the pod stage
					// passed: a Pod that failed before is no explanation of this VIP now.
					w.forgetFailure()
				}
			}
		}
		if r.Outcome == probe.Skipped {
			// A stage skipped because every address it would dial is outside the cluster and not
			// allowed (the SSRF guard) is counted exporter-wide (svcprobe_probes_refused_total), so
			// the refusal shows on /metrics and not only on the status page. Neither it nor other
			// skips (nothing to probe) are runs.
			if r.Reason == probe.ReasonExternalNotAllowed {
				s.refused[r.Stage]++
			}
			continue
		}
		c := st.counts[r.Stage]
		c.Runs++
		if r.Outcome == probe.Failed {
			c.Failures++
		}
		st.counts[r.Stage] = c
		if r.Stage != probe.StageSpec && r.Stage != probe.StageEndpoints && r.At.After(st.last) {
			st.last = r.At
		}
		if s.observe != nil {
			s.observe(r)
		}
	}
	s.retally(st)
	s.noteVerdict(st, results)
}

// retally updates the cross-Service tally with st's VIP as it is now. Called with s.mu held.
func (s *Store) retally(st *serviceState) {
	if v := s.vipOf(st); v != st.vip {
		s.tally = s.tally.plus(st.vip, -1).plus(v, 1)
		st.vip = v
	}
}

// evidence is what Decide weighs for st. Called with s.mu held.
func (s *Store) evidence(st *serviceState, results map[probe.Stage]probe.Result, windows map[probe.Stage]Window) Evidence {
	return Evidence{Results: results, Windows: windows, Cluster: s.cluster, OtherVIPs: s.tally.plus(st.vip, -1)}
}

// noteVerdict decides st's verdict after a Record and keeps its layer changes, timed by the
// latest result of the round. Called with s.mu held.
func (s *Store) noteVerdict(st *serviceState, results []probe.Result) {
	windows := make(map[probe.Stage]Window, len(st.windows))
	for k, w := range st.windows {
		windows[k] = w.snapshot()
	}
	layer, reason := Decide(s.evidence(st, st.results, windows))
	if n := len(st.changes); n > 0 && st.changes[n-1].Layer == layer {
		return
	}
	var at time.Time
	for _, r := range results {
		if r.At.After(at) {
			at = r.At
		}
	}
	if at.IsZero() {
		at = time.Now()
	}
	st.changes = append(st.changes, VerdictChange{At: at, Layer: layer, Reason: reason})
	if len(st.changes) > maxVerdictChanges {
		st.changes = slices.Delete(st.changes, 0, len(st.changes)-maxVerdictChanges)
	}
}

// Forget drops everything about a Service (probe.ResultSink).
func (s *Store) Forget(uid types.UID) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if st, ok := s.services[uid]; ok {
		s.tally = s.tally.plus(st.vip, -1)
		s.forgetProgramming(st)
		if st.target != nil && s.byName[st.target.Namespace+"/"+st.target.Name] == uid {
			delete(s.byName, st.target.Namespace+"/"+st.target.Name)
		}
	}
	delete(s.services, uid)
}

// RecordClusterDNS keeps the latest cluster DNS round (probe.ResultSink).
func (s *Store) RecordClusterDNS(r probe.ClusterDNSResult) {
	s.mu.Lock()
	defer s.mu.Unlock()
	old := s.cluster
	s.cluster = &r
	if old == nil || !slices.Equal(old.ServiceIPs, r.ServiceIPs) {
		// Which VIP is the DNS Service's changed: every Service's contribution may have.
		for _, st := range s.services {
			s.retally(st)
		}
	}
}

// ServiceStatus is a consistent copy of one Service's state, for collectors and the status page.
type ServiceStatus struct {
	Target  *discovery.Target
	Results map[probe.Stage]probe.Result
	// Counts are the stage's conclusive runs and failures since the Service's first probe
	// (svcprobe_stage_runs_total, svcprobe_stage_failures_total).
	Counts map[probe.Stage]StageCount
	// Windows are the network stages' windows of recent rounds (their state and failing share).
	Windows map[probe.Stage]Window
	Verdict Layer
	Reason  probe.Reason
	// Family is the IP family the verdict's failure is confined to (DecideFamily), "" if none.
	Family    probe.Family
	LastProbe time.Time
	// Inconclusive holds each stage's latest run that failed on the exporter's own limits since
	// its last conclusive one (ExporterLimited); Results still hold that conclusive one.
	Inconclusive map[probe.Stage]probe.Result // Since is when the verdict's layer became the current one (zero when the evidence of other
	// Services changed it since this Service's last probe: it is being decided anew). Changes are
	// its last layer changes, oldest first.
	Since   time.Time
	Changes []VerdictChange
	// Programming holds the changes being programmed now (their start, by stage: the stage
	// shows "programming", not a failure); Programmed the last measurement of each stage.
	Programming map[probe.Stage]time.Time
	Programmed  map[probe.Stage]probe.Programmed
}

// Snapshot copies the store, sorted by namespace and name.
func (s *Store) Snapshot() ([]ServiceStatus, *probe.ClusterDNSResult) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	out := make([]ServiceStatus, 0, len(s.services))
	for _, st := range s.services {
		out = append(out, s.status(st))
	}
	sort.Slice(out, func(i, j int) bool {
		a, b := out[i].Target, out[j].Target
		if a.Namespace != b.Namespace {
			return a.Namespace < b.Namespace
		}
		return a.Name < b.Name
	})
	return out, s.clusterCopy()
}

// ServiceVerdict is one Service's verdict as a listing needs it: who and which layer.
type ServiceVerdict struct {
	Namespace, Name string
	Verdict         Layer
	Reason          probe.Reason
}

// Verdicts decides every Service's verdict now, as Snapshot would, without copying any Service's
// state: what the status page's matrix and the list API filter, sort and page, before they read
// the page's own Services with Lookup. Sorted by namespace and name.
func (s *Store) Verdicts() []ServiceVerdict {
	s.mu.RLock()
	out := make([]ServiceVerdict, 0, len(s.services))
	windows := map[probe.Stage]Window{}
	for _, st := range s.services {
		if st.target == nil {
			continue
		}
		clear(windows)
		for k, w := range st.windows {
			windows[k] = w.snapshot()
		}
		layer, reason := Decide(s.evidence(st, st.results, windows))
		out = append(out, ServiceVerdict{Namespace: st.target.Namespace, Name: st.target.Name, Verdict: layer, Reason: reason})
	}
	s.mu.RUnlock()
	slices.SortFunc(out, func(a, b ServiceVerdict) int {
		if a.Namespace != b.Namespace {
			return strings.Compare(a.Namespace, b.Namespace)
		}
		return strings.Compare(a.Name, b.Name)
	})
	return out
}

// Lookup copies one Service's state, found by namespace and name, and the cluster DNS round:
// what the per-Service status page and JSON document need, without copying every Service.
func (s *Store) Lookup(namespace, name string) (ServiceStatus, *probe.ClusterDNSResult, bool) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	st, ok := s.services[s.byName[namespace+"/"+name]]
	if !ok || st.target == nil {
		return ServiceStatus{}, nil, false
	}
	return s.status(st), s.clusterCopy(), true
}

// clusterCopy copies the latest cluster DNS round (nil before the first). Called with s.mu held.
func (s *Store) clusterCopy() *probe.ClusterDNSResult {
	if s.cluster == nil {
		return nil
	}
	c := *s.cluster
	return &c
}

// status is a consistent copy of st with its verdict. Called with s.mu held. Cross-Service
// evidence: what the other VIPs did at their latest probe (s.tally, kept at each Record); the
// cluster DNS Service's own VIP is left out of it, its failure being the very thing the DNS rule
// weighs.
func (s *Store) status(st *serviceState) ServiceStatus {
	ss := ServiceStatus{Target: st.target, Results: make(map[probe.Stage]probe.Result, len(st.results)),
		Counts: make(map[probe.Stage]StageCount, len(st.counts)), LastProbe: st.last,
		Windows: make(map[probe.Stage]Window, len(st.windows))}
	for k, w := range st.windows {
		ss.Windows[k] = w.snapshot()
	}
	for k, v := range st.results {
		ss.Results[k] = v
	}
	if len(st.inconclusive) > 0 {
		ss.Inconclusive = make(map[probe.Stage]probe.Result, len(st.inconclusive))
		for k, v := range st.inconclusive {
			ss.Inconclusive[k] = v
		}
	}
	for k, v := range st.counts {
		ss.Counts[k] = v
	}
	if len(st.programming) > 0 {
		ss.Programming = maps.Clone(st.programming)
	}
	if len(st.programmed) > 0 {
		ss.Programmed = maps.Clone(st.programmed)
	}
	ss.Verdict, ss.Reason, ss.Family = DecideFamily(s.evidence(st, ss.Results, ss.Windows))
	if n := len(st.changes); n > 0 {
		ss.Changes = slices.Clone(st.changes)
		if st.changes[n-1].Layer == ss.Verdict {
			ss.Since = st.changes[n-1].At
		}
	}
	return ss
}

// Refused returns, by stage, how many stage runs the SSRF guard refused whole since start (every
// address the stage would dial was outside the cluster and not allowed).
func (s *Store) Refused() map[probe.Stage]uint64 {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return maps.Clone(s.refused)
}

// Inconclusive returns, by stage and reason, how many stage runs failed on the exporter's own
// limits (ExporterLimited) since start.
func (s *Store) Inconclusive() map[probe.Stage]map[probe.Reason]uint64 {
	s.mu.RLock()
	defer s.mu.RUnlock()
	out := map[probe.Stage]map[probe.Reason]uint64{}
	for k, v := range s.inconclusive {
		if out[k.stage] == nil {
			out[k.stage] = map[probe.Reason]uint64{}
		}
		out[k.stage][k.reason] = v
	}
	return out
}

// ClusterDNS returns a copy of the latest cluster DNS round, or nil before the first.
func (s *Store) ClusterDNS() *probe.ClusterDNSResult {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.clusterCopy()
}

// vip says what a Service's VIP did at its latest probe.
type vip int

const (
	vipNone vip = iota // no proxy stage ran, or the Service is the cluster DNS Service
	vipOK
	vipFailed
)

// vipOf returns what st's proxy stage said at its latest probe. Called with s.mu held.
func (s *Store) vipOf(st *serviceState) vip {
	r, ok := st.results[probe.StageProxy]
	if !ok || r.Outcome == probe.Skipped || st.target == nil {
		return vipNone
	}
	if s.cluster != nil {
		for _, a := range st.target.ClusterIPs {
			if slices.Contains(s.cluster.ServiceIPs, a) {
				return vipNone
			}
		}
	}
	if r.Outcome == probe.Failed {
		if p, ok := st.results[probe.StagePod]; r.PodsFailing > 0 || ok && p.Outcome == probe.Failed {
			return vipNone // its own Pods fail: it says nothing of the service proxy
		}
		return vipFailed
	}
	return vipOK
}

// plus adds n of v to the tally.
func (t VIPTally) plus(v vip, n int) VIPTally {
	switch v {
	case vipOK:
		t.OK += n
	case vipFailed:
		t.Failed += n
	}
	return t
}

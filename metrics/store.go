package metrics

import (
	"sort"
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
}

type stageResult struct {
	stage  probe.Stage
	reason probe.Reason
}

type serviceState struct {
	target   *discovery.Target
	results  map[probe.Stage]probe.Result
	counters map[stageResult]uint64
	last     time.Time // last network probe
}

// NewStore returns an empty store.
func NewStore() *Store {
	return &Store{services: map[types.UID]*serviceState{}}
}

// Record keeps the results of one probe of t (probe.ResultSink).
func (s *Store) Record(t *discovery.Target, results []probe.Result) {
	s.mu.Lock()
	defer s.mu.Unlock()
	st, ok := s.services[t.UID]
	if !ok {
		st = &serviceState{results: map[probe.Stage]probe.Result{}, counters: map[stageResult]uint64{}}
		s.services[t.UID] = st
	}
	st.target = t
	for _, r := range results {
		st.results[r.Stage] = r
		if r.Outcome == probe.Skipped {
			// A stage skipped because every address it would dial is outside the cluster and not
			// allowed (the SSRF guard) is counted, so the refusal shows on /metrics and not only on
			// the status page; other skips (nothing to probe) are not runs.
			if r.Reason == probe.ReasonExternalNotAllowed {
				st.counters[stageResult{r.Stage, r.Reason}]++
			}
			continue
		}
		st.counters[stageResult{r.Stage, r.Reason}]++
		if r.Stage != probe.StageSpec && r.Stage != probe.StageEndpoints && r.At.After(st.last) {
			st.last = r.At
		}
		if s.observe != nil {
			s.observe(r)
		}
	}
}

// Forget drops everything about a Service (probe.ResultSink).
func (s *Store) Forget(uid types.UID) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.services, uid)
}

// RecordClusterDNS keeps the latest cluster DNS round (probe.ResultSink).
func (s *Store) RecordClusterDNS(r probe.ClusterDNSResult) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.cluster = &r
}

// ServiceStatus is a consistent copy of one Service's state, for collectors and the status page.
type ServiceStatus struct {
	Target    *discovery.Target
	Results   map[probe.Stage]probe.Result
	Counters  map[probe.Stage]map[probe.Reason]uint64
	Verdict   Layer
	Reason    probe.Reason
	LastProbe time.Time
}

// Snapshot copies the store, sorted by namespace and name.
func (s *Store) Snapshot() ([]ServiceStatus, *probe.ClusterDNSResult) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	out := make([]ServiceStatus, 0, len(s.services))
	for _, st := range s.services {
		ss := ServiceStatus{Target: st.target, Results: make(map[probe.Stage]probe.Result, len(st.results)),
			Counters: map[probe.Stage]map[probe.Reason]uint64{}, LastProbe: st.last}
		for k, v := range st.results {
			ss.Results[k] = v
		}
		for k, v := range st.counters {
			if ss.Counters[k.stage] == nil {
				ss.Counters[k.stage] = map[probe.Reason]uint64{}
			}
			ss.Counters[k.stage][k.reason] = v
		}
		ss.Verdict, ss.Reason = Verdict(ss.Results, s.cluster)
		out = append(out, ss)
	}
	sort.Slice(out, func(i, j int) bool {
		a, b := out[i].Target, out[j].Target
		if a.Namespace != b.Namespace {
			return a.Namespace < b.Namespace
		}
		return a.Name < b.Name
	})
	var cluster *probe.ClusterDNSResult
	if s.cluster != nil {
		c := *s.cluster
		cluster = &c
	}
	return out, cluster
}

// ClusterDNS returns a copy of the latest cluster DNS round, or nil before the first.
func (s *Store) ClusterDNS() *probe.ClusterDNSResult {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.cluster == nil {
		return nil
	}
	c := *s.cluster
	return &c
}

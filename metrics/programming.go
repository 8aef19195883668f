package metrics

import (
	"maps"
	"time"

	"github.com/svcprobe/svcprobe/discovery"
	"github.com/svcprobe/svcprobe/probe"
)

// Network programming latency (issue 21): the store keeps, per Service, the changes being
// programmed and the last measurement of each stage, and feeds the exporter-wide histogram.

// Programming notes that a change of t is being programmed in stage since the given time
// (probe.ProgrammingSink).
func (s *Store) Programming(t *discovery.Target, stage probe.Stage, since time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	st, ok := s.services[t.UID]
	if !ok {
		return // Upsert records before it measures: a Service the store does not hold is gone
	}
	if st.programming == nil {
		st.programming = map[probe.Stage]time.Time{}
	}
	if _, going := st.programming[stage]; !going {
		s.inProgress[stage]++
	}
	st.programming[stage] = since
}

// Programmed ends a measurement (probe.ProgrammingSink): the last one is kept for the status page
// and the JSON API, and a change that arrived is observed in the histogram.
func (s *Store) Programmed(t *discovery.Target, p probe.Programmed) {
	s.mu.Lock()
	defer s.mu.Unlock()
	st, ok := s.services[t.UID]
	if !ok {
		return
	}
	if _, going := st.programming[p.Stage]; going {
		delete(st.programming, p.Stage)
		s.inProgress[p.Stage]--
	}
	if p.Abandoned {
		return
	}
	if st.programmed == nil {
		st.programmed = map[probe.Stage]probe.Programmed{}
	}
	st.programmed[p.Stage] = p
	if p.Done && s.observeProgramming != nil {
		s.observeProgramming(p)
	}
}

// InProgress returns how many Services have a change being programmed, by stage.
func (s *Store) InProgress() map[probe.Stage]int {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return maps.Clone(s.inProgress)
}

// forgetProgramming drops st's measurements in progress from the counts. Called with s.mu held.
func (s *Store) forgetProgramming(st *serviceState) {
	for stage := range st.programming {
		s.inProgress[stage]--
	}
	st.programming = nil
}

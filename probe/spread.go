package probe

import (
	"context"

	"k8s.io/apimachinery/pkg/types"

	"github.com/svcprobe/svcprobe/discovery"
)

// Spreading the pod stage (--probe.pod.spread=N).
//
// Dialing every ready endpoint of every Service every interval is what costs: at 10,000 Services
// with 10 endpoints each it is 100,000 TCP handshakes per interval, and the kernel's share of a
// handshake dominates the exporter's CPU (bench/results.md). With N > 1 a round of the pod stage
// dials, of one Service's endpoint checks:
//   - every one not dialed before (a new Pod is dialed in the round after it appears),
//   - every one that failed when last dialed (recovery shows at once),
//   - every one last dialed N rounds ago or more (each is dialed at least once per N rounds),
//   - and, rotating, enough others to make about 1/N of them.
// If any of those fails, the rest are dialed too in the same round, so a failing Service's
// result is as complete as without spreading (all Pods down reads "failed", not "2 of 10").
// The others are reported with the result of their last dial, which succeeded and is at most
// N-1 rounds old. A single Pod that stops answering is thus seen within N rounds instead of one.

// podSpread is one Service's spreading state; only the probe of that Service touches it (the
// scheduler never runs two probes of one Service at once).
type podSpread struct {
	round  uint64
	cursor int
	last   map[string]spreadCheck // by job subject: address, port, protocol and Pod
}

type spreadCheck struct {
	check Check
	round uint64 // when it was dialed
}

func (p *PodProber) state(uid types.UID) *podSpread {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.spread == nil {
		p.spread = map[types.UID]*podSpread{}
	}
	st := p.spread[uid]
	if st == nil {
		st = &podSpread{}
		p.spread[uid] = st
	}
	return st
}

// Forget drops a deleted Service's state (the scheduler calls it with the sink's Forget).
func (p *PodProber) Forget(uid types.UID) {
	p.mu.Lock()
	delete(p.spread, uid)
	p.mu.Unlock()
}

// spreadStates is how many Services have spreading state (tests: deleted ones must leave none).
func (p *PodProber) spreadStates() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.spread)
}

// runSpread dials the round's share of jobs (see above) and returns a check for every job, in
// job order: fresh for those dialed, the last dial's for the others.
func (p *PodProber) runSpread(ctx context.Context, t *discovery.Target, jobs []job) []Check {
	st := p.state(t.UID)
	st.round++
	n := uint64(p.Spread)
	share := (len(jobs) + p.Spread - 1) / p.Spread

	dial := make([]bool, len(jobs))
	picked := 0
	for i, j := range jobs {
		last, ok := st.last[j.subject]
		if !ok || !last.check.OK() || st.round-last.round >= n {
			dial[i] = true
			picked++
		}
	}
	if st.cursor >= len(jobs) {
		st.cursor = 0
	}
	for k := 0; k < len(jobs) && picked < share; k++ {
		i := (st.cursor + k) % len(jobs)
		if !dial[i] {
			dial[i] = true
			picked++
		}
	}
	st.cursor = (st.cursor + share) % len(jobs)

	checks := make([]Check, len(jobs))
	fresh := make([]bool, len(jobs))
	dialed := p.dialSome(ctx, t, jobs, dial, checks, fresh)
	if anyFailed(checks, dial) && dialed < len(jobs) {
		// Something is wrong: make the result whole rather than report stale successes.
		for i := range dial {
			dial[i] = !fresh[i]
		}
		p.dialSome(ctx, t, jobs, dial, checks, fresh)
	}

	last := make(map[string]spreadCheck, len(jobs))
	for i, j := range jobs {
		if fresh[i] {
			last[j.subject] = spreadCheck{check: checks[i], round: st.round}
			continue
		}
		prev := st.last[j.subject]
		checks[i] = prev.check
		last[j.subject] = prev
	}
	st.last = last
	if ctx.Err() != nil {
		// A round cut short (timeout, shutdown) proves nothing about the endpoints it did not
		// reach: do not let its failures or successes stand in for later rounds.
		st.last = nil
	}
	return checks
}

// dialSome runs the jobs marked in dial, writes their checks into checks and marks them fresh.
func (p *PodProber) dialSome(ctx context.Context, t *discovery.Target, jobs []job, dial []bool, checks []Check, fresh []bool) int {
	var sel []job
	var idx []int
	for i, d := range dial {
		if d {
			sel = append(sel, jobs[i])
			idx = append(idx, i)
		}
	}
	for k, c := range runJobs(ctx, p.Dialer, t, StagePod, sel) {
		checks[idx[k]] = c
		fresh[idx[k]] = true
	}
	return len(sel)
}

func anyFailed(checks []Check, dialed []bool) bool {
	for i, c := range checks {
		if dialed[i] && !c.OK() && !notDialed(c.Reason) {
			return true
		}
	}
	return false
}

package metrics

import "github.com/svcprobe/svcprobe/probe"

// DefaultWindow is how many rounds of a network stage the verdict looks at (--verdict.window).
const DefaultWindow = 8

// State is a stage's state over its window of recent rounds.
type State string

// The states. A stage is failed when it failed in its last two rounds in a row (or in its only
// round), degraded when it failed in a share of its recent rounds (at least two failed rounds, in
// at least two separate runs), and ok otherwise.
const (
	StateOK       State = "ok"
	StateDegraded State = "degraded"
	StateFailed   State = "failed"
)

// round is what one round of a stage contributes to its window.
type round struct {
	failed         bool
	failing, total int // attempts (checks, connections) failing among all
}

// window is a ring of a stage's last rounds.
type window struct {
	rounds []round // oldest first, at most size
	size   int
}

func newWindow(size int) *window {
	if size < 2 {
		size = 2
	}
	return &window{size: size}
}

// add appends one round of r, dropping the oldest beyond the window's size.
func (w *window) add(r probe.Result) {
	rd := round{failed: r.Outcome == probe.Failed, failing: r.Failing, total: r.Total}
	if rd.total == 0 { // a result without attempt counts is one attempt
		rd.total = 1
		if rd.failed {
			rd.failing = 1
		}
	}
	if rd.failed && rd.failing == 0 {
		rd.failing = 1
	}
	if !rd.failed && w.hardFailureEnds() {
		// A hard failure ended: its rounds are closed, so that a lone failed round soon after
		// (a rule being re-synced, a restarted Pod's first accept) is one failure among good
		// ones, not a second run that would hold the stage as partial.
		w.rounds = w.rounds[:0]
	}
	if len(w.rounds) == w.size {
		copy(w.rounds, w.rounds[1:])
		w.rounds = w.rounds[:len(w.rounds)-1]
	}
	w.rounds = append(w.rounds, rd)
}

// hardFailureEnds reports whether the window's last two rounds failed, every round of its trailing run of failures failed in every attempt, and no round
// before that run failed: a hard failure out of a healthy window, as opposed to a partial one (a
// VIP failing one connection in three fails a round's four connections together in about 1% of
// rounds) or one that comes and goes.
func (w *window) hardFailureEnds() bool {
	n := len(w.rounds)
	if n < 2 || !w.rounds[n-1].failed || !w.rounds[n-2].failed {
		return false
	}
	i := n - 1
	for ; i >= 0 && w.rounds[i].failed; i-- {
		if w.rounds[i].failing < w.rounds[i].total {
			return false
		}
	}
	for ; i >= 0; i-- {
		if w.rounds[i].failed {
			return false // failures before the run: a fault that comes and goes, held as partial
		}
	}
	return true
}

// Window is a copy of a stage's window, for the verdict, the metrics and the status page.
type Window struct {
	State State
	// Rounds and FailedRounds count the rounds in the window and those that failed.
	Rounds, FailedRounds int
	// Failing and Total count attempts (checks, connections) over the window.
	Failing, Total int
}

// FailureRatio is the failing share of attempts over the window (0 with no attempt).
func (w Window) FailureRatio() float64 {
	if w.Total == 0 {
		return 0
	}
	return float64(w.Failing) / float64(w.Total)
}

// snapshot computes the window's state:
//
//   - failed: the last two rounds failed, or the only round did. A failure that lasts shows at
//     its second round; one failed round among good ones makes no verdict.
//   - degraded: not failed, and at least two failed rounds in at least two separate runs: the
//     stage fails in a share of its rounds (a VIP failing one connection in three, a flaky Pod).
//     Such a fault is held for as long as its failures stay in the window, so the verdict does
//     not flap with the rounds that happened to pass.
//   - ok: otherwise. In particular a run of failed rounds followed by a good one is ok at once:
//     a hard failure that ends recovers within one round. When every attempt of that run failed
//     and nothing failed before it (a hard failure out of a healthy window), add closes its
//     rounds at the good one, so a lone failure soon after is one failure among good ones again.
func (w *window) snapshot() Window {
	out := Window{State: StateOK, Rounds: len(w.rounds)}
	runs := 0
	prevFailed := false
	for _, r := range w.rounds {
		out.Failing += r.failing
		out.Total += r.total
		if r.failed {
			out.FailedRounds++
			if !prevFailed {
				runs++
			}
		}
		prevFailed = r.failed
	}
	n := len(w.rounds)
	switch {
	case n == 0:
	case w.rounds[n-1].failed && (n == 1 || w.rounds[n-2].failed):
		out.State = StateFailed
	case out.FailedRounds >= 2 && runs >= 2:
		out.State = StateDegraded
	}
	return out
}

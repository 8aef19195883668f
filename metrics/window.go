package metrics

import "github.com/svcprobe/svcprobe/probe"

// DefaultWindow is how many rounds of a network stage the verdict looks at (--verdict.window).
const DefaultWindow = 8

// State is a stage's state over its window of recent rounds.
type State string

// The states (see window.snapshot).
const (
	StateOK       State = "ok"
	StateDegraded State = "degraded"
	StateFailed   State = "failed"
)

// round is what one round of a stage contributes to its window.
type round struct {
	failed         bool
	mixed          bool // one address both answered and failed in this round (probe.Result.Intermittent)
	failing, total int  // attempts (checks, connections) failing among all
}

// window is a ring of a stage's last rounds, and whether the stage is held as degraded.
type window struct {
	rounds   []round // oldest first, at most size
	size     int
	degraded bool
	// sinceFailed counts the rounds added since the last failed one (0: the latest failed),
	// across the clearing of a hard failure's rounds; -1 before any failed round.
	sinceFailed int
}

func newWindow(size int) *window {
	if size < 2 {
		size = 2
	}
	return &window{size: size, sinceFailed: -1}
}

// add appends one round of r, dropping the oldest beyond the window's size, and updates the
// degraded hold: it starts when the window shows a fault that comes and goes (at least two failed
// rounds, in two or more separate runs, or in a round where one address both answered and
// failed, unless that round is the onset or the end of a hard failure: a run with two rounds in
// a row where every attempt failed) and lasts until no failed round is left in the window.
//
// An explained round (the VIP failed in a round where the Pods behind it failed directly) counts
// as passed for the state: its failure is the Pods', which their own stage reports. Its failing
// attempts still count in the failing share.
func (w *window) add(r probe.Result, explained bool) {
	rd := round{failed: r.Outcome == probe.Failed, mixed: r.Intermittent, failing: r.Failing, total: r.Total}
	if rd.total == 0 { // a result without attempt counts is one attempt
		rd.total = 1
		if rd.failed {
			rd.failing = 1
		}
	}
	if rd.failed && rd.failing == 0 {
		rd.failing = 1
	}
	if explained {
		rd.failed, rd.mixed = false, false
	}
	switch {
	case rd.failed:
		w.sinceFailed = 0
	case w.sinceFailed >= 0 && w.sinceFailed < 1<<20:
		w.sinceFailed++
	}
	if !rd.failed && !w.degraded && w.hardFailureEnds() {
		// A hard failure ended: its rounds are closed, so that a lone failed round soon after
		// (a rule being re-synced, a restarted Pod's first accept) is one failure among good
		// ones, not a second run that would hold the stage as degraded.
		w.rounds = w.rounds[:0]
	}
	if len(w.rounds) == w.size {
		copy(w.rounds, w.rounds[1:])
		w.rounds = w.rounds[:len(w.rounds)-1]
	}
	w.rounds = append(w.rounds, rd)

	failed, runs, mixed, hard := 0, 0, false, false
	// A run of failed rounds with two whole failures in a row (every attempt failed, twice) is a
	// hard failure: a mixed round at its start or its end is its onset or its end (the fault came
	// or went in the middle of the round), not a fault that comes and goes. A mixed round inside
	// a run, or in a run that is not hard, is.
	for i := 0; i < len(w.rounds); {
		if !w.rounds[i].failed {
			i++
			continue
		}
		j := i
		for j < len(w.rounds) && w.rounds[j].failed {
			j++
		}
		run := w.rounds[i:j]
		runs++
		failed += len(run)
		hard = false
		for k := 1; k < len(run); k++ {
			hard = hard || (!run[k].mixed && !run[k-1].mixed)
		}
		for k, x := range run {
			edge := k == 0 || k == len(run)-1
			mixed = mixed || (x.mixed && !(hard && edge))
		}
		i = j
	}
	switch {
	case failed >= 2 && (runs >= 2 || mixed):
		w.degraded = true
	case failed == 0, runs == 1 && hard && !mixed && !w.rounds[0].failed:
		// Nothing failed, or a single hard run seen from its start: the mixed round that seemed
		// intermittent at its start was its onset.
		w.degraded = false
	}
}

// noteFailure records that the stage's layer failed now, as seen by another stage (the proxy
// stage's closer look at the Pods), without a round of its own: it counts for FailedWithin only.
func (w *window) noteFailure() { w.sinceFailed = 0 }

// forgetFailure drops the memory of the stage's last failure (FailedWithin): another stage saw
// its layer work since (the proxy stage's closer look found every Pod answering).
func (w *window) forgetFailure() { w.sinceFailed = -1 }

// hardFailureEnds reports whether the window's last two rounds failed and no round before that
// run of failures did: a hard failure out of a healthy window, as opposed to one that comes and
// goes. (A run with an intermittent round has made the window degraded, and add does not ask.)
func (w *window) hardFailureEnds() bool {
	n := len(w.rounds)
	if n < 2 || !w.rounds[n-1].failed || !w.rounds[n-2].failed {
		return false
	}
	i := n - 1
	for i >= 0 && w.rounds[i].failed {
		i--
	}
	for ; i >= 0; i-- {
		if w.rounds[i].failed {
			return false // failures before the run: a fault that comes and goes
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
	// SinceFailed counts the rounds since the stage last failed (0: the latest round failed), -1
	// when it never did. Unlike FailedRounds it survives the closing of a hard failure's rounds:
	// the verdict's memory of a Pod that failed lately.
	SinceFailed int
	// Size is how many rounds the window keeps.
	Size int
}

// FailedWithin reports whether the stage failed in one of its last n rounds.
func (w Window) FailedWithin(n int) bool { return w.SinceFailed >= 0 && w.SinceFailed < n }

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
//   - degraded: not failed, and held (see add): the stage failed in a share of its rounds, in
//     separate runs or with one address answering some connections and not others (a VIP
//     failing one connection in three, a flaky Pod). It stays degraded through the rounds that
//     pass until no failed round is left in the window, so the verdict does not flap with them.
//   - ok: otherwise. In particular a run of failed rounds followed by a good one, with nothing
//     intermittent seen, is ok at once: a hard failure that ends recovers within one round; when
//     nothing failed before that run, add closes its rounds at the good one, so a lone failure
//     soon after is one failure among good ones again.
func (w *window) snapshot() Window {
	out := Window{State: StateOK, Rounds: len(w.rounds), SinceFailed: w.sinceFailed, Size: w.size}
	for _, r := range w.rounds {
		out.Failing += r.failing
		out.Total += r.total
		if r.failed {
			out.FailedRounds++
		}
	}
	n := len(w.rounds)
	switch {
	case n == 0:
	case w.rounds[n-1].failed && (n == 1 || w.rounds[n-2].failed):
		out.State = StateFailed
	case w.degraded:
		out.State = StateDegraded
	}
	return out
}

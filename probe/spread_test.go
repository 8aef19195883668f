package probe

import (
	"fmt"
	"io"
	"log/slog"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/types"

	"github.com/svcprobe/svcprobe/discovery"
)

// spreadFixture is a Service of n endpoints, each its own listener, and a PodProber spreading
// them over spread rounds.
type spreadFixture struct {
	t       *testing.T
	servers []*tcpServer
	target  *discovery.Target
	prober  *PodProber
	seen    []int64 // accepted per server, as of the last round
}

func newSpreadFixture(t *testing.T, n, spread int) *spreadFixture {
	f := &spreadFixture{t: t, prober: &PodProber{Dialer: &Dialer{Budget: looseBudget(t)}, Spread: spread}}
	var eps []discovery.Endpoint
	for i := range n {
		s := newTCPServer(t, "127.0.0.1", 0)
		f.servers = append(f.servers, s)
		eps = append(eps, readyEndpoint(fmt.Sprintf("hostnames-%d", i), s.addr, "web"))
	}
	f.target = podTarget([]discovery.Port{webPort}, eps...)
	f.target.UID = types.UID("uid-spread")
	f.seen = make([]int64, n)
	return f
}

// round probes once and returns the result and which endpoints were dialed in it, by the
// listeners' accept counts (waited for until they stop moving: Accept returns a moment after
// the prober's connect).
func (f *spreadFixture) round() (Result, []bool) {
	f.t.Helper()
	r := f.prober.Probe(shortCtx(f.t, 5*time.Second), f.target)
	sum := func() (n int64) {
		for _, s := range f.servers {
			n += s.accepted.Load()
		}
		return n
	}
	prev := int64(-1)
	for deadline := time.Now().Add(3 * time.Second); time.Now().Before(deadline); {
		n := sum()
		if n == prev {
			break
		}
		prev = n
		time.Sleep(100 * time.Millisecond)
	}
	dialed := make([]bool, len(f.servers))
	for i, s := range f.servers {
		n := s.accepted.Load()
		dialed[i] = n > f.seen[i]
		f.seen[i] = n
	}
	return r, dialed
}

func count(b []bool) int {
	n := 0
	for _, v := range b {
		if v {
			n++
		}
	}
	return n
}

// TestPodSpreadDialsAShareEachRoundAndEveryEndpointWithinN: the first round dials every endpoint
// (all new), then each round about 1/N of them, and within N rounds every endpoint again; the
// result always covers all endpoints.
func TestPodSpreadDialsAShareEachRoundAndEveryEndpointWithinN(t *testing.T) {
	const n, spread = 10, 5
	f := newSpreadFixture(t, n, spread)
	r, dialed := f.round()
	if count(dialed) != n || r.Outcome != OK || r.Total != n {
		t.Fatalf("first round dialed %d of %d (%v, total %d), want every endpoint and ok", count(dialed), n, r.Outcome, r.Total)
	}
	last := make([]int, n) // round each endpoint was last dialed
	for round := 1; round <= 3*spread; round++ {
		r, dialed := f.round()
		if r.Outcome != OK || r.Total != n || len(r.Checks) != n {
			t.Fatalf("round %d: %v with %d checks, total %d; want ok over all %d endpoints", round, r.Outcome, len(r.Checks), r.Total, n)
		}
		if got, want := count(dialed), n/spread; got != want {
			t.Errorf("round %d dialed %d endpoints, want %d", round, got, want)
		}
		for i, d := range dialed {
			if d {
				last[i] = round
			}
			if round-last[i] >= spread {
				t.Errorf("round %d: endpoint %d last dialed in round %d, more than %d rounds ago", round, i, last[i], spread)
			}
		}
	}
}

// TestPodSpreadFailureDialsEverythingAndRecoveryShowsAtOnce: an endpoint that stops answering is
// found within N rounds; that round dials every endpoint (a complete result), and the failing one
// is dialed every round until it answers again, which the next round shows.
func TestPodSpreadFailureDialsEverythingAndRecoveryShowsAtOnce(t *testing.T) {
	const n, spread = 6, 3
	f := newSpreadFixture(t, n, spread)
	f.round()
	port := f.servers[4].addr.Port()
	if err := f.servers[4].ln.Close(); err != nil {
		t.Fatal(err)
	}
	found := 0
	for round := 1; round <= spread && found == 0; round++ {
		r, dialed := f.round()
		if r.Outcome != Failed {
			continue
		}
		found = round
		if r.Failing != 1 || r.Total != n || r.Checks[4].Reason != ReasonRefused {
			t.Errorf("round %d: failing %d of %d, check 4 %s; want 1 of %d, refused", round, r.Failing, r.Total, r.Checks[4].Reason, n)
		}
		if count(dialed[:4])+count(dialed[5:]) != n-1 {
			t.Errorf("round %d found the failure but dialed %v: want every other endpoint dialed too", round, dialed)
		}
	}
	if found == 0 {
		t.Fatalf("a refusing endpoint was not found within %d rounds", spread)
	}
	r, _ := f.round()
	if r.Outcome != Failed || r.Checks[4].Reason != ReasonRefused || r.Checks[4].Duration == 0 {
		t.Errorf("next round: %v, check 4 %s after %s; want it dialed again and refused", r.Outcome, r.Checks[4].Reason, r.Checks[4].Duration)
	}
	f.servers[4] = newTCPServer(t, "127.0.0.1", port)
	f.seen[4] = 0
	r, dialed := f.round()
	if r.Outcome != OK || !dialed[4] {
		t.Errorf("after the endpoint answers again: %v (%s), dialed it: %v; want ok at once", r.Outcome, r.Detail, dialed[4])
	}
}

// TestPodSpreadNewEndpointDialedInItsFirstRound: a Pod added to the Service is dialed in the
// next round, not when the rotation reaches it.
func TestPodSpreadNewEndpointDialedInItsFirstRound(t *testing.T) {
	f := newSpreadFixture(t, 4, 4)
	f.round()
	s := newTCPServer(t, "127.0.0.1", 0)
	f.servers = append(f.servers, s)
	f.seen = append(f.seen, 0)
	f.target.Endpoints = append(f.target.Endpoints, readyEndpoint("hostnames-new", s.addr, "web"))
	r, dialed := f.round()
	if !dialed[4] || r.Total != 5 {
		t.Errorf("new endpoint dialed: %v, total %d; want dialed and 5 in all", dialed[4], r.Total)
	}
	// A removed Pod leaves no check behind.
	f.target.Endpoints = f.target.Endpoints[1:]
	f.servers, f.seen = f.servers[1:], f.seen[1:]
	if r, _ := f.round(); r.Total != 4 {
		t.Errorf("after removing an endpoint: total %d, want 4", r.Total)
	}
}

// TestSchedulerDeleteForgetsPodSpreadState: a deleted Service leaves no spreading state behind.
func TestSchedulerDeleteForgetsPodSpreadState(t *testing.T) {
	f := newSpreadFixture(t, 2, 2)
	sched, err := NewScheduler(SchedulerConfig{Interval: time.Minute, Timeout: time.Second, Workers: 1},
		[]Prober{f.prober}, newMemSink(), slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	f.round()
	if f.prober.spreadStates() != 1 {
		t.Fatalf("%d spreading states after a round, want 1", f.prober.spreadStates())
	}
	sched.Delete(f.target.UID, "default/hostnames")
	if got := f.prober.spreadStates(); got != 0 {
		t.Errorf("%d spreading states after the Service was deleted, want 0", got)
	}
}

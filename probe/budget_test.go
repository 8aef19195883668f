package probe

import (
	"testing"
	"time"

	"golang.org/x/time/rate"
)

// maxInAnySecond drives l with unlimited demand over a virtual 3 s (one attempt every 50 µs, as
// many events as it allows) and returns the most events in any 1 s window.
func maxInAnySecond(l *rate.Limiter) int {
	t0 := time.Unix(1_000_000, 0)
	var at []time.Duration
	for d := time.Duration(0); d < 3*time.Second; d += 50 * time.Microsecond {
		for l.AllowN(t0.Add(d), 1) {
			at = append(at, d)
		}
	}
	best, lo := 0, 0
	for hi := range at {
		for at[hi]-at[lo] >= time.Second {
			lo++
		}
		best = max(best, hi-lo+1)
	}
	return best
}

// TestPerSecondLimiterHoldsThePerSecondPromise: --probe.max-new-conns-per-second and
// --dns.max-qps are maxima per second, and a plain token bucket with a burst lets burst + rate
// through in a second.
func TestPerSecondLimiterHoldsThePerSecondPromise(t *testing.T) {
	for _, c := range []struct {
		rate float64
		conc int
	}{{8000, 64}, {1000, 64}, {400, 64}, {200, 8}, {30, 64}, {10, 1}} {
		if got := maxInAnySecond(perSecondLimiter(c.rate, c.conc)); float64(got) > c.rate {
			t.Errorf("rate %g, concurrency %d: %d events in one second", c.rate, c.conc, got)
		}
		// The limiter must not starve the budget either: at least 90% of the rate.
		if got := maxInAnySecond(perSecondLimiter(c.rate, c.conc)); float64(got) < 0.9*c.rate {
			t.Errorf("rate %g, concurrency %d: only %d events in the busiest second", c.rate, c.conc, got)
		}
	}
	// What the check catches: the plain bucket this replaced.
	if got := maxInAnySecond(rate.NewLimiter(8000, 64)); got <= 8000 {
		t.Errorf("the check is blind: a plain bucket of burst 64 let through only %d in a second", got)
	}
}

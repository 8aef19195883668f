package probe

import (
	"context"
	"fmt"
	"sync/atomic"
	"time"

	"golang.org/x/time/rate"
)

// BudgetConfig bounds what the prober may do to the cluster.
type BudgetConfig struct {
	Concurrency       int     // sockets open at once (TCP, HTTP, DNS)
	DNSQPS            float64 // DNS queries per second
	NewConnsPerSecond float64 // new TCP connections per second
}

// Budget enforces BudgetConfig with a semaphore and two token buckets, and counts how often and
// how long probes waited for it (rounds stretch instead of the budget being exceeded).
type Budget struct {
	sem   chan struct{}
	conns *rate.Limiter
	dns   *rate.Limiter

	waits     [3]atomic.Uint64
	waitNanos [3]atomic.Uint64
}

// BudgetKind names one budget, for metrics.
type BudgetKind int

const (
	BudgetConcurrency BudgetKind = iota
	BudgetNewConns
	BudgetDNSQPS
)

func (k BudgetKind) String() string {
	return [...]string{"concurrency", "new_conns", "dns_qps"}[k]
}

// BudgetKinds lists every budget.
var BudgetKinds = []BudgetKind{BudgetConcurrency, BudgetNewConns, BudgetDNSQPS}

// NewBudget validates cfg and builds a Budget.
func NewBudget(cfg BudgetConfig) (*Budget, error) {
	if cfg.Concurrency < 1 {
		return nil, fmt.Errorf("probe concurrency must be at least 1, got %d", cfg.Concurrency)
	}
	if cfg.DNSQPS <= 0 || cfg.NewConnsPerSecond <= 0 {
		return nil, fmt.Errorf("DNS QPS and new connections per second must be positive, got %v and %v", cfg.DNSQPS, cfg.NewConnsPerSecond)
	}
	return &Budget{
		sem:   make(chan struct{}, cfg.Concurrency),
		conns: perSecondLimiter(cfg.NewConnsPerSecond, cfg.Concurrency),
		dns:   perSecondLimiter(cfg.DNSQPS, cfg.Concurrency),
	}, nil
}

// perSecondLimiter is a token bucket that lets through at most r events in any one second (for
// r ≥ 10), which is what a "per second" flag promises: a bucket of burst b refilling at r lets
// through b + r in a second. So the burst is small (a tenth of r, at most the concurrency) and
// the refill rate is r - b. Below r = 10 the burst is 1 and the refill 0.9 r.
func perSecondLimiter(r float64, concurrency int) *rate.Limiter {
	b := max(1, min(int(r/10), concurrency))
	return rate.NewLimiter(rate.Limit(max(r-float64(b), 0.9*r)), b)
}

// Concurrency is the socket cap.
func (b *Budget) Concurrency() int { return cap(b.sem) }

// Conn waits for a socket slot and a new-connection token. Call release when the socket is closed.
func (b *Budget) Conn(ctx context.Context) (release func(), err error) {
	return b.acquire(ctx, b.conns, BudgetNewConns)
}

// DNS waits for a socket slot and a DNS query token. Call release after the exchange.
func (b *Budget) DNS(ctx context.Context) (release func(), err error) {
	return b.acquire(ctx, b.dns, BudgetDNSQPS)
}

func (b *Budget) acquire(ctx context.Context, l *rate.Limiter, kind BudgetKind) (func(), error) {
	start := time.Now()
	select {
	case b.sem <- struct{}{}:
	default:
		select {
		case b.sem <- struct{}{}:
		case <-ctx.Done():
			b.waited(BudgetConcurrency, start)
			return nil, fmt.Errorf("%w: waiting for a probe slot: %w", errBudget, ctx.Err())
		}
		b.waited(BudgetConcurrency, start)
	}
	release := func() { <-b.sem }
	if !l.Allow() {
		t0 := time.Now()
		err := l.Wait(ctx)
		b.waited(kind, t0)
		if err != nil {
			release()
			return nil, fmt.Errorf("%w: waiting for the %s budget: %w", errBudget, kind, err)
		}
	}
	return release, nil
}

func (b *Budget) waited(k BudgetKind, since time.Time) {
	b.waits[k].Add(1)
	b.waitNanos[k].Add(uint64(time.Since(since)))
}

// Waits returns how many times and how long in total probes waited for budget k.
func (b *Budget) Waits(k BudgetKind) (count uint64, total time.Duration) {
	return b.waits[k].Load(), time.Duration(b.waitNanos[k].Load())
}

package discovery

import (
	"context"
	"sync"
	"testing"
	"time"

	"k8s.io/client-go/tools/cache"
)

// rvInformer is an informer whose last synced resourceVersion the test sets.
type rvInformer struct {
	cache.SharedIndexInformer
	mu sync.Mutex
	rv string
}

func (r *rvInformer) set(rv string) { r.mu.Lock(); r.rv = rv; r.mu.Unlock() }
func (r *rvInformer) LastSyncResourceVersion() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.rv
}

// Discovery's progress moves when an informer's resourceVersion moves (a watch bookmark, a
// relist) even without events, and stands still while none does: what the stale-discovery alert
// reads.
func TestLastProgressFollowsResourceVersions(t *testing.T) {
	old := progressEvery
	progressEvery = 5 * time.Millisecond
	defer func() { progressEvery = old }()
	a, b := &rvInformer{rv: "100"}, &rvInformer{rv: "100"}
	w := &Watcher{informers: []cache.SharedIndexInformer{a, b}}
	if !w.LastProgress().IsZero() {
		t.Fatal("progress before anything ran")
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); w.watchProgress(ctx) }()
	defer func() { cancel(); <-done }()

	waitFor := func(what string, cond func() bool) {
		t.Helper()
		deadline := time.Now().Add(5 * time.Second)
		for !cond() {
			if time.Now().After(deadline) {
				t.Fatalf("timed out waiting for %s", what)
			}
			time.Sleep(time.Millisecond)
		}
	}
	waitFor("the first resourceVersions to count as progress", func() bool { return !w.LastProgress().IsZero() })
	first := w.LastProgress()
	time.Sleep(20 * progressEvery) // many looks, nothing moved
	if got := w.LastProgress(); !got.Equal(first) {
		t.Fatalf("progress moved from %s to %s while no resourceVersion did", first, got)
	}
	b.set("107") // a bookmark on one watch
	waitFor("a new resourceVersion to count as progress", func() bool { return w.LastProgress().After(first) })
	second := w.LastProgress()
	time.Sleep(2 * time.Millisecond)
	w.touched() // an event counts too
	if !w.LastProgress().After(second) {
		t.Fatal("an event did not move progress")
	}
	if w.LastEvent().IsZero() {
		t.Fatal("touched did not record the event")
	}
}

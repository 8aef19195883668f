package discovery

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"slices"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/kubernetes/fake"
	"k8s.io/client-go/tools/cache"
)

// recordingSink keeps what the watcher pushed.
type recordingSink struct {
	mu      sync.Mutex
	targets map[string]*Target
	deletes []string
	upserts int
}

func newSink() *recordingSink { return &recordingSink{targets: map[string]*Target{}} }

func (s *recordingSink) Upsert(t *Target) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.targets[t.Key()] = t
	s.upserts++
}

func (s *recordingSink) Delete(_ types.UID, key string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.targets, key)
	s.deletes = append(s.deletes, key)
}

func (s *recordingSink) get(key string) *Target {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.targets[key]
}

func quietLog() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// startWatcher runs a watcher on a fake clientset until the test ends.
func startWatcher(t testing.TB, cfg Config, objs ...any) (*fake.Clientset, *recordingSink, *Watcher) {
	t.Helper()
	return startWatcherWith(t, cfg, nil, objs...)
}

// startWatcherWith is startWatcher with a hook on the fake clientset before anything runs (its
// reactors).
func startWatcherWith(t testing.TB, cfg Config, hook func(*fake.Clientset), objs ...any) (*fake.Clientset, *recordingSink, *Watcher) {
	t.Helper()
	client := fake.NewClientset()
	if hook != nil {
		hook(client)
	}
	ctx := context.Background()
	for _, o := range objs {
		switch o := o.(type) {
		case *corev1.Service:
			client.CoreV1().Services(o.Namespace).Create(ctx, o, metav1.CreateOptions{})
		case *corev1.Pod:
			client.CoreV1().Pods(o.Namespace).Create(ctx, o, metav1.CreateOptions{})
		case *discoveryv1.EndpointSlice:
			client.DiscoveryV1().EndpointSlices(o.Namespace).Create(ctx, o, metav1.CreateOptions{})
		}
	}
	if cfg.TotalShards == 0 {
		cfg.TotalShards = 1
	}
	sink := newSink()
	w, err := NewWatcher(client, cfg, sink, quietLog())
	if err != nil {
		t.Fatal(err)
	}
	runCtx, cancel := context.WithCancel(ctx)
	done := make(chan error)
	go func() { done <- w.Run(runCtx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	})
	eventually(t, "discovery synced", w.Synced)
	return client, sink, w
}

func eventually(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func hostnamesObjects() []any {
	return []any{
		service("default", "hostnames", map[string]string{"app": "hostnames"}, svcPort("", 80, intstr.FromInt32(9376))),
		pod("default", "hostnames-a", "198.18.0.5", map[string]string{"app": "hostnames"}, true, corev1.ContainerPort{ContainerPort: 9376}),
		slice("default", "hostnames", "hostnames-1", 9376, "", ep{ip: "198.18.0.5", pod: "hostnames-a", ready: true, serving: true}),
	}
}

func TestWatcherBuildsTargetsFromInformers(t *testing.T) {
	_, sink, w := startWatcher(t, Config{DNSService: "kube-system/kube-dns"}, append(hostnamesObjects(),
		slice("kube-system", "kube-dns", "kube-dns-1", 53, "dns", ep{ip: "198.18.0.53", pod: "coredns-a", ready: true, serving: true}))...)
	eventually(t, "hostnames target", func() bool {
		tg := sink.get("default/hostnames")
		return tg != nil && tg.Counts().Ready == 1 && len(tg.Pods) == 1
	})
	eventually(t, "cluster DNS endpoints", func() bool {
		eps := w.DNSEndpoints()
		return len(eps) == 1 && eps[0].PodName == "coredns-a"
	})
	if exists, known := w.Exists("default", "hostnames"); !exists || !known {
		t.Fatal("Exists(default/hostnames) false")
	}
	if exists, _ := w.Exists("default", "nope"); exists {
		t.Fatal("Exists(default/nope) true")
	}
	if w.Stats().Events.Load() == 0 || w.LastEvent().IsZero() {
		t.Fatal("events not counted")
	}
}

// A Service losing its last ready endpoint reaches the sink through the slice update event.
func TestWatcherSeesEndpointChangesByEvent(t *testing.T) {
	client, sink, _ := startWatcher(t, Config{}, hostnamesObjects()...)
	eventually(t, "ready endpoint", func() bool { tg := sink.get("default/hostnames"); return tg != nil && tg.Counts().Ready == 1 })
	sl := slice("default", "hostnames", "hostnames-1", 9376, "", ep{ip: "198.18.0.5", pod: "hostnames-a", ready: false, serving: false})
	if _, err := client.DiscoveryV1().EndpointSlices("default").Update(context.Background(), sl, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	eventually(t, "no ready endpoint", func() bool { tg := sink.get("default/hostnames"); return tg != nil && tg.Counts().Ready == 0 })
	t.Logf("endpoint change reached the sink in %s", time.Since(start))
}

func TestWatcherDeletesAndFilters(t *testing.T) {
	skipped := service("default", "opted-out", nil)
	skipped.Annotations = map[string]string{AnnotationSkip: "true"}
	other := service("kube-system", "metrics", nil)
	client, sink, _ := startWatcher(t, Config{NamespacesExclude: []string{"kube-system"}}, append(hostnamesObjects(), skipped, other)...)
	eventually(t, "hostnames", func() bool { return sink.get("default/hostnames") != nil })
	if sink.get("default/opted-out") != nil || sink.get("kube-system/metrics") != nil {
		t.Fatal("opted-out or excluded Service was pushed")
	}
	// Opting out later removes the target.
	h := hostnamesObjects()[0].(*corev1.Service)
	h.Annotations = map[string]string{AnnotationSkip: "true"}
	client.CoreV1().Services("default").Update(context.Background(), h, metav1.UpdateOptions{})
	eventually(t, "opt-out removes", func() bool { return sink.get("default/hostnames") == nil })
	// Deleting a Service removes it too.
	client.CoreV1().Services("default").Create(context.Background(), service("default", "gone", nil), metav1.CreateOptions{})
	eventually(t, "gone created", func() bool { return sink.get("default/gone") != nil })
	client.CoreV1().Services("default").Delete(context.Background(), "gone", metav1.DeleteOptions{})
	eventually(t, "gone deleted", func() bool { return sink.get("default/gone") == nil })
}

func TestWatcherPodLabelChangeUpdatesSelection(t *testing.T) {
	client, sink, _ := startWatcher(t, Config{}, hostnamesObjects()...)
	eventually(t, "pod selected", func() bool { tg := sink.get("default/hostnames"); return tg != nil && len(tg.Pods) == 1 })
	p := hostnamesObjects()[1].(*corev1.Pod)
	p.Labels = map[string]string{"run": "hostnames"}
	p.ResourceVersion = "2"
	client.CoreV1().Pods("default").Update(context.Background(), p, metav1.UpdateOptions{})
	eventually(t, "pod unselected", func() bool {
		tg := sink.get("default/hostnames")
		return tg != nil && len(tg.Pods) == 0 && tg.NearestPod != nil && tg.NearestPod.Labels["run"] == "hostnames"
	})
}

func TestWatcherMalformedAnnotationCountedOnce(t *testing.T) {
	s := service("default", "bad", nil, svcPort("", 80, intstr.FromInt32(80)))
	s.Annotations = map[string]string{AnnotationHTTPPath: "no-slash"}
	client, sink, w := startWatcher(t, Config{}, s)
	eventually(t, "bad is probed anyway", func() bool { tg := sink.get("default/bad"); return tg != nil && len(tg.AnnotationErrors) == 1 })
	s.Spec.Ports[0].Port = 81 // an unrelated change: the same annotation is not counted again
	client.CoreV1().Services("default").Update(context.Background(), s, metav1.UpdateOptions{})
	eventually(t, "update seen", func() bool { tg := sink.get("default/bad"); return tg != nil && tg.Ports[0].Port == 81 })
	if n := w.Stats().AnnotationErrors.Load(); n != 1 {
		t.Fatalf("annotation errors counted %d times, want 1", n)
	}
}

func TestWatcherSharding(t *testing.T) {
	var objs []any
	for _, n := range []string{"a", "b", "c", "d", "e", "f", "g", "h"} {
		objs = append(objs, service("default", n, nil))
	}
	_, sink0, _ := startWatcher(t, Config{Shard: 0, TotalShards: 2}, objs...)
	_, sink1, _ := startWatcher(t, Config{Shard: 1, TotalShards: 2}, objs...)
	size := func(s *recordingSink) int { s.mu.Lock(); defer s.mu.Unlock(); return len(s.targets) }
	eventually(t, "both shards together hold 8 Services", func() bool { return size(sink0)+size(sink1) >= 8 })
	seen := map[string]int{}
	for _, sink := range []*recordingSink{sink0, sink1} {
		sink.mu.Lock()
		for k := range sink.targets {
			seen[k]++
		}
		sink.mu.Unlock()
	}
	if len(seen) != 8 {
		t.Fatalf("shards together cover %d of 8 Services: %v", len(seen), seen)
	}
	for k, n := range seen {
		if n != 1 {
			t.Fatalf("%s probed by %d shards", k, n)
		}
	}
}

// A Pod event looks only at the Services it can change: those whose selector shares a key=value
// with the Pod's labels (the selector index), and those that match no Pod now (the nearest Pod
// may change). Not at every Service of a big namespace.
func TestPodEventSelectsFromIndex(t *testing.T) {
	objs := []any{pod("big", "web-0", "198.18.0.9", map[string]string{"app": "web", "tier": "front"}, true)}
	for i := range 200 {
		objs = append(objs, service("big", fmt.Sprintf("other-%03d", i), map[string]string{"app": fmt.Sprintf("other-%03d", i)}))
	}
	objs = append(objs,
		service("big", "web", map[string]string{"app": "web"}),
		service("big", "web-front", map[string]string{"app": "web", "tier": "front"}),
		service("big", "web-back", map[string]string{"app": "web", "tier": "back"}), // shares app=web, does not match
		service("big", "typo", map[string]string{"app": "wbe"}),                     // matches no Pod
		service("small", "web", map[string]string{"app": "web"}),                    // another namespace
	)
	_, sink, w := startWatcher(t, Config{}, objs...)
	eventually(t, "every Service synced", func() bool {
		return sink.get("big/typo") != nil && sink.get("small/web") != nil && sink.get("big/other-199") != nil
	})
	podHandlerWant := func(hit bool, known *Target) bool { return hit || (known != nil && len(known.Pods) == 0) }
	got := w.selecting("big", []labels.Set{{"app": "web", "tier": "front"}}, podHandlerWant)
	slices.Sort(got)
	// other-* select Pods that do not exist: they match no Pod, so they are noPods too.
	want := []string{"big/typo", "big/web", "big/web-back", "big/web-front"}
	for i := range 200 {
		want = append(want, fmt.Sprintf("big/other-%03d", i))
	}
	slices.Sort(want)
	if !slices.Equal(got, want) {
		t.Fatalf("re-queued %d Services %v, want %d", len(got), got, len(want))
	}
	// Give the others a Pod each: now only the Services the event can change are looked at.
	w.mu.Lock()
	for i := range 200 {
		delete(w.noPods["big"], fmt.Sprintf("big/other-%03d", i))
	}
	w.mu.Unlock()
	got = w.selecting("big", []labels.Set{{"app": "web", "tier": "front"}}, podHandlerWant)
	slices.Sort(got)
	if want := []string{"big/typo", "big/web", "big/web-back", "big/web-front"}; !slices.Equal(got, want) {
		t.Fatalf("re-queued %v, want %v (web-back: no Pods, so the nearest one may change)", got, want)
	}
	hits := w.selecting("big", []labels.Set{{"app": "web", "tier": "front"}}, func(hit bool, _ *Target) bool { return hit })
	slices.Sort(hits)
	if want := []string{"big/web", "big/web-front"}; !slices.Equal(hits, want) {
		t.Fatalf("matching Services %v, want %v", hits, want)
	}
}

// The per-event cost of a Pod event (which Services to re-queue) in one namespace of 5,000
// Services, against one of 100: flat with the selector index (before it, every Service of the
// namespace was listed and matched at every Pod event).
func BenchmarkPodEventSelecting(b *testing.B) {
	for _, n := range []int{100, 5000} {
		b.Run(fmt.Sprintf("services=%d", n), func(b *testing.B) {
			objs := []any{pod("ns", "web-0", "198.18.0.9", map[string]string{"app": "web"}, true)}
			for i := range n {
				objs = append(objs, service("ns", fmt.Sprintf("s%05d", i), map[string]string{"app": fmt.Sprintf("s%05d", i)}),
					pod("ns", fmt.Sprintf("s%05d-0", i), "198.18.1.1", map[string]string{"app": fmt.Sprintf("s%05d", i)}, true))
			}
			objs = append(objs, service("ns", "web", map[string]string{"app": "web"}))
			_, sink, w := startWatcher(b, Config{}, objs...)
			for sink.get("ns/web") == nil || sink.get(fmt.Sprintf("ns/s%05d", n-1)) == nil {
				time.Sleep(10 * time.Millisecond)
			}
			set := []labels.Set{{"app": "web", "pod-template-hash": "abc"}}
			want := func(hit bool, known *Target) bool { return hit || (known != nil && len(known.Pods) == 0) }
			b.ResetTimer()
			for b.Loop() {
				if got := w.selecting("ns", set, want); len(got) != 1 {
					b.Fatalf("re-queued %v", got)
				}
			}
		})
	}
}

// Many Services whose selectors share one key=value (tier=backend) and differ in another: a Pod
// event looks at the Services its labels can match, not at every Service sharing tier=backend.
// The selector index files each Service under one pair of its selector; this counts what a
// lookup checks.
func TestSelectorIndexSharedPair(t *testing.T) {
	x := newSelectorIndex()
	svc := func(name string, sel map[string]string) *corev1.Service {
		return &corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: name}, Spec: corev1.ServiceSpec{Selector: sel}}
	}
	for i := range 1000 {
		x.set(svc(fmt.Sprintf("s%04d", i), map[string]string{"tier": "backend", "zz": fmt.Sprintf("s%04d", i)}))
	}
	if n := x.filedUnder(selectorPair("ns", "tier", "backend")); n > 1 {
		t.Fatalf("%d Services filed under the shared pair tier=backend, want at most 1", n)
	}
	x.set(svc("all-backends", map[string]string{"tier": "backend"}))
	x.set(svc("other-ns", map[string]string{"zz": "s0007"}))
	got := x.matching("ns", []labels.Set{{"tier": "backend", "zz": "s0007", "pod-template-hash": "x"}})
	want := map[string]bool{"ns/s0007": true, "ns/all-backends": true, "ns/other-ns": true}
	if !maps.Equal(got, want) {
		t.Fatalf("matching %v, want %v", got, want)
	}
	// A selector change moves the Service; deletion removes it (a tombstone too).
	x.set(svc("s0007", map[string]string{"tier": "frontend"}))
	if got := x.matching("ns", []labels.Set{{"tier": "backend", "zz": "s0007"}}); got["ns/s0007"] {
		t.Fatalf("s0007 still matched by its old selector: %v", got)
	}
	if got := x.matching("ns", []labels.Set{{"tier": "frontend"}}); !got["ns/s0007"] {
		t.Fatalf("s0007 not matched by its new selector: %v", got)
	}
	x.follow(cache.DeletedFinalStateUnknown{Key: "ns/s0007", Obj: svc("s0007", nil)}, true)
	if got := x.matching("ns", []labels.Set{{"tier": "frontend"}}); len(got) != 0 {
		t.Fatalf("deleted Service still matched: %v", got)
	}
	// Removing the selector unfiles it.
	x.set(svc("all-backends", nil))
	if got := x.matching("ns", []labels.Set{{"tier": "backend"}}); len(got) != 0 {
		t.Fatalf("Service without selector matched: %v", got)
	}
	// Another namespace never matches.
	if got := x.matching("other", []labels.Set{{"tier": "backend", "zz": "s0001"}}); len(got) != 0 {
		t.Fatalf("other namespace matched %v", got)
	}
}

// The per-event cost when 5,000 Services' selectors share tier=backend, against 100: flat with
// the selector index filing each Service under one pair (an index of every pair made it ~9 ms per
// event at 5,000, every sharing Service matched at each event).
func BenchmarkPodEventSharedPair(b *testing.B) {
	for _, n := range []int{100, 5000} {
		b.Run(fmt.Sprintf("services=%d", n), func(b *testing.B) {
			var objs []any
			for i := range n {
				sel := map[string]string{"tier": "backend", "app": fmt.Sprintf("s%05d", i)}
				objs = append(objs, service("ns", fmt.Sprintf("s%05d", i), sel),
					pod("ns", fmt.Sprintf("s%05d-0", i), "198.18.1.1", sel, true))
			}
			_, sink, w := startWatcher(b, Config{}, objs...)
			for sink.get(fmt.Sprintf("ns/s%05d", n-1)) == nil || !w.Synced() {
				time.Sleep(10 * time.Millisecond)
			}
			set := []labels.Set{{"tier": "backend", "app": "s00042", "pod-template-hash": "abc"}}
			want := func(hit bool, known *Target) bool { return hit || (known != nil && len(known.Pods) == 0) }
			b.ResetTimer()
			for b.Loop() {
				if got := w.selecting("ns", set, want); len(got) != 1 {
					b.Fatalf("re-queued %v", got)
				}
			}
		})
	}
}

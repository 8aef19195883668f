package discovery

import (
	"context"
	"fmt"
	"math/rand/v2"
	"reflect"
	"slices"
	"sync/atomic"
	"testing"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/kubernetes/fake"
	"k8s.io/client-go/tools/cache"
)

// countingIndexer counts the objects the Pod indexer hands out, whichever way they are read.
type countingIndexer struct {
	cache.Indexer
	read atomic.Int64
}

func (c *countingIndexer) List() []any {
	out := c.Indexer.List()
	c.read.Add(int64(len(out)))
	return out
}

func (c *countingIndexer) ListKeys() []string {
	out := c.Indexer.ListKeys()
	c.read.Add(int64(len(out)))
	return out
}

func (c *countingIndexer) ByIndex(name, value string) ([]any, error) {
	out, err := c.Indexer.ByIndex(name, value)
	c.read.Add(int64(len(out)))
	return out, err
}

func (c *countingIndexer) Index(name string, obj any) ([]any, error) {
	out, err := c.Indexer.Index(name, obj)
	c.read.Add(int64(len(out)))
	return out, err
}

func (c *countingIndexer) IndexKeys(name, value string) ([]string, error) {
	out, err := c.Indexer.IndexKeys(name, value)
	c.read.Add(int64(len(out)))
	return out, err
}

func (c *countingIndexer) Get(obj any) (any, bool, error) {
	c.read.Add(1)
	return c.Indexer.Get(obj)
}

func (c *countingIndexer) GetByKey(key string) (any, bool, error) {
	c.read.Add(1)
	return c.Indexer.GetByKey(key)
}

// indexedWatcher is a Watcher whose informers do not run: the test fills their stores as the
// informers would (trimmed objects; for Pods the store, then the Pod event handler) and calls
// build and sync itself. Its Pod indexer counts what is read from it.
type indexedWatcher struct {
	*Watcher
	pods    *countingIndexer
	handler cache.ResourceEventHandler
}

func newIndexedWatcher(tb testing.TB) *indexedWatcher {
	tb.Helper()
	w, err := NewWatcher(fake.NewClientset(), Config{TotalShards: 1}, newSink(), quietLog())
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(w.queue.ShutDown)
	iw := &indexedWatcher{Watcher: w, pods: &countingIndexer{Indexer: w.podIndexers[metav1.NamespaceAll]}, handler: w.podHandler()}
	w.podIndexers[metav1.NamespaceAll] = iw.pods
	return iw
}

func (w *indexedWatcher) add(tb testing.TB, objs ...any) {
	tb.Helper()
	for _, o := range objs {
		switch o := o.(type) {
		case *corev1.Service:
			s, _ := TrimService(o)
			if err := w.serviceIndexer(o.Namespace).Add(s); err != nil {
				tb.Fatal(err)
			}
			w.selectors.follow(s, false) // as the Service handler does
		case *discoveryv1.EndpointSlice:
			s, _ := TrimEndpointSlice(o)
			if err := w.slices.(multiIndexer)[0].Add(s); err != nil {
				tb.Fatal(err)
			}
		case *corev1.Pod:
			p, _ := TrimPod(o)
			w.setPod(tb, p.(*corev1.Pod))
		default:
			tb.Fatalf("unexpected %T", o)
		}
	}
}

// setPod adds or updates a (trimmed) Pod: the store first, then the handler, as an informer does.
func (w *indexedWatcher) setPod(tb testing.TB, p *corev1.Pod) {
	tb.Helper()
	old, exists, _ := w.pods.Indexer.Get(p)
	if err := w.pods.Indexer.Update(p); err != nil {
		tb.Fatal(err)
	}
	if exists {
		w.handler.OnUpdate(old, p)
	} else {
		w.handler.OnAdd(p, false)
	}
}

// deletePod deletes a Pod, the event carrying a tombstone when tombstone is set.
func (w *indexedWatcher) deletePod(tb testing.TB, p *corev1.Pod, tombstone bool) {
	tb.Helper()
	old, _, _ := w.pods.Indexer.Get(p)
	if err := w.pods.Indexer.Delete(p); err != nil {
		tb.Fatal(err)
	}
	if tombstone {
		w.handler.OnDelete(cache.DeletedFinalStateUnknown{Key: p.Namespace + "/" + p.Name, Obj: old})
	} else {
		w.handler.OnDelete(old)
	}
}

// storePods is every Pod of ns in the store, as the watcher listed them before the index.
func (w *indexedWatcher) storePods(ns string) []*corev1.Pod {
	var out []*corev1.Pod
	for _, o := range w.pods.Indexer.List() {
		if p := o.(*corev1.Pod); p.Namespace == ns {
			out = append(out, p)
		}
	}
	return out
}

// builds builds svc the watcher's way, and returns the Target and how many Pods it read.
func (w *indexedWatcher) builds(svc *corev1.Service) (*Target, int64) {
	before := w.pods.read.Load()
	t := w.build(svc)
	return t, w.pods.read.Load() - before
}

// nearestScanningAll is NearestPod as BuildTarget computed it before the Pod index (its loop, but
// returning at a match, when no nearest Pod is named): every Pod of the namespace scored.
func nearestScanningAll(sel map[string]string, pods []*corev1.Pod) *corev1.Pod {
	s := labels.SelectorFromSet(sel)
	best, bestScore := (*corev1.Pod)(nil), 0
	for _, p := range pods {
		if p.DeletionTimestamp != nil {
			continue
		}
		if s.Matches(labels.Set(p.Labels)) {
			return nil // a Pod matches: no nearest one
		}
		if sc := agreement(sel, p.Labels); sc > bestScore || (sc == bestScore && best != nil && p.Name < best.Name) {
			best, bestScore = p, sc
		}
	}
	return best
}

func podName(p *Pod) string {
	if p == nil {
		return "<none>"
	}
	return p.Name
}

// A Service's build reads its own Pods from the index (those of its selector's pair with the
// fewest Pods), not the Pods of its namespace; a Service without a selector reads none. The
// Target is the one BuildTarget makes from every Pod of the namespace.
func TestServiceBuildReadsOnlyItsPods(t *testing.T) {
	w := newIndexedWatcher(t)
	const apps, podsPerApp = 200, 3
	var svcs []*corev1.Service
	for i := range apps {
		app := fmt.Sprintf("s%03d", i)
		// tier=backend is on every Pod of the namespace: the build must read by app.
		s := service("big", app, map[string]string{"app": app, "tier": "backend"}, svcPort("http", 80, intstr.FromString("http")))
		svcs = append(svcs, s)
		w.add(t, s, slice("big", app, app+"-1", 8080, "http", ep{ip: "198.18.0.5", pod: app + "-0", ready: true, serving: true}))
		for j := range podsPerApp {
			w.add(t, pod("big", fmt.Sprintf("%s-%d", app, j), "198.18.0.5",
				map[string]string{"app": app, "tier": "backend", "pod-template-hash": "h" + app}, j != 1,
				corev1.ContainerPort{Name: "http", ContainerPort: 8080}))
			// The same labels in another namespace: not read either.
			w.add(t, pod("other", fmt.Sprintf("%s-%d", app, j), "198.18.0.6", map[string]string{"app": app, "tier": "backend"}, true))
		}
	}
	// One Pod of s000 is being deleted: read (it is in the index) but not selected.
	gone, _ := TrimPod(pod("big", "s000-9", "198.18.0.7", map[string]string{"app": "s000", "tier": "backend"}, true))
	gone.(*corev1.Pod).DeletionTimestamp = &metav1.Time{}
	w.setPod(t, gone.(*corev1.Pod))
	nsPods := w.storePods("big")
	if len(nsPods) != apps*podsPerApp+1 {
		t.Fatalf("fixture: %d Pods in big", len(nsPods))
	}

	for _, s := range svcs {
		tg, read := w.builds(s)
		want := int64(podsPerApp)
		if s.Name == "s000" {
			want++
		}
		if read != want {
			t.Fatalf("%s: build read %d Pods, want its own %d (namespace: %d)", s.Name, read, want, len(nsPods))
		}
		if len(tg.Pods) != podsPerApp || tg.NearestPod != nil {
			t.Fatalf("%s: Pods %v nearest %s", s.Name, tg.Pods, podName(tg.NearestPod))
		}
		objs, _ := w.slices.ByIndex(sliceServiceIndex, "big/"+s.Name)
		sl := []*discoveryv1.EndpointSlice{objs[0].(*discoveryv1.EndpointSlice)}
		if ref := BuildTarget(s, sl, nsPods); !reflect.DeepEqual(tg, ref) {
			t.Fatalf("%s: indexed build differs from BuildTarget over the namespace:\n%+v\n%+v", s.Name, tg, ref)
		}
	}

	for _, sel := range []map[string]string{nil, {}} {
		s := service("big", "no-selector", sel)
		if tg, read := w.builds(s); read != 0 || tg.Pods != nil || tg.NearestPod != nil {
			t.Fatalf("selector %v: read %d Pods, Pods %v", sel, read, tg.Pods)
		}
	}

	// A key typo matches nothing: the nearest Pod is among the Pods with one of the selector's
	// values, here s007's three (no Pod has a run label).
	typo := service("big", "typo", map[string]string{"run": "s007"})
	tg, read := w.builds(typo)
	if read != podsPerApp || tg.NearestPod == nil || tg.NearestPod.Name != "s007-0" {
		t.Fatalf("key typo: read %d Pods, nearest %s; want 3 read and s007-0", read, podName(tg.NearestPod))
	}
	if ref := BuildTarget(typo, nil, nsPods); !reflect.DeepEqual(tg, ref) {
		t.Fatalf("key typo: indexed build differs from BuildTarget:\n%+v\n%+v", tg, ref)
	}
	// A value typo: no Pod has the value, so the nearest is the first Pod by name with an app
	// label. The first build reads the Pods with one (every Pod here); later ones check that
	// the Pod found still is, one Pod read, until a Pod event changes that.
	typo = service("big", "typo", map[string]string{"app": "s007x"})
	ref := BuildTarget(typo, nil, nsPods)
	if ref.NearestPod == nil || ref.NearestPod.Name != "s000-0" {
		t.Fatalf("fixture: value typo's nearest %s, want s000-0", podName(ref.NearestPod))
	}
	if tg, read := w.builds(typo); !reflect.DeepEqual(tg, ref) || read != int64(len(nsPods)) {
		t.Fatalf("value typo, first build: %d Pods read, target %+v, want %d and %+v", read, tg, len(nsPods), ref)
	}
	for range 3 {
		if tg, read := w.builds(typo); !reflect.DeepEqual(tg, ref) || read != 1 {
			t.Fatalf("value typo, again: %d Pods read, target %+v, want 1 and %+v", read, tg, ref)
		}
	}
	// s000-0 goes: the next build finds s000-1 (once more from every Pod with an app label).
	w.deletePod(t, nsPods[slices.IndexFunc(nsPods, func(p *corev1.Pod) bool { return p.Name == "s000-0" })], false)
	if tg, _ := w.builds(typo); tg.NearestPod == nil || tg.NearestPod.Name != "s000-1" {
		t.Fatalf("value typo after s000-0 went: nearest %s, want s000-1", podName(tg.NearestPod))
	}
	if tg, read := w.builds(typo); tg.NearestPod == nil || tg.NearestPod.Name != "s000-1" || read != 1 {
		t.Fatalf("value typo, again: %d Pods read, nearest %s, want 1 and s000-1", read, podName(tg.NearestPod))
	}
}

// typoPods is a namespace with a few applications, the way Pods are usually labelled.
func typoPods() []*corev1.Pod {
	mk := func(name string, l map[string]string) *corev1.Pod {
		p, _ := TrimPod(pod("shop", name, "198.18.0.5", l, true, corev1.ContainerPort{Name: "http", ContainerPort: 8080}))
		return p.(*corev1.Pod)
	}
	const name, inst = "app.kubernetes.io/name", "app.kubernetes.io/instance"
	return []*corev1.Pod{
		mk("hostnames-7c9d4b8f6-x2k4q", map[string]string{"app": "hostnames", "pod-template-hash": "7c9d4b8f6"}),
		mk("hostnames-7c9d4b8f6-zzz9a", map[string]string{"app": "hostnames", "pod-template-hash": "7c9d4b8f6"}),
		mk("api-5f6b7c-aaaaa", map[string]string{"run": "api", "pod-template-hash": "5f6b7c"}),
		mk("web-front-0", map[string]string{"app": "web", "tier": "frontend", "version": "v1"}),
		mk("web-back-0", map[string]string{"app": "web", "tier": "backend", "version": "v1"}),
		mk("db-0", map[string]string{"app": "db", "tier": "backend", "statefulset.kubernetes.io/pod-name": "db-0"}),
		mk("cart-6d8f-abcde", map[string]string{name: "cart", inst: "shop", "app.kubernetes.io/component": "server"}),
		mk("checkout-6d8f-fghij", map[string]string{name: "checkout", inst: "shop", "app.kubernetes.io/component": "server"}),
		mk("redis-0", map[string]string{name: "redis", inst: "cache", "app.kubernetes.io/component": "master"}),
	}
}

// Typical selector typos name the same nearest Pod as before the index (every Pod of the namespace
// scored), through BuildTarget and through the watcher's index alike.
func TestNearestPodSameAsBeforeForTypicalTypos(t *testing.T) {
	pods := typoPods()
	w := newIndexedWatcher(t)
	for _, p := range pods {
		w.setPod(t, p)
	}
	const name, inst = "app.kubernetes.io/name", "app.kubernetes.io/instance"
	cases := []struct {
		what string
		sel  map[string]string
		want string
	}{
		// hostnames' Pods have the value, api's the key: equal scores, api first by name.
		{"key typo: run for app", map[string]string{"run": "hostnames"}, "api-5f6b7c-aaaaa"},
		{"key typo: app for run", map[string]string{"app": "api"}, "api-5f6b7c-aaaaa"},
		{"key typo: k8s-app", map[string]string{"k8s-app": "hostnames"}, "hostnames-7c9d4b8f6-x2k4q"},
		// No Pod has the value: the first Pod by name with an app label.
		{"value typo", map[string]string{"app": "hostname"}, "db-0"},
		{"value typo beside a right pair", map[string]string{"app": "web", "tier": "fronted"}, "web-back-0"}, // ties web-front-0
		{"pair the Pods do not have", map[string]string{"app": "web", "tier": "frontend", "track": "stable"}, "web-front-0"},
		{"version not rolled out", map[string]string{"app": "web", "tier": "frontend", "version": "v2"}, "web-front-0"},
		{"instance typo", map[string]string{name: "cart", inst: "shopp"}, "cart-6d8f-abcde"},
		{"name typo", map[string]string{name: "chekout", inst: "shop"}, "cart-6d8f-abcde"}, // ties checkout
		{"case of a value", map[string]string{name: "Redis", inst: "cache"}, "redis-0"},
		{"selector of another workload's pair", map[string]string{"app": "db", "tier": "frontend"}, "db-0"},
		{"both values wrong", map[string]string{name: "carts", inst: "shop-v2"}, "cart-6d8f-abcde"},
		{"Service left behind by its workload", map[string]string{"app": "old", "tier": "legacy"}, "db-0"},
		{"no label in common", map[string]string{"team": "payments"}, "<none>"},
	}
	for _, c := range cases {
		t.Run(c.what, func(t *testing.T) {
			before := nearestScanningAll(c.sel, pods)
			if got := func() string {
				if before == nil {
					return "<none>"
				}
				return before.Name
			}(); got != c.want {
				t.Fatalf("fixture: before the index the nearest Pod was %s, want %s", got, c.want)
			}
			s := service("shop", "s", c.sel)
			pure := BuildTarget(s, nil, pods)
			indexed, _ := w.builds(s)
			if podName(pure.NearestPod) != c.want || podName(indexed.NearestPod) != c.want {
				t.Fatalf("nearest Pod %s (BuildTarget), %s (index), want %s as before", podName(pure.NearestPod), podName(indexed.NearestPod), c.want)
			}
			if before != nil && !reflect.DeepEqual(*pure.NearestPod, podOf(before)) || !reflect.DeepEqual(pure, indexed) {
				t.Fatalf("targets differ:\n%+v\n%+v", pure, indexed)
			}
		})
	}
}

// The informer's store is ahead of the Pod events until the handler has run: a nearest Pod known
// from an earlier build that is gone from the store, or lost its label, is not named again.
func TestNearestPodStoreAheadOfEvents(t *testing.T) {
	w := newIndexedWatcher(t)
	mk := func(name string, l map[string]string) *corev1.Pod {
		p, _ := TrimPod(pod("ns", name, "198.18.0.5", l, true))
		return p.(*corev1.Pod)
	}
	a, b, c := mk("a-0", map[string]string{"app": "a"}), mk("b-0", map[string]string{"app": "b"}), mk("c-0", map[string]string{"app": "c"})
	for _, p := range []*corev1.Pod{a, b, c} {
		w.setPod(t, p)
	}
	typo := service("ns", "typo", map[string]string{"app": "x"})
	if tg, _ := w.builds(typo); podName(tg.NearestPod) != "a-0" {
		t.Fatalf("nearest %s, want a-0", podName(tg.NearestPod))
	}
	if err := w.pods.Indexer.Delete(a); err != nil { // the store only: no event yet
		t.Fatal(err)
	}
	if tg, _ := w.builds(typo); podName(tg.NearestPod) != "b-0" {
		t.Fatalf("a-0 gone from the store: nearest %s, want b-0", podName(tg.NearestPod))
	}
	relabelled := mk("b-0", map[string]string{"run": "b"})
	if err := w.pods.Indexer.Update(relabelled); err != nil {
		t.Fatal(err)
	}
	if tg, _ := w.builds(typo); podName(tg.NearestPod) != "c-0" {
		t.Fatalf("b-0 relabelled in the store: nearest %s, want c-0", podName(tg.NearestPod))
	}
	w.handler.OnDelete(a)
	w.handler.OnUpdate(b, relabelled)
	if tg, read := w.builds(typo); podName(tg.NearestPod) != "c-0" || read != 1 {
		t.Fatalf("after the events: nearest %s, %d Pods read; want c-0 and 1", podName(tg.NearestPod), read)
	}
}

// Random Pods and selectors, and random label changes and deletions through the Pod event handler:
// the watcher's indexed build always equals BuildTarget over the namespace's Pods, whose nearest
// Pod is the one scoring every Pod gives; the label counts equal a recount of the store.
func TestIndexedBuildMatchesBuildTarget(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	keys := []string{"app", "run", "tier", "version", "k8s-app"}
	vals := []string{"web", "api", "db", "v1", "v2", "frontend", "backend", ""}
	randLabels := func() map[string]string {
		l := map[string]string{}
		for range r.IntN(4) {
			l[keys[r.IntN(len(keys))]] = vals[r.IntN(len(vals))]
		}
		if len(l) == 0 && r.IntN(2) == 0 {
			return nil
		}
		return l
	}
	w := newIndexedWatcher(t)
	live := map[string]*corev1.Pod{}
	for round := range 300 {
		ns := []string{"a", "b"}[r.IntN(2)]
		name := fmt.Sprintf("p%02d", r.IntN(40))
		key := ns + "/" + name
		switch op := r.IntN(10); {
		case op < 7:
			p, _ := TrimPod(pod(ns, name, "198.18.0.5", randLabels(), r.IntN(2) == 0))
			pp := p.(*corev1.Pod)
			pp.ResourceVersion = fmt.Sprint(round)
			if r.IntN(10) == 0 {
				pp.DeletionTimestamp = &metav1.Time{}
			}
			w.setPod(t, pp)
			live[key] = pp
		case live[key] != nil:
			w.deletePod(t, live[key], op == 9)
			delete(live, key)
		}

		want := labelCounts{}
		for _, p := range live {
			want.add(p.Namespace, p.Labels, 1)
		}
		if !reflect.DeepEqual(w.podLabels.n, want.n) && (len(w.podLabels.n) != 0 || len(want.n) != 0) {
			t.Fatalf("round %d: label counts %v, recount %v", round, w.podLabels.n, want.n)
		}

		sel := randLabels()
		s := service(ns, "s", sel)
		nsPods := w.storePods(ns)
		pure := BuildTarget(s, nil, nsPods)
		indexed, _ := w.builds(s)
		if !reflect.DeepEqual(pure, indexed) {
			t.Fatalf("round %d: selector %v: indexed build differs from BuildTarget:\n%+v\n%+v", round, sel, indexed, pure)
		}
		if len(sel) == 0 || len(pure.Pods) > 0 {
			continue
		}
		if before := nearestScanningAll(sel, nsPods); podName(pure.NearestPod) != podName(func() *Pod {
			if before == nil {
				return nil
			}
			p := podOf(before)
			return &p
		}()) {
			t.Fatalf("round %d: selector %v: nearest %s, scoring every Pod gave %v", round, sel, podName(pure.NearestPod), before)
		}
	}
}

// serviceSyncShape builds namespaces of services Services, each selecting podsPer Pods by its app
// and a tier every Pod of the namespace has, and one in ten of them twice more with a typo, which
// matches no Pod: a key typo (run=<app>: its Pods have the value) and a value typo
// (app=<app>x: no Pod has the value, the nearest is the first Pod by name with an app label). It
// syncs them all once and returns their keys by kind (match, keytypo, valuetypo).
func serviceSyncShape(b *testing.B, namespaces, services, podsPer int) (*indexedWatcher, map[string][]string) {
	w := newIndexedWatcher(b)
	keys := map[string][]string{}
	// The Pods first: the Pod event handler then has no Service to re-queue, which keeps the
	// setup short (a Pod event looks at every Service sharing one of its key=values, here all of
	// its namespace through tier=backend).
	for n := range namespaces {
		ns := fmt.Sprintf("ns%02d", n)
		for i := range services {
			app := fmt.Sprintf("s%05d", i)
			for j := range podsPer {
				w.add(b, pod(ns, fmt.Sprintf("%s-%d", app, j), "198.18.0.5",
					map[string]string{"app": app, "tier": "backend", "pod-template-hash": "h" + app}, true,
					corev1.ContainerPort{Name: "http", ContainerPort: 8080}))
			}
		}
	}
	for n := range namespaces {
		ns := fmt.Sprintf("ns%02d", n)
		for i := range services {
			app := fmt.Sprintf("s%05d", i)
			port := svcPort("http", 80, intstr.FromString("http"))
			w.add(b, service(ns, app, map[string]string{"app": app, "tier": "backend"}, port),
				slice(ns, app, app+"-1", 8080, "http", ep{ip: "198.18.0.5", pod: app + "-0", ready: true, serving: true}))
			keys["match"] = append(keys["match"], ns+"/"+app)
			if i%10 == 0 {
				w.add(b, service(ns, "keytypo-"+app, map[string]string{"run": app}, port),
					service(ns, "valuetypo-"+app, map[string]string{"app": app + "x"}, port))
				keys["keytypo"] = append(keys["keytypo"], ns+"/keytypo-"+app)
				keys["valuetypo"] = append(keys["valuetypo"], ns+"/valuetypo-"+app)
			}
		}
	}
	for _, kind := range []string{"match", "keytypo", "valuetypo"} {
		for _, k := range keys[kind] {
			w.sync(k)
		}
	}
	return w, keys
}

// The cost of one Service sync (Watcher.sync: build, version, nothing to push) in one namespace of
// 5,000 Services and 20,000 Pods against 50 namespaces of 100 Services and 400 Pods (the same
// totals): flat with the Pod index, where each sync listed and matched every Pod of the namespace
// before it. match: Services selecting their 4 Pods by app=<app>,tier=backend (tier is on every
// Pod); keytypo and valuetypo match no Pod, so the nearest Pod is searched (serviceSyncShape).
// pods-read/op is what the sync read from the Pod informer. Compare the shapes' ns/op as a ratio,
// in the same run.
func BenchmarkServiceSync(b *testing.B) {
	for _, shape := range []struct{ namespaces, services int }{{1, 5000}, {50, 100}} {
		const podsPer = 4
		b.Run(fmt.Sprintf("namespaces=%d,services=%d,pods=%d", shape.namespaces, shape.services, shape.services*podsPer), func(b *testing.B) {
			w, keys := serviceSyncShape(b, shape.namespaces, shape.services, podsPer)
			for _, kind := range []string{"match", "keytypo", "valuetypo"} {
				b.Run(kind, func(b *testing.B) {
					read := w.pods.read.Load()
					i := 0
					for b.Loop() {
						w.sync(keys[kind][i%len(keys[kind])])
						i++
					}
					b.ReportMetric(float64(w.pods.read.Load()-read)/float64(i), "pods-read/op")
				})
			}
		})
	}
}

// podlessSink counts the Targets pushed with a selector and no Pod.
type podlessSink struct {
	*recordingSink
	podless atomic.Int64
}

func (s *podlessSink) Upsert(t *Target) {
	if len(t.Selector) > 0 && len(t.Pods) == 0 {
		s.podless.Add(1)
	}
	s.recordingSink.Upsert(t)
}

// At start, Services are built once the caches have synced, each with the Pods listed with it:
// none is pushed as selecting no Pod first (which would also have every Pod of its namespace
// re-queue it, see noPods), and Synced means they are all pushed.
func TestStartBuildsServicesWithTheirPods(t *testing.T) {
	client := fake.NewClientset()
	ctx := t.Context()
	const n = 300
	for i := range n {
		app := fmt.Sprintf("s%03d", i)
		if _, err := client.CoreV1().Services("ns").Create(ctx, service("ns", app, map[string]string{"app": app}), metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		if _, err := client.CoreV1().Pods("ns").Create(ctx, pod("ns", app+"-0", "198.18.0.5", map[string]string{"app": app}, true), metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	sink := &podlessSink{recordingSink: newSink()}
	w, err := NewWatcher(client, Config{TotalShards: 1}, sink, quietLog())
	if err != nil {
		t.Fatal(err)
	}
	runCtx, cancel := context.WithCancel(ctx)
	done := make(chan error)
	go func() { done <- w.Run(runCtx) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	}()
	eventually(t, "discovery synced", w.Synced)
	sink.mu.Lock()
	pushed := len(sink.targets)
	sink.mu.Unlock()
	if pushed != n {
		t.Fatalf("synced with %d of %d Services pushed", pushed, n)
	}
	if p := sink.podless.Load(); p != 0 {
		t.Fatalf("%d Services pushed selecting no Pod at start, want none", p)
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if len(w.noPods) != 0 {
		t.Fatalf("noPods %v at start", w.noPods)
	}
}

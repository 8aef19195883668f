package discovery

import (
	"maps"
	"slices"
	"sort"
	"strings"
	"sync"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/client-go/tools/cache"
)

// A Service's build reads the Pods of its namespace through the Pod informer's podLabelIndex:
// the Pods of the selector's key=value with the fewest Pods (labelCounts says which), on which the
// whole selector is then checked. Only when none matches, it looks for the nearest Pod (see
// nearestPod): it scores the Pods with a label whose value is one of the selector's, and adds the
// Pod with the most of the selector's keys, which labelCounts keeps for each set of keys asked.
// That is the Pod scoring every Pod of the namespace would find, for what the Pods the selector
// shares something with cost, not the size of the namespace.

// podLabelPairs indexes a Pod by each key=value of its labels, in the form of selectorPair.
func podLabelPairs(obj any) ([]string, error) {
	p, ok := obj.(*corev1.Pod)
	if !ok || len(p.Labels) == 0 {
		return nil, nil
	}
	out := make([]string, 0, len(p.Labels))
	for k, v := range p.Labels {
		out = append(out, selectorPair(p.Namespace, k, v))
	}
	return out, nil
}

// labelCounts counts the Pods carrying each label, by namespace, key and value. The Pod event
// handler keeps it, before it re-queues Services. It tells a build which of its selector's pairs
// has the fewest Pods (the informer's index has no size) and which keys of the namespace carry one
// of the selector's values (the index has no lookup by value). Both only choose what to read from
// the index: a count that lags the informer's store, between a change and its event, may make a
// build read more than it needs, never miss a Pod it matches; for the nearest Pod, the event that
// brings the count up to date re-queues the Services that match no Pod.
type labelCounts struct {
	mu sync.RWMutex
	n  map[string]map[string]map[string]int // namespace → key → value → Pods
	// most holds, by namespace and set of selector keys, the Pod with the most of those keys:
	// asked for Services that match no Pod, kept up to date by every Pod event.
	most map[string]map[string]*mostKeys
}

// mostKeys is, of the Pods of a namespace not being deleted, the one with the most of keys, the
// first by name among equals. Known is false until computed, and again when that Pod loses one
// of the keys or goes: it is then computed anew from the Pods with the keys.
type mostKeys struct {
	keys  []string
	known bool
	name  string // "" when no Pod has any of the keys
	n     int    // how many of the keys it has
}

// carried is how many of keys the Pod p has; 0 when it is nil or being deleted.
func carried(p *corev1.Pod, keys []string) int {
	if p == nil || p.DeletionTimestamp != nil {
		return 0
	}
	n := 0
	for _, k := range keys {
		if _, ok := p.Labels[k]; ok {
			n++
		}
	}
	return n
}

// change follows a Pod event: op was the Pod before it (nil for an add), np is the Pod after it
// (nil for a delete).
func (m *mostKeys) change(op, np *corev1.Pod) {
	if !m.known {
		return
	}
	if op != nil && op.Name == m.name {
		n := 0
		if np != nil {
			n = carried(np, m.keys)
		}
		if n < m.n {
			m.known = false // it has fewer keys than before, or went: another Pod may have more
		} else {
			m.n = n // more: no other Pod had more than m.n, it stays the first
		}
		return
	}
	if n := carried(np, m.keys); n > 0 && (n > m.n || (n == m.n && np.Name < m.name)) {
		m.name, m.n = np.Name, n
	}
}

// change counts a Pod event: old is nil for an add, new for a delete.
func (c *labelCounts) change(old, new any) {
	op, np := eventPod(old), eventPod(new)
	if op != nil && np != nil && maps.Equal(op.Labels, np.Labels) && (op.DeletionTimestamp == nil) == (np.DeletionTimestamp == nil) {
		return // most updates: status, not labels
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	ns := ""
	if op != nil {
		c.add(op.Namespace, op.Labels, -1)
		ns = op.Namespace
	}
	if np != nil {
		c.add(np.Namespace, np.Labels, 1)
		ns = np.Namespace // a Pod's namespace does not change
	}
	for _, m := range c.most[ns] {
		m.change(op, np)
	}
}

func (c *labelCounts) add(ns string, l map[string]string, d int) {
	if len(l) == 0 {
		return
	}
	if c.n == nil {
		c.n = map[string]map[string]map[string]int{}
	}
	keys := c.n[ns]
	if keys == nil {
		keys = map[string]map[string]int{}
		c.n[ns] = keys
	}
	for k, v := range l {
		vals := keys[k]
		if vals == nil {
			vals = map[string]int{}
			keys[k] = vals
		}
		if n := vals[v] + d; n > 0 {
			vals[v] = n
		} else {
			delete(vals, v)
		}
		if len(vals) == 0 {
			delete(keys, k)
		}
	}
	if len(keys) == 0 {
		delete(c.n, ns)
	}
}

// fewest returns the key=value of sel (not empty) with the fewest Pods in ns, the first by key
// among equals.
func (c *labelCounts) fewest(ns string, sel map[string]string) (string, string) {
	if len(sel) == 1 {
		for k, v := range sel {
			return k, v
		}
	}
	c.mu.RLock()
	defer c.mu.RUnlock()
	bestK, bestN := "", -1
	for k, v := range sel {
		if n := c.n[ns][k][v]; bestN < 0 || n < bestN || (n == bestN && k < bestK) {
			bestK, bestN = k, n
		}
	}
	return bestK, sel[bestK]
}

// withValues returns the key=value pairs of ns that some Pod carries and whose value is one of
// sel's, sorted.
func (c *labelCounts) withValues(ns string, sel map[string]string) [][2]string {
	c.mu.RLock()
	defer c.mu.RUnlock()
	var out [][2]string
	for k, vals := range c.n[ns] {
		for _, v := range sel {
			if vals[v] > 0 && !containsPair(out, k, v) {
				out = append(out, [2]string{k, v})
			}
		}
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i][0] != out[j][0] {
			return out[i][0] < out[j][0]
		}
		return out[i][1] < out[j][1]
	})
	return out
}

func containsPair(pairs [][2]string, k, v string) bool {
	for _, p := range pairs {
		if p[0] == k && p[1] == v {
			return true
		}
	}
	return false
}

// eventPod is the Pod of an event's object (a tombstone's last state), or nil.
func eventPod(obj any) *corev1.Pod {
	if d, ok := obj.(cache.DeletedFinalStateUnknown); ok {
		obj = d.Obj
	}
	p, _ := obj.(*corev1.Pod)
	return p
}

// indexedPods is the podSource of one namespace the watcher builds Targets from.
type indexedPods struct {
	idx    cache.Indexer // nil: the namespace is not watched
	counts *labelCounts
	ns     string
	// partial: only one node's Pods are watched (Config.PodsOnNode).
	partial bool
}

func (w *Watcher) podsOf(ns string) indexedPods {
	return indexedPods{idx: w.podIndexer(ns), counts: &w.podLabels, ns: ns, partial: w.cfg.PodsOnNode != ""}
}

// selecting reads the Pods of the selector's pair with the fewest Pods.
func (s indexedPods) selecting(sel map[string]string) []*corev1.Pod {
	k, v := s.counts.fewest(s.ns, sel)
	var out []*corev1.Pod
	s.each(k, v, func(p *corev1.Pod) { out = append(out, p) })
	return out
}

// nearest finds the Pod scoring every Pod of the namespace would (nearestPod) from two kinds:
//   - the Pods with a label whose value is one of the selector's, read and scored;
//   - the others score one point per key of the selector they have, no more than len(sel): the
//     best of them is the Pod with the most of the selector's keys (mostKeys), when it has none
//     of the values. When it has one, it scores more than its keys, so more than any of them, and
//     was scored with the first kind.
//
// The second is not needed when a Pod of the first scores more than len(sel), as one sharing a
// key=value with a selector of one or two pairs does.
func (s indexedPods) nearest(sel map[string]string, matches labels.Selector) *corev1.Pod {
	if s.partial { // one node's Pods: the nearest of them would be a guess
		return nil
	}
	var n nearestPod
	seen := map[string]bool{}
	for _, kv := range s.counts.withValues(s.ns, sel) {
		s.each(kv[0], kv[1], func(p *corev1.Pod) {
			if !seen[p.Name] {
				seen[p.Name] = true
				n.consider(sel, matches, p)
			}
		})
	}
	if n.score <= len(sel) {
		n.consider(sel, matches, s.withMostKeys(sel))
	}
	return n.pod
}

// withMostKeys returns, of the Pods of the namespace not being deleted, the one with the most of the
// keys of sel, the first by name among equals; nil when none has any. Known from an earlier call
// and kept by the Pod events, it reads one Pod; otherwise, the Pods with one of the keys.
func (s indexedPods) withMostKeys(sel map[string]string) *corev1.Pod {
	keys := slices.Sorted(maps.Keys(sel))
	id := strings.Join(keys, "\x00") // not in a label key
	c := s.counts
	c.mu.Lock()
	defer c.mu.Unlock()
	m := c.most[s.ns][id]
	if m == nil {
		m = &mostKeys{keys: keys}
		if c.most == nil {
			c.most = map[string]map[string]*mostKeys{}
		}
		if c.most[s.ns] == nil {
			c.most[s.ns] = map[string]*mostKeys{}
		}
		c.most[s.ns][id] = m
	}
	if m.known {
		if m.name == "" {
			return nil
		}
		// The store may be ahead of the events (a Pod gone, relabelled): check the one Pod.
		if p := s.get(m.name); carried(p, keys) == m.n {
			return p
		}
	}
	var best *corev1.Pod
	bestN := 0
	for _, k := range keys {
		for v := range c.n[s.ns][k] {
			s.each(k, v, func(p *corev1.Pod) {
				if n := carried(p, keys); n > bestN || (n == bestN && n > 0 && p.Name < best.Name) {
					best, bestN = p, n
				}
			})
		}
	}
	m.known, m.name, m.n = true, "", bestN
	if best != nil {
		m.name = best.Name
	}
	return best
}

// each calls fn with every Pod of the namespace labelled k=v.
func (s indexedPods) each(k, v string, fn func(*corev1.Pod)) {
	if s.idx == nil {
		return
	}
	objs, _ := s.idx.ByIndex(podLabelIndex, selectorPair(s.ns, k, v))
	for _, o := range objs {
		if p, ok := o.(*corev1.Pod); ok {
			fn(p)
		}
	}
}

// get returns the Pod of the namespace named name, or nil.
func (s indexedPods) get(name string) *corev1.Pod {
	if s.idx == nil {
		return nil
	}
	o, ok, _ := s.idx.GetByKey(s.ns + "/" + name)
	if !ok {
		return nil
	}
	p, _ := o.(*corev1.Pod)
	return p
}

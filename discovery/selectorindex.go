package discovery

import (
	"maps"
	"sync"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/client-go/tools/cache"
)

// selectorIndex files each Service with a selector under exactly one key=value of its selector:
// the one with the fewest Services filed under it when the Service came (or its selector
// changed). A Pod whose labels match a selector carries every key=value of it, that one
// included, so looking up each of the Pod's key=values finds every Service it matches; and it
// finds few others. Indexing every key=value instead (as an informer index does) makes a Pod
// event cost every Service that shares one key=value with it: with 5,000 Services selecting
// `tier=backend,app=<own>`, each Pod event of the namespace looked at all 5,000.
//
// Services with the same selector are filed together (none of their pairs is rarer): a Pod they
// match changes them all. The filing is chosen greedily and never moved; that only chooses how
// few Services a lookup checks, never which of them match.
type selectorIndex struct {
	mu     sync.RWMutex
	byPair map[string]map[string]filed // selectorPair → Service key → its filing
	of     map[string]filed            // Service key → its filing
}

// filed is a Service's entry: the pair it is filed under and its selector, kept to match Pods
// against without reading the Service informer.
type filed struct {
	pair     string
	selector map[string]string
	matcher  labels.Selector
}

func newSelectorIndex() *selectorIndex {
	return &selectorIndex{byPair: map[string]map[string]filed{}, of: map[string]filed{}}
}

// set files s (or moves it, when its selector changed), or unfiles it when it has no selector.
func (x *selectorIndex) set(s *corev1.Service) {
	key := s.Namespace + "/" + s.Name
	x.mu.Lock()
	defer x.mu.Unlock()
	if old, ok := x.of[key]; ok {
		if maps.Equal(old.selector, s.Spec.Selector) {
			return
		}
		x.unfile(key, old)
	}
	if len(s.Spec.Selector) == 0 {
		return
	}
	best, bestN := "", -1
	for k, v := range s.Spec.Selector {
		p := selectorPair(s.Namespace, k, v)
		if n := len(x.byPair[p]); bestN < 0 || n < bestN || (n == bestN && p < best) {
			best, bestN = p, n
		}
	}
	sel := maps.Clone(s.Spec.Selector)
	f := filed{pair: best, selector: sel, matcher: labels.SelectorFromValidatedSet(sel)}
	if x.byPair[best] == nil {
		x.byPair[best] = map[string]filed{}
	}
	x.byPair[best][key] = f
	x.of[key] = f
}

// remove unfiles the Service of key.
func (x *selectorIndex) remove(key string) {
	x.mu.Lock()
	defer x.mu.Unlock()
	if old, ok := x.of[key]; ok {
		x.unfile(key, old)
	}
}

func (x *selectorIndex) unfile(key string, f filed) {
	delete(x.of, key)
	delete(x.byPair[f.pair], key)
	if len(x.byPair[f.pair]) == 0 {
		delete(x.byPair, f.pair)
	}
}

// matching returns the keys of the Services of ns whose selector matches one of sets.
func (x *selectorIndex) matching(ns string, sets []labels.Set) map[string]bool {
	out := map[string]bool{}
	x.mu.RLock()
	defer x.mu.RUnlock()
	for _, set := range sets {
		for k, v := range set {
			for key, f := range x.byPair[selectorPair(ns, k, v)] {
				if !out[key] && f.matcher.Matches(set) {
					out[key] = true
				}
			}
		}
	}
	return out
}

// filedUnder is how many Services are filed under the pair p (tests).
func (x *selectorIndex) filedUnder(p string) int {
	x.mu.RLock()
	defer x.mu.RUnlock()
	return len(x.byPair[p])
}

// follow keeps x in step with one event of the Service informer (obj may be a tombstone).
func (x *selectorIndex) follow(obj any, deleted bool) {
	if d, ok := obj.(cache.DeletedFinalStateUnknown); ok {
		obj = d.Obj
	}
	s, ok := obj.(*corev1.Service)
	switch {
	case !ok:
	case deleted:
		x.remove(s.Namespace + "/" + s.Name)
	default:
		x.set(s)
	}
}

package discovery

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"log/slog"
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	corelisters "k8s.io/client-go/listers/core/v1"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/util/workqueue"
)

// Sink receives targets as they change. The scheduler implements it.
type Sink interface {
	Upsert(t *Target)
	Delete(uid types.UID, key string)
}

// Config selects which Services this replica watches.
type Config struct {
	Namespaces        []string // empty: all
	NamespacesExclude []string
	Selector          string // label selector on Services
	Shard             int
	TotalShards       int
	// DNSService is the cluster DNS Service ("kube-system/kube-dns"); its endpoints are watched
	// whatever the namespace filters say, so each DNS Pod can be asked directly.
	DNSService string
	// Workloads watches Deployments, StatefulSets, ReplicaSets, DaemonSets and
	// ReplicationControllers (get/list/watch, trimmed to their replicas and Pod template labels),
	// so a Service whose workload is scaled to zero is told from a selector typo
	// (--discovery.workloads).
	Workloads bool
	// NetworkPolicies watches NetworkPolicies and namespaces (get/list/watch) and marks the
	// endpoints whose Pods the policies do not let the exporter reach (Endpoint.Denied), found by
	// SelfIPs, the exporter Pod's addresses (--discovery.network-policies).
	NetworkPolicies bool
	SelfIPs         []netip.Addr
	// PodsOnNode, when set, watches only the Pods on that node (a node agent: a field selector on
	// spec.nodeName, as a kubelet's watch, so the API server sends an agent its node's Pod events,
	// not the cluster's). The addresses an agent may dial are then also those of EndpointSlice
	// endpoints backed by a Pod, and Targets carry it (Target.PodsOnNode).
	PodsOnNode string
}

// Validate checks the configuration before anything starts.
func (c Config) Validate() error {
	if c.TotalShards < 1 {
		return fmt.Errorf("--total-shards must be at least 1, got %d", c.TotalShards)
	}
	if c.Shard < 0 || c.Shard >= c.TotalShards {
		return fmt.Errorf("--shard must be in [0, %d), got %d", c.TotalShards, c.Shard)
	}
	if _, err := labels.Parse(c.Selector); err != nil {
		return fmt.Errorf("--selector %q: %w", c.Selector, err)
	}
	for _, ns := range c.Namespaces {
		if slices.Contains(c.NamespacesExclude, ns) {
			return fmt.Errorf("namespace %q is both watched and excluded", ns)
		}
	}
	if c.DNSService != "" {
		if _, _, err := cache.SplitMetaNamespaceKey(c.DNSService); err != nil || !containsSlash(c.DNSService) {
			return fmt.Errorf("--dns.service %q: want namespace/name", c.DNSService)
		}
	}
	return nil
}

func containsSlash(s string) bool {
	for i := range s {
		if s[i] == '/' {
			return true
		}
	}
	return false
}

// InScope reports whether namespace ns is watched.
func (c Config) InScope(ns string) bool {
	if slices.Contains(c.NamespacesExclude, ns) {
		return false
	}
	return len(c.Namespaces) == 0 || slices.Contains(c.Namespaces, ns)
}

// OwnsShard reports whether this replica probes the Service with this UID. The hash is stable
// across restarts, so a Service stays on its shard.
func (c Config) OwnsShard(uid types.UID) bool {
	if c.TotalShards <= 1 {
		return true
	}
	h := fnv.New32a()
	h.Write([]byte(uid))
	return int(h.Sum32()%uint32(c.TotalShards)) == c.Shard
}

const (
	sliceServiceIndex = "service"
	addressIndex      = "address"
	// podLabelIndex indexes a Pod by each key=value of its labels (selectorPair), so a Service's
	// build reads the Pods of one of its selector's pairs, not every Pod of its namespace.
	podLabelIndex = "label"
)

// serviceAddresses indexes a Service by its ClusterIPs (none for headless and ExternalName).
func serviceAddresses(obj any) ([]string, error) {
	s, ok := obj.(*corev1.Service)
	if !ok || s.Spec.Type == corev1.ServiceTypeExternalName {
		return nil, nil
	}
	var out []string
	for _, ip := range append([]string{s.Spec.ClusterIP}, s.Spec.ClusterIPs...) {
		if a, err := netip.ParseAddr(ip); err == nil {
			out = append(out, a.Unmap().String())
		}
	}
	return out, nil
}

// podAddresses indexes a Pod by its IPs.
func podAddresses(obj any) ([]string, error) {
	p, ok := obj.(*corev1.Pod)
	if !ok {
		return nil, nil
	}
	var out []string
	for _, ip := range append([]corev1.PodIP{{IP: p.Status.PodIP}}, p.Status.PodIPs...) {
		if a, err := netip.ParseAddr(ip.IP); err == nil {
			out = append(out, a.Unmap().String())
		}
	}
	return out, nil
}

// slicePodAddresses indexes an EndpointSlice written by the endpointslice controller by the
// addresses of its endpoints that a Pod backs (targetRef kind Pod): what the controller copied
// from the Pods' status. Slices of anyone else are not indexed: neither hand-written ones nor
// those the mirroring controller copies from hand-written Endpoints (their targetRefs are the
// writer's say-so). Whoever may write EndpointSlices with the controller's label is trusted, as
// the API server's RBAC trusts them (the default roles do not grant it since Kubernetes 1.22).
func slicePodAddresses(obj any) ([]string, error) {
	s, ok := obj.(*discoveryv1.EndpointSlice)
	if !ok || s.Labels[discoveryv1.LabelManagedBy] != endpointSliceController {
		return nil, nil
	}
	var out []string
	for _, e := range s.Endpoints {
		if e.TargetRef == nil || e.TargetRef.Kind != "Pod" {
			continue
		}
		for _, ip := range e.Addresses {
			if a, err := netip.ParseAddr(ip); err == nil && !slices.Contains(out, a.Unmap().String()) {
				out = append(out, a.Unmap().String())
			}
		}
	}
	return out, nil
}

// endpointSliceController is the endpointslice controller's managed-by label value.
const endpointSliceController = "endpointslice-controller.k8s.io"

// Watcher runs the informers and turns their events into Targets for a Sink.
type Watcher struct {
	cfg  Config
	log  *slog.Logger
	sink Sink

	factories []informers.SharedInformerFactory
	services  map[string]corelisters.ServiceLister // by namespace; "" when watching all
	// svcIndexers are the Service informers' indexers, by namespace like services.
	svcIndexers map[string]cache.Indexer
	// selectors finds the Services whose selector a Pod's labels match (kept by the Service
	// handler).
	selectors *selectorIndex
	synced    []cache.InformerSynced
	slices    byIndexer
	// podIndexers are the Pod informers' indexers, by namespace like services: podLabelIndex
	// finds the Pods with a given key=value; podLabels counts them.
	podIndexers map[string]cache.Indexer
	podLabels   labelCounts
	dnsSlices   cache.Indexer
	// workloads index the workload informers' objects by namespace (Config.Workloads).
	workloads []cache.Indexer
	// policies index the NetworkPolicies by namespace, namespaces the namespaces by name
	// (Config.NetworkPolicies).
	policies   []cache.Indexer
	namespaces cache.Indexer
	// addrIndexers index the Services by ClusterIP and the Pods by Pod IP: the addresses the API
	// server allocated or a kubelet reported, which KnownAddress calls in-cluster.
	addrIndexers []cache.Indexer

	queue workqueue.TypedInterface[string]

	mu    sync.Mutex
	known map[string]*Target // by key: what the Sink currently holds
	// noPods holds, by namespace, the keys of known Services with a selector that matches no
	// Pod: any Pod event of their namespace may change them (the nearest Pod, scaled to zero).
	noPods    map[string]map[string]bool
	warned    map[types.UID]uint64
	dnsEps    []Endpoint
	isSynced  atomic.Bool
	lastEvent atomic.Int64 // unix nanos
	// informers are every informer Run starts; lastProgress is when one of them last moved:
	// an event, or a new resourceVersion (the API server's watch bookmarks carry the cluster's
	// current one about every minute, so a live watch moves even when nothing it watches changes).
	informers    []cache.SharedIndexInformer
	lastProgress atomic.Int64 // unix nanos
	stats        Stats
}

// progressEvery is how often Run reads the informers' resourceVersions.
var progressEvery = 10 * time.Second

// Stats are discovery's self-metrics.
type Stats struct {
	Events           atomic.Uint64
	WatchErrors      atomic.Uint64
	AnnotationErrors atomic.Uint64
}

// NewWatcher builds the informers. Nothing runs until Run.
func NewWatcher(client kubernetes.Interface, cfg Config, sink Sink, log *slog.Logger) (*Watcher, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	w := &Watcher{
		cfg: cfg, log: log, sink: sink,
		services:    map[string]corelisters.ServiceLister{},
		svcIndexers: map[string]cache.Indexer{},
		selectors:   newSelectorIndex(),
		noPods:      map[string]map[string]bool{},
		podIndexers: map[string]cache.Indexer{},
		queue:       workqueue.NewTypedWithConfig(workqueue.TypedQueueConfig[string]{Name: "svcprobe_services"}),
		known:       map[string]*Target{},
		warned:      map[types.UID]uint64{},
	}
	namespaces := cfg.Namespaces
	if len(namespaces) == 0 {
		namespaces = []string{metav1.NamespaceAll}
	}
	sliceIndexers := []cache.Indexer{}
	for _, ns := range namespaces {
		// Services get the label selector; slices and Pods cannot be filtered by it.
		svcFactory := informers.NewSharedInformerFactoryWithOptions(client, 0, informers.WithNamespace(ns),
			informers.WithTweakListOptions(func(o *metav1.ListOptions) { o.LabelSelector = cfg.Selector }),
			informers.WithTransform(TrimService))
		restFactory := informers.NewSharedInformerFactoryWithOptions(client, 0, informers.WithNamespace(ns))
		podFactory := restFactory
		if cfg.PodsOnNode != "" {
			podFactory = informers.NewSharedInformerFactoryWithOptions(client, 0, informers.WithNamespace(ns),
				informers.WithTweakListOptions(func(o *metav1.ListOptions) { o.FieldSelector = "spec.nodeName=" + cfg.PodsOnNode }))
			w.factories = append(w.factories, podFactory)
		}
		svcInf := svcFactory.Core().V1().Services()
		podInf := podFactory.Core().V1().Pods()
		sliceInf := restFactory.Discovery().V1().EndpointSlices()
		// Per-informer transforms: the factory-wide one would apply to all kinds.
		if err := podInf.Informer().SetTransform(TrimPod); err != nil {
			return nil, fmt.Errorf("pod transform: %w", err)
		}
		if err := sliceInf.Informer().SetTransform(TrimEndpointSlice); err != nil {
			return nil, fmt.Errorf("endpointslice transform: %w", err)
		}
		if err := sliceInf.Informer().AddIndexers(cache.Indexers{sliceServiceIndex: sliceService}); err != nil {
			return nil, fmt.Errorf("endpointslice index: %w", err)
		}
		if err := svcInf.Informer().AddIndexers(cache.Indexers{addressIndex: serviceAddresses}); err != nil {
			return nil, fmt.Errorf("service address index: %w", err)
		}
		if err := podInf.Informer().AddIndexers(cache.Indexers{addressIndex: podAddresses, podLabelIndex: podLabelPairs}); err != nil {
			return nil, fmt.Errorf("pod address index: %w", err)
		}
		w.addrIndexers = append(w.addrIndexers, svcInf.Informer().GetIndexer(), podInf.Informer().GetIndexer())
		if cfg.PodsOnNode != "" {
			// The Pods of other nodes are not watched: their addresses are known from the
			// EndpointSlices that name them (an endpoint with a Pod targetRef).
			if err := sliceInf.Informer().AddIndexers(cache.Indexers{addressIndex: slicePodAddresses}); err != nil {
				return nil, fmt.Errorf("endpointslice address index: %w", err)
			}
			w.addrIndexers = append(w.addrIndexers, sliceInf.Informer().GetIndexer())
		}
		for name, inf := range map[string]cache.SharedIndexInformer{"services": svcInf.Informer(), "pods": podInf.Informer(), "endpointslices": sliceInf.Informer()} {
			if err := inf.SetWatchErrorHandlerWithContext(w.watchError(name)); err != nil {
				return nil, err
			}
			w.synced = append(w.synced, inf.HasSynced)
			w.informers = append(w.informers, inf)
		}
		// Their handlers, synced once they have seen every object of the initial lists, not only
		// when the stores hold them: the Services are queued, and podLabels counts every Pod.
		for inf, h := range map[cache.SharedIndexInformer]cache.ResourceEventHandler{
			svcInf.Informer(): w.serviceHandler(), sliceInf.Informer(): w.handler(w.sliceKeys), podInf.Informer(): w.podHandler(),
		} {
			reg, err := inf.AddEventHandler(h)
			if err != nil {
				return nil, err
			}
			w.synced = append(w.synced, reg.HasSynced)
		}
		if cfg.Workloads {
			for name, inf := range workloadInformers(restFactory) {
				if err := w.addTrimmedInformer(name, inf, TrimWorkload, w.workloadHandler()); err != nil {
					return nil, err
				}
				w.workloads = append(w.workloads, inf.GetIndexer())
			}
		}
		if cfg.NetworkPolicies {
			if err := w.addPolicyInformer(restFactory); err != nil {
				return nil, fmt.Errorf("networkpolicy informer: %w", err)
			}
		}
		w.services[ns] = svcInf.Lister()
		w.svcIndexers[ns] = svcInf.Informer().GetIndexer()
		w.podIndexers[ns] = podInf.Informer().GetIndexer()
		sliceIndexers = append(sliceIndexers, sliceInf.Informer().GetIndexer())
		w.factories = append(w.factories, svcFactory, restFactory)
	}
	w.slices = multiIndexer(sliceIndexers)
	if cfg.NetworkPolicies {
		f := informers.NewSharedInformerFactory(client, 0)
		if err := w.addNamespaceInformer(f); err != nil {
			return nil, fmt.Errorf("namespace informer: %w", err)
		}
		w.factories = append(w.factories, f)
	}
	if cfg.DNSService != "" {
		ns, name, _ := cache.SplitMetaNamespaceKey(cfg.DNSService)
		f := informers.NewSharedInformerFactoryWithOptions(client, 0, informers.WithNamespace(ns),
			informers.WithTweakListOptions(func(o *metav1.ListOptions) {
				o.LabelSelector = discoveryv1.LabelServiceName + "=" + name
			}), informers.WithTransform(TrimEndpointSlice))
		inf := f.Discovery().V1().EndpointSlices().Informer()
		if err := inf.SetWatchErrorHandlerWithContext(w.watchError("dns-endpointslices")); err != nil {
			return nil, err
		}
		if _, err := inf.AddEventHandler(w.handler(func(any) []string { return []string{dnsKey} })); err != nil {
			return nil, err
		}
		w.synced = append(w.synced, inf.HasSynced)
		w.informers = append(w.informers, inf)
		w.dnsSlices = inf.GetIndexer()
		w.factories = append(w.factories, f)
	}
	return w, nil
}

// addTrimmedInformer sets up one of the optional informers (workloads, NetworkPolicies,
// namespaces): its transform, its watch errors counted under resource, its event handler, and its
// sync among those Run waits for.
func (w *Watcher) addTrimmedInformer(resource string, inf cache.SharedIndexInformer, trim cache.TransformFunc, h cache.ResourceEventHandler) error {
	if err := inf.SetTransform(trim); err != nil {
		return fmt.Errorf("%s transform: %w", resource, err)
	}
	if err := inf.SetWatchErrorHandlerWithContext(w.watchError(resource)); err != nil {
		return err
	}
	if _, err := inf.AddEventHandler(h); err != nil {
		return err
	}
	w.synced = append(w.synced, inf.HasSynced)
	w.informers = append(w.informers, inf)
	return nil
}

// dnsKey is a queue key no Service can have (names cannot contain '@').
const dnsKey = "@cluster-dns"

type byIndexer interface {
	ByIndex(name, value string) ([]any, error)
}

// multiIndexer is enough of an indexer for ByIndex over one indexer per namespace.
type multiIndexer []cache.Indexer

func (m multiIndexer) ByIndex(name, value string) ([]any, error) {
	var out []any
	for _, i := range m {
		objs, err := i.ByIndex(name, value)
		if err != nil {
			return nil, err
		}
		out = append(out, objs...)
	}
	return out, nil
}

func sliceService(obj any) ([]string, error) {
	s, ok := obj.(*discoveryv1.EndpointSlice)
	if !ok {
		return nil, nil
	}
	name := s.Labels[discoveryv1.LabelServiceName]
	if name == "" {
		return nil, nil
	}
	return []string{s.Namespace + "/" + name}, nil
}

func (w *Watcher) watchError(resource string) cache.WatchErrorHandlerWithContext {
	return func(ctx context.Context, r *cache.Reflector, err error) {
		w.stats.WatchErrors.Add(1)
		cache.DefaultWatchErrorHandler(ctx, r, err) // logs through klog, with backoff handled by the reflector
		w.log.Warn("watch failed; the informer retries and keeps the last known state", "resource", resource, "err", err)
	}
}

func (w *Watcher) handler(keys func(any) []string) cache.ResourceEventHandler {
	enqueue := func(obj any) {
		if d, ok := obj.(cache.DeletedFinalStateUnknown); ok {
			obj = d.Obj
		}
		w.touched()
		for _, k := range keys(obj) {
			w.queue.Add(k)
		}
	}
	return cache.ResourceEventHandlerFuncs{
		AddFunc:    enqueue,
		UpdateFunc: func(_, n any) { enqueue(n) },
		DeleteFunc: enqueue,
	}
}

func (w *Watcher) touched() {
	w.stats.Events.Add(1)
	now := time.Now().UnixNano()
	w.lastEvent.Store(now)
	w.lastProgress.Store(now)
}

// watchProgress notes, every progressEvery until ctx ends, whether any informer's last synced
// resourceVersion moved since the last look.
func (w *Watcher) watchProgress(ctx context.Context) {
	seen := make([]string, len(w.informers))
	t := time.NewTicker(progressEvery)
	defer t.Stop()
	for {
		moved := false
		for i, inf := range w.informers {
			if rv := inf.LastSyncResourceVersion(); rv != seen[i] {
				seen[i], moved = rv, true
			}
		}
		if moved {
			w.lastProgress.Store(time.Now().UnixNano())
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// serviceHandler queues the Service of each event, after filing it in the selector index.
func (w *Watcher) serviceHandler() cache.ResourceEventHandler {
	h := w.handler(w.serviceKeys)
	return cache.ResourceEventHandlerFuncs{
		AddFunc:    func(o any) { w.selectors.follow(o, false); h.OnAdd(o, false) },
		UpdateFunc: func(o, n any) { w.selectors.follow(n, false); h.OnUpdate(o, n) },
		DeleteFunc: func(o any) { w.selectors.follow(o, true); h.OnDelete(o) },
	}
}

func (w *Watcher) serviceKeys(obj any) []string {
	s, ok := obj.(*corev1.Service)
	if !ok {
		return nil
	}
	return []string{s.Namespace + "/" + s.Name}
}

func (w *Watcher) sliceKeys(obj any) []string {
	keys, _ := sliceService(obj)
	return keys
}

// podHandler enqueues the Services whose selector matches the Pod before or after the change, and
// the Services that select no Pod at all (their nearest-Pod hint may change). Matching here keeps
// a Pod event from rebuilding every Service of a large namespace.
func (w *Watcher) podHandler() cache.ResourceEventHandler {
	enqueue := func(pods ...any) {
		w.touched()
		var ns string
		var sets []labels.Set
		for _, obj := range pods {
			if d, ok := obj.(cache.DeletedFinalStateUnknown); ok {
				obj = d.Obj
			}
			if p, ok := obj.(*corev1.Pod); ok {
				ns = p.Namespace
				sets = append(sets, labels.Set(p.Labels))
				if len(w.policies) > 0 {
					if addrs, _ := podAddresses(p); slices.ContainsFunc(addrs, func(a string) bool {
						ip, err := netip.ParseAddr(a)
						return err == nil && w.selfAddr(ip)
					}) {
						w.requeueAll() // the exporter's own labels are the source the policies match
					}
				}
			}
		}
		if len(sets) == 0 {
			return
		}
		w.enqueueSelecting(ns, sets, func(hit bool, known *Target) bool {
			return hit || (known != nil && len(known.Pods) == 0)
		})
	}
	// The label counts follow every event, before the Services it re-queues are built again.
	h := beforeAndAfter(enqueue)
	return cache.ResourceEventHandlerFuncs{
		AddFunc:    func(o any) { w.podLabels.change(nil, o); h.OnAdd(o, false) },
		UpdateFunc: func(o, n any) { w.podLabels.change(o, n); h.OnUpdate(o, n) },
		DeleteFunc: func(o any) { w.podLabels.change(o, nil); h.OnDelete(o) },
	}
}

// beforeAndAfter calls enqueue with the object of an add or delete, and with both the old and the
// new object of an update (a selector may match either), skipping resyncs.
func beforeAndAfter(enqueue func(objs ...any)) cache.ResourceEventHandler {
	return cache.ResourceEventHandlerFuncs{
		AddFunc: func(o any) { enqueue(o) },
		UpdateFunc: func(o, n any) {
			if !resync(o, n) {
				enqueue(o, n)
			}
		},
		DeleteFunc: func(o any) { enqueue(o) },
	}
}

// enqueueSelecting re-queues the Services of ns that have a selector and for which want holds:
// hit says whether their selector matches one of sets, known is what the Sink holds for them
// (nil when nothing). It looks only at the Services whose selector matches one of sets (the
// selector index: each Service filed under one of its key=values) and at those that match no Pod
// now (noPods): a Pod event costs the Services it can change, not every Service of its namespace
// nor every Service sharing one key=value with it.
func (w *Watcher) enqueueSelecting(ns string, sets []labels.Set, want func(hit bool, known *Target) bool) {
	for _, key := range w.selecting(ns, sets, want) {
		w.queue.Add(key)
	}
}

// selecting returns the keys enqueueSelecting re-queues.
func (w *Watcher) selecting(ns string, sets []labels.Set, want func(hit bool, known *Target) bool) []string {
	hits := w.selectors.matching(ns, sets)
	var keys []string
	w.mu.Lock()
	defer w.mu.Unlock()
	for key := range hits {
		if want(true, w.known[key]) {
			keys = append(keys, key)
		}
	}
	for key := range w.noPods[ns] { // Services with a selector, all of them
		if !hits[key] && want(false, w.known[key]) {
			keys = append(keys, key)
		}
	}
	return keys
}

// selectorPair is the selectorIndex key of one key=value of a selector in ns.
func selectorPair(ns, k, v string) string { return ns + "/" + k + "=" + v }

func (w *Watcher) serviceIndexer(ns string) cache.Indexer {
	if i, ok := w.svcIndexers[metav1.NamespaceAll]; ok {
		return i
	}
	return w.svcIndexers[ns]
}

// resync reports whether an update event is a resync: the same resourceVersion before and after.
func resync(o, n any) bool {
	om, ok1 := o.(metav1.Object)
	nm, ok2 := n.(metav1.Object)
	return ok1 && ok2 && om.GetResourceVersion() == nm.GetResourceVersion()
}

func (w *Watcher) serviceLister(ns string) corelisters.ServiceLister {
	if l, ok := w.services[metav1.NamespaceAll]; ok {
		return l
	}
	return w.services[ns]
}

func (w *Watcher) podIndexer(ns string) cache.Indexer {
	if i, ok := w.podIndexers[metav1.NamespaceAll]; ok {
		return i
	}
	return w.podIndexers[ns]
}

// Run starts the informers, waits for their caches and processes events until ctx ends. Services
// are built once the caches have synced, not while they fill: a Service built before its Pods are
// listed would be pushed as selecting no Pod, and then every Pod of its namespace listed after it
// would re-queue it (and every other such Service, see noPods). Synced holds once the Services
// the initial lists queued are built and pushed to the Sink.
func (w *Watcher) Run(ctx context.Context) error {
	for _, f := range w.factories {
		f.Start(ctx.Done())
	}
	defer func() {
		w.queue.ShutDown()
		for _, f := range w.factories {
			f.Shutdown()
		}
	}()
	if !cache.WaitForCacheSync(ctx.Done(), w.synced...) {
		return fmt.Errorf("informer caches did not sync: %w", errors.Join(ctx.Err(), context.Cause(ctx)))
	}
	for n := w.queue.Len(); n > 0 && ctx.Err() == nil; n-- {
		w.processNext() // the only consumer yet: Get does not wait
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for w.processNext() {
		}
	}()
	w.isSynced.Store(true)
	w.log.Info("discovery synced", "namespaces", w.cfg.Namespaces, "shard", w.cfg.Shard, "total_shards", w.cfg.TotalShards)
	progressDone := make(chan struct{})
	go func() { defer close(progressDone); w.watchProgress(ctx) }()
	<-ctx.Done()
	w.queue.ShutDown()
	<-done
	<-progressDone
	return nil
}

func (w *Watcher) processNext() bool {
	key, quit := w.queue.Get()
	if quit {
		return false
	}
	defer w.queue.Done(key)
	if key == dnsKey {
		w.syncDNS()
		return true
	}
	w.sync(key)
	return true
}

func (w *Watcher) sync(key string) {
	ns, name, err := cache.SplitMetaNamespaceKey(key)
	if err != nil {
		return
	}
	var t *Target
	if w.cfg.InScope(ns) {
		svc, err := w.serviceLister(ns).Services(ns).Get(name)
		if err == nil && w.cfg.OwnsShard(svc.UID) {
			t = w.build(svc)
		}
	}
	w.mu.Lock()
	old := w.known[key]
	if t != nil && !t.Options.Skip && len(t.Selector) > 0 && len(t.Pods) == 0 && w.cfg.PodsOnNode == "" {
		if w.noPods[ns] == nil {
			w.noPods[ns] = map[string]bool{}
		}
		w.noPods[ns][key] = true
	} else if w.noPods[ns] != nil {
		delete(w.noPods[ns], key)
		if len(w.noPods[ns]) == 0 {
			delete(w.noPods, ns)
		}
	}
	switch {
	case t == nil || t.Options.Skip:
		delete(w.known, key)
	case old != nil && old.UID == t.UID && old.Version == t.Version:
		w.mu.Unlock()
		return
	default:
		w.known[key] = t
	}
	w.mu.Unlock()
	if old != nil && (t == nil || t.Options.Skip || old.UID != t.UID) {
		w.sink.Delete(old.UID, key)
	}
	if t != nil && !t.Options.Skip {
		w.sink.Upsert(t)
	}
}

func (w *Watcher) build(svc *corev1.Service) *Target {
	objs, _ := w.slices.ByIndex(sliceServiceIndex, svc.Namespace+"/"+svc.Name)
	slices := make([]*discoveryv1.EndpointSlice, 0, len(objs))
	for _, o := range objs {
		if s, ok := o.(*discoveryv1.EndpointSlice); ok {
			slices = append(slices, s)
		}
	}
	t := buildTarget(svc, slices, w.podsOf(svc.Namespace))
	// What the optional informers add to the target enters its version too: hash once more,
	// after both.
	rehash := false
	if w.cfg.PodsOnNode != "" {
		t.PodsOnNode, rehash = w.cfg.PodsOnNode, true
	}
	if len(t.Selector) > 0 && len(t.Pods) == 0 && len(w.workloads) > 0 {
		t.Workloads = w.workloadsFor(svc.Namespace, t.Selector)
		rehash = true
	}
	if len(w.policies) > 0 {
		w.applyPolicies(t)
		rehash = true
	}
	if rehash {
		t.Version = t.hash()
	}
	if len(t.AnnotationErrors) > 0 {
		w.mu.Lock()
		// Log once per distinct set of annotations, not on every event.
		if w.warned[t.UID] != annotationsHash(svc.Annotations) {
			w.warned[t.UID] = annotationsHash(svc.Annotations)
			w.stats.AnnotationErrors.Add(uint64(len(t.AnnotationErrors)))
			w.log.Warn("malformed svcprobe.io annotations; probing with defaults for them", "service", t.Key(), "err", errors.Join(t.AnnotationErrors...))
		}
		w.mu.Unlock()
	}
	return t
}

func annotationsHash(m map[string]string) uint64 {
	h := fnv.New64a()
	fmt.Fprintf(h, "%v", m)
	return h.Sum64()
}

func (w *Watcher) syncDNS() {
	var slices []*discoveryv1.EndpointSlice
	for _, o := range w.dnsSlices.List() {
		if s, ok := o.(*discoveryv1.EndpointSlice); ok {
			slices = append(slices, s)
		}
	}
	eps := endpointsOf(slices)
	w.mu.Lock()
	w.dnsEps = eps
	w.mu.Unlock()
}

// DNSEndpoints returns the endpoints of the cluster DNS Service (each DNS Pod).
func (w *Watcher) DNSEndpoints() []Endpoint {
	w.mu.Lock()
	defer w.mu.Unlock()
	return slices.Clone(w.dnsEps)
}

// DNSServiceIPs returns the ClusterIPs of the cluster DNS Service (--dns.service), or nil when it
// is not configured, not in a watched namespace or not (yet) known: the nameserver a Pod's
// resolv.conf names is then not taken for it.
func (w *Watcher) DNSServiceIPs() []netip.Addr {
	if w.cfg.DNSService == "" {
		return nil
	}
	ns, name, _ := cache.SplitMetaNamespaceKey(w.cfg.DNSService)
	if !w.cfg.InScope(ns) {
		return nil
	}
	svc, err := w.serviceLister(ns).Services(ns).Get(name)
	if err != nil {
		return nil
	}
	return ClusterIPsOf(svc)
}

// ClusterIPsOf returns a Service's ClusterIPs (spec.clusterIPs, or spec.clusterIP on an object
// written before dual-stack), parsed; "None" and malformed values are left out.
func ClusterIPsOf(svc *corev1.Service) []netip.Addr {
	ips := svc.Spec.ClusterIPs
	if len(ips) == 0 && svc.Spec.ClusterIP != "" {
		ips = []string{svc.Spec.ClusterIP}
	}
	var out []netip.Addr
	for _, s := range ips {
		if a, err := netip.ParseAddr(s); err == nil {
			out = append(out, a.Unmap())
		}
	}
	return out
}

// Exists reports whether the Service ns/name exists, whatever the shard and opt-out say.
// ok is false when the namespace is not watched at all, so the answer would be a guess.
func (w *Watcher) Exists(ns, name string) (exists, ok bool) {
	if !w.cfg.InScope(ns) {
		return false, false
	}
	_, err := w.serviceLister(ns).Services(ns).Get(name)
	return err == nil, true
}

// KnownAddress reports whether a is a ClusterIP of a watched Service or an IP of a watched Pod:
// an address the API server allocated or a kubelet reported, hence inside the cluster. EndpointSlice
// addresses are not consulted: anyone who may write a slice could name any address there.
func (w *Watcher) KnownAddress(a netip.Addr) bool {
	key := a.Unmap().WithZone("").String()
	for _, idx := range w.addrIndexers {
		if objs, err := idx.ByIndex(addressIndex, key); err == nil && len(objs) > 0 {
			return true
		}
	}
	return false
}

// Synced reports whether the informer caches have synced once.
func (w *Watcher) Synced() bool { return w.isSynced.Load() }

// LastEvent is when the last informer event arrived (zero before any).
func (w *Watcher) LastEvent() time.Time {
	n := w.lastEvent.Load()
	if n == 0 {
		return time.Time{}
	}
	return time.Unix(0, n)
}

// LastProgress is when discovery last saw its watches move (an event, or a new resourceVersion,
// which the API server's bookmarks bring about every minute on a live watch); zero before sync.
// Long ago while the API server answers: the watches are stuck and the targets stale.
func (w *Watcher) LastProgress() time.Time {
	n := w.lastProgress.Load()
	if n == 0 {
		return time.Time{}
	}
	return time.Unix(0, n)
}

// Stats returns discovery's counters.
func (w *Watcher) Stats() *Stats { return &w.stats }

// Targets returns how many Services the Sink currently holds.
func (w *Watcher) Targets() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return len(w.known)
}

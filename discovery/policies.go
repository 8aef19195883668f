package discovery

import (
	"net/netip"
	"strings"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/tools/cache"

	"github.com/svcprobe/svcprobe/netpol"
)

// TrimNetworkPolicy drops managedFields, annotations and status: the spec is what is evaluated.
func TrimNetworkPolicy(obj any) (any, error) {
	p, ok := obj.(*networkingv1.NetworkPolicy)
	if !ok {
		return obj, nil
	}
	return &networkingv1.NetworkPolicy{ObjectMeta: trimMeta(p.ObjectMeta, nil), Spec: p.Spec}, nil
}

// TrimNamespace keeps a namespace's name and labels (namespaceSelector matches them).
func TrimNamespace(obj any) (any, error) {
	n, ok := obj.(*corev1.Namespace)
	if !ok {
		return obj, nil
	}
	return &corev1.Namespace{ObjectMeta: trimMeta(n.ObjectMeta, n.Labels)}, nil
}

// addPolicyInformer adds the NetworkPolicy informer of one namespace scope ("" for all) to w.
func (w *Watcher) addPolicyInformer(f informers.SharedInformerFactory) error {
	inf := f.Networking().V1().NetworkPolicies().Informer()
	if err := w.addTrimmedInformer("networkpolicies", inf, TrimNetworkPolicy, w.policyHandler()); err != nil {
		return err
	}
	w.policies = append(w.policies, inf.GetIndexer())
	return nil
}

// addNamespaceInformer watches the namespaces' labels (the exporter's own is the source that
// namespaceSelectors match).
func (w *Watcher) addNamespaceInformer(f informers.SharedInformerFactory) error {
	inf := f.Core().V1().Namespaces().Informer()
	if err := w.addTrimmedInformer("namespaces", inf, TrimNamespace, cache.ResourceEventHandlerFuncs{
		AddFunc:    func(any) { w.requeueAll() },
		UpdateFunc: func(o, n any) { w.requeueAll() },
		DeleteFunc: func(any) { w.requeueAll() },
	}); err != nil {
		return err
	}
	w.namespaces = inf.GetIndexer()
	return nil
}

// policyHandler re-queues the Services of a policy's namespace when it changes.
func (w *Watcher) policyHandler() cache.ResourceEventHandler {
	enqueue := func(obj any) {
		w.touched()
		ns := namespaceOf(obj)
		w.mu.Lock()
		keys := make([]string, 0)
		for k, t := range w.known {
			if t.Namespace == ns {
				keys = append(keys, k)
			}
		}
		w.mu.Unlock()
		for _, k := range keys {
			w.queue.Add(k)
		}
	}
	return cache.ResourceEventHandlerFuncs{
		AddFunc: enqueue,
		UpdateFunc: func(o, n any) {
			if !resync(o, n) {
				enqueue(n)
			}
		},
		DeleteFunc: enqueue,
	}
}

// requeueAll re-queues every known Service (the exporter's own labels or namespace changed).
func (w *Watcher) requeueAll() {
	if !w.isSynced.Load() {
		return // the initial sync builds every Service anyway
	}
	w.mu.Lock()
	keys := make([]string, 0, len(w.known))
	for k := range w.known {
		keys = append(keys, k)
	}
	w.mu.Unlock()
	for _, k := range keys {
		w.queue.Add(k)
	}
}

// self finds the exporter's own Pod by its address (Config.SelfIPs) in the Pod informers, and its
// namespace's labels: the source the policies are evaluated for. ok is false when it is not known
// (outside a Pod, or its namespace not watched): policies are then not evaluated.
func (w *Watcher) self() (netpol.Peer, bool) {
	for _, ip := range w.cfg.SelfIPs {
		key := ip.Unmap().WithZone("").String()
		for _, idx := range w.addrIndexers {
			objs, _ := idx.ByIndex(addressIndex, key)
			for _, o := range objs {
				p, ok := o.(*corev1.Pod)
				if !ok {
					continue
				}
				var nsLabels map[string]string
				if w.namespaces != nil {
					if o, ok, _ := w.namespaces.GetByKey(p.Namespace); ok {
						if n, ok := o.(*corev1.Namespace); ok {
							nsLabels = n.Labels
						}
					}
				}
				return PolicyPeer(p, ip, nsLabels), true
			}
		}
	}
	return netpol.Peer{}, false
}

// applyPolicies marks, on each ready endpoint backed by a Pod of t, the Service ports on which the
// namespace's NetworkPolicies deny ingress from the exporter (Endpoint.Denied).
func (w *Watcher) applyPolicies(t *Target) {
	if len(w.policies) == 0 || len(t.Endpoints) == 0 {
		return
	}
	var pols []*networkingv1.NetworkPolicy
	for _, idx := range w.policies {
		objs, _ := idx.ByIndex(cache.NamespaceIndex, t.Namespace)
		for _, o := range objs {
			if p, ok := o.(*networkingv1.NetworkPolicy); ok {
				pols = append(pols, p)
			}
		}
	}
	if len(pols) == 0 {
		return
	}
	src, ok := w.self()
	if !ok {
		return
	}
	MarkDenied(t, pols, src)
}

// PolicyPeer is what a Pod with address ip is as a source to NetworkPolicy: its namespace (and
// that namespace's labels, nsLabels; nil: only the name label the API server sets on every
// namespace) and its labels. A host-network Pod (a node agent with hostNetwork: true) is not a
// Pod of the Pod network to NetworkPolicy: only ipBlock peers match its (node) address.
func PolicyPeer(p *corev1.Pod, ip netip.Addr, nsLabels map[string]string) netpol.Peer {
	peer := netpol.Peer{Namespace: p.Namespace, Pod: !p.Spec.HostNetwork, PodLabels: p.Labels, IP: ip.Unmap(), NamespaceLabels: nsLabels}
	if peer.NamespaceLabels == nil {
		peer.NamespaceLabels = map[string]string{corev1.LabelMetadataName: p.Namespace}
	}
	return peer
}

// MarkDenied marks, on each ready endpoint backed by a Pod of t, the Service ports on which pols
// (the NetworkPolicies of t's namespace) deny ingress from src (Endpoint.Denied). The watcher and
// `svcprobe diagnose` share it.
func MarkDenied(t *Target, pols []*networkingv1.NetworkPolicy, src netpol.Peer) {
	pods := make(map[string]Pod, len(t.Pods))
	for _, p := range t.Pods {
		pods[p.Name] = p
	}
	labelFree := !netpol.DependsOnTarget(pols)
	for i := range t.Endpoints {
		ep := &t.Endpoints[i]
		if len(ep.Addresses) == 0 {
			continue
		}
		pod, ok := pods[ep.PodName]
		if !ok {
			// A node agent does not watch the Pods of other nodes (t.PodsOnNode): their labels
			// and container ports are unknown. Policies that depend on neither decide the same
			// for any Pod; otherwise the answer is not known and the endpoint is not dialed.
			if t.PodsOnNode == "" || ep.PodName == "" || ep.NodeName == t.PodsOnNode {
				continue
			}
			if !labelFree {
				ep.PolicyNotEvaluated = true
				continue
			}
		}
		dst := netpol.Peer{Namespace: t.Namespace, Pod: true, PodLabels: pod.Labels, IP: ep.Addresses[0]}
		for _, sp := range t.Ports {
			n, ok := ep.EndpointPort(sp)
			if !ok {
				continue
			}
			port := netpol.Port{Number: n, Protocol: corev1.Protocol(sp.Protocol)}
			for _, cp := range pod.Ports {
				if cp.Port == n && cp.Protocol == sp.Protocol {
					port.Name = cp.Name
				}
			}
			d, _ := netpol.Ingress(pols, dst, port, src)
			if !d.Allowed {
				if ep.Denied == nil {
					ep.Denied = map[string]string{}
				}
				ep.Denied[PortKey(sp)] = strings.Join(d.Policies, ", ")
			}
		}
	}
}

// selfAddr reports whether a is one of the exporter's own addresses.
func (w *Watcher) selfAddr(a netip.Addr) bool {
	for _, s := range w.cfg.SelfIPs {
		if s.Unmap() == a.Unmap() {
			return true
		}
	}
	return false
}

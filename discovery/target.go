package discovery

import (
	"fmt"
	"net/netip"
	"sort"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	"k8s.io/apimachinery/pkg/labels"
)

// BuildTarget turns a Service, its EndpointSlices and the Pods of its namespace into a Target.
// It is pure, so the informer plumbing and the model can be tested apart. The watcher builds the
// same Target from its Pod index instead of a list (buildTarget with indexedPods).
func BuildTarget(svc *corev1.Service, slices []*discoveryv1.EndpointSlice, nsPods []*corev1.Pod) *Target {
	return buildTarget(svc, slices, podList(nsPods))
}

// podSource gives buildTarget what it needs of the Pods of a Service's namespace. It is not asked
// for a Service without a selector.
type podSource interface {
	// selecting returns at least every Pod the selector sel matches (buildTarget checks sel on
	// each Pod).
	selecting(sel map[string]string) []*corev1.Pod
	// nearest returns, when no Pod matches, the nearest Pod to sel (see nearestPod), or nil.
	nearest(sel map[string]string, matches labels.Selector) *corev1.Pod
}

// podList is every Pod of the namespace, for BuildTarget.
type podList []*corev1.Pod

func (l podList) selecting(map[string]string) []*corev1.Pod { return l }

func (l podList) nearest(sel map[string]string, matches labels.Selector) *corev1.Pod {
	var n nearestPod
	for _, p := range l {
		n.consider(sel, matches, p)
	}
	return n.pod
}

// nearestPod finds the nearest Pod to a selector that matches no Pod: of the Pods not being
// deleted (and not matched), the one whose labels agree most with the selector, the first by name
// among equals; none when no Pod agrees at all. The order Pods are considered in does not matter,
// nor considering one twice.
type nearestPod struct {
	pod   *corev1.Pod
	score int
}

func (n *nearestPod) consider(sel map[string]string, matches labels.Selector, p *corev1.Pod) {
	if p == nil || p.DeletionTimestamp != nil || matches.Matches(labels.Set(p.Labels)) {
		return
	}
	if s := agreement(sel, p.Labels); s > n.score || (s == n.score && n.pod != nil && p.Name < n.pod.Name) {
		n.pod, n.score = p, s
	}
}

func buildTarget(svc *corev1.Service, slices []*discoveryv1.EndpointSlice, pods podSource) *Target {
	t := &Target{
		UID:                      svc.UID,
		Namespace:                svc.Namespace,
		Name:                     svc.Name,
		Kind:                     kindOf(svc),
		ExternalName:             svc.Spec.ExternalName,
		PublishNotReadyAddresses: svc.Spec.PublishNotReadyAddresses,
		InternalTrafficLocal:     svc.Spec.InternalTrafficPolicy != nil && *svc.Spec.InternalTrafficPolicy == corev1.ServiceInternalTrafficPolicyLocal,
		ExternalTrafficLocal:     svc.Spec.ExternalTrafficPolicy == corev1.ServiceExternalTrafficPolicyLocal,
		HealthCheckNodePort:      svc.Spec.HealthCheckNodePort,
	}
	t.Options, t.AnnotationErrors = ParseAnnotations(svc.Annotations)
	if t.Kind != KindHeadless && t.Kind != KindExternalName {
		ips := svc.Spec.ClusterIPs
		if len(ips) == 0 && svc.Spec.ClusterIP != "" {
			ips = []string{svc.Spec.ClusterIP}
		}
		for _, s := range ips {
			if a, err := netip.ParseAddr(s); err == nil {
				t.ClusterIPs = append(t.ClusterIPs, a)
			}
		}
	}
	if t.Kind == KindLoadBalancer {
		for _, in := range svc.Status.LoadBalancer.Ingress {
			if in.IPMode != nil && *in.IPMode != corev1.LoadBalancerIPModeVIP {
				continue
			}
			if a, err := netip.ParseAddr(in.IP); err == nil {
				t.LoadBalancerIPs = append(t.LoadBalancerIPs, a.Unmap())
			}
		}
	}
	for _, p := range svc.Spec.Ports {
		t.Ports = append(t.Ports, Port{Name: p.Name, Port: p.Port, TargetPort: p.TargetPort,
			Protocol: Protocol(orTCP(p.Protocol)), NodePort: p.NodePort, AppProtocol: deref(p.AppProtocol)})
	}
	if svc.Spec.Selector != nil {
		t.Selector = svc.Spec.Selector
	}
	t.Endpoints = endpointsOf(slices)
	t.ChangeTriggered = changeTriggered(slices)
	t.Created = svc.CreationTimestamp.Time
	if len(t.Selector) > 0 {
		sel := labels.SelectorFromSet(t.Selector)
		for _, p := range pods.selecting(t.Selector) {
			if p.DeletionTimestamp == nil && sel.Matches(labels.Set(p.Labels)) {
				t.Pods = append(t.Pods, podOf(p))
			}
		}
		sort.Slice(t.Pods, func(i, j int) bool { return t.Pods[i].Name < t.Pods[j].Name })
		if len(t.Pods) == 0 {
			if best := pods.nearest(t.Selector, sel); best != nil {
				np := podOf(best)
				t.NearestPod = &np
			}
		}
	}
	t.Version = t.hash()
	return t
}

// agreement scores how close a Pod's labels are to a selector: for each key=value of the selector,
// one point when the Pod has the key, one more when with that value, and one when any of its
// labels has the value (three for a shared key=value), so "app=hostnames" is closer to
// "run=hostnames" than an unrelated Pod.
func agreement(sel, l map[string]string) int {
	n := 0
	for k, v := range sel {
		if lv, ok := l[k]; ok {
			n++
			if lv == v {
				n++
			}
		}
		for _, lv := range l {
			if lv == v {
				n++
				break
			}
		}
	}
	return n
}

func kindOf(svc *corev1.Service) Kind {
	switch {
	case svc.Spec.Type == corev1.ServiceTypeExternalName:
		return KindExternalName
	case svc.Spec.ClusterIP == corev1.ClusterIPNone:
		return KindHeadless
	case svc.Spec.Type == corev1.ServiceTypeNodePort:
		return KindNodePort
	case svc.Spec.Type == corev1.ServiceTypeLoadBalancer:
		return KindLoadBalancer
	}
	return KindClusterIP
}

func endpointsOf(slices []*discoveryv1.EndpointSlice) []Endpoint {
	sort.Slice(slices, func(i, j int) bool { return slices[i].Name < slices[j].Name })
	var out []Endpoint
	seen := map[string]bool{} // dual-stack: one Pod appears in an IPv4 and an IPv6 slice
	for _, s := range slices {
		if s.AddressType != discoveryv1.AddressTypeIPv4 && s.AddressType != discoveryv1.AddressTypeIPv6 {
			continue // FQDN slices are not probed
		}
		var ports []EndpointPort
		for _, p := range s.Ports {
			ep := EndpointPort{Name: deref(p.Name), Protocol: Protocol(orTCP(derefProto(p.Protocol)))}
			if p.Port != nil {
				ep.Port = *p.Port
			}
			ports = append(ports, ep)
		}
		for _, e := range s.Endpoints {
			ep := Endpoint{
				Ready:       e.Conditions.Ready == nil || *e.Conditions.Ready,
				Serving:     e.Conditions.Serving == nil || *e.Conditions.Serving,
				Terminating: e.Conditions.Terminating != nil && *e.Conditions.Terminating,
				NodeName:    deref(e.NodeName),
				Ports:       ports,
			}
			if e.TargetRef != nil && e.TargetRef.Kind == "Pod" {
				ep.PodName = e.TargetRef.Name
			}
			for _, a := range e.Addresses {
				if ip, err := netip.ParseAddr(a); err == nil {
					ep.Addresses = append(ep.Addresses, ip)
				}
			}
			if len(ep.Addresses) == 0 {
				continue
			}
			key := fmt.Sprint(ep.PodName, ep.Addresses[0], ports)
			if seen[key] {
				continue
			}
			seen[key] = true
			out = append(out, ep)
		}
	}
	return out
}

func podOf(p *corev1.Pod) Pod {
	out := Pod{Name: p.Name, Labels: p.Labels, Node: p.Spec.NodeName}
	ips := p.Status.PodIPs
	if len(ips) == 0 && p.Status.PodIP != "" {
		ips = []corev1.PodIP{{IP: p.Status.PodIP}}
	}
	for _, ip := range ips {
		if a, err := netip.ParseAddr(ip.IP); err == nil {
			out.IPs = append(out.IPs, a)
		}
	}
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodReady {
			out.Ready = c.Status == corev1.ConditionTrue
		}
	}
	for _, c := range p.Spec.Containers {
		for _, cp := range c.Ports {
			out.Ports = append(out.Ports, ContainerPort{Name: cp.Name, Port: cp.ContainerPort, Protocol: Protocol(orTCP(cp.Protocol))})
		}
	}
	return out
}

// hash fingerprints everything the stages read (by content: contentHash), so an unchanged
// Service is not re-probed early.
func (t *Target) hash() uint64 {
	c := *t
	c.Version = 0
	return contentHash(c) // times (ChangeTriggered, Created) are not content: contentHash skips them
}

// changeTriggered is the latest last-change-trigger-time of slices (zero when none has one or
// it does not parse).
func changeTriggered(slices []*discoveryv1.EndpointSlice) time.Time {
	var out time.Time
	for _, s := range slices {
		if v, ok := s.Annotations[corev1.EndpointsLastChangeTriggerTime]; ok {
			if at, err := time.Parse(time.RFC3339Nano, v); err == nil && at.After(out) {
				out = at
			}
		}
	}
	return out
}

func orTCP(p corev1.Protocol) corev1.Protocol {
	if p == "" {
		return corev1.ProtocolTCP
	}
	return p
}

func deref[T any](p *T) T {
	var zero T
	if p == nil {
		return zero
	}
	return *p
}

func derefProto(p *corev1.Protocol) corev1.Protocol { return deref(p) }

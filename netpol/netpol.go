// Package netpol decides whether Kubernetes NetworkPolicies allow a connection, following the
// NetworkPolicy API's semantics (networking.k8s.io/v1): which policies isolate a Pod for ingress
// (policyTypes, with its default), and whether one of their rules admits a source (podSelector,
// namespaceSelector, both, ipBlock with except) on a port (protocol, number, named port, endPort).
// svcprobe asks it for each endpoint it dials: a probe that the cluster's own policy drops is not
// a failure of the Pod.
package netpol

import (
	"fmt"
	"net/netip"
	"sort"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/intstr"
)

// Peer is one end of a connection as NetworkPolicy sees it.
type Peer struct {
	// Namespace and NamespaceLabels are the Pod's namespace and that namespace's labels (as the
	// API server sets them, kubernetes.io/metadata.name included).
	Namespace       string
	NamespaceLabels map[string]string
	// Pod is false for a source that is not a Pod of the Pod network (a host-network Pod, a
	// node): only ipBlock peers can match it, and policies never select it as a target.
	Pod       bool
	PodLabels map[string]string
	IP        netip.Addr
}

// Port is the destination port of a connection on the target Pod.
type Port struct {
	Number int32
	// Name is the target container port's name for Number, when it has one (named ports in a
	// rule match it).
	Name     string
	Protocol corev1.Protocol // "" is TCP
}

// Decision is what the policies say of one connection.
type Decision struct {
	// Isolated: at least one policy selects the target for ingress; without one everything is
	// allowed.
	Isolated bool
	Allowed  bool
	// Policies are "namespace/name" of the policies that isolate the target (sorted); when
	// allowed, Allowing names the first whose rule admitted the connection.
	Policies []string
	Allowing string
}

// Ingress decides whether policies (those of every namespace; only the target's apply) allow a
// connection from source to target on port. Selectors that do not parse match nothing; their
// errors are returned so that the caller can report the policy.
func Ingress(policies []*networkingv1.NetworkPolicy, target Peer, port Port, source Peer) (Decision, []error) {
	var d Decision
	var errs []error
	if !target.Pod {
		d.Allowed = true
		return d, nil
	}
	for _, p := range policies {
		if p.Namespace != target.Namespace || !hasIngress(p) {
			continue
		}
		sel, err := metav1.LabelSelectorAsSelector(&p.Spec.PodSelector)
		if err != nil {
			errs = append(errs, fmt.Errorf("NetworkPolicy %s/%s podSelector: %w", p.Namespace, p.Name, err))
			continue
		}
		if !sel.Matches(labels.Set(target.PodLabels)) {
			continue
		}
		d.Isolated = true
		key := p.Namespace + "/" + p.Name
		d.Policies = append(d.Policies, key)
		for _, rule := range p.Spec.Ingress {
			ok, err := admits(p.Namespace, rule, port, source)
			if err != nil {
				errs = append(errs, fmt.Errorf("NetworkPolicy %s: %w", key, err))
			}
			if ok && !d.Allowed {
				d.Allowed, d.Allowing = true, key
			}
		}
	}
	sort.Strings(d.Policies)
	if !d.Isolated {
		d.Allowed = true
	}
	return d, errs
}

// DependsOnTarget reports whether what policies decide for a target Pod depends on more than its
// namespace and address: one that isolates for ingress selects Pods by labels, or one of its
// ingress rules names a port (resolved against the Pod's container ports). When it does not,
// Ingress decides the same for every Pod of the namespace, whatever its labels and ports.
func DependsOnTarget(policies []*networkingv1.NetworkPolicy) bool {
	for _, p := range policies {
		if !hasIngress(p) {
			continue
		}
		if len(p.Spec.PodSelector.MatchLabels) > 0 || len(p.Spec.PodSelector.MatchExpressions) > 0 {
			return true
		}
		for _, r := range p.Spec.Ingress {
			for _, port := range r.Ports {
				if port.Port != nil && port.Port.Type == intstr.String {
					return true
				}
			}
		}
	}
	return false
}

// hasIngress reports whether the policy isolates the Pods it selects for ingress: policyTypes
// names Ingress, or (unset) always, as the API defaults it.
func hasIngress(p *networkingv1.NetworkPolicy) bool {
	if len(p.Spec.PolicyTypes) == 0 {
		return true
	}
	for _, t := range p.Spec.PolicyTypes {
		if t == networkingv1.PolicyTypeIngress {
			return true
		}
	}
	return false
}

// admits reports whether one ingress rule of a policy in namespace ns admits source on port.
func admits(ns string, rule networkingv1.NetworkPolicyIngressRule, port Port, source Peer) (bool, error) {
	if !portMatches(rule.Ports, port) {
		return false, nil
	}
	if len(rule.From) == 0 {
		return true, nil // no from: every source
	}
	var firstErr error
	for _, peer := range rule.From {
		ok, err := peerMatches(ns, peer, source)
		if err != nil && firstErr == nil {
			firstErr = err
		}
		if ok {
			return true, nil
		}
	}
	return false, firstErr
}

func peerMatches(ns string, peer networkingv1.NetworkPolicyPeer, source Peer) (bool, error) {
	if peer.IPBlock != nil {
		return ipBlockMatches(peer.IPBlock, source.IP)
	}
	if !source.Pod {
		return false, nil // pod and namespace selectors select Pods only
	}
	switch {
	case peer.NamespaceSelector == nil && peer.PodSelector == nil:
		return false, nil // invalid (the API refuses it)
	case peer.NamespaceSelector == nil:
		// podSelector alone: Pods of the policy's own namespace.
		if source.Namespace != ns {
			return false, nil
		}
	default:
		nsSel, err := metav1.LabelSelectorAsSelector(peer.NamespaceSelector)
		if err != nil {
			return false, fmt.Errorf("namespaceSelector: %w", err)
		}
		if !nsSel.Matches(labels.Set(source.NamespaceLabels)) {
			return false, nil
		}
	}
	if peer.PodSelector == nil {
		return true, nil // namespaceSelector alone: every Pod of those namespaces
	}
	podSel, err := metav1.LabelSelectorAsSelector(peer.PodSelector)
	if err != nil {
		return false, fmt.Errorf("podSelector: %w", err)
	}
	return podSel.Matches(labels.Set(source.PodLabels)), nil
}

func ipBlockMatches(b *networkingv1.IPBlock, ip netip.Addr) (bool, error) {
	if !ip.IsValid() {
		return false, nil
	}
	ip = ip.Unmap()
	cidr, err := netip.ParsePrefix(b.CIDR)
	if err != nil {
		return false, fmt.Errorf("ipBlock %q: %w", b.CIDR, err)
	}
	if !cidr.Contains(ip) {
		return false, nil
	}
	for _, e := range b.Except {
		ex, err := netip.ParsePrefix(e)
		if err != nil {
			return false, fmt.Errorf("ipBlock except %q: %w", e, err)
		}
		if ex.Contains(ip) {
			return false, nil
		}
	}
	return true, nil
}

// portMatches reports whether a rule's ports admit port: no ports admits every port; a port entry
// admits its protocol (TCP when unset) and, when it names a port, that number (up to endPort) or
// that container port name.
func portMatches(ports []networkingv1.NetworkPolicyPort, port Port) bool {
	if len(ports) == 0 {
		return true
	}
	proto := port.Protocol
	if proto == "" {
		proto = corev1.ProtocolTCP
	}
	for _, p := range ports {
		pp := corev1.ProtocolTCP
		if p.Protocol != nil && *p.Protocol != "" {
			pp = *p.Protocol
		}
		if pp != proto {
			continue
		}
		switch {
		case p.Port == nil:
			return true
		case p.Port.Type == intstr.String: // a named port
			if port.Name != "" && p.Port.StrVal == port.Name {
				return true
			}
		default:
			lo, hi := p.Port.IntVal, p.Port.IntVal
			if p.EndPort != nil && *p.EndPort >= lo {
				hi = *p.EndPort
			}
			if port.Number >= lo && port.Number <= hi {
				return true
			}
		}
	}
	return false
}

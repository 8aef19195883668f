package netpol

import (
	"net/netip"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/ptr"
)

func policy(ns, name string, sel map[string]string, types []networkingv1.PolicyType, rules ...networkingv1.NetworkPolicyIngressRule) *networkingv1.NetworkPolicy {
	return &networkingv1.NetworkPolicy{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		Spec: networkingv1.NetworkPolicySpec{PodSelector: metav1.LabelSelector{MatchLabels: sel}, PolicyTypes: types, Ingress: rules}}
}

func from(peers ...networkingv1.NetworkPolicyPeer) networkingv1.NetworkPolicyIngressRule {
	return networkingv1.NetworkPolicyIngressRule{From: peers}
}

func onPorts(r networkingv1.NetworkPolicyIngressRule, ports ...networkingv1.NetworkPolicyPort) networkingv1.NetworkPolicyIngressRule {
	r.Ports = ports
	return r
}

func nsSel(l map[string]string) *metav1.LabelSelector  { return &metav1.LabelSelector{MatchLabels: l} }
func podSel(l map[string]string) *metav1.LabelSelector { return &metav1.LabelSelector{MatchLabels: l} }

var (
	ingress = []networkingv1.PolicyType{networkingv1.PolicyTypeIngress}
	egress  = []networkingv1.PolicyType{networkingv1.PolicyTypeEgress}
	all     = map[string]string{}

	// The target: a hostnames Pod in namespace default; the source: svcprobe's Pod in svcprobe.
	target = Peer{Namespace: "default", NamespaceLabels: map[string]string{"kubernetes.io/metadata.name": "default"},
		Pod: true, PodLabels: map[string]string{"app": "hostnames"}, IP: netip.MustParseAddr("198.18.0.10")}
	exporter = Peer{Namespace: "svcprobe", NamespaceLabels: map[string]string{"kubernetes.io/metadata.name": "svcprobe", "team": "sre"},
		Pod: true, PodLabels: map[string]string{"app.kubernetes.io/name": "svcprobe"}, IP: netip.MustParseAddr("198.18.0.13")}
	http = Port{Number: 9376, Name: "http", Protocol: corev1.ProtocolTCP}
)

func TestIngress(t *testing.T) {
	svcprobeNS := map[string]string{"kubernetes.io/metadata.name": "svcprobe"}
	svcprobePod := map[string]string{"app.kubernetes.io/name": "svcprobe"}
	udp := corev1.ProtocolUDP
	for _, c := range []struct {
		name     string
		policies []*networkingv1.NetworkPolicy
		target   Peer
		port     Port
		source   Peer
		isolated bool
		allowed  bool
		allowing string
	}{
		{"no policy: not isolated, allowed", nil, target, http, exporter, false, true, ""},
		{"policy of another namespace does not apply", []*networkingv1.NetworkPolicy{policy("other", "deny", all, ingress)}, target, http, exporter, false, true, ""},
		{"policy selecting other Pods does not apply", []*networkingv1.NetworkPolicy{policy("default", "deny-db", map[string]string{"app": "db"}, ingress)}, target, http, exporter, false, true, ""},
		{"default deny ingress", []*networkingv1.NetworkPolicy{policy("default", "default-deny", all, ingress)}, target, http, exporter, true, false, ""},
		{"egress-only policy does not isolate ingress", []*networkingv1.NetworkPolicy{policy("default", "egress", all, egress)}, target, http, exporter, false, true, ""},
		// policyTypes unset: Ingress always, so a policy with no rule denies all ingress.
		{"policyTypes unset means Ingress", []*networkingv1.NetworkPolicy{policy("default", "no-types", all, nil)}, target, http, exporter, true, false, ""},
		{"default deny plus allow from svcprobe's namespace", []*networkingv1.NetworkPolicy{
			policy("default", "default-deny", all, ingress),
			policy("default", "allow-svcprobe", all, ingress, from(networkingv1.NetworkPolicyPeer{NamespaceSelector: nsSel(svcprobeNS)}))},
			target, http, exporter, true, true, "default/allow-svcprobe"},
		{"empty rule admits every source", []*networkingv1.NetworkPolicy{policy("default", "allow-all", all, ingress, networkingv1.NetworkPolicyIngressRule{})}, target, http, exporter, true, true, "default/allow-all"},
		{"podSelector alone: only the policy's namespace", []*networkingv1.NetworkPolicy{
			policy("default", "same-ns", all, ingress, from(networkingv1.NetworkPolicyPeer{PodSelector: podSel(svcprobePod)}))},
			target, http, exporter, true, false, ""},
		{"namespace and pod selector together: both must match", []*networkingv1.NetworkPolicy{
			policy("default", "ns-and-pod", all, ingress, from(networkingv1.NetworkPolicyPeer{NamespaceSelector: nsSel(svcprobeNS), PodSelector: podSel(map[string]string{"app": "other"})}))},
			target, http, exporter, true, false, ""},
		{"namespace and pod selector together: match", []*networkingv1.NetworkPolicy{
			policy("default", "ns-and-pod", all, ingress, from(networkingv1.NetworkPolicyPeer{NamespaceSelector: nsSel(svcprobeNS), PodSelector: podSel(svcprobePod)}))},
			target, http, exporter, true, true, "default/ns-and-pod"},
		{"empty namespaceSelector: every namespace", []*networkingv1.NetworkPolicy{
			policy("default", "any-ns", all, ingress, from(networkingv1.NetworkPolicyPeer{NamespaceSelector: nsSel(all)}))},
			target, http, exporter, true, true, "default/any-ns"},
		{"matchExpressions on the namespace", []*networkingv1.NetworkPolicy{
			policy("default", "expr", all, ingress, from(networkingv1.NetworkPolicyPeer{NamespaceSelector: &metav1.LabelSelector{
				MatchExpressions: []metav1.LabelSelectorRequirement{{Key: "team", Operator: metav1.LabelSelectorOpIn, Values: []string{"sre", "platform"}}}}}))},
			target, http, exporter, true, true, "default/expr"},
		{"ipBlock admits the source's IP", []*networkingv1.NetworkPolicy{
			policy("default", "cidr", all, ingress, from(networkingv1.NetworkPolicyPeer{IPBlock: &networkingv1.IPBlock{CIDR: "198.18.0.0/24"}}))},
			target, http, exporter, true, true, "default/cidr"},
		{"ipBlock except carves the source out", []*networkingv1.NetworkPolicy{
			policy("default", "cidr-except", all, ingress, from(networkingv1.NetworkPolicyPeer{IPBlock: &networkingv1.IPBlock{CIDR: "198.18.0.0/16", Except: []string{"198.18.0.0/28"}}}))},
			target, http, exporter, true, false, ""},
		{"a host-network source matches ipBlock only", []*networkingv1.NetworkPolicy{
			policy("default", "ns", all, ingress, from(networkingv1.NetworkPolicyPeer{NamespaceSelector: nsSel(all)}))},
			target, http, Peer{IP: netip.MustParseAddr("198.18.0.1")}, true, false, ""},
		{"numbered port admits", []*networkingv1.NetworkPolicy{
			policy("default", "port", all, ingress, onPorts(networkingv1.NetworkPolicyIngressRule{}, networkingv1.NetworkPolicyPort{Port: ptr.To(intstr.FromInt32(9376))}))},
			target, http, exporter, true, true, "default/port"},
		{"other port denies", []*networkingv1.NetworkPolicy{
			policy("default", "port", all, ingress, onPorts(networkingv1.NetworkPolicyIngressRule{}, networkingv1.NetworkPolicyPort{Port: ptr.To(intstr.FromInt32(80))}))},
			target, http, exporter, true, false, ""},
		{"port range with endPort", []*networkingv1.NetworkPolicy{
			policy("default", "range", all, ingress, onPorts(networkingv1.NetworkPolicyIngressRule{}, networkingv1.NetworkPolicyPort{Port: ptr.To(intstr.FromInt32(9000)), EndPort: ptr.To[int32](9999)}))},
			target, http, exporter, true, true, "default/range"},
		{"named port admits the container port of that name", []*networkingv1.NetworkPolicy{
			policy("default", "named", all, ingress, onPorts(networkingv1.NetworkPolicyIngressRule{}, networkingv1.NetworkPolicyPort{Port: ptr.To(intstr.FromString("http"))}))},
			target, http, exporter, true, true, "default/named"},
		{"named port of another name denies", []*networkingv1.NetworkPolicy{
			policy("default", "named", all, ingress, onPorts(networkingv1.NetworkPolicyIngressRule{}, networkingv1.NetworkPolicyPort{Port: ptr.To(intstr.FromString("metrics"))}))},
			target, http, exporter, true, false, ""},
		{"protocol: a UDP rule does not admit TCP", []*networkingv1.NetworkPolicy{
			policy("default", "udp", all, ingress, onPorts(networkingv1.NetworkPolicyIngressRule{}, networkingv1.NetworkPolicyPort{Protocol: &udp}))},
			target, http, exporter, true, false, ""},
		{"protocol only: every port of it", []*networkingv1.NetworkPolicy{
			policy("default", "udp", all, ingress, onPorts(networkingv1.NetworkPolicyIngressRule{}, networkingv1.NetworkPolicyPort{Protocol: &udp}))},
			target, Port{Number: 53, Protocol: corev1.ProtocolUDP}, exporter, true, true, "default/udp"},
		{"a host-network target is never isolated", []*networkingv1.NetworkPolicy{policy("default", "default-deny", all, ingress)},
			Peer{Namespace: "default", IP: netip.MustParseAddr("198.18.0.1")}, http, exporter, false, true, ""},
	} {
		t.Run(c.name, func(t *testing.T) {
			d, errs := Ingress(c.policies, c.target, c.port, c.source)
			if len(errs) > 0 {
				t.Fatalf("errors: %v", errs)
			}
			if d.Isolated != c.isolated || d.Allowed != c.allowed || d.Allowing != c.allowing {
				t.Fatalf("decision %+v, want isolated %v allowed %v allowing %q", d, c.isolated, c.allowed, c.allowing)
			}
			if c.isolated && len(d.Policies) == 0 {
				t.Fatalf("isolated without naming the policies: %+v", d)
			}
		})
	}
}

// The denying decision names every policy that isolates the target, sorted; a selector that does
// not parse matches nothing and is reported.
func TestIngressNamesPoliciesAndReportsBadSelectors(t *testing.T) {
	bad := policy("default", "bad", nil, ingress)
	bad.Spec.PodSelector.MatchExpressions = []metav1.LabelSelectorRequirement{{Key: "app", Operator: "Near"}}
	d, errs := Ingress([]*networkingv1.NetworkPolicy{policy("default", "z-deny", all, ingress), policy("default", "a-deny", all, ingress), bad}, target, http, exporter)
	if d.Allowed || strings.Join(d.Policies, ",") != "default/a-deny,default/z-deny" {
		t.Fatalf("decision %+v, want denied by a-deny and z-deny", d)
	}
	if len(errs) != 1 || !strings.Contains(errs[0].Error(), "default/bad") {
		t.Fatalf("errors %v, want the bad selector of default/bad", errs)
	}
	badCIDR := policy("default", "cidr", all, ingress, from(networkingv1.NetworkPolicyPeer{IPBlock: &networkingv1.IPBlock{CIDR: "198.18.0.0/33"}}))
	if d, errs := Ingress([]*networkingv1.NetworkPolicy{badCIDR}, target, http, exporter); d.Allowed || len(errs) != 1 {
		t.Fatalf("bad CIDR: decision %+v errors %v, want denied and one error", d, errs)
	}
}

// DependsOnTarget: only a policy that isolates for ingress and selects Pods by label, or names a
// port, makes the decision depend on the target Pod; and where it says no, Ingress decides the
// same for Pods of any labels and ports.
func TestDependsOnTarget(t *testing.T) {
	named := onPorts(from(networkingv1.NetworkPolicyPeer{NamespaceSelector: nsSel(all)}), networkingv1.NetworkPolicyPort{Port: ptr.To(intstr.FromString("http"))})
	numbered := onPorts(from(networkingv1.NetworkPolicyPeer{NamespaceSelector: nsSel(all)}), networkingv1.NetworkPolicyPort{Port: ptr.To(intstr.FromInt32(9376))})
	expr := policy("default", "expr", nil, ingress)
	expr.Spec.PodSelector.MatchExpressions = []metav1.LabelSelectorRequirement{{Key: "app", Operator: metav1.LabelSelectorOpExists}}
	for _, c := range []struct {
		name string
		pols []*networkingv1.NetworkPolicy
		want bool
	}{
		{"none", nil, false},
		{"default deny", []*networkingv1.NetworkPolicy{policy("default", "deny", all, ingress)}, false},
		{"default deny, policyTypes unset", []*networkingv1.NetworkPolicy{policy("default", "deny", all, nil)}, false},
		{"allow a namespace's Pods to all", []*networkingv1.NetworkPolicy{policy("default", "deny", all, ingress), policy("default", "allow", all, ingress, from(networkingv1.NetworkPolicyPeer{NamespaceSelector: nsSel(map[string]string{"team": "sre"}), PodSelector: podSel(map[string]string{"app.kubernetes.io/name": "svcprobe"})}))}, false},
		{"numbered port", []*networkingv1.NetworkPolicy{policy("default", "num", all, ingress, numbered)}, false},
		{"selects by label", []*networkingv1.NetworkPolicy{policy("default", "deny", all, ingress), policy("default", "app", map[string]string{"app": "hostnames"}, ingress)}, true},
		{"selects by expression", []*networkingv1.NetworkPolicy{expr}, true},
		{"named port", []*networkingv1.NetworkPolicy{policy("default", "named", all, ingress, named)}, true},
		{"egress only, by label", []*networkingv1.NetworkPolicy{policy("default", "out", map[string]string{"app": "hostnames"}, egress)}, false},
	} {
		if got := DependsOnTarget(c.pols); got != c.want {
			t.Errorf("%s: DependsOnTarget = %v, want %v", c.name, got, c.want)
		}
		if c.want {
			continue
		}
		// Not dependent: the same decision for the hostnames Pod and for a Pod of other labels
		// and ports.
		other := target
		other.PodLabels = map[string]string{"app": "other", "tier": "db"}
		for _, port := range []Port{http, {Number: 9376, Protocol: corev1.ProtocolTCP}, {Number: 5432, Name: "pg", Protocol: corev1.ProtocolTCP}} {
			a, _ := Ingress(c.pols, target, port, exporter)
			b, _ := Ingress(c.pols, other, Port{Number: port.Number, Protocol: port.Protocol}, exporter)
			if a.Allowed != b.Allowed {
				t.Errorf("%s: port %v: allowed %v for hostnames, %v for another Pod, yet not dependent", c.name, port, a.Allowed, b.Allowed)
			}
		}
	}
}

package deploy

// deploy/network-policy: the exporter's own policy composes with the base and admits what the
// exporter needs, and the allow rule for target namespaces admits svcprobe's Pods (central and
// node agents, with deploy/base's and deploy/node-agent's labels) past a default-deny, and nobody
// else, as the NetworkPolicy API's semantics (netpol) decide it.

import (
	"net/netip"
	"os"
	"slices"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/serializer"
	"k8s.io/client-go/kubernetes/scheme"

	"github.com/svcprobe/svcprobe/netpol"
)

func nsLabels(ns string) map[string]string { return map[string]string{corev1.LabelMetadataName: ns} }

func TestNetworkPolicyOverlay(t *testing.T) {
	objs := decodeOverlay(t, "network-policy")
	base := decodeOverlay(t, "base")
	if len(objs) != len(base)+1 {
		t.Fatalf("%d objects (%v), want deploy/base's %d plus the NetworkPolicy", len(objs), sortedKeys(objs), len(base))
	}
	np := getObj[*networkingv1.NetworkPolicy](t, objs, "NetworkPolicy/svcprobe")
	exporter := getObj[*appsv1.Deployment](t, objs, "Deployment/svcprobe").Spec.Template.Labels
	self := netpol.Peer{Namespace: "svcprobe", NamespaceLabels: nsLabels("svcprobe"), Pod: true, PodLabels: exporter, IP: netip.MustParseAddr("198.18.0.13")}
	prom := netpol.Peer{Namespace: "monitoring", NamespaceLabels: nsLabels("monitoring"), Pod: true, PodLabels: map[string]string{"app": "prometheus"}, IP: netip.MustParseAddr("198.18.0.50")}
	web := netpol.Port{Number: 9817, Protocol: corev1.ProtocolTCP}
	deny := &networkingv1.NetworkPolicy{ObjectMeta: metav1.ObjectMeta{Namespace: "svcprobe", Name: "default-deny"},
		Spec: networkingv1.NetworkPolicySpec{PolicyTypes: []networkingv1.PolicyType{networkingv1.PolicyTypeIngress, networkingv1.PolicyTypeEgress}}}
	np.Namespace = "svcprobe"
	for _, c := range []struct {
		name    string
		source  netpol.Peer
		port    netpol.Port
		allowed bool
	}{
		{"Prometheus scrapes /metrics", prom, web, true},
		{"the hairpin stage reaches itself", self, web, true},
		{"another port stays closed", prom, netpol.Port{Number: 8080, Protocol: corev1.ProtocolTCP}, false},
	} {
		d, errs := netpol.Ingress([]*networkingv1.NetworkPolicy{deny, np}, self, c.port, c.source)
		if len(errs) > 0 || d.Allowed != c.allowed {
			t.Errorf("%s: %+v %v, want allowed %v", c.name, d, errs, c.allowed)
		}
	}
	// Egress: everything (probes go to every Pod and ClusterIP, DNS and the API server).
	if !slices.Contains(np.Spec.PolicyTypes, networkingv1.PolicyTypeEgress) || len(np.Spec.Egress) != 1 ||
		len(np.Spec.Egress[0].To) != 0 || len(np.Spec.Egress[0].Ports) != 0 {
		t.Errorf("egress %+v, want one rule allowing everything", np.Spec.Egress)
	}
}

func TestAllowSvcprobeInTargetNamespaces(t *testing.T) {
	b, err := os.ReadFile("network-policy/target-namespace/allow-svcprobe.yaml")
	if err != nil {
		t.Fatal(err)
	}
	obj, _, err := serializer.NewCodecFactory(scheme.Scheme, serializer.EnableStrict).UniversalDeserializer().Decode(b, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	allow, ok := obj.(*networkingv1.NetworkPolicy)
	if !ok || allow.Namespace != "" {
		t.Fatalf("decoded %T namespace %q, want a NetworkPolicy without a namespace (applied with -n)", obj, allow.Namespace)
	}
	allow.Namespace = "shop"
	deny := &networkingv1.NetworkPolicy{ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "default-deny"},
		Spec: networkingv1.NetworkPolicySpec{PolicyTypes: []networkingv1.PolicyType{networkingv1.PolicyTypeIngress}}}
	central := getObj[*appsv1.Deployment](t, decodeOverlay(t, "base"), "Deployment/svcprobe").Spec.Template.Labels
	agent := getObj[*appsv1.DaemonSet](t, decodeOverlay(t, "node-agent"), "DaemonSet/svcprobe-node").Spec.Template.Labels
	target := netpol.Peer{Namespace: "shop", NamespaceLabels: nsLabels("shop"), Pod: true, PodLabels: map[string]string{"app": "cart"}, IP: netip.MustParseAddr("198.18.0.30")}
	peer := func(ns string, l map[string]string) netpol.Peer {
		return netpol.Peer{Namespace: ns, NamespaceLabels: nsLabels(ns), Pod: true, PodLabels: l, IP: netip.MustParseAddr("198.18.0.40")}
	}
	for _, c := range []struct {
		name    string
		source  netpol.Peer
		allowed bool
	}{
		{"the central exporter", peer("svcprobe", central), true},
		{"a node agent", peer("svcprobe", agent), true},
		{"another Pod of svcprobe's namespace", peer("svcprobe", map[string]string{"app": "debug"}), false},
		{"a Pod with svcprobe's labels elsewhere", peer("default", central), false},
	} {
		for _, port := range []int32{80, 9376, 5432} {
			d, errs := netpol.Ingress([]*networkingv1.NetworkPolicy{deny, allow}, target, netpol.Port{Number: port, Protocol: corev1.ProtocolTCP}, c.source)
			if len(errs) > 0 || d.Allowed != c.allowed {
				t.Errorf("%s on %d: %+v %v, want allowed %v", c.name, port, d, errs, c.allowed)
			}
		}
	}
}

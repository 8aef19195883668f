package discovery

import (
	"context"
	"net/netip"
	"testing"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// Through the informers: a default-deny policy in the Service's namespace marks its endpoint
// denied on the Service's port, naming the policy; an allow rule for the exporter's namespace
// lifts it; a policy elsewhere changes nothing; without Config.NetworkPolicies nothing is marked.
func TestWatcherMarksEndpointsDeniedByPolicy(t *testing.T) {
	self := pod("svcprobe", "svcprobe-0", "198.18.0.13", map[string]string{"app.kubernetes.io/name": "svcprobe"}, true)
	objs := append(hostnamesObjects(), self)
	client, sink, _ := startWatcher(t, Config{NetworkPolicies: true, SelfIPs: []netip.Addr{netip.MustParseAddr("198.18.0.13")}}, objs...)
	ctx := context.Background()
	if _, err := client.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "svcprobe",
		Labels: map[string]string{corev1.LabelMetadataName: "svcprobe", "team": "sre"}}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	eventually(t, "hostnames", func() bool { tg := sink.get("default/hostnames"); return tg != nil && tg.Counts().Ready == 1 })
	if d := sink.get("default/hostnames").Endpoints[0].Denied; d != nil {
		t.Fatalf("no policy, yet denied: %v", d)
	}
	deny := &networkingv1.NetworkPolicy{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "default-deny"},
		Spec: networkingv1.NetworkPolicySpec{PolicyTypes: []networkingv1.PolicyType{networkingv1.PolicyTypeIngress}}}
	if _, err := client.NetworkingV1().NetworkPolicies("default").Create(ctx, deny, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	eventually(t, "endpoint denied by default-deny", func() bool {
		tg := sink.get("default/hostnames")
		return tg != nil && tg.Endpoints[0].Denied["80"] == "default/default-deny"
	})
	denied := sink.get("default/hostnames").Version
	allow := &networkingv1.NetworkPolicy{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "allow-sre"},
		Spec: networkingv1.NetworkPolicySpec{PolicyTypes: []networkingv1.PolicyType{networkingv1.PolicyTypeIngress},
			Ingress: []networkingv1.NetworkPolicyIngressRule{{From: []networkingv1.NetworkPolicyPeer{{NamespaceSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"team": "sre"}}}}}}}}
	if _, err := client.NetworkingV1().NetworkPolicies("default").Create(ctx, allow, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	eventually(t, "allowed again", func() bool {
		tg := sink.get("default/hostnames")
		return tg != nil && tg.Endpoints[0].Denied == nil && tg.Version != denied
	})
	// The exporter's namespace loses the label the allow rule selects: denied again.
	if _, err := client.CoreV1().Namespaces().Update(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "svcprobe", ResourceVersion: "2",
		Labels: map[string]string{corev1.LabelMetadataName: "svcprobe"}}}, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	eventually(t, "denied after the namespace label went", func() bool {
		tg := sink.get("default/hostnames")
		return tg != nil && tg.Endpoints[0].Denied["80"] == "default/allow-sre, default/default-deny"
	})

	_, sink2, _ := startWatcher(t, Config{}, objs...)
	eventually(t, "hostnames without policies", func() bool { return sink2.get("default/hostnames") != nil })
	if d := sink2.get("default/hostnames").Endpoints[0].Denied; d != nil {
		t.Fatalf("policies evaluated without Config.NetworkPolicies: %v", d)
	}
}

// A host-network exporter (a node agent with hostNetwork: true) is no Pod to NetworkPolicy: a rule
// admitting svcprobe's namespace does not admit it; only an ipBlock with the node's address does.
func TestWatcherHostNetworkSelfMatchesIPBlockOnly(t *testing.T) {
	self := pod("svcprobe", "svcprobe-node-x", "198.18.0.1", map[string]string{"app.kubernetes.io/name": "svcprobe-node"}, true)
	self.Spec.HostNetwork = true
	deny := &networkingv1.NetworkPolicy{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "allow-ns"},
		Spec: networkingv1.NetworkPolicySpec{PolicyTypes: []networkingv1.PolicyType{networkingv1.PolicyTypeIngress},
			Ingress: []networkingv1.NetworkPolicyIngressRule{{From: []networkingv1.NetworkPolicyPeer{{NamespaceSelector: &metav1.LabelSelector{}}}}}}}
	client, sink, _ := startWatcher(t, Config{NetworkPolicies: true, SelfIPs: []netip.Addr{netip.MustParseAddr("198.18.0.1")}}, append(hostnamesObjects(), self)...)
	if _, err := client.NetworkingV1().NetworkPolicies("default").Create(context.Background(), deny, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	eventually(t, "denied: a namespaceSelector admits Pods, not the node", func() bool {
		tg := sink.get("default/hostnames")
		return tg != nil && tg.Counts().Ready == 1 && tg.Endpoints[0].Denied["80"] == "default/allow-ns"
	})
}

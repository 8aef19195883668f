package discovery

import (
	"context"
	"net/netip"
	"sync"
	"testing"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"
	"k8s.io/utils/ptr"
)

// nodePodsObjects is hostnames with one Pod on node1 (the agent's) and one on node2: the API
// server returns the agent only node1's, so node2's Pod is an EndpointSlice endpoint alone.
func nodePodsObjects() []any {
	sl := slice("default", "hostnames", "hostnames-1", 9376, "",
		ep{ip: "198.18.0.5", pod: "hostnames-a", ready: true, serving: true},
		ep{ip: "198.18.1.6", pod: "hostnames-b", ready: true, serving: true})
	sl.Endpoints[1].NodeName = ptr.To("node2")
	sl.Labels[discoveryv1.LabelManagedBy] = endpointSliceController
	// An endpoint without a Pod behind it: its address is not a Pod's.
	sl.Endpoints = append(sl.Endpoints, sl.Endpoints[0])
	sl.Endpoints[2].Addresses, sl.Endpoints[2].TargetRef = []string{"198.18.1.7"}, nil
	// A slice the mirroring controller copied from hand-written Endpoints: its targetRef is the
	// writer's say-so, so its address is not taken for a Pod's.
	mirrored := slice("default", "manual", "manual-1", 9376, "", ep{ip: "198.18.1.8", pod: "hostnames-b", ready: true, serving: true})
	mirrored.Labels[discoveryv1.LabelManagedBy] = "endpointslicemirroring-controller.k8s.io"
	return []any{
		mirrored,
		service("default", "manual", nil, svcPort("", 80, intstr.FromInt32(9376))),
		service("default", "hostnames", map[string]string{"app": "hostnames"}, svcPort("", 80, intstr.FromInt32(9376))),
		service("default", "typo", map[string]string{"run": "hostnames"}, svcPort("", 80, intstr.FromInt32(9376))),
		pod("default", "hostnames-a", "198.18.0.5", map[string]string{"app": "hostnames"}, true, corev1.ContainerPort{ContainerPort: 9376}),
		pod("svcprobe", "svcprobe-node-1", "198.18.0.13", map[string]string{"app.kubernetes.io/name": "svcprobe-node"}, true),
		sl,
	}
}

// A node agent (Config.PodsOnNode) lists and watches the Pods of its node only; its Targets say
// so and look for no nearest Pod; it may dial the Pods of other nodes that EndpointSlices name
// (not hand-written endpoints); and NetworkPolicies are evaluated for an endpoint on another node
// only when they do not depend on the Pod's labels, the others marked not evaluated.
func TestWatcherNodePodsOnly(t *testing.T) {
	var mu sync.Mutex
	var fields []string
	record := func(a k8stesting.Action) (bool, runtime.Object, error) {
		mu.Lock()
		defer mu.Unlock()
		switch a := a.(type) {
		case k8stesting.ListAction:
			fields = append(fields, "list "+a.GetListRestrictions().Fields.String())
		case k8stesting.WatchAction:
			fields = append(fields, "watch "+a.GetWatchRestrictions().Fields.String())
		}
		return false, nil, nil
	}
	cfg := Config{PodsOnNode: "node1", NetworkPolicies: true, SelfIPs: []netip.Addr{netip.MustParseAddr("198.18.0.13")}}
	client, sink, w := startWatcherWith(t, cfg, func(c *fake.Clientset) {
		c.PrependReactor("list", "pods", record)
		c.PrependWatchReactor("pods", func(a k8stesting.Action) (bool, watch.Interface, error) { record(a); return false, nil, nil })
	}, nodePodsObjects()...)
	ctx := context.Background()
	if _, err := client.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "svcprobe",
		Labels: map[string]string{corev1.LabelMetadataName: "svcprobe"}}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	eventually(t, "hostnames", func() bool { tg := sink.get("default/hostnames"); return tg != nil && tg.Counts().Ready == 3 })
	mu.Lock()
	if len(fields) < 2 {
		t.Fatalf("Pod list and watch: %v", fields)
	}
	for _, f := range fields {
		if f != "list spec.nodeName=node1" && f != "watch spec.nodeName=node1" {
			t.Errorf("Pods asked with %q, want only this node's (spec.nodeName=node1)", f)
		}
	}
	mu.Unlock()

	tg := sink.get("default/hostnames")
	if tg.PodsOnNode != "node1" || len(tg.Pods) != 1 || tg.Pods[0].Name != "hostnames-a" {
		t.Fatalf("target PodsOnNode %q Pods %v, want node1 and hostnames-a", tg.PodsOnNode, tg.Pods)
	}
	if typo := sink.get("default/typo"); typo == nil || typo.NearestPod != nil || typo.PodsOnNode != "node1" {
		t.Fatalf("typo: %+v; want a target with no nearest Pod guessed from one node's Pods", typo)
	}
	w.mu.Lock()
	if len(w.noPods) != 0 {
		t.Errorf("noPods %v: with one node's Pods most Services select none here; every Pod event would rebuild them", w.noPods)
	}
	w.mu.Unlock()
	for addr, want := range map[string]bool{"198.18.0.5": true, "198.18.1.6": true, "198.18.1.7": false, "198.18.1.8": false, "198.18.9.9": false} {
		if got := w.KnownAddress(netip.MustParseAddr(addr)); got != want {
			t.Errorf("KnownAddress(%s) = %v, want %v", addr, got, want)
		}
	}

	// Policies that depend on the Pod's labels: node1's Pod is evaluated (allowed), node2's is
	// not evaluated, nothing is marked denied.
	byLabel := &networkingv1.NetworkPolicy{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "hostnames-from-svcprobe"},
		Spec: networkingv1.NetworkPolicySpec{PodSelector: metav1.LabelSelector{MatchLabels: map[string]string{"app": "hostnames"}},
			PolicyTypes: []networkingv1.PolicyType{networkingv1.PolicyTypeIngress},
			Ingress: []networkingv1.NetworkPolicyIngressRule{{From: []networkingv1.NetworkPolicyPeer{{NamespaceSelector: &metav1.LabelSelector{
				MatchLabels: map[string]string{corev1.LabelMetadataName: "svcprobe"}}}}}}}}
	if _, err := client.NetworkingV1().NetworkPolicies("default").Create(ctx, byLabel, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	eventually(t, "node2's endpoint not evaluated", func() bool {
		tg := sink.get("default/hostnames")
		return tg != nil && len(tg.Endpoints) == 3 && tg.Endpoints[1].PolicyNotEvaluated
	})
	tg = sink.get("default/hostnames")
	if tg.Endpoints[0].PolicyNotEvaluated || tg.Endpoints[0].Denied != nil || tg.Endpoints[1].Denied != nil || tg.Endpoints[2].PolicyNotEvaluated {
		t.Fatalf("endpoints %+v: want node1's evaluated and allowed, node2's not evaluated, the hand-written one (no Pod) left alone", tg.Endpoints)
	}
	// A default-deny that selects every Pod: decided for node2's Pod too, without its labels.
	if err := client.NetworkingV1().NetworkPolicies("default").Delete(ctx, byLabel.Name, metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	deny := &networkingv1.NetworkPolicy{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "default-deny"},
		Spec: networkingv1.NetworkPolicySpec{PolicyTypes: []networkingv1.PolicyType{networkingv1.PolicyTypeIngress}}}
	if _, err := client.NetworkingV1().NetworkPolicies("default").Create(ctx, deny, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	eventually(t, "both Pods' endpoints denied", func() bool {
		tg := sink.get("default/hostnames")
		return tg != nil && tg.Endpoints[0].Denied["80"] == "default/default-deny" && tg.Endpoints[1].Denied["80"] == "default/default-deny" &&
			!tg.Endpoints[1].PolicyNotEvaluated
	})

	// Without PodsOnNode (a central exporter, or --node.pods=all), the same objects: no field
	// selector, and the target does not say PodsOnNode.
	fields = nil
	_, sink2, _ := startWatcherWith(t, Config{}, func(c *fake.Clientset) { c.PrependReactor("list", "pods", record) }, nodePodsObjects()...)
	eventually(t, "hostnames, all Pods", func() bool { return sink2.get("default/hostnames") != nil })
	if tg := sink2.get("default/hostnames"); tg.PodsOnNode != "" {
		t.Errorf("PodsOnNode %q without Config.PodsOnNode", tg.PodsOnNode)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(fields) == 0 || fields[0] != "list " {
		t.Errorf("central Pod list with %v, want no field selector", fields)
	}
}

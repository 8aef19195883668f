package discovery

import (
	"fmt"
	"net/netip"
	"testing"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/ptr"
)

func TestBuildTargetKinds(t *testing.T) {
	base := func() *corev1.Service { return service("default", "s", map[string]string{"app": "x"}) }
	cases := []struct {
		name   string
		mutate func(*corev1.Service)
		kind   Kind
		ips    int
	}{
		{"clusterip", func(*corev1.Service) {}, KindClusterIP, 1},
		{"nodeport", func(s *corev1.Service) { s.Spec.Type = corev1.ServiceTypeNodePort }, KindNodePort, 1},
		{"loadbalancer", func(s *corev1.Service) { s.Spec.Type = corev1.ServiceTypeLoadBalancer }, KindLoadBalancer, 1},
		{"headless", func(s *corev1.Service) { s.Spec.ClusterIP, s.Spec.ClusterIPs = "None", []string{"None"} }, KindHeadless, 0},
		{"externalname", func(s *corev1.Service) {
			s.Spec.Type, s.Spec.ExternalName, s.Spec.ClusterIP, s.Spec.ClusterIPs = corev1.ServiceTypeExternalName, "db.example.internal", "", nil
		}, KindExternalName, 0},
		{"dualstack", func(s *corev1.Service) { s.Spec.ClusterIPs = []string{"198.19.0.20", "fd00::20"} }, KindClusterIP, 2},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			s := base()
			c.mutate(s)
			tg := BuildTarget(s, nil, nil)
			if tg.Kind != c.kind || len(tg.ClusterIPs) != c.ips {
				t.Fatalf("kind %s ips %v, want %s and %d IPs", tg.Kind, tg.ClusterIPs, c.kind, c.ips)
			}
		})
	}
}

func TestBuildTargetEndpointsAndPods(t *testing.T) {
	s := service("default", "hostnames", map[string]string{"app": "hostnames"}, svcPort("http", 80, intstr.FromString("http")))
	sl := slice("default", "hostnames", "hostnames-abc", 9376, "http",
		ep{ip: "198.18.0.5", pod: "a", ready: true, serving: true},
		ep{ip: "198.18.0.6", pod: "b", ready: false, serving: true},
		ep{ip: "198.18.0.7", pod: "c", ready: false, serving: true, terminating: true},
	)
	pods := []*corev1.Pod{
		pod("default", "a", "198.18.0.5", map[string]string{"app": "hostnames"}, true, corev1.ContainerPort{Name: "http", ContainerPort: 9376}),
		pod("default", "z", "198.18.0.9", map[string]string{"app": "other"}, true),
	}
	tg := BuildTarget(s, []*discoveryv1.EndpointSlice{sl}, pods)
	if got := tg.Counts(); got != (EndpointCounts{Ready: 1, NotReady: 1, Terminating: 1}) {
		t.Fatalf("counts %+v", got)
	}
	ready := tg.ReadyEndpoints()
	if len(ready) != 1 || ready[0].PodName != "a" || ready[0].Addresses[0] != netip.MustParseAddr("198.18.0.5") {
		t.Fatalf("ready endpoints %+v", ready)
	}
	if p, ok := ready[0].EndpointPort(tg.Ports[0]); !ok || p != 9376 {
		t.Fatalf("endpoint port %d %v", p, ok)
	}
	if len(tg.Pods) != 1 || tg.Pods[0].Name != "a" || tg.Pods[0].Ports[0].Name != "http" || !tg.Pods[0].Ready {
		t.Fatalf("pods %+v", tg.Pods)
	}
	if tg.NearestPod != nil {
		t.Fatalf("nearest pod set although the selector matches")
	}
}

func TestBuildTargetNearestPodForSelectorTypo(t *testing.T) {
	s := service("default", "hostnames", map[string]string{"run": "hostnames"})
	pods := []*corev1.Pod{
		pod("default", "unrelated", "198.18.0.9", map[string]string{"tier": "db"}, true),
		pod("default", "hostnames-a", "198.18.0.5", map[string]string{"app": "hostnames"}, true),
	}
	tg := BuildTarget(s, nil, pods)
	if len(tg.Pods) != 0 || tg.NearestPod == nil || tg.NearestPod.Name != "hostnames-a" {
		t.Fatalf("pods %v nearest %+v", tg.Pods, tg.NearestPod)
	}
}

func TestVersionChangesWithContent(t *testing.T) {
	s := service("default", "s", map[string]string{"app": "x"}, svcPort("", 80, intstr.FromInt32(8080)))
	a := BuildTarget(s, nil, nil)
	b := BuildTarget(s, nil, nil)
	if a.Version != b.Version {
		t.Fatal("same input, different version")
	}
	sl := slice("default", "s", "s-1", 8080, "", ep{ip: "198.18.0.5", ready: true, serving: true})
	c := BuildTarget(s, []*discoveryv1.EndpointSlice{sl}, nil)
	if c.Version == a.Version {
		t.Fatal("endpoints changed, version did not")
	}
}

// A Service whose selector matches no Pod has a NearestPod, a fresh pointer on every build: the
// version must follow what it points to, not its address (a Pod event re-queues such Services,
// and a new version re-probes early and restarts their settle window).
func TestVersionStableWithNearestPod(t *testing.T) {
	s := service("default", "s", map[string]string{"app": "x"}, svcPort("", 80, intstr.FromInt32(8080)))
	near := pod("default", "near", "198.18.0.7", map[string]string{"run": "x"}, true, corev1.ContainerPort{ContainerPort: 8080})
	a := BuildTarget(s, nil, []*corev1.Pod{near})
	b := BuildTarget(s, nil, []*corev1.Pod{near})
	if a.NearestPod == nil || a.NearestPod == b.NearestPod {
		t.Fatal("fixture: want two builds with distinct NearestPod pointers")
	}
	if a.Version != b.Version {
		t.Fatal("same content, different version: the NearestPod pointer was hashed")
	}
	other := pod("default", "near", "198.18.0.7", map[string]string{"run": "y"}, true, corev1.ContainerPort{ContainerPort: 8080})
	if c := BuildTarget(s, nil, []*corev1.Pod{other}); c.Version == a.Version {
		t.Fatal("the nearest Pod's labels changed, the version did not")
	}
	if a.NearestPod == nil || a.NearestPod.Name != "near" {
		t.Fatalf("hash changed the target: nearest %+v", a.NearestPod)
	}
}

func TestTransformsTrim(t *testing.T) {
	p := pod("default", "a", "198.18.0.5", map[string]string{"app": "x"}, true, corev1.ContainerPort{Name: "http", ContainerPort: 80})
	out, _ := TrimPod(p)
	tp := out.(*corev1.Pod)
	if tp.ManagedFields != nil || tp.Annotations != nil || tp.Spec.Containers[0].Image != "" || tp.Spec.Containers[0].Env != nil {
		t.Fatalf("pod not trimmed: %+v", tp)
	}
	if len(tp.Status.Conditions) != 1 || tp.Status.PodIP != "198.18.0.5" || tp.Spec.Containers[0].Ports[0].ContainerPort != 80 || tp.Labels["app"] != "x" {
		t.Fatalf("pod lost what the stages need: %+v", tp)
	}
	s := service("default", "s", nil)
	s.Annotations = map[string]string{"kubectl.kubernetes.io/last-applied-configuration": "{...}", AnnotationSkip: "true"}
	out, _ = TrimService(s)
	if ts := out.(*corev1.Service); len(ts.Annotations) != 1 || ts.Annotations[AnnotationSkip] != "true" {
		t.Fatalf("service annotations %v", ts.Annotations)
	}
	// A LoadBalancer's status keeps its ingress IPs and their ipMode, nothing else; the target
	// takes those kube-proxy programs for in-cluster clients (VIP or unset), no hostname.
	lb := service("default", "lb", map[string]string{"app": "x"}, svcPort("", 80, intstr.FromInt32(9376)))
	lb.Spec.Type = corev1.ServiceTypeLoadBalancer
	lb.Status.LoadBalancer.Ingress = []corev1.LoadBalancerIngress{
		{IP: "198.18.255.10"},
		{IP: "198.18.255.11", IPMode: ptr.To(corev1.LoadBalancerIPModeVIP), Ports: []corev1.PortStatus{{Port: 80, Protocol: corev1.ProtocolTCP}}},
		{IP: "198.18.255.12", IPMode: ptr.To(corev1.LoadBalancerIPModeProxy)},
		{Hostname: "lb.example.com"},
	}
	lb.Status.Conditions = []metav1.Condition{{Type: "x"}}
	lb.Spec.ExternalTrafficPolicy, lb.Spec.HealthCheckNodePort = corev1.ServiceExternalTrafficPolicyLocal, 31000
	out, _ = TrimService(lb)
	ts := out.(*corev1.Service)
	if len(ts.Status.Conditions) != 0 || len(ts.Status.LoadBalancer.Ingress) != 3 || ts.Status.LoadBalancer.Ingress[1].Ports != nil {
		t.Fatalf("service status not trimmed to the ingress IPs: %+v", ts.Status)
	}
	tg := BuildTarget(ts, nil, nil)
	if fmt.Sprint(tg.LoadBalancerIPs) != "[198.18.255.10 198.18.255.11]" {
		t.Fatalf("LoadBalancerIPs %v, want the VIP-mode ingress IPs 198.18.255.10 and .11", tg.LoadBalancerIPs)
	}
	if !tg.ExternalTrafficLocal || tg.HealthCheckNodePort != 31000 {
		t.Fatalf("externalTrafficPolicy Local with healthCheckNodePort 31000: ExternalTrafficLocal %v, HealthCheckNodePort %d", tg.ExternalTrafficLocal, tg.HealthCheckNodePort)
	}
	lb.Spec.Type = corev1.ServiceTypeClusterIP
	if tg := BuildTarget(lb, nil, nil); len(tg.LoadBalancerIPs) != 0 {
		t.Fatalf("a ClusterIP Service with a stale status: LoadBalancerIPs %v", tg.LoadBalancerIPs)
	}
	// Objects of another type (e.g. a tombstone) pass through untouched.
	if o, err := TrimPod("x"); o != "x" || err != nil {
		t.Fatal("unexpected type must pass through")
	}
}

func TestShardingIsStableAndPartitions(t *testing.T) {
	owners := map[int]int{}
	for i := range 1000 {
		u := fmt.Sprintf("uid-%d", i)
		n := 0
		for shard := range 3 {
			if (Config{Shard: shard, TotalShards: 3}).OwnsShard(types.UID(u)) {
				owners[shard]++
				n++
			}
		}
		if n != 1 {
			t.Fatalf("uid %s owned by %d shards", u, n)
		}
	}
	for shard, n := range owners {
		if n < 250 {
			t.Fatalf("shard %d owns only %d of 1000", shard, n)
		}
	}
}

func TestConfigValidate(t *testing.T) {
	bad := []Config{
		{TotalShards: 0},
		{Shard: 3, TotalShards: 3},
		{Shard: -1, TotalShards: 3},
		{TotalShards: 1, Selector: "app in (("},
		{TotalShards: 1, Namespaces: []string{"a"}, NamespacesExclude: []string{"a"}},
		{TotalShards: 1, DNSService: "kube-dns"},
	}
	for _, c := range bad {
		if c.Validate() == nil {
			t.Errorf("config %+v accepted", c)
		}
	}
	if err := (Config{TotalShards: 2, Shard: 1, Selector: "app=x", DNSService: "kube-system/kube-dns"}).Validate(); err != nil {
		t.Fatal(err)
	}
}

// The traffic policies decide where a VIP or a NodePort answers; the stages read them from the
// Target, and a change must re-probe (it changes the Version).
func TestBuildTargetTrafficPolicies(t *testing.T) {
	s := service("default", "s", map[string]string{"app": "x"}, svcPort("", 80, intstr.FromInt32(8080)))
	plain := BuildTarget(s, nil, nil)
	if plain.InternalTrafficLocal || plain.ExternalTrafficLocal {
		t.Fatalf("no policy set, got internal %v external %v", plain.InternalTrafficLocal, plain.ExternalTrafficLocal)
	}
	local := corev1.ServiceInternalTrafficPolicyLocal
	s.Spec.InternalTrafficPolicy = &local
	s.Spec.Type = corev1.ServiceTypeNodePort
	s.Spec.ExternalTrafficPolicy = corev1.ServiceExternalTrafficPolicyLocal
	tg := BuildTarget(s, nil, nil)
	if !tg.InternalTrafficLocal || !tg.ExternalTrafficLocal {
		t.Fatalf("Local policies not seen: internal %v external %v", tg.InternalTrafficLocal, tg.ExternalTrafficLocal)
	}
	if tg.Version == plain.Version {
		t.Fatal("traffic policy changed, version did not")
	}
	sl := slice("default", "s", "s-1", 8080, "", ep{ip: "198.18.0.5", ready: true, serving: true})
	tg = BuildTarget(s, []*discoveryv1.EndpointSlice{sl}, nil)
	if n := len(tg.ReadyEndpointsOn("node1")); n != 1 {
		t.Fatalf("%d ready endpoints on node1, want 1", n)
	}
	if n := len(tg.ReadyEndpointsOn("node2")); n != 0 {
		t.Fatalf("%d ready endpoints on node2, want 0", n)
	}
}

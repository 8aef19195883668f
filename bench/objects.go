package main

import (
	"fmt"
	"net/netip"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/ptr"
)

// The object set. Every address is in 127.0.0.0/8, which Linux routes to lo as a whole (the
// kernel's "local 127.0.0.0/8 dev lo" route), so one listener on 0.0.0.0:port answers every
// endpoint IP and every ClusterIP without a network namespace or a route of our own.
const (
	namespaces    = 50
	clusterDomain = "cluster.local"
	// dnsVIP is the kube-dns ClusterIP (resolv.conf's nameserver); dnsPodIP its one Pod.
	dnsVIP   = "127.0.53.53"
	dnsPodIP = "127.0.53.54"
	// kubernetesVIP answers the canary kubernetes.default; it is never dialed.
	kubernetesVIP = "127.0.53.1"
	// exporterNamespace is where the exporter Pod "runs": its resolv.conf searches it first.
	exporterNamespace = "monitoring"
)

// Ports are the listener ports the serve child picked (ephemeral, so nothing else collides).
type Ports struct {
	Pod     int `json:"pod"`     // targetPort of every endpoint
	Service int `json:"service"` // port of every ClusterIP
}

func serviceNamespace(i int) string { return fmt.Sprintf("bench-%02d", i%namespaces) }
func serviceName(i int) string      { return fmt.Sprintf("svc-%05d", i) }
func serviceUID(i int) types.UID    { return types.UID(fmt.Sprintf("00000000-bench-svc-%08d", i)) }

// addr127 maps k to 127.a.b.c with c in 1..250 (no .0, no .255) and a >= base.
func addr127(base, k int) netip.Addr {
	hi := k / 250
	return netip.AddrFrom4([4]byte{127, byte(base + hi/256), byte(hi % 256), byte(k%250 + 1)})
}

// clusterIP of Service i: 127.200.x.y.
func clusterIP(i int) netip.Addr { return addr127(200, i) }

// endpointIP of endpoint j of Service i: 127.10.x.y upwards (100k endpoints fit below 127.12).
func endpointIP(i, j, eps int) netip.Addr { return addr127(10, i*eps+j) }

// benchService is Service i: ClusterIP, no selector (its slice is "managed by hand"), one named TCP
// port, so the DNS stage asks A for the FQDN, A through the search list, and SRV for the port.
func benchService(i int, p Ports) *corev1.Service {
	ip := clusterIP(i).String()
	return &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: serviceName(i), Namespace: serviceNamespace(i), UID: serviceUID(i),
			ResourceVersion: "1", Labels: map[string]string{"app.kubernetes.io/part-of": "svcprobe-bench"}},
		Spec: corev1.ServiceSpec{
			Type: corev1.ServiceTypeClusterIP, ClusterIP: ip, ClusterIPs: []string{ip},
			IPFamilies: []corev1.IPFamily{corev1.IPv4Protocol},
			Ports: []corev1.ServicePort{{Name: "http", Port: int32(p.Service), TargetPort: intstr.FromInt32(int32(p.Pod)),
				Protocol: corev1.ProtocolTCP}},
		},
	}
}

// benchSlice is Service i's one EndpointSlice with eps ready endpoints (each
// "backed" by a Pod that does not exist as an object: the Services have no selector).
func benchSlice(i, eps int, p Ports) *discoveryv1.EndpointSlice {
	s := &discoveryv1.EndpointSlice{
		ObjectMeta: metav1.ObjectMeta{Name: serviceName(i) + "-bench", Namespace: serviceNamespace(i),
			UID: types.UID(fmt.Sprintf("00000000-bench-eps-%08d", i)), ResourceVersion: "1",
			Labels: map[string]string{discoveryv1.LabelServiceName: serviceName(i), discoveryv1.LabelManagedBy: "svcprobe-bench"}},
		AddressType: discoveryv1.AddressTypeIPv4,
		Ports:       []discoveryv1.EndpointPort{{Name: ptr.To("http"), Port: ptr.To(int32(p.Pod)), Protocol: ptr.To(corev1.ProtocolTCP)}},
	}
	for j := range eps {
		s.Endpoints = append(s.Endpoints, discoveryv1.Endpoint{
			Addresses:  []string{endpointIP(i, j, eps).String()},
			Conditions: discoveryv1.EndpointConditions{Ready: ptr.To(true), Serving: ptr.To(true), Terminating: ptr.To(false)},
			NodeName:   ptr.To(fmt.Sprintf("node-%03d", (i+j)%100)),
			TargetRef:  &corev1.ObjectReference{Kind: "Pod", Namespace: serviceNamespace(i), Name: fmt.Sprintf("%s-pod-%d", serviceName(i), j)},
		})
	}
	return s
}

// dnsObjects is the cluster DNS Service and its slice: the exporter asks its Pod directly each
// round and probes it as any other Service (UDP 53 gets a DNS query).
func dnsObjects() (*corev1.Service, *discoveryv1.EndpointSlice) {
	svc := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: "kube-dns", Namespace: "kube-system", UID: "00000000-bench-kube-dns", ResourceVersion: "1"},
		Spec: corev1.ServiceSpec{Type: corev1.ServiceTypeClusterIP, ClusterIP: dnsVIP, ClusterIPs: []string{dnsVIP},
			Ports: []corev1.ServicePort{{Name: "dns", Port: 53, TargetPort: intstr.FromInt32(53), Protocol: corev1.ProtocolUDP}}},
	}
	sl := &discoveryv1.EndpointSlice{
		ObjectMeta: metav1.ObjectMeta{Name: "kube-dns-bench", Namespace: "kube-system", UID: "00000000-bench-kube-dns-eps", ResourceVersion: "1",
			Labels: map[string]string{discoveryv1.LabelServiceName: "kube-dns"}},
		AddressType: discoveryv1.AddressTypeIPv4,
		Ports:       []discoveryv1.EndpointPort{{Name: ptr.To("dns"), Port: ptr.To(int32(53)), Protocol: ptr.To(corev1.ProtocolUDP)}},
		Endpoints: []discoveryv1.Endpoint{{Addresses: []string{dnsPodIP},
			Conditions: discoveryv1.EndpointConditions{Ready: ptr.To(true), Serving: ptr.To(true), Terminating: ptr.To(false)},
			TargetRef:  &corev1.ObjectReference{Kind: "Pod", Namespace: "kube-system", Name: "coredns-bench"}}},
	}
	return svc, sl
}

// resolvConf is the exporter Pod's resolv.conf, as kubelet writes it for dnsPolicy ClusterFirst.
func resolvConf() string {
	return fmt.Sprintf("nameserver %s\nsearch %s.svc.%s svc.%s %s\noptions ndots:5\n",
		dnsVIP, exporterNamespace, clusterDomain, clusterDomain, clusterDomain)
}

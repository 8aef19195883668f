package discovery

import (
	"errors"
	"fmt"
	"hash/fnv"
	"net/netip"
	"reflect"
	"testing"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
)

// fullTarget is a Target with every field set, nested ones and one element of every slice and
// map included, so that mutating any leaf is a change of content.
func fullTarget() Target {
	addr := netip.MustParseAddr("198.18.0.5")
	pod := Pod{Name: "p", Labels: map[string]string{"app": "x"}, IPs: []netip.Addr{addr}, Node: "n", Ready: true,
		Ports: []ContainerPort{{Name: "http", Port: 80, Protocol: "TCP"}}}
	return Target{
		UID: "u", Namespace: "ns", Name: "s", Kind: KindClusterIP, ClusterIPs: []netip.Addr{netip.MustParseAddr("198.19.0.1")}, LoadBalancerIPs: []netip.Addr{netip.MustParseAddr("198.18.255.10")},
		ExternalName: "e", Selector: map[string]string{"app": "x"}, PublishNotReadyAddresses: true,
		InternalTrafficLocal: true, ExternalTrafficLocal: true, HealthCheckNodePort: 31000,
		Ports: []Port{{Name: "http", Port: 80, TargetPort: intstr.FromString("http"), Protocol: "TCP", NodePort: 30080, AppProtocol: "h"}},
		Endpoints: []Endpoint{{Addresses: []netip.Addr{addr}, Ready: true, Serving: true, Terminating: true, NodeName: "n", PodName: "p",
			Ports: []EndpointPort{{Name: "http", Port: 80, Protocol: "TCP"}}, Denied: map[string]string{"http": "ns/deny"}}},
		Pods: []Pod{pod}, NearestPod: &pod, Workloads: []Workload{{Kind: "Deployment", Name: "d", Replicas: 1}},
		Options:          Options{Skip: true, Ports: PortSet{"http": true}, HTTP: map[string]HTTPOptions{"http": {Path: "/", StatusMin: 200, StatusMax: 399}}},
		AnnotationErrors: []error{errors.New("bad")},
	}
}

// leaves calls f with a description and a mutation for every leaf of v (addressable).
func leaves(path string, v reflect.Value, f func(string, func())) {
	switch v.Type() {
	case addrType:
		f(path, func() { v.Set(reflect.ValueOf(netip.MustParseAddr("198.18.9.9"))) })
		return
	}
	switch v.Kind() {
	case reflect.Struct:
		for i := range v.NumField() {
			if v.Type().Field(i).IsExported() {
				leaves(path+"."+v.Type().Field(i).Name, v.Field(i), f)
			}
		}
	case reflect.Slice:
		for i := range v.Len() {
			leaves(fmt.Sprintf("%s[%d]", path, i), v.Index(i), f)
		}
		f(path+" (one more)", func() { v.Set(reflect.Append(v, reflect.Zero(v.Type().Elem()))) })
	case reflect.Map:
		for _, k := range v.MapKeys() {
			f(fmt.Sprintf("%s[%v] (value)", path, k), func() {
				nv := reflect.New(v.Type().Elem()).Elem()
				nv.Set(v.MapIndex(k))
				mutateCopy(nv)
				v.SetMapIndex(k, nv)
			})
		}
		f(path+" (one more key)", func() {
			k := reflect.New(v.Type().Key()).Elem()
			k.SetString("zz")
			v.SetMapIndex(k, reflect.Zero(v.Type().Elem()))
		})
	case reflect.Pointer:
		if !v.IsNil() {
			leaves(path, v.Elem(), f)
		}
	case reflect.Interface:
		f(path, func() { v.Set(reflect.ValueOf(errors.New("worse"))) })
	case reflect.String:
		f(path, func() { v.SetString(v.String() + "!") })
	case reflect.Bool:
		f(path, func() { v.SetBool(!v.Bool()) })
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		f(path, func() { v.SetInt(v.Int() + 1) })
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		f(path, func() { v.SetUint(v.Uint() + 1) })
	default:
		f(path, func() { panic("test cannot mutate " + path) })
	}
}

// mutateCopy changes a map value (a copy): its first mutable leaf.
func mutateCopy(v reflect.Value) {
	done := false
	leaves("", v, func(_ string, m func()) {
		if !done {
			m()
			done = true
		}
	})
}

// Every leaf of a Target's content changes its version; Version itself does not; the same
// content gives the same version whatever the pointers and map orders.
func TestVersionCoversEveryField(t *testing.T) {
	base := fullTarget()
	want := base.hash()
	n := 0
	probe := fullTarget()
	leaves("Target", reflect.ValueOf(&probe).Elem(), func(path string, _ func()) {
		n++
		tt := fullTarget()
		i := 0
		leaves("Target", reflect.ValueOf(&tt).Elem(), func(p string, m func()) {
			if p == path {
				i++
				m()
			}
		})
		if path == "Target.Version" {
			if tt.hash() != want {
				t.Errorf("%s changed the hash", path)
			}
			return
		}
		if tt.hash() == want {
			t.Errorf("changing %s did not change the version", path)
		}
	})
	if n < 50 {
		t.Fatalf("only %d leaves walked: the fixture lost fields", n)
	}
	again := fullTarget()
	np := *again.NearestPod
	again.NearestPod = &np
	if again.hash() != want {
		t.Fatal("a copy of the nearest Pod at another address changed the version")
	}
}

// The content hash against fmt's %v, which it replaced, on a Service with ten Pods.
func BenchmarkTargetHash(b *testing.B) {
	s := service("default", "s", map[string]string{"app": "x"}, svcPort("http", 80, intstr.FromString("http")))
	var pods []*corev1.Pod
	var eps []ep
	for i := range 10 {
		ip := fmt.Sprintf("198.18.0.%d", 10+i)
		pods = append(pods, pod("default", fmt.Sprintf("p%d", i), ip, map[string]string{"app": "x", "pod-template-hash": "abc"}, true, corev1.ContainerPort{Name: "http", ContainerPort: 8080}))
		eps = append(eps, ep{ip: ip, ready: true, serving: true})
	}
	tg := BuildTarget(s, []*discoveryv1.EndpointSlice{slice("default", "s", "s-1", 8080, "http", eps...)}, pods)
	b.Run("content", func(b *testing.B) {
		for b.Loop() {
			tg.hash()
		}
	})
	b.Run("fmt", func(b *testing.B) {
		for b.Loop() {
			h := fnv.New64a()
			c := *tg
			c.NearestPod = nil
			fmt.Fprintf(h, "%v", c)
			_ = h.Sum64()
		}
	})
}

package main

import (
	"bytes"
	"context"
	"encoding/json"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"
	"github.com/svcprobe/svcprobe/probe"
	"github.com/svcprobe/svcprobe/web"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/kubernetes/fake"
	"k8s.io/utils/ptr"
)

// Every socket these tests open is on loopback: the Service's VIP is 127.0.0.2, its endpoint
// 127.0.0.3, cluster DNS an in-process server on a 127.0.0.1 port (or a closed port 53).

// diagConfig is a diagnose configuration with a resolv.conf naming 127.0.0.1 (port 53, closed).
func diagConfig(t *testing.T) *config {
	t.Helper()
	rc := filepath.Join(t.TempDir(), "resolv.conf")
	if err := os.WriteFile(rc, []byte("nameserver 127.0.0.1\nsearch default.svc.cluster.local svc.cluster.local cluster.local\noptions ndots:5\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	return &config{
		TotalShards: 1, Interval: time.Second, Timeout: time.Second, Concurrency: 8, PodSpread: 1, VIPConnections: 4, Window: 8,
		NewConnsPerSecond: 100, DNSQPS: 100, ResolvConf: rc, ClusterDomain: "cluster.local",
		DNSService: "kube-system/kube-dns", SeriesPerService: 20, PerEndpointLimit: 10,
	}
}

// listenTCP accepts and closes connections on addr ("127.0.0.x:0") until the test ends.
func listenTCP(t *testing.T, addr string) netip.AddrPort {
	t.Helper()
	l, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatalf("cannot listen on %s: %v", addr, err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	t.Cleanup(func() { l.Close(); <-done })
	return l.Addr().(*net.TCPAddr).AddrPort()
}

// closedTCP returns a loopback address where nothing listens.
func closedTCP(t *testing.T, addr string) netip.AddrPort {
	t.Helper()
	l, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatalf("cannot listen on %s: %v", addr, err)
	}
	ap := l.Addr().(*net.TCPAddr).AddrPort()
	l.Close()
	return ap
}

// diagDNS answers A queries from a fixed table, NXDOMAIN otherwise.
type diagDNS map[string]string

func (d diagDNS) ServeDNS(w dns.ResponseWriter, r *dns.Msg) {
	m := new(dns.Msg)
	m.SetReply(r)
	m.Authoritative = true
	q := r.Question[0]
	ip, ok := d[strings.ToLower(q.Name)]
	switch {
	case !ok:
		m.Rcode = dns.RcodeNameError
	case q.Qtype == dns.TypeA:
		m.Answer = append(m.Answer, &dns.A{Hdr: dns.RR_Header{Name: q.Name, Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: 5}, A: net.ParseIP(ip)})
	}
	_ = w.WriteMsg(m)
}

// serveDiagDNS starts d on a UDP port of 127.0.0.1 until the test ends.
func serveDiagDNS(t *testing.T, d diagDNS) netip.AddrPort {
	t.Helper()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &dns.Server{PacketConn: pc, Handler: d}
	started := make(chan struct{})
	srv.NotifyStartedFunc = func() { close(started) }
	done := make(chan error, 1)
	go func() { done <- srv.ActivateAndServe() }()
	select {
	case <-started:
	case err := <-done:
		t.Fatalf("DNS server: %v", err)
	}
	t.Cleanup(func() {
		if err := srv.Shutdown(); err != nil {
			t.Errorf("DNS shutdown: %v", err)
		}
		<-done
	})
	return pc.LocalAddr().(*net.UDPAddr).AddrPort()
}

// cluster builds the API objects of default/hostnames: VIP vip, one ready endpoint at ep backed
// by Pod hostnames-0 (labels app=hostnames), selector sel; and kube-dns with one Pod at dnsAddr.
func cluster(vip, ep netip.AddrPort, sel string, dnsAddr netip.AddrPort) *fake.Clientset {
	svc := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "hostnames", UID: "uid-hostnames"},
		Spec: corev1.ServiceSpec{
			Type: corev1.ServiceTypeClusterIP, ClusterIP: vip.Addr().String(), ClusterIPs: []string{vip.Addr().String()},
			Selector: map[string]string{"app": sel},
			Ports:    []corev1.ServicePort{{Port: int32(vip.Port()), TargetPort: intstr.FromInt32(int32(ep.Port())), Protocol: corev1.ProtocolTCP}},
		},
	}
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "hostnames-0", Labels: map[string]string{"app": "hostnames"}},
		Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "c", Ports: []corev1.ContainerPort{{ContainerPort: int32(ep.Port())}}}}},
		Status: corev1.PodStatus{PodIP: ep.Addr().String(),
			Conditions: []corev1.PodCondition{{Type: corev1.PodReady, Status: corev1.ConditionTrue}}},
	}
	objs := []runtime.Object{svc, pod,
		// A slice of another Service in the namespace must not be taken for hostnames'.
		slice("default", "other-1", "other", ep.Addr(), 1, "", "UDP"),
		slice("kube-system", "kube-dns-1", "kube-dns", dnsAddr.Addr(), dnsAddr.Port(), "dns", "UDP"),
	}
	if sel == "hostnames" {
		objs = append(objs, slice("default", "hostnames-1", "hostnames", ep.Addr(), ep.Port(), "", "TCP"))
	}
	return fake.NewClientset(objs...)
}

func slice(ns, name, svc string, addr netip.Addr, port uint16, portName string, proto corev1.Protocol) *discoveryv1.EndpointSlice {
	return &discoveryv1.EndpointSlice{
		ObjectMeta:  metav1.ObjectMeta{Namespace: ns, Name: name, Labels: map[string]string{discoveryv1.LabelServiceName: svc}},
		AddressType: discoveryv1.AddressTypeIPv4,
		Ports:       []discoveryv1.EndpointPort{{Port: ptr.To(int32(port)), Protocol: ptr.To(proto), Name: ptr.To(portName)}},
		Endpoints: []discoveryv1.Endpoint{{Addresses: []string{addr.String()}, Conditions: discoveryv1.EndpointConditions{Ready: ptr.To(true)},
			TargetRef: &corev1.ObjectReference{Kind: "Pod", Name: name + "-pod"}}},
	}
}

// healthyDNS answers for hostnames and the canary as cluster DNS would.
func healthyDNS(t *testing.T, vip netip.AddrPort) netip.AddrPort {
	return serveDiagDNS(t, diagDNS{
		"hostnames.default.svc.cluster.local.":  vip.Addr().String(),
		"kubernetes.default.svc.cluster.local.": "127.0.0.9",
	})
}

func resolvConfAt(dnsAddr netip.AddrPort) probe.ResolvConf {
	return probe.ResolvConf{Servers: []netip.AddrPort{dnsAddr},
		Search: []string{"default.svc.cluster.local", "svc.cluster.local", "cluster.local"}, Ndots: 5}
}

func TestDiagnoseHealthy(t *testing.T) {
	vip := listenTCP(t, "127.0.0.2:0")
	ep := listenTCP(t, "127.0.0.3:0")
	dnsAddr := healthyDNS(t, vip)
	client := cluster(vip, ep, "hostnames", dnsAddr)
	cfg := diagConfig(t)

	var out bytes.Buffer
	code, err := diagnoseService(context.Background(), client, cfg, resolvConfAt(dnsAddr), "default", "hostnames", &out, "text")
	if err != nil || code != diagnoseHealthy {
		t.Fatalf("exit %d, err %v:\n%s", code, err, out.String())
	}
	text := out.String()
	t.Logf("diagnose default/hostnames:\n%s", text)
	for _, want := range []string{
		"1. ✔ Does the Service exist?",
		"2. ✔ Does the Service work by DNS name?",
		"3. ✔ Does any Service work by DNS name?",
		"(pod hostnames-1-pod)",
		"4. ✔ Does the Service work by IP?",
		"5. ✔ Is the Service defined correctly?",
		"6. ✔ Does the Service have any Endpoints?",
		"7. ✔ Are the Pods working?",
		"8. – Is kube-proxy working?",
		"9. – Does the Service work on its NodePort", // a ClusterIP Service: skipped
		"10. – Does the Service work on its load balancer",
		"HEALTHY: default/hostnames passed every step.",
	} {
		if !strings.Contains(text, want) {
			t.Errorf("output lacks %q:\n%s", want, text)
		}
	}
	if strings.Contains(text, "✘") {
		t.Errorf("a healthy Service shows a failed check:\n%s", text)
	}

	// -o json is the document of /api/v1/services/{ns}/{name}: decode it strictly into the
	// shared struct.
	out.Reset()
	code, err = diagnoseService(context.Background(), client, cfg, resolvConfAt(dnsAddr), "default", "hostnames", &out, "json")
	if err != nil || code != diagnoseHealthy {
		t.Fatalf("json: exit %d, err %v", code, err)
	}
	dec := json.NewDecoder(&out)
	dec.DisallowUnknownFields()
	var doc web.Service
	if err := dec.Decode(&doc); err != nil {
		t.Fatal(err)
	}
	if !doc.Healthy || doc.Verdict != "ok" || len(doc.Runbook) != 10 || doc.Endpoints.Ready != 1 || doc.ClusterIPs[0] != "127.0.0.2" {
		t.Errorf("json document: %+v", doc)
	}
	for _, st := range doc.Stages {
		if st.Stage == "proxy" && (st.Status != web.StatusOK || len(st.Checks) != 1 || !st.Checks[0].OK) {
			t.Errorf("proxy stage: %+v", st)
		}
	}
}

func TestDiagnoseSelectorTypo(t *testing.T) {
	vip := listenTCP(t, "127.0.0.2:0")
	ep := listenTCP(t, "127.0.0.3:0")
	// Through diagnose itself: its resolv.conf names 127.0.0.1:53, where nothing answers.
	client := cluster(vip, ep, "hostname", netip.MustParseAddrPort("127.0.0.1:53"))
	var out bytes.Buffer
	code, err := diagnose(context.Background(), client, diagConfig(t), "default/hostnames", &out, "text")
	if err != nil || code != diagnoseBroken {
		t.Fatalf("exit %d, err %v:\n%s", code, err, out.String())
	}
	text := out.String()
	t.Logf("diagnose default/hostnames:\n%s", text)
	for _, want := range []string{
		"5. ✘ Is the Service defined correctly?  [failed: selector_matches_no_pods]  <- the broken layer",
		"selector app=hostname matches no Pod in namespace default",
		`The closest Pod, hostnames-0, has app=hostnames where the selector wants app=hostname: label "app" is "hostnames", not "hostname"`,
		"6. ✘ Does the Service have any Endpoints?",
		"BROKEN: layer spec (selector_matches_no_pods) at step 5",
	} {
		if !strings.Contains(text, want) {
			t.Errorf("output lacks %q:\n%s", want, text)
		}
	}
}

func TestDiagnoseKubeProxyFlushed(t *testing.T) {
	// The Pod answers on 127.0.0.3; nothing forwards the VIP 127.0.0.2 (no rules, no listener).
	vip := closedTCP(t, "127.0.0.2:0")
	ep := listenTCP(t, "127.0.0.3:0")
	dnsAddr := healthyDNS(t, vip)
	var out bytes.Buffer
	code, err := diagnoseService(context.Background(), cluster(vip, ep, "hostnames", dnsAddr), diagConfig(t), resolvConfAt(dnsAddr), "default", "hostnames", &out, "text")
	if err != nil || code != diagnoseBroken {
		t.Fatalf("exit %d, err %v:\n%s", code, err, out.String())
	}
	text := out.String()
	t.Logf("diagnose default/hostnames:\n%s", text)
	for _, want := range []string{
		"4. ✘ Does the Service work by IP?  [failed: refused]  <- the broken layer",
		"7. ✔ Are the Pods working?",
		"BROKEN: layer proxy (refused) at step 4",
		"Check that kube-proxy runs here",
	} {
		if !strings.Contains(text, want) {
			t.Errorf("output lacks %q:\n%s", want, text)
		}
	}
}

func TestDiagnoseTargetPortMismatch(t *testing.T) {
	vip := listenTCP(t, "127.0.0.2:0")
	ep := closedTCP(t, "127.0.0.3:0") // the Pod listens elsewhere
	dnsAddr := healthyDNS(t, vip)
	var out bytes.Buffer
	code, err := diagnoseService(context.Background(), cluster(vip, ep, "hostnames", dnsAddr), diagConfig(t), resolvConfAt(dnsAddr), "default", "hostnames", &out, "text")
	if err != nil || code != diagnoseBroken {
		t.Fatalf("exit %d, err %v:\n%s", code, err, out.String())
	}
	if text := out.String(); !strings.Contains(text, "BROKEN: layer pod (refused)") || !strings.Contains(text, "the Service's targetPort is the likely cause") {
		t.Errorf("want the pod layer with the targetPort hint:\n%s", text)
	}
}

func TestDiagnoseMissingService(t *testing.T) {
	client := fake.NewClientset()
	var out bytes.Buffer
	code, err := diagnose(context.Background(), client, diagConfig(t), "default/nope", &out, "json")
	if err != nil || code != diagnoseBroken {
		t.Fatalf("exit %d, err %v", code, err)
	}
	var doc web.Service
	if err := json.Unmarshal(out.Bytes(), &doc); err != nil {
		t.Fatal(err)
	}
	if doc.Verdict != "missing" || doc.Healthy || len(doc.Runbook) != 1 || !doc.Runbook[0].Blamed {
		t.Errorf("got %+v", doc)
	}
	out.Reset()
	code, _ = diagnose(context.Background(), client, diagConfig(t), "default/nope", &out, "text")
	if code != diagnoseBroken || !strings.Contains(out.String(), "BROKEN: layer missing") || !strings.Contains(out.String(), "1. ✘ Does the Service exist?") {
		t.Errorf("exit %d:\n%s", code, out.String())
	}
}

func TestDiagnoseUsageErrors(t *testing.T) {
	cfg := diagConfig(t)
	for _, tc := range []struct{ key, format string }{{"hostnames", "text"}, {"default/", "text"}, {"a/b/c", "text"}, {"default/hostnames", "yaml"}} {
		var out bytes.Buffer
		code, err := diagnose(context.Background(), fake.NewClientset(), cfg, tc.key, &out, tc.format)
		if err == nil || code != diagnoseUsage {
			t.Errorf("%q -o %s: exit %d, err %v", tc.key, tc.format, code, err)
		}
	}
	cfg.ResolvConf = filepath.Join(t.TempDir(), "absent")
	if code, err := diagnose(context.Background(), fake.NewClientset(), cfg, "default/x", &bytes.Buffer{}, "text"); err == nil || code != diagnoseUsage {
		t.Errorf("missing resolv.conf: exit %d, err %v", code, err)
	}
}

// The selector matches no Pod because the Deployment is scaled to zero: diagnose says IDLE and
// exits 0 (nothing is broken); without --discovery.workloads it is the typo it looks like.
func TestDiagnoseScaledToZero(t *testing.T) {
	vip := listenTCP(t, "127.0.0.2:0")
	ep := listenTCP(t, "127.0.0.3:0")
	client := cluster(vip, ep, "idle", netip.MustParseAddrPort("127.0.0.1:53"))
	zero := int32(0)
	dep := &appsv1.Deployment{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "idle"},
		Spec: appsv1.DeploymentSpec{Replicas: &zero, Template: corev1.PodTemplateSpec{ObjectMeta: metav1.ObjectMeta{Labels: map[string]string{"app": "idle"}}}}}
	if _, err := client.AppsV1().Deployments("default").Create(context.Background(), dep, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	cfg := diagConfig(t)
	cfg.Workloads = true
	var out bytes.Buffer
	code, err := diagnose(context.Background(), client, cfg, "default/hostnames", &out, "text")
	if err != nil || code != diagnoseHealthy || !strings.Contains(out.String(), "IDLE: default/hostnames is scaled to zero on purpose (scaled_to_zero)") ||
		!strings.Contains(out.String(), "Deployment/idle (replicas 0)") {
		t.Fatalf("exit %d, err %v, want 0 and IDLE naming the Deployment:\n%s", code, err, out.String())
	}
	cfg.Workloads = false
	out.Reset()
	if code, err := diagnose(context.Background(), client, cfg, "default/hostnames", &out, "text"); err != nil || code != diagnoseBroken || !strings.Contains(out.String(), "BROKEN: layer spec") {
		t.Fatalf("without workloads: exit %d, err %v, want 3 and spec:\n%s", code, err, out.String())
	}
}

// A default-deny NetworkPolicy in the Service's namespace: diagnose evaluates it for its own Pod
// (--pod.ip), as the exporter does, says POLICY naming it and exits 0; without
// --discovery.network-policies it dials, and the live endpoint answers. Without a Pod of that
// address it notes that the policies were not evaluated.
func TestDiagnoseNetworkPolicy(t *testing.T) {
	vip := listenTCP(t, "127.0.0.2:0")
	ep := listenTCP(t, "127.0.0.3:0")
	dnsAddr := healthyDNS(t, vip)
	client := cluster(vip, ep, "hostnames", dnsAddr)
	ctx := context.Background()
	backing := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "hostnames-1-pod", Labels: map[string]string{"app": "hostnames"}},
		Status: corev1.PodStatus{PodIP: ep.Addr().String()}}
	self := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "svcprobe", Name: "svcprobe-0", Labels: map[string]string{"app.kubernetes.io/name": "svcprobe"}},
		Status: corev1.PodStatus{PodIP: "127.0.0.1", Phase: corev1.PodRunning}}
	deny := &networkingv1.NetworkPolicy{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "default-deny"},
		Spec: networkingv1.NetworkPolicySpec{PolicyTypes: []networkingv1.PolicyType{networkingv1.PolicyTypeIngress}}}
	for _, o := range []runtime.Object{backing, self, deny} {
		if err := client.Tracker().Add(o); err != nil {
			t.Fatal(err)
		}
	}
	cfg := diagConfig(t)
	cfg.NetworkPolicies = true
	cfg.PodIPs = []netip.Addr{netip.MustParseAddr("127.0.0.1")}
	var out bytes.Buffer
	code, err := diagnoseService(ctx, client, cfg, resolvConfAt(dnsAddr), "default", "hostnames", &out, "text")
	if err != nil || code != diagnoseHealthy || !strings.Contains(out.String(), "POLICY: NetworkPolicy does not let svcprobe reach the Pods of default/hostnames") ||
		!strings.Contains(out.String(), "default/default-deny") {
		t.Fatalf("exit %d, err %v, want 0 and POLICY naming default/default-deny:\n%s", code, err, out.String())
	}
	cfg.NetworkPolicies = false
	out.Reset()
	if code, err := diagnoseService(ctx, client, cfg, resolvConfAt(dnsAddr), "default", "hostnames", &out, "text"); err != nil || code != diagnoseHealthy || strings.Contains(out.String(), "POLICY") {
		t.Fatalf("without network policies: exit %d, err %v, want 0 (healthy, dialed):\n%s", code, err, out.String())
	}
	cfg.NetworkPolicies = true
	cfg.PodIPs = []netip.Addr{netip.MustParseAddr("127.0.0.77")}
	out.Reset()
	if code, err := diagnoseService(ctx, client, cfg, resolvConfAt(dnsAddr), "default", "hostnames", &out, "text"); err != nil || code != diagnoseHealthy ||
		!strings.Contains(out.String(), "NetworkPolicies not evaluated: no Pod has the address [127.0.0.77]") {
		t.Fatalf("no Pod of --pod.ip: exit %d, err %v, want 0 and a note:\n%s", code, err, out.String())
	}
}

// A Service created moments ago whose VIP is not programmed yet: diagnose follows the change as
// the exporter does (the proxy stage again at the cadence) and reports its programming latency
// instead of a broken proxy; one that never gets programmed within the ceiling is not_programmed.
func TestDiagnoseFollowsProgramming(t *testing.T) {
	created := func(cl *fake.Clientset) *fake.Clientset {
		svc, err := cl.CoreV1().Services("default").Get(context.Background(), "hostnames", metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		svc.CreationTimestamp = metav1.Now()
		if _, err := cl.CoreV1().Services("default").Update(context.Background(), svc, metav1.UpdateOptions{}); err != nil {
			t.Fatal(err)
		}
		return cl
	}
	t.Run("programmed after 600ms", func(t *testing.T) {
		vip := closedTCP(t, "127.0.0.2:0")
		ep := listenTCP(t, "127.0.0.3:0")
		dnsAddr := healthyDNS(t, vip)
		cl := created(cluster(vip, ep, "hostnames", dnsAddr))
		go func() { time.Sleep(600 * time.Millisecond); listenTCP(t, vip.String()) }()
		cfg := diagConfig(t)
		cfg.ProgCadence, cfg.ProgCeiling = 50*time.Millisecond, 10*time.Second
		var out bytes.Buffer
		code, err := diagnoseService(context.Background(), cl, cfg, resolvConfAt(dnsAddr), "default", "hostnames", &out, "text")
		if err != nil || code != diagnoseHealthy {
			t.Fatalf("exit %d, err %v:\n%s", code, err, out.String())
		}
		if !strings.Contains(out.String(), "network programming: last change programmed in") {
			t.Fatalf("no programming latency in:\n%s", out.String())
		}
	})
	t.Run("never programmed", func(t *testing.T) {
		vip := closedTCP(t, "127.0.0.2:0")
		ep := listenTCP(t, "127.0.0.3:0")
		dnsAddr := healthyDNS(t, vip)
		cl := created(cluster(vip, ep, "hostnames", dnsAddr))
		cfg := diagConfig(t)
		cfg.ProgCadence, cfg.ProgCeiling = 50*time.Millisecond, 700*time.Millisecond
		var out bytes.Buffer
		code, _ := diagnoseService(context.Background(), cl, cfg, resolvConfAt(dnsAddr), "default", "hostnames", &out, "text")
		if code != diagnoseBroken || !strings.Contains(out.String(), "BROKEN: layer proxy (not_programmed)") {
			t.Fatalf("exit %d, want broken proxy not_programmed:\n%s", code, out.String())
		}
	})
}

// A step failing on one IP family of a dual-stack Service says which, after its reason.
func TestDiagnoseWalkSaysFamily(t *testing.T) {
	s := web.Service{Namespace: "default", Name: "web", Verdict: "proxy", Reason: "refused", Family: "ipv6", Runbook: []web.Step{
		{Step: 3, ID: "proxy", Question: "Does the ClusterIP answer?", Stage: "proxy", Status: web.StatusFailed, Reason: "refused", Family: "ipv6", Blamed: true},
	}}
	var b strings.Builder
	writeWalk(&b, s, nil)
	if !strings.Contains(b.String(), "refused, ipv6 only]") || !strings.Contains(b.String(), "BROKEN: layer proxy (refused, ipv6 only) at step 3") {
		t.Fatalf("walk does not say the family:\n%s", b.String())
	}
}

package pipeline

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"reflect"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/kubernetes/fake"
	"k8s.io/utils/ptr"

	"github.com/svcprobe/svcprobe/probe"
)

func quiet() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// testResolvConf names a closed loopback port's address: no DNS query leaves the machine.
func testResolvConf(t *testing.T) probe.ResolvConf {
	t.Helper()
	rc, err := probe.ParseResolvConf(strings.NewReader("nameserver 127.0.0.1\nsearch default.svc.cluster.local svc.cluster.local cluster.local\noptions ndots:5\n"))
	if err != nil {
		t.Fatal(err)
	}
	return rc
}

// build is New over an empty fake clientset; the pipeline is stopped (its watcher's queue shut
// down) at the end of the test.
func build(t *testing.T, cfg Config) *Pipeline {
	t.Helper()
	p, err := New(cfg, fake.NewClientset(), quiet())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { stop(p) })
	return p
}

// stop releases what New holds without running it (for tests that only inspect a pipeline).
func stop(p *Pipeline) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_ = p.Run(ctx)
}

// The exporter's default configuration wires every stage in runbook order, nodeport and loadbalancer included,
// the network ones through the budget and the address guard that asks the informers, the settle
// delay, the cluster DNS round, and the workload and NetworkPolicy informers. The bench's test
// compares its own pipeline against this shape.
func TestDefaultWiring(t *testing.T) {
	cfg := Defaults()
	cfg.ResolvConf = testResolvConf(t)
	p := build(t, cfg)
	want := Wiring{
		Stages:              []probe.Stage{probe.StageSpec, probe.StageEndpoints, probe.StageDNS, probe.StagePod, probe.StageProxy, probe.StageNodePort, probe.StageLoadBalancer},
		Guarded:             []probe.Stage{probe.StagePod, probe.StageProxy, probe.StageNodePort, probe.StageLoadBalancer},
		Budgeted:            []probe.Stage{probe.StageDNS},
		GuardKnowsInformers: true,
		Settle:              3 * time.Second,
		Programming:         true,
		ClusterDNS:          true,
		Workloads:           true,
		NetworkPolicies:     true,
	}
	if got := p.Wiring(); !reflect.DeepEqual(got, want) {
		t.Fatalf("default wiring\n got %+v\nwant %+v", got, want)
	}
	if p.SchedulerConfig.Workers != 32 || p.SchedulerConfig.Interval != 15*time.Second || p.SchedulerConfig.Timeout != 2*time.Second {
		t.Errorf("scheduler %+v: want 32 workers, 15s interval, 2s timeout", p.SchedulerConfig)
	}
	if dc := p.Config.DiscoveryConfig(); dc.DNSService != "kube-system/kube-dns" || dc.TotalShards != 1 || !dc.Workloads || !dc.NetworkPolicies {
		t.Errorf("discovery %+v", dc)
	}
	// The guard is the flags' (no --cluster.cidr: nothing outside what the informers know).
	for _, a := range []string{"10.0.0.1", "169.254.169.254", "127.0.0.1"} {
		if p.Guard.Allowed(nil, netip.MustParseAddr(a)) {
			t.Errorf("the default guard allows %s", a)
		}
	}
}

// A hairpin Service adds the hairpin stage behind the same guard; node mode samples (and keeps
// the hairpin Service out of the sample).
func TestHairpinAndNodeModeWiring(t *testing.T) {
	cfg := Defaults()
	cfg.ResolvConf = testResolvConf(t)
	cfg.HairpinService, cfg.HairpinIdentity = "svcprobe/svcprobe-hairpin", "svcprobe-0"
	cfg.Mode, cfg.NodeName = ModeNode, "node-a"
	cfg.NodeAddrs = []netip.Addr{netip.MustParseAddr("192.0.2.10")}
	p := build(t, cfg)
	w := p.Wiring()
	if want := []probe.Stage{probe.StagePod, probe.StageProxy, probe.StageNodePort, probe.StageLoadBalancer, probe.StageHairpin}; !reflect.DeepEqual(w.Guarded, want) || len(w.Bypass) > 0 {
		t.Fatalf("guarded %v, bypass %v: want %v and none", w.Guarded, w.Bypass, want)
	}
	if !w.Sampling || p.SchedulerConfig.SampleSize != 50 || p.SchedulerConfig.Always == nil {
		t.Fatalf("node mode: sampling %v, sample size %d, always %v", w.Sampling, p.SchedulerConfig.SampleSize, p.SchedulerConfig.Always != nil)
	}
	if !p.Guard.Allowed(nil, cfg.NodeAddrs[0]) {
		t.Fatal("the node address is not allowed: the nodeport stage could not dial it")
	}
	srv := httptest.NewServer(p.Handler)
	defer srv.Close()
	resp, err := http.Get(srv.URL + probe.DefaultIdentityPath)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if !strings.Contains(string(b), "svcprobe-0") {
		t.Fatalf("%s: %q", probe.DefaultIdentityPath, b)
	}
}

// A stage that dials around the pipeline's guard shows in Wiring.Bypass.
func TestWiringSeesABypass(t *testing.T) {
	cfg := Defaults()
	cfg.ResolvConf = testResolvConf(t)
	p := build(t, cfg)
	for _, pr := range p.Probers {
		if pp, ok := pr.(*probe.NodePortProber); ok {
			pp.Dialer = &probe.Dialer{Budget: p.Budget}
		}
	}
	if w := p.Wiring(); !reflect.DeepEqual(w.Bypass, []probe.Stage{probe.StageNodePort}) {
		t.Fatalf("bypass %v: want [nodeport]", w.Bypass)
	}
}

// Run: discovery syncs, the Service is probed, the exporter is ready and /metrics has its
// verdict; when ctx ends, Run returns nil and leaves no goroutine behind (goleak).
func TestRunProbesAndStops(t *testing.T) {
	cfg := Defaults()
	cfg.ResolvConf = testResolvConf(t)
	cfg.Interval, cfg.Timeout, cfg.Concurrency = time.Hour, 100*time.Millisecond, 4
	svc := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "web", UID: "uid-web"},
		Spec: corev1.ServiceSpec{ClusterIP: "127.0.0.1", ClusterIPs: []string{"127.0.0.1"}, Type: corev1.ServiceTypeClusterIP,
			Ports: []corev1.ServicePort{{Port: 1, TargetPort: intstr.FromInt32(1), Protocol: corev1.ProtocolTCP}}},
	}
	sl := &discoveryv1.EndpointSlice{
		ObjectMeta:  metav1.ObjectMeta{Namespace: "default", Name: "web-1", Labels: map[string]string{discoveryv1.LabelServiceName: "web"}},
		AddressType: discoveryv1.AddressTypeIPv4,
		Ports:       []discoveryv1.EndpointPort{{Port: ptr.To(int32(1)), Protocol: ptr.To(corev1.ProtocolTCP), Name: ptr.To("")}},
	}
	p, err := New(cfg, fake.NewClientset(svc, sl), quiet())
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- p.Run(ctx) }()
	defer func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("Run: %v", err)
			}
		case <-time.After(5 * time.Second):
			t.Error("Run did not return within 5 s of ctx's end")
		}
	}()
	srv := httptest.NewServer(p.Handler)
	defer srv.Close()
	for end := time.Now().Add(20 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		if ok, _ := p.Ready(); ok {
			break
		}
		if time.Now().After(end) {
			t.Fatal("not ready within 20 s")
		}
	}
	resp, err := http.Get(srv.URL + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	// No ready endpoint: the verdict blames the endpoints layer.
	if !strings.Contains(string(b), `svcprobe_service_verdict{layer="endpoints",namespace="default"`) {
		t.Fatalf("/metrics has no endpoints verdict for default/web:\n%.2000s", b)
	}
	for _, path := range []string{"/-/healthy", "/-/ready", "/"} {
		resp, err := http.Get(srv.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Errorf("%s: %d", path, resp.StatusCode)
		}
	}
}

// A node agent watches its own node's Pods unless --node.pods=all; a central exporter every Pod.
func TestDiscoveryPodsOnNode(t *testing.T) {
	for _, c := range []struct {
		mode, nodePods, want string
	}{
		{ModeNode, NodePodsNode, "node-2"},
		{ModeNode, "", "node-2"}, // a Config built by hand without the field: the default
		{ModeNode, NodePodsAll, ""},
		{ModeCentral, NodePodsNode, ""},
	} {
		cfg := Defaults()
		cfg.Mode, cfg.NodeName, cfg.NodePods = c.mode, "node-2", c.nodePods
		if got := cfg.DiscoveryConfig().PodsOnNode; got != c.want {
			t.Errorf("mode %s --node.pods=%q: PodsOnNode %q, want %q", c.mode, c.nodePods, got, c.want)
		}
	}
	if Defaults().NodePods != NodePodsNode {
		t.Errorf("default --node.pods %q, want %q", Defaults().NodePods, NodePodsNode)
	}
}

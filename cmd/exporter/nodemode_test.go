package main

import (
	"net"
	"net/http"
	"net/netip"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/client-go/kubernetes/fake"
)

// acceptAll accepts and closes connections on a loopback listener until it is closed.
func acceptAll(t *testing.T) net.Listener {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	t.Cleanup(func() { l.Close() })
	return l
}

// A node agent on the fake cluster: a NodePort Service whose ClusterIP, Pod and NodePort are
// loopback listeners, the node address 127.0.0.1 as HOST_IP would give it. Its per-Service series
// carry node="node-a"; the NodePort is probed on the node's address; when the NodePort stops
// answering while the ClusterIP still does, the verdict is proxy/nodeport_unreachable.
func TestNodeModeEndToEnd(t *testing.T) {
	backend, nodePort := acceptAll(t), acceptAll(t)
	svc, sl := loopbackService(backend.Addr().String())
	svc.Name, svc.UID, sl.Labels["kubernetes.io/service-name"] = "web", "uid-web", "web"
	svc.Spec.Type = corev1.ServiceTypeNodePort
	svc.Spec.Ports[0].NodePort = int32(nodePort.Addr().(*net.TCPAddr).Port)
	client := fake.NewClientset(svc, sl)
	cfg := testConfig(t)
	cfg.ExpectFlags = nil
	cfg.Interval = time.Second // node mode probes each Service at its phase of the coverage period
	cfg.Mode, cfg.NodeName, cfg.SampleSize = modeNode, "node-a", 50
	cfg.NodeAddrs = []netip.Addr{netip.MustParseAddr("127.0.0.1")}
	if err := cfg.load(); err != nil {
		t.Fatal(err)
	}
	base := startRun(t, cfg, client)
	waitMetrics := func(wants ...string) string {
		t.Helper()
		deadline := time.Now().Add(10 * time.Second)
		for {
			code, body := get(t, base+"/metrics")
			ok := code == http.StatusOK
			for _, w := range wants {
				ok = ok && strings.Contains(body, w)
			}
			if ok {
				return body
			}
			if time.Now().After(deadline) {
				t.Fatalf("/metrics (%d) lacks one of %q:\n%s", code, wants, body)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	body := waitMetrics(
		`svcprobe_stage_up{namespace="default",node="node-a",service="web",stage="nodeport"} 1`,
		`svcprobe_stage_up{namespace="default",node="node-a",service="web",stage="proxy"} 1`,
		`svcprobe_scheduler_coverage_period_seconds 1`,
	)
	for _, l := range strings.Split(body, "\n") {
		if strings.HasPrefix(l, "svcprobe_service_verdict{") && !strings.Contains(l, `node="node-a"`) {
			t.Errorf("verdict without the node label: %s", l)
		}
		if strings.HasPrefix(l, "svcprobe_cluster_dns_up{") && !strings.Contains(l, `node="node-a"`) {
			t.Errorf("cluster DNS without the node label: %s", l)
		}
	}
	// Ready follows within moments: discovery reports synced when client-go's WaitForCacheSync
	// next polls (every 100 ms), which can be after the first probe of a sampled Service.
	for deadline := time.Now().Add(2 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		code, body := get(t, base+"/-/ready")
		if code == http.StatusOK {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("/-/ready %d in node mode 2 s after the first probe: %s", code, body)
		}
	}
	// The NodePort stops answering; the ClusterIP still does.
	nodePort.Close()
	waitMetrics(
		`svcprobe_stage_up{namespace="default",node="node-a",service="web",stage="nodeport"} 0`,
		`svcprobe_service_verdict{layer="proxy",namespace="default",node="node-a",reason="nodeport_unreachable",service="web"} 1`,
	)
}

package main

import (
	"context"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/exporter-toolkit/web"
	"go.uber.org/goleak"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/kubernetes/fake"
	"k8s.io/utils/ptr"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func freeAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// testConfig points every socket the exporter opens at loopback: the DNS stage at a closed
// loopback port, Services and endpoints at 127.0.0.x.
func testConfig(t *testing.T) *config {
	t.Helper()
	dir := t.TempDir()
	rc := filepath.Join(dir, "resolv.conf")
	if err := os.WriteFile(rc, []byte("nameserver 127.0.0.1\nsearch default.svc.cluster.local svc.cluster.local cluster.local\noptions ndots:5\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	return &config{
		TotalShards: 1, Interval: time.Hour, Timeout: 100 * time.Millisecond, Concurrency: 8, PodSpread: 1, VIPConnections: 4, Window: 8,
		NewConnsPerSecond: 100, DNSQPS: 100, ResolvConf: rc, ClusterDomain: "cluster.local",
		DNSService: "kube-system/kube-dns", SeriesPerService: 20, PerEndpointLimit: 10,
		ExpectFlags: []string{"default/hostnames", "default/must-exist"},
	}
}

func loopbackService(backend string) (*corev1.Service, *discoveryv1.EndpointSlice) {
	host, port, _ := net.SplitHostPort(backend)
	p, _ := net.LookupPort("tcp", port)
	svc := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "hostnames", UID: "uid-hostnames"},
		Spec: corev1.ServiceSpec{ClusterIP: host, ClusterIPs: []string{host}, Type: corev1.ServiceTypeClusterIP,
			Ports: []corev1.ServicePort{{Port: int32(p), TargetPort: intstr.FromInt32(int32(p)), Protocol: corev1.ProtocolTCP}}},
	}
	sl := &discoveryv1.EndpointSlice{
		ObjectMeta:  metav1.ObjectMeta{Namespace: "default", Name: "hostnames-1", Labels: map[string]string{discoveryv1.LabelServiceName: "hostnames"}},
		AddressType: discoveryv1.AddressTypeIPv4,
		Ports:       []discoveryv1.EndpointPort{{Port: ptr.To(int32(p)), Protocol: ptr.To(corev1.ProtocolTCP), Name: ptr.To("")}},
		Endpoints:   []discoveryv1.Endpoint{{Addresses: []string{host}, Conditions: discoveryv1.EndpointConditions{Ready: ptr.To(true)}}},
	}
	return svc, sl
}

func get(t *testing.T, url string) (int, string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		return 0, err.Error()
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// startRun runs the exporter (run(), the same wiring as main) on a free loopback address until the
// test ends, and checks then that it stopped within two seconds without an error.
func startRun(t *testing.T, cfg *config, client *fake.Clientset) (base string) {
	t.Helper()
	addr := freeAddr(t)
	flags := &web.FlagConfig{WebListenAddresses: &[]string{addr}, WebSystemdSocket: ptr.To(false), WebConfigFile: ptr.To("")}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- run(ctx, cfg, client, flags, slog.New(slog.NewTextHandler(io.Discard, nil))) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("run: %v", err)
			}
		case <-time.After(2 * time.Second):
			t.Error("exporter did not stop")
		}
	})
	return "http://" + addr
}

func TestExporterEndToEndOnFakeCluster(t *testing.T) {
	backend := acceptAll(t)
	svc, sl := loopbackService(backend.Addr().String())
	client := fake.NewClientset(svc, sl)
	cfg := testConfig(t)
	if err := cfg.load(); err != nil {
		t.Fatal(err)
	}
	addr := freeAddr(t)
	flags := &web.FlagConfig{WebListenAddresses: &[]string{addr}, WebSystemdSocket: ptr.To(false), WebConfigFile: ptr.To("")}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- run(ctx, cfg, client, flags, slog.New(slog.NewTextHandler(io.Discard, nil))) }()

	base := "http://" + addr
	deadline := time.Now().Add(10 * time.Second)
	for {
		code, _ := get(t, base+"/-/ready")
		if code == http.StatusOK {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("not ready: %d", code)
		}
		time.Sleep(20 * time.Millisecond)
	}
	code, body := get(t, base+"/metrics")
	if code != http.StatusOK {
		t.Fatalf("/metrics %d", code)
	}
	for _, want := range []string{
		`svcprobe_stage_up{namespace="default",service="hostnames",stage="pod"} 1`,
		`svcprobe_stage_up{namespace="default",service="hostnames",stage="proxy"} 1`,
		`svcprobe_stage_up{namespace="default",service="hostnames",stage="dns"} 0`, // nothing answers DNS on loopback here
		`svcprobe_service_verdict{layer="missing",namespace="default",reason="not_found",service="must-exist"} 1`,
		`svcprobe_discovery_synced 1`,
		`svcprobe_build_info{`,
	} {
		if !strings.Contains(body, want) {
			t.Errorf("/metrics lacks %s", want)
		}
	}
	if code, _ := get(t, base+"/-/healthy"); code != http.StatusOK {
		t.Fatalf("/-/healthy %d", code)
	}
	// The status page and its JSON API read the same store.
	if code, body := get(t, base+"/status"); code != http.StatusOK || !strings.Contains(body, "hostnames") {
		t.Fatalf("/status %d", code)
	}
	if code, body := get(t, base+"/api/v1/services/default/hostnames"); code != http.StatusOK || !strings.Contains(body, `"name"`) {
		t.Fatalf("/api/v1/services/default/hostnames %d: %s", code, body)
	}
	// The last ready endpoint goes away: the verdict follows the EndpointSlice event, without
	// waiting for a probe round (the interval is an hour here).
	sl.Endpoints[0].Conditions.Ready = ptr.To(false)
	if _, err := client.DiscoveryV1().EndpointSlices("default").Update(context.Background(), sl, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	changed := time.Now()
	for {
		_, body := get(t, base+"/metrics")
		if strings.Contains(body, `svcprobe_service_verdict{layer="endpoints",namespace="default",reason="no_ready_endpoints",service="hostnames"} 1`) {
			t.Logf("verdict changed %s after the EndpointSlice update", time.Since(changed))
			break
		}
		if time.Since(changed) > 5*time.Second {
			t.Fatalf("verdict did not follow the EndpointSlice event:\n%s", body)
		}
		time.Sleep(10 * time.Millisecond)
	}
	// A Service created after the exporter became ready waits for its first probe (an hour away
	// here) without taking the exporter out of its Service's endpoints: readiness latches.
	newcomer, _ := loopbackService(backend.Addr().String())
	newcomer.Name, newcomer.UID = "newcomer", "uid-newcomer"
	if _, err := client.CoreV1().Services("default").Create(context.Background(), newcomer, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	for start := time.Now(); ; time.Sleep(10 * time.Millisecond) {
		_, body := get(t, base+"/metrics")
		if strings.Contains(body, "svcprobe_targets 2") && !strings.Contains(body, "svcprobe_scheduler_pending_targets 0") {
			break
		}
		if time.Since(start) > 5*time.Second {
			t.Fatalf("the new Service is not pending:\n%s", body)
		}
	}
	if code, body := get(t, base+"/-/ready"); code != http.StatusOK {
		t.Fatalf("/-/ready %d with a new Service pending: %s", code, body)
	}
	// SIGTERM is a cancelled context: everything stops within a second, no goroutine left (goleak).
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("run: %v", err)
		}
	case <-time.After(time.Second):
		t.Fatal("exporter did not stop within a second")
	}
}

func TestConfigErrors(t *testing.T) {
	write := func(s string) string {
		p := filepath.Join(t.TempDir(), "c.yaml")
		os.WriteFile(p, []byte(s), 0o644)
		return p
	}
	cases := map[string]func(c *config){
		"interval zero":         func(c *config) { c.Interval = 0 },
		"shard out of range":    func(c *config) { c.Shard, c.TotalShards = 2, 2 },
		"bad expect":            func(c *config) { c.ExpectFlags = []string{"hostnames"} },
		"unknown config key":    func(c *config) { c.ConfigFile = write("expect: [default/a]\nexpcet: [x]\n") },
		"wrong config type":     func(c *config) { c.ConfigFile = write("expect: default/a\n") },
		"missing config file":   func(c *config) { c.ConfigFile = "/nonexistent/svcprobe.yaml" },
		"hairpin without id":    func(c *config) { c.HairpinService, c.HairpinIdentity = "default/svcprobe", "" },
		"concurrency zero":      func(c *config) { c.Concurrency = 0 },
		"negative qps":          func(c *config) { c.DNSQPS = -1 },
		"bad selector":          func(c *config) { c.Selector = "a in ((" },
		"tiny series budget":    func(c *config) { c.SeriesPerService = 3 },
		"missing resolv.conf":   func(c *config) { c.ResolvConf = "/nonexistent/resolv.conf" },
		"timeout over interval": func(c *config) { c.Timeout = 2 * time.Hour },
	}
	for name, mutate := range cases {
		t.Run(name, func(t *testing.T) {
			c := testConfig(t)
			mutate(c)
			err := c.load()
			if err == nil {
				_, err = newExporter(c, fake.NewClientset(), slog.New(slog.NewTextHandler(io.Discard, nil)))
			}
			if err == nil {
				t.Fatal("accepted")
			}
			t.Log(err)
		})
	}
	c := testConfig(t)
	c.ConfigFile = write("expect:\n- default/a\n- kube-system/kube-dns\n")
	if err := c.load(); err != nil || len(c.Expected) != 4 {
		t.Fatalf("valid config file: %v, expected %v", err, c.Expected)
	}
}

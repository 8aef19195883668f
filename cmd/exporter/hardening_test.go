package main

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"log/slog"
	"math/big"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"github.com/prometheus/exporter-toolkit/web"
	"golang.org/x/crypto/bcrypt"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/fake"
	"k8s.io/utils/ptr"
)

// Child processes of this test binary: the tests below re-exec it with one of these set, to run
// main() with given arguments (exit codes) or the exporter under a low RLIMIT_NOFILE.
const (
	envMainArgs = "SVCPROBE_TEST_MAIN_ARGS" // JSON list of arguments for main()
	envFDChild  = "SVCPROBE_TEST_FD_CHILD"  // run fdChild (fd_test.go)
)

func init() {
	if s := os.Getenv(envMainArgs); s != "" {
		var args []string
		if err := json.Unmarshal([]byte(s), &args); err != nil {
			fmt.Fprintln(os.Stderr, "bad", envMainArgs, err)
			os.Exit(99)
		}
		os.Args = append([]string{"svcprobe"}, args...)
		main()
		os.Exit(0)
	}
	if os.Getenv(envFDChild) != "" {
		os.Exit(fdChild())
	}
}

// syncBuffer is a log sink the exporter's goroutines and the test may share.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// runningExporter is run() on a fake clientset, serving on a loopback port.
type runningExporter struct {
	base   string // http://127.0.0.1:port
	cancel context.CancelFunc
	done   chan error
}

// startExporter runs the real wiring (run) until the test ends; webConfig is --web.config.file.
func startExporter(t *testing.T, cfg *config, client kubernetes.Interface, webConfig string, log *slog.Logger) *runningExporter {
	t.Helper()
	if err := cfg.load(); err != nil {
		t.Fatal(err)
	}
	addr := freeAddr(t)
	flags := &web.FlagConfig{WebListenAddresses: &[]string{addr}, WebSystemdSocket: ptr.To(false), WebConfigFile: ptr.To(webConfig)}
	ctx, cancel := context.WithCancel(context.Background())
	e := &runningExporter{base: "http://" + addr, cancel: cancel, done: make(chan error, 1)}
	go func() { e.done <- run(ctx, cfg, client, flags, log) }()
	t.Cleanup(func() { e.stop(t) })
	return e
}

func (e *runningExporter) stop(t *testing.T) {
	t.Helper()
	if e.cancel == nil {
		return
	}
	e.cancel()
	e.cancel = nil
	select {
	case err := <-e.done:
		if err != nil {
			t.Errorf("run: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Error("exporter did not stop")
	}
}

// scrape fetches /metrics with client c and parses it.
func scrape(c *http.Client, url string) (map[string]*dto.MetricFamily, string, error) {
	resp, err := c.Get(url)
	if err != nil {
		return nil, "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, "", err
	}
	if resp.StatusCode != http.StatusOK {
		return nil, string(b), fmt.Errorf("status %d", resp.StatusCode)
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	mfs, err := p.TextToMetricFamilies(bytes.NewReader(b))
	return mfs, string(b), err
}

// counterValue is the value of an unlabelled counter or gauge, -1 when absent.
func metricValue(mfs map[string]*dto.MetricFamily, name string) float64 {
	mf, ok := mfs[name]
	if !ok || len(mf.Metric) == 0 {
		return -1
	}
	m := mf.Metric[0]
	switch {
	case m.Counter != nil:
		return m.Counter.GetValue()
	case m.Gauge != nil:
		return m.Gauge.GetValue()
	case m.Untyped != nil:
		return m.Untyped.GetValue()
	}
	return -1
}

func waitUntil(t *testing.T, what string, limit time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(limit)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", limit, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// countingListener accepts on a loopback address and counts connections.
func countingListener(t *testing.T, ip string) (net.Listener, *atomic.Int64) {
	t.Helper()
	l, err := net.Listen("tcp", net.JoinHostPort(ip, "0"))
	if err != nil {
		t.Fatalf("listen on %s (loopback, 127.0.0.0/8 is all loopback on Linux): %v", ip, err)
	}
	var n atomic.Int64
	var wg sync.WaitGroup
	wg.Go(func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			n.Add(1)
			_ = c.Close()
		}
	})
	t.Cleanup(func() { _ = l.Close(); wg.Wait() })
	return l, &n
}

func listenerPort(l net.Listener) int32 { return int32(l.Addr().(*net.TCPAddr).Port) }

// An ExternalName Service pointing at an address outside the cluster (127.0.0.2 stands in for a
// metadata service: nothing in the cluster has it) is never dialed; the result says why and the
// Service is logged once. Allowed by --probe.allow-external it is probed.
func TestExternalNameOutsideTheClusterIsNeverDialed(t *testing.T) {
	ln, accepted := countingListener(t, "127.0.0.2")
	ext := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "metadata", UID: "uid-metadata"},
		Spec: corev1.ServiceSpec{Type: corev1.ServiceTypeExternalName, ExternalName: "127.0.0.2",
			Ports: []corev1.ServicePort{{Name: "http", Port: listenerPort(ln), Protocol: corev1.ProtocolTCP}}},
	}
	for _, allowed := range []bool{false, true} {
		t.Run(fmt.Sprintf("allowed=%v", allowed), func(t *testing.T) {
			before := accepted.Load()
			cfg := testConfig(t)
			cfg.ExpectFlags = nil
			cfg.Interval, cfg.Timeout = 200*time.Millisecond, 100*time.Millisecond
			cfg.ClusterCIDRFlags = []string{"10.0.0.0/8"}
			if allowed {
				cfg.AllowExternalFlags = []string{"127.0.0.2/32"}
			}
			logs := &syncBuffer{}
			e := startExporter(t, cfg, fake.NewClientset(ext), "", slog.New(slog.NewTextHandler(logs, nil)))
			// Several rounds of the Service, so that "never" and "once" mean something.
			waitUntil(t, "five probe rounds", 20*time.Second, func() bool {
				mfs, _, err := scrape(http.DefaultClient, e.base+"/metrics")
				return err == nil && metricValue(mfs, "svcprobe_scheduler_probes_total") >= 5
			})
			code, body := get(t, e.base+"/api/v1/services/default/metadata")
			if code != http.StatusOK {
				t.Fatalf("/api/v1/services/default/metadata %d: %s", code, body)
			}
			if !allowed {
				if n := accepted.Load() - before; n != 0 {
					t.Fatalf("the address outside the cluster got %d connections", n)
				}
				if !strings.Contains(body, "external_not_allowed") || !strings.Contains(body, "--probe.allow-external=127.0.0.2/32") {
					t.Fatalf("the result does not say external_not_allowed and how to allow it:\n%s", body)
				}
				if n := strings.Count(logs.String(), "service=default/metadata"); n != 1 {
					t.Fatalf("the blocked Service logged %d times over five rounds, want once:\n%s", n, logs.String())
				}
				return
			}
			waitUntil(t, "the allowed address probed", 10*time.Second, func() bool { return accepted.Load() > before })
			_, text, err := scrape(http.DefaultClient, e.base+"/metrics")
			if err != nil {
				t.Fatal(err)
			}
			if want := `svcprobe_stage_up{namespace="default",service="metadata",stage="proxy"} 1`; !strings.Contains(text, want) {
				t.Fatalf("/metrics lacks %s", want)
			}
		})
	}
}

// selfSignedCert writes a certificate for 127.0.0.1 and its key, and returns a pool trusting it.
func selfSignedCert(t *testing.T, dir string) (certFile, keyFile string, pool *x509.CertPool) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "svcprobe-test"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}, BasicConstraintsValid: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	certFile, keyFile = filepath.Join(dir, "tls.crt"), filepath.Join(dir, "tls.key")
	if err := os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder}), 0o600); err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	pool = x509.NewCertPool()
	pool.AddCert(cert)
	return certFile, keyFile, pool
}

// --web.config.file with TLS and basic auth, end to end through the real wiring: plain HTTP gets
// no metrics, HTTPS without or with wrong credentials is 401, with them 200 and the metrics.
func TestWebConfigTLSAndBasicAuth(t *testing.T) {
	dir := t.TempDir()
	certFile, keyFile, pool := selfSignedCert(t, dir)
	hash, err := bcrypt.GenerateFromPassword([]byte("s3cret"), bcrypt.MinCost)
	if err != nil {
		t.Fatal(err)
	}
	webConfig := filepath.Join(dir, "web.yml")
	yml := fmt.Sprintf("tls_server_config:\n  cert_file: %s\n  key_file: %s\nbasic_auth_users:\n  prometheus: %s\n", certFile, keyFile, hash)
	if err := os.WriteFile(webConfig, []byte(yml), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := testConfig(t)
	e := startExporter(t, cfg, fake.NewClientset(), webConfig, slog.New(slog.NewTextHandler(io.Discard, nil)))
	httpsURL := strings.Replace(e.base, "http://", "https://", 1) + "/metrics"
	tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}}
	defer tr.CloseIdleConnections()
	client := &http.Client{Transport: tr, Timeout: 10 * time.Second}
	do := func(user, pass string) (int, string) {
		req, _ := http.NewRequest(http.MethodGet, httpsURL, nil)
		if user != "" {
			req.SetBasicAuth(user, pass)
		}
		resp, err := client.Do(req)
		if err != nil {
			return 0, err.Error()
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	waitUntil(t, "the HTTPS listener", 10*time.Second, func() bool { code, _ := do("prometheus", "s3cret"); return code == http.StatusOK })

	plain := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{}}
	if resp, err := plain.Get(e.base + "/metrics"); err == nil {
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode == http.StatusOK || strings.Contains(string(b), "svcprobe_") {
			t.Fatalf("plain HTTP answered %d with metrics", resp.StatusCode)
		}
		t.Logf("plain HTTP: %d %q", resp.StatusCode, strings.TrimSpace(string(b)))
	} else {
		t.Logf("plain HTTP: %v", err)
	}
	if code, body := do("", ""); code != http.StatusUnauthorized {
		t.Fatalf("HTTPS without credentials: %d %q, want 401", code, body)
	}
	if code, _ := do("prometheus", "wrong"); code != http.StatusUnauthorized {
		t.Fatalf("HTTPS with a wrong password: %d, want 401", code)
	}
	code, body := do("prometheus", "s3cret")
	if code != http.StatusOK || !strings.Contains(body, "svcprobe_build_info") {
		t.Fatalf("HTTPS with credentials: %d, metrics present %v", code, strings.Contains(body, "svcprobe_build_info"))
	}
}

// Label values that come from the cluster reach the exposition bounded: at most 128 bytes of
// printable ASCII, whatever the API server (or a fake one that validates nothing) hands over.
func TestClusterLabelValuesBoundedInExposition(t *testing.T) {
	backend, _ := countingListener(t, "127.0.0.1")
	port := listenerPort(backend)
	long := strings.Repeat("n", 63)                                             // the longest namespace or Service name a cluster accepts
	longPod := strings.Repeat("p", 120) + "." + strings.Repeat("q", 120) + ".x" // a 244-byte Pod name (a DNS subdomain)
	hostilePod := "pod-<script>\"\n\x00é" + strings.Repeat("z", 300)
	mk := func(ns, name string, pods ...string) []runtime.Object {
		svc := &corev1.Service{
			ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, UID: types.UID("uid-" + ns + "-" + name)},
			Spec: corev1.ServiceSpec{ClusterIP: "127.0.0.1", ClusterIPs: []string{"127.0.0.1"}, Type: corev1.ServiceTypeClusterIP,
				Ports: []corev1.ServicePort{{Port: port, TargetPort: intstr.FromInt32(port), Protocol: corev1.ProtocolTCP}}},
		}
		sl := &discoveryv1.EndpointSlice{
			ObjectMeta:  metav1.ObjectMeta{Namespace: ns, Name: name + "-1", Labels: map[string]string{discoveryv1.LabelServiceName: name}},
			AddressType: discoveryv1.AddressTypeIPv4,
			Ports:       []discoveryv1.EndpointPort{{Port: ptr.To(port), Protocol: ptr.To(corev1.ProtocolTCP), Name: ptr.To("")}},
		}
		for _, p := range pods {
			sl.Endpoints = append(sl.Endpoints, discoveryv1.Endpoint{Addresses: []string{"127.0.0.1"},
				Conditions: discoveryv1.EndpointConditions{Ready: ptr.To(true)}, TargetRef: &corev1.ObjectReference{Kind: "Pod", Name: p}})
		}
		return []runtime.Object{svc, sl}
	}
	objs := append(append(append(mk(long, long, longPod), mk("default", "0-0", hostilePod)...), mk("x--y", "a1")...), mk("default", "z")...)
	client := fake.NewClientset(objs...)
	cfg := testConfig(t)
	cfg.ExpectFlags = []string{"default/" + strings.Repeat("m", 63)}
	cfg.PerEndpoint = true
	e := startExporter(t, cfg, client, "", slog.New(slog.NewTextHandler(io.Discard, nil)))
	waitUntil(t, "ready", 20*time.Second, func() bool { code, _ := get(t, e.base+"/-/ready"); return code == http.StatusOK })
	mfs, text, err := scrape(http.DefaultClient, e.base+"/metrics")
	if err != nil {
		t.Fatalf("the exposition does not parse: %v\n%s", err, text)
	}
	seen := map[string]bool{}
	for name, mf := range mfs {
		if !strings.HasPrefix(name, "svcprobe_") {
			continue
		}
		for _, m := range mf.Metric {
			for _, lp := range m.Label {
				v := lp.GetValue()
				if len(v) > 128 {
					t.Errorf("%s{%s=%q...}: %d bytes", name, lp.GetName(), v[:40], len(v))
				}
				for i := 0; i < len(v); i++ {
					if v[i] < 0x20 || v[i] > 0x7e {
						t.Errorf("%s{%s=%q}: byte %#x is not printable ASCII", name, lp.GetName(), v, v[i])
						break
					}
				}
				seen[lp.GetName()+"="+v] = true
			}
		}
	}
	// The names themselves came through intact, and the long Pod names were cut, not dropped.
	for _, want := range []string{"namespace=" + long, "service=" + long, "service=0-0", "namespace=x--y", "service=" + strings.Repeat("m", 63),
		"pod=" + longPod[:128]} {
		if !seen[want] {
			t.Errorf("no label %s in the exposition", want[:min(len(want), 60)])
		}
	}
	hostileSeen := false
	for k := range seen {
		hostileSeen = hostileSeen || strings.HasPrefix(k, "pod=pod-")
	}
	if !hostileSeen {
		t.Error("the endpoint with the hostile Pod name has no series")
	}
}

// runMain runs main() in a child process (this test binary, see init) and returns its exit code
// and stderr.
func runMain(t *testing.T, args ...string) (int, string) {
	t.Helper()
	b, _ := json.Marshal(args)
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), envMainArgs+"="+string(b), "KUBERNETES_SERVICE_HOST=", "KUBERNETES_SERVICE_PORT=", "NODE_NAME=", "HOST_IP=")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	cmd.Stdout = io.Discard
	done := make(chan error, 1)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { done <- cmd.Wait() }()
	select {
	case <-done:
	case <-time.After(60 * time.Second):
		_ = cmd.Process.Kill()
		<-done
		t.Fatalf("svcprobe %v still running after 60s: it should have exited at start", args)
	}
	return cmd.ProcessState.ExitCode(), stderr.String()
}

// Absurd flags and config files stop the real binary at start, non-zero, naming the problem —
// before it ever talks to a cluster.
func TestAbsurdFlagsExitNonZeroAtStart(t *testing.T) {
	dir := t.TempDir()
	file := func(name, s string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(s), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	rc := file("resolv.conf", "nameserver 127.0.0.1\n")
	base := []string{"--dns.resolv-conf=" + rc, "--kubeconfig=" + filepath.Join(dir, "no-kubeconfig")}
	cases := []struct {
		args []string
		want string
	}{
		{[]string{"--probe.interval=0s"}, "--probe.interval must be positive"},
		{[]string{"--probe.interval=-15s"}, "--probe.interval must be positive"},
		{[]string{"--probe.timeout=-1s"}, "--probe.timeout must be positive"},
		{[]string{"--probe.timeout=0s"}, "--probe.timeout must be positive"},
		{[]string{"--probe.interval=1s", "--probe.timeout=2s"}, "must not exceed --probe.interval"},
		{[]string{"--probe.interval=banana"}, "probe.interval"},
		{[]string{"--shard=2", "--total-shards=2"}, "--shard must be in [0, 2)"},
		{[]string{"--shard=-1"}, "--shard must be in"},
		{[]string{"--total-shards=0"}, "--total-shards must be at least 1"},
		{[]string{"--probe.concurrency=0"}, "--probe.concurrency must be at least 1"},
		{[]string{"--probe.concurrency=-3"}, "--probe.concurrency must be at least 1"},
		{[]string{"--probe.pod.spread=0"}, "--probe.pod.spread must be at least 1"},
		{[]string{"--probe.pod.spread=often"}, "probe.pod.spread"},
		{[]string{"--probe.max-new-conns-per-second=0"}, "--probe.max-new-conns-per-second must be positive"},
		{[]string{"--dns.max-qps=NaN"}, "--dns.max-qps must be positive"},
		{[]string{"--dns.max-qps=-5"}, "--dns.max-qps must be positive"},
		{[]string{"--metrics.max-series-per-service=1"}, "--metrics.max-series-per-service must be at least 8"},
		{[]string{"--metrics.per-endpoint-limit=-1"}, "--metrics.per-endpoint-limit must not be negative"},
		{[]string{"--probe.allow-external=10.0.0.0/33"}, "--probe.allow-external"},
		{[]string{"--probe.allow-external=metadata.google.internal"}, "--probe.allow-external"},
		{[]string{"--probe.allow-external=169.254.169.254"}, "want a CIDR"},
		{[]string{"--probe.allow-external=127.0.0.2/8"}, "host bits set"},
		{[]string{"--cluster.cidr=10.0.0.0/8", "--cluster.cidr=fd00::/129"}, "--cluster.cidr"},
		{[]string{"--pod.ip=999.1.1.1"}, "--pod.ip"},
		{[]string{"--selector=a in (("}, "--selector"},
		{[]string{"--expect=hostnames"}, "want namespace/name"},
		{[]string{"--config.file=" + file("unknown.yml", "expect: [default/a]\nexpcet: [b]\n")}, "--config.file"},
		{[]string{"--config.file=" + file("type.yml", "expect: default/a\n")}, "--config.file"},
		{[]string{"--config.file=" + file("nested.yml", "expect: [{a: b}]\n")}, "--config.file"},
		{[]string{"--config.file=" + file("binary.yml", "\x00\xff\xfe")}, "--config.file"},
		{[]string{"--config.file=" + filepath.Join(dir, "missing.yml")}, "--config.file"},
		{[]string{"--hairpin.service=svcprobe"}, "--hairpin.service"},
		{[]string{"--no-such-flag"}, "unknown long flag"},
		{[]string{"--mode=node"}, "--mode=node needs --node-name"},
		{[]string{"--mode=nodes"}, "--mode=\"nodes\""},
		{[]string{"--mode=node", "--node-name=n1", "--node.sample-size=0"}, "--node.sample-size must be at least 1"},
		{[]string{"--node.sample-size=banana"}, "node.sample-size"},
		{[]string{"--node.address=10.0.0.300"}, "--node.address"},
		{[]string{"--node.address=node-1.example"}, "--node.address"},
	}
	for _, c := range cases {
		t.Run(strings.Join(c.args, " "), func(t *testing.T) {
			code, stderr := runMain(t, append(append([]string{}, base...), c.args...)...)
			if code == 0 || !strings.Contains(stderr, c.want) {
				t.Fatalf("exit %d, stderr %q; want non-zero and %q", code, stderr, c.want)
			}
			if strings.Contains(stderr, "panic") || strings.Contains(stderr, "goroutine ") {
				t.Fatalf("crashed: %s", stderr)
			}
			if strings.Contains(stderr, "kubeconfig") || strings.Contains(stderr, "Kubernetes client") {
				t.Fatalf("got as far as the Kubernetes client; the flag should have stopped it first: %s", stderr)
			}
		})
	}
	// The same invocation with sane flags gets past validation (and stops at the missing
	// kubeconfig): the cases above fail for their flag, not for the base arguments.
	code, stderr := runMain(t, append(append([]string{}, base...), "--probe.allow-external=127.0.0.2/32", "--cluster.cidr=10.0.0.0/8", "--cluster.cidr=fd00::/8")...)
	if code == 0 || !strings.Contains(stderr, "Kubernetes client") {
		t.Fatalf("sane flags: exit %d, stderr %q; want the Kubernetes client error", code, stderr)
	}
}

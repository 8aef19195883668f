package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"os"
	"runtime"
	"runtime/debug"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/fake"
	"k8s.io/utils/ptr"
)

// The soak's knobs: `make soak` (soak.mk) runs 10,000 rounds; `make test` the short default.
const (
	envSoakRounds  = "SVCPROBE_SOAK_ROUNDS"   // probe rounds (Service probes completed) to run
	envSoakMaxTime = "SVCPROBE_SOAK_MAX_TIME" // time cap for the rounds
	envSoakSummary = "SVCPROBE_SOAK_SUMMARY"  // file the SOAK PASS/FAIL line is written to
)

const (
	soakMinLive = 10
	soakMaxLive = 60
)

// processSample is what must stay flat over a soak.
type processSample struct {
	goroutines int
	fds        int
	rssKiB     int
	heapKiB    int // live heap after a GC: less noisy than RSS
}

func (s processSample) String() string {
	return fmt.Sprintf("goroutines=%d fds=%d rss=%.1fMiB heap=%.1fMiB", s.goroutines, s.fds, float64(s.rssKiB)/1024, float64(s.heapKiB)/1024)
}

func rssKiB() int {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return -1
	}
	for _, line := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			n, _ := strconv.Atoi(strings.TrimSuffix(strings.TrimSpace(rest), " kB"))
			return n
		}
	}
	return -1
}

// sampleProcess takes the minimum of a few samples a little apart: probes in flight come and go,
// what stays is what would leak.
func sampleProcess() processSample {
	best := processSample{goroutines: 1 << 30, fds: 1 << 30, rssKiB: 1 << 30, heapKiB: 1 << 30}
	for range 5 {
		runtime.GC()
		debug.FreeOSMemory()
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		best.heapKiB = min(best.heapKiB, int(ms.HeapAlloc/1024))
		best.goroutines = min(best.goroutines, runtime.NumGoroutine())
		best.fds = min(best.fds, openFDs())
		best.rssKiB = min(best.rssKiB, rssKiB())
		time.Sleep(100 * time.Millisecond)
	}
	return best
}

// soakCluster is the changing set of Services on the fake clientset.
type soakCluster struct {
	client   kubernetes.Interface
	backends []int32 // loopback ports that accept
	rng      *rand.Rand
	next     int
	live     []string // names
}

func (c *soakCluster) objects(name string, gen int) (*corev1.Service, *discoveryv1.EndpointSlice) {
	port := c.backends[gen%len(c.backends)]
	svc := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Namespace: "soak", Name: name, UID: types.UID("uid-" + name),
			Annotations: map[string]string{}},
		Spec: corev1.ServiceSpec{ClusterIP: "127.0.0.1", ClusterIPs: []string{"127.0.0.1"}, Type: corev1.ServiceTypeClusterIP,
			Ports: []corev1.ServicePort{{Name: "web", Port: port, TargetPort: intstr.FromInt32(port), Protocol: corev1.ProtocolTCP}}},
	}
	if gen%3 == 1 {
		svc.Annotations["svcprobe.io/http-path"] = "/healthz" // the backends close at once: a failing HTTP stage
	}
	if gen%5 == 2 {
		svc.Annotations["svcprobe.io/ports"] = "nope,99999" // malformed: counted, probed anyway
	}
	sl := &discoveryv1.EndpointSlice{
		ObjectMeta:  metav1.ObjectMeta{Namespace: "soak", Name: name + "-1", Labels: map[string]string{discoveryv1.LabelServiceName: name}},
		AddressType: discoveryv1.AddressTypeIPv4,
		Ports:       []discoveryv1.EndpointPort{{Name: ptr.To("web"), Port: ptr.To(port), Protocol: ptr.To(corev1.ProtocolTCP)}},
	}
	for e := range 1 + gen%3 {
		sl.Endpoints = append(sl.Endpoints, discoveryv1.Endpoint{Addresses: []string{"127.0.0.1"},
			Conditions: discoveryv1.EndpointConditions{Ready: ptr.To(gen%7 != 3)},
			TargetRef:  &corev1.ObjectReference{Kind: "Pod", Name: fmt.Sprintf("%s-%d", name, e)}})
	}
	return svc, sl
}

func (c *soakCluster) create(ctx context.Context) error {
	name := fmt.Sprintf("svc-%05d", c.next)
	c.next++
	svc, sl := c.objects(name, c.rng.IntN(100))
	if _, err := c.client.CoreV1().Services("soak").Create(ctx, svc, metav1.CreateOptions{}); err != nil {
		return err
	}
	if _, err := c.client.DiscoveryV1().EndpointSlices("soak").Create(ctx, sl, metav1.CreateOptions{}); err != nil {
		return err
	}
	c.live = append(c.live, name)
	return nil
}

func (c *soakCluster) remove(ctx context.Context) error {
	i := c.rng.IntN(len(c.live))
	name := c.live[i]
	c.live = slices.Delete(c.live, i, i+1)
	if err := c.client.DiscoveryV1().EndpointSlices("soak").Delete(ctx, name+"-1", metav1.DeleteOptions{}); err != nil {
		return err
	}
	return c.client.CoreV1().Services("soak").Delete(ctx, name, metav1.DeleteOptions{})
}

func (c *soakCluster) update(ctx context.Context) error {
	name := c.live[c.rng.IntN(len(c.live))]
	svc, sl := c.objects(name, c.rng.IntN(100))
	if _, err := c.client.CoreV1().Services("soak").Update(ctx, svc, metav1.UpdateOptions{}); err != nil {
		return err
	}
	_, err := c.client.DiscoveryV1().EndpointSlices("soak").Update(ctx, sl, metav1.UpdateOptions{})
	return err
}

// step makes one random change, keeping the live set within bounds.
func (c *soakCluster) step(ctx context.Context) error {
	// The fake clientset records every action for ever: the soak measures the exporter, not it.
	if f, ok := c.client.(*fake.Clientset); ok {
		f.ClearActions()
	}
	switch r := c.rng.IntN(3); {
	case len(c.live) < soakMinLive || (r == 0 && len(c.live) < soakMaxLive):
		return c.create(ctx)
	case len(c.live) > soakMaxLive || r == 1:
		return c.remove(ctx)
	default:
		return c.update(ctx)
	}
}

// resize brings the live set to n Services.
func (c *soakCluster) resize(ctx context.Context, n int) error {
	for len(c.live) < n {
		if err := c.create(ctx); err != nil {
			return err
		}
	}
	for len(c.live) > n {
		if err := c.remove(ctx); err != nil {
			return err
		}
	}
	return nil
}

// verdictServices returns the Services with a svcprobe_service_verdict series.
func verdictServices(text string) []string {
	var out []string
	for _, line := range strings.Split(text, "\n") {
		if !strings.HasPrefix(line, "svcprobe_service_verdict{") {
			continue
		}
		_, rest, ok := strings.Cut(line, `service="`)
		if !ok {
			continue
		}
		name, _, _ := strings.Cut(rest, `"`)
		out = append(out, name)
	}
	slices.Sort(out)
	return out
}

// Soak: many probe rounds over a Service set that is created, updated and deleted at random.
// Goroutines, descriptors and RSS stay flat, and the verdict series track the live set exactly.
// The last line it prints is SOAK PASS or SOAK FAIL with the figures.
func TestSoak(t *testing.T) {
	rounds, maxTime := 300, 2*time.Minute
	if s := os.Getenv(envSoakRounds); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 {
			t.Fatalf("%s=%q: want a positive number", envSoakRounds, s)
		}
		rounds = n
	}
	if s := os.Getenv(envSoakMaxTime); s != "" {
		d, err := time.ParseDuration(s)
		if err != nil || d <= 0 {
			t.Fatalf("%s=%q: want a duration", envSoakMaxTime, s)
		}
		maxTime = d
	}
	summary := "SOAK FAIL the soak stopped before its checks (see the test output)"
	defer func() {
		fmt.Println(summary)
		if p := os.Getenv(envSoakSummary); p != "" {
			_ = os.WriteFile(p, []byte(summary+"\n"), 0o644)
		}
	}()
	fail := func(format string, a ...any) {
		t.Helper()
		summary = "SOAK FAIL " + fmt.Sprintf(format, a...)
		t.Fatal(summary)
	}

	var backends []int32
	for range 3 {
		l, _ := countingListener(t, "127.0.0.1")
		backends = append(backends, listenerPort(l))
	}
	client := fake.NewClientset()
	ctx := context.Background()
	cl := &soakCluster{client: client, backends: backends, rng: rand.New(rand.NewPCG(1, 2))}
	if err := cl.resize(ctx, 30); err != nil {
		t.Fatal(err)
	}
	cfg := testConfig(t)
	cfg.ExpectFlags = nil
	cfg.Interval, cfg.Timeout = 250*time.Millisecond, 100*time.Millisecond
	cfg.Concurrency, cfg.NewConnsPerSecond, cfg.DNSQPS = 32, 5000, 5000
	cfg.ClusterCIDRFlags = []string{"127.0.0.0/8"}
	e := startExporter(t, cfg, client, "", slog.New(slog.NewTextHandler(io.Discard, nil)))
	httpc := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	defer httpc.CloseIdleConnections()
	probes := func() float64 {
		mfs, _, err := scrape(httpc, e.base+"/metrics")
		if err != nil {
			return -1
		}
		return metricValue(mfs, "svcprobe_scheduler_probes_total")
	}
	// seriesTrack waits until the verdict series name exactly the live Services.
	seriesTrack := func(when string) {
		t.Helper()
		want := slices.Clone(cl.live)
		slices.Sort(want)
		deadline := time.Now().Add(15 * time.Second)
		for {
			_, text, err := scrape(httpc, e.base+"/metrics")
			got := verdictServices(text)
			if err == nil && slices.Equal(got, want) {
				return
			}
			if time.Now().After(deadline) {
				fail("%s: %d verdict series for %d live Services (scrape error %v)", when, len(got), len(want), err)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}

	waitUntil(t, "ready", 30*time.Second, func() bool { code, _ := get(t, e.base+"/-/ready"); return code == http.StatusOK })
	warm := probes()
	waitUntil(t, "warm-up rounds", 30*time.Second, func() bool { return probes() >= warm+60 })
	seriesTrack("start")
	startLive := len(cl.live)
	start := sampleProcess()
	base := probes()
	t.Logf("start: %s, %d live Services, %v probe rounds so far", start, startLive, base)

	// Churn until the rounds are done: one random change every few milliseconds, and every
	// quarter of the way a pause to check that the series follow the live set.
	began := time.Now()
	checks, changes := 0, 0
	nextCheck := float64(rounds) / 4
	for {
		done := probes() - base
		if done >= float64(rounds) {
			break
		}
		if time.Since(began) > maxTime {
			fail("only %.0f of %d rounds within %s", done, rounds, maxTime)
		}
		if done >= nextCheck {
			seriesTrack(fmt.Sprintf("after %.0f rounds", done))
			checks++
			nextCheck += float64(rounds) / 4
		}
		for range 10 {
			if err := cl.step(ctx); err != nil {
				fail("changing the cluster: %v", err)
			}
			changes++
		}
		time.Sleep(20 * time.Millisecond)
	}
	elapsed := time.Since(began)
	done := probes() - base
	// The end sample is taken with as many Services as the start one.
	if err := cl.resize(ctx, startLive); err != nil {
		fail("resizing: %v", err)
	}
	seriesTrack("end")
	time.Sleep(2 * cfg.Interval)
	end := sampleProcess()
	if p := os.Getenv("SVCPROBE_SOAK_HEAP_PROFILE"); p != "" { // to find what grew
		if f, err := os.Create(p); err == nil {
			_ = pprof.WriteHeapProfile(f)
			_ = f.Close()
		}
	}
	t.Logf("end: %s after %.0f rounds, %d changes, %d series checks in %s", end, done, changes, checks, elapsed.Round(time.Second))

	figures := fmt.Sprintf("rounds=%.0f in %s changes=%d series_checks=%d live=%d goroutines=%d->%d fds=%d->%d rss=%.1fMiB->%.1fMiB heap=%.1fMiB->%.1fMiB",
		done, elapsed.Round(time.Second), changes, checks+2, startLive, start.goroutines, end.goroutines, start.fds, end.fds,
		float64(start.rssKiB)/1024, float64(end.rssKiB)/1024, float64(start.heapKiB)/1024, float64(end.heapKiB)/1024)
	var problems []string
	// Generous bounds, relative to the start: a leak per round or per Service change grows
	// without bound over thousands of them; noise does not.
	if end.goroutines > start.goroutines+start.goroutines/4+25 {
		problems = append(problems, "goroutines grew")
	}
	if end.fds > start.fds+10 {
		problems = append(problems, "file descriptors grew")
	}
	if end.rssKiB > start.rssKiB+start.rssKiB/2+32*1024 {
		problems = append(problems, "RSS grew")
	}
	if end.heapKiB > 2*start.heapKiB+16*1024 {
		problems = append(problems, "the live heap grew")
	}
	if len(problems) > 0 {
		fail("%s: %s", strings.Join(problems, ", "), figures)
	}
	summary = "SOAK PASS " + figures
	t.Log(summary)
}

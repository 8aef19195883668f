package main

import (
	"fmt"
	"net/netip"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"

	"github.com/svcprobe/svcprobe/discovery"
)

func rowNamed(t *testing.T, rows []row, prefix string) row {
	t.Helper()
	for _, r := range rows {
		if strings.HasPrefix(r.figure, prefix) {
			return r
		}
	}
	t.Fatalf("no row %q in %d rows", prefix, len(rows))
	return row{}
}

func TestShapesRowsNamespaceRatio(t *testing.T) {
	base := ShapesResult{Shape: "namespace", Variant: "spread", Services: 5000, Pods: 20000, NetMicros: 10, Events: 20000}
	for _, c := range []struct {
		one, shared float64
		wantOne     string
		wantShared  string
	}{
		{14, 12, "pass", "pass"},
		{16, 30, "**FAIL**", "info: over target"},
	} {
		rs := []ShapesResult{base,
			{Shape: "namespace", Variant: "one", Services: 5000, Pods: 20000, NetMicros: c.one, Events: 20000},
			{Shape: "namespace", Variant: "shared", Services: 5000, Pods: 20000, NetMicros: c.shared, Events: 20000}}
		rows := shapesRows(rs)
		one := rowNamed(t, rows, "Namespace: CPU per Pod event, 5k Services / 20k Pods in one namespace (")
		if one.verdict != c.wantOne || one.ratio != fmt.Sprintf("%.2f", c.one/10) {
			t.Errorf("one namespace at %.0f µs vs 10: verdict %q ratio %q, want %q", c.one, one.verdict, one.ratio, c.wantOne)
		}
		shared := rowNamed(t, rows, "Namespace: CPU per Pod event, 5k Services / 20k Pods in one namespace, every selector")
		if !strings.HasPrefix(shared.verdict, c.wantShared) {
			t.Errorf("shared at %.0f µs vs 10: verdict %q, want %q", c.shared, shared.verdict, c.wantShared)
		}
	}
	// A run stopped at its time bound does not pass.
	rs := []ShapesResult{base, {Shape: "namespace", Variant: "one", Services: 5000, Pods: 20000, NetMicros: 11, Events: 100, TimedOut: true}}
	if r := rowNamed(t, shapesRows(rs), "Namespace:"); r.verdict == "pass" || !strings.Contains(r.measured, "time bound") {
		t.Errorf("timed-out run: %+v", r)
	}
}

func TestShapesRowsPodsPerPod(t *testing.T) {
	rs := []ShapesResult{
		{Shape: "pods", Variant: "none", Services: 10000, RSSDelta: 20 << 20, HeapDelta: 10 << 20, TargetsSeconds: 1},
		{Shape: "pods", Variant: "pods", Services: 10000, Pods: 100000, RSSDelta: 20<<20 + 100000*1024, HeapDelta: 10<<20 + 100000*512, TargetsSeconds: 3,
			Verdicts: map[string]int{"ok/success": 10001}},
	}
	rows := shapesRows(rs)
	mem := rowNamed(t, rows, "Pods: memory per Pod")
	if !strings.Contains(mem.measured, "1.00 KiB RSS, 0.50 KiB heap per Pod") {
		t.Errorf("per-Pod memory: %q", mem.measured)
	}
	sync := rowNamed(t, rows, "Pods: initial sync")
	if sync.ratio != "3.00" || sync.verdict != "pass (all verdicts ok)" {
		t.Errorf("sync row: ratio %q verdict %q", sync.ratio, sync.verdict)
	}
	rs[1].Verdicts = map[string]int{"ok/success": 10000, "spec/selector_matches_no_pods": 1}
	if r := rowNamed(t, shapesRows(rs), "Pods: initial sync"); r.verdict == "pass (all verdicts ok)" {
		t.Errorf("a false verdict passed: %q", r.verdict)
	}
	if r := rowNamed(t, shapesRows(rs[1:]), "Pods: memory per Pod"); r.verdict != "**FAIL**" {
		t.Errorf("no baseline: %q", r.verdict)
	}
}

func TestShapesRowsChurn(t *testing.T) {
	c := ShapesResult{Shape: "churn", Deployments: 3, PodsPerDeployment: 1000, DetectSeconds: 0.2, VerdictPolls: 100, Verdicts: map[string]int{"ok/success": 2003}}
	rows := shapesRows([]ShapesResult{c})
	if r := rowNamed(t, rows, "Churn: false verdicts"); r.verdict != "pass" {
		t.Errorf("no false verdict: %q", r.verdict)
	}
	if r := rowNamed(t, rows, "Churn: a Service's slice"); r.verdict != "pass" {
		t.Errorf("detected in 0.2 s: %q", r.verdict)
	}
	c.FalseVerdicts, c.FalseDetail = 1, map[string]int{"pod/timeout": 1}
	c.DetectSeconds = -1
	rows = shapesRows([]ShapesResult{c})
	if r := rowNamed(t, rows, "Churn: false verdicts"); r.verdict != "**FAIL**" || !strings.Contains(r.measured, "pod/timeout 1") {
		t.Errorf("one false verdict: %+v", r)
	}
	if r := rowNamed(t, rows, "Churn: a Service's slice"); r.verdict != "**FAIL**" {
		t.Errorf("never detected: %q", r.verdict)
	}
	c.FalseVerdicts, c.VerdictPolls = 0, 0 // never looked: no pass
	if r := rowNamed(t, shapesRows([]ShapesResult{c}), "Churn: false verdicts"); r.verdict != "**FAIL**" {
		t.Errorf("no poll: %q", r.verdict)
	}
}

func TestShapesRowsWeb(t *testing.T) {
	w := ShapesResult{Shape: "web", Services: 10000, Pages: []PageTiming{
		{Name: "/-/healthy", LiveMedian: 0.0001, CPUMicros: 100},
		{Name: "/", LiveMedian: 0.05, CPUMicros: 40000},
		{Name: "/status/{ns}/{name}", LiveMedian: 0.004, CPUMicros: 1000},
		{Name: "/api/v1/services/{ns}/{name}", LiveMedian: 0.006, CPUMicros: 300},
		{Name: "/metrics", LiveMedian: 0.5, CPUMicros: 400000},
	}}
	rows := shapesRows([]ShapesResult{w})
	if r := rowNamed(t, rows, "Web: /status/"); r.verdict != "pass" || r.ratio != "10.00 CPU" {
		t.Errorf("status page at 4 ms: %+v", r)
	}
	if r := rowNamed(t, rows, "Web: /api/"); r.verdict != "**FAIL**" {
		t.Errorf("JSON at 6 ms: %+v", r)
	}
	if r := rowNamed(t, rows, "Web: / at"); r.verdict != "info" || r.ratio != "0.10 CPU" {
		t.Errorf("index: %+v", r)
	}
}

func TestEventFigures(t *testing.T) {
	r := ShapesResult{Events: 1000, Writes: 1000, EventSeconds: 2, CPUSeconds: 0.5, IdleCores: 0.05, FakeMicros: 100}
	r.eventFigures()
	if r.EventsPerSecond != 500 || int(r.GrossMicros+0.5) != 400 || int(r.NetMicros+0.5) != 300 {
		t.Errorf("events/s %v, gross %v µs, net %v µs; want 500, 400, 300", r.EventsPerSecond, r.GrossMicros, r.NetMicros)
	}
}

func TestQueueCountsDrained(t *testing.T) {
	var q queueCounts
	depth, get, done := q.NewDepthMetric("svcprobe_services"), q.NewLatencyMetric("svcprobe_services"), q.NewWorkDurationMetric("svcprobe_services")
	if !q.drained() {
		t.Fatal("empty queue not drained")
	}
	depth.Inc()
	if q.drained() {
		t.Error("an item queued: drained")
	}
	depth.Dec()
	get.Observe(0)
	if q.drained() {
		t.Error("an item being processed: drained")
	}
	done.Observe(0)
	if !q.drained() {
		t.Error("processed: not drained")
	}
	// Another queue's metrics are not counted.
	q.NewDepthMetric("other").Inc()
	if !q.drained() {
		t.Error("another queue counted")
	}
}

func TestFlowBoundsInFlight(t *testing.T) {
	var handled atomic.Uint64
	f := newFlow(handled.Load)
	for range maxInFlight - 1 {
		f.wrote()
	}
	if f.inFlight() != maxInFlight-1 {
		t.Fatalf("in flight %d", f.inFlight())
	}
	// At the bound, wrote waits until the events caught up to half of it.
	go func() {
		time.Sleep(20 * time.Millisecond)
		handled.Store(maxInFlight)
	}()
	t0 := time.Now()
	f.wrote()
	if time.Since(t0) < 10*time.Millisecond || f.inFlight() > maxInFlight/2 || f.timeouts != 0 {
		t.Errorf("wrote returned after %s with %d in flight, %d timeouts", time.Since(t0), f.inFlight(), f.timeouts)
	}
}

func TestQuantile(t *testing.T) {
	v := []float64{5, 1, 4, 2, 3, 6, 7, 8, 9, 10}
	if q := quantile(v, 0.9); q != 9 {
		t.Errorf("p90 = %v, want 9", q)
	}
	if q := quantile(v, 0.5); q != 5 {
		t.Errorf("p50 = %v, want 5", q)
	}
}

// The serve child's DNS answers every Service a shape names: the bench-NN ones up to
// shapesMaxServices, the one namespace's and the Deployments'.
func TestShapeZoneCoversTheShapes(t *testing.T) {
	zone := map[string]bool{}
	for _, e := range shapeZone() {
		zone[e.ns+"/"+e.name] = true
	}
	for _, short := range []bool{false, true} {
		if m := shapesMaxServices(short); m < 10000 && !short {
			t.Errorf("shapesMaxServices = %d, want the pods and web shapes' 10000", m)
		}
		for _, r := range shapeRuns(short) {
			args := strings.Join(r.args, " ")
			var n, deps int
			for _, a := range r.args {
				if v, ok := strings.CutPrefix(a, "-n="); ok {
					n = atoi(t, v)
				}
				if v, ok := strings.CutPrefix(a, "-deployments="); ok {
					deps = atoi(t, v)
				}
			}
			if r.shape == "namespace" && r.variant != "spread" && !zone[oneNamespace+"/"+serviceName(n-1)] {
				t.Errorf("%s %s (%s): %s/%s not in the zone", r.shape, r.variant, args, oneNamespace, serviceName(n-1))
			}
			if r.shape == "churn" && !zone[churnNamespace+"/"+deployName(deps-1)] {
				t.Errorf("churn (%s): %s not in the zone", args, deployName(deps-1))
			}
		}
	}
}

func atoi(t *testing.T, s string) int {
	t.Helper()
	var n int
	for _, c := range s {
		if c < '0' || c > '9' {
			t.Fatalf("not a number: %q", s)
		}
		n = 10*n + int(c-'0')
	}
	return n
}

// The Pods the shapes write back their Service as a kubelet's would: the exporter's transform
// keeps them, the Service's Target has every one of them ready, on the slice's addresses, with
// the targetPort declared; a not-ready or terminating one is not ready.
func TestShapePodsBackTheirService(t *testing.T) {
	ports := Ports{Pod: 8080, Service: 80}
	const i, eps = 7, 10
	svc := benchService(i, ports)
	svc.Spec.Selector = map[string]string{"app": serviceName(i)}
	var pods []*corev1.Pod
	for j := range eps {
		o, err := discovery.TrimPod(shapePod(serviceNamespace(i), podEndpoint(i, j, eps, true), podLabels(i), ports, 1))
		if err != nil {
			t.Fatal(err)
		}
		pods = append(pods, o.(*corev1.Pod))
	}
	tg := discovery.BuildTarget(svc, []*discoveryv1.EndpointSlice{benchSlice(i, eps, ports)}, pods)
	if len(tg.Pods) != eps {
		t.Fatalf("%d Pods selected, want %d", len(tg.Pods), eps)
	}
	addrs := map[netip.Addr]bool{}
	for _, e := range tg.Endpoints {
		addrs[e.Addresses[0]] = true
	}
	for _, p := range tg.Pods {
		if !p.Ready || len(p.IPs) != 1 || !addrs[p.IPs[0]] || len(p.Ports) != 1 || p.Ports[0].Port != int32(ports.Pod) {
			t.Errorf("Pod %s: ready %v, IPs %v (endpoints %v), ports %v", p.Name, p.Ready, p.IPs, addrs, p.Ports)
		}
	}
	// A churn Pod created not ready, and one terminating, in a slice.
	e := shapeEndpoint{ip: "127.12.0.1", pod: "p", node: "n"}
	if p := shapePod("ns", e, map[string]string{"app": "x"}, ports, 1); p.Status.Conditions[3].Type != corev1.PodReady || p.Status.Conditions[3].Status != corev1.ConditionFalse {
		t.Errorf("not-ready Pod: %+v", p.Status.Conditions)
	}
	e.terminating = true
	sl := shapeSlice("ns", "x", "x-1", []shapeEndpoint{e}, ports, 1)
	if c := sl.Endpoints[0].Conditions; *c.Ready || !*c.Serving || !*c.Terminating {
		t.Errorf("terminating endpoint: ready %v serving %v terminating %v", *c.Ready, *c.Serving, *c.Terminating)
	}
}

package main

// The shapes (issue 19): cluster shapes the scale runs do not have, each against a baseline
// measured in the same run. One child process per run (`bench shapes -shape=... -variant=...`),
// so each run's CPU and memory are its own:
//
//	pods       10k Services with selectors over 100k Pod objects vs the same Services without
//	           selectors and no Pods: memory per Pod, initial sync time
//	namespace  Pod events absorbed by the discovery watcher: 5k Services / 20k Pods in one
//	           namespace (and with every selector sharing tier=backend) vs 50 namespaces
//	churn      rolling updates of 1k-Pod Deployments while the pipeline probes: events per second,
//	           CPU per event, detection latency during the churn, false verdicts
//	web        the status page, a Service's page and its JSON at 10k Services vs /-/healthy and
//	           a /metrics scrape
//
// Every pipeline here is pipeline.New's (newBenchPipeline), over client-go's fake clientset.

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"log/slog"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/util/workqueue"
	"k8s.io/utils/ptr"

	"github.com/svcprobe/svcprobe/metrics"
	"github.com/svcprobe/svcprobe/pipeline"
	"github.com/svcprobe/svcprobe/probe"
)

// ShapesResult is what one shapes child reports. Only the fields of its shape are set.
type ShapesResult struct {
	Shape, Variant string
	Services       int
	Pods           int // Pod objects in the clientset at the start
	Namespaces     int
	WallSeconds    float64 // the child's whole run

	// Sync (pods).
	SyncSeconds       float64 // pipeline started -> informers synced (the initial lists' Services built)
	TargetsSeconds    float64 // -> every Service's Target pushed to the scheduler
	FirstRoundSeconds float64 // -> every Service probed once
	SyncCPUSeconds    float64 // process CPU from the start to every Target pushed
	RSSBaseline, RSS  int64   // VmRSS after GC: fake clientset loaded; with the pipeline synced and probed once
	RSSDelta          int64
	HeapBaseline      int64
	HeapDelta         int64

	// Events (namespace, churn).
	Writes            int     // API writes (creates, updates, deletes) the bench made
	Events            uint64  // informer events the watcher handled
	Syncs             int64   // Service syncs the watcher's queue processed (workqueue gets)
	EventSeconds      float64 // first write -> the watcher's queue drained
	EventsPerSecond   float64
	CPUSeconds        float64 // process CPU over EventSeconds
	IdleCores         float64 // process CPU rate just before, no writes (probing in the background)
	FakeMicros        float64 // CPU per write of the fake clientset alone (same writes, no informer), µs
	GrossMicros       float64 // (CPUSeconds - IdleCores x EventSeconds) / Events, µs
	NetMicros         float64 // GrossMicros - FakeMicros x Writes / Events: the exporter's share, µs
	TimedOut          bool    // the writes stopped at the time bound
	FlowWaitsTimedOut int     // flow-control waits that gave up (the fake watch channel holds 100 events)

	// Churn.
	Deployments, PodsPerDeployment, Background int
	Batches                                    int
	BusySeconds                                float64 // sum over the steps of first write -> queue drained
	BusyEventsPerSecond                        float64 // Events / BusySeconds: what the watcher absorbs when written to as fast as it takes
	PodsCreated, PodsDeleted, SliceWrites      int
	DetectSeconds                              float64 // break injected during churn -> verdict layer=endpoints in the store; -1: not seen
	DetectService                              string
	ChurnedProbes                              uint64 // Service probes completed during the churn
	// ProgrammingHeld and ProgrammingMeasured are the network programming measurement's share of
	// the churn (issue 21): rechecks at the cadence that did not show the change yet, and
	// changes measured (ended done).
	ProgrammingHeld, ProgrammingMeasured uint64
	FalseVerdicts                        int            // Services (other than the broken one) whose verdict was not ok during the churn
	FalseDetail                          map[string]int // their verdicts, layer/reason
	VerdictPolls                         int

	// Web.
	Pages       []PageTiming
	MachineBusy float64 // all CPUs, everyone's work, while the pages were requested with the pipeline probing

	Verdicts map[string]int // every Service's verdict at the end, layer/reason
	Notes    []string
}

// PageTiming is one URL of the web shape.
type PageTiming struct {
	Name         string
	Path         string
	Requests     int
	LiveMedian   float64 // wall seconds, median, while the pipeline probes
	LiveP90      float64
	IdleMedian   float64 // wall seconds, median, pipeline stopped
	CPUMicros    float64 // process CPU per request, pipeline stopped (client and server, same process), µs
	Bytes        int
	Status       int
	IdleRequests int
}

// shapeOptions are a shapes child's flags.
type shapeOptions struct {
	shape, variant   string
	services         int
	podsPer          int
	events           int
	deployments      int
	deployPods       int
	background       int
	maxTime          time.Duration
	ports            Ports
	control          string
	cfg              benchConfig
	out              string
	webRequests      int
	namespaceSpreads int
}

func runShapes(args []string) error {
	fs := flag.NewFlagSet("shapes", flag.ContinueOnError)
	o := shapeOptions{}
	fs.StringVar(&o.shape, "shape", "", "pods | namespace | churn | web")
	fs.StringVar(&o.variant, "variant", "", "pods: none|pods; namespace: spread|one|shared")
	fs.IntVar(&o.services, "n", 10000, "Services (pods, namespace, web)")
	fs.IntVar(&o.podsPer, "pods-per", 10, "Pods (and endpoints) per Service")
	fs.IntVar(&o.events, "events", 5000, "namespace: Pod updates")
	fs.IntVar(&o.deployments, "deployments", 3, "churn: Deployments rolled")
	fs.IntVar(&o.deployPods, "deploy-pods", 1000, "churn: Pods per Deployment")
	fs.IntVar(&o.background, "background", 2000, "churn: other Services (10 Pods each), probed during the churn")
	fs.DurationVar(&o.maxTime, "max-time", 90*time.Second, "bound of the writes (namespace, churn)")
	fs.IntVar(&o.webRequests, "requests", 200, "web: requests per URL (/: a fifth, /metrics: 3)")
	fs.IntVar(&o.ports.Pod, "pod-port", 0, "")
	fs.IntVar(&o.ports.Service, "svc-port", 0, "")
	fs.StringVar(&o.control, "control", "", "serve child's stats endpoint (unused by most shapes)")
	interval := fs.Duration("interval", 15*time.Second, "--probe.interval")
	conc := fs.Int("concurrency", 64, "--probe.concurrency")
	conns := fs.Float64("conns", 11000, "--probe.max-new-conns-per-second")
	qps := fs.Float64("dns-qps", 3000, "--dns.max-qps")
	fs.StringVar(&o.out, "out", "bench/out", "")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if o.ports.Pod == 0 || o.ports.Service == 0 {
		return fmt.Errorf("shapes: -pod-port and -svc-port are required")
	}
	o.cfg = benchConfig{Interval: *interval, Timeout: 2 * time.Second, Concurrency: *conc, NewConnsPerSecond: *conns, DNSQPS: *qps,
		PodSpread: 1, VIPConnections: probe.DefaultConnections}
	// The watcher's queue, counted (depth, gets, dones): when it drained is when the events were
	// absorbed. Before pipeline.New, which creates the queue.
	workqueue.SetProvider(&serviceQueue)
	start := time.Now()
	var res ShapesResult
	var err error
	switch o.shape {
	case "pods":
		res, err = shapePods(o)
	case "namespace":
		res, err = shapeNamespace(o)
	case "churn":
		res, err = shapeChurn(o)
	case "web":
		res, err = shapeWeb(o)
	default:
		return fmt.Errorf("shapes: -shape=%q: want pods, namespace, churn or web", o.shape)
	}
	if err != nil {
		return err
	}
	res.Shape, res.Variant, res.WallSeconds = o.shape, o.variant, time.Since(start).Seconds()
	out, _ := json.Marshal(res)
	fmt.Printf("RESULT %s\n", out)
	return nil
}

// shapeRun is one child's list of runs, for the orchestrator.
type shapeRun struct {
	shape, variant string
	args           []string
}

// shapeRuns are the orchestrator's shapes children, in order; short runs smaller sizes.
func shapeRuns(short bool) []shapeRun {
	n, nsN, nsPods, deps, bg, webN := 10000, 5000, 4, 3, 2000, 10000
	if short {
		n, nsN, deps, bg = 2000, 1000, 1, 500
	}
	events := nsN * nsPods // each Pod once
	a := func(kv ...any) []string {
		var out []string
		for i := 0; i+1 < len(kv); i += 2 {
			out = append(out, fmt.Sprintf("-%s=%v", kv[i], kv[i+1]))
		}
		return out
	}
	return []shapeRun{
		{"pods", "none", a("n", n, "pods-per", 10)},
		{"pods", "pods", a("n", n, "pods-per", 10)},
		{"namespace", "spread", a("n", nsN, "pods-per", nsPods, "events", events)},
		{"namespace", "one", a("n", nsN, "pods-per", nsPods, "events", events)},
		{"namespace", "shared", a("n", nsN, "pods-per", nsPods, "events", events)},
		{"churn", "", a("deployments", deps, "deploy-pods", 1000, "background", bg)},
		{"web", "", a("n", webN)},
	}
}

// shapesMaxServices is the largest bench-NN Service index a shapes run names (the serve child's
// zone must answer for them).
func shapesMaxServices(short bool) int {
	m := 0
	for _, r := range shapeRuns(short) {
		for _, a := range r.args {
			if v, ok := strings.CutPrefix(a, "-n="); ok {
				var n int
				fmt.Sscan(v, &n)
				m = max(m, n)
			}
		}
	}
	return m
}

// runShapeChildren runs every shape as a child of its own and returns their results; a failed
// child is reported (in the returned notes) and the others still run.
func runShapeChildren(ctx context.Context, self string, o options, portArgs []string, control string) shapesOutcome {
	var rs []ShapesResult
	var notes []string
	for _, r := range shapeRuns(o.short) {
		args := append([]string{"shapes", "-shape=" + r.shape, "-variant=" + r.variant, "-control=" + control,
			fmt.Sprintf("-interval=%s", o.interval), fmt.Sprintf("-concurrency=%d", o.conc), fmt.Sprintf("-conns=%g", o.conns), fmt.Sprintf("-dns-qps=%g", o.dnsQPS), "-out=" + o.out}, portArgs...)
		args = append(args, r.args...)
		name := strings.TrimSuffix(fmt.Sprintf("shape-%s-%s", r.shape, r.variant), "-")
		fmt.Printf("shape %s %s ...\n", r.shape, r.variant)
		t0 := time.Now()
		var res ShapesResult
		if err := child(ctx, self, filepath.Join(o.out, name+".log"), &res, args...); err != nil {
			notes = append(notes, fmt.Sprintf("shape %s %s: %v", r.shape, r.variant, err))
			fmt.Printf("  failed: %v\n", err)
			continue
		}
		fmt.Printf("  %s\n", shapeSummary(res, time.Since(t0)))
		rs = append(rs, res)
	}
	return shapesOutcome{Results: rs, Notes: notes, Short: o.short}
}

// shapesOutcome is every shapes child's result, and the children that failed.
type shapesOutcome struct {
	Results []ShapesResult
	Notes   []string
	Short   bool
}

func shapeSummary(r ShapesResult, took time.Duration) string {
	switch r.Shape {
	case "pods":
		return fmt.Sprintf("%d Services, %d Pods: RSS +%s, synced %.1fs, targets %.1fs, first round %.1fs (%s)", r.Services, r.Pods, mib(r.RSSDelta), r.SyncSeconds, r.TargetsSeconds, r.FirstRoundSeconds, took.Round(time.Second))
	case "namespace":
		return fmt.Sprintf("%d events in %.1fs (%.0f/s), %.1f µs CPU/event gross, %.1f net (%s)", r.Events, r.EventSeconds, r.EventsPerSecond, r.GrossMicros, r.NetMicros, took.Round(time.Second))
	case "churn":
		return fmt.Sprintf("%d events over %.0fs (%.0f/s while written), %.0f µs CPU/event; false verdicts %d, detection %.3fs (%s)", r.Events, r.EventSeconds, r.BusyEventsPerSecond, r.GrossMicros, r.FalseVerdicts, r.DetectSeconds, took.Round(time.Second))
	case "web":
		var parts []string
		for _, p := range r.Pages {
			parts = append(parts, fmt.Sprintf("%s %.1f ms", p.Name, 1000*p.LiveMedian))
		}
		return strings.Join(parts, ", ") + fmt.Sprintf(" (%s)", took.Round(time.Second))
	}
	return ""
}

// --- the watcher's queue, counted ---

// queueCounts counts the discovery watcher's queue ("svcprobe_services") through client-go's
// workqueue metrics provider: items added and not yet taken (depth), taken (gets) and finished
// (dones). Other queues get no-op metrics.
type queueCounts struct {
	depth, gets, dones atomic.Int64
}

var serviceQueue queueCounts

// drained reports whether the queue holds nothing and nothing is being processed.
func (q *queueCounts) drained() bool {
	return q.depth.Load() == 0 && q.gets.Load() == q.dones.Load()
}

type counterFunc func()

func (f counterFunc) Inc() { f() }

type gaugeFuncs struct{ inc, dec func() }

func (g gaugeFuncs) Inc() { g.inc() }
func (g gaugeFuncs) Dec() { g.dec() }

type observeFunc func()

func (f observeFunc) Observe(float64) { f() }

type noopSettable struct{}

func (noopSettable) Set(float64) {}

func (q *queueCounts) mine(name string) bool { return name == "svcprobe_services" }

func (q *queueCounts) NewDepthMetric(name string) workqueue.GaugeMetric {
	if !q.mine(name) {
		return gaugeFuncs{func() {}, func() {}}
	}
	return gaugeFuncs{func() { q.depth.Add(1) }, func() { q.depth.Add(-1) }}
}
func (q *queueCounts) NewAddsMetric(string) workqueue.CounterMetric { return counterFunc(func() {}) }
func (q *queueCounts) NewLatencyMetric(name string) workqueue.HistogramMetric {
	if !q.mine(name) {
		return observeFunc(func() {})
	}
	return observeFunc(func() { q.gets.Add(1) })
}
func (q *queueCounts) NewWorkDurationMetric(name string) workqueue.HistogramMetric {
	if !q.mine(name) {
		return observeFunc(func() {})
	}
	return observeFunc(func() { q.dones.Add(1) })
}
func (q *queueCounts) NewUnfinishedWorkSecondsMetric(string) workqueue.SettableGaugeMetric {
	return noopSettable{}
}
func (q *queueCounts) NewLongestRunningProcessorSecondsMetric(string) workqueue.SettableGaugeMetric {
	return noopSettable{}
}
func (q *queueCounts) NewRetriesMetric(string) workqueue.CounterMetric { return counterFunc(func() {}) }

// waitDrained waits, bounded, until the watcher's queue is drained and stays so for 50 ms.
func waitDrained(limit time.Duration) bool {
	end := time.Now().Add(limit)
	stable := 0
	for time.Now().Before(end) {
		if serviceQueue.drained() {
			stable++
			if stable >= 10 {
				return true
			}
		} else {
			stable = 0
		}
		time.Sleep(5 * time.Millisecond)
	}
	return false
}

// --- flow control: the fake clientset's watch channels hold 100 events and panic when full ---

// flow paces the bench's writes by the events the watcher has handled: at most maxInFlight
// writes ahead of them. A handled event has left the watch channel (the informer's DeltaFIFO and
// handler buffers come after it), so the channel never holds more.
type flow struct {
	events   func() uint64
	e0       uint64
	writes   int
	timeouts int
}

const maxInFlight = 40

func newFlow(events func() uint64) *flow { return &flow{events: events, e0: events()} }

// wrote notes one write (each makes exactly one event) and waits while too many are in flight.
func (f *flow) wrote() {
	f.writes++
	if f.inFlight() < maxInFlight {
		return
	}
	end := time.Now().Add(30 * time.Second)
	for f.inFlight() > maxInFlight/2 {
		if time.Now().After(end) {
			f.timeouts++
			return
		}
		time.Sleep(200 * time.Microsecond)
	}
}

func (f *flow) inFlight() int { return f.writes - int(f.events()-f.e0) }

// --- objects ---

// shapeEndpoint is one endpoint of a shapes slice and its Pod.
type shapeEndpoint struct {
	ip, pod, node            string
	ready, terminating, gone bool
}

// shapeService is a ClusterIP Service named name in ns with the bench's port, ClusterIP
// clusterIP(idx), and a selector (none when sel is nil).
func shapeService(idx int, ns, name string, sel map[string]string, p Ports) *corev1.Service {
	s := benchService(idx, p)
	s.Namespace, s.Name = ns, name
	s.UID = types.UID(fmt.Sprintf("00000000-shape-svc-%s-%s", ns, name))
	s.Spec.Selector = sel
	return s
}

// shapeSlice is an EndpointSlice of Service svc (in ns) listing eps on the bench's Pod port.
func shapeSlice(ns, svc, name string, eps []shapeEndpoint, p Ports, rv int) *discoveryv1.EndpointSlice {
	s := &discoveryv1.EndpointSlice{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns, UID: types.UID("00000000-shape-eps-" + ns + "-" + name), ResourceVersion: fmt.Sprint(rv),
			Labels: map[string]string{discoveryv1.LabelServiceName: svc, discoveryv1.LabelManagedBy: "endpointslice-controller.k8s.io"}},
		AddressType: discoveryv1.AddressTypeIPv4,
		Ports:       []discoveryv1.EndpointPort{{Name: ptr.To("http"), Port: ptr.To(int32(p.Pod)), Protocol: ptr.To(corev1.ProtocolTCP)}},
	}
	for _, e := range eps {
		s.Endpoints = append(s.Endpoints, discoveryv1.Endpoint{
			Addresses:  []string{e.ip},
			Conditions: discoveryv1.EndpointConditions{Ready: ptr.To(e.ready), Serving: ptr.To(e.ready || e.terminating), Terminating: ptr.To(e.terminating)},
			NodeName:   ptr.To(e.node),
			TargetRef:  &corev1.ObjectReference{Kind: "Pod", Namespace: ns, Name: e.pod},
		})
	}
	return s
}

// shapePod is a running Pod as a kubelet reports it: labels, node, IP, the Ready condition (and
// the others a kubelet sets), one container declaring the bench's Pod port.
func shapePod(ns string, e shapeEndpoint, labels map[string]string, p Ports, rv int) *corev1.Pod {
	ready := corev1.ConditionFalse
	if e.ready {
		ready = corev1.ConditionTrue
	}
	t0 := metav1.NewTime(time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC))
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: e.pod, Namespace: ns, UID: types.UID("00000000-shape-pod-" + ns + "-" + e.pod), ResourceVersion: fmt.Sprint(rv),
			Labels: labels, Annotations: map[string]string{"kubernetes.io/config.seen": "2026-12-01T00:00:00Z"},
			OwnerReferences: []metav1.OwnerReference{{APIVersion: "apps/v1", Kind: "ReplicaSet", Name: labels["app"] + "-" + labels["pod-template-hash"], UID: "rs", Controller: ptr.To(true)}}},
		Spec: corev1.PodSpec{NodeName: e.node, Containers: []corev1.Container{{Name: "app", Image: "registry.example.com/app:v1",
			Ports: []corev1.ContainerPort{{Name: "http", ContainerPort: int32(p.Pod), Protocol: corev1.ProtocolTCP}}}}},
		Status: corev1.PodStatus{Phase: corev1.PodRunning, PodIP: e.ip, PodIPs: []corev1.PodIP{{IP: e.ip}}, HostIP: "127.0.0.1",
			Conditions: []corev1.PodCondition{
				{Type: corev1.PodScheduled, Status: corev1.ConditionTrue, LastTransitionTime: t0},
				{Type: corev1.PodInitialized, Status: corev1.ConditionTrue, LastTransitionTime: t0},
				{Type: corev1.ContainersReady, Status: ready, LastTransitionTime: t0},
				{Type: corev1.PodReady, Status: ready, LastTransitionTime: t0},
			}},
	}
}

// shapeZoneEntry is a Service the serve child's DNS must answer for, beyond bench-NN/svc-NNNNN.
type shapeZoneEntry struct{ ns, name, ip string }

// The namespaces of the shapes' own Services.
const (
	oneNamespace   = "bench-one"   // the namespace shape's single namespace
	churnNamespace = "bench-churn" // the churn shape's Deployments
	churnIdxBase   = 30000         // clusterIP index of the churn Deployments' Services
)

// shapeZone is what the serve child answers beyond the scale runs' Services: the namespace
// shape's one namespace and the churn shape's Deployments' Services.
func shapeZone() []shapeZoneEntry {
	var out []shapeZoneEntry
	for i := range 5000 {
		out = append(out, shapeZoneEntry{oneNamespace, serviceName(i), clusterIP(i).String()})
	}
	for d := range 10 {
		out = append(out, shapeZoneEntry{churnNamespace, deployName(d), clusterIP(churnIdxBase + d).String()})
	}
	return out
}

func deployName(d int) string { return fmt.Sprintf("deploy-%02d", d) }

// --- the pipeline ---

// shapePipeline is a running pipeline.New over a fake clientset, served on httptest.
type shapePipeline struct {
	p      *pipeline.Pipeline
	srv    *httptest.Server
	cancel context.CancelFunc
	done   chan struct{}
	start  time.Time
	cpu0   time.Duration // process CPU at the start
	// targetsCPU is the process CPU from the start until every Target was pushed (waitReady).
	targetsCPU time.Duration
}

// startShapePipeline builds the exporter's pipeline over client, serves its handler and runs it.
func startShapePipeline(o shapeOptions, client kubernetes.Interface) (*shapePipeline, error) {
	p, err := newBenchPipeline(o.cfg, mustResolvConf(), client, shapeLogger())
	if err != nil {
		return nil, err
	}
	s := &shapePipeline{p: p, srv: httptest.NewServer(p.Handler), done: make(chan struct{}), start: time.Now(), cpu0: cpuTime()}
	ctx, cancel := context.WithCancel(context.Background())
	s.cancel = cancel
	go func() { _ = p.Run(ctx); close(s.done) }()
	return s, nil
}

// waitReady waits, bounded, for the informers to sync, for n Targets pushed and for every
// Service probed once; each returned as seconds since the start (-1: not within the bound).
func (s *shapePipeline) waitReady(n int, limit time.Duration) (synced, targets, firstRound float64) {
	end := time.Now().Add(limit)
	synced, targets, firstRound = -1, -1, -1
	for time.Now().Before(end) {
		if synced < 0 && s.p.Watcher.Synced() {
			synced = time.Since(s.start).Seconds()
		}
		if synced >= 0 && targets < 0 && s.p.Watcher.Targets() >= n {
			targets = time.Since(s.start).Seconds()
			s.targetsCPU = cpuTime() - s.cpu0
		}
		if targets >= 0 && s.p.Scheduler.Pending() == 0 {
			return synced, targets, time.Since(s.start).Seconds()
		}
		time.Sleep(10 * time.Millisecond)
	}
	return synced, targets, firstRound
}

// stop stops the pipeline (the handler still serves what the store holds).
func (s *shapePipeline) stop() {
	if s.cancel != nil {
		s.cancel()
		<-s.done
		s.cancel = nil
	}
}

// close stops the pipeline and its server.
func (s *shapePipeline) close() {
	s.stop()
	s.srv.Close()
}

// verdictsOf counts the store's verdicts by layer/reason.
func verdictsOf(store *metrics.Store) map[string]int {
	sts, _ := store.Snapshot()
	out := map[string]int{}
	for _, st := range sts {
		out[string(st.Verdict)+"/"+string(st.Reason)]++
	}
	return out
}

func shapeLogger() *slog.Logger {
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
}

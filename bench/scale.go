package main

import (
	"compress/gzip"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"os"
	"runtime"
	"runtime/pprof"
	"slices"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	kruntime "k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/fake"
	"k8s.io/utils/ptr"

	"github.com/svcprobe/svcprobe/metrics"
	"github.com/svcprobe/svcprobe/pipeline"
	"github.com/svcprobe/svcprobe/probe"
)

// benchConfig is the subset of the exporter's flags the bench sets (the rest keep their defaults).
type benchConfig struct {
	Interval          time.Duration
	Timeout           time.Duration
	Concurrency       int
	NewConnsPerSecond float64
	DNSQPS            float64
	PodSpread         int // --probe.pod.spread (0 or 1: every endpoint every interval)
	VIPConnections    int // --probe.vip-connections (connections per ClusterIP and port a round)
}

// The bench's address plan as --cluster.cidr ranges (objects.go): the endpoints' range, which
// hand-written EndpointSlices without Pod objects reach only through the cluster's ranges (as in a
// cluster that names them), and the DNS Pod. ClusterIPs are the Services' own: the guard allows
// them as in any cluster.
var benchClusterCIDRs = []netip.Prefix{
	netip.MustParsePrefix("127.8.0.0/13"),               // endpointIP: 127.10.0.1 upwards, room for 384k endpoints
	netip.PrefixFrom(netip.MustParseAddr(dnsPodIP), 32), // the DNS Pod
}

// benchClusterCIDRsFlag is benchClusterCIDRs as --cluster.cidr values.
func benchClusterCIDRsFlag() string {
	s := make([]string, len(benchClusterCIDRs))
	for i, p := range benchClusterCIDRs {
		s[i] = p.String()
	}
	return strings.Join(s, ",")
}

// pipelineConfig is the exporter's configuration without flags (pipeline.Defaults, which its flags
// default to) with the bench's settings, each what an exporter flag would set: the budgets and
// intervals (--probe.*, --dns.max-qps), the Pod's resolv.conf (--dns.resolv-conf) and the bench's
// address ranges (--cluster.cidr).
func (c benchConfig) pipelineConfig(rc probe.ResolvConf) pipeline.Config {
	p := pipeline.Defaults()
	p.Interval, p.Timeout = c.Interval, c.Timeout
	p.Concurrency, p.NewConnsPerSecond, p.DNSQPS = c.Concurrency, c.NewConnsPerSecond, c.DNSQPS
	p.PodSpread, p.VIPConnections = c.PodSpread, c.VIPConnections
	p.ResolvConf = rc
	p.ClusterCIDRs = benchClusterCIDRs
	return p
}

// newBenchPipeline is the exporter's pipeline (pipeline.New, which cmd/exporter serves) over the
// bench's clientset; the bench serves its Handler with httptest instead of the exporter-toolkit.
func newBenchPipeline(cfg benchConfig, rc probe.ResolvConf, client kubernetes.Interface, log *slog.Logger) (*pipeline.Pipeline, error) {
	return pipeline.New(cfg.pipelineConfig(rc), client, log)
}

// ScaleResult is what one scale run reports to the orchestrator.
type ScaleResult struct {
	Services, EndpointsPerService int
	Budget                        benchConfig

	SyncSeconds       float64 // informers synced
	FirstRoundSeconds float64 // every Service probed once (readiness)

	WindowSeconds  float64 // wall time of the CPU window
	CPUSeconds     float64 // exporter process CPU in the window
	UserSeconds    float64 // of which user mode (the rest is the kernel, loopback peers' share included)
	Cores          float64
	MachineBusy    float64 // all CPUs, everyone's work, in the window
	LoadAvg        string
	RoundsExpected float64 // Services x window / interval
	Rounds         uint64  // Service probes completed in the window
	SkippedRounds  uint64
	MaxLagSeconds  float64 // largest sampled scheduler lag in the window
	ServerConns    int64   // connections accepted by the servers in the window
	ServerDNS      int64   // DNS queries received by the servers in the window

	RSSBaseline, RSS, RSSDelta    int64 // VmRSS after runtime.GC: fake clientset only, with the exporter, difference
	HeapBaseline, Heap, HeapDelta int64 // HeapInuse likewise
	HWM                           int64 // VmHWM (peak RSS, fake clientset included)

	ScrapeLiveSeconds     float64 // median of 3 scrapes while the pipeline probes
	ScrapeSeconds         float64 // median of 3 scrapes (gather + OpenMetrics encode + gzip, over loopback HTTP), pipeline stopped
	ScrapeCPUSeconds      float64 // process CPU per scrape (median)
	ScrapeBytes           int
	BaselineScrapeSeconds float64 // same number of precomputed const series through the same handler
	Series                int
	Verdicts              map[string]int // bench Services by layer/reason at the end (false alarms show here)
	ServiceSeries         int            // series with a bench Service's labels
	SeriesPerService      float64

	MaxConnsPerWindow, MaxDNSPerWindow   int64 // at the servers, per 1 s window, whole run
	ConnWindows, DNSWindows              int
	SocketsStart, SocketsEnd, SocketsMax SockCount
	SoakSeconds                          float64

	DetectSeconds, DetectLowerSeconds float64 // -1 when not measured or not seen
	DetectStoreSeconds                float64 // until the store's snapshot (what Collect reads) has the verdict
	DetectSeen                        bool

	Paced PacedBaseline

	Profile string
	Notes   []string
}

func runScale(args []string) error {
	fs := flag.NewFlagSet("scale", flag.ContinueOnError)
	n := fs.Int("n", 1000, "Services")
	eps := fs.Int("eps", 10, "ready endpoints per Service")
	podPort := fs.Int("pod-port", 0, "")
	svcPort := fs.Int("svc-port", 0, "")
	control := fs.String("control", "", "serve child's stats endpoint")
	interval := fs.Duration("interval", 15*time.Second, "--probe.interval")
	intervals := fs.Int("intervals", 2, "intervals in the CPU window")
	conc := fs.Int("concurrency", 64, "--probe.concurrency")
	conns := fs.Float64("conns", 8000, "--probe.max-new-conns-per-second")
	qps := fs.Float64("dns-qps", 3000, "--dns.max-qps")
	spread := fs.Int("spread", 1, "--probe.pod.spread")
	vipConns := fs.Int("vip-connections", probe.DefaultConnections, "--probe.vip-connections")
	profile := fs.String("profile", "", "write a CPU profile of one more interval here")
	detect := fs.Bool("detect", false, "measure detection latency")
	soak := fs.Duration("soak", 0, "keep running this long after the measurements, watching ports and budgets")
	fs.String("out", "bench/out", "the orchestrator's -out (profiles are named by -profile)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	ports := Ports{Pod: *podPort, Service: *svcPort}
	cfg := benchConfig{Interval: *interval, Timeout: 2 * time.Second, Concurrency: *conc, NewConnsPerSecond: *conns, DNSQPS: *qps, PodSpread: max(1, *spread),
		VIPConnections: max(1, *vipConns)}
	res := ScaleResult{Services: *n, EndpointsPerService: *eps, Budget: cfg, DetectSeconds: -1, DetectLowerSeconds: -1, DetectStoreSeconds: -1}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))

	// The objects, in client-go's fake clientset (its tracker holds them in this process: the
	// baseline below is measured with them loaded, and the exporter's share is the difference).
	objs := make([]kruntime.Object, 0, 2**n+2)
	for i := range *n {
		objs = append(objs, benchService(i, ports), benchSlice(i, *eps, ports))
	}
	dsvc, dsl := dnsObjects()
	objs = append(objs, dsvc, dsl)
	client := fake.NewSimpleClientset(objs...)
	objs = nil
	res.RSSBaseline, res.HeapBaseline = memAfterGC()

	e, err := newBenchPipeline(cfg, mustResolvConf(), client, log)
	if err != nil {
		return err
	}
	srv := httptest.NewServer(e.Handler) // 127.0.0.1
	defer srv.Close()

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	runStart := time.Now()
	res.SocketsStart = countSockets(ports.Pod, ports.Service)
	res.SocketsMax = res.SocketsStart
	done := make(chan struct{}, 1)
	go func() { _ = e.Run(ctx); done <- struct{}{} }()
	stopped := false
	defer func() {
		if !stopped {
			cancel()
			<-done
		}
	}()

	// Synced, then every Service probed once; bounded.
	limit := time.Now().Add(max(5*time.Minute, 20**interval))
	for !e.Watcher.Synced() && time.Now().Before(limit) {
		time.Sleep(20 * time.Millisecond)
	}
	res.SyncSeconds = time.Since(runStart).Seconds()
	for (e.Scheduler.Pending() > 0 || e.Watcher.Targets() < *n) && time.Now().Before(limit) {
		time.Sleep(50 * time.Millisecond)
	}
	res.FirstRoundSeconds = time.Since(runStart).Seconds()
	if e.Scheduler.Pending() > 0 {
		res.Notes = append(res.Notes, fmt.Sprintf("%d Services still unprobed at the time limit", e.Scheduler.Pending()))
	}
	time.Sleep(time.Second) // the first-round burst is over; rounds follow each Service's phase now

	// The CPU window: the pipeline alone (no scrape in it), intervals x interval.
	stats := e.Scheduler.Stats()
	sampleSockets := func() {
		s := countSockets(ports.Pod, ports.Service)
		if s.Established+s.TimeWait+s.Other > res.SocketsMax.Established+res.SocketsMax.TimeWait+res.SocketsMax.Other {
			res.SocketsMax = s
		}
	}
	st0 := readCPUStat()
	r0, sk0 := stats.Rounds.Load(), stats.Skipped.Load()
	w0, c0, u0 := time.Now(), cpuTime(), userTime()
	var maxLag time.Duration
	for end := w0.Add(time.Duration(*intervals) * *interval); time.Now().Before(end); {
		time.Sleep(min(time.Second, time.Until(end)))
		maxLag = max(maxLag, time.Duration(stats.LagNanos.Load()))
		sampleSockets()
	}
	c1, w1, u1 := cpuTime(), time.Now(), userTime()
	res.UserSeconds = (u1 - u0).Seconds()
	r1, sk1 := stats.Rounds.Load(), stats.Skipped.Load()
	st1 := readCPUStat()
	res.WindowSeconds = w1.Sub(w0).Seconds()
	res.CPUSeconds = (c1 - c0).Seconds()
	res.Cores = res.CPUSeconds / res.WindowSeconds
	res.MachineBusy = machineBusy(st0, st1)
	res.LoadAvg = loadAvg()
	res.Rounds, res.SkippedRounds = r1-r0, sk1-sk0
	res.RoundsExpected = float64(*n+1) * res.WindowSeconds / interval.Seconds()
	res.MaxLagSeconds = maxLag.Seconds()
	if ss, err := serveStats(*control); err == nil {
		res.ServerConns, res.ServerDNS = sumWindows(ss.Conns, ss.Start, w0, w1), sumWindows(ss.DNS, ss.Start, w0, w1)
	} else {
		res.Notes = append(res.Notes, "server stats: "+err.Error())
	}

	res.RSS, res.Heap = memAfterGC()
	res.RSSDelta, res.HeapDelta = res.RSS-res.RSSBaseline, res.Heap-res.HeapBaseline
	res.HWM = procStatusKB("VmHWM") << 10

	// Scrapes while the pipeline runs: the wall time a scraper sees on this machine.
	var live []float64
	for range 3 {
		t0 := time.Now()
		if _, err := scrape(srv.URL + "/metrics"); err != nil {
			return err
		}
		live = append(live, time.Since(t0).Seconds())
	}
	res.ScrapeLiveSeconds = median(live)

	if *profile != "" {
		pf, err := os.Create(*profile)
		if err != nil {
			return err
		}
		if err := pprof.StartCPUProfile(pf); err != nil {
			return err
		}
		time.Sleep(*interval)
		pprof.StopCPUProfile()
		pf.Close()
		res.Profile = *profile
		if hf, err := os.Create(strings.TrimSuffix(*profile, ".pprof") + "-heap.pprof"); err == nil {
			runtime.GC()
			_ = pprof.WriteHeapProfile(hf)
			hf.Close()
		}
	}

	if *detect {
		res.DetectStoreSeconds, res.DetectSeconds, res.DetectLowerSeconds, res.DetectSeen = detectLatency(client, e.Store, srv.URL+"/metrics", *n/2, *eps, ports)
	}

	for end := time.Now().Add(*soak); time.Now().Before(end); {
		time.Sleep(min(5*time.Second, time.Until(end)))
		sampleSockets()
	}
	res.SoakSeconds = soak.Seconds()
	runEnd := time.Now()
	res.SocketsEnd = countSockets(ports.Pod, ports.Service)
	if ss, err := serveStats(*control); err == nil {
		res.MaxConnsPerWindow, res.ConnWindows = maxWindow(ss.Conns, ss.Start, runStart, runEnd)
		res.MaxDNSPerWindow, res.DNSWindows = maxWindow(ss.DNS, ss.Start, runStart, runEnd)
	}
	cancel()
	<-done
	stopped = true
	// Scrapes with the pipeline stopped (the store keeps its state): CPU per scrape is then the
	// scrape's alone.
	var walls, cpus []float64
	var body string
	var sp *os.File
	if *profile != "" {
		if sp, err = os.Create(strings.TrimSuffix(*profile, ".pprof") + "-scrape.pprof"); err == nil {
			_ = pprof.StartCPUProfile(sp)
		}
	}
	for range 3 {
		c0, t0 := cpuTime(), time.Now()
		b, err := scrape(srv.URL + "/metrics")
		walls = append(walls, time.Since(t0).Seconds())
		cpus = append(cpus, (cpuTime() - c0).Seconds())
		if err != nil {
			return err
		}
		body = b
	}
	if sp != nil {
		pprof.StopCPUProfile()
		sp.Close()
	}
	res.ScrapeSeconds, res.ScrapeCPUSeconds = median(walls), median(cpus)
	res.ScrapeBytes = len(body)
	res.Series, res.ServiceSeries = countSeries(body)
	res.Verdicts = countVerdicts(body)
	res.SeriesPerService = float64(res.ServiceSeries) / float64(*n)
	res.BaselineScrapeSeconds = baselineScrape(body)

	if res.WindowSeconds > 0 {
		res.Paced = pacedBaseline(*n, *eps, cfg.PodSpread, min(*eps, cfg.VIPConnections), ports, float64(res.ServerConns)/res.WindowSeconds, float64(res.ServerDNS)/res.WindowSeconds,
			*conc, min(*interval, 15*time.Second))
	}
	out, _ := json.Marshal(res)
	fmt.Printf("RESULT %s\n", out)
	return nil
}

func memAfterGC() (rss, heap int64) {
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return rssBytes(), int64(ms.HeapInuse)
}

func procStatusKB(key string) int64 {
	f, err := os.Open("/proc/self/status")
	if err != nil {
		return 0
	}
	defer f.Close()
	kb, _ := statusKB(f, key)
	return kb
}

func serveStats(control string) (ServeStats, error) {
	var ss ServeStats
	c := http.Client{Timeout: 5 * time.Second}
	resp, err := c.Get("http://" + control + "/stats")
	if err != nil {
		return ss, err
	}
	defer resp.Body.Close()
	err = json.NewDecoder(resp.Body).Decode(&ss)
	return ss, err
}

// windowRange maps [from, to) to indexes of per-second windows starting at start; only whole
// windows inside the range count.
func windowRange(n int, start, from, to time.Time) (lo, hi int) {
	lo = int((from.Sub(start) + time.Second - 1) / time.Second)
	hi = int(to.Sub(start) / time.Second)
	return max(lo, 0), min(hi, n)
}

func sumWindows(w []int64, start, from, to time.Time) int64 {
	// The sum uses partial windows too: every query in the time range counts.
	lo := max(int(from.Sub(start)/time.Second), 0)
	hi := min(int(to.Sub(start)/time.Second)+1, len(w))
	var s int64
	for i := lo; i < hi; i++ {
		s += w[i]
	}
	return s
}

func maxWindow(w []int64, start, from, to time.Time) (int64, int) {
	lo, hi := windowRange(len(w), start, from, to)
	var m int64
	for i := lo; i < hi; i++ {
		m = max(m, w[i])
	}
	return m, max(hi-lo, 0)
}

var scrapeClient = &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{DisableCompression: true}}

// scrape GETs url the way Prometheus does (OpenMetrics first, gzip) and returns the body.
func scrape(url string) (string, error) {
	req, _ := http.NewRequest(http.MethodGet, url, nil)
	req.Header.Set("Accept", "application/openmetrics-text;version=1.0.0;q=0.6,application/openmetrics-text;version=0.0.1;q=0.5,text/plain;version=1.0.0;q=0.4,text/plain;version=0.0.4;q=0.3,*/*;q=0.2")
	req.Header.Set("Accept-Encoding", "gzip")
	resp, err := scrapeClient.Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	var r io.Reader = resp.Body
	if resp.Header.Get("Content-Encoding") == "gzip" {
		zr, err := gzip.NewReader(resp.Body)
		if err != nil {
			return "", err
		}
		r = zr
	}
	b, err := io.ReadAll(r)
	if err != nil {
		return "", err
	}
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("scrape: HTTP %d", resp.StatusCode)
	}
	return string(b), nil
}

// countSeries counts sample lines, and among them those of a bench Service (svc-NNNNN).
func countSeries(body string) (all, perService int) {
	for line := range strings.Lines(body) {
		if line == "" || line[0] == '#' || strings.TrimSpace(line) == "" {
			continue
		}
		all++
		if strings.Contains(line, `service="svc-`) {
			perService++
		}
	}
	return all, perService
}

// baselineScrape serves the same sample lines as precomputed const gauges through promhttp with
// the same options: what encoding that many series costs, without svcprobe's collector.
func baselineScrape(body string) float64 {
	type sample struct {
		desc *prometheus.Desc
		lv   []string
	}
	descs := map[string]*prometheus.Desc{}
	var samples []sample
	for line := range strings.Lines(body) {
		if line == "" || line[0] == '#' {
			continue
		}
		name, rest, ok := strings.Cut(line, "{")
		if !ok {
			continue
		}
		labels, _, _ := strings.Cut(rest, "}")
		var keys, vals []string
		for _, kv := range strings.Split(labels, `",`) {
			k, v, _ := strings.Cut(kv, `="`)
			keys = append(keys, k)
			vals = append(vals, strings.TrimSuffix(v, `"`))
		}
		key := name + "|" + strings.Join(keys, ",")
		d, ok := descs[key]
		if !ok {
			d = prometheus.NewDesc("baseline_"+name, "baseline", keys, nil)
			descs[key] = d
		}
		samples = append(samples, sample{d, vals})
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectorFunc(func(ch chan<- prometheus.Metric) {
		for _, s := range samples {
			ch <- prometheus.MustNewConstMetric(s.desc, prometheus.GaugeValue, 1, s.lv...)
		}
	}))
	srv := httptest.NewServer(promhttp.HandlerFor(reg, promhttp.HandlerOpts{EnableOpenMetrics: true}))
	defer srv.Close()
	var walls []float64
	for range 3 {
		t0 := time.Now()
		if _, err := scrape(srv.URL); err != nil {
			return -1
		}
		walls = append(walls, time.Since(t0).Seconds())
	}
	return median(walls)
}

type collectorFunc func(chan<- prometheus.Metric)

func (f collectorFunc) Describe(chan<- *prometheus.Desc)    {} // unchecked collector
func (f collectorFunc) Collect(ch chan<- prometheus.Metric) { f(ch) }

func median(v []float64) float64 {
	if len(v) == 0 {
		return 0
	}
	s := slices.Clone(v)
	slices.Sort(s)
	return s[len(s)/2]
}

// detectLatency makes Service i's slice lose every ready endpoint and scrapes until the verdict
// says layer="endpoints". It returns the time from the update to the end of the first scrape that
// shows it (what a scraper sees) and to the start of that scrape (a lower bound).
func detectLatency(client kubernetes.Interface, store *metrics.Store, url string, i, eps int, p Ports) (atStore, upper, lower float64, seen bool) {
	sl := benchSlice(i, eps, p)
	for j := range sl.Endpoints {
		sl.Endpoints[j].Conditions = discoveryv1.EndpointConditions{Ready: ptr.To(false), Serving: ptr.To(false), Terminating: ptr.To(false)}
	}
	sl.ResourceVersion = "2"
	// client_golang sorts labels by name: layer, namespace, reason, service.
	want := fmt.Sprintf(`svcprobe_service_verdict{layer="endpoints",namespace="%s",reason="no_ready_endpoints",service="%s"}`, serviceNamespace(i), serviceName(i))
	atStore = -1
	t0 := time.Now()
	if _, err := client.DiscoveryV1().EndpointSlices(sl.Namespace).Update(context.Background(), sl, metav1.UpdateOptions{}); err != nil {
		return -1, -1, -1, false
	}
	// What the collector reads (the store's snapshot and verdict), polled: the pipeline's share.
	for k := 0; k < 2000 && time.Since(t0) < 10*time.Second && atStore < 0; k++ {
		sts, _ := store.Snapshot()
		for _, st := range sts {
			if st.Target.Name == serviceName(i) && st.Target.Namespace == serviceNamespace(i) && st.Verdict == metrics.LayerEndpoints {
				atStore = time.Since(t0).Seconds()
			}
		}
		time.Sleep(5 * time.Millisecond)
	}
	// What a scraper sees.
	for k := 0; k < 100 && time.Since(t0) < 30*time.Second; k++ {
		s0 := time.Now()
		body, err := scrape(url)
		if err != nil {
			continue
		}
		if strings.Contains(body, want) {
			return atStore, time.Since(t0).Seconds(), s0.Sub(t0).Seconds(), true
		}
	}
	return atStore, time.Since(t0).Seconds(), -1, false
}

// countVerdicts counts the bench Services' verdicts by "layer/reason".
func countVerdicts(body string) map[string]int {
	out := map[string]int{}
	for line := range strings.Lines(body) {
		if !strings.HasPrefix(line, "svcprobe_service_verdict{") || !strings.Contains(line, `service="svc-`) {
			continue
		}
		out[labelValue(line, "layer")+"/"+labelValue(line, "reason")]++
	}
	return out
}

func labelValue(line, name string) string {
	_, rest, ok := strings.Cut(line, name+`="`)
	if !ok {
		return ""
	}
	v, _, _ := strings.Cut(rest, `"`)
	return v
}

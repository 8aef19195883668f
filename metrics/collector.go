package metrics

import (
	"log/slog"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/svcprobe/svcprobe/discovery"
	"github.com/svcprobe/svcprobe/probe"
)

// DefaultSeriesPerService is the default per-Service series budget.
const DefaultSeriesPerService = 30

// Discovery is what the collector reads of discovery.
type Discovery interface {
	Synced() bool
	LastEvent() time.Time
	LastProgress() time.Time
	Stats() *discovery.Stats
	Targets() int
	Exists(namespace, name string) (exists, known bool)
}

// Expected is a Service that must exist (runbook step 1).
type Expected struct{ Namespace, Name string }

// CollectorConfig configures the series the collector emits.
type CollectorConfig struct {
	APIErrors        *atomic.Uint64 // failed requests to the API server (svcprobe_discovery_api_errors_total), when set
	SeriesPerService int            // per-Service budget; the per-endpoint series are cut to fit
	PerEndpoint      bool           // emit svcprobe_endpoint_up
	PerEndpointLimit int            // per Service, when PerEndpoint
	Expected         []Expected     // Services that must exist
	LabelValueMaxLen int            // cluster-provided label values are cut to this length
	// Node, in node mode, is this agent's node: every per-Service series and
	// svcprobe_cluster_dns_up carry it as the label node, so that the agents' series differ
	// from each other's and from central mode's (which have no node label).
	Node string
	// NodeMaxFailing, in node mode, caps the Services that get per-Service series: only those
	// failing from this node are exported, at most this many (the rest are counted in
	// svcprobe_node_services_omitted); every Service counts in svcprobe_services_by_verdict.
	NodeMaxFailing int
}

// DefaultNodeMaxFailing is the default NodeMaxFailing.
const DefaultNodeMaxFailing = 50

// Collector turns the store and the components' self-state into const metrics at scrape time.
type Collector struct {
	cfg       CollectorConfig
	store     *Store
	disc      Discovery
	sched     *probe.SchedulerStats
	budget    *probe.Budget
	log       *slog.Logger
	durations *prometheus.HistogramVec
	// programming is the network programming latency histogram, inProgress the gauge of
	// changes being programmed (issue 21).
	programming *prometheus.HistogramVec
	inProgress  *prometheus.Desc
	services    *ServiceFamilies
	dnsUp       *prometheus.Desc // descDNSUp, with the node label in node mode
}

var (
	descSynced       = prometheus.NewDesc("svcprobe_discovery_synced", "Whether the informer caches have synced.", nil, nil)
	descLastEvent    = prometheus.NewDesc("svcprobe_discovery_last_event_timestamp_seconds", "When the last informer event arrived.", nil, nil)
	descProgress     = prometheus.NewDesc("svcprobe_discovery_last_progress_timestamp_seconds", "When discovery last saw its watches move: an informer event, or a new resourceVersion (the API server's watch bookmarks bring one about every minute on a live watch, even when nothing watched changes). Long ago while the API server answers: the watches are stuck and the probed Services stale.", nil, nil)
	descEvents       = prometheus.NewDesc("svcprobe_discovery_events_total", "Informer events handled.", nil, nil)
	descAPIErr       = prometheus.NewDesc("svcprobe_discovery_api_errors_total", "Requests to the API server that failed: no answer (refused, reset, timeout) or 429, 5xx, 401, 403. Rises while the API server is gone even when the informers retry quietly.", nil, nil)
	descWatchErr     = prometheus.NewDesc("svcprobe_discovery_watch_errors_total", "List/watch failures against the API server (the informers retry and keep the last known state).", nil, nil)
	descTargets      = prometheus.NewDesc("svcprobe_targets", "Services this replica probes.", nil, nil)
	descAnnErrTotal  = prometheus.NewDesc("svcprobe_annotation_errors_total", "Malformed svcprobe.io/ annotations seen (each distinct value counted once).", nil, nil)
	descLag          = prometheus.NewDesc("svcprobe_scheduler_lag_seconds", "How late the last probe started against its slot; grows when the budgets cannot cover a round.", nil, nil)
	descMaxLag       = prometheus.NewDesc("svcprobe_scheduler_max_lag_seconds", "The largest scheduler lag since start.", nil, nil)
	descSkipped      = prometheus.NewDesc("svcprobe_scheduler_rounds_skipped_total", "Probe slots missed because the previous probe of the same Service still ran.", nil, nil)
	descProgHeld     = prometheus.NewDesc("svcprobe_scheduler_programming_held_total", "Attempts at a stage being programmed (proxy, dns) that did not show the change yet, within --probe.programming.ceiling: not recorded as failures, probed again at --probe.programming.cadence. The cost of the measurement in probes.", nil, nil)
	descSettling     = prometheus.NewDesc("svcprobe_scheduler_settling_failures_total", "Data-plane stage failures (dns, proxy, nodeport, hairpin) held back because the Service had just changed (--probe.settle); probed again after it.", nil, nil)
	descRounds       = prometheus.NewDesc("svcprobe_scheduler_probes_total", "Service probes (all network stages of one Service) completed.", nil, nil)
	descPending      = prometheus.NewDesc("svcprobe_scheduler_pending_targets", "Services not probed yet.", nil, nil)
	descConcurrency  = prometheus.NewDesc("svcprobe_budget_concurrency", "Sockets probes may hold at once: --probe.concurrency, or less when RLIMIT_NOFILE cannot hold that many beside the exporter's own descriptors.", nil, nil)
	descWaits        = prometheus.NewDesc("svcprobe_budget_waits_total", "Times a probe waited for a budget.", []string{"budget"}, nil)
	descWaitSecs     = prometheus.NewDesc("svcprobe_budget_wait_seconds_total", "Time probes spent waiting for a budget.", []string{"budget"}, nil)
	descDNSUp        = prometheus.NewDesc("svcprobe_cluster_dns_up", dnsUpHelp, []string{"kind", "server"}, nil)
	descInconclusive = prometheus.NewDesc("svcprobe_probes_inconclusive_total", "Stage runs that failed on the exporter's own limits, not the Service's: the probe budget ran out before the stage started (budget_exhausted) or no socket could be opened (port_exhausted). They count against no Service: its previous result holds.", []string{"stage", "reason"}, nil)
	descRefused      = prometheus.NewDesc("svcprobe_probes_refused_total", "Stage runs not made because every address the stage would dial was outside the cluster's ranges and not allowed (the SSRF guard; --probe.allow-external). Not runs of the Service: they are in neither svcprobe_stage_runs_total nor its failures.", []string{"stage"}, nil)
	descPeriod       = prometheus.NewDesc("svcprobe_scheduler_coverage_period_seconds", "The longest time between two probes of a Service: --probe.interval, or in node mode ceil(Services / --node.sample-size) x --probe.interval.", nil, nil)
)

const dnsUpHelp = "Whether cluster DNS answered kubernetes.default: through each resolv.conf nameserver (kind=service when it is the cluster DNS Service's ClusterIP, node_local for a node-local cache, resolver for any other, unknown while the DNS Service's IP is not known), through the search list (kind=canary), and from each DNS Pod asked directly (kind=pod)."

// NewCollector builds the collector. durations is registered by the caller with the collector.
func NewCollector(cfg CollectorConfig, store *Store, disc Discovery, sched *probe.SchedulerStats, budget *probe.Budget, log *slog.Logger) *Collector {
	if cfg.SeriesPerService <= 0 {
		cfg.SeriesPerService = DefaultSeriesPerService
	}
	if cfg.NodeMaxFailing <= 0 {
		cfg.NodeMaxFailing = DefaultNodeMaxFailing
	}
	if cfg.LabelValueMaxLen <= 0 {
		cfg.LabelValueMaxLen = 128
	}
	c := &Collector{cfg: cfg, store: store, disc: disc, sched: sched, budget: budget, log: log,
		services: newServiceFamilies(cfg, store, disc), dnsUp: descDNSUp}
	if cfg.Node != "" {
		c.dnsUp = prometheus.NewDesc("svcprobe_cluster_dns_up", dnsUpHelp, []string{"kind", "server"},
			prometheus.Labels{"node": BoundLabel(cfg.Node, cfg.LabelValueMaxLen)})
	}
	c.durations = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name: "svcprobe_probe_duration_seconds",
		Help: "Duration of stage runs, by stage (classic buckets include common SLO thresholds; native buckets too).",
		// 5ms..10s with the usual SLO thresholds (100ms, 250ms, 500ms, 1s) as edges.
		Buckets:                         []float64{.001, .005, .01, .025, .05, .1, .25, .5, 1, 2, 5, 10},
		NativeHistogramBucketFactor:     1.1,
		NativeHistogramMaxBucketNumber:  100,
		NativeHistogramMinResetDuration: time.Hour,
	}, []string{"stage"})
	store.observe = func(r probe.Result) { c.durations.WithLabelValues(string(r.Stage)).Observe(r.Duration.Seconds()) }
	var nodeLabel prometheus.Labels
	if cfg.Node != "" {
		nodeLabel = prometheus.Labels{"node": BoundLabel(cfg.Node, cfg.LabelValueMaxLen)}
	}
	c.programming = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name: "svcprobe_programming_latency_seconds",
		Help: "Network programming latency: from a change the data plane has to follow (a new Service, its first ready endpoint, new ports or ClusterIPs, a new DNS answer; from the EndpointSlice's last-change-trigger-time when present) to the first probe of the stage that shows it, by stage (proxy: the VIP answers; dns: the name resolves to the new answer). Changes that never arrive within --probe.programming.ceiling are not observed (the stage fails not_programmed).",
		// The scalability SLO's threshold (30 s) and the default ceiling (60 s) are edges.
		Buckets:                         []float64{.25, .5, 1, 2, 5, 10, 20, 30, 45, 60},
		NativeHistogramBucketFactor:     1.1,
		NativeHistogramMaxBucketNumber:  100,
		NativeHistogramMinResetDuration: time.Hour,
		ConstLabels:                     nodeLabel,
	}, []string{"stage"})
	c.inProgress = prometheus.NewDesc("svcprobe_programming_in_progress",
		"Services with a change being programmed now (the stage probed at --probe.programming.cadence until it shows the change), by stage.",
		[]string{"stage"}, nodeLabel)
	for _, st := range probe.ProgrammingStages {
		c.programming.WithLabelValues(string(st)) // from 0, so rate() sees the first change
	}
	store.observeProgramming = func(p probe.Programmed) {
		c.programming.WithLabelValues(string(p.Stage)).Observe(p.Latency.Seconds())
	}
	return c
}

// Describe sends every descriptor (the histogram's too), and those of the per-Service families
// ServiceFamilies writes, so that Describe lists every family the exporter exposes.
func (c *Collector) Describe(ch chan<- *prometheus.Desc) {
	for _, f := range c.services.fams {
		ch <- prometheus.NewDesc(f.name, f.help, f.labels, nil)
	}
	for _, d := range []*prometheus.Desc{descAPIErr, descConcurrency, descSynced, descLastEvent, descProgress, descEvents, descWatchErr, descTargets,
		descAnnErrTotal, descLag, descMaxLag, descSkipped, descSettling, descProgHeld, descRounds, descPending, descPeriod, descWaits, descWaitSecs, descInconclusive, descRefused, c.dnsUp, c.inProgress} {
		ch <- d
	}
	c.durations.Describe(ch)
	c.programming.Describe(ch)
}

// Collect builds the cluster and self series from the current state. The per-Service families
// are not collected here: ServiceFamilies writes them (see services.go and Handler).
func (c *Collector) Collect(ch chan<- prometheus.Metric) {
	c.collectCluster(ch, c.store.ClusterDNS())
	c.collectSelf(ch)
	c.durations.Collect(ch)
	c.programming.Collect(ch)
	going := c.store.InProgress()
	for _, st := range probe.ProgrammingStages {
		ch <- prometheus.MustNewConstMetric(c.inProgress, prometheus.GaugeValue, float64(going[st]), string(st))
	}
}

// ServiceFamilies returns the per-Service families for Handler.
func (c *Collector) ServiceFamilies() *ServiceFamilies { return c.services }

type endpointResult struct {
	pod, addr string
	up        bool
}

// endpointResults folds the pod stage's checks (one per endpoint and port) into one result per
// endpoint address, in check order: an endpoint is up when every port answered.
func endpointResults(r probe.Result) []endpointResult {
	var out []endpointResult
	index := map[string]int{}
	for _, chk := range r.Checks {
		if chk.Addr == "" {
			continue
		}
		i, ok := index[chk.Addr]
		if !ok {
			i = len(out)
			index[chk.Addr] = i
			out = append(out, endpointResult{pod: chk.Pod, addr: chk.Addr, up: true})
		}
		out[i].up = out[i].up && chk.OK()
	}
	return out
}

// failingEndpoints counts endpoints with at least one failing pod-stage check.
func failingEndpoints(r probe.Result) int {
	allOK := true
	for i := range r.Checks {
		if !r.Checks[i].OK() {
			allOK = false
			break
		}
	}
	if allOK { // the common case, without endpointResults' map
		return 0
	}
	n := 0
	for _, ep := range endpointResults(r) {
		if !ep.up {
			n++
		}
	}
	return n
}

func (c *Collector) collectCluster(ch chan<- prometheus.Metric, r *probe.ClusterDNSResult) {
	if r == nil {
		return
	}
	ch <- prometheus.MustNewConstMetric(c.dnsUp, prometheus.GaugeValue, boolf(r.Canary.OK()), "canary", "kubernetes.default")
	for i, v := range r.VIP {
		ch <- prometheus.MustNewConstMetric(c.dnsUp, prometheus.GaugeValue, boolf(v.OK()), string(r.ClassOf(i)), c.lv(v.Subject))
	}
	for _, p := range r.Pods {
		ch <- prometheus.MustNewConstMetric(c.dnsUp, prometheus.GaugeValue, boolf(p.Check.OK()), "pod", c.lv(p.Name))
	}
}

func (c *Collector) collectSelf(ch chan<- prometheus.Metric) {
	g := func(d *prometheus.Desc, v float64, lv ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, lv...)
	}
	cnt := func(d *prometheus.Desc, v float64, lv ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, v, lv...)
	}
	if c.disc != nil {
		g(descSynced, boolf(c.disc.Synced()))
		if t := c.disc.LastEvent(); !t.IsZero() {
			g(descLastEvent, float64(t.UnixNano())/1e9)
		}
		if t := c.disc.LastProgress(); !t.IsZero() {
			g(descProgress, float64(t.UnixNano())/1e9)
		}
		s := c.disc.Stats()
		cnt(descEvents, float64(s.Events.Load()))
		cnt(descWatchErr, float64(s.WatchErrors.Load()))
		cnt(descAnnErrTotal, float64(s.AnnotationErrors.Load()))
		g(descTargets, float64(c.disc.Targets()))
	}
	if c.cfg.APIErrors != nil {
		cnt(descAPIErr, float64(c.cfg.APIErrors.Load()))
	}
	if c.sched != nil {
		g(descLag, max(0, time.Duration(c.sched.LagNanos.Load()).Seconds()))
		g(descMaxLag, max(0, time.Duration(c.sched.MaxLagNanos.Load()).Seconds()))
		cnt(descSkipped, float64(c.sched.Skipped.Load()))
		cnt(descSettling, float64(c.sched.Settling.Load()))
		cnt(descProgHeld, float64(c.sched.ProgrammingHeld.Load()))
		cnt(descRounds, float64(c.sched.Rounds.Load()))
		g(descPending, float64(c.sched.Pending.Load()))
		g(descPeriod, time.Duration(c.sched.PeriodNanos.Load()).Seconds())
	}
	// Every network stage and exporter-limit reason from the start (0 until it happens), so that
	// rate() and increase() see the first one.
	inc, refused := c.store.Inconclusive(), c.store.Refused()
	for _, st := range probe.Stages {
		if !windowed(st) {
			continue
		}
		for _, r := range []probe.Reason{probe.ReasonBudget, probe.ReasonPortExhausted} {
			cnt(descInconclusive, float64(inc[st][r]), string(st), string(r))
		}
		cnt(descRefused, float64(refused[st]), string(st))
	}
	if c.budget != nil {
		g(descConcurrency, float64(c.budget.Concurrency()))
		for _, k := range probe.BudgetKinds {
			n, d := c.budget.Waits(k)
			cnt(descWaits, float64(n), k.String())
			cnt(descWaitSecs, d.Seconds(), k.String())
		}
	}
}

// lv bounds a label value that comes from the cluster: Kubernetes names are short already, but a
// label must never carry an arbitrary string into the exposition.
func (c *Collector) lv(s string) string {
	return BoundLabel(s, c.cfg.LabelValueMaxLen)
}

// BoundLabel keeps printable ASCII and cuts to max bytes.
func BoundLabel(s string, max int) string {
	ok := true
	for i := 0; i < len(s); i++ {
		if s[i] < 0x20 || s[i] > 0x7e {
			ok = false
			break
		}
	}
	if !ok {
		b := make([]byte, 0, len(s))
		for i := 0; i < len(s); i++ {
			if s[i] >= 0x20 && s[i] <= 0x7e {
				b = append(b, s[i])
			} else {
				b = append(b, '_')
			}
		}
		s = string(b)
	}
	if len(s) > max {
		s = s[:max]
	}
	return s
}

func boolf(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

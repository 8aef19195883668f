package metrics

import (
	"log/slog"
	"slices"
	"sort"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/svcprobe/svcprobe/discovery"
	"github.com/svcprobe/svcprobe/probe"
)

// DefaultSeriesPerService is the default per-Service series budget.
const DefaultSeriesPerService = 20

// Discovery is what the collector reads of discovery.
type Discovery interface {
	Synced() bool
	LastEvent() time.Time
	Stats() *discovery.Stats
	Targets() int
	Exists(namespace, name string) (exists, known bool)
}

// Expected is a Service that must exist (runbook step 1).
type Expected struct{ Namespace, Name string }

// CollectorConfig configures the series the collector emits.
type CollectorConfig struct {
	SeriesPerService int        // per-Service budget; probes_total is cut to fit
	PerEndpoint      bool       // emit svcprobe_endpoint_up
	PerEndpointLimit int        // per Service, when PerEndpoint
	Expected         []Expected // Services that must exist
	LabelValueMaxLen int        // cluster-provided label values are cut to this length
}

// Collector turns the store and the components' self-state into const metrics at scrape time.
type Collector struct {
	cfg       CollectorConfig
	store     *Store
	disc      Discovery
	sched     *probe.SchedulerStats
	budget    *probe.Budget
	log       *slog.Logger
	durations *prometheus.HistogramVec
}

var (
	svcLabels = []string{"namespace", "service"}

	descVerdict     = prometheus.NewDesc("svcprobe_service_verdict", "The layer to blame for this Service and why (one series per Service, value 1; layer ok and reason success when nothing is broken).", append(svcLabels, "layer", "reason"), nil)
	descStageUp     = prometheus.NewDesc("svcprobe_stage_up", "Whether the stage passed at its last run (1) or failed (0). Stages that do not apply have no series.", append(svcLabels, "stage"), nil)
	descStageDur    = prometheus.NewDesc("svcprobe_stage_duration_seconds", "How long the last run of a network stage (dns, pod, proxy, hairpin) took.", append(svcLabels, "stage"), nil)
	descProbes      = prometheus.NewDesc("svcprobe_probes_total", "Stage runs by result (success or the failure reason).", append(svcLabels, "stage", "result"), nil)
	descEndpoints   = prometheus.NewDesc("svcprobe_endpoints", "Endpoints by state; unreachable counts ready endpoints that failed the pod stage (a subset of ready).", append(svcLabels, "state"), nil)
	descAnnErr      = prometheus.NewDesc("svcprobe_service_annotation_errors", "Malformed svcprobe.io/ annotations on this Service (probed with defaults for them).", svcLabels, nil)
	descEndpointUp  = prometheus.NewDesc("svcprobe_endpoint_up", "Whether one endpoint answered the pod stage (only with --metrics.per-endpoint, capped per Service).", append(svcLabels, "pod", "address"), nil)
	descOverBudget  = prometheus.NewDesc("svcprobe_series_budget_exceeded_services", "Services whose series were cut to the per-Service budget at this scrape.", nil, nil)
	descSynced      = prometheus.NewDesc("svcprobe_discovery_synced", "Whether the informer caches have synced.", nil, nil)
	descLastEvent   = prometheus.NewDesc("svcprobe_discovery_last_event_timestamp_seconds", "When the last informer event arrived.", nil, nil)
	descEvents      = prometheus.NewDesc("svcprobe_discovery_events_total", "Informer events handled.", nil, nil)
	descWatchErr    = prometheus.NewDesc("svcprobe_discovery_watch_errors_total", "List/watch failures against the API server (the informers retry and keep the last known state).", nil, nil)
	descTargets     = prometheus.NewDesc("svcprobe_targets", "Services this replica probes.", nil, nil)
	descAnnErrTotal = prometheus.NewDesc("svcprobe_annotation_errors_total", "Malformed svcprobe.io/ annotations seen (each distinct value counted once).", nil, nil)
	descLag         = prometheus.NewDesc("svcprobe_scheduler_lag_seconds", "How late the last probe started against its slot; grows when the budgets cannot cover a round.", nil, nil)
	descMaxLag      = prometheus.NewDesc("svcprobe_scheduler_max_lag_seconds", "The largest scheduler lag since start.", nil, nil)
	descSkipped     = prometheus.NewDesc("svcprobe_scheduler_rounds_skipped_total", "Probe slots missed because the previous probe of the same Service still ran.", nil, nil)
	descRounds      = prometheus.NewDesc("svcprobe_scheduler_probes_total", "Service probes (all network stages of one Service) completed.", nil, nil)
	descPending     = prometheus.NewDesc("svcprobe_scheduler_pending_targets", "Services not probed yet.", nil, nil)
	descWaits       = prometheus.NewDesc("svcprobe_budget_waits_total", "Times a probe waited for a budget.", []string{"budget"}, nil)
	descWaitSecs    = prometheus.NewDesc("svcprobe_budget_wait_seconds_total", "Time probes spent waiting for a budget.", []string{"budget"}, nil)
	descDNSUp       = prometheus.NewDesc("svcprobe_cluster_dns_up", "Whether cluster DNS answered kubernetes.default: through each resolv.conf nameserver (kind=service), through the search list (kind=canary), and from each DNS Pod asked directly (kind=pod).", []string{"kind", "server"}, nil)
)

// NewCollector builds the collector. durations is registered by the caller with the collector.
func NewCollector(cfg CollectorConfig, store *Store, disc Discovery, sched *probe.SchedulerStats, budget *probe.Budget, log *slog.Logger) *Collector {
	if cfg.SeriesPerService <= 0 {
		cfg.SeriesPerService = DefaultSeriesPerService
	}
	if cfg.LabelValueMaxLen <= 0 {
		cfg.LabelValueMaxLen = 128
	}
	c := &Collector{cfg: cfg, store: store, disc: disc, sched: sched, budget: budget, log: log}
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
	return c
}

// Describe sends every descriptor (the histogram's too).
func (c *Collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descVerdict, descStageUp, descStageDur, descProbes, descEndpoints, descAnnErr,
		descEndpointUp, descOverBudget, descSynced, descLastEvent, descEvents, descWatchErr, descTargets,
		descAnnErrTotal, descLag, descMaxLag, descSkipped, descRounds, descPending, descWaits, descWaitSecs, descDNSUp} {
		ch <- d
	}
	c.durations.Describe(ch)
}

// Collect builds the series from the current state.
func (c *Collector) Collect(ch chan<- prometheus.Metric) {
	statuses, cluster := c.store.Snapshot()
	over := 0
	seen := map[Expected]bool{}
	for _, st := range statuses {
		seen[Expected{st.Target.Namespace, st.Target.Name}] = true
		if c.collectService(ch, st) {
			over++
		}
	}
	for _, e := range c.cfg.Expected {
		if seen[e] {
			continue
		}
		if exists, known := c.disc.Exists(e.Namespace, e.Name); known && !exists && c.disc.Synced() {
			ch <- prometheus.MustNewConstMetric(descVerdict, prometheus.GaugeValue, 1, c.lv(e.Namespace), c.lv(e.Name), string(LayerMissing), "not_found")
		}
	}
	ch <- prometheus.MustNewConstMetric(descOverBudget, prometheus.GaugeValue, float64(over))
	c.collectCluster(ch, cluster)
	c.collectSelf(ch)
	c.durations.Collect(ch)
}

// collectService emits one Service's series within the budget; it reports whether it had to cut.
func (c *Collector) collectService(ch chan<- prometheus.Metric, st ServiceStatus) bool {
	t := st.Target
	ns, name := c.lv(t.Namespace), c.lv(t.Name)
	var out []prometheus.Metric
	gauge := func(d *prometheus.Desc, v float64, lv ...string) {
		out = append(out, prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, append([]string{ns, name}, lv...)...))
	}
	gauge(descVerdict, 1, string(st.Verdict), string(st.Reason))
	for _, s := range probe.Stages {
		r, ok := st.Results[s]
		if !ok || r.Outcome == probe.Skipped {
			continue
		}
		gauge(descStageUp, boolf(r.Outcome == probe.OK), string(s))
		if s != probe.StageSpec && s != probe.StageEndpoints {
			gauge(descStageDur, r.Duration.Seconds(), string(s))
		}
	}
	if t.Kind != discovery.KindExternalName {
		counts := t.Counts()
		unreachable := 0
		if r, ok := st.Results[probe.StagePod]; ok && r.Outcome != probe.Skipped {
			unreachable = failingEndpoints(r)
		}
		gauge(descEndpoints, float64(counts.Ready), "ready")
		gauge(descEndpoints, float64(counts.NotReady), "not_ready")
		gauge(descEndpoints, float64(counts.Terminating), "terminating")
		gauge(descEndpoints, float64(unreachable), "unreachable")
	}
	if n := len(t.AnnotationErrors); n > 0 {
		gauge(descAnnErr, float64(n))
	}
	// Counters fill what is left of the budget: successes first (one per stage), then the reasons
	// stages fail with now, then older failure reasons by how often they happened.
	type counter struct {
		stage  probe.Stage
		reason probe.Reason
		n      uint64
	}
	var counters []counter
	for stage, byReason := range st.Counters {
		for reason, n := range byReason {
			counters = append(counters, counter{stage, reason, n})
		}
	}
	current := func(k counter) bool {
		r, ok := st.Results[k.stage]
		return ok && r.Reason == k.reason
	}
	sort.Slice(counters, func(i, j int) bool {
		a, b := counters[i], counters[j]
		if (a.reason == probe.ReasonSuccess) != (b.reason == probe.ReasonSuccess) {
			return a.reason == probe.ReasonSuccess
		}
		if current(a) != current(b) {
			return current(a) // why it fails now is never cut
		}
		if a.n != b.n {
			return a.n > b.n
		}
		if a.stage != b.stage {
			return slices.Index(probe.Stages, a.stage) < slices.Index(probe.Stages, b.stage)
		}
		return a.reason < b.reason
	})
	room := c.cfg.SeriesPerService - len(out)
	cut := len(counters) > room
	for i, k := range counters {
		if i >= room {
			break
		}
		out = append(out, prometheus.MustNewConstMetric(descProbes, prometheus.CounterValue, float64(k.n), ns, name, string(k.stage), string(k.reason)))
	}
	for _, m := range out {
		ch <- m
	}
	if c.cfg.PerEndpoint {
		if r, ok := st.Results[probe.StagePod]; ok {
			for i, ep := range endpointResults(r) {
				if i >= c.cfg.PerEndpointLimit {
					break
				}
				ch <- prometheus.MustNewConstMetric(descEndpointUp, prometheus.GaugeValue, boolf(ep.up), ns, name, c.lv(ep.pod), ep.addr)
			}
		}
	}
	return cut
}

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
	ch <- prometheus.MustNewConstMetric(descDNSUp, prometheus.GaugeValue, boolf(r.Canary.OK()), "canary", "kubernetes.default")
	for _, v := range r.VIP {
		ch <- prometheus.MustNewConstMetric(descDNSUp, prometheus.GaugeValue, boolf(v.OK()), "service", c.lv(v.Subject))
	}
	for _, p := range r.Pods {
		ch <- prometheus.MustNewConstMetric(descDNSUp, prometheus.GaugeValue, boolf(p.Check.OK()), "pod", c.lv(p.Name))
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
		s := c.disc.Stats()
		cnt(descEvents, float64(s.Events.Load()))
		cnt(descWatchErr, float64(s.WatchErrors.Load()))
		cnt(descAnnErrTotal, float64(s.AnnotationErrors.Load()))
		g(descTargets, float64(c.disc.Targets()))
	}
	if c.sched != nil {
		g(descLag, max(0, time.Duration(c.sched.LagNanos.Load()).Seconds()))
		g(descMaxLag, max(0, time.Duration(c.sched.MaxLagNanos.Load()).Seconds()))
		cnt(descSkipped, float64(c.sched.Skipped.Load()))
		cnt(descRounds, float64(c.sched.Rounds.Load()))
		g(descPending, float64(c.sched.Pending.Load()))
	}
	if c.budget != nil {
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

package metrics

import (
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	dto "github.com/prometheus/client_model/go"
	"github.com/svcprobe/svcprobe/discovery"
	"github.com/svcprobe/svcprobe/probe"
	"k8s.io/apimachinery/pkg/types"
)

type fakeDiscovery struct {
	stats    discovery.Stats
	synced   atomic.Bool
	existing map[string]bool
}

func (f *fakeDiscovery) Synced() bool            { return f.synced.Load() }
func (f *fakeDiscovery) LastEvent() time.Time    { return time.Unix(1700000000, 0) }
func (f *fakeDiscovery) LastProgress() time.Time { return time.Unix(1700000010, 0) }
func (f *fakeDiscovery) Stats() *discovery.Stats { return &f.stats }
func (f *fakeDiscovery) Targets() int            { return len(f.existing) }
func (f *fakeDiscovery) Exists(ns, name string) (bool, bool) {
	return f.existing[ns+"/"+name], true
}

func target(ns, name string) *discovery.Target {
	return &discovery.Target{UID: types.UID("uid-" + ns + "-" + name), Namespace: ns, Name: name, Kind: discovery.KindClusterIP,
		ClusterIPs: []netip.Addr{netip.MustParseAddr("198.19.0.20")},
		Endpoints: []discovery.Endpoint{
			{Ready: true, Serving: true, PodName: "a", Addresses: []netip.Addr{netip.MustParseAddr("198.18.0.5")}},
			{Ready: true, Serving: true, PodName: "b", Addresses: []netip.Addr{netip.MustParseAddr("198.18.0.6")}},
			{Terminating: true, PodName: "c", Addresses: []netip.Addr{netip.MustParseAddr("198.18.0.7")}},
		}}
}

// setup returns what /metrics serves as one Gatherer: the registry (cluster, self, histogram) and
// the per-Service families in their dto form (TestDirectWriterMatchesExpfmt keeps the direct
// writer equal to it).
func setup(t *testing.T, cfg CollectorConfig) (*Store, *Collector, prometheus.Gatherer, *fakeDiscovery) {
	t.Helper()
	store := NewStore()
	disc := &fakeDiscovery{existing: map[string]bool{}}
	disc.synced.Store(true)
	budget, err := probe.NewBudget(probe.BudgetConfig{Concurrency: 4, DNSQPS: 10, NewConnsPerSecond: 10})
	if err != nil {
		t.Fatal(err)
	}
	c := NewCollector(cfg, store, disc, &probe.SchedulerStats{}, budget, slog.New(slog.NewTextHandler(io.Discard, nil)))
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(c)
	return store, c, prometheus.Gatherers{reg, c.ServiceFamilies()}, disc
}

func podResult(failing ...string) probe.Result {
	r := probe.Result{Stage: probe.StagePod, Outcome: probe.OK, Reason: probe.ReasonSuccess, Duration: 3 * time.Millisecond}
	for _, addr := range []string{"198.18.0.5:9376", "198.18.0.6:9376"} {
		ip, _, _ := strings.Cut(addr, ":")
		c := probe.Check{Subject: addr, Reason: probe.ReasonSuccess, Addr: ip, Pod: map[string]string{"198.18.0.5:9376": "a", "198.18.0.6:9376": "b"}[addr]}
		for _, f := range failing {
			if f == addr {
				c.Reason = probe.ReasonRefused
				r.Outcome, r.Reason = probe.Failed, probe.ReasonRefused
			}
		}
		r.Checks = append(r.Checks, c)
	}
	return r
}

func healthy() []probe.Result {
	return []probe.Result{ok(probe.StageSpec), ok(probe.StageEndpoints),
		{Stage: probe.StageDNS, Outcome: probe.OK, Reason: probe.ReasonSuccess, Duration: 2 * time.Millisecond},
		podResult(),
		{Stage: probe.StageProxy, Outcome: probe.OK, Reason: probe.ReasonSuccess, Duration: time.Millisecond},
		skip(probe.StageHairpin)}
}

func TestExpositionPerService(t *testing.T) {
	store, _, reg, _ := setup(t, CollectorConfig{})
	tg := target("default", "hostnames")
	store.Record(tg, healthy())
	// Two failed rounds in a row: one alone among good ones makes no verdict (see window.go).
	store.Record(tg, []probe.Result{podResult("198.18.0.6:9376")})
	store.Record(tg, []probe.Result{podResult("198.18.0.6:9376")})
	want := `
# HELP svcprobe_endpoints Endpoints by state; unreachable counts ready endpoints that failed the pod stage (a subset of ready).
# TYPE svcprobe_endpoints gauge
svcprobe_endpoints{namespace="default",service="hostnames",state="not_ready"} 0
svcprobe_endpoints{namespace="default",service="hostnames",state="ready"} 2
svcprobe_endpoints{namespace="default",service="hostnames",state="terminating"} 1
svcprobe_endpoints{namespace="default",service="hostnames",state="unreachable"} 1
# HELP svcprobe_service_verdict The layer to blame for this Service and why (one series per Service, value 1; layer ok and reason success when nothing is broken; family ipv4 or ipv6 when the failure is confined to that IP family of a dual-stack or IPv6-only Service, empty otherwise).
# TYPE svcprobe_service_verdict gauge
svcprobe_service_verdict{layer="pod",namespace="default",reason="refused",service="hostnames"} 1
# HELP svcprobe_stage_up Whether the stage passed at its last run (1) or failed (0). Stages that do not apply have no series.
# TYPE svcprobe_stage_up gauge
svcprobe_stage_up{namespace="default",service="hostnames",stage="dns"} 1
svcprobe_stage_up{namespace="default",service="hostnames",stage="endpoints"} 1
svcprobe_stage_up{namespace="default",service="hostnames",stage="pod"} 0
svcprobe_stage_up{namespace="default",service="hostnames",stage="proxy"} 1
svcprobe_stage_up{namespace="default",service="hostnames",stage="spec"} 1
# HELP svcprobe_stage_runs_total Conclusive runs of the stage for this Service (not skipped, not cut short by the exporter's own limits), from its first run on.
# TYPE svcprobe_stage_runs_total counter
svcprobe_stage_runs_total{namespace="default",service="hostnames",stage="dns"} 1
svcprobe_stage_runs_total{namespace="default",service="hostnames",stage="endpoints"} 1
svcprobe_stage_runs_total{namespace="default",service="hostnames",stage="pod"} 3
svcprobe_stage_runs_total{namespace="default",service="hostnames",stage="proxy"} 1
svcprobe_stage_runs_total{namespace="default",service="hostnames",stage="spec"} 1
# HELP svcprobe_stage_failures_total Runs of the stage that failed, from the stage's first run on (0 until the first failure); the reason is on svcprobe_service_verdict and the status page.
# TYPE svcprobe_stage_failures_total counter
svcprobe_stage_failures_total{namespace="default",service="hostnames",stage="dns"} 0
svcprobe_stage_failures_total{namespace="default",service="hostnames",stage="endpoints"} 0
svcprobe_stage_failures_total{namespace="default",service="hostnames",stage="pod"} 2
svcprobe_stage_failures_total{namespace="default",service="hostnames",stage="proxy"} 0
svcprobe_stage_failures_total{namespace="default",service="hostnames",stage="spec"} 0
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want), "svcprobe_endpoints", "svcprobe_service_verdict", "svcprobe_stage_up", "svcprobe_stage_runs_total", "svcprobe_stage_failures_total"); err != nil {
		t.Fatal(err)
	}
	// Durations go to the histogram by stage (no per-Service duration series).
	mfs, _ := reg.Gather()
	for _, mf := range mfs {
		if mf.GetName() == "svcprobe_probe_duration_seconds" {
			for _, m := range mf.Metric {
				if m.GetHistogram().GetSampleCount() == 0 {
					t.Fatalf("histogram for %v empty", m.Label)
				}
			}
			return
		}
	}
	t.Fatal("svcprobe_probe_duration_seconds missing")
}

func TestDeletedServiceLeavesNoSeries(t *testing.T) {
	store, _, reg, _ := setup(t, CollectorConfig{})
	a, b := target("default", "a"), target("default", "b")
	store.Record(a, healthy())
	store.Record(b, healthy())
	before := countSeriesOf(t, reg, "a")
	if before == 0 {
		t.Fatal("no series for a")
	}
	store.Forget(a.UID)
	if n := countSeriesOf(t, reg, "a"); n != 0 {
		t.Fatalf("%d series of the deleted Service remain", n)
	}
	if countSeriesOf(t, reg, "b") != before {
		t.Fatal("the other Service lost series")
	}
}

func countSeriesOf(t *testing.T, reg prometheus.Gatherer, service string) int {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, mf := range mfs {
		for _, m := range mf.Metric {
			if labelValue(m, "service") == service {
				n++
			}
		}
	}
	return n
}

func labelValue(m *dto.Metric, name string) string {
	for _, l := range m.Label {
		if l.GetName() == name {
			return l.GetValue()
		}
	}
	return ""
}

// However many reasons a Service fails with, its series are the fixed set (verdict; per stage up,
// runs, failures and, while failing, the failing share; endpoint counts; annotation errors): they
// do not grow with the reasons, none is cut, and the counters are exact. A healthy ClusterIP
// Service has 20. Only the per-endpoint series are cut to the budget.
func TestSeriesPerServiceBoundedAndCountersExact(t *testing.T) {
	store, _, reg, _ := setup(t, CollectorConfig{})
	tg := target("default", "flappy")
	tg.AnnotationErrors = []error{fmt.Errorf("bad")}
	store.Record(tg, healthy())
	stages := []probe.Stage{probe.StageDNS, probe.StagePod, probe.StageProxy}
	failures := 0
	for _, r := range probe.Reasons {
		if r == probe.ReasonSuccess || r == probe.ReasonNotProbed || r == probe.ReasonBudget || r == probe.ReasonPortExhausted {
			continue
		}
		for _, s := range stages {
			store.Record(tg, []probe.Result{fail(s, r)})
		}
		failures++
	}
	// verdict 1 + up 5 + runs 5 + failures 5 + failing share 3 + endpoints 4 + annotation errors 1
	if n := countSeriesOf(t, reg, "flappy"); n != 24 {
		t.Fatalf("%d series for a Service failing three stages with %d reasons each, want 24", n, failures)
	}
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]float64{}
	for _, mf := range mfs {
		for _, m := range mf.Metric {
			if labelValue(m, "service") == "flappy" && strings.HasPrefix(mf.GetName(), "svcprobe_stage_") && m.Counter != nil {
				got[mf.GetName()+"/"+labelValue(m, "stage")] = m.GetCounter().GetValue()
			}
		}
	}
	for _, s := range stages {
		if r, f := got["svcprobe_stage_runs_total/"+string(s)], got["svcprobe_stage_failures_total/"+string(s)]; r != float64(failures+1) || f != float64(failures) {
			t.Errorf("%s: runs %v failures %v, want %d and %d", s, r, f, failures+1, failures)
		}
	}
	if r, f := got["svcprobe_stage_runs_total/spec"], got["svcprobe_stage_failures_total/spec"]; r != 1 || f != 0 {
		t.Errorf("spec: runs %v failures %v, want 1 and 0", r, f)
	}
	if v := testutil.ToFloat64(gatherOne(t, reg, "svcprobe_series_budget_exceeded_services")); v != 0 {
		t.Fatalf("budget exceeded gauge %v without per-endpoint series", v)
	}
	store.Record(target("default", "calm"), healthy())
	if n := countSeriesOf(t, reg, "calm"); n != 20 {
		t.Fatalf("healthy ClusterIP Service has %d series, want 20 (the README's figure)", n)
	}
}

// The per-endpoint series fill what the budget leaves; a Service whose per-endpoint series were
// cut is counted.
func TestPerEndpointSeriesCutToBudget(t *testing.T) {
	store, _, reg, _ := setup(t, CollectorConfig{PerEndpoint: true, PerEndpointLimit: 10, SeriesPerService: 21})
	store.Record(target("default", "hostnames"), healthy())
	if n := gatherCount(t, reg, "svcprobe_endpoint_up"); n != 1 {
		t.Fatalf("%d per-endpoint series with room for 1 (20 fixed, budget 21)", n)
	}
	if v := testutil.ToFloat64(gatherOne(t, reg, "svcprobe_series_budget_exceeded_services")); v != 1 {
		t.Fatalf("budget exceeded gauge %v, want 1", v)
	}
}

func gatherOne(t *testing.T, reg prometheus.Gatherer, name string) prometheus.Collector {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == name && len(mf.Metric) == 1 {
			return prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "x", Help: "x"}, func() float64 { return mf.Metric[0].GetGauge().GetValue() })
		}
	}
	t.Fatalf("%s not found", name)
	return nil
}

func TestExpectedServiceMissing(t *testing.T) {
	store, _, reg, disc := setup(t, CollectorConfig{Expected: []Expected{{"default", "hostnames"}, {"default", "present"}}})
	disc.existing["default/present"] = true
	store.Record(target("default", "present"), healthy())
	want := `
# HELP svcprobe_service_verdict The layer to blame for this Service and why (one series per Service, value 1; layer ok and reason success when nothing is broken; family ipv4 or ipv6 when the failure is confined to that IP family of a dual-stack or IPv6-only Service, empty otherwise).
# TYPE svcprobe_service_verdict gauge
svcprobe_service_verdict{layer="missing",namespace="default",reason="not_found",service="hostnames"} 1
svcprobe_service_verdict{layer="ok",namespace="default",reason="success",service="present"} 1
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want), "svcprobe_service_verdict"); err != nil {
		t.Fatal(err)
	}
	// A missing Service has the verdict and nothing else.
	if n := countSeriesOf(t, reg, "hostnames"); n != 1 {
		t.Fatalf("missing Service has %d series, want only the verdict", n)
	}
	// Before discovery has synced, absence proves nothing.
	disc.synced.Store(false)
	if n := countSeriesOf(t, reg, "hostnames"); n != 0 {
		t.Fatal("missing verdict before discovery synced")
	}
}

func TestClusterDNSAndSelfMetrics(t *testing.T) {
	store, _, reg, disc := setup(t, CollectorConfig{})
	disc.stats.WatchErrors.Add(2)
	store.RecordClusterDNS(*clusterDNS(false, true, false))
	want := `
# HELP svcprobe_cluster_dns_up Whether cluster DNS answered kubernetes.default: through each resolv.conf nameserver (kind=service when it is the cluster DNS Service's ClusterIP, node_local for a node-local cache, resolver for any other, unknown while the DNS Service's IP is not known), through the search list (kind=canary), and from each DNS Pod asked directly (kind=pod).
# TYPE svcprobe_cluster_dns_up gauge
svcprobe_cluster_dns_up{kind="canary",server="kubernetes.default"} 0
svcprobe_cluster_dns_up{kind="pod",server="a"} 1
svcprobe_cluster_dns_up{kind="pod",server="b"} 0
svcprobe_cluster_dns_up{kind="service",server=""} 0
# HELP svcprobe_discovery_watch_errors_total List/watch failures against the API server (the informers retry and keep the last known state).
# TYPE svcprobe_discovery_watch_errors_total counter
svcprobe_discovery_watch_errors_total 2
# HELP svcprobe_discovery_synced Whether the informer caches have synced.
# TYPE svcprobe_discovery_synced gauge
svcprobe_discovery_synced 1
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want), "svcprobe_cluster_dns_up", "svcprobe_discovery_watch_errors_total", "svcprobe_discovery_synced"); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"svcprobe_budget_waits_total", "svcprobe_budget_wait_seconds_total", "svcprobe_scheduler_lag_seconds",
		"svcprobe_scheduler_rounds_skipped_total", "svcprobe_scheduler_pending_targets", "svcprobe_annotation_errors_total",
		"svcprobe_discovery_last_event_timestamp_seconds", "svcprobe_discovery_last_progress_timestamp_seconds", "svcprobe_targets", "svcprobe_discovery_events_total"} {
		if gatherCount(t, reg, name) == 0 {
			t.Errorf("%s missing", name)
		}
	}
}

func TestPerEndpointSeriesCapped(t *testing.T) {
	store, _, reg, _ := setup(t, CollectorConfig{PerEndpoint: true, PerEndpointLimit: 1})
	store.Record(target("default", "hostnames"), healthy())
	if n := gatherCount(t, reg, "svcprobe_endpoint_up"); n != 1 {
		t.Fatalf("%d per-endpoint series, cap 1", n)
	}
	store2, _, reg2, _ := setup(t, CollectorConfig{})
	store2.Record(target("default", "hostnames"), healthy())
	if n := gatherCount(t, reg2, "svcprobe_endpoint_up"); n != 0 {
		t.Fatal("per-endpoint series without the flag")
	}
}

// The equivalent of promtool check metrics: names, units, help, counters' _total.
func TestMetricsLint(t *testing.T) {
	store, _, reg, _ := setup(t, CollectorConfig{PerEndpoint: true, PerEndpointLimit: 5})
	tg := target("default", "hostnames")
	tg.AnnotationErrors = []error{fmt.Errorf("x")}
	store.Record(tg, healthy())
	store.RecordClusterDNS(*clusterDNS(true, true))
	problems, err := testutil.GatherAndLint(reg)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		t.Errorf("lint: %s: %s", p.Metric, p.Text)
	}
}

func TestBoundLabel(t *testing.T) {
	if got := BoundLabel("a\x00b<script>\u00e9", 128); got != "a_b<script>__" {
		t.Fatalf("got %q", got)
	}
	if got := BoundLabel(strings.Repeat("x", 500), 128); len(got) != 128 {
		t.Fatalf("len %d", len(got))
	}
}

// gatherCount counts the series of one family.
func gatherCount(t *testing.T, g prometheus.Gatherer, name string) int {
	t.Helper()
	mfs, err := g.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == name {
			return len(mf.Metric)
		}
	}
	return 0
}

// A stage the SSRF guard refused entirely is skipped (no stage_up, no run, no blame) but counted
// exporter-wide.
func TestExternalNotAllowedCounted(t *testing.T) {
	store, _, g, _ := setup(t, CollectorConfig{})
	tg := target("default", "outside")
	r := skip(probe.StageProxy)
	r.Reason = probe.ReasonExternalNotAllowed
	store.Record(tg, append(healthy()[:4], r))
	mfs, err := g.Gather()
	if err != nil {
		t.Fatal(err)
	}
	found := false
	for _, mf := range mfs {
		for _, m := range mf.Metric {
			if mf.GetName() == "svcprobe_probes_refused_total" && labelValue(m, "stage") == "proxy" {
				found = m.GetCounter().GetValue() == 1
			}
			if (mf.GetName() == "svcprobe_stage_runs_total" || mf.GetName() == "svcprobe_stage_failures_total") && labelValue(m, "stage") == "proxy" {
				t.Errorf("a refused stage counts as a run: %s", mf.GetName())
			}
			if mf.GetName() == "svcprobe_stage_up" && labelValue(m, "stage") == "proxy" {
				t.Error("a refused stage has a stage_up series")
			}
			if mf.GetName() == "svcprobe_service_verdict" && labelValue(m, "layer") != "ok" {
				t.Errorf("verdict %s for a refused stage", labelValue(m, "layer"))
			}
		}
	}
	if !found {
		t.Fatal("svcprobe_probes_refused_total{stage=proxy} is not 1")
	}
}

// Node mode: cluster DNS as seen from this node carries the node too (a node that cannot reach
// cluster DNS is a per-node failure); the coverage period is exported in both modes.
func TestNodeModeClusterDNSAndCoveragePeriod(t *testing.T) {
	for _, node := range []string{"", "worker-2"} {
		store, _, g, _ := setup(t, CollectorConfig{Node: node})
		store.RecordClusterDNS(*clusterDNS(true, true))
		mfs, err := g.Gather() // the pedantic registry checks the descriptors against the metrics
		if err != nil {
			t.Fatal(err)
		}
		seen := map[string]bool{}
		for _, mf := range mfs {
			seen[mf.GetName()] = true
			if mf.GetName() != "svcprobe_cluster_dns_up" {
				continue
			}
			for _, m := range mf.GetMetric() {
				got := ""
				for _, lp := range m.GetLabel() {
					if lp.GetName() == "node" {
						got = lp.GetValue()
					}
				}
				if got != node {
					t.Errorf("node %q: svcprobe_cluster_dns_up has node=%q", node, got)
				}
			}
		}
		if !seen["svcprobe_cluster_dns_up"] || !seen["svcprobe_scheduler_coverage_period_seconds"] {
			t.Errorf("node %q: families %v", node, seen)
		}
	}
}

// TestVerdictFamilyLabel: the verdict series carries family only when the failure is confined to
// one IP family; every other series (ok, both families failing) has the labels it always had.
func TestVerdictFamilyLabel(t *testing.T) {
	store, c, reg, _ := setup(t, CollectorConfig{})
	v6 := target("default", "dual")
	v6.ClusterIPs = append(v6.ClusterIPs, netip.MustParseAddr("fd00:19::20"))
	both := target("default", "both")
	store.Record(target("default", "calm"), healthy())
	for _, tg := range []*discovery.Target{v6, both} {
		store.Record(tg, healthy())
		for range 3 {
			r := probe.Result{Stage: probe.StageProxy, Outcome: probe.Failed, Reason: probe.ReasonTimeout,
				Checks: []probe.Check{{Addr: "198.19.0.20", Reason: probe.ReasonTimeout}}}
			if tg == v6 {
				r.Checks = []probe.Check{{Addr: "198.19.0.20", Reason: probe.ReasonSuccess}, {Addr: "fd00:19::20", Reason: probe.ReasonTimeout}}
				r.Family = probe.FamilyIPv6
			}
			store.Record(tg, []probe.Result{r})
		}
	}
	want := `
# HELP svcprobe_service_verdict The layer to blame for this Service and why (one series per Service, value 1; layer ok and reason success when nothing is broken; family ipv4 or ipv6 when the failure is confined to that IP family of a dual-stack or IPv6-only Service, empty otherwise).
# TYPE svcprobe_service_verdict gauge
svcprobe_service_verdict{layer="proxy",namespace="default",reason="timeout",service="both"} 1
svcprobe_service_verdict{layer="ok",namespace="default",reason="success",service="calm"} 1
svcprobe_service_verdict{family="ipv6",layer="proxy",namespace="default",reason="timeout",service="dual"} 1
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want), "svcprobe_service_verdict"); err != nil {
		t.Fatal(err)
	}
	text := string(c.ServiceFamilies().WriteText(nil, false, map[string]bool{"svcprobe_service_verdict": true}))
	if !strings.Contains(text, `svcprobe_service_verdict{family="ipv6",layer="proxy",namespace="default",reason="timeout",service="dual"} 1`) ||
		!strings.Contains(text, `svcprobe_service_verdict{layer="ok",namespace="default",reason="success",service="calm"} 1`) {
		t.Fatalf("direct writer:\n%s", text)
	}
	// Recovery drops the family with the failure.
	store.Record(v6, healthy())
	if text := string(c.ServiceFamilies().WriteText(nil, false, nil)); strings.Contains(text, "family=") {
		t.Fatalf("family after recovery:\n%s", text)
	}
}

package check

import (
	"encoding/json"
	"fmt"
	"log/slog"
	"maps"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strings"
	"testing"

	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/model/rulefmt"
	"github.com/prometheus/prometheus/promql/parser"
)

// The dashboards' checks: every dashboards/*.json is a well-formed Grafana dashboard whose data
// sources are all the ${datasource} variable, and every PromQL expression in it (panel targets
// and variable queries), once Grafana's variables and macros are replaced by concrete values,
// parses with Prometheus' own parser and selects only metrics the exporter exposes
// (docs/metric-names.txt, written by cmd/exporter's TestMetricNamesFile from a real scrape),
// recording rules of deploy/rules/*.yaml, or Prometheus' own `up`, and none that was removed.
//
// Central and per-node views stay apart: node agents (--mode=node) label every per-Service series
// and svcprobe_cluster_dns_up with node="<their node>", the central exporter with none (node="").
// A panel outside the row "From each node (node agents)" selects those families with node="" (or
// it would add up the central exporter and every agent); every panel in that row filters by the
// node variable, whose All value never matches the central exporter.

const (
	dashboardsGlob      = "../../dashboards/*.json"
	dashboardMetricList = "../../docs/metric-names.txt"
	dashboardRulesGlob  = "../../deploy/rules/*.yaml"
)

// dashboardRequiredVars are the template variables every dashboard offers.
var dashboardRequiredVars = []string{"datasource", "cluster", "namespace", "service", "node"}

// dashboardNodeRowTitle is the title of the row holding the node agents' views (every dashboard
// has one); every other panel is the central exporter's.
const dashboardNodeRowTitle = "From each node (node agents)"

// dashboardNodeVar is the template variable that selects node agents.
const dashboardNodeVar = "node"

// dashboardNodeLabelled are the families a node agent labels with node (metrics/services.go
// withNode: every per-Service family; metrics/collector.go: svcprobe_cluster_dns_up). The
// exporter-wide families (scheduler, budgets, discovery, the duration histogram, build info) have
// no node label: they are told apart by joining on an exporter's cluster DNS series.
var dashboardNodeLabelled = map[string]bool{
	"svcprobe_service_verdict":           true,
	"svcprobe_stage_up":                  true,
	"svcprobe_stage_runs_total":          true,
	"svcprobe_stage_failures_total":      true,
	"svcprobe_stage_failure_ratio":       true,
	"svcprobe_endpoints":                 true,
	"svcprobe_endpoint_up":               true,
	"svcprobe_service_annotation_errors": true,
	"svcprobe_cluster_dns_up":            true,
	"svcprobe_services_by_verdict":       true,
	// metrics/programming.go (issue 21): the agents' programming latency histogram (its _bucket,
	// _sum and _count series) and in-progress gauge carry node too.
	"svcprobe_programming_latency_seconds": true,
	"svcprobe_programming_in_progress":     true,
}

// dashboardNodeLabelledSeries: name is a node-labelled family or a histogram series of one
// (_bucket, _sum, _count).
func dashboardNodeLabelledSeries(name string) bool {
	if dashboardNodeLabelled[name] {
		return true
	}
	for _, suffix := range []string{"_bucket", "_sum", "_count"} {
		if base, ok := strings.CutSuffix(name, suffix); ok && dashboardNodeLabelled[base] {
			return true
		}
	}
	return false
}

// dashboardRemovedMetrics are metrics and recording rules the exporter and deploy/rules no longer
// have, with what replaces them. A dashboard must not use them even while an old
// docs/metric-names.txt or rule file still lists them.
var dashboardRemovedMetrics = map[string]string{
	"svcprobe_probes_total":           "svcprobe_stage_runs_total and svcprobe_stage_failures_total (the reason is on svcprobe_service_verdict)",
	"svcprobe_stage_duration_seconds": "the histogram svcprobe_probe_duration_seconds{stage}",
}

// dashboardRemovedRulePrefixes are prefixes of removed recording rules: the SLO rules on
// svcprobe_probes_total (cluster_stage:svcprobe_probes:rate5m, ..._failed:rate5m,
// ..._success:ratio_rate5m and their other windows).
var dashboardRemovedRulePrefixes = map[string]string{
	"cluster_stage:svcprobe_probes": "cluster_stage:svcprobe_stage_errors:ratio_rate<window> (success = 1 - it)",
}

func dashboardRemoved(name string) (string, bool) {
	if hint, ok := dashboardRemovedMetrics[name]; ok {
		return hint, true
	}
	for prefix, hint := range dashboardRemovedRulePrefixes {
		if strings.HasPrefix(name, prefix) {
			return hint, true
		}
	}
	return "", false
}

// dashboardMacros are Grafana's built-in variables, replaced by values of the right shape.
var dashboardMacros = []struct{ name, value string }{
	// Longest first: $__interval must not eat $__interval_ms.
	{"$__rate_interval_ms", "60000"},
	{"$__rate_interval", "1m"},
	{"$__interval_ms", "30000"},
	{"$__interval", "30s"},
	{"$__range_ms", "3600000"},
	{"$__range_s", "3600"},
	{"$__range", "1h"},
	{"$__from", "1700000000000"},
	{"$__to", "1700003600000"},
}

// dashboardKnown is what an expression may select.
type dashboardKnown struct {
	metrics map[string]bool // exporter families
	rules   map[string]bool // recording rules
}

func (k dashboardKnown) allows(name string) bool {
	if name == "up" || k.metrics[name] || k.rules[name] {
		return true
	}
	// Histogram series. The name list has family names only, so _bucket/_sum/_count is accepted
	// for any listed family (a gauge's _bucket would slip through; the list has no types).
	for _, suffix := range []string{"_bucket", "_sum", "_count"} {
		if base, ok := strings.CutSuffix(name, suffix); ok && k.metrics[base] {
			return true
		}
	}
	return false
}

func loadDashboardKnown(t *testing.T) dashboardKnown {
	t.Helper()
	b, err := os.ReadFile(dashboardMetricList)
	if err != nil {
		t.Fatalf("%v (generate it: cd ../.. && UPDATE_METRIC_NAMES=1 go test -run TestMetricNamesFile ./cmd/exporter/)", err)
	}
	k := dashboardKnown{metrics: map[string]bool{}, rules: map[string]bool{}}
	for _, l := range strings.Split(string(b), "\n") {
		if l = strings.TrimSpace(l); l != "" && !strings.HasPrefix(l, "#") {
			k.metrics[l] = true
		}
	}
	if len(k.metrics) < 10 {
		t.Fatalf("%s lists only %d metrics", dashboardMetricList, len(k.metrics))
	}
	files, err := filepath.Glob(dashboardRulesGlob)
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range files {
		groups, errs := rulefmt.ParseFile(f, false, model.UTF8Validation, parser.NewParser(parser.Options{}), slog.New(slog.DiscardHandler))
		if len(errs) > 0 {
			t.Fatalf("%s: %v", f, errs)
		}
		for _, g := range groups.Groups {
			for _, r := range g.Rules {
				if r.Record != "" {
					k.rules[r.Record] = true
				}
			}
		}
	}
	return k
}

// TestDashboards checks every shipped dashboard.
func TestDashboards(t *testing.T) {
	known := loadDashboardKnown(t)
	files, err := filepath.Glob(dashboardsGlob)
	if err != nil {
		t.Fatal(err)
	}
	if len(files) < 2 {
		t.Fatalf("want at least the Overview and Service dashboards in %s, found %v", dashboardsGlob, files)
	}
	for name := range dashboardNodeLabelled {
		if !known.metrics[name] {
			t.Errorf("dashboardNodeLabelled lists %s, which %s does not: update the list", name, dashboardMetricList)
		}
	}
	for name := range dashboardRemovedMetrics {
		if known.metrics[name] {
			t.Errorf("%s lists %s, removed from the exporter (dashboardRemovedMetrics)", dashboardMetricList, name)
		}
	}
	uids := map[string]string{}
	for _, f := range files {
		t.Run(filepath.Base(f), func(t *testing.T) {
			b, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			res := checkDashboard(b, known)
			for _, p := range res.problems {
				t.Error(p)
			}
			if res.exprs < 5 {
				t.Errorf("only %d expressions checked", res.exprs)
			}
			if other, dup := uids[res.uid]; dup {
				t.Errorf("uid %q also used by %s", res.uid, other)
			}
			uids[res.uid] = f
			t.Logf("%s: %d panels, %d expressions, metrics used: %v", res.uid, res.panels, res.exprs, res.used)
		})
	}
}

// TestDashboardCheckCatchesProblems proves the checker fails on each kind of mistake, and passes
// a correct dashboard (so it is not failing everything either).
func TestDashboardCheckCatchesProblems(t *testing.T) {
	known := dashboardKnown{
		// svcprobe_probes_total and the old SLO rule are known here, as in a docs/metric-names.txt
		// or a rule file not updated yet: the removed-metric check must catch them anyway.
		metrics: map[string]bool{"svcprobe_probes_total": true, "svcprobe_stage_duration_seconds": true,
			"svcprobe_probe_duration_seconds": true, "svcprobe_service_verdict": true, "svcprobe_cluster_dns_up": true,
			"svcprobe_stage_runs_total": true, "svcprobe_programming_latency_seconds": true},
		rules: map[string]bool{"svcprobe:probe_success:ratio_rate5m": true, "cluster_stage:svcprobe_probes_success:ratio_rate5m": true},
	}
	cases := []struct {
		name   string
		mutate func(d map[string]any)
		want   string // substring of a problem; "" = no problem
	}{
		{"valid", func(map[string]any) {}, ""},
		{"recording rule, up and histogram buckets are known", func(d map[string]any) {
			setExpr(d, 0, `svcprobe:probe_success:ratio_rate5m + on() group_left() (min(up) * 0) + sum(rate(svcprobe_probe_duration_seconds_bucket[$__rate_interval]))`)
		}, ""},
		{"unknown metric", func(d map[string]any) {
			setExpr(d, 0, `rate(svcprobe_nonexistent_total{cluster=~"$cluster"}[$__rate_interval])`)
		}, `unknown metric "svcprobe_nonexistent_total"`},
		{"unknown metric by __name__", func(d map[string]any) {
			setExpr(d, 0, `{__name__="svcprobe_typo"}`)
		}, `unknown metric "svcprobe_typo"`},
		{"unknown metric in a collapsed row", func(d map[string]any) {
			d["panels"] = append(d["panels"].([]any), map[string]any{"id": 9.0, "type": "row", "title": "r", "collapsed": true,
				"gridPos": gridPos(0, 20, 24, 1),
				"panels":  []any{panel(10, `svcprobe_service_verdicts`)}})
		}, `unknown metric "svcprobe_service_verdicts"`},
		{"parse error", func(d map[string]any) {
			setExpr(d, 0, `sum(rate(svcprobe_stage_runs_total{node=""}[$__rate_interval])`)
		}, "does not parse"},
		{"range vector result", func(d map[string]any) {
			setExpr(d, 0, `svcprobe_stage_runs_total{node=""}[$__rate_interval]`)
		}, "evaluates to a matrix"},
		{"undefined variable", func(d map[string]any) {
			setExpr(d, 0, `svcprobe_service_verdict{namespace="$nmspace"}`)
		}, "undefined variable"},
		{"$__interval in a range", func(d map[string]any) {
			setExpr(d, 0, `rate(svcprobe_stage_runs_total{node=""}[$__interval])`)
		}, "$__rate_interval"},
		{"removed counter, though still in the metric list", func(d map[string]any) {
			setExpr(d, 0, `sum(rate(svcprobe_probes_total{node="", result="success"}[$__rate_interval]))`)
		}, `removed metric "svcprobe_probes_total"`},
		{"removed per-Service duration gauge", func(d map[string]any) {
			setExpr(d, 0, `svcprobe_stage_duration_seconds{node=""}`)
		}, `removed metric "svcprobe_stage_duration_seconds"`},
		{"removed SLO rule, though still in the rules", func(d map[string]any) {
			setExpr(d, 0, `cluster_stage:svcprobe_probes_success:ratio_rate5m`)
		}, `removed metric "cluster_stage:svcprobe_probes_success:ratio_rate5m"`},
		{"removed metric by __name__", func(d map[string]any) {
			setExpr(d, 0, `{__name__="svcprobe_probes_total", node=""}`)
		}, `removed metric "svcprobe_probes_total"`},
		{"central panel without node=\"\"", func(d map[string]any) {
			setExpr(d, 0, `count(svcprobe_service_verdict{cluster=~"$cluster", layer!="ok"})`)
		}, `lacks node=""`},
		{"central panel with node=\"\" on one selector only", func(d map[string]any) {
			setExpr(d, 0, `count(svcprobe_service_verdict{node=""}) / count(svcprobe_stage_runs_total)`)
		}, `svcprobe_stage_runs_total outside the row`},
		{"central panel on the node variable", func(d map[string]any) {
			setExpr(d, 0, `count(svcprobe_service_verdict{node=~"$node"})`)
		}, `lacks node=""`},
		{"central cluster DNS without node=\"\"", func(d map[string]any) {
			setExpr(d, 0, `min by (kind) (svcprobe_cluster_dns_up{cluster=~"$cluster"})`)
		}, `lacks node=""`},
		{"central histogram buckets of a node-labelled family without node=\"\"", func(d map[string]any) {
			setExpr(d, 0, `sum by (le) (rate(svcprobe_programming_latency_seconds_bucket{cluster=~"$cluster", stage="proxy"}[$__rate_interval]))`)
		}, `lacks node=""`},
		{"central histogram buckets of a node-labelled family with node=\"\"", func(d map[string]any) {
			setExpr(d, 0, `histogram_quantile(0.99, sum by (le) (rate(svcprobe_programming_latency_seconds_bucket{node=""}[5m])))`)
		}, ""},
		{"exporter-wide metrics need no node matcher", func(d map[string]any) {
			setExpr(d, 0, `sum(rate(svcprobe_probe_duration_seconds_count[$__rate_interval]) and on (job, instance) svcprobe_cluster_dns_up{node=""})`)
		}, ""},
		{"node row panel without $node", func(d map[string]any) {
			setExpr(d, 3, `count by (node) (svcprobe_service_verdict{node!=""})`)
		}, `does not filter by node=~"$node"`},
		{"node row panel with one target without $node", func(d map[string]any) {
			tg := panelAt(d, 3)["targets"].([]any)
			b := maps.Clone(tg[0].(map[string]any))
			b["refId"], b["expr"] = "B", `count(svcprobe_cluster_dns_up{node!=""} == 0)`
			panelAt(d, 3)["targets"] = append(tg, b)
		}, `target B: in the row`},
		{"node row selector without a node matcher", func(d map[string]any) {
			setExpr(d, 3, `count by (node) (svcprobe_service_verdict{node=~"$node"}) / scalar(count(svcprobe_service_verdict))`)
		}, "has no node matcher"},
		{"node row panel without a query", func(d map[string]any) {
			delete(panelAt(d, 3), "targets")
		}, "without a query filtered by $node"},
		{"node row panels in a collapsed row are checked too", func(d map[string]any) {
			row := panelAt(d, 2)
			row["collapsed"] = true
			row["panels"] = []any{panelAt(d, 3)}
			d["panels"] = d["panels"].([]any)[:3]
			row["panels"].([]any)[0].(map[string]any)["targets"].([]any)[0].(map[string]any)["expr"] = `count(svcprobe_service_verdict{node!=""})`
		}, `does not filter by node=~"$node"`},
		{"a panel placed below the node row belongs to it, whatever its place in the list", func(d map[string]any) {
			p := panel(7, `count(svcprobe_service_verdict{node=""})`)
			p["gridPos"] = gridPos(0, 100, 12, 8)
			d["panels"] = append([]any{p}, d["panels"].([]any)...)
		}, `does not filter by node=~"$node"`},
		{"no node row", func(d map[string]any) { panelAt(d, 2)["title"] = "Nodes" }, `no row "From each node (node agents)"`},
		{"node variable whose All matches the central exporter", func(d map[string]any) {
			varNamed(d, "node")["allValue"] = ".*"
		}, `matches node=""`},
		{"missing node variable", func(d map[string]any) {
			vars := d["templating"].(map[string]any)["list"].([]any)
			d["templating"].(map[string]any)["list"] = slices.DeleteFunc(vars, func(v any) bool { return v.(map[string]any)["name"] == "node" })
		}, "undefined variable"},
		{"hard-coded datasource uid on a panel", func(d map[string]any) {
			panelAt(d, 0)["datasource"] = map[string]any{"type": "prometheus", "uid": "P1809F7CD0C75ACF3"}
		}, "datasource"},
		{"hard-coded datasource on a target", func(d map[string]any) {
			panelAt(d, 0)["targets"].([]any)[0].(map[string]any)["datasource"] = "Prometheus"
		}, "datasource"},
		{"duplicate panel id", func(d map[string]any) { panelAt(d, 1)["id"] = panelAt(d, 0)["id"] }, "duplicate panel id"},
		{"panel without gridPos", func(d map[string]any) { delete(panelAt(d, 1), "gridPos") }, "gridPos"},
		{"no uid", func(d map[string]any) { delete(d, "uid") }, "uid"},
		{"no title", func(d map[string]any) { d["title"] = "" }, "title"},
		{"old schema", func(d map[string]any) { d["schemaVersion"] = 16.0 }, "schemaVersion"},
		{"missing service variable", func(d map[string]any) {
			vars := d["templating"].(map[string]any)["list"].([]any)
			d["templating"].(map[string]any)["list"] = vars[:len(vars)-1]
		}, "variable service"},
		{"datasource variable of another type", func(d map[string]any) {
			d["templating"].(map[string]any)["list"].([]any)[0].(map[string]any)["query"] = "loki"
		}, "datasource variable"},
		{"variable query with an unknown metric", func(d map[string]any) {
			v := d["templating"].(map[string]any)["list"].([]any)[1].(map[string]any)
			v["query"] = map[string]any{"query": "label_values(svcprobe_build_infos, cluster)", "refId": "A"}
		}, `unknown metric "svcprobe_build_infos"`},
		{"not JSON", func(d map[string]any) { d["__broken__"] = make(chan int) }, "JSON"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			d := validTestDashboard()
			tc.mutate(d)
			b, err := json.Marshal(d)
			if err != nil {
				b = []byte(`{"uid": "x", "panels": [`) // what an unparsable file looks like
			}
			res := checkDashboard(b, known)
			if tc.want == "" {
				if len(res.problems) > 0 {
					t.Fatalf("valid dashboard rejected: %v", res.problems)
				}
				return
			}
			for _, p := range res.problems {
				if strings.Contains(p, tc.want) {
					t.Logf("caught: %s", p)
					return
				}
			}
			t.Fatalf("want a problem containing %q, got %v", tc.want, res.problems)
		})
	}
}

// TestDashboardChecksCatchMutatedShippedDashboards breaks each shipped dashboard in the ways the
// node-view and removed-metric checks are about and wants each caught, so those checks are known
// to hold on the real files' layout (rows, gridPos, variables), not only on the small dashboard of
// TestDashboardCheckCatchesProblems.
func TestDashboardChecksCatchMutatedShippedDashboards(t *testing.T) {
	known := loadDashboardKnown(t)
	files, err := filepath.Glob(dashboardsGlob)
	if err != nil || len(files) == 0 {
		t.Fatalf("no dashboards in %s (%v)", dashboardsGlob, err)
	}
	// replaceIn rewrites the first target of the given view whose expression contains old.
	replaceIn := func(scope, old, new string, all bool) func(d map[string]any) bool {
		return func(d map[string]any) bool {
			return eachDashboardTarget(d, func(s string, _, tm map[string]any) bool {
				expr, _ := tm["expr"].(string)
				if (scope != "" && s != scope) || !strings.Contains(expr, old) {
					return false
				}
				if all {
					tm["expr"] = strings.ReplaceAll(expr, old, new)
				} else {
					tm["expr"] = strings.Replace(expr, old, new, 1)
				}
				return true
			})
		}
	}
	mutations := []struct {
		name     string
		optional bool // not every dashboard has what it changes
		mutate   func(d map[string]any) bool
		want     string
	}{
		{name: `a central per-Service query loses node=""`,
			mutate: replaceIn(scopeCentral, `node="", `, ``, false), want: `lacks node=""`},
		{name: `a central cluster DNS query loses node=""`,
			mutate: replaceIn(scopeCentral, `svcprobe_cluster_dns_up{cluster=~"$cluster", node=""}`, `svcprobe_cluster_dns_up{cluster=~"$cluster"}`, false),
			want:   `svcprobe_cluster_dns_up{cluster=~"value_of_cluster"} outside the row`},
		{name: "a node-row query does not use $node",
			mutate: replaceIn(scopeNode, `node=~"$node"`, `node!=""`, true), want: `does not filter by node=~"$node"`},
		{name: "a node-row panel moved up among the central ones", mutate: func(d map[string]any) bool {
			for _, sp := range scopeDashboardPanels(d["panels"].([]any)) {
				if sp.scope == scopeNode && sp.panel["type"] != "row" {
					sp.panel["gridPos"].(map[string]any)["y"] = 0.0
					return true
				}
			}
			return false
		}, want: `lacks node=""`},
		{name: "the node row renamed", mutate: func(d map[string]any) bool {
			for _, p := range d["panels"].([]any) {
				if m := p.(map[string]any); m["type"] == "row" && m["title"] == dashboardNodeRowTitle {
					m["title"] = "Nodes"
					return true
				}
			}
			return false
		}, want: fmt.Sprintf("no row %q", dashboardNodeRowTitle)},
		{name: "the node variable's All matches the central exporter", mutate: func(d map[string]any) bool {
			varNamed(d, dashboardNodeVar)["allValue"] = ".*"
			return true
		}, want: `matches node=""`},
		{name: "back to svcprobe_probes_total",
			mutate: replaceIn("", "svcprobe_stage_runs_total", "svcprobe_probes_total", true), want: `removed metric "svcprobe_probes_total"`},
		{name: "back to svcprobe_stage_duration_seconds",
			mutate: replaceIn("", "svcprobe_stage_failures_total{", "svcprobe_stage_duration_seconds{", false), want: `removed metric "svcprobe_stage_duration_seconds"`},
		{name: "back to the old SLO rules", optional: true,
			mutate: replaceIn("", "cluster_stage:svcprobe_stage_errors:ratio_rate5m", "cluster_stage:svcprobe_probes_success:ratio_rate5m", true),
			want:   `removed metric "cluster_stage:svcprobe_probes_success:ratio_rate5m"`},
	}
	appliedSomewhere := map[string]bool{}
	for _, f := range files {
		orig, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		if res := checkDashboard(orig, known); len(res.problems) > 0 {
			t.Fatalf("%s has problems unmutated (see TestDashboards): %v", f, res.problems)
		}
		for _, mu := range mutations {
			var d map[string]any
			if err := json.Unmarshal(orig, &d); err != nil {
				t.Fatal(err)
			}
			applied := mu.mutate(d)
			appliedSomewhere[mu.name] = appliedSomewhere[mu.name] || applied
			if !applied && mu.optional {
				continue // not in this dashboard; it must apply to another (checked below)
			}
			t.Run(filepath.Base(f)+"/"+mu.name, func(t *testing.T) {
				if !applied {
					t.Fatal("the mutation found nothing to change: update this test to the dashboard")
				}
				b, err := json.Marshal(d)
				if err != nil {
					t.Fatal(err)
				}
				res := checkDashboard(b, known)
				for _, p := range res.problems {
					if strings.Contains(p, mu.want) {
						t.Logf("caught: %s", p)
						return
					}
				}
				t.Fatalf("want a problem containing %q, got %v", mu.want, res.problems)
			})
		}
	}
	for _, mu := range mutations {
		if !appliedSomewhere[mu.name] {
			t.Errorf("mutation %q found nothing to change in any dashboard: update this test to the dashboards", mu.name)
		}
	}
}

// eachDashboardTarget calls f with every target of d (collapsed rows' panels too), its panel and
// the panel's view, until f returns true; it reports whether one did.
func eachDashboardTarget(d map[string]any, f func(scope string, panel, target map[string]any) bool) bool {
	var walk func([]scopedPanel) bool
	walk = func(list []scopedPanel) bool {
		for _, sp := range list {
			targets, _ := sp.panel["targets"].([]any)
			for _, tg := range targets {
				if tm, ok := tg.(map[string]any); ok && f(sp.scope, sp.panel, tm) {
					return true
				}
			}
			if sub, ok := sp.panel["panels"].([]any); ok && walk(scopePanels(sub, sp.scope)) {
				return true
			}
		}
		return false
	}
	panels, _ := d["panels"].([]any)
	return walk(scopeDashboardPanels(panels))
}

func gridPos(x, y, w, h int) map[string]any {
	return map[string]any{"x": float64(x), "y": float64(y), "w": float64(w), "h": float64(h)}
}

func panel(id int, expr string) map[string]any {
	ds := map[string]any{"type": "prometheus", "uid": "${datasource}"}
	return map[string]any{"id": float64(id), "type": "timeseries", "title": fmt.Sprint("p", id), "datasource": ds,
		"gridPos": gridPos(0, id*8, 12, 8),
		"targets": []any{map[string]any{"refId": "A", "expr": expr, "datasource": ds}}}
}

func panelAt(d map[string]any, i int) map[string]any { return d["panels"].([]any)[i].(map[string]any) }

func setExpr(d map[string]any, i int, expr string) {
	panelAt(d, i)["targets"].([]any)[0].(map[string]any)["expr"] = expr
}

func varNamed(d map[string]any, name string) map[string]any {
	for _, v := range d["templating"].(map[string]any)["list"].([]any) {
		if m := v.(map[string]any); m["name"] == name {
			return m
		}
	}
	panic("no variable " + name)
}

// validTestDashboard: panels 0 and 1 central, 2 the node row, 3 in it.
func validTestDashboard() map[string]any {
	ds := map[string]any{"type": "prometheus", "uid": "${datasource}"}
	q := func(name, query string) map[string]any {
		return map[string]any{"name": name, "type": "query", "datasource": ds, "includeAll": true, "allValue": ".*",
			"query": map[string]any{"query": query, "refId": "A"}}
	}
	node := q("node", `label_values(svcprobe_cluster_dns_up{cluster=~"$cluster", node!=""}, node)`)
	node["allValue"] = ".+"
	nodeRow := map[string]any{"id": 3.0, "type": "row", "title": dashboardNodeRowTitle, "collapsed": false, "panels": []any{},
		"gridPos": gridPos(0, 24, 24, 1)}
	nodePanel := panel(4, `count by (node) (svcprobe_service_verdict{cluster=~"$cluster", node=~"$node", namespace=~"${namespace:regex}"}) / on (node) group_left () count by (node) (svcprobe_cluster_dns_up{node=~"[[node]]"})`)
	nodePanel["gridPos"] = gridPos(0, 25, 24, 8)
	return map[string]any{
		"uid": "t", "title": "t", "schemaVersion": 39.0, "tags": []any{"svcprobe"},
		"annotations": map[string]any{"list": []any{map[string]any{"builtIn": 1.0, "datasource": map[string]any{"type": "grafana", "uid": "-- Grafana --"}}}},
		"panels": []any{
			panel(1, `sum by (stage) (rate(svcprobe_stage_runs_total{cluster=~"$cluster", node="", namespace=~"${namespace:regex}", service=~"[[service]]"}[$__rate_interval]))`),
			panel(2, `histogram_quantile(0.99, sum by (le) (rate(svcprobe_probe_duration_seconds_bucket[$__rate_interval]))) * $objective`),
			nodeRow,
			nodePanel,
		},
		"templating": map[string]any{"list": []any{
			map[string]any{"name": "datasource", "type": "datasource", "query": "prometheus"},
			q("cluster", "label_values(svcprobe_service_verdict, cluster)"),
			node,
			q("namespace", `label_values(svcprobe_service_verdict{cluster=~"$cluster"}, namespace)`),
			map[string]any{"name": "objective", "type": "custom", "query": "0.99,0.999", "current": map[string]any{"value": "0.999"}},
			q("service", `label_values(svcprobe_service_verdict{cluster=~"$cluster", namespace=~"$namespace"}, service)`),
		}},
	}
}

// dashboardCheck is the outcome of checking one dashboard.
type dashboardCheck struct {
	uid      string
	panels   int
	exprs    int
	used     []string
	problems []string
}

// checkDashboard checks one dashboard's JSON; every finding is a problem, none is fatal.
func checkDashboard(data []byte, known dashboardKnown) dashboardCheck {
	var res dashboardCheck
	bad := func(format string, args ...any) { res.problems = append(res.problems, fmt.Sprintf(format, args...)) }
	var d map[string]any
	if err := json.Unmarshal(data, &d); err != nil {
		bad("not a JSON object: %v", err)
		return res
	}
	res.uid, _ = d["uid"].(string)
	if res.uid == "" {
		bad("no uid")
	}
	if s, _ := d["title"].(string); s == "" {
		bad("no title")
	}
	if v, _ := d["schemaVersion"].(float64); v < 39 {
		bad("schemaVersion %v, want 39 or later", d["schemaVersion"])
	}
	if tags, _ := d["tags"].([]any); len(tags) == 0 {
		bad("no tags")
	}

	// Data sources: every reference anywhere in the document is the ${datasource} variable, except
	// the built-in annotation's Grafana data source.
	dashboardWalk(d, "", func(path string, m map[string]any) {
		ref, ok := m["datasource"]
		if !ok {
			return
		}
		switch ds := ref.(type) {
		case string:
			if !isDatasourceVar(ds) {
				bad("%s: datasource %q is not the ${datasource} variable", path, ds)
			}
		case map[string]any:
			uid, _ := ds["uid"].(string)
			typ, _ := ds["type"].(string)
			if isDatasourceVar(uid) || (uid == "-- Grafana --" && typ == "grafana" && m["builtIn"] != nil) {
				return
			}
			bad("%s: datasource uid %q is hard-coded; use ${datasource}", path, uid)
		case nil:
		default:
			bad("%s: datasource of type %T", path, ref)
		}
	})

	// Template variables and the values they stand for in the expressions.
	values := map[string]string{}
	var varQueries []string
	tmpl, _ := d["templating"].(map[string]any)
	vars, _ := tmpl["list"].([]any)
	for _, v := range vars {
		m, _ := v.(map[string]any)
		name, _ := m["name"].(string)
		typ, _ := m["type"].(string)
		if name == "" {
			bad("a template variable without a name")
			continue
		}
		switch typ {
		case "datasource":
			if q, _ := m["query"].(string); q != "prometheus" {
				bad("datasource variable %s selects %q data sources, want prometheus", name, q)
			}
			values[name] = "prometheus"
		case "query":
			values[name] = dashboardVarValue(name)
			if name == dashboardNodeVar {
				checkNodeVariable(m, bad)
			}
			q := m["query"]
			if qm, ok := q.(map[string]any); ok {
				q = qm["query"]
			}
			if qs, _ := q.(string); qs != "" {
				varQueries = append(varQueries, qs)
			} else {
				bad("query variable %s has no query", name)
			}
		case "custom", "constant", "textbox", "interval":
			values[name] = "1"
			if cur, ok := m["current"].(map[string]any); ok {
				if s, ok := cur["value"].(string); ok && s != "" {
					values[name] = s
				}
			}
		default:
			values[name] = "value"
		}
	}
	if values["datasource"] == "" || values["datasource"] != "prometheus" {
		bad("no datasource variable of type datasource")
	}
	for _, want := range dashboardRequiredVars {
		if _, ok := values[want]; !ok {
			bad("no template variable %s", want)
		}
	}

	used := map[string]bool{}
	// checkExpr checks one expression; scope is the panel's view (scopeCentral or scopeNode, ""
	// for a variable query). It reports whether the expression filters by the node variable.
	checkExpr := func(where, expr string, scope string) (usesNodeVar bool) {
		res.exprs++
		if strings.Contains(expr, "[$__interval]") {
			bad("%s: a range of $__interval misses samples; use $__rate_interval: %s", where, expr)
		}
		concrete := substituteDashboardVars(expr, values)
		if strings.Contains(concrete, "$") || strings.Contains(concrete, "[[") {
			bad("%s: undefined variable left in %q", where, concrete)
			return false
		}
		e, err := parser.NewParser(parser.Options{}).ParseExpr(concrete)
		if err != nil {
			bad("%s: does not parse: %v\n\t%s", where, err, concrete)
			return false
		}
		if typ := e.Type(); typ != parser.ValueTypeVector && typ != parser.ValueTypeScalar {
			bad("%s: evaluates to a %s, want an instant vector or scalar: %s", where, typ, expr)
		}
		for _, name := range selectedMetrics(e, func(msg string) { bad("%s: %s", where, msg) }) {
			used[name] = true
			if hint, removed := dashboardRemoved(name); removed {
				bad("%s: removed metric %q; use %s", where, name, hint)
			} else if !known.allows(name) {
				bad("%s: unknown metric %q (not in docs/metric-names.txt, not a recording rule of deploy/rules, not up)", where, name)
			}
		}
		return checkNodeScope(e, scope, values[dashboardNodeVar], func(msg string) { bad("%s: %s", where, msg) })
	}

	for _, q := range varQueries {
		if sel, ok := variableQueryExpr(q); ok {
			checkExpr("variable query "+q, sel, "")
		}
	}

	ids := map[float64]string{}
	var walkPanels func(list []scopedPanel, parent string)
	walkPanels = func(list []scopedPanel, parent string) {
		for _, sp := range list {
			m := sp.panel
			res.panels++
			title, _ := m["title"].(string)
			where := fmt.Sprintf("%spanel %q", parent, title)
			id, ok := m["id"].(float64)
			if !ok {
				bad("%s: no numeric id", where)
			} else if other, dup := ids[id]; dup {
				bad("%s: duplicate panel id %v (also %s)", where, id, other)
			} else {
				ids[id] = where
			}
			if typ, _ := m["type"].(string); typ == "" {
				bad("%s: no type", where)
			}
			gp, _ := m["gridPos"].(map[string]any)
			w, _ := gp["w"].(float64)
			h, _ := gp["h"].(float64)
			x, _ := gp["x"].(float64)
			if gp == nil || w <= 0 || h <= 0 || x+w > 24 {
				bad("%s: gridPos %v is missing or outside the 24-column grid", where, m["gridPos"])
			}
			targets, _ := m["targets"].([]any)
			if len(targets) > 0 && m["datasource"] == nil {
				for _, tg := range targets {
					if tm, _ := tg.(map[string]any); tm["datasource"] == nil {
						bad("%s: a target without a datasource (the dashboard default would be used, not ${datasource})", where)
					}
				}
			}
			for i, tg := range targets {
				tm, _ := tg.(map[string]any)
				expr, _ := tm["expr"].(string)
				if expr == "" {
					bad("%s: target %d has no expr", where, i)
					continue
				}
				twhere := fmt.Sprintf("%s target %v", where, tm["refId"])
				if !checkExpr(twhere, expr, sp.scope) && sp.scope == scopeNode {
					bad("%s: in the row %q but does not filter by node=~\"$%s\": %s", twhere, dashboardNodeRowTitle, dashboardNodeVar, expr)
				}
			}
			if typ, _ := m["type"].(string); sp.scope == scopeNode && typ != "row" && typ != "text" && len(targets) == 0 {
				bad("%s: in the row %q without a query filtered by $%s", where, dashboardNodeRowTitle, dashboardNodeVar)
			}
			if sub, ok := m["panels"].([]any); ok {
				walkPanels(scopePanels(sub, sp.scope), where+" > ")
			}
		}
	}
	panels, _ := d["panels"].([]any)
	if len(panels) == 0 {
		bad("no panels")
	}
	scoped := scopeDashboardPanels(panels)
	nodePanels := 0
	for _, sp := range scoped {
		if sp.scope == scopeNode && sp.panel["type"] != "row" {
			nodePanels++
		}
		if sub, ok := sp.panel["panels"].([]any); ok && sp.scope == scopeNode {
			nodePanels += len(sub)
		}
	}
	if nodePanels == 0 {
		bad("no row %q with panels (the node agents' views, filtered by $%s)", dashboardNodeRowTitle, dashboardNodeVar)
	}
	walkPanels(scoped, "")
	for n := range used {
		res.used = append(res.used, n)
	}
	sort.Strings(res.used)
	return res
}

// The two views of a dashboard.
const (
	scopeCentral = "central" // the central exporter's: node=""
	scopeNode    = "node"    // the row dashboardNodeRowTitle: node=~"$node"
)

// scopedPanel is a panel and the view it belongs to.
type scopedPanel struct {
	panel map[string]any
	scope string
}

// scopeDashboardPanels orders the top-level panels as Grafana lays them out (by gridPos y, then x)
// and gives each its view: the row dashboardNodeRowTitle and the panels under it (after it while it
// is expanded, in its panels while collapsed) are scopeNode, every other panel scopeCentral.
func scopeDashboardPanels(list []any) []scopedPanel {
	type placed struct {
		m    map[string]any
		y, x float64
		i    int
	}
	ps := make([]placed, 0, len(list))
	for i, p := range list {
		m, _ := p.(map[string]any)
		if m == nil {
			m = map[string]any{}
		}
		gp, _ := m["gridPos"].(map[string]any)
		y, _ := gp["y"].(float64)
		x, _ := gp["x"].(float64)
		ps = append(ps, placed{m, y, x, i})
	}
	sort.SliceStable(ps, func(a, b int) bool {
		if ps[a].y != ps[b].y {
			return ps[a].y < ps[b].y
		}
		return ps[a].x < ps[b].x
	})
	out := make([]scopedPanel, 0, len(ps))
	scope := scopeCentral
	for _, p := range ps {
		if typ, _ := p.m["type"].(string); typ == "row" {
			scope = scopeCentral
			if title, _ := p.m["title"].(string); title == dashboardNodeRowTitle {
				scope = scopeNode
			}
		}
		out = append(out, scopedPanel{p.m, scope})
	}
	return out
}

// scopePanels gives the panels of a collapsed row their row's view.
func scopePanels(list []any, scope string) []scopedPanel {
	out := make([]scopedPanel, 0, len(list))
	for _, p := range list {
		m, _ := p.(map[string]any)
		if m == nil {
			m = map[string]any{}
		}
		out = append(out, scopedPanel{m, scope})
	}
	return out
}

// dashboardVarValue is what a query variable stands for in a checked expression: a value naming
// the variable, so that a matcher can be traced back to it.
func dashboardVarValue(name string) string { return "value_of_" + name }

// checkNodeVariable checks the node variable: its All value must not match node="", or the
// node row would show the central exporter too.
func checkNodeVariable(v map[string]any, bad func(string, ...any)) {
	if all, _ := v["includeAll"].(bool); !all {
		return
	}
	allValue, _ := v["allValue"].(string)
	if allValue == "" {
		return // Grafana's All is then every value found, all non-empty
	}
	re, err := regexp.Compile("^(?:" + allValue + ")$")
	if err != nil {
		bad("variable %s: allValue %q is not a regular expression: %v", dashboardNodeVar, allValue, err)
		return
	}
	if re.MatchString("") {
		bad("variable %s: allValue %q matches node=\"\", the central exporter; use .+", dashboardNodeVar, allValue)
	}
}

// checkNodeScope checks the node matchers of e's selectors for the view it is in, and reports
// whether one of them filters by the node variable (nodeValue is what that variable stands for).
//   - scopeCentral: every selector of a node-labelled family has node="".
//   - scopeNode: every selector of a node-labelled family matches node somehow (the caller
//     requires one of them, or another selector, to use the node variable).
func checkNodeScope(e parser.Expr, scope, nodeValue string, bad func(string)) bool {
	usesVar := false
	parser.Inspect(e, func(n parser.Node, _ []parser.Node) error {
		vs, ok := n.(*parser.VectorSelector)
		if !ok {
			return nil
		}
		name := vs.Name
		central, anyNode := false, false
		for _, m := range vs.LabelMatchers {
			if m.Name == labels.MetricName && name == "" {
				name = m.Value
			}
			if m.Name != dashboardNodeVar {
				continue
			}
			anyNode = true
			if m.Type == labels.MatchEqual && m.Value == "" {
				central = true
			}
			if nodeValue != "" && strings.Contains(m.Value, nodeValue) && (m.Type == labels.MatchRegexp || m.Type == labels.MatchEqual) {
				usesVar = true
			}
		}
		if !dashboardNodeLabelledSeries(name) {
			return nil
		}
		switch scope {
		case scopeCentral:
			if !central {
				bad(fmt.Sprintf(`selector %s outside the row %q lacks node="": it adds up the central exporter and every node agent`, vs, dashboardNodeRowTitle))
			}
		case scopeNode:
			if !anyNode {
				bad(fmt.Sprintf(`selector %s in the row %q has no node matcher: it mixes the central exporter (node="") with the agents; use node=~"$%s"`, vs, dashboardNodeRowTitle, dashboardNodeVar))
			}
		}
		return nil
	})
	return usesVar
}

func isDatasourceVar(s string) bool {
	return s == "${datasource}" || s == "$datasource" || s == "[[datasource]]"
}

// dashboardWalk calls f for every object in the document, with a JSON-ish path.
func dashboardWalk(v any, path string, f func(path string, m map[string]any)) {
	switch x := v.(type) {
	case map[string]any:
		f(path, x)
		for k, c := range x {
			dashboardWalk(c, path+"."+k, f)
		}
	case []any:
		for i, c := range x {
			dashboardWalk(c, fmt.Sprintf("%s[%d]", path, i), f)
		}
	}
}

var dashboardVarRef = regexp.MustCompile(`\$\{([A-Za-z0-9_]+)(?::[^}]*)?\}|\[\[([A-Za-z0-9_]+)(?::[^\]]*)?\]\]|\$([A-Za-z0-9_]+)`)

// substituteDashboardVars replaces Grafana's macros and the dashboard's variables (all three
// syntaxes: $name, ${name[:format]}, [[name]]) by concrete values. Unknown names stay as they
// are, so the caller sees them.
func substituteDashboardVars(expr string, values map[string]string) string {
	for _, m := range dashboardMacros {
		expr = strings.ReplaceAll(expr, m.name, m.value)
	}
	return dashboardVarRef.ReplaceAllStringFunc(expr, func(ref string) string {
		sm := dashboardVarRef.FindStringSubmatch(ref)
		name := sm[1] + sm[2] + sm[3]
		if v, ok := values[name]; ok {
			return v
		}
		return ref
	})
}

var (
	labelValuesQuery = regexp.MustCompile(`^\s*label_values\((.*),\s*[A-Za-z_][A-Za-z0-9_]*\s*\)\s*$`)
	queryResultQuery = regexp.MustCompile(`^\s*query_result\((.*)\)\s*$`)
)

// variableQueryExpr extracts the PromQL of a Prometheus variable query: the selector of
// label_values(selector, label) or the expression of query_result(expr). label_values(label)
// and metrics(regex) select no metric by name.
func variableQueryExpr(q string) (string, bool) {
	if m := labelValuesQuery.FindStringSubmatch(q); m != nil {
		return m[1], true
	}
	if m := queryResultQuery.FindStringSubmatch(q); m != nil {
		return m[1], true
	}
	return "", false
}

// selectedMetrics returns the metric names every vector selector of e selects.
func selectedMetrics(e parser.Expr, bad func(string)) []string {
	var names []string
	parser.Inspect(e, func(n parser.Node, _ []parser.Node) error {
		vs, ok := n.(*parser.VectorSelector)
		if !ok {
			return nil
		}
		name := vs.Name
		if name == "" {
			for _, m := range vs.LabelMatchers {
				if m.Name != labels.MetricName {
					continue
				}
				if m.Type != labels.MatchEqual {
					bad(fmt.Sprintf("selector %s matches metric names by %s; name the metric so it can be checked", vs, m.Type))
					continue
				}
				name = m.Value
			}
		}
		if name == "" {
			bad(fmt.Sprintf("selector %s names no metric", vs))
			return nil
		}
		if !slices.Contains(names, name) {
			names = append(names, name)
		}
		return nil
	})
	return names
}

package check

import (
	"encoding/json"
	"fmt"
	"log/slog"
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
// recording rules of deploy/rules/*.yaml, or Prometheus' own `up`.

const (
	dashboardsGlob      = "../../dashboards/*.json"
	dashboardMetricList = "../../docs/metric-names.txt"
	dashboardRulesGlob  = "../../deploy/rules/*.yaml"
)

// dashboardRequiredVars are the template variables every dashboard offers.
var dashboardRequiredVars = []string{"datasource", "cluster", "namespace", "service"}

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
		metrics: map[string]bool{"svcprobe_probes_total": true, "svcprobe_probe_duration_seconds": true, "svcprobe_service_verdict": true},
		rules:   map[string]bool{"svcprobe:probe_success:ratio_rate5m": true},
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
			setExpr(d, 0, `sum(rate(svcprobe_probes_total[$__rate_interval])`)
		}, "does not parse"},
		{"range vector result", func(d map[string]any) {
			setExpr(d, 0, `svcprobe_probes_total[$__rate_interval]`)
		}, "evaluates to a matrix"},
		{"undefined variable", func(d map[string]any) {
			setExpr(d, 0, `svcprobe_service_verdict{namespace="$nmspace"}`)
		}, "undefined variable"},
		{"$__interval in a range", func(d map[string]any) {
			setExpr(d, 0, `rate(svcprobe_probes_total[$__interval])`)
		}, "$__rate_interval"},
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

func validTestDashboard() map[string]any {
	ds := map[string]any{"type": "prometheus", "uid": "${datasource}"}
	q := func(name, query string) map[string]any {
		return map[string]any{"name": name, "type": "query", "datasource": ds, "includeAll": true, "allValue": ".*",
			"query": map[string]any{"query": query, "refId": "A"}}
	}
	return map[string]any{
		"uid": "t", "title": "t", "schemaVersion": 39.0, "tags": []any{"svcprobe"},
		"annotations": map[string]any{"list": []any{map[string]any{"builtIn": 1.0, "datasource": map[string]any{"type": "grafana", "uid": "-- Grafana --"}}}},
		"panels": []any{
			panel(1, `sum by (stage) (rate(svcprobe_probes_total{cluster=~"$cluster", namespace=~"${namespace:regex}", service=~"[[service]]"}[$__rate_interval]))`),
			panel(2, `histogram_quantile(0.99, sum by (le) (rate(svcprobe_probe_duration_seconds_bucket[$__rate_interval]))) * $objective`),
		},
		"templating": map[string]any{"list": []any{
			map[string]any{"name": "datasource", "type": "datasource", "query": "prometheus"},
			q("cluster", "label_values(svcprobe_service_verdict, cluster)"),
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
			values[name] = "value"
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
	checkExpr := func(where, expr string) {
		res.exprs++
		if strings.Contains(expr, "[$__interval]") {
			bad("%s: a range of $__interval misses samples; use $__rate_interval: %s", where, expr)
		}
		concrete := substituteDashboardVars(expr, values)
		if strings.Contains(concrete, "$") || strings.Contains(concrete, "[[") {
			bad("%s: undefined variable left in %q", where, concrete)
			return
		}
		e, err := parser.NewParser(parser.Options{}).ParseExpr(concrete)
		if err != nil {
			bad("%s: does not parse: %v\n\t%s", where, err, concrete)
			return
		}
		if typ := e.Type(); typ != parser.ValueTypeVector && typ != parser.ValueTypeScalar {
			bad("%s: evaluates to a %s, want an instant vector or scalar: %s", where, typ, expr)
		}
		for _, name := range selectedMetrics(e, func(msg string) { bad("%s: %s", where, msg) }) {
			used[name] = true
			if !known.allows(name) {
				bad("%s: unknown metric %q (not in docs/metric-names.txt, not a recording rule of deploy/rules, not up)", where, name)
			}
		}
	}

	for _, q := range varQueries {
		if sel, ok := variableQueryExpr(q); ok {
			checkExpr("variable query "+q, sel)
		}
	}

	ids := map[float64]string{}
	var walkPanels func(list []any, parent string)
	walkPanels = func(list []any, parent string) {
		for _, p := range list {
			m, _ := p.(map[string]any)
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
				checkExpr(fmt.Sprintf("%s target %v", where, tm["refId"]), expr)
			}
			if sub, ok := m["panels"].([]any); ok {
				walkPanels(sub, where+" > ")
			}
		}
	}
	panels, _ := d["panels"].([]any)
	if len(panels) == 0 {
		bad("no panels")
	}
	walkPanels(panels, "")
	for n := range used {
		res.used = append(res.used, n)
	}
	sort.Strings(res.used)
	return res
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

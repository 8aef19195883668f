package check

// The alert, SLO and recording rules of deploy/rules: promtool (built from the prometheus module
// this module pins) checks and unit-tests them, and the rules are read with Prometheus' own rulefmt
// and PromQL parser to check what promtool does not: every alert carries the labels and
// annotations the on-call engineer relies on, every runbook_url lands on a heading of
// docs/runbook.md, every metric an expression reads is one the exporter exports, and every rule
// is exercised by a promtool test (alerts both firing and not firing).

import (
	"bufio"
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/common/model"
	"github.com/prometheus/common/promslog"
	"github.com/prometheus/prometheus/model/rulefmt"
	"github.com/prometheus/prometheus/promql/parser"
	"sigs.k8s.io/yaml"
)

const (
	// Where the tools are when PROMTOOL/PROMETHEUS/AMTOOL are not set (check.mk's names).
	prometheusVersion   = "v0.316.0"
	alertmanagerVersion = "v0.35.0"

	runbookURLPrefix = "https://github.com/svcprobe/svcprobe/blob/main/docs/runbook.md#"
)

// The alerts issue #5 asks for; each must exist in deploy/rules.
var requiredAlerts = []string{
	"SvcprobeServiceDNSBroken", "SvcprobeServiceEndpointsMissing", "SvcprobeServicePodsUnreachable",
	"SvcprobeServiceProxyBroken", "SvcprobeServiceHairpinBroken", "SvcprobeServiceSpecInvalid",
	"SvcprobeServiceMissing", "ClusterDNSDown", "ServiceProxyDownOnNode", "SvcprobeDiscoveryNotSynced",
	"SvcprobeErrorBudgetBurn",
}

// repoRoot is the svcprobe checkout (this module lives in deploy/check).
func repoRoot(t *testing.T) string {
	t.Helper()
	root, err := filepath.Abs(filepath.Join("..", ".."))
	if err != nil {
		t.Fatal(err)
	}
	return root
}

// lookupPromTool returns the path of an upstream tool: $env, else check.mk's cache path. A missing
// tool fails the test under CI=true and skips it elsewhere.
func lookupPromTool(t *testing.T, env, name, version string) string {
	t.Helper()
	p := os.Getenv(env)
	if p == "" {
		cache := os.Getenv("SVCPROBE_CACHE")
		if cache == "" {
			home, err := os.UserHomeDir()
			if err != nil {
				home = "/root"
			}
			cache = filepath.Join(home, ".cache", "svcprobe")
		}
		p = filepath.Join(cache, "bin", name+"-"+version)
	}
	if st, err := os.Stat(p); err != nil || st.IsDir() || st.Mode()&0o111 == 0 {
		msg := name + " not found at " + p + " (run `make prom-tools`, or set " + env + ")"
		if os.Getenv("CI") == "true" {
			t.Fatal(msg)
		}
		t.Skip(msg)
	}
	return p
}

// runTool runs a tool and returns its combined output; a non-zero exit fails the test.
func runTool(t *testing.T, dir, bin string, args ...string) string {
	t.Helper()
	cmd := exec.Command(bin, args...)
	cmd.Dir = dir
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	start := time.Now()
	if err := cmd.Run(); err != nil {
		t.Fatalf("%s %s: %v\n%s", filepath.Base(bin), strings.Join(args, " "), err, out.String())
	}
	t.Logf("%s %s: ok in %s", filepath.Base(bin), strings.Join(args, " "), time.Since(start).Round(time.Millisecond))
	return out.String()
}

func ruleFiles(t *testing.T) []string {
	t.Helper()
	files, err := filepath.Glob(filepath.Join(repoRoot(t), "deploy", "rules", "*.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if len(files) == 0 {
		t.Fatal("no rule files in deploy/rules")
	}
	return files
}

func ruleTestFiles(t *testing.T) []string {
	t.Helper()
	files, err := filepath.Glob(filepath.Join(repoRoot(t), "deploy", "rules", "tests", "*.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if len(files) == 0 {
		t.Fatal("no promtool tests in deploy/rules/tests")
	}
	return files
}

var promqlParser = parser.NewParser(parser.Options{})

// loadRules parses every rule file with Prometheus' rulefmt (strict: unknown fields are errors).
func loadRules(t *testing.T) map[string]*rulefmt.RuleGroups {
	t.Helper()
	out := map[string]*rulefmt.RuleGroups{}
	for _, f := range ruleFiles(t) {
		rgs, errs := rulefmt.ParseFile(f, false, model.UTF8Validation, promqlParser, promslog.NewNopLogger())
		if len(errs) > 0 {
			t.Fatalf("%s: %v", f, errs)
		}
		out[filepath.Base(f)] = rgs
	}
	return out
}

func TestRulesPromtoolCheck(t *testing.T) {
	promtool := lookupPromTool(t, "PROMTOOL", "promtool", prometheusVersion)
	files := ruleFiles(t)
	args := append([]string{"check", "rules", "--lint=all", "--lint-fatal"}, files...)
	out := runTool(t, repoRoot(t), promtool, args...)
	if !strings.Contains(out, "SUCCESS") {
		t.Fatalf("promtool check rules did not report SUCCESS:\n%s", out)
	}
}

func TestRulesPromtoolTest(t *testing.T) {
	promtool := lookupPromTool(t, "PROMTOOL", "promtool", prometheusVersion)
	for _, f := range ruleTestFiles(t) {
		t.Run(filepath.Base(f), func(t *testing.T) {
			out := runTool(t, filepath.Dir(f), promtool, "test", "rules", filepath.Base(f))
			if !strings.Contains(out, "SUCCESS") {
				t.Fatalf("promtool test rules did not report SUCCESS:\n%s", out)
			}
		})
	}
}

// promtoolTests is the part of promtool's unit-test file format this test reads.
type promtoolTests struct {
	RuleFiles []string `json:"rule_files"`
	Tests     []struct {
		Name           string `json:"name"`
		AlertRuleTests []struct {
			Alertname string          `json:"alertname"`
			ExpAlerts []json2Expected `json:"exp_alerts"`
		} `json:"alert_rule_test"`
		PromQLExprTests []struct {
			Expr string `json:"expr"`
		} `json:"promql_expr_test"`
	} `json:"tests"`
}

type json2Expected struct {
	ExpLabels map[string]string `json:"exp_labels"`
}

// TestRulesCoveredByPromtoolTests: every alert has a promtool test where it fires and one where it
// does not, every recording rule is queried by a promtool test, and every rule file has tests.
func TestRulesCoveredByPromtoolTests(t *testing.T) {
	fires, silent, queried, tested := map[string]bool{}, map[string]bool{}, map[string]bool{}, map[string]bool{}
	for _, f := range ruleTestFiles(t) {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		var pt promtoolTests
		if err := yaml.Unmarshal(b, &pt); err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		for _, rf := range pt.RuleFiles {
			tested[filepath.Base(rf)] = true
		}
		for _, tg := range pt.Tests {
			for _, at := range tg.AlertRuleTests {
				if len(at.ExpAlerts) > 0 {
					fires[at.Alertname] = true
				} else {
					silent[at.Alertname] = true
				}
			}
			for _, et := range tg.PromQLExprTests {
				queried[et.Expr] = true
			}
		}
	}
	for file, rgs := range loadRules(t) {
		if !tested[file] {
			t.Errorf("%s: no promtool test file lists it in rule_files", file)
		}
		for _, g := range rgs.Groups {
			for _, r := range g.Rules {
				switch {
				case r.Alert != "":
					if !fires[r.Alert] {
						t.Errorf("%s: alert %s has no promtool test where it fires", file, r.Alert)
					}
					if !silent[r.Alert] {
						t.Errorf("%s: alert %s has no promtool test where it does not fire", file, r.Alert)
					}
				case r.Record != "":
					found := false
					for expr := range queried {
						if regexp.MustCompile(`(^|[^a-zA-Z0-9_:])` + regexp.QuoteMeta(r.Record) + `($|[^a-zA-Z0-9_:])`).MatchString(expr) {
							found = true
						}
					}
					if !found {
						t.Errorf("%s: recording rule %s is not queried by any promtool test", file, r.Record)
					}
				}
			}
		}
	}
}

// TestRulesWellFormed checks what an alert must carry for the person it pages.
func TestRulesWellFormed(t *testing.T) {
	root := repoRoot(t)
	anchors := markdownAnchors(t, filepath.Join(root, "docs", "runbook.md"))
	seen := map[string]bool{}
	for file, rgs := range loadRules(t) {
		for _, g := range rgs.Groups {
			for _, r := range g.Rules {
				if r.Alert == "" {
					continue
				}
				seen[r.Alert] = true
				where := file + ": " + r.Alert
				switch r.Labels["severity"] {
				case "critical", "warning", "info":
				default:
					t.Errorf("%s: severity label %q, want critical, warning or info", where, r.Labels["severity"])
				}
				if r.Labels["layer"] == "" && !strings.Contains(r.Expr, `"layer"`) {
					t.Errorf("%s: no layer label (static, or set by label_replace from the stage)", where)
				}
				if time.Duration(r.For) == 0 {
					t.Errorf("%s: no for: (a single probe round must not page)", where)
				}
				for _, a := range []string{"summary", "description", "runbook_url"} {
					if strings.TrimSpace(r.Annotations[a]) == "" {
						t.Errorf("%s: annotation %s missing", where, a)
					}
				}
				if !strings.Contains(r.Annotations["description"], "Next:") {
					t.Errorf("%s: the description does not say what to do next (\"Next: ...\")", where)
				}
				u := r.Annotations["runbook_url"]
				anchor, ok := strings.CutPrefix(u, runbookURLPrefix)
				if !ok {
					t.Errorf("%s: runbook_url %q does not start with %s", where, u, runbookURLPrefix)
				} else if !anchors[anchor] {
					t.Errorf("%s: runbook_url anchor #%s is not a heading of docs/runbook.md", where, anchor)
				}
				expr, err := promqlParser.ParseExpr(r.Expr)
				if err != nil {
					t.Errorf("%s: %v", where, err)
					continue
				}
				// Per-Service alerts must keep the Service's labels through every aggregation.
				if strings.HasPrefix(r.Alert, "SvcprobeService") {
					if sel := selectorNames(expr); !slices.Equal(sel, []string{"svcprobe_service_verdict"}) {
						t.Errorf("%s: per-Service alerts must be driven by svcprobe_service_verdict alone, reads %v", where, sel)
					}
					for _, lost := range labelsDropped(expr, "namespace", "service") {
						t.Errorf("%s: an aggregation drops the %s label", where, lost)
					}
					if l := r.Labels["layer"]; l == "" || !strings.Contains(r.Expr, `layer="`+l+`"`) {
						t.Errorf("%s: the layer label %q is not the verdict's layer the expression selects", where, l)
					}
				}
			}
		}
	}
	for _, a := range requiredAlerts {
		if !seen[a] {
			t.Errorf("alert %s missing from deploy/rules", a)
		}
	}
}

// TestRunbookAnchor checks the anchor function against GitHub's rules on a few headings, so a
// wrong anchor is not excused by a wrong test.
func TestRunbookAnchor(t *testing.T) {
	for in, want := range map[string]string{
		"SvcprobeServiceDNSBroken": "svcprobeservicednsbroken",
		"What `up` means, twice!":  "what-up-means-twice",
		"Layer 7 (HTTP) / probes":  "layer-7-http--probes",
	} {
		if got := githubAnchor(in); got != want {
			t.Errorf("githubAnchor(%q) = %q, want %q", in, got, want)
		}
	}
}

// githubAnchor is the id GitHub gives a Markdown heading: lower case, punctuation other than
// hyphens and underscores dropped, spaces turned into hyphens.
func githubAnchor(heading string) string {
	var b strings.Builder
	for _, r := range strings.ToLower(strings.TrimSpace(heading)) {
		switch {
		case r == ' ':
			b.WriteByte('-')
		case r == '-' || r == '_' || ('a' <= r && r <= 'z') || ('0' <= r && r <= '9'):
			b.WriteRune(r)
		}
	}
	return b.String()
}

func markdownAnchors(t *testing.T, path string) map[string]bool {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	out := map[string]bool{}
	sc := bufio.NewScanner(f)
	fence := false
	for sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(line, "```") {
			fence = !fence
		}
		if !fence && strings.HasPrefix(line, "#") {
			out[githubAnchor(strings.TrimLeft(line, "#"))] = true
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

// selectorNames lists the metric names an expression selects, sorted and unique.
func selectorNames(expr parser.Expr) []string {
	set := map[string]bool{}
	parser.Inspect(expr, func(n parser.Node, _ []parser.Node) error {
		if vs, ok := n.(*parser.VectorSelector); ok {
			name := vs.Name
			if name == "" {
				for _, m := range vs.LabelMatchers {
					if m.Name == model.MetricNameLabel {
						name = m.Value
					}
				}
			}
			set[name] = true
		}
		return nil
	})
	var out []string
	for n := range set {
		out = append(out, n)
	}
	sort.Strings(out)
	return out
}

// labelsDropped returns which of labels some aggregation in expr removes.
func labelsDropped(expr parser.Expr, labels ...string) []string {
	var out []string
	parser.Inspect(expr, func(n parser.Node, _ []parser.Node) error {
		ag, ok := n.(*parser.AggregateExpr)
		if !ok {
			return nil
		}
		for _, l := range labels {
			in := slices.Contains(ag.Grouping, l)
			if ag.Without == in { // without (l) or by (...) lacking l
				out = append(out, l)
			}
		}
		return nil
	})
	return out
}

func TestLabelsDropped(t *testing.T) {
	for expr, want := range map[string]int{
		`max without (reason) (svcprobe_service_verdict) == 1`:       0,
		`max by (namespace, service) (svcprobe_service_verdict)`:     0,
		`max by (namespace) (svcprobe_service_verdict)`:              1,
		`count without (service, reason) (svcprobe_service_verdict)`: 1,
		`sum(svcprobe_service_verdict)`:                              2,
	} {
		e, err := promqlParser.ParseExpr(expr)
		if err != nil {
			t.Fatal(err)
		}
		if got := labelsDropped(e, "namespace", "service"); len(got) != want {
			t.Errorf("%s: dropped %v, want %d labels", expr, got, want)
		}
	}
}

// exportedMetricNames is the exporter's metric list: docs/metric-names.txt (generated from the
// exporter) when it exists, else the names in README.md's metrics tables.
func exportedMetricNames(t *testing.T) (map[string]bool, string) {
	t.Helper()
	root := repoRoot(t)
	names := map[string]bool{}
	if b, err := os.ReadFile(filepath.Join(root, "docs", "metric-names.txt")); err == nil {
		for _, l := range strings.Split(string(b), "\n") {
			if l = strings.TrimSpace(l); l != "" && !strings.HasPrefix(l, "#") {
				names[l] = true
			}
		}
		return names, "docs/metric-names.txt"
	}
	b, err := os.ReadFile(filepath.Join(root, "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	row := regexp.MustCompile("^\\| `(svcprobe_[a-z_]+)`(?: / `(_[a-z_]+)`)?")
	for _, l := range strings.Split(string(b), "\n") {
		if m := row.FindStringSubmatch(l); m != nil {
			names[m[1]] = true
			if m[2] != "" { // `svcprobe_scheduler_lag_seconds` / `_max_lag_seconds`
				subsystem := m[1][:len("svcprobe_")+strings.Index(m[1][len("svcprobe_"):], "_")]
				names[subsystem+m[2]] = true
			}
			// `svcprobe_budget_waits_total` / `svcprobe_budget_wait_seconds_total`
			for _, extra := range regexp.MustCompile("`(svcprobe_[a-z_]+)`").FindAllStringSubmatch(l, -1) {
				names[extra[1]] = true
			}
		}
	}
	if len(names) < 10 {
		t.Fatalf("found only %d metric names in README.md's tables", len(names))
	}
	return names, "README.md"
}

// TestRulesMetricNames: every metric a rule reads is exported by svcprobe (or is Prometheus' up,
// or a recording rule of deploy/rules).
func TestRulesMetricNames(t *testing.T) {
	known, source := exportedMetricNames(t)
	rules := loadRules(t)
	recorded := map[string]bool{}
	for _, rgs := range rules {
		for _, g := range rgs.Groups {
			for _, r := range g.Rules {
				if r.Record != "" {
					recorded[r.Record] = true
				}
			}
		}
	}
	isKnown := func(name string) bool {
		if known[name] || recorded[name] || name == "up" {
			return true
		}
		for _, suffix := range []string{"_bucket", "_sum", "_count"} {
			if base, ok := strings.CutSuffix(name, suffix); ok && known[base] {
				return true
			}
		}
		return false
	}
	n := 0
	for file, rgs := range rules {
		for _, g := range rgs.Groups {
			for _, r := range g.Rules {
				expr, err := promqlParser.ParseExpr(r.Expr)
				if err != nil {
					t.Fatalf("%s: %v", file, err)
				}
				for _, name := range selectorNames(expr) {
					n++
					if !isKnown(name) {
						t.Errorf("%s: rule %s%s reads %q, which is not in %s", file, r.Alert, r.Record, name, source)
					}
				}
			}
		}
	}
	if n == 0 {
		t.Fatal("no metric names found in any rule")
	}
	t.Logf("%d metric references checked against %s (%d names)", n, source, len(known))
}

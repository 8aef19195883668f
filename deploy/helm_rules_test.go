package deploy

// The chart's PrometheusRule values (prometheusRule.rules, .additionalLabels, .runbookBaseURL,
// .slo): with the defaults the rules are files/rules.yaml's unchanged; each value changes what it
// says and nothing else. The value tests render a copy of the chart whose files/rules.yaml is
// helm/testdata/rules.yaml, a small file of deploy/rules' shapes, so that they hold whatever
// deploy/rules holds today.

import (
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"

	"sigs.k8s.io/yaml"
)

const defaultRunbook = "https://github.com/svcprobe/svcprobe/blob/main/docs/runbook.md"

type promRule struct {
	Alert         string            `json:"alert,omitempty"`
	Record        string            `json:"record,omitempty"`
	Expr          string            `json:"expr"`
	For           string            `json:"for,omitempty"`
	KeepFiringFor string            `json:"keep_firing_for,omitempty"`
	Labels        map[string]string `json:"labels,omitempty"`
	Annotations   map[string]string `json:"annotations,omitempty"`
}

type promGroup struct {
	Name  string     `json:"name"`
	Rules []promRule `json:"rules"`
}

// renderedRuleGroups renders a chart (helmChart or a copy) with prometheusRule.enabled and returns
// its PrometheusRule's groups, decoded strictly.
func renderedRuleGroups(t *testing.T, chart string, args ...string) ([]promGroup, error) {
	t.Helper()
	out, err := helm(t, append([]string{"template", helmRelease, chart, "--namespace", helmNamespace,
		"--set", "prometheusRule.enabled=true", "--show-only", "templates/prometheusrule.yaml"}, args...)...)
	if err != nil {
		return nil, err
	}
	var pr struct {
		APIVersion string         `json:"apiVersion"`
		Kind       string         `json:"kind"`
		Metadata   map[string]any `json:"metadata"`
		Spec       struct {
			Groups []promGroup `json:"groups"`
		} `json:"spec"`
	}
	if err := yaml.UnmarshalStrict(splitYAML(out)[0], &pr); err != nil {
		t.Fatalf("PrometheusRule: %v\n%s", err, out)
	}
	return pr.Spec.Groups, nil
}

// readRuleGroups reads a rules file (files/rules.yaml's format).
func readRuleGroups(t *testing.T, path string) []promGroup {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var f struct {
		Groups []promGroup `json:"groups"`
	}
	if err := yaml.UnmarshalStrict(b, &f); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	return f.Groups
}

// chartWithRules copies the chart into a temporary directory with rules as its files/rules.yaml.
func chartWithRules(t *testing.T, rules []byte) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "svcprobe")
	if err := os.CopyFS(dir, os.DirFS(helmChart)); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "files", "rules.yaml"), rules, 0o644); err != nil {
		t.Fatal(err)
	}
	return dir
}

// rulesNamed returns the rules of an alert or record name, with their group's name.
func rulesNamed(groups []promGroup, name string) (out []promRule, in []string) {
	for _, g := range groups {
		for _, r := range g.Rules {
			if r.Alert == name || r.Record == name {
				out, in = append(out, r), append(in, g.Name)
			}
		}
	}
	return out, in
}

// TestHelmPrometheusRuleDefaults: with the default values the PrometheusRule carries
// files/rules.yaml's groups as they are (the objectives' defaults are the rules' own values), and
// with prometheusRule.jobSelector only the job matchers change.
func TestHelmPrometheusRuleDefaults(t *testing.T) {
	want := readRuleGroups(t, filepath.Join(helmChart, "files", "rules.yaml"))
	got, err := renderedRuleGroups(t, helmChart)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, want) {
		g, _ := yaml.Marshal(got)
		t.Errorf("with the default values the PrometheusRule's groups differ from files/rules.yaml (do the defaults of prometheusRule.slo.objectives still equal the rules' objectives?):\n%s", g)
	}
}

// TestHelmPrometheusRuleValues: each value of prometheusRule does what values.yaml says, on
// helm/testdata/rules.yaml.
func TestHelmPrometheusRuleValues(t *testing.T) {
	fixture, err := os.ReadFile("helm/testdata/rules.yaml")
	if err != nil {
		t.Fatal(err)
	}
	chart := chartWithRules(t, fixture)
	orig := readRuleGroups(t, "helm/testdata/rules.yaml")
	if got, err := renderedRuleGroups(t, chart); err != nil || !reflect.DeepEqual(got, orig) {
		t.Fatalf("defaults: the groups differ from helm/testdata/rules.yaml (err %v):\n%v", err, got)
	}

	t.Run("enabled", func(t *testing.T) {
		// Every rule of the name goes (two each); a group left empty goes too.
		got, err := renderedRuleGroups(t, chart, "--set", "prometheusRule.rules.ServiceProxyDownOnNode.enabled=false",
			"--set", "prometheusRule.rules.SvcprobeErrorBudgetBurn.enabled=false", "--set", "prometheusRule.rules.ClusterDNSDown.enabled=true")
		if err != nil {
			t.Fatal(err)
		}
		for _, name := range []string{"ServiceProxyDownOnNode", "SvcprobeErrorBudgetBurn"} {
			if rs, _ := rulesNamed(got, name); len(rs) != 0 {
				t.Errorf("%s.enabled=false: %d rules left", name, len(rs))
			}
		}
		if slices.ContainsFunc(got, func(g promGroup) bool { return g.Name == "svcprobe-slo-burn" }) {
			t.Error("the group svcprobe-slo-burn, empty, is still rendered")
		}
		var n, want int
		for _, g := range got {
			n += len(g.Rules)
		}
		for _, g := range orig {
			want += len(g.Rules)
		}
		if want -= 4; n != want {
			t.Errorf("%d rules, want %d: the others untouched", n, want)
		}
		if rs, _ := rulesNamed(got, "ClusterDNSDown"); len(rs) != 1 {
			t.Errorf("ClusterDNSDown.enabled=true: %d rules", len(rs))
		}
	})

	t.Run("per rule and additional labels", func(t *testing.T) {
		got, err := renderedRuleGroups(t, chart,
			"--set", "prometheusRule.rules.ClusterDNSDown.for=3m", "--set", "prometheusRule.rules.ClusterDNSDown.keepFiringFor=5m",
			"--set", "prometheusRule.rules.ClusterDNSDown.severity=page", "--set", "prometheusRule.rules.ClusterDNSDown.labels.team=dns",
			"--set", "prometheusRule.rules.ServiceProxyDownOnNode.severity=warning",
			"--set", "prometheusRule.rules.SvcprobeErrorBudgetBurn.labels.severity=ticket",
			"--set", "prometheusRule.additionalLabels.team=platform", "--set", "prometheusRule.additionalLabels.env=prod")
		if err != nil {
			t.Fatal(err)
		}
		rs, _ := rulesNamed(got, "ClusterDNSDown")
		if len(rs) != 1 || rs[0].For != "3m" || rs[0].KeepFiringFor != "5m" ||
			!reflect.DeepEqual(rs[0].Labels, map[string]string{"layer": "dns", "severity": "page", "team": "dns", "env": "prod"}) {
			t.Errorf("ClusterDNSDown: %+v, want for 3m, keep_firing_for 5m, severity page, team dns (over additionalLabels), env prod", rs)
		}
		rs, _ = rulesNamed(got, "ServiceProxyDownOnNode")
		if len(rs) != 2 || rs[0].Labels["severity"] != "warning" || rs[1].Labels["severity"] != "warning" || rs[1].Labels["mode"] != "node" {
			t.Errorf("ServiceProxyDownOnNode.severity=warning: %+v", rs)
		}
		rs, _ = rulesNamed(got, "SvcprobeErrorBudgetBurn")
		if len(rs) != 2 || rs[0].Labels["severity"] != "ticket" || rs[1].Labels["severity"] != "ticket" || rs[0].Labels["burn_rate"] != "14.4" {
			t.Errorf("SvcprobeErrorBudgetBurn.labels.severity=ticket: %+v", rs)
		}
		// Untouched otherwise: for and keep_firing_for are the rules' own (none is added), and
		// additionalLabels are on every alert, on no recording rule.
		for i, g := range got {
			for j, r := range g.Rules {
				o := orig[i].Rules[j]
				if r.Alert == "" {
					if !reflect.DeepEqual(r, o) {
						t.Errorf("recording rule %s changed: %+v", r.Record, r)
					}
					continue
				}
				if r.Labels["team"] == "" || r.Labels["env"] != "prod" {
					t.Errorf("%s lacks additionalLabels: %v", r.Alert, r.Labels)
				}
				if r.Alert != "ClusterDNSDown" && (r.For != o.For || r.KeepFiringFor != o.KeepFiringFor) {
					t.Errorf("%s: for %q keep_firing_for %q, want the rules' %q %q", r.Alert, r.For, r.KeepFiringFor, o.For, o.KeepFiringFor)
				}
				if r.Alert != "ClusterDNSDown" && r.Labels["team"] != "platform" {
					t.Errorf("%s team=%q, want additionalLabels' platform", r.Alert, r.Labels["team"])
				}
			}
		}
	})

	t.Run("runbookBaseURL", func(t *testing.T) {
		got, err := renderedRuleGroups(t, chart, "--set", "prometheusRule.runbookBaseURL=https://wiki.example.com/svcprobe/runbook")
		if err != nil {
			t.Fatal(err)
		}
		var n int
		for i, g := range got {
			for j, r := range g.Rules {
				if r.Alert == "" {
					continue
				}
				anchor, ok := strings.CutPrefix(orig[i].Rules[j].Annotations["runbook_url"], defaultRunbook+"#")
				if want := "https://wiki.example.com/svcprobe/runbook#" + anchor; !ok || r.Annotations["runbook_url"] != want {
					t.Errorf("%s runbook_url %q, want %q", r.Alert, r.Annotations["runbook_url"], want)
				}
				n++
			}
		}
		if n == 0 {
			t.Error("no alerts")
		}
	})

	t.Run("objectives", func(t *testing.T) {
		got, err := renderedRuleGroups(t, chart, "--set", "prometheusRule.slo.objectives.platform=0.9995",
			"--set-json", "prometheusRule.slo.objectives.tenant=0.95",
			"--set-json", `prometheusRule.slo.clusterObjectives=[{"cluster":"prod-eu","slo":"platform","objective":0.9999},{"cluster":"dev","slo":"tenant","objective":0.9}]`)
		if err != nil {
			t.Fatal(err)
		}
		rs, groups := rulesNamed(got, "svcprobe:slo_objective")
		want := []promRule{
			{Record: "svcprobe:slo_objective", Expr: "vector(0.9995)", Labels: map[string]string{"slo": "platform"}},
			{Record: "svcprobe:slo_objective", Expr: "vector(0.95)", Labels: map[string]string{"slo": "tenant"}},
			{Record: "svcprobe:slo_objective", Expr: "vector(0.9999)", Labels: map[string]string{"slo": "platform", "cluster": "prod-eu"}},
			{Record: "svcprobe:slo_objective", Expr: "vector(0.9)", Labels: map[string]string{"slo": "tenant", "cluster": "dev"}},
		}
		if !reflect.DeepEqual(rs, want) || !slices.Equal(slices.Compact(groups), []string{"svcprobe-slo-objective"}) {
			t.Errorf("objectives %+v in groups %v, want %+v in svcprobe-slo-objective", rs, groups, want)
		}
	})

	t.Run("unlabelled objective", func(t *testing.T) {
		// An objective rule without an slo label is no objective of the values: it stays as it is,
		// and cluster objectives, which could not be told from it, are refused.
		old := strings.Replace(strings.Replace(string(fixture), "    labels:\n      slo: platform\n", "", 1),
			"  - expr: vector(0.995)\n    labels:\n      slo: tenant\n    record: svcprobe:slo_objective\n", "", 1)
		oldChart := chartWithRules(t, []byte(old))
		got, err := renderedRuleGroups(t, oldChart, "--set", "prometheusRule.slo.objectives.platform=0.995")
		if err != nil {
			t.Fatal(err)
		}
		if rs, _ := rulesNamed(got, "svcprobe:slo_objective"); len(rs) != 1 || rs[0].Expr != "vector(0.999)" || rs[0].Labels != nil {
			t.Errorf("unlabelled objective with platform=0.995: %+v, want it unchanged", rs)
		}
		_, err = renderedRuleGroups(t, oldChart, "--set-json", `prometheusRule.slo.clusterObjectives=[{"cluster":"a","slo":"platform","objective":0.99}]`)
		if want := `the rules have no svcprobe:slo_objective rule labelled slo="platform"`; err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("cluster objective without labelled objectives: want an error with %q, got %v", want, err)
		}
	})

	t.Run("refused", func(t *testing.T) {
		for _, tc := range []struct {
			args []string
			want string
		}{
			{[]string{"--set", "prometheusRule.rules.ClusterDNSDwn.enabled=false"},
				"prometheusRule.rules.ClusterDNSDwn: the rules have no alert of that name; they have ClusterDNSDown, ServiceProxyDownOnNode, SvcprobeDiscoveryNotSynced, SvcprobeErrorBudgetBurn, SvcprobeServiceDNSBroken"},
			// The recording rules are not in prometheusRule.rules.
			{[]string{"--set", "prometheusRule.rules.svcprobe:slo_objective.enabled=false"}, "prometheusRule.rules.svcprobe:slo_objective: the rules have no alert"},
			{[]string{"--set-json", `prometheusRule.slo.clusterObjectives=[{"cluster":"a","slo":"tenant","objective":0.9},{"cluster":"a","slo":"tenant","objective":0.95}]`},
				`prometheusRule.slo.clusterObjectives[1]: cluster "a", slo "tenant" is given twice`},
			{[]string{"--set-json", "prometheusRule.slo.objectives.platform=1"}, "/prometheusRule/slo/objectives/platform"},
			{[]string{"--set", "prometheusRule.slo.objectives.tenant=1.5"}, "/prometheusRule/slo/objectives/tenant"},
			{[]string{"--set-json", `prometheusRule.slo.clusterObjectives=[{"cluster":"a","slo":"platfrom","objective":0.9}]`}, "/prometheusRule/slo/clusterObjectives/0/slo"},
			{[]string{"--set", "prometheusRule.rules.ClusterDNSDown.for=90s5m"}, "/prometheusRule/rules/ClusterDNSDown/for"},
			{[]string{"--set", "prometheusRule.rules.ClusterDNSDown.sevrity=page"}, "sevrity"},
			// What the schema refuses, the template refuses too (--skip-schema-validation).
			{[]string{"--skip-schema-validation", "--set-json", "prometheusRule.slo.objectives.platform=1"},
				"prometheusRule.slo.objectives.platform: 1 is not a ratio between 0 and 1"},
			{[]string{"--skip-schema-validation", "--set-json", `prometheusRule.slo.clusterObjectives=[{"cluster":"a","slo":"tenant","objective":0}]`},
				"prometheusRule.slo.clusterObjectives[0]: objective 0 is not a ratio between 0 and 1"},
		} {
			out, err := renderedRuleGroups(t, chart, tc.args...)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("%v: want an error with %q, got %v\n%v", tc.args, tc.want, err, out)
			}
		}
	})
}

// TestHelmPrometheusRuleAllOn: helm/ci/all-on-values.yaml's prometheusRule values show up in the
// real rules: its disabled alert is gone, its tuned alert tuned, its labels and runbook base on
// every alert, and its objectives rendered.
func TestHelmPrometheusRuleAllOn(t *testing.T) {
	b, err := os.ReadFile(helmAllOn)
	if err != nil {
		t.Fatal(err)
	}
	var v struct {
		PrometheusRule struct {
			Rules map[string]struct {
				Enabled  *bool             `json:"enabled"`
				Severity string            `json:"severity"`
				For      string            `json:"for"`
				Labels   map[string]string `json:"labels"`
			} `json:"rules"`
			AdditionalLabels            map[string]string `json:"additionalLabels"`
			RunbookBaseURL              string            `json:"runbookBaseURL"`
			ProgrammingLatencyThreshold float64           `json:"programmingLatencyThresholdSeconds"`
			SLO                         struct {
				Objectives        map[string]float64 `json:"objectives"`
				ClusterObjectives []struct {
					Cluster   string  `json:"cluster"`
					SLO       string  `json:"slo"`
					Objective float64 `json:"objective"`
				} `json:"clusterObjectives"`
			} `json:"slo"`
		} `json:"prometheusRule"`
	}
	if err := yaml.Unmarshal(b, &v); err != nil {
		t.Fatal(err)
	}
	pr := v.PrometheusRule
	if len(pr.Rules) == 0 || len(pr.AdditionalLabels) == 0 || pr.RunbookBaseURL == "" || len(pr.SLO.Objectives) != 2 || len(pr.SLO.ClusterObjectives) == 0 ||
		pr.ProgrammingLatencyThreshold == 0 || pr.ProgrammingLatencyThreshold == 30 {
		t.Fatalf("%s does not set prometheusRule.rules, .additionalLabels, .runbookBaseURL, .slo.objectives, .slo.clusterObjectives and .programmingLatencyThresholdSeconds (other than 30): %+v", helmAllOn, pr)
	}
	got, err := renderedRuleGroups(t, helmChart, "-f", helmAllOn)
	if err != nil {
		t.Fatal(err)
	}
	for name, c := range pr.Rules {
		rs, _ := rulesNamed(got, name)
		if c.Enabled != nil && !*c.Enabled {
			if len(rs) != 0 {
				t.Errorf("%s is disabled, %d rules rendered", name, len(rs))
			}
			continue
		}
		if len(rs) == 0 {
			t.Errorf("%s: no rule rendered", name)
		}
		for _, r := range rs {
			if c.Severity != "" && r.Labels["severity"] != c.Severity || c.For != "" && r.For != c.For {
				t.Errorf("%s: severity %q for %q, want %q %q", name, r.Labels["severity"], r.For, c.Severity, c.For)
			}
			for k, val := range c.Labels {
				if r.Labels[k] != val {
					t.Errorf("%s: label %s=%q, want %q", name, k, r.Labels[k], val)
				}
			}
		}
	}
	for _, g := range got {
		for _, r := range g.Rules {
			if r.Alert == "" {
				continue
			}
			if !strings.HasPrefix(r.Annotations["runbook_url"], pr.RunbookBaseURL+"#") {
				t.Errorf("%s runbook_url %q", r.Alert, r.Annotations["runbook_url"])
			}
			for k, val := range pr.AdditionalLabels {
				if _, own := pr.Rules[r.Alert].Labels[k]; !own && r.Labels[k] != val {
					t.Errorf("%s: label %s=%q, want additionalLabels' %q", r.Alert, k, r.Labels[k], val)
				}
			}
		}
	}
	for _, name := range []string{"SvcprobeProgrammingSlow", "SvcprobeProgrammingSlowOnNode"} {
		rs, _ := rulesNamed(got, name)
		if want := fmt.Sprintf("p99_rate5m > %v,", pr.ProgrammingLatencyThreshold); len(rs) != 1 || !strings.Contains(rs[0].Expr, want) {
			t.Errorf("%s: want one rule with %q: %+v", name, want, rs)
		}
	}
	var want []promRule
	for _, slo := range []string{"platform", "tenant"} {
		want = append(want, promRule{Record: "svcprobe:slo_objective", Expr: fmt.Sprintf("vector(%v)", pr.SLO.Objectives[slo]), Labels: map[string]string{"slo": slo}})
	}
	for _, o := range pr.SLO.ClusterObjectives {
		want = append(want, promRule{Record: "svcprobe:slo_objective", Expr: fmt.Sprintf("vector(%v)", o.Objective), Labels: map[string]string{"slo": o.SLO, "cluster": o.Cluster}})
	}
	if rs, groups := rulesNamed(got, "svcprobe:slo_objective"); !reflect.DeepEqual(rs, want) || !slices.Equal(slices.Compact(groups), []string{"svcprobe-slo-objective"}) {
		t.Errorf("objectives %+v in groups %v, want %+v in svcprobe-slo-objective", rs, groups, want)
	}
}

// TestHelmPrometheusRuleProgrammingThreshold: prometheusRule.programmingLatencyThresholdSeconds
// is the number SvcprobeProgrammingSlow and SvcprobeProgrammingSlowOnNode compare the recorded
// p99 with (deploy/rules' 30 by default, TestHelmPrometheusRuleDefaults); nothing else changes.
// Read from the chart's own files/rules.yaml: the fixture has no programming alerts.
func TestHelmPrometheusRuleProgrammingThreshold(t *testing.T) {
	orig := readRuleGroups(t, filepath.Join(helmChart, "files", "rules.yaml"))
	alerts := []string{"SvcprobeProgrammingSlow", "SvcprobeProgrammingSlowOnNode"}
	for _, name := range alerts {
		if rs, _ := rulesNamed(orig, name); len(rs) != 1 || !strings.Contains(rs[0].Expr, "p99_rate5m > 30,") {
			t.Fatalf("files/rules.yaml: %s is not one rule comparing the recorded p99 with 30: %+v", name, rs)
		}
	}
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--set", "prometheusRule.programmingLatencyThresholdSeconds=20"}, "20"},
		{[]string{"--set", "prometheusRule.programmingLatencyThresholdSeconds=12.5"}, "12.5"}, // a string from --set
		{[]string{"--set-json", "prometheusRule.programmingLatencyThresholdSeconds=45.5"}, "45.5"},
		{[]string{"--set-json", "prometheusRule.programmingLatencyThresholdSeconds=null"}, "30"}, // unset: the rules' own
	} {
		got, err := renderedRuleGroups(t, helmChart, tc.args...)
		if err != nil {
			t.Fatalf("%v: %v", tc.args, err)
		}
		if len(got) != len(orig) {
			t.Fatalf("%v: %d groups, want %d", tc.args, len(got), len(orig))
		}
		n := 0
		for i, g := range got {
			for j, r := range g.Rules {
				o := orig[i].Rules[j]
				if slices.Contains(alerts, r.Alert) {
					n++
					o.Expr = strings.Replace(o.Expr, "p99_rate5m > 30,", "p99_rate5m > "+tc.want+",", 1)
				}
				if !reflect.DeepEqual(r, o) {
					t.Errorf("%v: %s%s is\n%+v\nwant\n%+v", tc.args, r.Alert, r.Record, r, o)
				}
			}
		}
		if n != len(alerts) {
			t.Errorf("%v: %d programming alerts rendered, want %d", tc.args, n, len(alerts))
		}
	}
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--set", "prometheusRule.programmingLatencyThresholdSeconds=0"}, "/prometheusRule/programmingLatencyThresholdSeconds"},
		{[]string{"--set", "prometheusRule.programmingLatencyThresholdSeconds=30s"}, "/prometheusRule/programmingLatencyThresholdSeconds"},
		{[]string{"--set-json", "prometheusRule.programmingLatencyThresholdSeconds=-5"}, "/prometheusRule/programmingLatencyThresholdSeconds"},
		// What the schema refuses, the template refuses too (--skip-schema-validation).
		{[]string{"--skip-schema-validation", "--set-json", "prometheusRule.programmingLatencyThresholdSeconds=-5"},
			"prometheusRule.programmingLatencyThresholdSeconds: -5 is not a number of seconds above 0"},
		{[]string{"--skip-schema-validation", "--set", "prometheusRule.programmingLatencyThresholdSeconds=30s"},
			"prometheusRule.programmingLatencyThresholdSeconds: 30s is not a number of seconds above 0"},
	} {
		out, err := renderedRuleGroups(t, helmChart, tc.args...)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%v: want an error with %q, got %v\n%v", tc.args, tc.want, err, out)
		}
	}
}

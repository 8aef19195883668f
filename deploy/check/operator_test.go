package check

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	monitoringv1 "github.com/prometheus-operator/prometheus-operator/pkg/apis/monitoring/v1"
	"github.com/svcprobe/svcprobe/deploy/check/cmd/genrule/promrule"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"sigs.k8s.io/yaml"
)

// The prometheus-operator overlay: kustomize is not available as a binary here, so the test reads
// kustomization.yaml the way kustomize would for this simple overlay (resources only), decodes
// every object strictly into prometheus-operator's Go types, and checks that the ServiceMonitor
// really scrapes the metrics Service and that prometheusrule.yaml is what genrule writes from
// deploy/rules/*.yaml.

const (
	operatorOverlay  = "../prometheus-operator"
	operatorRulesDir = "../rules"
	operatorRegen    = "cd deploy/check && GOWORK=off go run ./cmd/genrule"
)

type operatorKustomization struct {
	APIVersion string   `json:"apiVersion"`
	Kind       string   `json:"kind"`
	Namespace  string   `json:"namespace,omitempty"`
	Resources  []string `json:"resources"`
}

// operatorObject is one manifest of a kustomization, with where it came from.
type operatorObject struct {
	file string
	data []byte
	meta metav1.TypeMeta
}

// operatorResources reads dir/kustomization.yaml strictly and returns every object of every
// listed resource, following directories (bases) recursively.
func operatorResources(dir string) ([]operatorObject, error) {
	b, err := os.ReadFile(filepath.Join(dir, "kustomization.yaml"))
	if err != nil {
		return nil, err
	}
	var k operatorKustomization
	if err := yaml.UnmarshalStrict(b, &k); err != nil {
		return nil, fmt.Errorf("%s/kustomization.yaml: %w", dir, err)
	}
	if k.APIVersion != "kustomize.config.k8s.io/v1beta1" || k.Kind != "Kustomization" {
		return nil, fmt.Errorf("%s/kustomization.yaml: %s %s is not a Kustomization", dir, k.APIVersion, k.Kind)
	}
	// Every manifest next to the kustomization is listed (a forgotten file is never applied).
	local, _ := filepath.Glob(filepath.Join(dir, "*.yaml"))
	for _, f := range local {
		if base := filepath.Base(f); base != "kustomization.yaml" && !slices.Contains(k.Resources, base) {
			return nil, fmt.Errorf("%s is not listed in %s/kustomization.yaml", f, dir)
		}
	}
	var objs []operatorObject
	for _, r := range k.Resources {
		p := filepath.Join(dir, r)
		st, err := os.Stat(p)
		if err != nil {
			return nil, fmt.Errorf("%s/kustomization.yaml lists %s: %w", dir, r, err)
		}
		if st.IsDir() {
			sub, err := operatorResources(p)
			if err != nil {
				return nil, err
			}
			objs = append(objs, sub...)
			continue
		}
		data, err := os.ReadFile(p)
		if err != nil {
			return nil, err
		}
		for _, doc := range bytes.Split(data, []byte("\n---\n")) {
			if len(bytes.TrimSpace(doc)) == 0 {
				continue
			}
			var tm metav1.TypeMeta
			if err := yaml.Unmarshal(doc, &tm); err != nil {
				return nil, fmt.Errorf("%s: %w", p, err)
			}
			objs = append(objs, operatorObject{file: p, data: doc, meta: tm})
		}
	}
	return objs, nil
}

// operatorDecode decodes one object strictly (unknown and duplicate fields are errors) into its
// prometheus-operator type. Objects of other API groups (the base's) come back as nil.
func operatorDecode(o operatorObject) (any, error) {
	var into any
	switch {
	case o.meta.APIVersion == "monitoring.coreos.com/v1" && o.meta.Kind == monitoringv1.ServiceMonitorsKind:
		into = &monitoringv1.ServiceMonitor{}
	case o.meta.APIVersion == "monitoring.coreos.com/v1" && o.meta.Kind == monitoringv1.PrometheusRuleKind:
		into = &monitoringv1.PrometheusRule{}
	case o.meta.APIVersion == "monitoring.coreos.com/v1" && o.meta.Kind == monitoringv1.PodMonitorsKind:
		into = &monitoringv1.PodMonitor{}
	case strings.HasPrefix(o.meta.APIVersion, "monitoring.coreos.com/"):
		return nil, fmt.Errorf("%s: %s %s is not checked by this test", o.file, o.meta.APIVersion, o.meta.Kind)
	default:
		return nil, nil
	}
	if err := yaml.UnmarshalStrict(o.data, into); err != nil {
		return nil, fmt.Errorf("%s: %s: %w", o.file, o.meta.Kind, err)
	}
	return into, nil
}

// operatorService is what the ServiceMonitor check needs of a Service (the base's manifests are
// decoded strictly into client-go's types by deploy/deploy_test.go).
type operatorService struct {
	metav1.TypeMeta `json:",inline"`
	Metadata        metav1.ObjectMeta `json:"metadata"`
	Spec            struct {
		Ports []struct {
			Name string `json:"name"`
		} `json:"ports"`
	} `json:"spec"`
}

// serviceMonitorProblems: the ServiceMonitor selects the metrics Service (same namespace, matching
// labels), every endpoint's port is one of its ports, and labels are honoured.
func serviceMonitorProblems(sm *monitoringv1.ServiceMonitor, services []operatorService, metricsService string) []string {
	var problems []string
	sel, err := metav1.LabelSelectorAsSelector(&sm.Spec.Selector)
	if err != nil {
		return []string{fmt.Sprintf("selector: %v", err)}
	}
	if sel.Empty() {
		problems = append(problems, "the selector is empty: it would scrape every Service of the namespace")
	}
	var target *operatorService
	for i, s := range services {
		if s.Metadata.Name == metricsService {
			target = &services[i]
		}
	}
	if target == nil {
		return append(problems, fmt.Sprintf("no Service %s in the overlay", metricsService))
	}
	inNamespace := sm.Namespace == target.Metadata.Namespace
	if ns := sm.Spec.NamespaceSelector; ns.Any || slices.Contains(ns.MatchNames, target.Metadata.Namespace) {
		inNamespace = true
	} else if len(ns.MatchNames) > 0 {
		inNamespace = false
	}
	if !inNamespace {
		problems = append(problems, fmt.Sprintf("the ServiceMonitor (namespace %q, namespaceSelector %+v) does not look in namespace %q", sm.Namespace, sm.Spec.NamespaceSelector, target.Metadata.Namespace))
	}
	if !sel.Matches(labels.Set(target.Metadata.Labels)) {
		problems = append(problems, fmt.Sprintf("selector %s does not match the labels %v of Service %s", sel, target.Metadata.Labels, metricsService))
	}
	if len(sm.Spec.Endpoints) == 0 {
		problems = append(problems, "no endpoints")
	}
	for _, ep := range sm.Spec.Endpoints {
		if ep.Port == "" {
			problems = append(problems, "an endpoint without a port name")
			continue
		}
		has := false
		for _, p := range target.Spec.Ports {
			has = has || p.Name == ep.Port
		}
		if !has {
			problems = append(problems, fmt.Sprintf("port %q is not a port of Service %s", ep.Port, metricsService))
		}
		// Other Services the selector matches must not offer the port: they would be scraped too.
		for _, s := range services {
			if s.Metadata.Name == metricsService || !sel.Matches(labels.Set(s.Metadata.Labels)) {
				continue
			}
			for _, p := range s.Spec.Ports {
				if p.Name == ep.Port {
					problems = append(problems, fmt.Sprintf("Service %s matches the selector and has port %q too: scraped twice", s.Metadata.Name, p.Name))
				}
			}
		}
		if !ep.HonorLabels {
			problems = append(problems, fmt.Sprintf("endpoint %q: honorLabels must be true, or the exporter's namespace/service labels become exported_namespace/exported_service", ep.Port))
		}
		if ep.Path != "" && ep.Path != "/metrics" {
			problems = append(problems, fmt.Sprintf("endpoint %q: path %q, the exporter serves /metrics", ep.Port, ep.Path))
		}
	}
	return problems
}

func operatorObjects(t *testing.T) ([]operatorService, []*monitoringv1.ServiceMonitor, []*monitoringv1.PrometheusRule) {
	t.Helper()
	objs, err := operatorResources(operatorOverlay)
	if err != nil {
		t.Fatal(err)
	}
	var (
		services []operatorService
		sms      []*monitoringv1.ServiceMonitor
		prs      []*monitoringv1.PrometheusRule
	)
	for _, o := range objs {
		v, err := operatorDecode(o)
		if err != nil {
			t.Fatal(err)
		}
		switch x := v.(type) {
		case *monitoringv1.ServiceMonitor:
			sms = append(sms, x)
		case *monitoringv1.PrometheusRule:
			prs = append(prs, x)
		}
		if o.meta.APIVersion == "v1" && o.meta.Kind == "Service" {
			var s operatorService
			if err := yaml.Unmarshal(o.data, &s); err != nil {
				t.Fatalf("%s: %v", o.file, err)
			}
			services = append(services, s)
		}
	}
	return services, sms, prs
}

func TestOperatorOverlay(t *testing.T) {
	services, sms, prs := operatorObjects(t)
	if len(services) < 2 || len(sms) != 1 || len(prs) != 1 {
		t.Fatalf("the overlay has %d Services (want the base's 2), %d ServiceMonitors, %d PrometheusRules (want 1 each)", len(services), len(sms), len(prs))
	}
	for _, p := range serviceMonitorProblems(sms[0], services, "svcprobe") {
		t.Error("ServiceMonitor:", p)
	}
	pr := prs[0]
	if len(pr.Spec.Groups) == 0 {
		t.Fatal("the PrometheusRule has no groups")
	}
	alerts, records := 0, 0
	for _, g := range pr.Spec.Groups {
		for _, r := range g.Rules {
			if r.Alert != "" {
				alerts++
			}
			if r.Record != "" {
				records++
			}
		}
	}
	t.Logf("PrometheusRule %s: %d groups, %d alerts, %d recording rules", pr.Name, len(pr.Spec.Groups), alerts, records)
}

// TestOperatorPrometheusRuleUpToDate: the committed PrometheusRule is exactly what genrule writes
// from deploy/rules/*.yaml now.
func TestOperatorPrometheusRuleUpToDate(t *testing.T) {
	files, err := filepath.Glob(filepath.Join(operatorRulesDir, "*.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if len(files) == 0 {
		t.Fatalf("no rule files in %s", operatorRulesDir)
	}
	want, err := promrule.Generate(files, promrule.SvcprobeObject)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(operatorOverlay, "prometheusrule.yaml")
	got, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v; generate it: %s", err, operatorRegen)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("%s is not what deploy/rules/*.yaml generate (first difference at line %d); regenerate: %s", path, firstDiffLine(got, want), operatorRegen)
	}
}

func firstDiffLine(a, b []byte) int {
	la, lb := strings.Split(string(a), "\n"), strings.Split(string(b), "\n")
	for i := range min(len(la), len(lb)) {
		if la[i] != lb[i] {
			return i + 1
		}
	}
	return min(len(la), len(lb)) + 1
}

// TestGenruleConvertsEveryField runs the generator on a rule file using every field a rule can
// carry, and checks the PrometheusRule (decoded strictly) keeps them; and that it refuses what
// Prometheus would refuse.
func TestGenruleConvertsEveryField(t *testing.T) {
	dir := t.TempDir()
	write := func(name, s string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(s), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	a := write("a.yaml", `groups:
  - name: g1
    interval: 30s
    query_offset: 1m
    limit: 10
    labels: {team: net}
    rules:
      - record: job:up:sum
        expr: sum by (job) (up)
      - alert: Down
        expr: |
          job:up:sum == 0
        for: 5m
        keep_firing_for: 10m
        labels: {severity: page}
        annotations: {summary: 'down {{ $labels.job }}'}
`)
	b := write("b.yaml", "groups:\n  - name: g2\n    rules:\n      - record: x:y\n        expr: vector(1)\n")
	out, err := promrule.Generate([]string{b, a}, promrule.Object{Name: "n", Namespace: "ns", Labels: map[string]string{"k": "v"}})
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.HasPrefix(out, []byte(promrule.Header)) {
		t.Fatal("no generated-file header")
	}
	var pr monitoringv1.PrometheusRule
	if err := yaml.UnmarshalStrict(out, &pr); err != nil {
		t.Fatalf("generated object does not decode strictly: %v\n%s", err, out)
	}
	if pr.Kind != "PrometheusRule" || pr.APIVersion != "monitoring.coreos.com/v1" || pr.Name != "n" || pr.Namespace != "ns" || pr.Labels["k"] != "v" {
		t.Fatalf("object identity: %+v %+v", pr.TypeMeta, pr.ObjectMeta)
	}
	if len(pr.Spec.Groups) != 2 || pr.Spec.Groups[0].Name != "g1" || pr.Spec.Groups[1].Name != "g2" {
		t.Fatalf("groups (want g1 of a.yaml then g2 of b.yaml): %+v", pr.Spec.Groups)
	}
	g := pr.Spec.Groups[0]
	if g.Interval == nil || *g.Interval != "30s" || g.QueryOffset == nil || *g.QueryOffset != "1m" || g.Limit == nil || *g.Limit != 10 || g.Labels["team"] != "net" {
		t.Fatalf("group fields lost: %+v", g)
	}
	r := g.Rules[1]
	if r.Alert != "Down" || r.Expr.String() != "job:up:sum == 0\n" || r.For == nil || *r.For != "5m" ||
		r.KeepFiringFor == nil || *r.KeepFiringFor != "10m" || r.Labels["severity"] != "page" || r.Annotations["summary"] != "down {{ $labels.job }}" {
		t.Fatalf("rule fields lost: %+v", r)
	}
	if r0 := g.Rules[0]; r0.Record != "job:up:sum" || r0.Expr.String() != "sum by (job) (up)" || r0.For != nil {
		t.Fatalf("recording rule: %+v", r0)
	}

	for name, content := range map[string]string{
		"bad expression": "groups:\n  - name: g3\n    rules:\n      - record: a:b\n        expr: sum(\n",
		"unknown field":  "groups:\n  - name: g3\n    rules:\n      - record: a:b\n        expr: up\n        fro: 5m\n",
		"duplicate name": "groups:\n  - name: g1\n    rules:\n      - record: a:b\n        expr: up\n",
	} {
		bad := write("c.yaml", content)
		if _, err := promrule.Generate([]string{a, bad}, promrule.SvcprobeObject); err == nil {
			t.Errorf("%s: accepted", name)
		} else {
			t.Logf("%s: %v", name, err)
		}
	}
	if _, err := promrule.Generate(nil, promrule.SvcprobeObject); err == nil {
		t.Error("no files: accepted")
	}
}

// TestOperatorChecksCatchProblems proves the overlay checks fail on the mistakes they exist for.
func TestOperatorChecksCatchProblems(t *testing.T) {
	services, sms, _ := operatorObjects(t)
	if len(sms) != 1 {
		t.Fatalf("%d ServiceMonitors", len(sms))
	}
	if p := serviceMonitorProblems(sms[0], services, "svcprobe"); len(p) > 0 {
		t.Fatalf("the shipped ServiceMonitor has problems: %v", p)
	}
	cases := map[string]struct {
		mutate func(sm *monitoringv1.ServiceMonitor)
		want   string
	}{
		"selector typo": {func(sm *monitoringv1.ServiceMonitor) {
			sm.Spec.Selector.MatchLabels = map[string]string{"app.kubernetes.io/name": "svcprobe-typo"}
		}, "does not match"},
		"empty selector":  {func(sm *monitoringv1.ServiceMonitor) { sm.Spec.Selector = metav1.LabelSelector{} }, "empty"},
		"wrong port name": {func(sm *monitoringv1.ServiceMonitor) { sm.Spec.Endpoints[0].Port = "http-metrics" }, "not a port"},
		"hairpin port":    {func(sm *monitoringv1.ServiceMonitor) { sm.Spec.Endpoints[0].Port = "hairpin" }, "scraped twice"},
		"labels not honoured": {func(sm *monitoringv1.ServiceMonitor) { sm.Spec.Endpoints[0].HonorLabels = false },
			"honorLabels"},
		"other namespace": {func(sm *monitoringv1.ServiceMonitor) {
			sm.Spec.NamespaceSelector = monitoringv1.NamespaceSelector{MatchNames: []string{"monitoring"}}
		}, "does not look in namespace"},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			sm := sms[0].DeepCopy()
			tc.mutate(sm)
			for _, p := range serviceMonitorProblems(sm, services, "svcprobe") {
				if strings.Contains(p, tc.want) {
					t.Logf("caught: %s", p)
					return
				}
			}
			t.Fatalf("want a problem containing %q", tc.want)
		})
	}

	// Strict decoding: a misspelt field is an error, not silently dropped.
	smFile, err := os.ReadFile(filepath.Join(operatorOverlay, "servicemonitor.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	typo := bytes.Replace(smFile, []byte("honorLabels:"), []byte("honourLabels:"), 1)
	if bytes.Equal(typo, smFile) {
		t.Fatal("servicemonitor.yaml has no honorLabels to misspell")
	}
	if _, err := operatorDecode(operatorObject{file: "typo", data: typo, meta: metav1.TypeMeta{APIVersion: "monitoring.coreos.com/v1", Kind: "ServiceMonitor"}}); err == nil {
		t.Error("a misspelt ServiceMonitor field decoded")
	}

	// Kustomization: a listed resource that does not exist, and a manifest that is not listed.
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "kustomization.yaml"), []byte("apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\nresources:\n  - servicemonitor.yaml\n"), 0o644)
	if _, err := operatorResources(dir); err == nil || !strings.Contains(err.Error(), "lists servicemonitor.yaml") {
		t.Errorf("missing resource: %v", err)
	}
	os.WriteFile(filepath.Join(dir, "servicemonitor.yaml"), smFile, 0o644)
	os.WriteFile(filepath.Join(dir, "forgotten.yaml"), smFile, 0o644)
	if _, err := operatorResources(dir); err == nil || !strings.Contains(err.Error(), "not listed") {
		t.Errorf("unlisted manifest: %v", err)
	}
}

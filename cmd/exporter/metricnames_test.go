package main

import (
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	versioncollector "github.com/prometheus/client_golang/prometheus/collectors/version"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"github.com/svcprobe/svcprobe/metrics"
	"k8s.io/client-go/kubernetes/fake"
)

// metricNamesFile lists every svcprobe_* metric family the exporter exposes, one per line, sorted.
// The dashboards' and rules' checks (deploy/check) read it, so it is the exporter's own word on
// its metric names. It holds only svcprobe_* families: the Go and process collectors' families
// (go_*, process_*) come from client_golang and change with it, and dashboards/rules must not
// depend on them; Prometheus' own `up` is accepted by those checks separately.
const metricNamesFile = "../../docs/metric-names.txt"

// TestMetricNamesFile runs the real wiring on the fake clientset with a scenario that makes every
// family appear (per-endpoint series on, a malformed annotation, an expected Service that is
// missing, a probe round with cluster DNS), scrapes /metrics, and compares the svcprobe_* family
// names with docs/metric-names.txt. UPDATE_METRIC_NAMES=1 rewrites the file instead.
func TestMetricNamesFile(t *testing.T) {
	scraped := scrapeAllFamilies(t)

	// Every family the collectors describe must show up in the scenario; otherwise the file
	// would silently miss a name the exporter can expose.
	var missing []string
	for _, name := range describedFamilies(t) {
		if !slices.Contains(scraped, name) {
			missing = append(missing, name)
		}
	}
	if len(missing) > 0 {
		t.Fatalf("families described but not exposed by the test scenario (extend the scenario in %s so they appear): %v", "metricnames_test.go", missing)
	}

	want := strings.Join(scraped, "\n") + "\n"
	if os.Getenv("UPDATE_METRIC_NAMES") == "1" {
		if err := os.WriteFile(metricNamesFile, []byte(want), 0o644); err != nil {
			t.Fatal(err)
		}
		t.Logf("wrote %d names to %s", len(scraped), metricNamesFile)
		return
	}
	b, err := os.ReadFile(metricNamesFile)
	if err != nil {
		t.Fatalf("%v (create it with: UPDATE_METRIC_NAMES=1 go test -run TestMetricNamesFile ./cmd/exporter/)", err)
	}
	if diff := nameDiff(parseNameList(string(b)), scraped); diff != "" {
		t.Fatalf("docs/metric-names.txt does not match what /metrics exposes (- only in the file, + only in /metrics):\n%s\nregenerate with: UPDATE_METRIC_NAMES=1 go test -run TestMetricNamesFile ./cmd/exporter/", diff)
	}
}

// The diff helper itself must catch both directions and order/duplication problems.
func TestMetricNameDiff(t *testing.T) {
	if d := nameDiff([]string{"a", "b"}, []string{"a", "b"}); d != "" {
		t.Fatalf("equal lists differ: %q", d)
	}
	d := nameDiff([]string{"a", "c"}, []string{"a", "b"})
	if !strings.Contains(d, "- c") || !strings.Contains(d, "+ b") {
		t.Fatalf("diff misses a side: %q", d)
	}
	if d := nameDiff([]string{"b", "a"}, []string{"a", "b"}); !strings.Contains(d, "sorted") {
		t.Fatalf("unsorted file accepted: %q", d)
	}
	if d := nameDiff([]string{"a", "a", "b"}, []string{"a", "b"}); !strings.Contains(d, "duplicate") {
		t.Fatalf("duplicate accepted: %q", d)
	}
}

func parseNameList(s string) []string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if l = strings.TrimSpace(l); l != "" {
			out = append(out, l)
		}
	}
	return out
}

// nameDiff returns "" when file equals got (both sorted, unique), else a readable diff.
func nameDiff(file, got []string) string {
	var b strings.Builder
	if !slices.IsSorted(file) {
		b.WriteString("  (the file is not sorted)\n")
	}
	for i := 1; i < len(file); i++ {
		if file[i] == file[i-1] {
			fmt.Fprintf(&b, "  (duplicate %s)\n", file[i])
		}
	}
	for _, n := range file {
		if !slices.Contains(got, n) {
			fmt.Fprintf(&b, "- %s\n", n)
		}
	}
	for _, n := range got {
		if !slices.Contains(file, n) {
			fmt.Fprintf(&b, "+ %s\n", n)
		}
	}
	return b.String()
}

var descName = regexp.MustCompile(`fqName: "([^"]+)"`)

// describedFamilies: the svcprobe_* families the exporter's collectors describe.
func describedFamilies(t *testing.T) []string {
	t.Helper()
	c := metrics.NewCollector(metrics.CollectorConfig{}, metrics.NewStore(), nil, nil, nil, slog.New(slog.DiscardHandler))
	ch := make(chan *prometheus.Desc, 64)
	go func() {
		c.Describe(ch)
		versioncollector.NewCollector("svcprobe").Describe(ch)
		close(ch)
	}()
	var out []string
	for d := range ch {
		m := descName.FindStringSubmatch(d.String())
		if m == nil {
			t.Fatalf("cannot read the name of %s", d)
		}
		if strings.HasPrefix(m[1], "svcprobe_") && !slices.Contains(out, m[1]) {
			out = append(out, m[1])
		}
	}
	slices.Sort(out)
	if len(out) < 10 {
		t.Fatalf("only %d described families: %v", len(out), out)
	}
	return out
}

// scrapeAllFamilies runs the exporter (run(), the same wiring as main) until the scenario has
// produced every family, and returns the sorted svcprobe_* family names of one /metrics scrape.
func scrapeAllFamilies(t *testing.T) []string {
	t.Helper()
	backend := acceptAll(t)
	svc, sl := loopbackService(backend.Addr().String())
	// A malformed annotation: svcprobe_service_annotation_errors and _annotation_errors_total.
	svc.Annotations = map[string]string{"svcprobe.io/http-status": "not-a-status"}
	client := fake.NewClientset(svc, sl)
	cfg := testConfig(t) // expects default/must-exist, which does not exist: the missing verdict
	cfg.PerEndpoint = true
	if err := cfg.load(); err != nil {
		t.Fatal(err)
	}
	base := startRun(t, cfg, client)

	// Families that appear only after asynchronous work: the cluster DNS check of the first
	// round, the first probe's histogram observation, the pod stage's per-endpoint result.
	async := []string{"svcprobe_cluster_dns_up", "svcprobe_probe_duration_seconds", "svcprobe_endpoint_up",
		"svcprobe_service_annotation_errors", "svcprobe_discovery_last_event_timestamp_seconds"}
	var names []string
	var err error
	deadline := time.Now().Add(15 * time.Second)
	for {
		names, err = scrapeFamilyNames(base + "/metrics")
		ready := err == nil // the listener may not be up yet
		if err != nil && !strings.Contains(err.Error(), "connection refused") {
			t.Fatal(err)
		}
		for _, n := range async {
			ready = ready && slices.Contains(names, n)
		}
		if ready {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the scenario did not produce every family within 15s (want %v); have %v, last error %v", async, names, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	// The node agents' own families (metrics.TestNodeModeSeriesBounded shows them written).
	names = append(names, metrics.NodeModeFamilies()...)
	slices.Sort(names)
	return slices.Compact(names)
}

// scrapeFamilyNames scrapes url and parses it with expfmt's text parser.
func scrapeFamilyNames(url string) ([]string, error) {
	resp, err := http.Get(url)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("%s: %s", url, resp.Status)
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(resp.Body)
	if err != nil {
		return nil, fmt.Errorf("parse /metrics: %w", err)
	}
	var names []string
	for name, f := range fams {
		if len(f.GetMetric()) == 0 {
			continue
		}
		if strings.HasPrefix(name, "svcprobe_") {
			names = append(names, name)
		}
	}
	slices.Sort(names)
	return names, nil
}

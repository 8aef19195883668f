package metrics

import (
	"bytes"
	"compress/gzip"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"github.com/svcprobe/svcprobe/probe"
	"k8s.io/apimachinery/pkg/types"
)

// busyStore fills a store with every kind of per-Service series: failures, a budget cut,
// annotation errors, per-endpoint series, label values that need escaping, a missing Service.
func busyStore(t *testing.T) (*Store, *Collector, *prometheus.Registry) {
	t.Helper()
	return busyStoreOn(t, "")
}

// busyStoreOn is busyStore for a node agent on node (central mode when "").
func busyStoreOn(t *testing.T, node string) (*Store, *Collector, *prometheus.Registry) {
	t.Helper()
	cfg := CollectorConfig{PerEndpoint: true, PerEndpointLimit: 5, SeriesPerService: 22, Expected: []Expected{{"default", "gone"}}, Node: node}
	store, c, _, _ := setup(t, cfg)
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(c)
	for i := range 30 {
		tg := target(fmt.Sprintf("ns-%02d", i%4), fmt.Sprintf("svc-%02d", i))
		if i%7 == 0 {
			tg.AnnotationErrors = []error{fmt.Errorf("bad")}
		}
		store.Record(tg, healthy())
		if i%3 == 0 {
			pod := podResult("198.18.0.6:9376")
			store.Record(tg, []probe.Result{pod, fail(probe.StageDNS, probe.ReasonNXDomain)})
			if i%2 == 0 { // a failure confined to IPv6, held: the verdict's family label, on some series only
				pod.Family = probe.FamilyIPv6
				for range 3 {
					store.Record(tg, []probe.Result{pod})
				}
			}
		}
		if i == 5 { // more reasons than the budget holds
			for _, r := range probe.Reasons {
				if r != probe.ReasonSuccess && r != probe.ReasonNotProbed {
					store.Record(tg, []probe.Result{fail(probe.StageProxy, r), fail(probe.StageDNS, r)})
				}
			}
		}
	}
	odd := target("default", `we"ird\name`)
	odd.UID = types.UID("odd")
	store.Record(odd, healthy())
	store.RecordClusterDNS(*clusterDNS(true, false))
	return store, c, reg
}

// The direct writer is what /metrics serves for text and OpenMetrics scrapes; it must be exactly
// what expfmt's encoders make of the same families (the dto form, which the other tests check).
func TestDirectWriterMatchesExpfmt(t *testing.T) {
	for _, node := range []string{"", "worker-1"} {
		t.Run("node="+node, func(t *testing.T) { testDirectWriterMatchesExpfmt(t, node) })
	}
}

func testDirectWriterMatchesExpfmt(t *testing.T, node string) {
	_, c, _ := busyStoreOn(t, node)
	svc := c.ServiceFamilies()
	mfs, err := svc.Gather()
	if err != nil {
		t.Fatal(err)
	}
	// Central mode writes every family; node mode verdict, stage_up, failure ratio, the verdict
	// counts and the two gauges.
	if want := map[bool]int{true: 6, false: 9}[node != ""]; len(mfs) < want {
		t.Fatalf("only %d per-Service families; the fixture should produce %d", len(mfs), want)
	}
	// Some verdicts carry the optional family label, the rest leave it out (central mode; a node
	// agent exports only its first failing Services).
	withFamily, without := 0, 0
	for _, mf := range mfs {
		if mf.GetName() != "svcprobe_service_verdict" {
			continue
		}
		for _, m := range mf.GetMetric() {
			if slices.ContainsFunc(m.GetLabel(), func(lp *dto.LabelPair) bool { return lp.GetName() == "family" }) {
				withFamily++
			} else {
				without++
			}
		}
	}
	if node == "" && (withFamily == 0 || without == 0) {
		t.Fatalf("verdicts with family %d, without %d: the fixture should have both", withFamily, without)
	}
	// Node mode: every per-Service series has node="worker-1" and its labels stay sorted (as
	// client_golang sorts them); central mode has no node label at all.
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			var names []string
			nodeValue, hasNode := "", false
			for _, lp := range m.GetLabel() {
				names = append(names, lp.GetName())
				if lp.GetName() == "node" {
					nodeValue, hasNode = lp.GetValue(), true
				}
			}
			if !slices.IsSorted(names) {
				t.Fatalf("%s: labels %v not sorted", mf.GetName(), names)
			}
			perService := mf.GetName() != "svcprobe_series_budget_exceeded_services" && mf.GetName() != "svcprobe_node_services_omitted"
			if want := node != "" && perService; hasNode != want || nodeValue != map[bool]string{true: node}[want] {
				t.Fatalf("%s %v: node label %v %q, want %v %q", mf.GetName(), names, hasNode, nodeValue, want, node)
			}
		}
	}
	for _, f := range []expfmt.Format{expfmt.NewFormat(expfmt.TypeTextPlain), expfmt.NewFormat(expfmt.TypeOpenMetrics)} {
		var want bytes.Buffer
		enc := expfmt.NewEncoder(&want, f)
		for _, mf := range mfs {
			if err := enc.Encode(mf); err != nil {
				t.Fatal(err)
			}
		}
		got := svc.WriteText(nil, f.FormatType() == expfmt.TypeOpenMetrics, nil)
		if !bytes.Equal(got, want.Bytes()) {
			gl, wl := strings.Split(string(got), "\n"), strings.Split(want.String(), "\n")
			for i := range min(len(gl), len(wl)) {
				if gl[i] != wl[i] {
					t.Fatalf("%s: line %d differs:\n got  %q\n want %q", f, i+1, gl[i], wl[i])
				}
			}
			t.Fatalf("%s: %d lines, expfmt %d", f, len(gl), len(wl))
		}
	}
	// WriteTo streams the same bytes, in pieces.
	var streamed bytes.Buffer
	if err := svc.WriteTo(&streamed, true, nil); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(streamed.Bytes(), svc.WriteText(nil, true, nil)) {
		t.Fatal("WriteTo and WriteText differ")
	}
	// The filter keeps only the named families.
	got := string(svc.WriteText(nil, false, map[string]bool{"svcprobe_service_verdict": true}))
	if !strings.Contains(got, "svcprobe_service_verdict{") || strings.Contains(got, "svcprobe_stage_up") {
		t.Fatalf("filtered output:\n%s", got)
	}
}

func TestFloatFormats(t *testing.T) {
	for _, v := range []float64{0, 1, -1, 2, -7, 0.5, 1e-9, 12345678901234, 3.25e21, math.NaN(), math.Inf(1), math.Inf(-1)} {
		var a, b bytes.Buffer
		mf := &dto.MetricFamily{Name: strPtr("x"), Help: strPtr("h"), Type: dto.MetricType_GAUGE.Enum(),
			Metric: []*dto.Metric{{Gauge: &dto.Gauge{Value: &v}}}}
		if _, err := expfmt.MetricFamilyToText(&a, mf); err != nil {
			t.Fatal(err)
		}
		if _, err := expfmt.MetricFamilyToOpenMetrics(&b, mf); err != nil {
			t.Fatal(err)
		}
		if want, got := lastField(a.String()), string(appendFloat(nil, v)); got != want {
			t.Errorf("text %v: %q, expfmt %q", v, got, want)
		}
		if want, got := lastField(b.String()), string(appendOMFloat(nil, v)); got != want {
			t.Errorf("openmetrics %v: %q, expfmt %q", v, got, want)
		}
	}
}

func strPtr(s string) *string { return &s }

func lastField(s string) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	f := strings.Fields(lines[len(lines)-1])
	return f[len(f)-1]
}

func scrapeWith(t *testing.T, url string, hdr map[string]string) (*http.Response, []byte) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, url, nil)
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	// No transparent decompression: the test reads Content-Encoding itself.
	rsp, err := (&http.Transport{DisableCompression: true}).RoundTrip(req)
	if err != nil {
		t.Fatal(err)
	}
	defer rsp.Body.Close()
	b, err := io.ReadAll(rsp.Body)
	if err != nil {
		t.Fatal(err)
	}
	if rsp.StatusCode != http.StatusOK {
		t.Fatalf("status %s: %s", rsp.Status, b)
	}
	return rsp, b
}

// What a scraper sees through Handler in each format: every family once, the registry's and the
// per-Service ones together, OpenMetrics ending in # EOF, gzip when asked.
func TestHandlerFormats(t *testing.T) {
	_, c, reg := busyStore(t)
	srv := httptest.NewServer(Handler(reg, c.ServiceFamilies(), slog.New(slog.DiscardHandler)))
	defer srv.Close()
	wantFams := []string{"svcprobe_service_verdict", "svcprobe_stage_runs_total", "svcprobe_stage_failures_total", "svcprobe_endpoint_up", "svcprobe_cluster_dns_up",
		"svcprobe_series_budget_exceeded_services", "svcprobe_probe_duration_seconds", "svcprobe_discovery_synced"}

	// Text 0.0.4, the format promtool and curl get.
	rsp, body := scrapeWith(t, srv.URL, nil)
	if ct := rsp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "text/plain") {
		t.Fatalf("content type %q", ct)
	}
	parser := expfmt.NewTextParser(model.LegacyValidation)
	fams, err := parser.TextToMetricFamilies(bytes.NewReader(body)) // fails on a family written twice
	if err != nil {
		t.Fatalf("text exposition does not parse: %v", err)
	}
	for _, n := range wantFams {
		if fams[n] == nil {
			t.Errorf("text: %s missing", n)
		}
	}
	// The budget (22) holds a healthy Service's 20 fixed series and its two per-endpoint ones.
	// Cut: every third Service (svc-00, svc-03, ... svc-27: two failing shares), svc-05 (two
	// failing shares) and svc-07, svc-14, svc-28 (an annotation error count).
	if v := fams["svcprobe_series_budget_exceeded_services"].GetMetric()[0].GetGauge().GetValue(); v != 14 {
		t.Errorf("budget exceeded %v, want 14", v)
	}

	// OpenMetrics, gzip: what Prometheus asks for.
	rsp, body = scrapeWith(t, srv.URL, map[string]string{
		"Accept":          "application/openmetrics-text;version=1.0.0;q=0.6,text/plain;version=0.0.4;q=0.3,*/*;q=0.2",
		"Accept-Encoding": "gzip",
	})
	if rsp.Header.Get("Content-Encoding") != "gzip" || !strings.HasPrefix(rsp.Header.Get("Content-Type"), "application/openmetrics-text") {
		t.Fatalf("headers %v", rsp.Header)
	}
	zr, err := gzip.NewReader(bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	om, err := io.ReadAll(zr)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.HasSuffix(om, []byte("\n# EOF\n")) || bytes.Count(om, []byte("# EOF")) != 1 {
		t.Fatalf("OpenMetrics does not end with one # EOF:\n...%s", om[max(0, len(om)-200):])
	}
	types := map[string]int{}
	for _, l := range strings.Split(string(om), "\n") {
		if f := strings.Fields(l); len(f) == 4 && f[1] == "TYPE" {
			types[f[2]]++
		}
	}
	for n, k := range types {
		if k != 1 {
			t.Errorf("OpenMetrics family %s declared %d times", n, k)
		}
	}
	if types["svcprobe_stage_runs"] != 1 || !bytes.Contains(om, []byte(`svcprobe_stage_runs_total{namespace="ns-00"`)) {
		t.Error("OpenMetrics counter family svcprobe_stage_runs(_total) missing")
	}

	// Protobuf, for native histograms.
	rsp, body = scrapeWith(t, srv.URL, map[string]string{"Accept": string(expfmt.NewFormat(expfmt.TypeProtoDelim))})
	dec := expfmt.NewDecoder(bytes.NewReader(body), expfmt.ResponseFormat(rsp.Header))
	got := map[string]*dto.MetricFamily{}
	for {
		var mf dto.MetricFamily
		if err := dec.Decode(&mf); err == io.EOF {
			break
		} else if err != nil {
			t.Fatalf("protobuf: %v", err)
		}
		if got[mf.GetName()] != nil {
			t.Errorf("protobuf family %s twice", mf.GetName())
		}
		got[mf.GetName()] = &mf
	}
	for _, n := range wantFams {
		if got[n] == nil {
			t.Errorf("protobuf: %s missing", n)
		}
	}
	if len(got["svcprobe_service_verdict"].GetMetric()) != len(fams["svcprobe_service_verdict"].GetMetric()) {
		t.Error("protobuf and text disagree on the verdict series")
	}

	// name[] filter, as promhttp has it.
	_, body = scrapeWith(t, srv.URL+"/?name[]=svcprobe_service_verdict&name[]=svcprobe_discovery_synced", nil)
	parser = expfmt.NewTextParser(model.LegacyValidation)
	fams, err = parser.TextToMetricFamilies(bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if len(fams) != 2 || fams["svcprobe_service_verdict"] == nil || fams["svcprobe_discovery_synced"] == nil {
		t.Fatalf("filtered scrape has %d families", len(fams))
	}
}

// A central exporter and a node agent scraped into one Prometheus: their per-Service series sets
// must not overlap even after the scrape's target labels are dropped (honor_labels, relabeling):
// the agent's carry node=..., the central one's none.
func TestCentralAndNodeSeriesDoNotCollide(t *testing.T) {
	seriesOf := func(node string) map[string]bool {
		_, c, _ := busyStoreOn(t, node)
		out := map[string]bool{}
		for _, l := range strings.Split(string(c.ServiceFamilies().WriteText(nil, false, nil)), "\n") {
			if l == "" || strings.HasPrefix(l, "#") || strings.HasPrefix(l, "svcprobe_series_budget_exceeded_services") || strings.HasPrefix(l, "svcprobe_node_services_omitted") {
				continue
			}
			out[l[:strings.LastIndexByte(l, ' ')]] = true
		}
		return out
	}
	// The agents export only their failing Services (and their verdict counts), so fewer series.
	central, a, b := seriesOf(""), seriesOf("node-a"), seriesOf("node-b")
	if len(central) < 50 || len(a) < 15 || len(a) >= len(central) || len(b) != len(a) {
		t.Fatalf("series: central %d, node-a %d, node-b %d; want at least 50 centrally, fewer (at least 15) and the same number on each node", len(central), len(a), len(b))
	}
	for s := range a {
		if central[s] || b[s] {
			t.Fatalf("series %s is in two sets", s)
		}
		if !strings.Contains(s, `node="node-a"`) {
			t.Fatalf("node-a series without its node label: %s", s)
		}
	}
}

// A Service deleted and created again under the same name can sit in the store twice for a moment
// (two UIDs): the exposition must still have one series per name, or Prometheus rejects the scrape.
func TestSameNameTwoUIDsOneSeries(t *testing.T) {
	store, _, g, _ := setup(t, CollectorConfig{})
	a, b := target("default", "again"), target("default", "again")
	b.UID = "uid-new"
	store.Record(a, healthy())
	store.Record(b, healthy())
	if n := gatherCount(t, g, "svcprobe_service_verdict"); n != 1 {
		t.Fatalf("%d verdict series for one name", n)
	}
}

func TestAcceptsGzip(t *testing.T) {
	for h, want := range map[string]bool{"": false, "gzip": true, "br, gzip;q=0.5": true, "gzip;q=0": false,
		"identity": false, "*": true, "GZIP": true, "deflate, gzip ; q=0.0": false} {
		if got := acceptsGzip(h); got != want {
			t.Errorf("%q: %v, want %v", h, got, want)
		}
	}
}

// Node mode is bounded by design: an agent exports per-Service series only for the Services failing
// from its node, at most NodeMaxFailing of them, and counts every Service by verdict. At 10k
// healthy Services an agent has a handful of series, not 10k x 20.
func TestNodeModeSeriesBounded(t *testing.T) {
	store, c, _, _ := setup(t, CollectorConfig{Node: "worker-1", NodeMaxFailing: 50})
	const healthyN, failingN = 10000, 80
	for i := range healthyN + failingN {
		tg := target(fmt.Sprintf("ns-%d", i%50), fmt.Sprintf("svc-%05d", i))
		tg.UID = types.UID(fmt.Sprintf("uid-%d", i))
		store.Record(tg, healthy())
		if i >= healthyN { // two failed proxy rounds in a row: the verdict is proxy
			store.Record(tg, []probe.Result{fail(probe.StageProxy, probe.ReasonTimeout)})
			store.Record(tg, []probe.Result{fail(probe.StageProxy, probe.ReasonTimeout)})
		}
	}
	count := func() (perService map[string]bool, byVerdict map[string]float64, omitted float64, total int) {
		perService, byVerdict = map[string]bool{}, map[string]float64{}
		mfs, err := c.ServiceFamilies().Gather()
		if err != nil {
			t.Fatal(err)
		}
		for _, mf := range mfs {
			for _, m := range mf.Metric {
				total++
				if svc := labelValue(m, "service"); svc != "" {
					perService[svc] = true
				}
				switch mf.GetName() {
				case "svcprobe_services_by_verdict":
					byVerdict[labelValue(m, "layer")] = m.GetGauge().GetValue()
				case "svcprobe_node_services_omitted":
					omitted = m.GetGauge().GetValue()
				}
			}
		}
		return
	}
	perService, byVerdict, omitted, total := count()
	if len(perService) != 50 || omitted != failingN-50 {
		t.Errorf("%d Services with per-Service series and %v omitted, want the 50 failing ones (the cap) and %d omitted", len(perService), omitted, failingN-50)
	}
	if byVerdict["ok"] != healthyN || byVerdict["proxy"] != failingN || len(byVerdict) != len(Layers) {
		t.Errorf("by verdict %v, want ok %d, proxy %d, every layer present", byVerdict, healthyN, failingN)
	}
	if total > 50*20+len(Layers)+2 {
		t.Errorf("%d per-Service-family series on the agent, want at most the 50 failing Services' and the counts", total)
	}

	// Nothing failing: only the counts.
	healthyStore, hc, _, _ := setup(t, CollectorConfig{Node: "worker-1"})
	for i := range healthyN {
		tg := target("ns", fmt.Sprintf("svc-%05d", i))
		tg.UID = types.UID(fmt.Sprintf("uid-%d", i))
		healthyStore.Record(tg, healthy())
	}
	c = hc
	perService, _, _, total = count()
	if len(perService) != 0 || total > 500 {
		t.Errorf("10k healthy Services: %d Services with per-Service series, %d series in all; want none and at most 500", len(perService), total)
	}
	// The central exporter keeps every Service's series.
	cstore, cc, _, _ := setup(t, CollectorConfig{})
	cstore.Record(target("ns", "one"), healthy())
	c = cc
	if perService, _, _, _ = count(); !perService["one"] {
		t.Error("central mode lost a healthy Service's series")
	}
}

package metrics

import (
	"io"
	"slices"
	"strconv"
	"sync"

	dto "github.com/prometheus/client_model/go"
	"github.com/svcprobe/svcprobe/discovery"
	"github.com/svcprobe/svcprobe/probe"
	"google.golang.org/protobuf/proto"
)

// The per-Service families are not built as client_golang const metrics: at 10k Services that is
// ~170k MustNewConstMetric calls, the registry's checks and sort, and their garbage, 1.6-1.9 s of
// CPU per scrape (bench/README.md). ServiceFamilies computes the series once per scrape into flat
// slices and either writes them straight into the text or OpenMetrics exposition (the /metrics
// handler) or turns them into dto families (protobuf scrapes, tests). A test keeps the direct
// writer byte-for-byte equal to expfmt's encoders over the dto families.

// family is one per-Service metric family. Its label names are sorted, as client_golang sorts
// them, so the two outputs agree. In node mode every family but the budget gauge gets a node
// label too (withNode), kept in sorted place.
type family struct {
	name, help string
	typ        dto.MetricType
	labels     []string
	// optional names a label left out of a series whose value is empty (Prometheus reads an
	// empty label as no label): the verdict's family, which only dual-stack and IPv6 failures
	// have, so IPv4-only clusters see the series they always had.
	optional string
}

// omit reports whether label i of the family is left out of a series with value v.
func (f *family) omit(i int, v string) bool {
	return v == "" && f.optional != "" && f.labels[i] == f.optional
}

type famID uint8

const (
	famVerdict famID = iota
	famStageUp
	famRuns
	famFailures
	famFailureRatio
	famEndpoints
	famAnnErr
	famEndpointUp
	famByVerdict
	famOverBudget
	famOmitted
	numFams
)

var families = [numFams]family{
	famVerdict: {"svcprobe_service_verdict", "The layer to blame for this Service and why (one series per Service, value 1; layer ok and reason success when nothing is broken; family ipv4 or ipv6 when the failure is confined to that IP family of a dual-stack or IPv6-only Service, empty otherwise).",
		dto.MetricType_GAUGE, []string{"family", "layer", "namespace", "reason", "service"}, "family"},
	famStageUp: {"svcprobe_stage_up", "Whether the stage passed at its last run (1) or failed (0). Stages that do not apply have no series.",
		dto.MetricType_GAUGE, []string{"namespace", "service", "stage"}, ""},
	famRuns: {"svcprobe_stage_runs_total", "Conclusive runs of the stage for this Service (not skipped, not cut short by the exporter's own limits), from its first run on.",
		dto.MetricType_COUNTER, []string{"namespace", "service", "stage"}, ""},
	famFailures: {"svcprobe_stage_failures_total", "Runs of the stage that failed, from the stage's first run on (0 until the first failure); the reason is on svcprobe_service_verdict and the status page.",
		dto.MetricType_COUNTER, []string{"namespace", "service", "stage"}, ""},
	famFailureRatio: {"svcprobe_stage_failure_ratio", "Failing share of a network stage's attempts (checks, connections) over its window of recent rounds (--verdict.window); only when above 0.",
		dto.MetricType_GAUGE, []string{"namespace", "service", "stage"}, ""},
	famEndpoints: {"svcprobe_endpoints", "Endpoints by state; unreachable counts ready endpoints that failed the pod stage (a subset of ready).",
		dto.MetricType_GAUGE, []string{"namespace", "service", "state"}, ""},
	famAnnErr: {"svcprobe_service_annotation_errors", "Malformed svcprobe.io/ annotations on this Service (probed with defaults for them).",
		dto.MetricType_GAUGE, []string{"namespace", "service"}, ""},
	famEndpointUp: {"svcprobe_endpoint_up", "Whether one endpoint answered the pod stage (only with --metrics.per-endpoint, capped per Service).",
		dto.MetricType_GAUGE, []string{"address", "namespace", "pod", "service"}, ""},
	famByVerdict: {"svcprobe_services_by_verdict", "Services this exporter probes, by verdict layer (every layer, 0 included). In node mode the agent's view from its node: its only per-Service figure when nothing fails there.",
		dto.MetricType_GAUGE, []string{"layer"}, ""},
	famOmitted: {"svcprobe_node_services_omitted", "Node mode: Services failing from this node whose per-Service series were not exported, beyond --node.max-failing-services (they still count in svcprobe_services_by_verdict).",
		dto.MetricType_GAUGE, nil, ""},
	famOverBudget: {"svcprobe_series_budget_exceeded_services", "Services whose per-endpoint series (--metrics.per-endpoint) were cut to the per-Service budget at this scrape.",
		dto.MetricType_GAUGE, nil, ""},
}

// withNode returns the families with the label node added in sorted place to every per-Service
// family (not the budget gauge, which is about this exporter).
func withNode(fams [numFams]family) [numFams]family {
	for id := range fams {
		if fams[id].labels == nil {
			continue
		}
		ls := append(slices.Clone(fams[id].labels), "node")
		slices.Sort(ls)
		fams[id].labels = ls
	}
	return fams
}

// FamilyNames lists the per-Service family names (and the budget gauge) ServiceFamilies writes.
func FamilyNames() []string {
	out := make([]string, 0, numFams)
	for _, f := range families {
		out = append(out, f.name)
	}
	return out
}

// NodeModeFamilies lists the families only a node agent (--mode=node) writes.
func NodeModeFamilies() []string { return []string{families[famOmitted].name} }

// sample is one series: its label values in the family's label order, and its value.
type sample struct {
	lv [6]string
	v  float64
}

// series is one scrape's per-Service series, grouped by family, in output order.
type series [numFams][]sample

var seriesPool = sync.Pool{New: func() any { return new(series) }}

func (s *series) reset() {
	for i := range s {
		clear(s[i])
		s[i] = s[i][:0]
	}
}

// ServiceFamilies builds the per-Service families from the store at scrape time. It implements
// prometheus.Gatherer (the dto form) and writes the text forms directly (WriteText).
type ServiceFamilies struct {
	cfg   CollectorConfig
	store *Store
	disc  Discovery
	fams  [numFams]family // families, with the node label in node mode
	node  string          // the node label's value (bounded), "" in central mode
}

func newServiceFamilies(cfg CollectorConfig, store *Store, disc Discovery) *ServiceFamilies {
	f := &ServiceFamilies{cfg: cfg, store: store, disc: disc, fams: families}
	if cfg.Node != "" {
		f.fams = withNode(families)
		f.node = f.lv(cfg.Node)
	}
	return f
}

// put appends one series of family id: the label values in the family's sorted label order,
// namespace, service and node placed by name, the others from lv in order.
func (f *ServiceFamilies) put(s *series, id famID, ns, name string, v float64, lv ...string) {
	var sm sample
	extra := 0
	for i, l := range f.fams[id].labels {
		switch l {
		case "namespace":
			sm.lv[i] = ns
		case "service":
			sm.lv[i] = name
		case "node":
			sm.lv[i] = f.node
		default:
			sm.lv[i] = lv[extra]
			extra++
		}
	}
	sm.v = v
	s[id] = append(s[id], sm)
}

// putPlain appends one series of a family without namespace and service: its label values in
// sorted label order, node placed by name, the others from lv in order.
func (f *ServiceFamilies) putPlain(s *series, id famID, v float64, lv ...string) {
	f.put(s, id, "", "", v, lv...)
}

// build computes every per-Service series from one snapshot of the store.
func (f *ServiceFamilies) build(s *series) {
	statuses, _ := f.store.Snapshot()
	over := 0
	seen := make(map[Expected]bool, len(f.cfg.Expected))
	byVerdict := make(map[Layer]int, len(Layers))
	exported, omitted := 0, 0
	var prevNS, prevName string
	for i := range statuses {
		st := &statuses[i]
		ns, name := st.Target.Namespace, st.Target.Name
		if i > 0 && ns == prevNS && name == prevName {
			// A Service deleted and created again under the same name, both still in the store for
			// a moment: one series set per name (the first by UID order is as good as any; the old
			// one is forgotten at its delete event).
			continue
		}
		prevNS, prevName = ns, name
		if len(f.cfg.Expected) > 0 {
			seen[Expected{ns, name}] = true
		}
		byVerdict[st.Verdict]++
		if f.node != "" {
			// Node mode: per-Service series only for what fails from this node, capped, so an
			// agent's series do not grow with the cluster's Services (every node runs one).
			if st.Verdict == LayerOK || st.Verdict.Intended() {
				continue
			}
			if exported >= f.cfg.NodeMaxFailing {
				omitted++
				continue
			}
			exported++
		}
		if f.buildService(s, st) {
			over++
		}
	}
	for _, e := range f.cfg.Expected {
		if seen[e] || f.disc == nil {
			continue
		}
		if exists, known := f.disc.Exists(e.Namespace, e.Name); known && !exists && f.disc.Synced() {
			f.put(s, famVerdict, f.lv(e.Namespace), f.lv(e.Name), 1, "", string(LayerMissing), "not_found")
			byVerdict[LayerMissing]++
		}
	}
	for _, l := range Layers {
		f.putPlain(s, famByVerdict, float64(byVerdict[l]), string(l))
	}
	s[famOverBudget] = append(s[famOverBudget], sample{v: float64(over)})
	if f.node != "" {
		s[famOmitted] = append(s[famOmitted], sample{v: float64(omitted)})
	}
}

// buildService adds one Service's series; it reports whether it had to cut. The series every
// Service has are bounded by construction (one verdict; per stage that ran, up, runs and failures,
// and the failing share while its window holds a failure; four endpoint states; one annotation
// error count) and never cut, so that counters are exact and verdicts complete. Only the optional
// per-endpoint series fill what is left of the budget (--metrics.max-series-per-service).
func (f *ServiceFamilies) buildService(s *series, st *ServiceStatus) bool {
	t := st.Target
	ns, name := f.lv(t.Namespace), f.lv(t.Name)
	n := 0
	add := func(id famID, v float64, lv ...string) {
		f.put(s, id, ns, name, v, lv...)
		n++
	}
	add(famVerdict, 1, string(st.Family), string(st.Verdict), string(st.Reason))
	for _, stage := range probe.Stages {
		r, ok := st.Results[stage]
		if !ok || r.Outcome == probe.Skipped {
			continue
		}
		add(famStageUp, boolf(r.Outcome == probe.OK), string(stage))
		// The failing share only where the window holds a failure: a healthy Service spends no
		// series on it, a failing one shows how much fails (a VIP failing 1 connection in 3: ~0.33).
		if w, ok := st.Windows[stage]; ok && w.Failing > 0 {
			add(famFailureRatio, w.FailureRatio(), string(stage))
		}
	}
	if f.node != "" {
		// A node agent's view of a failing Service ends here: what fails from this node and how
		// much. The counters (SLOs) and endpoint counts (the API's view, the same on every node)
		// are the central exporter's.
		return false
	}
	// Runs and failures from a stage's first run on, both, so that rate() sees the first failure
	// and a ratio has its denominator; they stay while the Service exists, even when the stage no
	// longer applies (a counter that vanished and came back would read as a reset).
	for _, stage := range probe.Stages {
		if c, ok := st.Counts[stage]; ok {
			add(famRuns, float64(c.Runs), string(stage))
			add(famFailures, float64(c.Failures), string(stage))
		}
	}
	if t.Kind != discovery.KindExternalName {
		counts := t.Counts()
		unreachable := 0
		if r, ok := st.Results[probe.StagePod]; ok && r.Outcome != probe.Skipped {
			unreachable = failingEndpoints(r)
		}
		add(famEndpoints, float64(counts.Ready), "ready")
		add(famEndpoints, float64(counts.NotReady), "not_ready")
		add(famEndpoints, float64(counts.Terminating), "terminating")
		add(famEndpoints, float64(unreachable), "unreachable")
	}
	if k := len(t.AnnotationErrors); k > 0 {
		add(famAnnErr, float64(k))
	}
	cut := false
	if f.cfg.PerEndpoint {
		if r, ok := st.Results[probe.StagePod]; ok {
			for i, ep := range endpointResults(r) {
				if i >= f.cfg.PerEndpointLimit {
					break
				}
				if n >= f.cfg.SeriesPerService {
					cut = true
					break
				}
				add(famEndpointUp, boolf(ep.up), ep.addr, f.lv(ep.pod))
			}
		}
	}
	return cut
}

func (f *ServiceFamilies) lv(s string) string { return BoundLabel(s, f.cfg.LabelValueMaxLen) }

// Gather returns the per-Service families as dto (prometheus.Gatherer): for protobuf scrapes and
// for tests. Families without series are left out, as a registry leaves them out.
func (f *ServiceFamilies) Gather() ([]*dto.MetricFamily, error) { return f.gather(nil) }

func (f *ServiceFamilies) gather(filter map[string]bool) ([]*dto.MetricFamily, error) {
	s := seriesPool.Get().(*series)
	defer func() { s.reset(); seriesPool.Put(s) }()
	f.build(s)
	var out []*dto.MetricFamily
	for id := range numFams {
		if len(s[id]) == 0 || (filter != nil && !filter[f.fams[id].name]) {
			continue
		}
		fam := f.fams[id]
		mf := &dto.MetricFamily{Name: proto.String(fam.name), Help: proto.String(fam.help), Type: fam.typ.Enum()}
		for _, sm := range s[id] {
			m := &dto.Metric{}
			for i, l := range fam.labels {
				if fam.omit(i, sm.lv[i]) {
					continue
				}
				m.Label = append(m.Label, &dto.LabelPair{Name: proto.String(l), Value: proto.String(sm.lv[i])})
			}
			if fam.typ == dto.MetricType_COUNTER {
				m.Counter = &dto.Counter{Value: proto.Float64(sm.v)}
			} else {
				m.Gauge = &dto.Gauge{Value: proto.Float64(sm.v)}
			}
			mf.Metric = append(mf.Metric, m)
		}
		out = append(out, mf)
	}
	return out, nil
}

// WriteText appends the per-Service families to b in the text format (0.0.4) or, with
// openMetrics, in OpenMetrics 1.0 (without the final # EOF, which the caller writes after every
// other family), exactly as expfmt would encode the dto families. A non-nil filter keeps only the
// families it names.
func (f *ServiceFamilies) WriteText(b []byte, openMetrics bool, filter map[string]bool) []byte {
	f.write(b, openMetrics, filter, func(p []byte) []byte { b = p; return p })
	return b
}

// flushAt is how much WriteTo buffers before it writes.
const flushAt = 64 << 10

// WriteTo streams the same bytes as WriteText to w, a buffer of about 64 KiB at a time.
func (f *ServiceFamilies) WriteTo(w io.Writer, openMetrics bool, filter map[string]bool) error {
	bp := writeBufPool.Get().(*[]byte)
	defer writeBufPool.Put(bp)
	var err error
	b := f.write((*bp)[:0], openMetrics, filter, func(p []byte) []byte {
		if err == nil && len(p) >= flushAt {
			_, err = w.Write(p)
			return p[:0]
		}
		return p
	})
	if err == nil && len(b) > 0 {
		_, err = w.Write(b)
	}
	*bp = b[:0]
	return err
}

var writeBufPool = sync.Pool{New: func() any { b := make([]byte, 0, flushAt+16<<10); return &b }}

// write builds the series and appends them to b, calling flush after each sample line; flush
// returns the buffer to go on with.
func (f *ServiceFamilies) write(b []byte, openMetrics bool, filter map[string]bool, flush func([]byte) []byte) []byte {
	s := seriesPool.Get().(*series)
	defer func() { s.reset(); seriesPool.Put(s) }()
	f.build(s)
	for id := range numFams {
		if len(s[id]) == 0 || (filter != nil && !filter[f.fams[id].name]) {
			continue
		}
		b = appendFamily(b, &f.fams[id], s[id], openMetrics, flush)
	}
	return flush(b)
}

func appendFamily(b []byte, fam *family, samples []sample, om bool, flush func([]byte) []byte) []byte {
	name := fam.name
	if om && fam.typ == dto.MetricType_COUNTER {
		name = name[:len(name)-len("_total")] // OpenMetrics names the counter family without _total
	}
	b = append(b, "# HELP "...)
	b = append(b, name...)
	b = append(b, ' ')
	b = appendEscaped(b, fam.help, om)
	b = append(b, "\n# TYPE "...)
	b = append(b, name...)
	if fam.typ == dto.MetricType_COUNTER {
		b = append(b, " counter\n"...)
	} else {
		b = append(b, " gauge\n"...)
	}
	for i := range samples {
		sm := &samples[i]
		b = append(b, fam.name...)
		if len(fam.labels) > 0 {
			b = append(b, '{')
			first := true
			for j, l := range fam.labels {
				if fam.omit(j, sm.lv[j]) {
					continue
				}
				if !first {
					b = append(b, ',')
				}
				first = false
				b = append(b, l...)
				b = append(b, `="`...)
				b = appendLabelValue(b, sm.lv[j])
				b = append(b, '"')
			}
			b = append(b, '}')
		}
		b = append(b, ' ')
		if om {
			b = appendOMFloat(b, sm.v)
		} else {
			b = appendFloat(b, sm.v)
		}
		b = append(b, '\n')
		b = flush(b)
	}
	return b
}

// appendEscaped escapes HELP text: backslash and newline in the text format; OpenMetrics also
// escapes double quotes.
func appendEscaped(b []byte, s string, om bool) []byte {
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case c == '\\':
			b = append(b, `\\`...)
		case c == '\n':
			b = append(b, `\n`...)
		case c == '"' && om:
			b = append(b, `\"`...)
		default:
			b = append(b, c)
		}
	}
	return b
}

func appendLabelValue(b []byte, s string) []byte {
	for i := 0; i < len(s); i++ {
		switch c := s[i]; c {
		case '\\':
			b = append(b, `\\`...)
		case '\n':
			b = append(b, `\n`...)
		case '"':
			b = append(b, `\"`...)
		default:
			b = append(b, c)
		}
	}
	return b
}

// appendFloat formats like the text format's encoder: strconv's 'g', and +Inf/-Inf/NaN.
func appendFloat(b []byte, v float64) []byte {
	switch {
	case v != v:
		return append(b, "NaN"...)
	case v > maxFloat:
		return append(b, "+Inf"...)
	case v < -maxFloat:
		return append(b, "-Inf"...)
	}
	return strconv.AppendFloat(b, v, 'g', -1, 64)
}

// appendOMFloat formats like the OpenMetrics encoder: the same, but a number without a fraction
// or exponent gets ".0".
func appendOMFloat(b []byte, v float64) []byte {
	start := len(b)
	b = appendFloat(b, v)
	for _, c := range b[start:] {
		if c == 'e' || c == '.' || c == 'N' || c == 'I' {
			return b
		}
	}
	return append(b, ".0"...)
}

const maxFloat = 1.7976931348623157e308

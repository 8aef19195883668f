package main

import (
	"bytes"
	"compress/gzip"
	"io"
	"log/slog"
	"net/http/httptest"
	"strconv"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"

	"github.com/svcprobe/svcprobe/discovery"
	"github.com/svcprobe/svcprobe/metrics"
	"github.com/svcprobe/svcprobe/probe"
)

func protoStore(n int) *metrics.Store {
	st := metrics.NewStore()
	p := Ports{Pod: 1, Service: 2}
	now := time.Now()
	for i := range n {
		sl, _ := discovery.TrimEndpointSlice(benchSlice(i, 10, p))
		t := discovery.BuildTarget(benchService(i, p), []*discoveryv1.EndpointSlice{sl.(*discoveryv1.EndpointSlice)}, []*corev1.Pod(nil))
		var rs []probe.Result
		rs = append(rs, probe.Result{Stage: probe.StageSpec, Outcome: probe.Skipped, Reason: probe.ReasonNotProbed})
		for _, s := range []probe.Stage{probe.StageEndpoints, probe.StageDNS, probe.StagePod, probe.StageProxy} {
			r := probe.Result{Stage: s, Outcome: probe.OK, Reason: probe.ReasonSuccess, At: now, Duration: time.Millisecond}
			if s == probe.StagePod {
				for j := range 10 {
					r.Checks = append(r.Checks, probe.Check{Reason: probe.ReasonSuccess, Addr: endpointIP(i, j, 10).String()})
				}
			}
			rs = append(rs, r)
		}
		st.Record(t, rs)
	}
	return st
}

// The prototype of the proposed scrape fix (bench/README.md): the collector through client_golang
// against a direct text writer over the same store. Run with
// `go test -run '^$' -bench Scrape -benchtime 3x ./bench`; it reports times and asserts none.
func BenchmarkScrapeClientGolang(b *testing.B) {
	st := protoStore(10000)
	reg := prometheus.NewRegistry()
	reg.MustRegister(metrics.NewCollector(metrics.CollectorConfig{}, st, nil, nil, nil, slog.Default()))
	srv := httptest.NewServer(promhttp.HandlerFor(reg, promhttp.HandlerOpts{EnableOpenMetrics: true}))
	defer srv.Close()
	b.ResetTimer()
	for range b.N {
		if _, err := scrape(srv.URL); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkScrapeDirectWriter(b *testing.B) {
	st := protoStore(10000)
	b.ResetTimer()
	for range b.N {
		var buf bytes.Buffer
		zw := gzip.NewWriter(&buf)
		directWrite(zw, st)
		zw.Close()
	}
}

// directWrite writes the per-Service families straight from a snapshot (text format 0.0.4),
// one family at a time, with no dto, no registry sort: the Snapshot's order is the output order.
func directWrite(w io.Writer, st *metrics.Store) int {
	sts, _ := st.Snapshot()
	b := make([]byte, 0, 64<<10)
	n := 0
	flush := func() {
		if len(b) > 32<<10 {
			w.Write(b)
			b = b[:0]
		}
	}
	lbl := func(ss metrics.ServiceStatus) []byte {
		b = append(b, `{namespace="`...)
		b = append(b, ss.Target.Namespace...)
		b = append(b, `",service="`...)
		b = append(b, ss.Target.Name...)
		return append(b, '"')
	}
	b = append(b, "# HELP svcprobe_service_verdict ...\n# TYPE svcprobe_service_verdict gauge\n"...)
	for _, ss := range sts {
		b = append(b, "svcprobe_service_verdict"...)
		b = lbl(ss)
		b = append(b, `,layer="`...)
		b = append(b, ss.Verdict...)
		b = append(b, `",reason="`...)
		b = append(b, ss.Reason...)
		b = append(b, "\"} 1\n"...)
		n++
		flush()
	}
	b = append(b, "# HELP svcprobe_stage_up ...\n# TYPE svcprobe_stage_up gauge\n"...)
	for _, ss := range sts {
		for _, s := range probe.Stages {
			r, ok := ss.Results[s]
			if !ok || r.Outcome == probe.Skipped {
				continue
			}
			b = append(b, "svcprobe_stage_up"...)
			b = lbl(ss)
			b = append(b, `,stage="`...)
			b = append(b, s...)
			if r.Outcome == probe.OK {
				b = append(b, "\"} 1\n"...)
			} else {
				b = append(b, "\"} 0\n"...)
			}
			n++
		}
		flush()
	}
	b = append(b, "# TYPE svcprobe_stage_duration_seconds gauge\n"...)
	for _, ss := range sts {
		for _, s := range []probe.Stage{probe.StageDNS, probe.StagePod, probe.StageProxy} {
			r, ok := ss.Results[s]
			if !ok || r.Outcome == probe.Skipped {
				continue
			}
			b = append(b, "svcprobe_stage_duration_seconds"...)
			b = lbl(ss)
			b = append(b, `,stage="`...)
			b = append(b, s...)
			b = append(b, "\"} "...)
			b = strconv.AppendFloat(b, r.Duration.Seconds(), 'g', -1, 64)
			b = append(b, '\n')
			n++
		}
		flush()
	}
	b = append(b, "# TYPE svcprobe_endpoints gauge\n"...)
	for _, ss := range sts {
		c := ss.Target.Counts()
		for _, kv := range []struct {
			k string
			v int
		}{{"ready", c.Ready}, {"not_ready", c.NotReady}, {"terminating", c.Terminating}, {"unreachable", 0}} {
			b = append(b, "svcprobe_endpoints"...)
			b = lbl(ss)
			b = append(b, `,state="`...)
			b = append(b, kv.k...)
			b = append(b, "\"} "...)
			b = strconv.AppendInt(b, int64(kv.v), 10)
			b = append(b, '\n')
			n++
		}
		flush()
	}
	b = append(b, "# TYPE svcprobe_probes_total counter\n"...)
	for _, ss := range sts {
		for stage, byReason := range ss.Counters {
			for reason, v := range byReason {
				b = append(b, "svcprobe_probes_total"...)
				b = lbl(ss)
				b = append(b, `,stage="`...)
				b = append(b, stage...)
				b = append(b, `",result="`...)
				b = append(b, reason...)
				b = append(b, "\"} "...)
				b = strconv.AppendUint(b, v, 10)
				b = append(b, '\n')
				n++
			}
		}
		flush()
	}
	w.Write(b)
	return n
}

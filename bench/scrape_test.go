package main

import (
	"log/slog"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
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

// The scrape at 10k Services through the real /metrics handler (metrics.Handler: registry
// families through expfmt, per-Service families written directly), as Prometheus asks for it
// (OpenMetrics, gzip). Run with `go test -run '^$' -bench Scrape -benchtime 3x ./bench`; it
// reports times and asserts none.
func BenchmarkScrapeHandler(b *testing.B) {
	st := protoStore(10000)
	reg := prometheus.NewRegistry()
	c := metrics.NewCollector(metrics.CollectorConfig{}, st, nil, nil, nil, slog.Default())
	reg.MustRegister(c)
	srv := httptest.NewServer(metrics.Handler(reg, c.ServiceFamilies(), slog.Default()))
	defer srv.Close()
	b.ResetTimer()
	for range b.N {
		if _, err := scrape(srv.URL); err != nil {
			b.Fatal(err)
		}
	}
}

package main

import (
	"fmt"
	"io"
	"net/http"
	"slices"
	"time"

	kruntime "k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes/fake"
)

// webPage is one URL the web shape requests; path(k) is the k-th request's path.
type webPage struct {
	name     string
	path     func(k int) string
	requests int
	metrics  bool // a Prometheus scrape (OpenMetrics, gzip)
}

// shapeWeb: N Services (the scale runs' shape) probed by the pipeline; the exporter's handler
// (pipeline.New's, which mounts the status pages at /) is asked for /, a Service's page and its
// JSON (a different Service each request), and, as baselines, /-/healthy (a trivial handler on the
// same mux) and a /metrics scrape. Each URL: requests in a row while the pipeline probes (wall
// time), then again with the pipeline stopped (process CPU per request, client included: both
// ends are in this process, as for the baselines).
func shapeWeb(o shapeOptions) (ShapesResult, error) {
	n := o.services
	res := ShapesResult{Services: n, Namespaces: namespaces}
	objs := make([]kruntime.Object, 0, 2*n+2)
	for i := range n {
		objs = append(objs, benchService(i, o.ports), benchSlice(i, 10, o.ports))
	}
	dsvc, dsl := dnsObjects()
	objs = append(objs, dsvc, dsl)
	client := fake.NewSimpleClientset(objs...)
	objs = nil
	sp, err := startShapePipeline(o, client)
	if err != nil {
		return res, err
	}
	defer sp.close()
	res.SyncSeconds, res.TargetsSeconds, res.FirstRoundSeconds = sp.waitReady(n+1, 5*time.Minute)
	if res.FirstRoundSeconds < 0 {
		res.Notes = append(res.Notes, "not every Service probed once within the bound")
	}
	time.Sleep(2 * time.Second)
	svc := func(k int) (string, string) {
		i := (k * 7919) % n // spread over the namespaces and names
		return serviceNamespace(i), serviceName(i)
	}
	r := o.webRequests
	pages := []webPage{
		{name: "/-/healthy", path: func(int) string { return "/-/healthy" }, requests: r},
		{name: "/", path: func(int) string { return "/" }, requests: max(10, r/5)},
		{name: "/status/{ns}/{name}", path: func(k int) string { ns, s := svc(k); return "/status/" + ns + "/" + s }, requests: r},
		{name: "/api/v1/services/{ns}/{name}", path: func(k int) string { ns, s := svc(k); return "/api/v1/services/" + ns + "/" + s }, requests: r},
		{name: "/metrics", path: func(int) string { return "/metrics" }, requests: 3, metrics: true},
	}
	res.Pages = make([]PageTiming, len(pages))
	res.IdleCores = idleCores(3 * time.Second) // the probing's rate, for the record
	st0 := readCPUStat()
	for pi, pg := range pages {
		pt := &res.Pages[pi]
		pt.Name, pt.Path, pt.Requests = pg.name, pg.path(0), pg.requests
		walls, _, _, err := requestAll(sp.srv.URL, pg, pt)
		if err != nil {
			return res, err
		}
		pt.LiveMedian, pt.LiveP90 = median(walls), quantile(walls, 0.9)
	}
	res.MachineBusy = machineBusy(st0, readCPUStat())
	res.Verdicts = verdictsOf(sp.p.Store)
	sp.stop()
	for pi, pg := range pages {
		pt := &res.Pages[pi]
		walls, cpu, _, err := requestAll(sp.srv.URL, pg, pt)
		if err != nil {
			return res, err
		}
		pt.IdleRequests, pt.IdleMedian, pt.CPUMicros = pg.requests, median(walls), 1e6*cpu/float64(pg.requests)
	}
	return res, nil
}

var webClient = &http.Client{Timeout: 30 * time.Second}

// requestAll requests pg's paths in a row; it returns each request's wall time, the process CPU
// and the wall time of the whole batch, and notes the last status and size in pt.
func requestAll(base string, pg webPage, pt *PageTiming) (walls []float64, cpu, wall float64, err error) {
	c0, w0 := cpuTime(), time.Now()
	for k := range pg.requests {
		t0 := time.Now()
		if pg.metrics {
			body, err := scrape(base + pg.path(k))
			if err != nil {
				return nil, 0, 0, err
			}
			pt.Status, pt.Bytes = http.StatusOK, len(body)
		} else {
			resp, err := webClient.Get(base + pg.path(k))
			if err != nil {
				return nil, 0, 0, err
			}
			b, err := io.ReadAll(resp.Body)
			resp.Body.Close()
			if err != nil {
				return nil, 0, 0, err
			}
			if resp.StatusCode != http.StatusOK {
				return nil, 0, 0, fmt.Errorf("GET %s: HTTP %d", pg.path(k), resp.StatusCode)
			}
			pt.Status, pt.Bytes = resp.StatusCode, len(b)
		}
		walls = append(walls, time.Since(t0).Seconds())
	}
	return walls, (cpuTime() - c0).Seconds(), time.Since(w0).Seconds(), nil
}

// quantile is the q-quantile of v (nearest rank).
func quantile(v []float64, q float64) float64 {
	if len(v) == 0 {
		return 0
	}
	s := slices.Clone(v)
	slices.Sort(s)
	i := int(q*float64(len(s))+0.999999) - 1
	return s[min(max(i, 0), len(s)-1)]
}

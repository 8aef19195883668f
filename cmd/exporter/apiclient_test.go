package main

import (
	"context"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/svcprobe/svcprobe/metrics"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

func kubeconfigFor(t *testing.T, server string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "kubeconfig")
	cfg := `apiVersion: v1
kind: Config
clusters: [{name: c, cluster: {server: "` + server + `"}}]
contexts: [{name: c, context: {cluster: c, user: u}}]
users: [{name: u, user: {token: t}}]
current-context: c
`
	if err := os.WriteFile(p, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// An API server that is gone (nothing listens: connection refused) or failing (500, 403) is
// counted by the client's transport; an answer that is fine is not.
func TestKubeClientCountsAPIFailures(t *testing.T) {
	// Gone: a loopback port nothing listens on.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	gone := "http://" + l.Addr().String()
	l.Close()
	var n atomic.Uint64
	client, err := kubeClient(kubeconfigFor(t, gone), &n)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := client.CoreV1().Services("").List(context.Background(), metav1.ListOptions{}); err == nil {
		t.Fatal("a list against a closed port succeeded")
	}
	if n.Load() == 0 {
		t.Fatal("a refused connection to the API server was not counted")
	}

	// Failing, then fine.
	status := atomic.Int32{}
	status.Store(http.StatusInternalServerError)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(int(status.Load()))
		if status.Load() == http.StatusOK {
			_, _ = w.Write([]byte(`{"kind":"ServiceList","apiVersion":"v1","metadata":{},"items":[]}`))
			return
		}
		_, _ = w.Write([]byte(`{"kind":"Status","apiVersion":"v1","status":"Failure"}`))
	}))
	defer srv.Close()
	var m atomic.Uint64
	client, err = kubeClient(kubeconfigFor(t, srv.URL), &m)
	if err != nil {
		t.Fatal(err)
	}
	status.Store(http.StatusForbidden)
	_, _ = client.CoreV1().Services("").List(context.Background(), metav1.ListOptions{})
	afterFailure := m.Load()
	if afterFailure == 0 {
		t.Fatal("a 403 from the API server was not counted")
	}
	status.Store(http.StatusOK)
	if _, err := client.CoreV1().Services("").List(context.Background(), metav1.ListOptions{}); err != nil {
		t.Fatal(err)
	}
	if m.Load() != afterFailure {
		t.Fatalf("a successful request was counted: %d -> %d", afterFailure, m.Load())
	}

	// A request the client cancels itself (a watch being stopped) is not a failure.
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	before := m.Load()
	_, _ = client.CoreV1().Services("").List(ctx, metav1.ListOptions{})
	if m.Load() != before {
		t.Fatal("a cancelled request was counted")
	}

	// And the counter is what /metrics exports.
	c := metrics.NewCollector(metrics.CollectorConfig{APIErrors: &n}, metrics.NewStore(), nil, nil, nil, slog.New(slog.DiscardHandler))
	reg := prometheus.NewRegistry()
	reg.MustRegister(c)
	if got := testutil.ToFloat64(collectorOf(t, reg, "svcprobe_discovery_api_errors_total")); got != float64(n.Load()) {
		t.Fatalf("svcprobe_discovery_api_errors_total %v, counter %d", got, n.Load())
	}
}

// collectorOf wraps one gathered single-series family as a collector for testutil.ToFloat64.
func collectorOf(t *testing.T, g prometheus.Gatherer, name string) prometheus.Collector {
	t.Helper()
	mfs, err := g.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == name && len(mf.Metric) == 1 {
			v := mf.Metric[0].GetCounter().GetValue()
			return prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "x", Help: "x"}, func() float64 { return v })
		}
	}
	t.Fatalf("%s not exported", name)
	return nil
}

// The exporter asks the API server for protobuf (JSON accepted as a fallback): node agents on
// every node receive every Service, EndpointSlice and Pod event, several times smaller in
// protobuf. The server here answers JSON, which the client still decodes.
func TestKubeClientAsksProtobuf(t *testing.T) {
	var accept atomic.Value
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		accept.Store(r.Header.Get("Accept"))
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write([]byte(`{"kind":"ServiceList","apiVersion":"v1","metadata":{},"items":[{"metadata":{"name":"a","namespace":"ns"}}]}`))
	}))
	defer srv.Close()
	var n atomic.Uint64
	client, err := kubeClient(kubeconfigFor(t, srv.URL), &n)
	if err != nil {
		t.Fatal(err)
	}
	l, err := client.CoreV1().Services("").List(context.Background(), metav1.ListOptions{})
	if err != nil || len(l.Items) != 1 {
		t.Fatalf("list through the JSON fallback: %v %v", l, err)
	}
	if got, _ := accept.Load().(string); !strings.HasPrefix(got, "application/vnd.kubernetes.protobuf") || !strings.Contains(got, "application/json") {
		t.Fatalf("Accept %q, want protobuf first and JSON as a fallback", got)
	}
}

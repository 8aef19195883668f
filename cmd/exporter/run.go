package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/netip"
	"os"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	versioncollector "github.com/prometheus/client_golang/prometheus/collectors/version"
	"github.com/prometheus/exporter-toolkit/web"
	"github.com/svcprobe/svcprobe/discovery"
	"github.com/svcprobe/svcprobe/metrics"
	"github.com/svcprobe/svcprobe/probe"
	statusweb "github.com/svcprobe/svcprobe/web"
	"golang.org/x/sync/errgroup"
	"k8s.io/client-go/kubernetes"
)

// exporter is the wired pipeline: discovery -> scheduler -> probes -> store -> collector.
type exporter struct {
	watcher   *discovery.Watcher
	scheduler *probe.Scheduler
	store     *metrics.Store
	registry  *prometheus.Registry
	mux       *http.ServeMux
	// wasReady latches the first time ready() holds: after that a new Service waiting for its
	// first probe must not take the exporter out of its Service's endpoints (in a busy cluster
	// that would flap readiness at every Service created).
	wasReady atomic.Bool
}

// newExporter wires the components. It starts nothing.
func newExporter(cfg *config, client kubernetes.Interface, log *slog.Logger) (*exporter, error) {
	rc, err := readResolvConf(cfg.ResolvConf)
	if err != nil {
		return nil, err
	}
	budget, err := probe.NewBudget(probe.BudgetConfig{Concurrency: fitConcurrency(cfg.Concurrency, log), DNSQPS: cfg.DNSQPS, NewConnsPerSecond: cfg.NewConnsPerSecond})
	if err != nil {
		return nil, err
	}
	store := metrics.NewStore()
	store.SetWindow(cfg.Window)
	e := &exporter{store: store, registry: prometheus.NewRegistry(), mux: http.NewServeMux()}
	// The guard asks the watcher (built below, before anything runs) which addresses it knows.
	guard := cfg.addressGuard(func(a netip.Addr) bool { return e.watcher.KnownAddress(a) }, log.With("component", "guard"))
	// The nameservers are told apart by the DNS Service's ClusterIPs as the informers know them.
	resolvers := probe.ResolverClassifier{NodeLocal: cfg.NodeLocalDNS, ServiceIPs: func() []netip.Addr { return e.watcher.DNSServiceIPs() }}
	probers := newProbersGuarded(cfg, rc, budget, guard, resolvers)

	clusterDNS := &probe.ClusterDNSProber{Budget: budget, Conf: rc, ClusterDomain: cfg.ClusterDomain, Resolvers: resolvers}
	schedCfg := probe.SchedulerConfig{
		Interval: cfg.Interval, Timeout: cfg.Timeout, Settle: cfg.Settle,
		// Workers only pace targets; sockets are bounded by the budget's concurrency.
		Workers: max(1, cfg.Concurrency/2),
		ClusterDNS: func(ctx context.Context) probe.ClusterDNSResult {
			return clusterDNS.Probe(ctx, probe.DNSServersFrom(e.watcher.DNSEndpoints()))
		},
	}
	if cfg.nodeMode() {
		// A sample of Services per interval; the hairpin Service (this node's hairpin path) every
		// interval. Cluster DNS runs every interval in both modes.
		schedCfg.SampleSize = cfg.SampleSize
		schedCfg.Always = func(t *discovery.Target) bool { return cfg.HairpinService != "" && t.Key() == cfg.HairpinService }
	}
	if e.scheduler, err = probe.NewScheduler(schedCfg, probers, store, log.With("component", "scheduler")); err != nil {
		return nil, err
	}
	if e.watcher, err = discovery.NewWatcher(client, cfg.discovery(), e.scheduler, log.With("component", "discovery")); err != nil {
		return nil, err
	}
	apiErrors := cfg.apiErrors
	if apiErrors == nil { // a client built elsewhere (tests): the family is there, at 0
		apiErrors = new(atomic.Uint64)
	}
	collector := metrics.NewCollector(metrics.CollectorConfig{
		SeriesPerService: cfg.SeriesPerService, PerEndpoint: cfg.PerEndpoint, PerEndpointLimit: cfg.PerEndpointLimit,
		Expected: cfg.Expected, Node: cfg.nodeLabel(), APIErrors: apiErrors,
	}, store, e.watcher, e.scheduler.Stats(), budget, log)
	e.registry.MustRegister(collector, versioncollector.NewCollector("svcprobe"),
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))

	// The registry's families through expfmt, the per-Service ones written directly (issue 7).
	e.mux.Handle("/metrics", metrics.Handler(e.registry, collector.ServiceFamilies(), log.With("component", "metrics")))
	e.mux.HandleFunc("/-/healthy", func(w http.ResponseWriter, _ *http.Request) { fmt.Fprintln(w, "Healthy") })
	e.mux.HandleFunc("/-/ready", func(w http.ResponseWriter, _ *http.Request) {
		if ok, why := e.ready(); !ok {
			http.Error(w, why, http.StatusServiceUnavailable)
			return
		}
		fmt.Fprintln(w, "Ready")
	})
	if cfg.HairpinIdentity != "" {
		e.mux.Handle(probe.DefaultIdentityPath, probe.IdentityHandler(cfg.HairpinIdentity))
	}
	e.mux.Handle("/", statusweb.New(store, statusweb.Options{
		Ready:    e.ready,
		Expected: cfg.Expected,
		Links:    []statusweb.Link{{Text: "Metrics", Href: "/metrics"}, {Text: "Readiness", Href: "/-/ready"}},
	}))
	return e, nil
}

func readResolvConf(path string) (probe.ResolvConf, error) {
	f, err := os.Open(path)
	if err != nil {
		return probe.ResolvConf{}, fmt.Errorf("--dns.resolv-conf: %w", err)
	}
	defer f.Close()
	rc, err := probe.ParseResolvConf(f)
	if err != nil {
		return probe.ResolvConf{}, fmt.Errorf("--dns.resolv-conf %s: %w", path, err)
	}
	return rc, nil
}

// newProbers builds every stage, in runbook order. The exporter and `svcprobe diagnose` share it:
// there is one implementation of each check.
func newProbers(cfg *config, rc probe.ResolvConf, budget *probe.Budget, resolvers probe.ResolverClassifier) []probe.Prober {
	return newProbersGuarded(cfg, rc, budget, cfg.addressGuard(nil, nil), resolvers)
}

// newProbersGuarded is newProbers with the exporter's AddressGuard, which knows the informers.
func newProbersGuarded(cfg *config, rc probe.ResolvConf, budget *probe.Budget, guard *probe.AddressGuard, resolvers probe.ResolverClassifier) []probe.Prober {
	dialer := &probe.Dialer{Budget: budget, Guard: guard}
	probers := []probe.Prober{
		probe.SpecProber{},
		probe.EndpointsProber{},
		&probe.DNSProber{Budget: budget, Conf: rc, ClusterDomain: cfg.ClusterDomain, Resolvers: resolvers},
		&probe.PodProber{Dialer: dialer, Spread: cfg.PodSpread},
		&probe.ProxyProber{Dialer: dialer, Self: cfg.PodIPs, DNSServers: rc.Servers, NodeName: cfg.NodeName, Connections: cfg.VIPConnections, Timeout: cfg.Timeout},
		&probe.NodePortProber{Dialer: dialer, NodeAddrs: cfg.NodeAddrs, NodeName: cfg.NodeName, Connections: cfg.VIPConnections,
			FromNode: probe.SharesNodeNetwork(cfg.PodIPs, cfg.NodeAddrs)},
	}
	if cfg.HairpinService != "" {
		probers = append(probers, &probe.HairpinProber{Dialer: dialer, Service: cfg.HairpinService, Identity: cfg.HairpinIdentity})
	}
	return probers
}

// ready: informers synced and every known Service probed once.
func (e *exporter) ready() (bool, string) {
	if e.wasReady.Load() {
		return true, ""
	}
	if !e.watcher.Synced() {
		return false, "discovery not synced"
	}
	if n := e.scheduler.Pending(); n > 0 {
		return false, fmt.Sprintf("%d Services not probed yet", n)
	}
	e.wasReady.Store(true)
	return true, ""
}

// run serves until ctx ends, then stops everything within a second.
func run(ctx context.Context, cfg *config, client kubernetes.Interface, webFlags *web.FlagConfig, log *slog.Logger) error {
	e, err := newExporter(cfg, client, log)
	if err != nil {
		return err
	}
	return e.serve(ctx, webFlags, log)
}

func (e *exporter) serve(ctx context.Context, webFlags *web.FlagConfig, log *slog.Logger) error {
	srv := &http.Server{Handler: e.mux, ReadHeaderTimeout: 10 * time.Second}
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error { return e.watcher.Run(gctx) })
	g.Go(func() error { e.scheduler.Run(gctx); return nil })
	g.Go(func() error {
		err := web.ListenAndServe(srv, webFlags, log)
		if errors.Is(err, http.ErrServerClosed) {
			return nil
		}
		return fmt.Errorf("web server: %w", err)
	})
	g.Go(func() error {
		<-gctx.Done()
		sctx, cancel := context.WithTimeout(context.Background(), 800*time.Millisecond)
		defer cancel()
		return srv.Shutdown(sctx)
	})
	err := g.Wait()
	if ctx.Err() != nil && errors.Is(err, context.Canceled) {
		return nil
	}
	return err
}

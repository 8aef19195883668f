// Package pipeline assembles svcprobe's exporter: the probe budget, the SSRF guard, every stage in
// runbook order, the scheduler (cluster DNS, settle, node-mode sampling), the discovery watcher
// that feeds it, the results store, the collector with its registry, and the HTTP handlers.
//
// It is the one assembly: cmd/exporter fills Config from its flags and serves the Pipeline, the
// bench (bench/) fills Config with its own settings (budgets, address ranges, a fake clientset) and
// measures the same Pipeline, and `svcprobe diagnose` runs the same stages (NewProbers). A
// pipeline wired anywhere else is a copy that drifts: TestDefaultWiring (here) pins what New wires
// from Defaults, TestFlagDefaultsArePipelineDefaults (cmd/exporter) that the flags default to
// Defaults, and TestBenchBuildsTheExporterPipeline and TestBenchHasNoSecondAssembly (bench) that
// the bench changes nothing but its own settings and builds nothing itself.
package pipeline

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"net/netip"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	versioncollector "github.com/prometheus/client_golang/prometheus/collectors/version"
	"golang.org/x/sync/errgroup"
	"k8s.io/client-go/kubernetes"

	"github.com/svcprobe/svcprobe/discovery"
	"github.com/svcprobe/svcprobe/metrics"
	"github.com/svcprobe/svcprobe/probe"
	statusweb "github.com/svcprobe/svcprobe/web"
)

// The modes (--mode).
const (
	// ModeCentral probes every Service every interval (one exporter, or one per shard).
	ModeCentral = "central"
	// ModeNode is a node agent (DaemonSet): a sample of Services per interval, metrics labelled
	// with the node's name.
	ModeNode = "node"
)

// What a node agent watches of the Pods (--node.pods).
const (
	// NodePodsNode watches the Pods of the agent's node only (a field selector on spec.nodeName):
	// the API server sends each agent its node's Pod events, as it does a kubelet.
	NodePodsNode = "node"
	// NodePodsAll watches every Pod of the watched namespaces: NetworkPolicies that select Pods by
	// label are evaluated for endpoints on every node, at one cluster-wide Pod watch per agent.
	NodePodsAll = "all"
)

// Config is everything the pipeline is built from. cmd/exporter fills it from its flags (the
// comments name them); Defaults is what it holds when no flag is given.
type Config struct {
	// Discovery: which Services this replica watches.
	Namespaces        []string // --namespaces (empty: all)
	NamespacesExclude []string // --namespaces-exclude
	Selector          string   // --selector
	Shard             int      // --shard
	TotalShards       int      // --total-shards
	DNSService        string   // --dns.service (namespace/name)
	Workloads         bool     // --discovery.workloads
	NetworkPolicies   bool     // --discovery.network-policies

	// Probing and budgets.
	Interval          time.Duration     // --probe.interval
	Timeout           time.Duration     // --probe.timeout
	Settle            time.Duration     // --probe.settle
	Programming       probe.Programming // --probe.programming.cadence, --probe.programming.ceiling
	PodSpread         int               // --probe.pod.spread
	VIPConnections    int               // --probe.vip-connections
	Window            int               // --verdict.window
	Concurrency       int               // --probe.concurrency (lowered to fit RLIMIT_NOFILE)
	NewConnsPerSecond float64           // --probe.max-new-conns-per-second
	DNSQPS            float64           // --dns.max-qps

	// DNS.
	ResolvConf    probe.ResolvConf // --dns.resolv-conf, parsed
	ClusterDomain string           // --dns.cluster-domain
	NodeLocalDNS  []netip.Addr     // --dns.node-local

	// This Pod and its node.
	HairpinService  string       // --hairpin.service (empty: no hairpin stage)
	HairpinIdentity string       // --hairpin.identity
	PodIPs          []netip.Addr // --pod.ip
	Mode            string       // --mode: ModeCentral or ModeNode
	NodeName        string       // --node-name
	NodeAddrs       []netip.Addr // --node.address (empty: NodePorts are not dialed)
	SampleSize      int          // --node.sample-size (node mode)
	NodeMaxFailing  int          // --node.max-failing-services (node mode)
	NodePods        string       // --node.pods: NodePodsNode or NodePodsAll (node mode)

	// The address guard (probe.AddressGuard).
	ClusterCIDRs  []netip.Prefix // --cluster.cidr
	AllowExternal []netip.Prefix // --probe.allow-external

	// Metrics.
	Expected         []metrics.Expected // --expect, --config.file
	SeriesPerService int                // --metrics.max-series-per-service
	PerEndpoint      bool               // --metrics.per-endpoint
	PerEndpointLimit int                // --metrics.per-endpoint-limit
	// APIErrors counts failed API requests (the exporter's client transport); nil: a counter of
	// its own that stays at 0 (a client built elsewhere: tests, the bench's fake clientset).
	APIErrors *atomic.Uint64
}

// Defaults returns the configuration of an exporter started without flags (cmd/exporter takes its
// flags' defaults from here). ResolvConf is left empty: the exporter reads /etc/resolv.conf.
func Defaults() Config {
	return Config{
		TotalShards: 1, DNSService: "kube-system/kube-dns", Workloads: true, NetworkPolicies: true,
		Interval: 15 * time.Second, Timeout: 2 * time.Second, Settle: 3 * time.Second, Programming: probe.DefaultProgramming,
		PodSpread: 1, VIPConnections: probe.DefaultConnections, Window: metrics.DefaultWindow,
		Concurrency: 64, NewConnsPerSecond: 1000, DNSQPS: 400,
		ClusterDomain: "cluster.local",
		Mode:          ModeCentral, SampleSize: 50, NodeMaxFailing: metrics.DefaultNodeMaxFailing, NodePods: NodePodsNode,
		SeriesPerService: metrics.DefaultSeriesPerService, PerEndpointLimit: 10,
	}
}

// NodeMode reports whether the pipeline is a node agent's.
func (c Config) NodeMode() bool { return c.Mode == ModeNode }

// NodeLabel is the value of the node label: the node's name in node mode, "" (no label) otherwise.
func (c Config) NodeLabel() string {
	if c.NodeMode() {
		return c.NodeName
	}
	return ""
}

// DiscoveryConfig is the watcher's part of the configuration.
func (c Config) DiscoveryConfig() discovery.Config {
	return discovery.Config{
		Namespaces: c.Namespaces, NamespacesExclude: c.NamespacesExclude, Selector: c.Selector,
		Shard: c.Shard, TotalShards: c.TotalShards, DNSService: c.DNSService, Workloads: c.Workloads,
		NetworkPolicies: c.NetworkPolicies, SelfIPs: c.PodIPs, PodsOnNode: c.podsOnNode(),
	}
}

// podsOnNode is the node whose Pods alone discovery watches: a node agent's own, unless
// --node.pods=all.
func (c Config) podsOnNode() string {
	if c.NodeMode() && c.NodePods != NodePodsAll {
		return c.NodeName
	}
	return ""
}

// AddressGuard builds the SSRF guard; known is what the informers know (nil in a one-shot
// diagnose, which then trusts the target's own ClusterIPs and selected Pods).
func (c Config) AddressGuard(known func(netip.Addr) bool, log *slog.Logger) *probe.AddressGuard {
	return &probe.AddressGuard{ClusterCIDRs: c.ClusterCIDRs, AllowExternal: c.AllowExternal, NodeAddrs: c.NodeAddrs, Known: known, Log: log}
}

// Resolvers classifies the resolv.conf nameservers; serviceIPs returns the cluster DNS Service's
// ClusterIPs (the informers' view in the pipeline).
func (c Config) Resolvers(serviceIPs func() []netip.Addr) probe.ResolverClassifier {
	return probe.ResolverClassifier{NodeLocal: c.NodeLocalDNS, ServiceIPs: serviceIPs}
}

// NewBudget is the probes' budget: --probe.concurrency lowered to fit RLIMIT_NOFILE, the
// connection and DNS query rates.
func (c Config) NewBudget(log *slog.Logger) (*probe.Budget, error) {
	return probe.NewBudget(probe.BudgetConfig{Concurrency: fitConcurrency(c.Concurrency, log), DNSQPS: c.DNSQPS, NewConnsPerSecond: c.NewConnsPerSecond})
}

// Workers is how many targets the scheduler probes at once for a --probe.concurrency: workers
// only pace targets, sockets are bounded by the budget's concurrency.
func Workers(concurrency int) int { return max(1, concurrency/2) }

// NewProbers builds every stage, in runbook order, each dialing through guard. The pipeline and
// `svcprobe diagnose` share it: there is one implementation of each check and one list of them.
func NewProbers(cfg Config, budget *probe.Budget, guard *probe.AddressGuard, resolvers probe.ResolverClassifier) []probe.Prober {
	dialer := &probe.Dialer{Budget: budget, Guard: guard}
	rc := cfg.ResolvConf
	probers := []probe.Prober{
		probe.SpecProber{},
		probe.EndpointsProber{},
		&probe.DNSProber{Budget: budget, Conf: rc, ClusterDomain: cfg.ClusterDomain, Resolvers: resolvers},
		&probe.PodProber{Dialer: dialer, Spread: cfg.PodSpread},
		&probe.ProxyProber{Dialer: dialer, Self: cfg.PodIPs, DNSServers: rc.Servers, NodeName: cfg.NodeName, Connections: cfg.VIPConnections, Timeout: cfg.Timeout},
		&probe.NodePortProber{Dialer: dialer, NodeAddrs: cfg.NodeAddrs, NodeName: cfg.NodeName, Connections: cfg.VIPConnections,
			FromNode: probe.SharesNodeNetwork(cfg.PodIPs, cfg.NodeAddrs)},
		&probe.LoadBalancerProber{Dialer: dialer, NodeName: cfg.NodeName, Connections: cfg.VIPConnections},
	}
	if cfg.HairpinService != "" {
		probers = append(probers, &probe.HairpinProber{Dialer: dialer, Service: cfg.HairpinService, Identity: cfg.HairpinIdentity})
	}
	return probers
}

// Pipeline is the wired exporter: discovery -> scheduler -> probes -> store -> collector, and the
// handlers that serve it. New starts nothing; Run runs discovery and the scheduler.
type Pipeline struct {
	Config          Config
	Budget          *probe.Budget
	Guard           *probe.AddressGuard // every stage's Dialer dials through it
	Probers         []probe.Prober
	SchedulerConfig probe.SchedulerConfig // what the scheduler was built with
	Scheduler       *probe.Scheduler
	Watcher         *discovery.Watcher // its sink is Scheduler
	Store           *metrics.Store
	Collector       *metrics.Collector
	Registry        *prometheus.Registry
	// Handler serves /metrics, /-/healthy, /-/ready, /-/identity (with a hairpin identity) and
	// the status page on /.
	Handler http.Handler

	// wasReady latches the first time Ready holds: after that a new Service waiting for its first
	// probe must not take the exporter out of its Service's endpoints (in a busy cluster that would
	// flap readiness at every Service created).
	wasReady atomic.Bool
}

// New wires the components. It starts nothing.
func New(cfg Config, client kubernetes.Interface, log *slog.Logger) (*Pipeline, error) {
	budget, err := cfg.NewBudget(log)
	if err != nil {
		return nil, err
	}
	store := metrics.NewStore()
	store.SetWindow(cfg.Window)
	p := &Pipeline{Config: cfg, Budget: budget, Store: store, Registry: prometheus.NewRegistry()}
	// The guard asks the watcher (built below, before anything runs) which addresses it knows.
	p.Guard = cfg.AddressGuard(func(a netip.Addr) bool { return p.Watcher.KnownAddress(a) }, log.With("component", "guard"))
	// The nameservers are told apart by the DNS Service's ClusterIPs as the informers know them.
	resolvers := cfg.Resolvers(func() []netip.Addr { return p.Watcher.DNSServiceIPs() })
	p.Probers = NewProbers(cfg, budget, p.Guard, resolvers)

	clusterDNS := &probe.ClusterDNSProber{Budget: budget, Conf: cfg.ResolvConf, ClusterDomain: cfg.ClusterDomain, Resolvers: resolvers}
	p.SchedulerConfig = probe.SchedulerConfig{
		Interval: cfg.Interval, Timeout: cfg.Timeout, Settle: cfg.Settle, Programming: cfg.Programming,
		Workers: Workers(cfg.Concurrency),
		ClusterDNS: func(ctx context.Context) probe.ClusterDNSResult {
			return clusterDNS.Probe(ctx, probe.DNSServersFrom(p.Watcher.DNSEndpoints()))
		},
	}
	if cfg.NodeMode() {
		// A sample of Services per interval; the hairpin Service (this node's hairpin path) every
		// interval. Cluster DNS runs every interval in both modes.
		p.SchedulerConfig.SampleSize = cfg.SampleSize
		p.SchedulerConfig.Always = func(t *discovery.Target) bool { return cfg.HairpinService != "" && t.Key() == cfg.HairpinService }
	}
	if p.Scheduler, err = probe.NewScheduler(p.SchedulerConfig, p.Probers, store, log.With("component", "scheduler")); err != nil {
		return nil, err
	}
	if p.Watcher, err = discovery.NewWatcher(client, cfg.DiscoveryConfig(), p.Scheduler, log.With("component", "discovery")); err != nil {
		return nil, err
	}
	apiErrors := cfg.APIErrors
	if apiErrors == nil { // a client built elsewhere: the family is there, at 0
		apiErrors = new(atomic.Uint64)
	}
	p.Collector = metrics.NewCollector(metrics.CollectorConfig{
		SeriesPerService: cfg.SeriesPerService, PerEndpoint: cfg.PerEndpoint, PerEndpointLimit: cfg.PerEndpointLimit,
		NodeMaxFailing: cfg.NodeMaxFailing,
		Expected:       cfg.Expected, Node: cfg.NodeLabel(), APIErrors: apiErrors,
	}, store, p.Watcher, p.Scheduler.Stats(), budget, log)
	p.Registry.MustRegister(p.Collector, versioncollector.NewCollector("svcprobe"),
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))

	mux := http.NewServeMux()
	// The registry's families through expfmt, the per-Service ones written directly (issue 7).
	mux.Handle("/metrics", metrics.Handler(p.Registry, p.Collector.ServiceFamilies(), log.With("component", "metrics")))
	mux.HandleFunc("/-/healthy", func(w http.ResponseWriter, _ *http.Request) { fmt.Fprintln(w, "Healthy") })
	mux.HandleFunc("/-/ready", func(w http.ResponseWriter, _ *http.Request) {
		if ok, why := p.Ready(); !ok {
			http.Error(w, why, http.StatusServiceUnavailable)
			return
		}
		fmt.Fprintln(w, "Ready")
	})
	if cfg.HairpinIdentity != "" {
		mux.Handle(probe.DefaultIdentityPath, probe.IdentityHandler(cfg.HairpinIdentity))
	}
	mux.Handle("/", statusweb.New(store, statusweb.Options{
		Ready:    p.Ready,
		Expected: cfg.Expected,
		Links:    []statusweb.Link{{Text: "Metrics", Href: "/metrics"}, {Text: "Readiness", Href: "/-/ready"}},
	}))
	p.Handler = mux
	return p, nil
}

// Ready reports whether the informers synced and every known Service was probed once; after
// the first time it holds, it holds for good.
func (p *Pipeline) Ready() (bool, string) {
	if p.wasReady.Load() {
		return true, ""
	}
	if !p.Watcher.Synced() {
		return false, "discovery not synced"
	}
	if n := p.Scheduler.Pending(); n > 0 {
		return false, fmt.Sprintf("%d Services not probed yet", n)
	}
	p.wasReady.Store(true)
	return true, ""
}

// Run runs discovery and the scheduler until ctx ends (or discovery fails, which stops both).
// The handlers serve whatever the store holds whether Run runs or not.
func (p *Pipeline) Run(ctx context.Context) error {
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error { return p.Watcher.Run(gctx) })
	g.Go(func() error { p.Scheduler.Run(gctx); return nil })
	return g.Wait()
}

package main

import (
	"context"
	"go/ast"
	"go/parser"
	"go/token"
	"io"
	"log/slog"
	"net/netip"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	kruntime "k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes/fake"

	"github.com/svcprobe/svcprobe/discovery"
	"github.com/svcprobe/svcprobe/pipeline"
	"github.com/svcprobe/svcprobe/probe"
)

// benchSubstitutions are the pipeline.Config fields the bench may set (benchConfig.pipelineConfig);
// every other field must be the exporter's default. Add one here only for a setting the bench
// cannot do without, and say why in bench/README.md.
var benchSubstitutions = []string{
	"Interval", "Timeout", "Concurrency", "NewConnsPerSecond", "DNSQPS", "PodSpread", "VIPConnections", // the bench's flags
	"ResolvConf",   // a Pod's, naming the serve child's DNS server
	"ClusterCIDRs", // benchClusterCIDRs: the bench's address plan
}

// The bench measures what ships: the scale runs' pipeline (newBenchPipeline, what runScale
// builds) is the exporter's (pipeline.New) from the exporter's default configuration, changed only
// in the settings the bench must set, and it has the same wiring as the exporter without flags:
// every stage (nodeport included) in the same order, the network stages through the budget and
// the address guard, the settle delay, cluster DNS, the workload and NetworkPolicy informers. The
// guard lets through exactly the bench's address plan. Fails when the bench drifts from the
// exporter (a setting changed behind its back, a stage dialing around the guard, a second
// assembly).
func TestBenchBuildsTheExporterPipeline(t *testing.T) {
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	rc := mustResolvConf()
	ports := Ports{Pod: 8080, Service: 80}
	const n, eps = 20, 10
	objs := []kruntime.Object{}
	for i := range n {
		objs = append(objs, benchService(i, ports), benchSlice(i, eps, ports))
	}
	dsvc, dsl := dnsObjects()
	objs = append(objs, dsvc, dsl)

	defaults := pipeline.Defaults()
	defaults.ResolvConf = rc
	exporter, err := pipeline.New(defaults, fake.NewClientset(), log)
	if err != nil {
		t.Fatal(err)
	}
	defer stopPipeline(exporter)
	want := exporter.Wiring()

	// The orchestrator's runs (bench/main.go): the scales, --probe.pod.spread=5, --probe.vip-connections=1.
	for _, cfg := range []benchConfig{
		{Interval: 15 * time.Second, Timeout: 2 * time.Second, Concurrency: 64, NewConnsPerSecond: 11000, DNSQPS: 3000, PodSpread: 1, VIPConnections: probe.DefaultConnections},
		{Interval: 15 * time.Second, Timeout: 2 * time.Second, Concurrency: 64, NewConnsPerSecond: 11000, DNSQPS: 3000, PodSpread: 5, VIPConnections: probe.DefaultConnections},
		{Interval: 15 * time.Second, Timeout: 2 * time.Second, Concurrency: 64, NewConnsPerSecond: 11000, DNSQPS: 3000, PodSpread: 1, VIPConnections: 1},
	} {
		p, err := newBenchPipeline(cfg, rc, fake.NewClientset(objs...), log)
		if err != nil {
			t.Fatal(err)
		}
		defer stopPipeline(p)

		// Only the bench's own settings differ from the exporter's defaults.
		gv, dv := reflect.ValueOf(p.Config), reflect.ValueOf(pipeline.Defaults())
		for i := range gv.NumField() {
			name := gv.Type().Field(i).Name
			if !slices.Contains(benchSubstitutions, name) && !reflect.DeepEqual(gv.Field(i).Interface(), dv.Field(i).Interface()) {
				t.Errorf("%+v: the bench sets %s to %#v, the exporter's default is %#v (a setting the bench must not change; if it must, list it in benchSubstitutions)",
					cfg, name, gv.Field(i).Interface(), dv.Field(i).Interface())
			}
		}
		// The same wiring as the exporter's.
		if got := p.Wiring(); !reflect.DeepEqual(got, want) {
			t.Errorf("%+v: the bench's pipeline is not wired as the exporter's:\n bench    %+v\n exporter %+v", cfg, got, want)
		}
		// Served as the exporter serves it: one handler with /metrics.
		if p.Handler == nil || p.Scheduler == nil || p.Watcher == nil || p.Store == nil {
			t.Errorf("%+v: incomplete pipeline", cfg)
		}

		// The guard: the bench's endpoints (no Pod objects: allowed by --cluster.cidr), the DNS
		// Pod and the Services' own ClusterIPs pass; nothing outside the bench's plan does.
		for _, i := range []int{0, n - 1} {
			sl, _ := discovery.TrimEndpointSlice(benchSlice(i, eps, ports))
			tg := discovery.BuildTarget(benchService(i, ports), []*discoveryv1.EndpointSlice{sl.(*discoveryv1.EndpointSlice)}, []*corev1.Pod(nil))
			for _, a := range append([]netip.Addr{clusterIP(i)}, endpointIP(i, 0, eps), endpointIP(i, eps-1, eps)) {
				if !p.Guard.Allowed(tg, a) {
					t.Errorf("the guard refuses %s of %s: the bench's Services would be refused, not probed", a, tg.Key())
				}
			}
		}
		for _, a := range []netip.Addr{endpointIP(10000, 9, 10), endpointIP(1000, 49, 50), netip.MustParseAddr(dnsPodIP)} {
			if !p.Guard.Allowed(nil, a) {
				t.Errorf("the guard refuses %s, in the bench's address plan", a)
			}
		}
		for _, s := range []string{"127.0.0.1", "127.16.0.1", "169.254.169.254", "10.0.0.1", "192.0.2.1"} {
			if p.Guard.Allowed(nil, netip.MustParseAddr(s)) {
				t.Errorf("the guard allows %s, outside the bench's address plan: is it still guarding?", s)
			}
		}
	}
}

// The bench assembles no pipeline of its own: outside tests it names no scheduler, watcher, store,
// collector, budget, guard or stage but through package pipeline (pipeline.New for the scale runs;
// Config.NewBudget, Config.AddressGuard, Config.Resolvers and NewProbers for the cost runs' stages),
// and writes no pipeline.Config literal (it starts from pipeline.Defaults()). A copy of the
// exporter's wiring fails here.
func TestBenchHasNoSecondAssembly(t *testing.T) {
	forbidden := map[string][]string{
		"probe": {"NewBudget", "BudgetConfig", "NewScheduler", "SchedulerConfig", "Dialer", "AddressGuard", "ResolverClassifier",
			"ClusterDNSProber", "SpecProber", "EndpointsProber", "DNSProber", "PodProber", "ProxyProber", "NodePortProber", "HairpinProber"},
		"discovery": {"NewWatcher", "Config"},
		"metrics":   {"NewStore", "NewCollector", "CollectorConfig", "Handler"},
	}
	files, err := filepath.Glob("*.go")
	if err != nil {
		t.Fatal(err)
	}
	fset := token.NewFileSet()
	checked := 0
	for _, name := range files {
		if strings.HasSuffix(name, "_test.go") {
			continue
		}
		f, err := parser.ParseFile(fset, name, nil, 0)
		if err != nil {
			t.Fatal(err)
		}
		checked++
		ast.Inspect(f, func(n ast.Node) bool {
			switch n := n.(type) {
			case *ast.SelectorExpr:
				if pkg, ok := n.X.(*ast.Ident); ok && slices.Contains(forbidden[pkg.Name], n.Sel.Name) {
					t.Errorf("%s: %s.%s: the bench builds the exporter's parts itself; build them with package pipeline",
						fset.Position(n.Pos()), pkg.Name, n.Sel.Name)
				}
			case *ast.CompositeLit:
				if sel, ok := n.Type.(*ast.SelectorExpr); ok && sel.Sel.Name == "Config" {
					if pkg, ok := sel.X.(*ast.Ident); ok && pkg.Name == "pipeline" {
						t.Errorf("%s: a pipeline.Config literal: start from pipeline.Defaults() (benchConfig.pipelineConfig)", fset.Position(n.Pos()))
					}
				}
			}
			return true
		})
	}
	if checked < 5 {
		t.Fatalf("only %d files checked", checked)
	}
}

// stopPipeline releases a pipeline that was built and never run (its watcher's queue).
func stopPipeline(p *pipeline.Pipeline) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_ = p.Run(ctx)
}

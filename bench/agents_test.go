package main

import (
	"context"
	"io"
	"log/slog"
	"net/netip"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"

	"github.com/svcprobe/svcprobe/discovery"
	"github.com/svcprobe/svcprobe/pipeline"
	"github.com/svcprobe/svcprobe/probe"
)

// opened lists the list and watch requests a fake clientset saw, as "verb resource namespace
// labels fields", sorted and deduplicated.
func opened(c *fake.Clientset) []string {
	var out []string
	for _, a := range c.Actions() {
		var r k8stesting.ListRestrictions
		switch a := a.(type) {
		case k8stesting.ListAction:
			r = a.GetListRestrictions()
		case k8stesting.WatchAction:
			wr := a.GetWatchRestrictions()
			r = k8stesting.ListRestrictions{Labels: wr.Labels, Fields: wr.Fields}
		default:
			continue
		}
		out = append(out, strings.Join([]string{a.GetVerb(), a.GetResource().Resource, a.GetNamespace(), r.Labels.String(), r.Fields.String()}, " "))
	}
	slices.Sort(out)
	return slices.Compact(out)
}

// The bare informer set the agent's memory is compared with opens exactly what a node agent's
// watcher opens: the same resources, namespaces and selectors. Fails when discovery opens an
// informer more or less (then setWatcher must follow, or the baseline is not the same work).
func TestBareSetOpensWhatTheWatcherOpens(t *testing.T) {
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	ports := Ports{Pod: 8080, Service: 80}
	objs := agentObjects(3, 2, ports)

	agentClient := fake.NewSimpleClientset(objs...)
	cfg := benchConfig{Interval: time.Hour, Timeout: 2 * time.Second, Concurrency: 64, NewConnsPerSecond: 1000, DNSQPS: 400, PodSpread: 1, VIPConnections: probe.DefaultConnections}
	p, err := newBenchNodePipeline(cfg, mustResolvConf(), agentClient, agentNode, pipeline.NodePodsAll, log)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	wctx, wcancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { _ = p.Watcher.Run(wctx); close(done) }() // the watcher only: nothing is probed
	for !p.Watcher.Synced() && ctx.Err() == nil {
		time.Sleep(10 * time.Millisecond)
	}
	time.Sleep(100 * time.Millisecond) // every informer's watch is open once synced; let the last ones register
	wcancel()
	<-done
	if got := p.Watcher.Targets(); got != 4 { // 3 + kube-dns
		t.Errorf("the agent's watcher holds %d Services, want 4", got)
	}

	bareClient := fake.NewSimpleClientset(objs...)
	b := newBareInformers(bareClient, setWatcher)
	bctx, bcancel := context.WithCancel(ctx)
	b.start(bctx)
	if !b.wait(ctx) {
		t.Fatal("bare informers did not sync")
	}
	time.Sleep(100 * time.Millisecond)
	bcancel()
	b.stop()

	want, got := opened(agentClient), opened(bareClient)
	if !reflect.DeepEqual(got, want) {
		t.Errorf("the bare set opens\n  %s\nthe node agent's watcher opens\n  %s", strings.Join(got, "\n  "), strings.Join(want, "\n  "))
	}
	t.Logf("a node agent opens:\n  %s", strings.Join(want, "\n  "))
	if len(want) < 2*3 {
		t.Errorf("the watcher opened only %v", want)
	}
	if n := b.counts()["pods"]; n != 6 {
		t.Errorf("the bare set holds %d Pods, want 6", n)
	}
}

// The two sets of the apiserver runs are subsets of the watcher's, by name.
func TestBareSetsNest(t *testing.T) {
	c := fake.NewSimpleClientset()
	keys := func(set string) []string {
		var k []string
		for name := range newBareInformers(c, set).stores {
			k = append(k, name)
		}
		slices.Sort(k)
		return k
	}
	if got := keys(setServicesSlices); !reflect.DeepEqual(got, []string{"endpointslices", "services"}) {
		t.Errorf("%s opens %v", setServicesSlices, got)
	}
	if got := keys(setServicesSlicesPods); !reflect.DeepEqual(got, []string{"endpointslices", "pods", "services"}) {
		t.Errorf("%s opens %v", setServicesSlicesPods, got)
	}
	if got := keys(setWatcher); len(got) != 11 {
		t.Errorf("%s opens %v, want 11 informers", setWatcher, got)
	}
}

// The node agent's pipeline is the exporter's with --mode=node --node-name: only the bench's
// settings and those two differ from the defaults, and it is wired as an exporter started with
// just those two flags (sampling included).
func TestBenchNodePipelineIsTheExportersNodeMode(t *testing.T) {
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	rc := mustResolvConf()
	def := pipeline.Defaults()
	def.ResolvConf, def.Mode, def.NodeName = rc, pipeline.ModeNode, agentNode
	exporter, err := pipeline.New(def, fake.NewSimpleClientset(), log)
	if err != nil {
		t.Fatal(err)
	}
	defer stopPipeline(exporter)
	cfg := benchConfig{Interval: 15 * time.Second, Timeout: 2 * time.Second, Concurrency: 64, NewConnsPerSecond: 1000, DNSQPS: 400, PodSpread: 1, VIPConnections: probe.DefaultConnections}
	p, err := newBenchNodePipeline(cfg, rc, fake.NewSimpleClientset(), agentNode, pipeline.NodePodsNode, log)
	if err != nil {
		t.Fatal(err)
	}
	defer stopPipeline(p)
	if !p.Config.NodeMode() || p.Config.NodeName != agentNode || p.Config.NodeLabel() != agentNode {
		t.Errorf("not a node agent: mode %q node %q", p.Config.Mode, p.Config.NodeName)
	}
	gv, dv := reflect.ValueOf(p.Config), reflect.ValueOf(pipeline.Defaults())
	for i := range gv.NumField() {
		name := gv.Type().Field(i).Name
		if !slices.Contains(append(benchSubstitutions, "Mode", "NodeName"), name) && !reflect.DeepEqual(gv.Field(i).Interface(), dv.Field(i).Interface()) {
			t.Errorf("the bench's node agent sets %s to %#v, the exporter's default is %#v", name, gv.Field(i).Interface(), dv.Field(i).Interface())
		}
	}
	if got, want := p.Wiring(), exporter.Wiring(); !reflect.DeepEqual(got, want) || !got.Sampling {
		t.Errorf("the bench's node agent is not wired as the exporter's --mode=node:\n bench    %+v\n exporter %+v", got, want)
	}
}

// The agents' objects hang together: each endpoint's Pod exists with the endpoint's address, on
// the endpoint's node, selected by its Service; the Pod trims to what the watcher needs.
func TestAgentObjectsAreConsistent(t *testing.T) {
	ports := Ports{Pod: 8080, Service: 80}
	const n, eps = 3, 4
	pods := map[string]*corev1.Pod{}
	var svcs []*corev1.Service
	var sls []*discoveryv1.EndpointSlice
	for _, o := range agentObjects(n, eps, ports) {
		switch o := o.(type) {
		case *corev1.Pod:
			pods[o.Namespace+"/"+o.Name] = o
		case *corev1.Service:
			svcs = append(svcs, o)
		case *discoveryv1.EndpointSlice:
			sls = append(sls, o)
		}
	}
	if len(pods) != n*eps || len(svcs) != n+1 || len(sls) != n+1 {
		t.Fatalf("%d Pods, %d Services, %d slices", len(pods), len(svcs), len(sls))
	}
	for _, sl := range sls[:n] {
		for _, ep := range sl.Endpoints {
			p := pods[ep.TargetRef.Namespace+"/"+ep.TargetRef.Name]
			if p == nil {
				t.Fatalf("no Pod %s/%s", ep.TargetRef.Namespace, ep.TargetRef.Name)
			}
			if p.Status.PodIP != ep.Addresses[0] || p.Spec.NodeName != *ep.NodeName {
				t.Errorf("Pod %s: IP %s node %s, endpoint %s on %s", p.Name, p.Status.PodIP, p.Spec.NodeName, ep.Addresses[0], *ep.NodeName)
			}
		}
	}
	for i, s := range svcs[:n] {
		for _, p := range pods {
			sel := s.Spec.Selector[selectorLabel]
			if (p.Labels[selectorLabel] == sel) != strings.HasPrefix(p.Name, serviceName(i)+"-") {
				t.Errorf("Service %s selects Pod %s wrongly", s.Name, p.Name)
			}
		}
	}
	// What the watcher keeps of a Pod is a small part of it (the bare set keeps it whole).
	p := benchPod(0, 0, "127.10.0.1")
	trimmed, _ := discovery.TrimPod(p)
	if tp := trimmed.(*corev1.Pod); tp.Status.PodIP != "127.10.0.1" || len(tp.ManagedFields) != 0 || tp.Spec.NodeName == "" {
		t.Errorf("trimmed Pod: %+v", tp)
	}
	if full, small := p.Size(), trimmed.(*corev1.Pod).Size(); small*4 > full {
		t.Errorf("a bench Pod is %d bytes in protobuf, trimmed %d: not the size of a cluster's Pods?", full, small)
	}
}

func TestByVerdictAndFamilies(t *testing.T) {
	body := `# HELP svcprobe_services_by_verdict x
svcprobe_services_by_verdict{layer="ok",node="node-000"} 10001
svcprobe_services_by_verdict{layer="dns",node="node-000"} 0
svcprobe_x_bucket{le="1"} 3
svcprobe_x_bucket{le="+Inf"} 3
go_goroutines 12
`
	if got := byVerdict(body); got["ok"] != 10001 || got["dns"] != 0 || len(got) != 2 {
		t.Errorf("byVerdict: %v", got)
	}
	if got := familyCounts(body); got["svcprobe_x_bucket"] != 2 || got["go_goroutines"] != 1 || got["svcprobe_services_by_verdict"] != 2 {
		t.Errorf("familyCounts: %v", got)
	}
}

func TestStatCPU(t *testing.T) {
	// /proc/<pid>/stat with a command name holding spaces and a parenthesis.
	stat := "4242 (kube apiserver)) S 1 4242 4242 0 -1 4194560 1000 0 0 0 1234 567 0 0 20 0 12 0 100 1000000 5000 18446744073709551615\n"
	if got, want := statCPU(stat), (1234+567)*10*time.Millisecond; got != want {
		t.Errorf("statCPU = %v, want %v", got, want)
	}
	if got := statFields(stat); len(got) < 13 || got[0] != "S" {
		t.Errorf("statFields = %v", got)
	}
	if statCPU("garbage") != 0 {
		t.Error("statCPU of garbage")
	}
}

func TestParseAPIMetrics(t *testing.T) {
	body := `# HELP apiserver_longrunning_requests x
apiserver_longrunning_requests{component="apiserver",group="",resource="pods",scope="cluster",subresource="",verb="WATCH",version="v1"} 201
apiserver_longrunning_requests{component="apiserver",group="discovery.k8s.io",resource="endpointslices",scope="cluster",subresource="",verb="WATCH",version="v1"} 200
apiserver_longrunning_requests{component="apiserver",group="",resource="endpointslices",scope="namespace",subresource="",verb="WATCH",version="v1"} 1
apiserver_longrunning_requests{component="apiserver",group="",resource="pods",scope="namespace",subresource="log",verb="CONNECT",version="v1"} 3
apiserver_watch_events_total{group="",kind="Pod",version="v1"} 1000
apiserver_watch_events_total{group="discovery.k8s.io",kind="EndpointSlice",version="v1"} 5
apiserver_watch_events_sizes_sum{group="",kind="Pod",version="v1"} 4.5e+06
apiserver_watch_events_sizes_bucket{group="",kind="Pod",le="1024",version="v1"} 7
`
	m := parseAPIMetrics(body)
	if m.watches != 402 || m.watchesByResource["pods"] != 201 || m.watchesByResource["endpointslices"] != 201 {
		t.Errorf("watches %v by resource %v", m.watches, m.watchesByResource)
	}
	if m.events != 1005 || m.eventBytes != 4.5e6 {
		t.Errorf("events %v bytes %v", m.events, m.eventBytes)
	}
}

// The apiserver runs' endpoint addresses pass EndpointSlice validation (no loopback) and are
// distinct; nothing dials them.
func TestAPIEndpointIPs(t *testing.T) {
	seen := map[string]bool{}
	for k := range 128000 { // 2 x 256 x 250: what 198.18.0.0/15 holds at 250 a /24
		a, err := netip.ParseAddr(apiEndpointIP(k))
		if err != nil || a.IsLoopback() || !netip.MustParsePrefix("198.18.0.0/15").Contains(a) || seen[a.String()] {
			t.Fatalf("endpoint %d: %s (%v)", k, apiEndpointIP(k), err)
		}
		seen[a.String()] = true
	}
}

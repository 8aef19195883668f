package lab

// Node agent mode end to end: a second node (UpNode2), deploy/node-agent's
// DaemonSet on both nodes, and faults of node-2 only, blamed on node-2 by the
// node-2 agent while the node-1 agent and the central exporter stay ok.

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"slices"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/svcprobe/svcprobe/probe"
	statusweb "github.com/svcprobe/svcprobe/web"
)

// agentView is one scrape of the central exporter and of each node agent.
type agentView struct {
	m map[string]snapshot          // "central", NodeName, Node2Name
	v map[string]map[string]string // verdicts, same keys
}

// hostAgentsUp lists the nodes with a host-network agent (DeployHostNetworkAgent) that
// scrapeAll scrapes too, as source "host:<node>". Set by the test that deploys them.
var hostAgentsUp []string

func scrapeAll(ctx context.Context, cl kubernetes.Interface) (agentView, error) {
	av := agentView{m: map[string]snapshot{}, v: map[string]map[string]string{}}
	sources := []string{"central", NodeName, Node2Name}
	for _, n := range hostAgentsUp {
		sources = append(sources, "host:"+n)
	}
	for _, src := range sources {
		sctx, cancel := context.WithTimeout(ctx, 3*time.Second)
		body, err := scrapeSource(sctx, cl, src, "/metrics")
		cancel()
		if err != nil {
			return av, fmt.Errorf("%s: %w", src, err)
		}
		m, err := parseMetrics(body)
		if err != nil {
			return av, fmt.Errorf("%s: %w", src, err)
		}
		v, err := m.verdicts()
		if err != nil {
			return av, fmt.Errorf("%s: %w", src, err)
		}
		if src != "central" {
			// An agent exports per-Service series only for what fails from its node (bounded by
			// design): every verdict is in its JSON API, and the failing ones must agree.
			api, err := agentVerdicts(ctx, cl, src)
			if err != nil {
				return av, fmt.Errorf("%s: %w", src, err)
			}
			for k, verdict := range v {
				if api[k] != verdict {
					return av, fmt.Errorf("%s: %s is %s on /metrics but %q in its JSON API", src, k, verdict, api[k])
				}
			}
			for k, verdict := range api {
				if _, ok := v[k]; !ok && verdict != "ok/success" && !strings.HasPrefix(verdict, "idle/") && !strings.HasPrefix(verdict, "policy/") {
					return av, fmt.Errorf("%s: %s is %s in its JSON API but has no series on /metrics", src, k, verdict)
				}
			}
			v = api
		}
		av.m[src], av.v[src] = m, v
	}
	return av, nil
}

// scrapeSource GETs path from one exporter as scrapeAll names it: "central", a node name (its
// agent on the Pod network) or "host:<node>" (its host-network agent).
func scrapeSource(ctx context.Context, cl kubernetes.Interface, src, path string) (string, error) {
	switch node, host := strings.CutPrefix(src, "host:"); {
	case src == "central":
		return ScrapeExporter(ctx, path)
	case host:
		return ScrapeHostAgent(ctx, node, path)
	default:
		return ScrapeNodeAgent(ctx, cl, src, path)
	}
}

// agentVerdicts reads every verdict of one agent (src as scrapeAll names it) from its JSON API:
// namespace/name -> layer/reason.
func agentVerdicts(ctx context.Context, cl kubernetes.Interface, src string) (map[string]string, error) {
	sctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	const path = "/api/v1/services?page_size=1000"
	body, err := scrapeSource(sctx, cl, src, path)
	if err != nil {
		return nil, err
	}
	var list struct {
		Services []struct {
			Namespace string `json:"namespace"`
			Name      string `json:"name"`
			Verdict   string `json:"verdict"`
			Reason    string `json:"reason"`
		} `json:"services"`
	}
	if err := json.Unmarshal([]byte(body), &list); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	out := make(map[string]string, len(list.Services))
	for _, s := range list.Services {
		out[s.Namespace+"/"+s.Name] = s.Verdict + "/" + s.Reason
	}
	return out, nil
}

// agentWindowsClean holds when no stage of any Service has a failed round left in either Pod-network
// agent's window (their JSON API): a fault injected then is the only failure its windows see.
func agentWindowsClean(ctx context.Context, cl kubernetes.Interface) func(agentView) error {
	return func(agentView) error {
		var errs []error
		for _, src := range []string{NodeName, Node2Name} {
			sctx, cancel := context.WithTimeout(ctx, 3*time.Second)
			body, err := scrapeSource(sctx, cl, src, "/api/v1/services?page_size=1000")
			cancel()
			if err != nil {
				errs = append(errs, err)
				continue
			}
			var list statusweb.ServiceList
			if err := json.Unmarshal([]byte(body), &list); err != nil {
				errs = append(errs, fmt.Errorf("%s: %w", src, err))
				continue
			}
			for _, svc := range list.Services {
				for _, st := range svc.Stages {
					if st.Window != nil && st.Window.FailedRounds > 0 {
						errs = append(errs, fmt.Errorf("%s: %s/%s stage %s has %d failed round(s) of %d in its window", src, svc.Namespace, svc.Name, st.Stage, st.Window.FailedRounds, st.Window.Rounds))
					}
				}
			}
		}
		return errors.Join(errs...)
	}
}

// agentDetails is what each exporter saw of the Services it does not call ok (its JSON API), for
// the cause of a failure.
func agentDetails(cl kubernetes.Interface, av agentView) string {
	var b strings.Builder
	for src, v := range av.v {
		for key, verdict := range v {
			if verdict == "ok/success" {
				continue
			}
			ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
			path := "/api/v1/services/" + key
			body, err := scrapeSource(ctx, cl, src, path)
			cancel()
			if err != nil {
				body = err.Error()
			}
			fmt.Fprintf(&b, "%s %s (%s):\n%s\n", src, path, verdict, body)
		}
	}
	return b.String()
}

// waitAgents polls every 200ms until check passes (fails the test after
// within); during, if set, must hold at every sample.
func waitAgents(t *testing.T, what string, within time.Duration, check, during func(agentView) error) time.Duration {
	t.Helper()
	start := time.Now()
	var last error
	var lastV agentView
	for {
		av, err := scrapeAll(context.Background(), sharedClient(t))
		if err == nil {
			lastV = av
			if during != nil {
				if err := during(av); err != nil {
					t.Fatalf("%s: after %s: %v\n%s", what, time.Since(start).Round(time.Millisecond), err, formatAgentVerdicts(av))
				}
			}
			if err = check(av); err == nil {
				return time.Since(start)
			}
		}
		last = err
		if time.Since(start) > within {
			t.Fatalf("%s: not seen within %s: %v\n%s%s", what, within, last, formatAgentVerdicts(lastV), agentDetails(sharedClient(t), lastV))
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// settleAgents waits until check has held at every sample for three probe intervals in a row, as
// settle does for the central exporter: right after agents start, a headless Service's DNS
// answer can lag the endpoints the agents already know for a moment (one run saw node-1's agent
// say dns/wrong_answer for svcprobe-node 287ms after "both agents ok"), and a fault injected
// then is measured against that.
func settleAgents(t *testing.T, what string, within time.Duration, check func(agentView) error) time.Duration {
	t.Helper()
	start := time.Now()
	for {
		waitAgents(t, what, within-time.Since(start), check, nil)
		steady := time.Now()
		var err error
		for err == nil && time.Since(steady) < 3*e2eInterval {
			time.Sleep(200 * time.Millisecond)
			var av agentView
			if av, err = scrapeAll(context.Background(), sharedClient(t)); err == nil {
				err = check(av)
			}
		}
		if err == nil {
			return time.Since(start)
		}
		t.Logf("%s: not steady yet: %v", what, err)
	}
}

func sharedClient(t *testing.T) kubernetes.Interface {
	t.Helper()
	shared.mu.Lock()
	defer shared.mu.Unlock()
	return shared.cl
}

func formatAgentVerdicts(av agentView) string {
	var b strings.Builder
	srcs := make([]string, 0, len(av.v))
	for src := range av.v {
		srcs = append(srcs, src)
	}
	sort.Strings(srcs)
	for _, src := range srcs {
		fmt.Fprintf(&b, "%s:%s\n", src, formatVerdicts(av.v[src]))
	}
	return b.String()
}

// agentIs checks want for every Service of the cluster in one source's
// verdicts, but for those of except (key -> verdict wanted instead, "" to
// skip).
func agentIs(ctx context.Context, cl kubernetes.Interface, src, want string, except map[string]string) func(agentView) error {
	return func(av agentView) error {
		svcs, err := cl.CoreV1().Services("").List(ctx, metav1.ListOptions{})
		if err != nil {
			return err
		}
		var errs []error
		for _, s := range svcs.Items {
			key := s.Namespace + "/" + s.Name
			w, ok := except[key]
			if !ok {
				w = want
			}
			if w == "" {
				continue
			}
			if err := wantVerdict(av.v[src], key, w); err != nil {
				errs = append(errs, fmt.Errorf("%s: %w", src, err))
			}
		}
		return errors.Join(errs...)
	}
}

func allAgents(fs ...func(agentView) error) func(agentView) error {
	return func(av agentView) error {
		var errs []error
		for _, f := range fs {
			errs = append(errs, f(av))
		}
		return errors.Join(errs...)
	}
}

// agentsHealthy: every Service ok for both agents, the canary up on both,
// hostnames ok centrally.
func agentsHealthy(ctx context.Context, cl kubernetes.Interface) func(agentView) error {
	return allAgents(
		agentIs(ctx, cl, NodeName, "ok/success", nil),
		agentIs(ctx, cl, Node2Name, "ok/success", nil),
		func(av agentView) error {
			var errs []error
			for _, n := range []string{NodeName, Node2Name} {
				if v, ok := av.m[n].value("svcprobe_cluster_dns_up", "kind", "canary", "node", n); !ok || v != 1 {
					errs = append(errs, fmt.Errorf("%s: svcprobe_cluster_dns_up{kind=canary,node=%s} = %v (present %v), want 1", n, n, v, ok))
				}
			}
			return errors.Join(errs...)
		},
		func(av agentView) error { return wantVerdict(av.v["central"], hostnames, "ok/success") })
}

// seriesKey is a series' identity: its name and labels, sorted.
func seriesKey(s sample) string {
	keys := make([]string, 0, len(s.labels))
	for k := range s.labels {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var b strings.Builder
	b.WriteString(s.name + "{")
	for _, k := range keys {
		fmt.Fprintf(&b, "%s=%q,", k, s.labels[k])
	}
	b.WriteString("}")
	return b.String()
}

// noDuplicateSeries checks that the per-Service series of the central
// exporter carry no node label, each agent's carry its own node, and that
// no svcprobe_ series (instance and job labels aside, as with
// honor_labels: true) appears in two scrapes.
func noDuplicateSeries(av agentView) error {
	seen := map[string]string{}
	var errs []error
	perService := 0
	for _, src := range []string{"central", NodeName, Node2Name} {
		wantNode := src
		if src == "central" {
			wantNode = ""
		}
		for _, s := range av.m[src] {
			if !strings.HasPrefix(s.name, "svcprobe_") {
				continue
			}
			if _, ok := s.labels["service"]; ok {
				perService++
				if s.labels["node"] != wantNode {
					errs = append(errs, fmt.Errorf("%s: %s has node=%q, want %q", src, seriesKey(s), s.labels["node"], wantNode))
				}
			}
			if s.name == "svcprobe_service_verdict" || s.name == "svcprobe_cluster_dns_up" || s.labels["service"] != "" {
				k := seriesKey(s)
				if other, dup := seen[k]; dup {
					errs = append(errs, fmt.Errorf("%s exported by %s and %s", k, other, src))
				}
				seen[k] = src
			}
		}
	}
	if perService == 0 {
		errs = append(errs, errors.New("no per-Service series at all"))
	}
	return errors.Join(errs...)
}

func TestNodeAgents(t *testing.T) {
	cfg, cl := sharedLab(t)
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	defer cancel()
	settle(t, ctx, cl)

	t.Cleanup(func() {
		cctx, ccancel := context.WithTimeout(context.Background(), 3*time.Minute)
		defer ccancel()
		removeNode2(t, cctx, cfg, cl)
	})

	start := time.Now()
	if err := UpNode2(ctx, *cfg); err != nil {
		t.Fatalf("node-2: %v", err)
	}
	t.Logf("node-2 up with its kube-proxy in %s", time.Since(start).Round(time.Millisecond))
	if err := DeployNodeAgents(ctx, *cfg, ExporterOptions{Interval: e2eInterval, Timeout: e2eTimeout}); err != nil {
		t.Fatalf("node agents: %v", err)
	}
	t.Logf("node agents ready on both nodes after %s", time.Since(start).Round(time.Millisecond))

	// The agent of node-2 runs on node-2's bridge, with an address of
	// node-2's /24, and reaches hostnames (Pods on node-1) through node-2's
	// kube-proxy.
	pod2, err := NodeAgentPod(ctx, cl, Node2Name)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(pod2.Status.PodIP, node2.Net3+".") || pod2.Status.HostIP != Node2IP {
		t.Fatalf("node-2's agent has podIP %s hostIP %s, want one in %s and %s", pod2.Status.PodIP, pod2.Status.HostIP, Node2PodCIDR, Node2IP)
	}
	out, err := execInPod(ctx, cfg, pod2, "http-get", "--timeout=2s", "http://hostnames.default.svc."+ClusterDomain+"/")
	if err != nil || !strings.HasPrefix(strings.TrimSpace(out), "hostnames-") {
		t.Fatalf("from node-2's agent Pod, http://hostnames.default/: %q %v", out, err)
	}
	if err := podsOnNode(ctx, cl, "default", "app=hostnames", NodeName); err != nil {
		t.Fatal(err)
	}

	// Three intervals: a verdict needs its stage to fail in two rounds in a row (the window).
	within := 3*e2eInterval + 2*time.Second
	took := settleAgents(t, "both agents ok", 60*time.Second, allAgents(agentsHealthy(ctx, cl), noDuplicateSeries))
	t.Logf("both agents ok after %s", took.Round(10*time.Millisecond))

	// The agents watch their own node's Pods only (--node.pods=node, the default): hostnames'
	// Pods run on node-1, so node-2's agent leaves the spec stage to the central exporter and
	// still dials them (their addresses known from the EndpointSlice, not from a Pod it watches).
	for _, src := range []string{NodeName, Node2Name} {
		if err := agentStages(ctx, cl, src, "default", "hostnames", map[string]string{"spec": "skipped/not_probed", "pod": "ok/success"}); err != nil {
			t.Fatal(err)
		}
	}
	if err := agentStages(ctx, cl, "central", "default", "hostnames", map[string]string{"spec": "ok/success"}); err != nil {
		t.Fatal(err)
	}

	node1OK := agentIs(ctx, cl, NodeName, "ok/success", nil)
	for _, fc := range []struct {
		fault string
		check func(agentView) error
	}{
		{"kube-proxy-down-node2", agentIs(ctx, cl, Node2Name, "proxy/*", nil)},
		{"hairpin-off-node2", agentIs(ctx, cl, Node2Name, "ok/success",
			map[string]string{ExporterNamespace + "/" + NodeAgentHairpin: "hairpin/*"})},
	} {
		f := nodeFault(t, fc.fault)
		// Every window clean first: a failed round still in an agent's window (node-2's first
		// probes before its kube-proxy synced, the previous fault) would make this fault's run
		// the second of the window, a fault that comes and goes, held degraded until it leaves
		// the window; the test is of a fault out of a healthy node, whose end shows at once.
		took := settleAgents(t, "every agent window clean before "+f.Name, 60*time.Second, allAgents(agentsHealthy(ctx, cl), agentWindowsClean(ctx, cl)))
		t.Logf("windows clean before %s after %s", f.Name, took.Round(10*time.Millisecond))
		if err := f.Inject(ctx, cfg, cl); err != nil {
			t.Fatalf("inject %s: %v", f.Name, err)
		}
		took = waitAgents(t, f.Name+": "+f.Expect, within, fc.check,
			allAgents(node1OK, func(av agentView) error { return wantVerdict(av.v["central"], hostnames, "ok/success") }))
		t.Logf("%s: seen after %s (limit %s)", f.Name, took.Round(10*time.Millisecond), within)
		// Two more intervals: node-1's agent and the central exporter stay ok.
		end := time.Now().Add(2 * e2eInterval)
		for time.Now().Before(end) {
			waitAgents(t, f.Name+" steady", 5*time.Second, fc.check, allAgents(node1OK, noDuplicateSeries))
			time.Sleep(200 * time.Millisecond)
		}
		if err := f.Undo(ctx, cfg, cl); err != nil {
			t.Fatalf("undo %s: %v", f.Name, err)
		}
		// node-2's agent lost the API with its kube-proxy (its kubeconfig
		// names the kubernetes VIP): a few seconds more to reconnect.
		took = waitAgents(t, "recovery from "+f.Name, within+5*time.Second, agentsHealthy(ctx, cl), nil)
		t.Logf("%s: recovered after %s", f.Name, took.Round(10*time.Millisecond))
	}

	// NetworkPolicy seen from nodes that do not watch each other's Pods. An allow rule that
	// selects hostnames' Pods by label: node-1's agent (the Pods are its node's) and the central
	// exporter evaluate it and probe through the enforcement; node-2's agent cannot know those
	// Pods' labels, so it does not dial them and blames nothing (pod stage policy_not_evaluated).
	// A default-deny alone selects every Pod whatever its labels: node-2's agent evaluates it and
	// says policy, as the others do.
	allow, err := shippedAllowPolicy(cfg)
	if err != nil {
		t.Fatal(err)
	}
	allow.Spec.PodSelector = metav1.LabelSelector{MatchLabels: map[string]string{"app": "hostnames"}}
	t.Cleanup(func() {
		cctx, ccancel := context.WithTimeout(context.Background(), time.Minute)
		defer ccancel()
		if err := removePolicies(cctx, cfg, cl); err != nil {
			t.Errorf("remove the policies: %v", err)
		}
	})
	for _, pc := range []struct {
		name        string
		policies    []*networkingv1.NetworkPolicy
		all, node2  string // hostnames' verdict centrally and from node-1; from node-2
		node2Stages map[string]string
	}{
		{"allow by Pod label", []*networkingv1.NetworkPolicy{defaultDeny(), allow}, "ok/success", "ok/success",
			map[string]string{"pod": "skipped/policy_not_evaluated", "proxy": "skipped/policy_not_evaluated"}},
		{"default deny", []*networkingv1.NetworkPolicy{defaultDeny()}, "policy/denied_by_network_policy", "policy/denied_by_network_policy",
			map[string]string{"pod": "skipped/denied_by_network_policy"}},
	} {
		if err := removePolicies(ctx, cfg, cl); err != nil {
			t.Fatal(err)
		}
		if err := applyPolicies(ctx, cfg, cl, pc.policies...); err != nil {
			t.Fatalf("%s: %v", pc.name, err)
		}
		took := waitAgents(t, pc.name, within, func(av agentView) error {
			return errors.Join(wantVerdict(av.v["central"], hostnames, pc.all), wantVerdict(av.v[NodeName], hostnames, pc.all),
				wantVerdict(av.v[Node2Name], hostnames, pc.node2),
				agentStages(ctx, cl, Node2Name, "default", "hostnames", pc.node2Stages))
		}, nil)
		t.Logf("policies %s: seen after %s (limit %s)", pc.name, took.Round(10*time.Millisecond), within)
	}
	if err := removePolicies(ctx, cfg, cl); err != nil {
		t.Fatal(err)
	}
	took = waitAgents(t, "recovery from the policies", within, agentsHealthy(ctx, cl), nil)
	t.Logf("policies removed: recovered after %s", took.Round(10*time.Millisecond))

	// NodePort from the node itself (issue 9): a host-network agent on node-2 next to its
	// Pod-network agent. node-2 refusing its own connections to its NodePort is blamed by the
	// host agent alone, with the reason of its own; the Pod-network agents and the central
	// exporter reach the same NodePort and stay ok.
	if _, err := EnsureNodePortService(ctx, cl); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cctx, ccancel := context.WithTimeout(context.Background(), time.Minute)
		defer ccancel()
		hostAgentsUp = nil
		if err := DeleteHostNetworkAgent(cctx, *cfg, Node2Name); err != nil {
			t.Errorf("delete the host-network agent: %v", err)
		}
		if err := cl.CoreV1().Services("default").Delete(cctx, NodePortService, metav1.DeleteOptions{}); err != nil {
			t.Errorf("delete default/%s: %v", NodePortService, err)
		}
	})
	if err := DeployHostNetworkAgent(ctx, *cfg, ExporterOptions{Interval: e2eInterval, Timeout: e2eTimeout}, Node2Name); err != nil {
		t.Fatal(err)
	}
	hostAgentsUp = []string{Node2Name}
	host2 := "host:" + Node2Name
	hostOK := agentIs(ctx, cl, host2, "ok/success", nil)
	took = settleAgents(t, "host-network agent ok", 60*time.Second, allAgents(agentsHealthy(ctx, cl), hostOK))
	t.Logf("host-network agent on node-2 ok after %s", took.Round(10*time.Millisecond))
	// Its JSON API says it probed the NodePort (from node-2's own address) and succeeded.
	if err := agentStageOK(ctx, cl, host2, "default", NodePortService, "nodeport"); err != nil {
		t.Fatalf("host-network agent: %v", err)
	}
	f := nodeFault(t, "nodeport-from-node2")
	if err := f.Inject(ctx, cfg, cl); err != nil {
		t.Fatalf("inject %s: %v", f.Name, err)
	}
	npKey := "default/" + NodePortService
	took = waitAgents(t, f.Name+": "+f.Expect, within,
		agentIs(ctx, cl, host2, "ok/success", map[string]string{npKey: "proxy/nodeport_unreachable_from_node"}),
		allAgents(node1OK, agentIs(ctx, cl, Node2Name, "ok/success", nil), func(av agentView) error {
			return wantVerdict(av.v["central"], npKey, "ok/success")
		}))
	t.Logf("%s: seen after %s (limit %s)", f.Name, took.Round(10*time.Millisecond), within)
	if err := f.Undo(ctx, cfg, cl); err != nil {
		t.Fatalf("undo %s: %v", f.Name, err)
	}
	took = waitAgents(t, "recovery from "+f.Name, within, allAgents(agentsHealthy(ctx, cl), hostOK), nil)
	t.Logf("%s: recovered after %s", f.Name, took.Round(10*time.Millisecond))

	nodeAgentsHealthCheck(t, ctx, cfg, cl, host2, within)
}

// nodeAgentsHealthCheck (issue 18): externalTrafficPolicy Local. default/hostnames-local has its one
// endpoint on node-2; kube-proxy answers its healthCheckNodePort with 200 on node-2 and 503 on
// node-1 (the lab asks both itself). node-2's agents (Pod network and host network) probe the
// NodePort and the health check on their node: ok. node-1's agent and the central exporter have
// no local endpoint: node-1's agent asks only the health check, which must not say 200 (the
// central exporter knows no node), ok. With node-2 rejecting connections to the health check
// port, node-2's agents say proxy/health_check_failing for hostnames-local, everyone else ok;
// with node-1's health check port answering 200, node-1's agent says proxy/health_check_stale;
// after each undo, ok again.
func nodeAgentsHealthCheck(t *testing.T, ctx context.Context, cfg *Config, cl kubernetes.Interface, host2 string, within time.Duration) {
	t.Helper()
	hc, err := EnsureLocalLBService(ctx, cl)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cctx, ccancel := context.WithTimeout(context.Background(), time.Minute)
		defer ccancel()
		if err := DeleteLocalLBService(cctx, cl); err != nil {
			t.Errorf("delete default/%s: %v", LocalLBService, err)
		}
	})
	key := "default/" + LocalLBService
	for _, c := range []struct {
		node labNode
		want int
	}{{node2, 200}, {node1, 503}} {
		if err := waitFor(ctx, 30*time.Second, "kube-proxy's health check of "+key+" on "+c.node.Name, func() error {
			code, err := NodeHealthCheck(ctx, c.node, hc)
			if err == nil && code != c.want {
				err = fmt.Errorf("HTTP %d, want %d", code, c.want)
			}
			return err
		}); err != nil {
			t.Fatal(err)
		}
	}
	// Every agent's nodeport stage of hostnames-local is ok: node-2's by the NodePort and a 200
	// from the health check, node-1's (no local endpoint, the NodePort not dialed) by a health
	// check that does not say 200.
	okStages := map[string]string{"nodeport": "ok/success"}
	others := func(av agentView) error {
		return errors.Join(wantVerdict(av.v["central"], key, "ok/success"), wantVerdict(av.v[NodeName], key, "ok/success"),
			agentStages(ctx, cl, NodeName, "default", LocalLBService, okStages), agentHealthChecked(ctx, cl, NodeName, hc))
	}
	took := settleAgents(t, key+" ok everywhere, its health check asked on both nodes", 60*time.Second, allAgents(agentsHealthy(ctx, cl), func(av agentView) error {
		return errors.Join(others(av), agentStages(ctx, cl, Node2Name, "default", LocalLBService, okStages),
			agentStages(ctx, cl, host2, "default", LocalLBService, okStages), agentHealthChecked(ctx, cl, Node2Name, hc))
	}))
	t.Logf("%s ok on every agent after %s", key, took.Round(10*time.Millisecond))

	f := nodeFault(t, healthCheckFault.Name)
	took = settleAgents(t, "every agent window clean before "+f.Name, 60*time.Second, allAgents(agentsHealthy(ctx, cl), agentWindowsClean(ctx, cl)))
	t.Logf("windows clean before %s after %s", f.Name, took.Round(10*time.Millisecond))
	if err := f.Inject(ctx, cfg, cl); err != nil {
		t.Fatalf("inject %s: %v", f.Name, err)
	}
	broken := "proxy/" + string(probe.ReasonHealthCheckFailing)
	took = waitAgents(t, f.Name+": "+f.Expect, within,
		allAgents(agentIs(ctx, cl, Node2Name, "ok/success", map[string]string{key: broken}),
			agentIs(ctx, cl, host2, "ok/success", map[string]string{key: broken})),
		allAgents(agentIs(ctx, cl, NodeName, "ok/success", nil), others))
	t.Logf("%s: seen after %s (limit %s)", f.Name, took.Round(10*time.Millisecond), within)
	if code, err := NodeHealthCheck(ctx, node2, hc); err == nil {
		t.Fatalf("%s: node-2's health check still answers (HTTP %d)", f.Name, code)
	}
	// The NodePort itself still answers on node-2 (the lab's own dial).
	s, err := cl.CoreV1().Services("default").Get(ctx, LocalLBService, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if err := DialPod(ctx, Node2Netns, net.JoinHostPort(Node2IP, strconv.Itoa(int(s.Spec.Ports[0].NodePort))), 2*time.Second); err != nil {
		t.Fatalf("%s: node-2's NodePort of %s does not answer either: %v", f.Name, key, err)
	}
	if err := f.Undo(ctx, cfg, cl); err != nil {
		t.Fatalf("undo %s: %v", f.Name, err)
	}
	took = waitAgents(t, "recovery from "+f.Name, within, agentsHealthy(ctx, cl), nil)
	t.Logf("%s: recovered after %s", f.Name, took.Round(10*time.Millisecond))

	// The other way round: node-1, without an endpoint of hostnames-local, answers its health
	// check with 200. node-1's agent blames kube-proxy's health check there; node-2's agents (the
	// Service's endpoint, a 200 that is right) and the central exporter stay ok.
	f = nodeFault(t, healthCheckStaleFault.Name)
	took = settleAgents(t, "every agent window clean before "+f.Name, 60*time.Second, allAgents(agentsHealthy(ctx, cl), agentWindowsClean(ctx, cl)))
	t.Logf("windows clean before %s after %s", f.Name, took.Round(10*time.Millisecond))
	if err := f.Inject(ctx, cfg, cl); err != nil {
		t.Fatalf("inject %s: %v", f.Name, err)
	}
	stale := "proxy/" + string(probe.ReasonHealthCheckStale)
	took = waitAgents(t, f.Name+": "+f.Expect, within,
		allAgents(agentIs(ctx, cl, NodeName, "ok/success", map[string]string{key: stale})),
		allAgents(agentIs(ctx, cl, Node2Name, "ok/success", nil), agentIs(ctx, cl, host2, "ok/success", nil),
			func(av agentView) error { return wantVerdict(av.v["central"], key, "ok/success") }))
	t.Logf("%s: seen after %s (limit %s)", f.Name, took.Round(10*time.Millisecond), within)
	if code, err := NodeHealthCheck(ctx, node1, hc); err != nil || code != 200 {
		t.Fatalf("%s: node-1's health check answers %d, %v; want the fault's 200", f.Name, code, err)
	}
	if err := f.Undo(ctx, cfg, cl); err != nil {
		t.Fatalf("undo %s: %v", f.Name, err)
	}
	if code, err := NodeHealthCheck(ctx, node1, hc); err != nil || code != 503 {
		t.Fatalf("after undoing %s: node-1's health check answers %d, %v; want kube-proxy's 503", f.Name, code, err)
	}
	took = waitAgents(t, "recovery from "+f.Name, within, agentsHealthy(ctx, cl), nil)
	t.Logf("%s: recovered after %s", f.Name, took.Round(10*time.Millisecond))
}

// agentHealthChecked checks that an agent's nodeport stage of hostnames-local holds a passed check
// of the health check port hc (its JSON API).
func agentHealthChecked(ctx context.Context, cl kubernetes.Interface, src string, hc int32) error {
	doc, err := agentService(ctx, cl, src, "default", LocalLBService)
	if err != nil {
		return err
	}
	want := ":" + strconv.Itoa(int(hc)) + "/healthz"
	for _, st := range doc.Stages {
		if st.Stage != "nodeport" {
			continue
		}
		for _, c := range st.Checks {
			if strings.Contains(c.Subject, want) && c.Reason == "success" {
				return nil
			}
		}
		return fmt.Errorf("%s: the nodeport stage of %s has no passed check of %s: %+v", src, LocalLBService, want, st.Checks)
	}
	return fmt.Errorf("%s: %s has no nodeport stage", src, LocalLBService)
}

// removeNode2 undoes every node fault (each Undo is a no-op when its fault is not in place),
// deletes the node agents and node-2 (its namespace must be gone) and waits until the central
// exporter is fully healthy again: the tests after a node-2 test see the one-node lab.
func removeNode2(t *testing.T, ctx context.Context, cfg *Config, cl kubernetes.Interface) {
	t.Helper()
	for _, f := range NodeFaults {
		if err := f.Undo(ctx, cfg, cl); err != nil {
			t.Logf("undo %s: %v", f.Name, err)
		}
	}
	if err := DeleteLocalLBService(ctx, cl); err != nil {
		t.Errorf("delete default/%s: %v", LocalLBService, err)
	}
	if err := DeleteNodeAgents(ctx, *cfg); err != nil {
		t.Errorf("delete node agents: %v", err)
	}
	if err := DownNode2(ctx, *cfg); err != nil {
		t.Errorf("node-2 down: %v", err)
	}
	if nss, _ := listNetns(); slices.Contains(nss, Node2Netns) {
		t.Errorf("netns %s left", Node2Netns)
	}
	waitMetrics(t, "central exporter healthy after node-2 went", 60*time.Second, fullyHealthy(ctx, cl))
}

// nodeFault returns the NodeFaults entry called name.
func nodeFault(t *testing.T, name string) *Fault {
	t.Helper()
	for i := range NodeFaults {
		if NodeFaults[i].Name == name {
			return &NodeFaults[i]
		}
	}
	t.Fatalf("no fault %s", name)
	return nil
}

// execInPod runs `svcprobe-lab ARGS` in a Pod's network namespace (and its resolv.conf).
func execInPod(ctx context.Context, cfg *Config, pod *corev1.Pod, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	cmd := execCommandContext(ctx, inNetns(PodNetns(pod.Namespace, pod.Name), append([]string{cfg.LabExe()}, args...)...))
	out, err := cmd.CombinedOutput()
	return string(out), err
}

func podsOnNode(ctx context.Context, cl kubernetes.Interface, ns, selector, node string) error {
	pods, err := cl.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{LabelSelector: selector})
	if err != nil {
		return err
	}
	for _, p := range pods.Items {
		if p.Spec.NodeName != node {
			return fmt.Errorf("%s/%s runs on %q, want %s", ns, p.Name, p.Spec.NodeName, node)
		}
	}
	return nil
}

func TestBindTarget(t *testing.T) {
	pinned := func(node string) *corev1.Pod {
		return &corev1.Pod{Spec: corev1.PodSpec{Affinity: &corev1.Affinity{NodeAffinity: &corev1.NodeAffinity{
			RequiredDuringSchedulingIgnoredDuringExecution: &corev1.NodeSelector{NodeSelectorTerms: []corev1.NodeSelectorTerm{{
				MatchFields: []corev1.NodeSelectorRequirement{{Key: "metadata.name", Operator: corev1.NodeSelectorOpIn, Values: []string{node}}},
			}}},
		}}}}
	}
	for _, c := range []struct {
		name string
		pod  *corev1.Pod
		want string
	}{
		{"no affinity", &corev1.Pod{}, NodeName},
		{"daemonset pod of node-2", pinned(Node2Name), Node2Name},
		{"daemonset pod of node-1", pinned(NodeName), NodeName},
		{"pinned elsewhere", pinned("node-9"), ""},
	} {
		if got := bindTarget(c.pod); got != c.want {
			t.Errorf("%s: bound to %q, want %q", c.name, got, c.want)
		}
	}
}

// agentStageOK checks in an agent's JSON API that its last run of a Service's stage passed.
func agentStageOK(ctx context.Context, cl kubernetes.Interface, src, ns, name, stage string) error {
	return agentStages(ctx, cl, src, ns, name, map[string]string{stage: "ok/success"})
}

// agentService reads one Service's document from a source's JSON API.
func agentService(ctx context.Context, cl kubernetes.Interface, src, ns, name string) (statusweb.Service, error) {
	sctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	path := "/api/v1/services/" + ns + "/" + name
	var doc statusweb.Service
	body, err := scrapeSource(sctx, cl, src, path)
	if err != nil {
		return doc, err
	}
	if err := json.Unmarshal([]byte(body), &doc); err != nil {
		return doc, fmt.Errorf("%s: %w", path, err)
	}
	return doc, nil
}

// agentStages checks the stages of one Service in a source's JSON API: want maps a stage to
// "status/reason" (status as the API says it: ok, skipped, failed...).
func agentStages(ctx context.Context, cl kubernetes.Interface, src, ns, name string, want map[string]string) error {
	doc, err := agentService(ctx, cl, src, ns, name)
	if err != nil {
		return err
	}
	var errs []error
	for stage, w := range want {
		got := ""
		for _, st := range doc.Stages {
			if st.Stage == stage {
				got = string(st.Status) + "/" + st.Reason
			}
		}
		if got == "" {
			errs = append(errs, fmt.Errorf("%s: %s/%s has no %s stage", src, ns, name, stage))
		} else if got != w {
			errs = append(errs, fmt.Errorf("%s: %s/%s stage %s is %s, want %s", src, ns, name, stage, got, w))
		}
	}
	if len(errs) > 0 {
		b, _ := json.MarshalIndent(doc, "", "  ")
		return fmt.Errorf("%w\n%s", errors.Join(errs...), b)
	}
	return nil
}

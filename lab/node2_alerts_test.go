package lab

// The node-mode alerts of deploy/rules/svcprobe-alerts.yaml in a real Prometheus: with node-2 up and
// deploy/node-agent's agents on both nodes, Prometheus scrapes the central exporter and both
// agents (their Pod IPs, job svcprobe-node). A fault of one node must fire the node-mode alert
// for that node and nothing for the other or the central exporter:
//   - kube-proxy-down-node2: ServiceProxyDownOnNode{node="node-2"} (the node!="" rule, for: 1m);
//   - hairpin-off-node2, healthcheck-node2 and healthcheck-stale-node1 at once:
//     HairpinBrokenOnNode{node="node-2"},
//     ServiceHealthCheckFailingOnNode{node="node-2",service="hostnames-local"} and
//     ServiceHealthCheckStaleOnNode{node="node-1",service="hostnames-local"} (for: 2m).
// Each resolves when its fault is undone. The for: durations are the shipped ones, so the test
// takes about five minutes.

import (
	"context"
	"fmt"
	"net/url"
	"os"
	"slices"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"
)

// nodeAlertKey names an alert with its node label ("" for the central exporter's and the
// per-Service ones), so ServiceProxyDownOnNode of node-1, node-2 and the central exporter differ.
func nodeAlertKey(a promAlert) string {
	return fmt.Sprintf("%s{node=%q}", a.key(), a.Labels["node"])
}

// nodeAlerts returns the firing and pending alerts other than the error-budget ones (the node
// agents' failed probes count in the cluster's SLO too), by nodeAlertKey.
func nodeAlerts(alerts []promAlert) (firing, pending map[string]promAlert) {
	firing, pending = map[string]promAlert{}, map[string]promAlert{}
	for _, a := range alerts {
		if a.Labels["alertname"] == burnAlert {
			continue
		}
		if a.State == "firing" {
			firing[nodeAlertKey(a)] = a
		} else {
			pending[nodeAlertKey(a)] = a
		}
	}
	return firing, pending
}

// promVector runs an instant query and returns its samples' labels and values.
func promVector(ctx context.Context, q string) ([]map[string]string, []float64, error) {
	var r struct {
		ResultType string `json:"resultType"`
		Result     []struct {
			Metric map[string]string `json:"metric"`
			Value  [2]any            `json:"value"`
		} `json:"result"`
	}
	if err := QueryPrometheus(ctx, "/api/v1/query", url.Values{"query": {q}}, &r); err != nil {
		return nil, nil, err
	}
	if r.ResultType != "vector" {
		return nil, nil, fmt.Errorf("%s: result type %s, want vector", q, r.ResultType)
	}
	var ls []map[string]string
	var vs []float64
	for _, s := range r.Result {
		str, _ := s.Value[1].(string)
		v, err := strconv.ParseFloat(str, 64)
		if err != nil {
			return nil, nil, fmt.Errorf("%s: value %v: %w", q, s.Value[1], err)
		}
		ls, vs = append(ls, s.Metric), append(vs, v)
	}
	return ls, vs, nil
}

// nodeAlertCase is one fault of node-2 and the node alert it must fire.
type nodeAlertCase struct {
	// faults are injected together: each breaks another thing of node-2.
	faults []string
	// alerts are the labels, exactly, of the alerts that must fire for node-2 (each named by its
	// alertname and node, and Service when it has one), and no other node alert.
	alerts []map[string]string
	// forDur is the rules' longest for:.
	forDur time.Duration
}

// nodeModeAlerts are the alertnames of the node-mode rules.
var nodeModeAlerts = []string{"ServiceProxyDownOnNode", "HairpinBrokenOnNode", "ServiceHealthCheckFailingOnNode", "ServiceHealthCheckStaleOnNode"}

func TestNodeAlerts(t *testing.T) {
	cfg, cl := sharedLab(t)
	requirePrometheus(t, cfg)
	ctx, cancel := context.WithTimeout(context.Background(), 12*time.Minute)
	defer cancel()
	settle(t, ctx, cl)

	t.Cleanup(func() {
		cctx, ccancel := context.WithTimeout(context.Background(), 3*time.Minute)
		defer ccancel()
		if err := StopPrometheus(*cfg); err != nil {
			t.Errorf("stop prometheus: %v", err)
		}
		if _, err := os.Stat(cfg.path("prometheus")); !os.IsNotExist(err) {
			t.Errorf("prometheus data left in %s", cfg.path("prometheus"))
		}
		removeNode2(t, cctx, cfg, cl)
	})

	start := time.Now()
	if err := UpNode2(ctx, *cfg); err != nil {
		t.Fatalf("node-2: %v", err)
	}
	if err := DeployNodeAgents(ctx, *cfg, ExporterOptions{Interval: e2eInterval, Timeout: e2eTimeout}); err != nil {
		t.Fatalf("node agents: %v", err)
	}
	t.Logf("node-2 up, node agents ready on both nodes after %s", time.Since(start).Round(time.Millisecond))

	// Scrape the agents by their Pod IPs, as a kubernetes_sd endpoints job on the svcprobe-node
	// Service would.
	var targets []string
	for _, n := range []string{NodeName, Node2Name} {
		pod, err := NodeAgentPod(ctx, cl, n)
		if err != nil {
			t.Fatal(err)
		}
		targets = append(targets, pod.Status.PodIP+":"+strconv.Itoa(ExporterPort))
	}
	pstart := time.Now()
	if err := StartPrometheus(ctx, *cfg, PrometheusOptions{ExtraTargets: targets}); err != nil {
		t.Fatalf("start prometheus: %v", err)
	}
	t.Logf("prometheus %s up in %s, scraping the exporter and the agents at %v", PrometheusVersion, time.Since(pstart).Round(time.Millisecond), targets)
	// Runs before the cleanup above stops Prometheus: on failure, what node-2's agent said.
	t.Cleanup(func() {
		if !t.Failed() {
			return
		}
		for _, q := range []string{
			`svcprobe_service_verdict{node="` + Node2Name + `"} == 1`,
			`svcprobe_services_by_verdict{node="` + Node2Name + `"} > 0`,
			`svcprobe_cluster_dns_up{node="` + Node2Name + `"}`,
			`ALERTS{alertname!="` + burnAlert + `"}`,
		} {
			t.Logf("history of %s since Prometheus started:\n%s", q, promHistory(pstart, q))
		}
	})

	// Healthy: three targets up, verdicts of the central exporter (node="") and of both agents
	// (node="node-1", node="node-2") stored, every rule evaluating, no alert pending or firing.
	healthy := func(alerts []promAlert) error {
		if err := rulesHealthy(ctx); err != nil {
			return err
		}
		ls, _, err := promVector(ctx, `up == 1`)
		if err != nil {
			return err
		}
		up := map[string]bool{}
		for _, l := range ls {
			up[l["job"]+" "+l["instance"]] = true
		}
		wantUp := []string{"svcprobe " + ExporterIP + ":" + strconv.Itoa(ExporterPort)}
		for _, tg := range targets {
			wantUp = append(wantUp, "svcprobe-node "+tg)
		}
		for _, w := range wantUp {
			if !up[w] {
				return fmt.Errorf("target %s not up (up == 1: %v)", w, sortedKeys(up))
			}
		}
		// Agents export per-Service series only for what fails from their node: their counts of
		// Services by verdict are what every exporter always has.
		ls, _, err = promVector(ctx, `count by (node) (svcprobe_services_by_verdict)`)
		if err != nil {
			return err
		}
		nodes := map[string]bool{}
		for _, l := range ls {
			nodes[l["node"]] = true
		}
		for _, n := range []string{"", NodeName, Node2Name} {
			if !nodes[n] {
				return fmt.Errorf("no svcprobe_services_by_verdict{node=%q} in Prometheus yet (nodes: %v)", n, sortedKeys(nodes))
			}
		}
		firing, pending := nodeAlerts(alerts)
		if len(firing)+len(pending) > 0 {
			return fmt.Errorf("alerts active in a healthy lab: firing %v, pending %v", sortedKeys(firing), sortedKeys(pending))
		}
		return nil
	}
	// externalTrafficPolicy Local: hostnames-local's one endpoint runs on node-2, whose agent asks
	// kube-proxy's health check for it (healthcheck-node2 breaks that).
	if _, err := EnsureLocalLBService(ctx, cl); err != nil {
		t.Fatal(err)
	}
	waitAlerts(t, cfg, "healthy: 3 targets up, verdicts of node \"\", node-1, node-2, no alert pending or firing", 90*time.Second, healthy)
	// Still so a few evaluations later: the node rules have seen the agents' series.
	time.Sleep(3 * 2 * time.Second)
	waitAlerts(t, cfg, "still healthy", 5*time.Second, healthy)

	cases := []nodeAlertCase{
		{
			faults: []string{"kube-proxy-down-node2"}, forDur: time.Minute,
			alerts: []map[string]string{{"alertname": "ServiceProxyDownOnNode", "node": Node2Name,
				"severity": "critical", "layer": "proxy", "mode": "node"}},
		},
		{
			// Three faults at once, each with its alert (all for: 2m): on node-2 the hairpin of
			// the agent's own Pod, and kube-proxy's health check of hostnames-local, whose
			// NodePort leads to another Pod and still answers; on node-1, which has no endpoint of
			// hostnames-local, that health check answering 200.
			faults: []string{"hairpin-off-node2", healthCheckFault.Name, healthCheckStaleFault.Name}, forDur: 2 * time.Minute,
			alerts: []map[string]string{
				{"alertname": "HairpinBrokenOnNode", "node": Node2Name, "severity": "warning", "layer": "hairpin"},
				{"alertname": "ServiceHealthCheckFailingOnNode", "node": Node2Name, "severity": "warning", "layer": "proxy",
					"namespace": "default", "service": LocalLBService},
				{"alertname": "ServiceHealthCheckStaleOnNode", "node": NodeName, "severity": "warning", "layer": "proxy",
					"namespace": "default", "service": LocalLBService},
			},
		},
	}
	timings := map[string]string{}
	for _, nc := range cases {
		var faults []*Fault
		for _, name := range nc.faults {
			faults = append(faults, nodeFault(t, name))
		}
		name := strings.Join(nc.faults, "+")
		byKey := map[string]map[string]string{}
		var wantKeys []string
		for _, l := range nc.alerts {
			k := nodeAlertKey(promAlert{Labels: l})
			byKey[k] = l
			wantKeys = append(wantKeys, k)
		}
		sort.Strings(wantKeys)
		wantKey := strings.Join(wantKeys, ",")
		var injected time.Time
		// At every poll: no node alert for another node or without node, pending or firing, and
		// no other node alert of node-2 firing. Another node alert of node-2 pending (a verdict of
		// node-2's agent that is briefly not the fault's) is logged, with node-2's history at the
		// end of the case: the firing set is checked exactly, so it must not last until its for:.
		strays := map[string]time.Duration{}
		forbidden := func(alerts []promAlert) {
			t.Helper()
			for _, a := range alerts {
				if !slices.Contains(nodeModeAlerts, a.Labels["alertname"]) {
					continue
				}
				k := nodeAlertKey(a)
				switch {
				case byKey[k] != nil:
				case a.Labels["node"] != Node2Name || a.State == "firing":
					t.Fatalf("%s: %s %s (labels %v), only %s may be active", name, k, a.State, a.Labels, wantKey)
				default:
					if _, seen := strays[k]; !seen {
						strays[k] = time.Since(injected)
						t.Logf("%s: note: %s %s %s after the fault (activeAt %s)", name, k, a.State,
							strays[k].Round(time.Second), a.ActiveAt.Format(time.RFC3339))
					}
				}
			}
		}

		injected = time.Now()
		for _, f := range faults {
			if err := f.Inject(ctx, cfg, cl); err != nil {
				t.Fatalf("inject %s: %v", f.Name, err)
			}
		}
		t.Logf("%s injected (+%.0fs since Prometheus started)", name, injected.Sub(pstart).Seconds())
		var pendingAt time.Time
		// for:, plus the fault reaching the agent's verdicts (a probe interval and timeout), a
		// scrape and a few evaluations, plus margin.
		within := nc.forDur + 40*time.Second
		alerts := waitAlerts(t, cfg, name+": exactly "+wantKey+" firing", within, func(alerts []promAlert) error {
			forbidden(alerts)
			firing, pending := nodeAlerts(alerts)
			if _, ok := pending[wantKeys[0]]; ok && pendingAt.IsZero() {
				pendingAt = time.Now()
			}
			if got := sortedKeys(firing); strings.Join(got, ",") != wantKey {
				return fmt.Errorf("firing %v (pending %v), want exactly [%s]", got, sortedKeys(pending), wantKey)
			}
			return nil
		})
		fired := time.Since(injected)
		firing, _ := nodeAlerts(alerts)
		for _, k := range wantKeys {
			a := firing[k]
			if got, want := labelString(a.Labels), labelString(byKey[k]); got != want {
				t.Errorf("%s: labels %s, want %s", k, got, want)
			}
			for _, ak := range []string{"summary", "description", "runbook_url"} {
				v := a.Annotations[ak]
				if v == "" || strings.Contains(v, "<no value>") || strings.Contains(v, "error expanding") {
					t.Errorf("%s: annotation %s = %q", k, ak, v)
				}
			}
			if n := byKey[k]["node"]; !strings.Contains(a.Annotations["summary"], "node "+n) {
				t.Errorf("%s: summary %q does not name node %s", k, a.Annotations["summary"], n)
			}
			if active := a.ActiveAt.Sub(injected); active < 0 {
				t.Errorf("%s: active since %s, before the fault (%s)", k, a.ActiveAt, injected)
			}
			t.Logf("%s: %s activeAt +%s", name, k, a.ActiveAt.Sub(injected).Round(time.Second))
		}
		pend := "not seen"
		if !pendingAt.IsZero() {
			pend = pendingAt.Sub(injected).Round(time.Second).String()
		}
		t.Logf("%s: %s pending after %s, firing after %s (for: %s)", name, wantKeys[0], pend, fired.Round(time.Second), nc.forDur)

		// Still exactly that a few evaluations later.
		time.Sleep(3 * 2 * time.Second)
		waitAlerts(t, cfg, name+": still exactly "+wantKey, 5*time.Second, func(alerts []promAlert) error {
			forbidden(alerts)
			firing, pending := nodeAlerts(alerts)
			if got := sortedKeys(firing); strings.Join(got, ",") != wantKey {
				return fmt.Errorf("firing %v (pending %v), want exactly [%s]", got, sortedKeys(pending), wantKey)
			}
			return nil
		})

		for _, f := range faults {
			if err := f.Undo(ctx, cfg, cl); err != nil {
				t.Fatalf("undo %s: %v", f.Name, err)
			}
		}
		fixed := time.Now()
		// node-2's agent reconnects to the API after kube-proxy-down-node2: a few seconds more.
		waitAlerts(t, cfg, name+": resolved", 60*time.Second, func(alerts []promAlert) error {
			forbidden(alerts)
			firing, pending := nodeAlerts(alerts)
			if len(firing)+len(pending) > 0 {
				return fmt.Errorf("still active: firing %v, pending %v", sortedKeys(firing), sortedKeys(pending))
			}
			return nil
		})
		resolved := time.Since(fixed)
		if len(strays) > 0 {
			t.Logf("%s: other node-2 alerts were pending: %v; node-2's verdicts since Prometheus started:\n%s", name, strays,
				promHistory(pstart, `svcprobe_service_verdict{node="`+Node2Name+`"} == 1`)+
					promHistory(pstart, `svcprobe_cluster_dns_up{node="`+Node2Name+`"}`))
		}
		t.Logf("%s: resolved %s after the undo", name, resolved.Round(time.Second))
		timings[name] = fmt.Sprintf("%s firing after %s (for: %s), resolved %s after undo",
			wantKey, fired.Round(time.Second), nc.forDur, resolved.Round(time.Second))
	}
	for _, nc := range cases {
		name := strings.Join(nc.faults, "+")
		t.Logf("timing: %s: %s", name, timings[name])
	}
}

// promHistory returns the changes of the series of q since start, one line per series and change
// (seconds since start), for a failure message.
func promHistory(start time.Time, q string) string {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var r struct {
		Result []struct {
			Metric map[string]string `json:"metric"`
			Values [][2]any          `json:"values"`
		} `json:"result"`
	}
	end := time.Now()
	err := QueryPrometheus(ctx, "/api/v1/query_range", url.Values{"query": {q},
		"start": {strconv.FormatInt(start.Unix(), 10)}, "end": {strconv.FormatInt(end.Unix(), 10)}, "step": {"2"}}, &r)
	if err != nil {
		return "  " + err.Error()
	}
	var b strings.Builder
	for _, s := range r.Result {
		delete(s.Metric, "instance")
		delete(s.Metric, "job")
		fmt.Fprintf(&b, "  %s:", labelString(s.Metric))
		last, lastT := "", -1.0
		for _, v := range s.Values {
			ts, _ := v[0].(float64)
			val, _ := v[1].(string)
			if lastT >= 0 && ts-lastT > 2 {
				fmt.Fprintf(&b, " +%.0fs:absent", lastT+2-float64(start.Unix()))
				last = ""
			}
			if val != last {
				fmt.Fprintf(&b, " +%.0fs:%s", ts-float64(start.Unix()), val)
				last = val
			}
			lastT = ts
		}
		b.WriteString("\n")
	}
	return b.String()
}

func labelString(l map[string]string) string {
	keys := make([]string, 0, len(l))
	for k := range l {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = fmt.Sprintf("%s=%q", k, l[k])
	}
	return "{" + strings.Join(parts, ",") + "}"
}

package lab

// The shipped alert and SLO rules (deploy/rules, loaded unchanged) in a real Prometheus (the one
// deploy/check/check.mk builds) scraping svcprobe in the lab: for the dns-down, pods-not-ready and
// kube-proxy-down faults, exactly the expected per-layer alerts fire (read from Prometheus'
// /api/v1/alerts), the burn-rate alert of the failing stage fires, and everything resolves when
// the fault is undone; during pods-not-ready the exporter Pod is deleted and replaced, and its
// alert stays firing once throughout (one fault for both: the test is the suite's longest). The Grafana dashboards' panel queries are evaluated against the same
// Prometheus. Which of the firing alerts Alertmanager then mutes is proven with Alertmanager's own
// code on the same label sets in deploy/check/inhibit_test.go.
//
// The rules' for: durations are the shipped ones (per-Service 2m, cluster-wide 1m), so each fault
// takes a little over two minutes: about 9 minutes for the test. Then the window: one failed
// proxy round of hostnames fires nothing (~30 s), and under vip-partial the proxy alert fires
// and stays firing for a minute without resolving in between (~4 minutes).

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
)

func TestPrometheusVersionMatchesMakefile(t *testing.T) {
	b, err := os.ReadFile(filepath.Join("..", "deploy", "check", "check.mk"))
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`(?m)^PROMETHEUS_VERSION\s*:=\s*(\S+)`).FindSubmatch(b)
	if m == nil || string(m[1]) != PrometheusVersion {
		t.Errorf("check.mk PROMETHEUS_VERSION = %q, lab.PrometheusVersion is %s", m, PrometheusVersion)
	}
}

type promAlert struct {
	Labels      map[string]string `json:"labels"`
	Annotations map[string]string `json:"annotations"`
	State       string            `json:"state"`
	ActiveAt    time.Time         `json:"activeAt"`
}

// key names an alert: alertname plus the Service when it has one.
func (a promAlert) key() string {
	if a.Labels["namespace"] != "" || a.Labels["service"] != "" {
		return a.Labels["alertname"] + " " + a.Labels["namespace"] + "/" + a.Labels["service"]
	}
	return a.Labels["alertname"]
}

func promAlerts(ctx context.Context) ([]promAlert, error) {
	var r struct {
		Alerts []promAlert `json:"alerts"`
	}
	if err := QueryPrometheus(ctx, "/api/v1/alerts", nil, &r); err != nil {
		return nil, err
	}
	return r.Alerts, nil
}

const burnAlert = "SvcprobeErrorBudgetBurn"

// layerAlerts returns the firing and the pending alerts other than the error-budget ones, by key.
func layerAlerts(alerts []promAlert) (firing, pending map[string]promAlert) {
	firing, pending = map[string]promAlert{}, map[string]promAlert{}
	for _, a := range alerts {
		if a.Labels["alertname"] == burnAlert {
			continue
		}
		if a.State == "firing" {
			firing[a.key()] = a
		} else {
			pending[a.key()] = a
		}
	}
	return firing, pending
}

func sortedKeys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// waitAlerts polls /api/v1/alerts every second until check passes, failing the test after within.
func waitAlerts(t *testing.T, cfg *Config, what string, within time.Duration, check func([]promAlert) error) []promAlert {
	t.Helper()
	start := time.Now()
	var last error
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		alerts, err := promAlerts(ctx)
		cancel()
		if err == nil {
			if err = check(alerts); err == nil {
				t.Logf("%s: after %s", what, time.Since(start).Round(100*time.Millisecond))
				return alerts
			}
		}
		last = err
		if time.Since(start) > within {
			if aerr := cfg.componentAlive("prometheus"); aerr != nil {
				last = errors.Join(last, cfg.withLog("prometheus", aerr))
			}
			t.Fatalf("%s: not within %s: %v", what, within, last)
		}
		time.Sleep(time.Second)
	}
}

type alertFault struct {
	name string
	// want lists the per-layer alerts that must fire (and no other), by promAlert.key.
	want func(ctx context.Context, cl kubernetes.Interface) ([]string, error)
	// reason must show in each per-Service alert's summary (the query in the template).
	reason map[string]string
	// burnStage is the stage whose fast burn-rate alert must fire: a platform stage (99.9 %), whose
	// fast tier trips within minutes of one Service of the lab's few failing ("": not checked).
	burnStage string
	// sliStage is a tenant stage (99.5 %) whose recorded 5-minute error ratio must show the fault
	// and exceed the fast tier's threshold. Its fast burn alert needs the 1h window to fill too:
	// with one of the lab's five Services failing that takes longer than this test waits (a
	// real cluster's single Service never burns a tenant SLO fast; the per-Service alert pages).
	sliStage string
	// restartKeeps names the alert that must stay firing, once, while the exporter Pod is deleted
	// and replaced in the middle of the fault (alertSurvivesExporterRestart).
	restartKeeps string
}

func servicesExcept(ctx context.Context, cl kubernetes.Interface, alert string, except ...string) ([]string, error) {
	svcs, err := cl.CoreV1().Services("").List(ctx, metav1.ListOptions{})
	if err != nil {
		return nil, err
	}
	var out []string
next:
	for _, s := range svcs.Items {
		for _, e := range except {
			if e == s.Namespace+"/"+s.Name {
				continue next
			}
		}
		out = append(out, alert+" "+s.Namespace+"/"+s.Name)
	}
	return out, nil
}

// In this order each fault's stage has not failed before, so its burn-rate alert is a new one
// (a burn alert stays firing for about five minutes after its fault: the short window).
var alertFaults = []alertFault{
	{
		name: "pods-not-ready",
		want: func(context.Context, kubernetes.Interface) ([]string, error) {
			return []string{"SvcprobeServiceEndpointsMissing default/hostnames"}, nil
		},
		reason:       map[string]string{"SvcprobeServiceEndpointsMissing default/hostnames": "no_ready_endpoints"},
		sliStage:     "endpoints",
		restartKeeps: "SvcprobeServiceEndpointsMissing default/hostnames",
	},
	{
		// Every Service's name fails; kube-dns itself has no ready endpoints.
		name: "dns-down",
		want: func(ctx context.Context, cl kubernetes.Interface) ([]string, error) {
			keys, err := servicesExcept(ctx, cl, "SvcprobeServiceDNSBroken", "kube-system/kube-dns")
			return append(keys, "ClusterDNSDown", "SvcprobeServiceEndpointsMissing kube-system/kube-dns"), err
		},
		reason: map[string]string{
			"SvcprobeServiceEndpointsMissing kube-system/kube-dns": "no_ready_endpoints",
			"SvcprobeServiceDNSBroken default/hostnames":           "timeout|refused",
		},
		burnStage: "dns",
	},
	{
		// Every VIP fails, DNS's too, while the Pods answer directly.
		name: "kube-proxy-down",
		want: func(ctx context.Context, cl kubernetes.Interface) ([]string, error) {
			keys, err := servicesExcept(ctx, cl, "SvcprobeServiceProxyBroken")
			return append(keys, "ServiceProxyDownOnNode"), err
		},
		// No burn-rate check here: the burn rule is one rule over every stage, proven by dns-down
		// (waiting for its 1h window again costs a minute of the suite).
		reason: map[string]string{"SvcprobeServiceProxyBroken default/hostnames": "unreachable|timeout|refused"},
	},
}

// requirePrometheus skips (fails under CI) when the Prometheus binary is not built.
func requirePrometheus(t *testing.T, cfg *Config) {
	t.Helper()
	if _, err := os.Stat(cfg.PrometheusBinary()); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("prometheus missing under CI: %v (run `make prom-tools`)", err)
		}
		t.Skipf("prometheus missing: %v (run `make prom-tools`)", err)
	}
}

func TestAlerts(t *testing.T) {
	cfg, cl := sharedLab(t)
	requirePrometheus(t, cfg)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Minute)
	defer cancel()

	start := time.Now()
	if err := StartPrometheus(ctx, *cfg, PrometheusOptions{}); err != nil {
		t.Fatalf("start prometheus: %v", err)
	}
	t.Cleanup(func() {
		if err := StopPrometheus(*cfg); err != nil {
			t.Errorf("stop prometheus: %v", err)
		}
		if _, err := os.Stat(cfg.path("prometheus")); !os.IsNotExist(err) {
			t.Errorf("prometheus data left in %s", cfg.path("prometheus"))
		}
	})
	t.Logf("prometheus %s up in %s", PrometheusVersion, time.Since(start).Round(time.Millisecond))

	settle(t, ctx, cl)
	// Healthy: the exporter is scraped, every rule evaluates without error, nothing fires.
	waitAlerts(t, cfg, "healthy lab, rules evaluating, no alert pending or firing", 2*time.Minute, func(alerts []promAlert) error {
		if err := rulesHealthy(ctx); err != nil {
			return err
		}
		var up struct {
			Result []json.RawMessage `json:"result"`
		}
		if err := QueryPrometheus(ctx, "/api/v1/query", url.Values{"query": {`up{job="svcprobe"} == 1`}}, &up); err != nil {
			return err
		}
		if len(up.Result) != 1 {
			return fmt.Errorf("svcprobe not scraped yet (up == 1: %d series)", len(up.Result))
		}
		var active []string
		for _, a := range alerts {
			active = append(active, a.key()+" "+a.State)
		}
		if len(active) > 0 {
			return fmt.Errorf("alerts active in a healthy lab: %v", active)
		}
		return nil
	})

	t.Run("dashboards", func(t *testing.T) { checkDashboards(t, ctx) })

	for _, af := range alertFaults {
		t.Run(af.name, func(t *testing.T) {
			f, err := FaultByName(af.name)
			if err != nil {
				t.Fatal(err)
			}
			settle(t, ctx, cl)
			waitAlerts(t, cfg, "no per-layer alert active before "+af.name, 2*time.Minute, func(alerts []promAlert) error {
				firing, pending := layerAlerts(alerts)
				if len(firing)+len(pending) > 0 {
					return fmt.Errorf("active: firing %v, pending %v", sortedKeys(firing), sortedKeys(pending))
				}
				return nil
			})
			undone := false
			undoOnCleanup(t, cfg, cl, f, &undone)
			injected := time.Now()
			if err := f.Inject(ctx, cfg, cl); err != nil {
				t.Fatalf("inject %s: %v", f.Name, err)
			}
			want, err := af.want(ctx, cl)
			if err != nil {
				t.Fatal(err)
			}
			sort.Strings(want)
			// The longest for: is 2m; scrape, evaluation and the fault reaching the exporter add
			// seconds. The fast burn needs its 1h window (built from recorded 5m rates, which ramp
			// up over their first 5 minutes) past the threshold, then its 2m: about 4 minutes.
			alerts := waitAlerts(t, cfg, af.name+": exactly "+strings.Join(want, ", ")+" firing", 5*time.Minute, func(alerts []promAlert) error {
				firing, _ := layerAlerts(alerts)
				got := sortedKeys(firing)
				if strings.Join(got, ",") != strings.Join(want, ",") {
					return fmt.Errorf("firing %v, want %v", got, want)
				}
				if af.sliStage != "" {
					q := `cluster_stage:svcprobe_stage_errors:ratio_rate5m{stage="` + af.sliStage + `",slo="tenant"} > on (cluster, slo) group_left () (14.4 * (1 - cluster_slo:svcprobe_objective:ratio))`
					ls, _, err := promVector(ctx, q)
					if err != nil {
						return err
					}
					if len(ls) == 0 {
						return fmt.Errorf("the tenant SLO's 5m error ratio of stage %s is not above the fast tier's threshold yet (%s)", af.sliStage, q)
					}
					return nil
				}
				if af.burnStage == "" {
					return nil
				}
				for _, a := range alerts {
					if a.Labels["alertname"] == burnAlert && a.State == "firing" && a.Labels["stage"] == af.burnStage &&
						a.Labels["short_window"] == "5m" && a.ActiveAt.After(injected) {
						return nil
					}
				}
				return fmt.Errorf("no fast %s for stage %s firing since the fault yet", burnAlert, af.burnStage)
			})
			t.Logf("%s: alerts firing %s after the fault", af.name, time.Since(injected).Round(time.Second))
			firing, _ := layerAlerts(alerts)
			for key, reason := range af.reason {
				a, ok := firing[key]
				if !ok {
					t.Fatalf("%s not firing", key)
				}
				if !regexp.MustCompile(`\(reason: (` + reason + `)\)$`).MatchString(a.Annotations["summary"]) {
					t.Errorf("%s: summary %q does not end in (reason: %s)", key, a.Annotations["summary"], reason)
				}
			}
			for _, a := range firing {
				for _, k := range []string{"summary", "description", "runbook_url"} {
					v := a.Annotations[k]
					if v == "" || strings.Contains(v, "<no value>") || strings.Contains(v, "error expanding") {
						t.Errorf("%s: annotation %s = %q", a.key(), k, v)
					}
				}
				if a.Labels["severity"] == "" || a.Labels["layer"] == "" {
					t.Errorf("%s: labels %v lack severity or layer", a.key(), a.Labels)
				}
			}
			// Still exactly those a few evaluations later (nothing else creeping in).
			time.Sleep(6 * time.Second)
			waitAlerts(t, cfg, af.name+": still exactly the same", 5*time.Second, func(alerts []promAlert) error {
				firing, _ := layerAlerts(alerts)
				if got := sortedKeys(firing); strings.Join(got, ",") != strings.Join(want, ",") {
					return fmt.Errorf("firing %v, want %v", got, want)
				}
				return nil
			})

			resolveWithin := 2 * time.Minute
			if af.restartKeeps != "" {
				alertSurvivesExporterRestart(t, ctx, cfg, cl, af.restartKeeps, firing[af.restartKeeps].ActiveAt)
				resolveWithin = 3 * time.Minute // the replacement exporter's windows start empty
			}

			if err := f.Undo(ctx, cfg, cl); err != nil {
				t.Fatalf("undo %s: %v", f.Name, err)
			}
			undone = true
			fixed := time.Now()
			// The per-Service alerts keep firing for 1m after their condition goes
			// (keep_firing_for: an exporter restart must not resolve them): a minute more than
			// the verdict's own recovery.
			waitAlerts(t, cfg, af.name+": resolved", resolveWithin, func(alerts []promAlert) error {
				firing, pending := layerAlerts(alerts)
				if len(firing)+len(pending) > 0 {
					return fmt.Errorf("still active: firing %v, pending %v", sortedKeys(firing), sortedKeys(pending))
				}
				return nil
			})
			t.Logf("%s: resolved %s after the fix", af.name, time.Since(fixed).Round(time.Second))
		})
	}

	// The verdict's window, seen by the alerts: one failed round pages nobody, and a partial
	// fault keeps its alert firing instead of resolving and firing again with the rounds that
	// happened to pass. Same Prometheus, same rules.
	t.Run("single-failed-round", func(t *testing.T) { alertsSingleFailedRound(t, ctx, cfg, cl) })
	t.Run("vip-partial", func(t *testing.T) { alertsVIPPartial(t, ctx, cfg, cl) })
	t.Run("scaled-to-zero", func(t *testing.T) { alertsScaledToZero(t, ctx, cfg, cl) })
}

// alertSurvivesExporterRestart: an alert firing for a fault (key, activeAt) stays firing, once and
// with the same activeAt, while the exporter Pod is deleted and its Deployment's replacement
// starts, rebuilds its verdicts and is scraped again (alert identity without job/instance/pod,
// keep_firing_for over the gap), and for 90 s after the replacement serves /metrics. TestAlerts
// runs it inside the pods-not-ready case, while that fault's alert fires.
func alertSurvivesExporterRestart(t *testing.T, ctx context.Context, cfg *Config, cl kubernetes.Interface, key string, activeAt time.Time) {
	t.Helper()
	old, err := cfg.ExporterPod(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := cl.CoreV1().Pods(old.Namespace).Delete(ctx, old.Name, metav1.DeleteOptions{}); err != nil {
		t.Fatalf("delete exporter Pod %s: %v", old.Name, err)
	}
	deleted := time.Now()
	t.Logf("deleted exporter Pod %s", old.Name)
	var back time.Time // when the replacement first served /metrics
	checks := 0
	for back.IsZero() || time.Since(back) < 90*time.Second {
		if time.Since(deleted) > 4*time.Minute {
			t.Fatalf("the replacement exporter did not serve /metrics within 4m of deleting %s", old.Name)
		}
		actx, cancel := context.WithTimeout(ctx, 5*time.Second)
		alerts, err := promAlerts(actx)
		cancel()
		if err == nil {
			n := 0
			for _, a := range alerts {
				if a.key() != key {
					continue
				}
				n++
				if a.State != "firing" {
					t.Fatalf("%s %s %s after the exporter Pod was deleted, want firing throughout", key, a.State, time.Since(deleted).Round(time.Second))
				}
				if !a.ActiveAt.Equal(activeAt) {
					t.Fatalf("%s fired again (activeAt %s, was %s) %s after the exporter Pod was deleted", key, a.ActiveAt, activeAt, time.Since(deleted).Round(time.Second))
				}
			}
			if n != 1 {
				t.Fatalf("%d alerts %s %s after the exporter Pod was deleted, want exactly one", n, key, time.Since(deleted).Round(time.Second))
			}
			checks++
		}
		if back.IsZero() {
			if p, err := cfg.ExporterPod(ctx); err == nil && p.UID != old.UID {
				// Served by the new process: the old one answers on the same address until its
				// Pod is torn down.
				sctx, cancel := context.WithTimeout(ctx, 3*time.Second)
				body, err := ScrapeExporter(sctx, "/metrics")
				cancel()
				var started float64
				if err == nil {
					m, _ := parseMetrics(body)
					started, _ = m.value("process_start_time_seconds")
				}
				if err == nil && started > float64(deleted.Unix()) {
					back = time.Now()
					t.Logf("replacement exporter %s serves /metrics %s after the delete", p.Name, back.Sub(deleted).Round(time.Second))
				}
			}
		}
		time.Sleep(2 * time.Second)
	}
	t.Logf("%s stayed firing once (activeAt %s) through the restart and 90 s after (%d checks)", key, activeAt.Format(time.RFC3339), checks)
}

const proxyAlertHostnames = "SvcprobeServiceProxyBroken default/hostnames"

// noLayerAlertActive waits until no per-layer alert is pending or firing.
func noLayerAlertActive(t *testing.T, cfg *Config, what string) {
	t.Helper()
	noLayerAlertActiveWithin(t, cfg, what, 2*time.Minute)
}

func noLayerAlertActiveWithin(t *testing.T, cfg *Config, what string, within time.Duration) {
	t.Helper()
	waitAlerts(t, cfg, "no per-layer alert active "+what, within, func(alerts []promAlert) error {
		firing, pending := layerAlerts(alerts)
		if len(firing)+len(pending) > 0 {
			return fmt.Errorf("active: firing %v, pending %v", sortedKeys(firing), sortedKeys(pending))
		}
		return nil
	})
}

// failedRounds is svcprobe_stage_failures_total of a Service's stage: its failed rounds so far.
func failedRounds(m snapshot, ns, svc, stage string) float64 {
	n, _ := m.value("svcprobe_stage_failures_total", "namespace", ns, "service", svc, "stage", stage)
	return n
}

// alertsSingleFailedRound: every new connection to hostnames' VIP fails (vip fault with
// probability 1) until the exporter has counted one failed proxy round, about one interval;
// then it is removed before the next round dials. Neither /metrics nor Prometheus may show
// anything for it: hostnames stays ok at every sample and no per-layer alert goes pending, from
// the injection to two intervals after the removal.
func alertsSingleFailedRound(t *testing.T, ctx context.Context, cfg *Config, cl kubernetes.Interface) {
	// A whole window healthy first: failures of the faults before (kube-proxy-down) must have
	// left hostnames' proxy window, or this round would be their second run.
	settleFor(t, ctx, cl, (windowRounds+1)*e2eInterval)
	noLayerAlertActive(t, cfg, "before the single failed round")
	m, err := scrape(ctx)
	if err != nil {
		t.Fatal(err)
	}
	before := failedRounds(m, "default", "hostnames", "proxy")
	removed := false
	t.Cleanup(func() {
		if !removed {
			if err := removeVIPFault(); err != nil {
				t.Errorf("remove the VIP fault: %v", err)
			}
		}
	})
	check := func(what string) float64 {
		sctx, cancel := context.WithTimeout(ctx, 3*time.Second)
		defer cancel()
		m, err := scrape(sctx)
		if err != nil {
			t.Fatalf("%s: scrape: %v", what, err)
		}
		v, err := m.verdicts()
		if err != nil {
			t.Fatal(err)
		}
		if err := wantVerdict(v, hostnames, "ok/success"); err != nil {
			t.Fatalf("%s: %v (one failed round must make no verdict)", what, err)
		}
		alerts, err := promAlerts(sctx)
		if err != nil {
			t.Fatalf("%s: alerts: %v", what, err)
		}
		if firing, pending := layerAlerts(alerts); len(firing)+len(pending) > 0 {
			t.Fatalf("%s: alerts firing %v, pending %v after one failed round", what, sortedKeys(firing), sortedKeys(pending))
		}
		return failedRounds(m, "default", "hostnames", "proxy")
	}
	if err := injectVIPFault(ctx, cfg, cl, 1); err != nil {
		t.Fatal(err)
	}
	injected := time.Now()
	var seen float64
	for {
		if seen = check("fault in"); seen > before {
			break
		}
		if time.Since(injected) > 3*e2eInterval {
			t.Fatalf("no failed proxy round of hostnames counted within %s of the fault", 3*e2eInterval)
		}
		time.Sleep(100 * time.Millisecond)
	}
	if err := removeVIPFault(); err != nil {
		t.Fatal(err)
	}
	removed = true
	held := time.Since(injected)
	end := time.Now().Add(2 * e2eInterval)
	var after float64
	for time.Now().Before(end) {
		after = check("after the fault")
		time.Sleep(200 * time.Millisecond)
	}
	t.Logf("fault held %s: %v failed proxy round(s) of hostnames counted while it was in (%v at the end), verdict ok and no alert pending throughout",
		held.Round(10*time.Millisecond), seen-before, after-before)
}

// alertsVIPPartial: with vip-partial in (about one connection in three to hostnames' VIP
// fails), the proxy alert of hostnames fires within 5 minutes and then stays firing for a
// further 30 s with the same activeAt: the verdict holds proxy while rounds that happened to pass
// come and go. No other per-layer alert fires.
func alertsVIPPartial(t *testing.T, ctx context.Context, cfg *Config, cl kubernetes.Interface) {
	f, err := FaultByName("vip-partial")
	if err != nil {
		t.Fatal(err)
	}
	settle(t, ctx, cl)
	noLayerAlertActive(t, cfg, "before vip-partial")
	undone := false
	undoOnCleanup(t, cfg, cl, f, &undone)
	injected := time.Now()
	if err := f.Inject(ctx, cfg, cl); err != nil {
		t.Fatal(err)
	}
	only := func(firing map[string]promAlert) error {
		for k := range firing {
			if k != proxyAlertHostnames {
				return fmt.Errorf("%s firing during vip-partial (only %s may)", k, proxyAlertHostnames)
			}
		}
		return nil
	}
	alerts := waitAlerts(t, cfg, "vip-partial: "+proxyAlertHostnames+" firing", 5*time.Minute, func(alerts []promAlert) error {
		firing, _ := layerAlerts(alerts)
		if err := only(firing); err != nil {
			t.Fatal(err)
		}
		if _, ok := firing[proxyAlertHostnames]; !ok {
			return fmt.Errorf("%s not firing yet", proxyAlertHostnames)
		}
		return nil
	})
	firing, _ := layerAlerts(alerts)
	activeAt := firing[proxyAlertHostnames].ActiveAt
	t.Logf("vip-partial: %s firing %s after the fault (active since %s, summary %q)", proxyAlertHostnames,
		time.Since(injected).Round(time.Second), activeAt.Sub(injected).Round(time.Second), firing[proxyAlertHostnames].Annotations["summary"])
	// 30 s is 15 rounds, about three windows: rounds that pass come and go many times over.
	const holdFor = 30 * time.Second
	hold := time.Now().Add(holdFor)
	n := 0
	for time.Now().Before(hold) {
		actx, cancel := context.WithTimeout(ctx, 5*time.Second)
		alerts, err := promAlerts(actx)
		cancel()
		if err != nil {
			t.Fatal(err)
		}
		firing, _ := layerAlerts(alerts)
		a, ok := firing[proxyAlertHostnames]
		if !ok {
			t.Fatalf("vip-partial: %s stopped firing %s after it fired, while the fault is in", proxyAlertHostnames, (holdFor - time.Until(hold)).Round(time.Second))
		}
		if !a.ActiveAt.Equal(activeAt) {
			t.Fatalf("vip-partial: %s resolved and fired again (activeAt %s, was %s)", proxyAlertHostnames, a.ActiveAt, activeAt)
		}
		if err := only(firing); err != nil {
			t.Fatal(err)
		}
		n++
		time.Sleep(time.Second)
	}
	t.Logf("vip-partial: still firing with the same activeAt %s later (%d checks)", holdFor, n)
	if err := f.Undo(ctx, cfg, cl); err != nil {
		t.Fatal(err)
	}
	undone = true
	fixed := time.Now()
	noLayerAlertActive(t, cfg, "after vip-partial is undone")
	t.Logf("vip-partial: resolved %s after the fix", time.Since(fixed).Round(time.Second))
}

// rulesHealthy checks that every loaded rule evaluated without error.
func rulesHealthy(ctx context.Context) error {
	var r struct {
		Groups []struct {
			Name  string `json:"name"`
			Rules []struct {
				Name      string `json:"name"`
				Health    string `json:"health"`
				LastError string `json:"lastError"`
			} `json:"rules"`
		} `json:"groups"`
	}
	if err := QueryPrometheus(ctx, "/api/v1/rules", nil, &r); err != nil {
		return err
	}
	n := 0
	for _, g := range r.Groups {
		for _, rule := range g.Rules {
			n++
			if rule.Health != "ok" {
				return fmt.Errorf("rule %s/%s: health %q %s", g.Name, rule.Name, rule.Health, rule.LastError)
			}
		}
	}
	if n == 0 {
		return errors.New("no rules loaded")
	}
	return nil
}

// --- dashboards ------------------------------------------------------------

// Metrics a healthy lab always has (svcprobe_endpoint_up needs --metrics.per-endpoint, the
// annotation-error and budget metrics only appear with what they count, the native-histogram
// series only with native histogram ingestion).
var healthyLabMetrics = map[string]bool{
	"up": true, "svcprobe_service_verdict": true, "svcprobe_stage_up": true, "svcprobe_stage_runs_total": true,
	"svcprobe_stage_failures_total": true, "svcprobe_endpoints": true, "svcprobe_cluster_dns_up": true,
	"svcprobe_probe_duration_seconds_bucket": true, "svcprobe_discovery_synced": true,
	"svcprobe_discovery_events_total": true, "svcprobe_discovery_watch_errors_total": true,
	"svcprobe_discovery_last_event_timestamp_seconds": true, "svcprobe_discovery_last_progress_timestamp_seconds": true, "svcprobe_targets": true,
	"svcprobe_scheduler_lag_seconds": true, "svcprobe_scheduler_max_lag_seconds": true,
	"svcprobe_scheduler_probes_total": true, "svcprobe_scheduler_rounds_skipped_total": true,
	"svcprobe_scheduler_pending_targets": true, "svcprobe_series_budget_exceeded_services": true,
	"svcprobe_build_info": true, "svcprobe:slo_objective": true,
}

var (
	metricRef = regexp.MustCompile(`\b(up|svcprobe[a-z0-9_:]*|cluster_stage:[a-z0-9_:]+|cluster_slo:[a-z0-9_:]+)\b`)
	// A filter that is empty while everything is healthy: a comparison with a number, or only
	// the broken verdicts.
	healthyEmpty = regexp.MustCompile(`(==|!=|>=?|<=?)\s*[0-9]|layer!(=|~)"ok`)
	dashVar      = regexp.MustCompile(`\$\{([a-zA-Z_]+)(?::[a-z]+)?\}|\$([a-zA-Z_]+)|\[\[([a-zA-Z_]+)\]\]`)
)

type dashPanel struct {
	Title   string                  `json:"title"`
	Type    string                  `json:"type"`
	Targets []struct{ Expr string } `json:"targets"`
	Panels  []dashPanel             `json:"panels"`
}

// dashboardQueries returns "file: panel" -> expressions of every panel target of dashboards/*.json.
func dashboardQueries(t *testing.T) map[string][]string {
	t.Helper()
	files, err := filepath.Glob(filepath.Join("..", "dashboards", "*.json"))
	if err != nil {
		t.Fatal(err)
	}
	out := map[string][]string{}
	var walk func(file string, ps []dashPanel)
	walk = func(file string, ps []dashPanel) {
		for _, p := range ps {
			for _, tg := range p.Targets {
				if strings.TrimSpace(tg.Expr) != "" {
					k := filepath.Base(file) + ": " + p.Title
					out[k] = append(out[k], tg.Expr)
				}
			}
			walk(file, p.Panels)
		}
	}
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		var d struct {
			Panels []dashPanel `json:"panels"`
		}
		if err := json.Unmarshal(b, &d); err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		walk(f, d.Panels)
	}
	return out
}

// substitute fills the dashboard variables with one Service of the lab.
func substitute(expr, ns, svc string) (string, error) {
	vals := map[string]string{
		"cluster": ".*", "namespace": ns, "service": svc, "stage": ".*", "node": ".+",
		"__rate_interval": "30s", "__interval": "10s", "__range": "5m", "__range_s": "300",
	}
	var missing []string
	out := dashVar.ReplaceAllStringFunc(expr, func(m string) string {
		sub := dashVar.FindStringSubmatch(m)
		name := sub[1] + sub[2] + sub[3]
		v, ok := vals[name]
		if !ok {
			missing = append(missing, name)
		}
		return v
	})
	if len(missing) > 0 {
		return "", fmt.Errorf("unknown dashboard variables %v in %s", missing, expr)
	}
	return out, nil
}

// checkDashboards evaluates every panel query against the lab's Prometheus: none may fail, and
// those that must show something in a healthy lab (only always-present metrics, no filter that
// is empty when healthy) must return data for at least one of the lab's Services. Rates and the
// recording rules need a few scrapes first, so the data requirement is retried for a minute.
func checkDashboards(t *testing.T, ctx context.Context) {
	queries := dashboardQueries(t)
	if len(queries) == 0 {
		t.Skip("no dashboards/*.json yet")
	}
	deadline := time.Now().Add(time.Minute)
	for {
		missing, n, withData := evalDashboards(t, ctx, queries)
		if len(missing) == 0 {
			t.Logf("%d dashboard queries evaluated, %d with data", n, withData)
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("no data in a healthy lab for:\n  %s", strings.Join(missing, "\n  "))
		}
		time.Sleep(2 * time.Second)
	}
}

// evalDashboards runs every query once; a query error fails the test. It returns the queries
// that must have data but had none.
func evalDashboards(t *testing.T, ctx context.Context, queries map[string][]string) (missing []string, n, withData int) {
	t.Helper()
	services := [][2]string{{"default", "hostnames"}, {"kube-system", "kube-dns"}, {"svcprobe", "svcprobe-hairpin"}}
	for _, panel := range sortedKeys(queries) {
		for _, expr := range queries[panel] {
			n++
			// The node rows ($node) show node agents, which this lab run does not start.
			mustHaveData := (!healthyEmpty.MatchString(expr) || strings.Contains(expr, "vector(0)")) && !strings.Contains(expr, "$node") && !strings.Contains(expr, "${node")
			for _, ref := range metricRef.FindAllString(expr, -1) {
				if !healthyLabMetrics[ref] && !strings.HasPrefix(ref, "cluster_stage:") && !strings.HasPrefix(ref, "cluster_slo:") && !strings.Contains(expr, "vector(0)") {
					mustHaveData = false
				}
			}
			got := false
			for _, s := range services {
				q, err := substitute(expr, s[0], s[1])
				if err != nil {
					t.Fatalf("%s: %v", panel, err)
				}
				var res struct {
					Result []json.RawMessage `json:"result"`
				}
				if err := QueryPrometheus(ctx, "/api/v1/query", url.Values{"query": {q}}, &res); err != nil {
					t.Fatalf("%s: %s: %v", panel, q, err)
				}
				if len(res.Result) > 0 {
					got = true
					break
				}
			}
			switch {
			case got:
				withData++
			case mustHaveData:
				missing = append(missing, panel+": "+expr)
			}
		}
	}
	return missing, n, withData
}

// alertsScaledToZero: Deployment hostnames scaled to 0 on purpose is idle on /metrics, and no
// per-layer alert goes pending while it lasts: the spec alert (its verdict before issue 17) would
// go pending within two evaluations (2 s each), and this watches ten intervals. Scaled back to 3,
// the Service is ok again.
func alertsScaledToZero(t *testing.T, ctx context.Context, cfg *Config, cl kubernetes.Interface) {
	f, err := FaultByName("scaled-to-zero")
	if err != nil {
		t.Fatal(err)
	}
	settle(t, ctx, cl)
	noLayerAlertActive(t, cfg, "before scaled-to-zero")
	undone := false
	undoOnCleanup(t, cfg, cl, f, &undone)
	if err := f.Inject(ctx, cfg, cl); err != nil {
		t.Fatal(err)
	}
	took := waitMetrics(t, "hostnames idle", 3*e2eInterval+4*time.Second, hostnamesIs("idle/scaled_to_zero")(ctx, cl))
	end := time.Now().Add(10 * e2eInterval)
	checks := 0
	for time.Now().Before(end) {
		alerts, err := promAlerts(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if firing, pending := layerAlerts(alerts); len(firing)+len(pending) > 0 {
			t.Fatalf("scaled to zero: alerts firing %v, pending %v; an intended state must page nobody", sortedKeys(firing), sortedKeys(pending))
		}
		checks++
		time.Sleep(500 * time.Millisecond)
	}
	if err := f.Undo(ctx, cfg, cl); err != nil {
		t.Fatal(err)
	}
	undone = true
	back := waitMetrics(t, "hostnames ok after scaling back", 3*e2eInterval+6*time.Second, allOK(ctx, cl))
	t.Logf("idle after %s; %d alert checks over %s, none pending; ok %s after scaling back to 3",
		took.Round(10*time.Millisecond), checks, 10*e2eInterval, back.Round(10*time.Millisecond))
}

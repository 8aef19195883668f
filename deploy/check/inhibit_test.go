package check

// The Alertmanager configuration of deploy/alertmanager, read with Alertmanager's own config
// package and run through its inhibit package: for the fault scenarios the rules describe (and the
// lab produces, see lab/alerts_test.go), exactly the expected alerts are muted. Also amtool
// check-config on the file, and a cross-check that every alert name the inhibit rules match is an
// alert of deploy/rules, with a shorter for: on the source side where the source must fire first.

import (
	"context"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/alertmanager/alert"
	"github.com/prometheus/alertmanager/config"
	"github.com/prometheus/alertmanager/eventrecorder"
	"github.com/prometheus/alertmanager/inhibit"
	"github.com/prometheus/alertmanager/labelset"
	"github.com/prometheus/alertmanager/pkg/labels"
	"github.com/prometheus/alertmanager/provider/mem"
	"github.com/prometheus/common/model"
	"github.com/prometheus/common/promslog"
)

func alertmanagerConfigPath(t *testing.T) string {
	return filepath.Join(repoRoot(t), "deploy", "alertmanager", "alertmanager.yml")
}

func TestAlertmanagerConfigAmtool(t *testing.T) {
	amtool := lookupPromTool(t, "AMTOOL", "amtool", alertmanagerVersion)
	out := runTool(t, repoRoot(t), amtool, "check-config", alertmanagerConfigPath(t))
	if !strings.Contains(out, "SUCCESS") || !strings.Contains(out, "inhibit rules") {
		t.Fatalf("amtool check-config:\n%s", out)
	}
}

// muted returns, for each target, whether Alertmanager's inhibitor mutes it while the sources fire
// (only the sources are in the provider: a target that is a source too would mute its peers).
func muted(t *testing.T, cfg *config.Config, sources []model.LabelSet, targets []model.LabelSet) []bool {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	logger := promslog.NewNopLogger()
	alerts, err := mem.NewAlerts(ctx, time.Hour, 0, nil, logger, eventrecorder.NopRecorder(), nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer alerts.Close()
	now := time.Now()
	var firing []*alert.Alert
	for _, ls := range sources {
		firing = append(firing, alert.New(model.Alert{Labels: ls, StartsAt: now.Add(-time.Minute), EndsAt: now.Add(time.Hour)}, now, false))
	}
	if err := alerts.Put(ctx, firing...); err != nil {
		t.Fatal(err)
	}
	ih := inhibit.NewInhibitor(alerts, cfg.InhibitRules, logger, eventrecorder.NopRecorder())
	done := make(chan struct{})
	go func() { ih.Run(); close(done) }()
	ih.WaitForLoading()
	defer func() { ih.Stop(); <-done }()
	out := make([]bool, len(targets))
	for i, ls := range targets {
		out[i] = ih.Mutes(ctx, labelset.FromModel(ls))
	}
	return out
}

// Label sets as Prometheus sends them for the shipped rules: the cluster-wide alerts keep job and
// instance from the scrape; the per-Service ones aggregate them away (cluster, namespace, service,
// layer).
func perService(name, layer, ns, svc string, extra ...string) model.LabelSet {
	ls := model.LabelSet{"alertname": model.LabelValue(name), "layer": model.LabelValue(layer), "severity": "warning",
		"namespace": model.LabelValue(ns), "service": model.LabelValue(svc)}
	return with(ls, extra...)
}

func clusterWide(name, layer string, extra ...string) model.LabelSet {
	ls := model.LabelSet{"alertname": model.LabelValue(name), "layer": model.LabelValue(layer), "severity": "critical",
		"job": "svcprobe", "instance": "10.0.0.9:9817"}
	return with(ls, extra...)
}

func burn(stage string, extra ...string) model.LabelSet {
	ls := model.LabelSet{"alertname": "SvcprobeErrorBudgetBurn", "stage": model.LabelValue(stage), "layer": model.LabelValue(stage),
		"severity": "critical", "burn_rate": "14.4", "long_window": "1h", "short_window": "5m"}
	return with(ls, extra...)
}

func with(ls model.LabelSet, kv ...string) model.LabelSet {
	ls = ls.Clone()
	for i := 0; i+1 < len(kv); i += 2 {
		if kv[i+1] == "" {
			delete(ls, model.LabelName(kv[i]))
			continue
		}
		ls[model.LabelName(kv[i])] = model.LabelValue(kv[i+1])
	}
	return ls
}

func TestInhibition(t *testing.T) {
	cfg, err := config.LoadFile(alertmanagerConfigPath(t))
	if err != nil {
		t.Fatal(err)
	}
	if len(cfg.InhibitRules) == 0 {
		t.Fatal("no inhibit_rules in the shipped config")
	}
	dnsDown := clusterWide("ClusterDNSDown", "dns")
	proxyDown := clusterWide("ServiceProxyDownOnNode", "proxy")
	notSynced := model.LabelSet{"alertname": "SvcprobeDiscoveryNotSynced", "layer": "exporter", "severity": "critical",
		"job": "svcprobe", "instance": "10.0.0.9:9817"}
	type target struct {
		ls    model.LabelSet
		muted bool
	}
	for _, c := range []struct {
		name    string
		sources []model.LabelSet
		targets []target
	}{
		{
			// The lab's dns-down fault: every Service's DNS alert, kube-dns's own endpoints alert
			// and the dns stage's budget burn page as one ClusterDNSDown.
			name:    "cluster DNS down",
			sources: []model.LabelSet{dnsDown},
			targets: []target{
				{perService("SvcprobeServiceDNSBroken", "dns", "default", "hostnames"), true},
				{perService("SvcprobeServiceDNSBroken", "dns", "svcprobe", "svcprobe"), true},
				{perService("SvcprobeServiceEndpointsMissing", "endpoints", "kube-system", "kube-dns"), true},
				{burn("dns"), true},
				// Not explained by DNS: other layers, other Services, other clusters, itself.
				{perService("SvcprobeServiceEndpointsMissing", "endpoints", "default", "hostnames"), false},
				{perService("SvcprobeServiceProxyBroken", "proxy", "default", "hostnames"), false},
				{perService("SvcprobeServiceDNSBroken", "dns", "default", "hostnames", "cluster", "other"), false},
				{burn("endpoints"), false},
				{burn("proxy"), false},
				{proxyDown, false},
				{dnsDown, false},
			},
		},
		{
			name:    "cluster DNS down in one of two clusters",
			sources: []model.LabelSet{with(dnsDown, "cluster", "eu")},
			targets: []target{
				{perService("SvcprobeServiceDNSBroken", "dns", "default", "web", "cluster", "eu"), true},
				{perService("SvcprobeServiceDNSBroken", "dns", "default", "web", "cluster", "us"), false},
				{perService("SvcprobeServiceDNSBroken", "dns", "default", "web"), false},
			},
		},
		{
			// The lab's kube-proxy-down fault (central mode, no node label anywhere).
			name:    "service proxy down, central mode",
			sources: []model.LabelSet{proxyDown},
			targets: []target{
				{perService("SvcprobeServiceProxyBroken", "proxy", "default", "hostnames"), true},
				{perService("SvcprobeServiceProxyBroken", "proxy", "kube-system", "kube-dns"), true},
				{perService("SvcprobeServiceHairpinBroken", "hairpin", "svcprobe", "svcprobe-hairpin"), true},
				{burn("proxy"), true},
				{burn("dns"), true},
				{burn("hairpin"), true},
				{perService("SvcprobeServiceDNSBroken", "dns", "default", "hostnames"), false},
				{perService("SvcprobeServicePodsUnreachable", "pod", "default", "hostnames"), false},
				{perService("SvcprobeServiceEndpointsMissing", "endpoints", "default", "hostnames"), false},
				{burn("pod"), false},
				{burn("endpoints"), false},
				{perService("SvcprobeServiceProxyBroken", "proxy", "default", "hostnames", "cluster", "other"), false},
				{dnsDown, false},
				{proxyDown, false},
			},
		},
		{
			// Node mode: the proxy of node a is down; Services probed from node b still page.
			name:    "service proxy down on one node, node mode",
			sources: []model.LabelSet{with(proxyDown, "node", "a")},
			targets: []target{
				{perService("SvcprobeServiceProxyBroken", "proxy", "default", "web", "node", "a"), true},
				{perService("SvcprobeServiceProxyBroken", "proxy", "default", "web", "node", "b"), false},
				{perService("SvcprobeServiceProxyBroken", "proxy", "default", "web"), false},
			},
		},
		{
			name:    "exporter not synced",
			sources: []model.LabelSet{notSynced},
			targets: []target{
				{perService("SvcprobeServiceDNSBroken", "dns", "default", "hostnames"), true},
				{perService("SvcprobeServiceMissing", "missing", "default", "hostnames"), true},
				{perService("SvcprobeServiceSpecInvalid", "spec", "default", "hostnames"), true},
				{perService("SvcprobeServicePodsUnreachable", "pod", "default", "hostnames"), true},
				{perService("SvcprobeServiceHairpinBroken", "hairpin", "svcprobe", "svcprobe-hairpin"), true},
				{dnsDown, true},
				{proxyDown, true},
				// Another replica's cluster-wide alerts still page; other exporters are not
				// svcprobe; another cluster's Services page.
				{with(dnsDown, "instance", "10.0.0.10:9817"), false},
				{perService("SvcprobeServiceDNSBroken", "dns", "default", "hostnames", "cluster", "other"), false},
				{model.LabelSet{"alertname": "KubePodNotReady", "instance": "10.0.0.9:9817", "namespace": "default"}, false},
				{notSynced, false},
			},
		},
		{
			name:    "nothing firing at the cluster level: every per-Service alert pages",
			sources: nil,
			targets: []target{
				{perService("SvcprobeServiceDNSBroken", "dns", "default", "hostnames"), false},
				{perService("SvcprobeServiceProxyBroken", "proxy", "default", "hostnames"), false},
				{perService("SvcprobeServiceEndpointsMissing", "endpoints", "kube-system", "kube-dns"), false},
				{burn("dns"), false},
			},
		},
	} {
		t.Run(c.name, func(t *testing.T) {
			var ls []model.LabelSet
			for _, tg := range c.targets {
				ls = append(ls, tg.ls)
			}
			got := muted(t, cfg, c.sources, ls)
			for i, tg := range c.targets {
				if got[i] != tg.muted {
					t.Errorf("%v: muted=%v, want %v", tg.ls, got[i], tg.muted)
				}
			}
		})
	}
}

// TestInhibitionMatchesRules: the alert names the inhibit rules match exist in deploy/rules, and a
// cluster-wide source fires before (shorter for:) the per-Service alerts it mutes: Alertmanager
// only inhibits while the source is firing, so a slower source would let every Service page once.
func TestInhibitionMatchesRules(t *testing.T) {
	cfg, err := config.LoadFile(alertmanagerConfigPath(t))
	if err != nil {
		t.Fatal(err)
	}
	forOf := map[string]time.Duration{}
	for _, rgs := range loadRules(t) {
		for _, g := range rgs.Groups {
			for _, r := range g.Rules {
				if r.Alert != "" {
					if d, ok := forOf[r.Alert]; !ok || time.Duration(r.For) < d {
						forOf[r.Alert] = time.Duration(r.For)
					}
				}
			}
		}
	}
	names := func(ms labels.Matchers) []string {
		var out []string
		for _, m := range ms {
			if m.Name != "alertname" {
				continue
			}
			for n := range forOf {
				if m.Matches(n) {
					out = append(out, n)
				}
			}
			if len(out) == 0 {
				t.Errorf("matcher %s matches no alert of deploy/rules", m)
			}
		}
		return out
	}
	for _, r := range cfg.InhibitRules {
		if r.Name == "" {
			t.Errorf("inhibit rule without a name: %+v", r)
		}
		src, dst := names(labels.Matchers(r.SourceMatchers)), names(labels.Matchers(r.TargetMatchers))
		if len(src) == 0 || len(dst) == 0 {
			t.Errorf("inhibit rule %s: source and target must each name alerts (alertname matcher)", r.Name)
			continue
		}
		if strings.Contains(r.Name, "not-synced") {
			continue // the exporter's own alert waits 5m on purpose: startup
		}
		for _, s := range src {
			for _, d := range dst {
				if strings.HasPrefix(d, "SvcprobeService") && forOf[s] >= forOf[d] {
					t.Errorf("inhibit rule %s: source %s (for %s) must fire before target %s (for %s)", r.Name, s, forOf[s], d, forOf[d])
				}
			}
		}
	}
}

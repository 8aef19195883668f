package metrics

import (
	"net/netip"
	"testing"

	"github.com/svcprobe/svcprobe/probe"
	"k8s.io/apimachinery/pkg/types"
)

func verdictOf(t *testing.T, s *Store, name string) (Layer, probe.Reason, ServiceStatus) {
	t.Helper()
	snap, _ := s.Snapshot()
	for _, st := range snap {
		if st.Target.Name == name {
			return st.Verdict, st.Reason, st
		}
	}
	t.Fatalf("no Service %s in the store", name)
	return "", "", ServiceStatus{}
}

// The store keeps each network stage's rounds and the verdict follows the window: one failed
// round makes no verdict, the second in a row does, a good round after a hard failure is ok at
// once, and failures apart are held as partial through the rounds that pass.
func TestStoreVerdictFollowsWindow(t *testing.T) {
	s := NewStore()
	tg := target("default", "hostnames")
	s.Record(tg, healthy())
	proxyFail := fail(probe.StageProxy, probe.ReasonTimeout) // a hard failure: every connection
	proxyOK := ok(probe.StageProxy)
	// A partial round: one connection of four failed.
	proxyPart := probe.Result{Stage: probe.StageProxy, Outcome: probe.Failed, Reason: probe.ReasonTimeout, Failing: 1, Total: 4, Intermittent: true}
	steps := []struct {
		r      probe.Result
		layer  Layer
		reason probe.Reason
	}{
		{proxyFail, LayerOK, probe.ReasonSuccess},              // one failed round among good ones
		{proxyFail, LayerProxy, probe.ReasonTimeout},           // two in a row
		{proxyFail, LayerProxy, probe.ReasonTimeout},           // held
		{proxyOK, LayerOK, probe.ReasonSuccess},                // recovery at once; the hard failure's rounds close
		{proxyFail, LayerOK, probe.ReasonSuccess},              // a lone failure after it is not a second run
		{proxyOK, LayerOK, probe.ReasonSuccess},                //
		{proxyPart, LayerProxy, probe.ReasonPartial},           // two failed rounds apart: partial
		{proxyOK, LayerProxy, probe.ReasonPartial},             // held through a good round
		{proxyPart, LayerProxy, probe.ReasonPartial},           //
		{proxyPart, LayerProxy, probe.ReasonTimeout},           // two in a row: failed, with the reason
		{proxyOK, LayerProxy, probe.ReasonPartial},             // a partial run does not close: still held
		{skip(probe.StageProxy), LayerOK, probe.ReasonSuccess}, // no longer applies: window dropped
	}
	for i, st := range steps {
		s.Record(tg, []probe.Result{st.r})
		layer, reason, ss := verdictOf(t, s, "hostnames")
		if layer != st.layer || reason != st.reason {
			t.Fatalf("round %d (%s): verdict %s/%s, want %s/%s (window %+v)", i, st.r.Outcome, layer, reason, st.layer, st.reason, ss.Windows[probe.StageProxy])
		}
	}
	if _, _, ss := verdictOf(t, s, "hostnames"); len(ss.Windows) == 0 || ss.Windows[probe.StageProxy].Rounds != 0 {
		t.Errorf("windows after the skip: %+v, want the proxy window gone", ss.Windows)
	}
}

// The window is bounded: --verdict.window rounds, the oldest dropped; partial ages out.
func TestStoreWindowBounded(t *testing.T) {
	s := NewStore()
	s.SetWindow(4)
	tg := target("default", "hostnames")
	s.Record(tg, healthy())
	for _, r := range []probe.Result{fail(probe.StageDNS, probe.ReasonTimeout), ok(probe.StageDNS), fail(probe.StageDNS, probe.ReasonTimeout)} {
		s.Record(tg, []probe.Result{r})
	}
	if layer, reason, ss := verdictOf(t, s, "hostnames"); layer != LayerDNS || reason != probe.ReasonPartial || ss.Windows[probe.StageDNS].Rounds != 4 {
		t.Fatalf("verdict %s/%s window %+v, want dns/partial over 4 rounds", layer, reason, ss.Windows[probe.StageDNS])
	}
	for range 3 {
		s.Record(tg, []probe.Result{ok(probe.StageDNS)})
	}
	// Window now: fail, ok, ok, ok: one failure left, still held (partial recovery shows when
	// the failures have left the window).
	if layer, reason, ss := verdictOf(t, s, "hostnames"); layer != LayerDNS || reason != probe.ReasonPartial || ss.Windows[probe.StageDNS].FailedRounds != 1 {
		t.Fatalf("verdict %s/%s window %+v, want dns/partial held with one failed round of 4", layer, reason, ss.Windows[probe.StageDNS])
	}
	s.Record(tg, []probe.Result{ok(probe.StageDNS)})
	if layer, _, ss := verdictOf(t, s, "hostnames"); layer != LayerOK || ss.Windows[probe.StageDNS].Rounds != 4 || ss.Windows[probe.StageDNS].FailedRounds != 0 {
		t.Fatalf("verdict %s window %+v, want ok with no failed round of 4", layer, ss.Windows[probe.StageDNS])
	}
}

// The failing share counts attempts (connections), not rounds.
func TestWindowFailureRatio(t *testing.T) {
	w := newWindow(8)
	w.add(probe.Result{Stage: probe.StageProxy, Outcome: probe.Failed, Reason: probe.ReasonTimeout, Failing: 1, Total: 4})
	w.add(probe.Result{Stage: probe.StageProxy, Outcome: probe.OK, Reason: probe.ReasonSuccess, Total: 4})
	w.add(probe.Result{Stage: probe.StageProxy, Outcome: probe.Failed, Reason: probe.ReasonTimeout, Failing: 2, Total: 4})
	got := w.snapshot()
	if got.Failing != 3 || got.Total != 12 || got.FailureRatio() != 0.25 || got.State != StateDegraded {
		t.Fatalf("window %+v ratio %v, want 3 of 12 (0.25), degraded", got, got.FailureRatio())
	}
	// A result without counts is one attempt.
	w2 := newWindow(8)
	w2.add(fail(probe.StageDNS, probe.ReasonTimeout))
	if g := w2.snapshot(); g.Failing != 1 || g.Total != 1 || g.State != StateFailed {
		t.Fatalf("window %+v, want 1 of 1, failed", g)
	}
}

// Cross-Service evidence: a headless Service's DNS failing through the DNS Service's VIP is the
// proxy only while other Services' VIPs fail too; the DNS Service's own VIP is not counted as
// one of them.
func TestStoreDNSBlamedOnProxyOnlyWithOtherVIPsFailing(t *testing.T) {
	s := NewStore()
	headless := target("default", "db")
	dnsFail := fail(probe.StageDNS, probe.ReasonTimeout)
	s.Record(headless, []probe.Result{ok(probe.StageSpec), ok(probe.StageEndpoints), dnsFail, ok(probe.StagePod), skip(probe.StageProxy)})
	kubeDNS := target("kube-system", "kube-dns")
	kubeDNS.ClusterIPs = []netip.Addr{dnsServiceIP}
	kubeDNS.UID = types.UID("kube-dns")
	s.Record(kubeDNS, []probe.Result{ok(probe.StageSpec), ok(probe.StageEndpoints), ok(probe.StagePod), fail(probe.StageProxy, probe.ReasonTimeout)})
	s.RecordClusterDNS(*clusterDNS(false, true, true))

	// Only the DNS Service's VIP fails: dns.
	if layer, reason, _ := verdictOf(t, s, "db"); layer != LayerDNS || reason != probe.ReasonTimeout {
		t.Fatalf("only the DNS VIP failing: verdict %s/%s, want dns/timeout", layer, reason)
	}
	if layer, _, _ := verdictOf(t, s, "kube-dns"); layer != LayerProxy {
		t.Fatalf("kube-dns itself: verdict %s, want proxy (its own VIP fails while its Pods answer)", layer)
	}
	// Another Service's VIP fails too: now kube-proxy is what broke DNS.
	web := target("default", "web")
	web.UID = types.UID("web")
	s.Record(web, []probe.Result{ok(probe.StageSpec), ok(probe.StageEndpoints), ok(probe.StagePod), fail(probe.StageProxy, probe.ReasonUnreachable), dnsFail})
	if layer, reason, _ := verdictOf(t, s, "db"); layer != LayerProxy || reason != probe.ReasonTimeout {
		t.Fatalf("other VIPs failing too: verdict %s/%s, want proxy/timeout", layer, reason)
	}
	// A Service whose own ClusterIP answered is never blamed on the proxy for its DNS failing.
	api := target("default", "api")
	api.UID = types.UID("api")
	s.Record(api, []probe.Result{ok(probe.StageSpec), ok(probe.StageEndpoints), ok(probe.StagePod), ok(probe.StageProxy), dnsFail})
	if layer, _, _ := verdictOf(t, s, "api"); layer != LayerDNS {
		t.Fatalf("own ClusterIP answered: verdict %s, want dns", layer)
	}
}

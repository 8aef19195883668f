package metrics

import (
	"fmt"
	"net/netip"
	"slices"
	"testing"
	"time"

	"github.com/svcprobe/svcprobe/discovery"
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

// A hard failure that begins or ends in the middle of a round (kube-proxy stopped while the
// round's connections were in flight: some answered, the rest did not) is still a hard failure:
// its mixed first and last rounds do not hold it as partial, and recovery shows at once (found in
// the lab: kube-proxy-down-node2 left kube-dns proxy/partial for a whole window after the undo).
// Mixed rounds apart from a hard run still do.
func TestStoreHardFailureWithMixedEdges(t *testing.T) {
	s := NewStore()
	tg := target("kube-system", "kube-dns")
	s.Record(tg, healthy())
	proxyFail := fail(probe.StageProxy, probe.ReasonTimeout)
	proxyOK := ok(probe.StageProxy)
	proxyPart := probe.Result{Stage: probe.StageProxy, Outcome: probe.Failed, Reason: probe.ReasonTimeout, Failing: 2, Total: 4, Intermittent: true}
	steps := []struct {
		r      probe.Result
		layer  Layer
		reason probe.Reason
	}{
		{proxyPart, LayerOK, probe.ReasonSuccess},    // the onset, mid-round
		{proxyFail, LayerProxy, probe.ReasonTimeout}, // two in a row
		{proxyFail, LayerProxy, probe.ReasonTimeout}, // whole failures: a hard run
		{proxyFail, LayerProxy, probe.ReasonTimeout}, //
		{proxyPart, LayerProxy, probe.ReasonTimeout}, // the end, mid-round
		{proxyOK, LayerOK, probe.ReasonSuccess},      // recovery at once
		{proxyOK, LayerOK, probe.ReasonSuccess},      //
		{proxyPart, LayerOK, probe.ReasonSuccess},    // a lone failure after the closed run
		{proxyOK, LayerOK, probe.ReasonSuccess},      //
		{proxyPart, LayerProxy, probe.ReasonPartial}, // a second one, apart: partial
		{proxyOK, LayerProxy, probe.ReasonPartial},   // held
	}
	for i, st := range steps {
		s.Record(tg, []probe.Result{st.r})
		layer, reason, ss := verdictOf(t, s, "kube-dns")
		if layer != st.layer || reason != st.reason {
			t.Fatalf("round %d (%s): verdict %s/%s, want %s/%s (window %+v)", i, st.r.Outcome, layer, reason, st.layer, st.reason, ss.Windows[probe.StageProxy])
		}
	}
	// Two mixed rounds in a row with no whole failure among them: a fault that comes and goes.
	s2 := NewStore()
	s2.Record(tg, healthy())
	for _, r := range []probe.Result{proxyPart, proxyPart, proxyFail, proxyOK} {
		s2.Record(tg, []probe.Result{r})
	}
	if layer, reason, ss := verdictOf(t, s2, "kube-dns"); layer != LayerProxy || reason != probe.ReasonPartial {
		t.Fatalf("mixed, mixed, failed, ok: verdict %s/%s, want proxy/partial (window %+v)", layer, reason, ss.Windows[probe.StageProxy])
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
	w.add(probe.Result{Stage: probe.StageProxy, Outcome: probe.Failed, Reason: probe.ReasonTimeout, Failing: 1, Total: 4}, false)
	w.add(probe.Result{Stage: probe.StageProxy, Outcome: probe.OK, Reason: probe.ReasonSuccess, Total: 4}, false)
	w.add(probe.Result{Stage: probe.StageProxy, Outcome: probe.Failed, Reason: probe.ReasonTimeout, Failing: 2, Total: 4}, false)
	got := w.snapshot()
	if got.Failing != 3 || got.Total != 12 || got.FailureRatio() != 0.25 || got.State != StateDegraded {
		t.Fatalf("window %+v ratio %v, want 3 of 12 (0.25), degraded", got, got.FailureRatio())
	}
	// A result without counts is one attempt.
	w2 := newWindow(8)
	w2.add(fail(probe.StageDNS, probe.ReasonTimeout), false)
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

// A VIP whose connections fail only where they land on a dead backend, while the pod stage fails
// that backend directly (the lab's backend-killed): those rounds are the Pods', not the proxy's.
// The proxy window stays ok through them, the verdict is pod while it lasts and ok in the first
// round after the Pod answers again (found in CI: the proxy window held partial for 8 rounds
// after the recovery, and the verdict said proxy/partial).
func TestStoreVIPFailuresExplainedByPods(t *testing.T) {
	s := NewStore()
	tg := target("default", "hostnames")
	s.Record(tg, healthy())
	podRefused := probe.Result{Stage: probe.StagePod, Outcome: probe.Failed, Reason: probe.ReasonRefused, Failing: 1, Total: 3}
	vipMixed := probe.Result{Stage: probe.StageProxy, Outcome: probe.Failed, Reason: probe.ReasonRefused, Failing: 1, Total: 3, Intermittent: true}
	for i := range 6 {
		r := vipMixed
		if i%3 == 2 {
			r = ok(probe.StageProxy) // no connection landed on the dead Pod
		}
		s.Record(tg, []probe.Result{podRefused, r})
		layer, reason, ss := verdictOf(t, s, "hostnames")
		if i >= 1 && (layer != LayerPod || reason != probe.ReasonRefused) {
			t.Fatalf("round %d of the dead backend: verdict %s/%s, want pod/refused", i, layer, reason)
		}
		if w := ss.Windows[probe.StageProxy]; w.State != StateOK || w.FailedRounds != 0 {
			t.Fatalf("round %d: proxy window %+v, want ok: its failures are the Pod's", i, w)
		}
	}
	if _, _, ss := verdictOf(t, s, "hostnames"); ss.Windows[probe.StageProxy].Failing == 0 {
		t.Errorf("proxy window %+v: the failing connections should still count in its share", ss.Windows[probe.StageProxy])
	}
	s.Record(tg, []probe.Result{ok(probe.StagePod), ok(probe.StageProxy)})
	if layer, reason, ss := verdictOf(t, s, "hostnames"); layer != LayerOK {
		t.Fatalf("first round after the backend answers: verdict %s/%s (windows %+v), want ok at once", layer, reason, ss.Windows)
	}
}

// A flaky Pod: its own check fails in some rounds, the VIP's connections that land on it fail in
// others. Even after the pod stage's failed run is closed (a hard failure that ended), the VIP
// failing soon after is the Pod, partial (found in the lab's pod-flaky: proxy/timeout while the
// pod window had no failed round left). Two windows later it is the proxy again.
func TestStoreFlakyPodNotBlamedOnProxy(t *testing.T) {
	s := NewStore()
	tg := target("default", "hostnames")
	s.Record(tg, healthy())
	podTimeout := fail(probe.StagePod, probe.ReasonTimeout)
	vipFail := fail(probe.StageProxy, probe.ReasonTimeout)
	// The Pod fails two rounds in a row (the VIP's connections all went elsewhere), then passes:
	// its window's rounds are closed.
	s.Record(tg, []probe.Result{podTimeout, ok(probe.StageProxy)})
	s.Record(tg, []probe.Result{podTimeout, ok(probe.StageProxy)})
	s.Record(tg, []probe.Result{ok(probe.StagePod), ok(probe.StageProxy)})
	if _, _, ss := verdictOf(t, s, "hostnames"); ss.Windows[probe.StagePod].FailedRounds != 0 {
		t.Fatalf("pod window %+v, want its hard failure's rounds closed", ss.Windows[probe.StagePod])
	}
	// Now the VIP fails two rounds while the Pod's own check passes.
	for range 2 {
		s.Record(tg, []probe.Result{ok(probe.StagePod), vipFail})
	}
	if layer, reason, ss := verdictOf(t, s, "hostnames"); layer != LayerPod || reason != probe.ReasonPartial {
		t.Fatalf("VIP failing right after the Pod failed: verdict %s/%s (windows %+v), want pod/partial", layer, reason, ss.Windows)
	}
	// Two windows of rounds without a Pod failure: the VIP failing now is the proxy.
	for range 2 * DefaultWindow {
		s.Record(tg, []probe.Result{ok(probe.StagePod), ok(probe.StageProxy)})
	}
	for range 2 {
		s.Record(tg, []probe.Result{ok(probe.StagePod), vipFail})
	}
	if layer, reason, _ := verdictOf(t, s, "hostnames"); layer != LayerProxy || reason != probe.ReasonTimeout {
		t.Fatalf("VIP failing long after the Pod: verdict %s/%s, want proxy/timeout", layer, reason)
	}
}

// A Service whose own Pods fail says nothing of the service proxy: its failing VIP is not one of
// the "other VIPs" that decide between dns and proxy.
func TestStoreVIPTallySkipsServicesWithFailingPods(t *testing.T) {
	s := NewStore()
	headless := target("default", "db")
	dnsFail := fail(probe.StageDNS, probe.ReasonTimeout)
	s.Record(headless, []probe.Result{ok(probe.StageSpec), ok(probe.StageEndpoints), dnsFail, ok(probe.StagePod), skip(probe.StageProxy)})
	s.RecordClusterDNS(*clusterDNS(false, true, true))
	dead := target("default", "dead")
	dead.UID = types.UID("dead")
	s.Record(dead, []probe.Result{ok(probe.StageSpec), ok(probe.StageEndpoints), fail(probe.StagePod, probe.ReasonRefused), fail(probe.StageProxy, probe.ReasonRefused)})
	if layer, reason, _ := verdictOf(t, s, "db"); layer != LayerDNS || reason != probe.ReasonTimeout {
		t.Fatalf("the only other failing VIP is one whose Pods are dead: verdict %s/%s, want dns/timeout", layer, reason)
	}
	// The same Service with Pods that answer: its failing VIP is evidence against the proxy.
	s.Record(dead, []probe.Result{ok(probe.StagePod), fail(probe.StageProxy, probe.ReasonTimeout)})
	if layer, _, _ := verdictOf(t, s, "db"); layer != LayerProxy {
		t.Fatalf("another VIP failing with its Pods answering: verdict %s, want proxy", layer)
	}
}

// The proxy stage's closer look found the Pods failing direct connections: the VIP's failures in
// that round are the Pods' (the proxy window stays ok) and the verdict is pod, partial, even
// before the pod stage's own connection to the flaky Pod has failed once.
func TestStoreCloserLookBlamesPods(t *testing.T) {
	s := NewStore()
	tg := target("default", "hostnames")
	s.Record(tg, healthy())
	vipFlaky := probe.Result{Stage: probe.StageProxy, Outcome: probe.Failed, Reason: probe.ReasonTimeout, Failing: 1, Total: 3, Intermittent: true, PodsFailing: 2}
	for range 2 {
		s.Record(tg, []probe.Result{ok(probe.StagePod), vipFlaky})
	}
	layer, reason, ss := verdictOf(t, s, "hostnames")
	if w := ss.Windows[probe.StageProxy]; w.State != StateOK {
		t.Fatalf("proxy window %+v, want ok: the closer look put its failures on the Pods", w)
	}
	if w := ss.Windows[probe.StagePod]; !w.FailedWithin(1) {
		t.Fatalf("pod window %+v, want the closer look's failure remembered", w)
	}
	// The pod window holds no failed round of its own: the verdict follows the memory.
	if layer != LayerOK && (layer != LayerPod || reason != probe.ReasonPartial) {
		t.Fatalf("verdict %s/%s, want ok or pod/partial", layer, reason)
	}
	// Without the store's windows (diagnose's one-shot verdict), the latest result alone says pod.
	if l, r := Verdict(map[probe.Stage]probe.Result{probe.StagePod: ok(probe.StagePod), probe.StageProxy: vipFlaky}, nil); l != LayerPod || r != probe.ReasonPartial {
		t.Fatalf("one-shot verdict %s/%s, want pod/partial", l, r)
	}
	// A later VIP failure the closer look could not pin on the Pods is still theirs, partial.
	for range 2 {
		s.Record(tg, []probe.Result{ok(probe.StagePod), fail(probe.StageProxy, probe.ReasonTimeout)})
	}
	if layer, reason, _ := verdictOf(t, s, "hostnames"); layer != LayerPod || reason != probe.ReasonPartial {
		t.Fatalf("VIP failing after the closer look blamed the Pods: verdict %s/%s, want pod/partial", layer, reason)
	}
}

// A Pod failed a few rounds ago (a backend restarted), then the VIP fails part of its connections
// while the closer look finds every Pod answering (a stale rule, the lab's vip-partial right after
// backend-killed): the memory of the Pod's failure is dropped, and the verdict is the proxy.
func TestStoreCloserLookClearsPods(t *testing.T) {
	s := NewStore()
	tg := target("default", "hostnames")
	s.Record(tg, healthy())
	s.Record(tg, []probe.Result{fail(probe.StagePod, probe.ReasonRefused), ok(probe.StageProxy)})
	s.Record(tg, []probe.Result{fail(probe.StagePod, probe.ReasonRefused), ok(probe.StageProxy)})
	s.Record(tg, []probe.Result{ok(probe.StagePod), ok(probe.StageProxy)})
	stale := probe.Result{Stage: probe.StageProxy, Outcome: probe.Failed, Reason: probe.ReasonTimeout, Failing: 1, Total: 3, Intermittent: true}
	// Without a closer look the memory holds: pod, partial.
	for range 2 {
		s.Record(tg, []probe.Result{ok(probe.StagePod), stale})
	}
	if layer, reason, _ := verdictOf(t, s, "hostnames"); layer != LayerPod || reason != probe.ReasonPartial {
		t.Fatalf("no closer look: verdict %s/%s, want pod/partial", layer, reason)
	}
	stale.LookedCloser = true
	s.Record(tg, []probe.Result{ok(probe.StagePod), stale})
	layer, reason, ss := verdictOf(t, s, "hostnames")
	if layer != LayerProxy || ss.Windows[probe.StagePod].SinceFailed != -1 {
		t.Fatalf("closer look found the Pods answering: verdict %s/%s pod window %+v, want proxy and the memory gone", layer, reason, ss.Windows[probe.StagePod])
	}
	// But not in a round where the pod stage itself failed.
	s.Record(tg, []probe.Result{fail(probe.StagePod, probe.ReasonTimeout), stale})
	if _, _, ss := verdictOf(t, s, "hostnames"); ss.Windows[probe.StagePod].SinceFailed != 0 {
		t.Fatalf("pod window %+v, want the failure of this round remembered", ss.Windows[probe.StagePod])
	}
}

// An idle Service (its workload scaled to zero): the verdict is idle, and its skipped spec and
// endpoints stages count no run, so no SLO ratio sees it.
func TestStoreIdleCountsNoRun(t *testing.T) {
	s := NewStore()
	tg := target("dev", "idle")
	s.Record(tg, []probe.Result{idleSkip(probe.StageSpec), idleSkip(probe.StageEndpoints), ok(probe.StageDNS), skip(probe.StagePod), skip(probe.StageProxy)})
	layer, reason, ss := verdictOf(t, s, "idle")
	if layer != LayerIdle || reason != probe.ReasonScaledToZero || !layer.Intended() {
		t.Fatalf("verdict %s/%s, want idle/scaled_to_zero (intended)", layer, reason)
	}
	for _, st := range []probe.Stage{probe.StageSpec, probe.StageEndpoints} {
		if c, ok := ss.Counts[st]; ok {
			t.Errorf("%s counted %+v while idle, want no run", st, c)
		}
	}
	if LayerSpec.Intended() || LayerOK.Intended() {
		t.Error("spec or ok taken for an intended state")
	}
}

// A stage run that failed on the exporter's own limits (budget_exhausted, port_exhausted) blames
// nobody: the previous result and verdict hold, the run is shown as inconclusive, it enters no
// window and no counter of the Service, and it is counted exporter-wide. The next conclusive run
// clears it.
func TestStoreExporterLimitsBlameNoService(t *testing.T) {
	s := NewStore()
	tg := target("default", "hostnames")
	s.Record(tg, healthy())
	for _, reason := range []probe.Reason{probe.ReasonBudget, probe.ReasonPortExhausted, probe.ReasonBudget} {
		s.Record(tg, []probe.Result{fail(probe.StageProxy, reason), fail(probe.StagePod, reason)})
	}
	layer, reason, ss := verdictOf(t, s, "hostnames")
	if layer != LayerOK || reason != probe.ReasonSuccess {
		t.Fatalf("after three rounds on the exporter's limits: verdict %s/%s, want ok/success (the previous result holds)", layer, reason)
	}
	if r := ss.Inconclusive[probe.StageProxy]; r.Reason != probe.ReasonBudget {
		t.Errorf("inconclusive proxy run %+v, want the last budget_exhausted one", r)
	}
	if w := ss.Windows[probe.StageProxy]; w.FailedRounds != 0 {
		t.Errorf("proxy window %+v: the exporter's limits entered it", w)
	}
	// healthy() counted one run of each stage; the limited rounds added none.
	for st, c := range ss.Counts {
		if c.Runs != 1 || c.Failures != 0 {
			t.Errorf("%s counts %+v: the exporter's limits counted against the Service (want 1 run, 0 failures)", st, c)
		}
	}
	inc := s.Inconclusive()
	if inc[probe.StageProxy][probe.ReasonBudget] != 2 || inc[probe.StagePod][probe.ReasonPortExhausted] != 1 {
		t.Errorf("exporter-wide inconclusive counts %v, want proxy budget 2 and pod port 1", inc)
	}
	// A real failure still counts, and a conclusive run clears the inconclusive mark.
	s.Record(tg, []probe.Result{fail(probe.StageProxy, probe.ReasonTimeout)})
	s.Record(tg, []probe.Result{fail(probe.StageProxy, probe.ReasonTimeout)})
	layer, _, ss = verdictOf(t, s, "hostnames")
	if layer != LayerProxy {
		t.Fatalf("two real proxy failures: verdict %s, want proxy", layer)
	}
	if c := ss.Counts[probe.StageProxy]; c != (StageCount{Runs: 3, Failures: 2}) {
		t.Errorf("proxy counts %+v after one success and two real failures, want 3 runs, 2 failures", c)
	}
	if _, ok := ss.Inconclusive[probe.StageProxy]; ok {
		t.Error("the proxy stage is still marked inconclusive after a conclusive run")
	}
	if _, ok := ss.Inconclusive[probe.StagePod]; !ok {
		t.Error("the pod stage's inconclusive mark went without a pod run")
	}
}

// The store decides a Service's verdict at each Record and keeps when its layer changed: since
// when the current layer holds, and the last few changes, timed by the round's results.
func TestStoreVerdictSinceAndChanges(t *testing.T) {
	s := NewStore()
	tg := target("default", "hostnames")
	t0 := time.Date(2026, 12, 3, 7, 0, 0, 0, time.UTC)
	at := func(rs []probe.Result, d time.Duration) []probe.Result {
		out := slices.Clone(rs)
		for i := range out {
			out[i].At = t0.Add(d)
		}
		return out
	}
	proxyFail := []probe.Result{fail(probe.StageProxy, probe.ReasonTimeout)}
	proxyOK := []probe.Result{ok(probe.StageProxy)}
	s.Record(tg, at(healthy(), 0))
	s.Record(tg, at(proxyFail, 15*time.Second)) // one failed round: no change
	s.Record(tg, at(proxyFail, 30*time.Second)) // proxy from here
	s.Record(tg, at(proxyFail, 45*time.Second))
	_, _, ss := verdictOf(t, s, "hostnames")
	want := []VerdictChange{{t0, LayerOK, probe.ReasonSuccess}, {t0.Add(30 * time.Second), LayerProxy, probe.ReasonTimeout}}
	if ss.Verdict != LayerProxy || !ss.Since.Equal(t0.Add(30*time.Second)) || !slices.Equal(ss.Changes, want) {
		t.Fatalf("verdict %s since %v, changes %v; want proxy since +30s, %v", ss.Verdict, ss.Since, ss.Changes, want)
	}
	s.Record(tg, at(proxyOK, time.Minute))
	if _, _, ss := verdictOf(t, s, "hostnames"); ss.Verdict != LayerOK || !ss.Since.Equal(t0.Add(time.Minute)) || len(ss.Changes) != 3 {
		t.Fatalf("after recovery: %s since %v, changes %v", ss.Verdict, ss.Since, ss.Changes)
	}
	// Bounded: only the last maxVerdictChanges are kept.
	for i := range 10 {
		d := time.Duration(2+i) * time.Minute
		s.Record(tg, at(proxyFail, d))
		s.Record(tg, at(proxyFail, d+15*time.Second))
		s.Record(tg, at(proxyOK, d+30*time.Second))
	}
	_, _, ss = verdictOf(t, s, "hostnames")
	if len(ss.Changes) != maxVerdictChanges || ss.Changes[len(ss.Changes)-1].Layer != LayerOK || !ss.Since.Equal(t0.Add(11*time.Minute+30*time.Second)) {
		t.Fatalf("after ten more faults: since %v, changes %v", ss.Since, ss.Changes)
	}
}

// The cross-Service tally is kept at each Record, Forget and cluster DNS change, not recomputed
// over every Service at each snapshot: after any sequence it equals the recomputed sum.
func TestStoreTallyKeptIncrementally(t *testing.T) {
	s := NewStore()
	var tgs []*discovery.Target
	for i := range 6 {
		tg := target("ns", fmt.Sprintf("s%d", i))
		tg.ClusterIPs = []netip.Addr{netip.AddrFrom4([4]byte{198, 19, 0, byte(10 + i)})}
		tgs = append(tgs, tg)
	}
	rounds := [][]probe.Result{
		healthy(),
		{fail(probe.StageProxy, probe.ReasonTimeout)},
		{fail(probe.StageProxy, probe.ReasonTimeout), fail(probe.StagePod, probe.ReasonTimeout)},
		{ok(probe.StageProxy), ok(probe.StagePod)},
		{skip(probe.StageProxy)},
	}
	recomputed := func() VIPTally {
		var t VIPTally
		for _, st := range s.services {
			t = t.plus(s.vipOf(st), 1)
		}
		return t
	}
	for step := range 200 {
		i := (step * 7) % len(tgs)
		switch {
		case step%23 == 0:
			s.Forget(tgs[i].UID)
		case step%17 == 0:
			// The DNS Service's address is one of the Services' now, then another's.
			s.RecordClusterDNS(probe.ClusterDNSResult{ServiceIPs: []netip.Addr{tgs[(step/17)%len(tgs)].ClusterIPs[0]}})
		default:
			s.Record(tgs[i], rounds[(step*3)%len(rounds)])
		}
		if got, want := s.tally, recomputed(); got != want {
			t.Fatalf("step %d: tally %+v, recomputed %+v", step, got, want)
		}
	}
}

// Lookup finds one Service by namespace and name with the same state and verdict Snapshot gives
// it, and forgets it with the Service.
func TestStoreLookupMatchesSnapshot(t *testing.T) {
	s := NewStore()
	a, b := target("default", "a"), target("default", "b")
	s.Record(a, healthy())
	s.Record(b, healthy())
	s.Record(b, []probe.Result{fail(probe.StageProxy, probe.ReasonTimeout)})
	s.Record(b, []probe.Result{fail(probe.StageProxy, probe.ReasonTimeout)})
	_, _, want := verdictOf(t, s, "b")
	got, _, ok := s.Lookup("default", "b")
	if !ok || got.Verdict != want.Verdict || got.Reason != want.Reason || got.Target != want.Target || !slices.Equal(got.Changes, want.Changes) {
		t.Fatalf("Lookup: %v %s/%s, Snapshot: %s/%s", ok, got.Verdict, got.Reason, want.Verdict, want.Reason)
	}
	if _, _, ok := s.Lookup("default", "nope"); ok {
		t.Error("Lookup found a Service that does not exist")
	}
	s.Forget(b.UID)
	if _, _, ok := s.Lookup("default", "b"); ok {
		t.Error("Lookup still finds a forgotten Service")
	}
}

// The per-Service read copies one Service, not all of them: at 10,000 Services, Lookup against
// finding the same Service in a Snapshot (what the status page did before).
func BenchmarkStoreLookupVsSnapshot(b *testing.B) {
	s := NewStore()
	for i := range 10000 {
		s.Record(target("ns", fmt.Sprintf("s%05d", i)), healthy())
	}
	b.Run("snapshot", func(b *testing.B) {
		for b.Loop() {
			snap, _ := s.Snapshot()
			for _, ss := range snap {
				if ss.Target.Name == "s05000" {
					break
				}
			}
		}
	})
	b.Run("lookup", func(b *testing.B) {
		for b.Loop() {
			if _, _, ok := s.Lookup("ns", "s05000"); !ok {
				b.Fatal("not found")
			}
		}
	})
}

// Verdicts decides what Snapshot decides, for every Service, in the same order, without copying
// their state: healthy, failing (held by the window), cross-Service evidence (other VIPs) and a
// forgotten Service.
func TestStoreVerdictsMatchSnapshot(t *testing.T) {
	s := NewStore()
	for i := range 6 {
		s.Record(target(fmt.Sprintf("ns%d", i%2), fmt.Sprintf("s%d", i)), healthy())
	}
	for _, name := range []string{"s1", "s3"} {
		for range 2 {
			s.Record(target("ns1", name), []probe.Result{fail(probe.StageProxy, probe.ReasonTimeout)})
		}
	}
	s.Record(target("ns0", "s4"), []probe.Result{fail(probe.StageDNS, probe.ReasonNXDomain)})
	s.Forget(target("ns0", "s2").UID)
	snap, _ := s.Snapshot()
	got := s.Verdicts()
	if len(got) != len(snap) {
		t.Fatalf("%d verdicts, %d in the snapshot", len(got), len(snap))
	}
	broken := 0
	for i, v := range got {
		w := snap[i]
		if v.Namespace != w.Target.Namespace || v.Name != w.Target.Name || v.Verdict != w.Verdict || v.Reason != w.Reason {
			t.Errorf("#%d: Verdicts %s/%s %s/%s, Snapshot %s/%s %s/%s", i, v.Namespace, v.Name, v.Verdict, v.Reason,
				w.Target.Namespace, w.Target.Name, w.Verdict, w.Reason)
		}
		if v.Verdict != LayerOK {
			broken++
		}
	}
	if broken < 2 {
		t.Fatalf("only %d Services not ok: the test's failures did not reach the verdict", broken)
	}
}

// A page of the matrix reads every Service's verdict, not a copy of every Service: at 10,000
// Services, Verdicts against Snapshot (what the status page read before).
func BenchmarkStoreVerdictsVsSnapshot(b *testing.B) {
	s := NewStore()
	for i := range 10000 {
		s.Record(target("ns", fmt.Sprintf("s%05d", i)), healthy())
	}
	b.Run("snapshot", func(b *testing.B) {
		for b.Loop() {
			if snap, _ := s.Snapshot(); len(snap) != 10000 {
				b.Fatal(len(snap))
			}
		}
	})
	b.Run("verdicts", func(b *testing.B) {
		for b.Loop() {
			if v := s.Verdicts(); len(v) != 10000 {
				b.Fatal(len(v))
			}
		}
	})
}

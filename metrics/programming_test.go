package metrics

import (
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/svcprobe/svcprobe/probe"
)

// The store follows the measurements: in progress (the gauge, the Service's status), ended (the
// histogram observes a change that arrived, not one that never did nor one abandoned), and a
// Service deleted while its change is programmed leaves no count behind.
func TestStoreProgramming(t *testing.T) {
	store, _, g, _ := setup(t, CollectorConfig{})
	a, b := target("default", "a"), target("default", "b")
	store.Record(a, healthy())
	store.Record(b, healthy())
	since := time.Now().Add(-2 * time.Second)
	store.Programming(a, probe.StageProxy, since)
	store.Programming(a, probe.StageDNS, since)
	store.Programming(b, probe.StageProxy, since)
	if err := testutil.GatherAndCompare(g, strings.NewReader(`
# HELP svcprobe_programming_in_progress Services with a change being programmed now (the stage probed at --probe.programming.cadence until it shows the change), by stage.
# TYPE svcprobe_programming_in_progress gauge
svcprobe_programming_in_progress{stage="dns"} 1
svcprobe_programming_in_progress{stage="proxy"} 2
`), "svcprobe_programming_in_progress"); err != nil {
		t.Fatal(err)
	}
	if st, _, _ := store.Lookup("default", "a"); !st.Programming[probe.StageProxy].Equal(since) {
		t.Fatalf("status Programming %v, want proxy since %s", st.Programming, since)
	}
	store.Programmed(a, probe.Programmed{Stage: probe.StageProxy, Since: since, At: since.Add(1500 * time.Millisecond), Latency: 1500 * time.Millisecond, Done: true})
	store.Programmed(a, probe.Programmed{Stage: probe.StageDNS, Since: since, At: since.Add(time.Minute), Latency: time.Minute}) // never arrived
	store.Forget(b.UID)
	if err := testutil.GatherAndCompare(g, strings.NewReader(`
# HELP svcprobe_programming_in_progress Services with a change being programmed now (the stage probed at --probe.programming.cadence until it shows the change), by stage.
# TYPE svcprobe_programming_in_progress gauge
svcprobe_programming_in_progress{stage="dns"} 0
svcprobe_programming_in_progress{stage="proxy"} 0
`), "svcprobe_programming_in_progress"); err != nil {
		t.Fatal(err)
	}
	st, _, _ := store.Lookup("default", "a")
	if len(st.Programming) != 0 || !st.Programmed[probe.StageProxy].Done || st.Programmed[probe.StageDNS].Done {
		t.Fatalf("status after the end: programming %v, programmed %v", st.Programming, st.Programmed)
	}
	mfs, err := g.Gather()
	if err != nil {
		t.Fatal(err)
	}
	found := false
	for _, mf := range mfs {
		if mf.GetName() != "svcprobe_programming_latency_seconds" {
			continue
		}
		for _, m := range mf.Metric {
			h := m.GetHistogram()
			stage := m.GetLabel()[0].GetValue()
			switch {
			case stage == "proxy" && (h.GetSampleCount() != 1 || h.GetSampleSum() != 1.5):
				t.Fatalf("proxy: %d samples, sum %g; want the one change that arrived, 1.5 s", h.GetSampleCount(), h.GetSampleSum())
			case stage == "dns" && h.GetSampleCount() != 0:
				t.Fatalf("dns observed %d samples: a change that never arrived is not a latency", h.GetSampleCount())
			}
			found = true
		}
	}
	if !found {
		t.Fatal("svcprobe_programming_latency_seconds{stage=proxy} missing")
	}
	// Abandoned: nothing kept, nothing observed.
	store.Programming(a, probe.StageDNS, since)
	store.Programmed(a, probe.Programmed{Stage: probe.StageDNS, Since: since, At: time.Now(), Abandoned: true})
	if st, _, _ := store.Lookup("default", "a"); st.Programmed[probe.StageDNS].Since.Equal(since) && st.Programmed[probe.StageDNS].Abandoned {
		t.Fatal("an abandoned measurement replaced the last one")
	}
	if n := store.InProgress()[probe.StageDNS]; n != 0 {
		t.Fatalf("dns in progress %d after abandon", n)
	}
}

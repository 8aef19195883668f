package probe

import (
	"context"
	"strings"
	"testing"

	"github.com/svcprobe/svcprobe/discovery"
	"k8s.io/apimachinery/pkg/util/intstr"
)

func specTarget(sel map[string]string, port discovery.Port, pods ...discovery.Pod) *discovery.Target {
	return &discovery.Target{Namespace: "default", Name: "hostnames", Kind: discovery.KindClusterIP, Selector: sel,
		Ports: []discovery.Port{port}, Pods: pods}
}

func hostnamesPod(ports ...discovery.ContainerPort) discovery.Pod {
	return discovery.Pod{Name: "hostnames-a", Labels: map[string]string{"app": "hostnames"}, Ready: true, Ports: ports}
}

func TestSpecStage(t *testing.T) {
	sel := map[string]string{"app": "hostnames"}
	http := discovery.ContainerPort{Name: "http", Port: 9376, Protocol: "TCP"}
	cases := []struct {
		name    string
		target  *discovery.Target
		outcome Outcome
		reason  Reason
		hint    string
	}{
		{"healthy named port", specTarget(sel, discovery.Port{Port: 80, TargetPort: intstr.FromString("http"), Protocol: "TCP"}, hostnamesPod(http)), OK, ReasonSuccess, ""},
		{"healthy numeric port undeclared", specTarget(sel, discovery.Port{Port: 80, TargetPort: intstr.FromInt32(8080), Protocol: "TCP"}, hostnamesPod(http)), OK, ReasonSuccess, ""},
		{"selector typo", func() *discovery.Target {
			tg := specTarget(map[string]string{"run": "hostnames"}, discovery.Port{Port: 80, TargetPort: intstr.FromInt32(9376), Protocol: "TCP"})
			p := hostnamesPod(http)
			tg.NearestPod = &p
			return tg
		}(), Failed, ReasonSelectorMatchesNoPods, `label "run" is missing`},
		{"named targetPort undefined", specTarget(sel, discovery.Port{Port: 80, TargetPort: intstr.FromString("web"), Protocol: "TCP"}, hostnamesPod(http)), Failed, ReasonTargetPortUnresolved, "http=9376/TCP"},
		{"protocol mismatch", specTarget(sel, discovery.Port{Port: 80, TargetPort: intstr.FromInt32(9376), Protocol: "UDP"}, hostnamesPod(http)), Failed, ReasonProtocolMismatch, "UDP"},
		{"no selector", specTarget(nil, discovery.Port{Port: 80}), Skipped, ReasonNotProbed, ""},
		// A node agent that sees its node's Pods only: no local Pod, or a local Pod without the
		// named port, is no evidence against the selector: left to the central exporter.
		{"node agent, no Pod on its node", func() *discovery.Target {
			tg := specTarget(sel, discovery.Port{Port: 80, TargetPort: intstr.FromString("http"), Protocol: "TCP"})
			tg.PodsOnNode = "node-2"
			return tg
		}(), Skipped, ReasonNotProbed, ""},
		{"node agent, local Pod without the named port", func() *discovery.Target {
			tg := specTarget(sel, discovery.Port{Port: 80, TargetPort: intstr.FromString("web"), Protocol: "TCP"}, hostnamesPod(http))
			tg.PodsOnNode = "node-2"
			return tg
		}(), Skipped, ReasonNotProbed, ""},
		{"external name", &discovery.Target{Kind: discovery.KindExternalName, Selector: sel}, Skipped, ReasonNotProbed, ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r := SpecProber{}.Probe(context.Background(), c.target)
			if r.Outcome != c.outcome || r.Reason != c.reason {
				t.Fatalf("got %s/%s (%s), want %s/%s", r.Outcome, r.Reason, r.Detail, c.outcome, c.reason)
			}
			if !strings.Contains(r.Hint, c.hint) {
				t.Fatalf("hint %q does not mention %q", r.Hint, c.hint)
			}
			if c.outcome == Failed && (r.Hint == "" || len(r.Checks) == 0) {
				t.Fatalf("failure without hint or evidence: %+v", r)
			}
		})
	}
}

func TestEndpointsStage(t *testing.T) {
	ready := discovery.Endpoint{Ready: true, Serving: true}
	notReady := discovery.Endpoint{Serving: false}
	terminating := discovery.Endpoint{Serving: true, Terminating: true}
	cases := []struct {
		name    string
		target  discovery.Target
		outcome Outcome
		reason  Reason
	}{
		{"ready", discovery.Target{Selector: map[string]string{"a": "b"}, Endpoints: []discovery.Endpoint{ready, notReady}}, OK, ReasonSuccess},
		// A rollout: one ready, one terminating: not an outage.
		{"rollout", discovery.Target{Selector: map[string]string{"a": "b"}, Endpoints: []discovery.Endpoint{ready, terminating}}, OK, ReasonSuccess},
		{"none", discovery.Target{Selector: map[string]string{"a": "b"}}, Failed, ReasonNoEndpoints},
		{"none without selector", discovery.Target{}, Failed, ReasonNoEndpoints},
		{"none ready", discovery.Target{Endpoints: []discovery.Endpoint{notReady, terminating}}, Failed, ReasonNoReadyEndpoints},
		{"external name", discovery.Target{Kind: discovery.KindExternalName}, Skipped, ReasonNotProbed},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r := EndpointsProber{}.Probe(context.Background(), &c.target)
			if r.Outcome != c.outcome || r.Reason != c.reason {
				t.Fatalf("got %s/%s, want %s/%s", r.Outcome, r.Reason, c.outcome, c.reason)
			}
			if c.outcome == Failed && r.Hint == "" {
				t.Fatal("failure without hint")
			}
		})
	}
}

// A Service whose workload is scaled to zero: spec and endpoints skip with scaled_to_zero and say
// which workload. One whose workload wants Pods it has not got: the selector is right (spec
// passes), the endpoints stage fails and its hint names the workload.
func TestSpecAndEndpointsScaledToZero(t *testing.T) {
	tg := &discovery.Target{Namespace: "default", Name: "hostnames", Selector: map[string]string{"app": "hostnames"},
		Workloads: []discovery.Workload{{Kind: "Deployment", Name: "hostnames", Replicas: 0}}}
	for _, p := range []Prober{SpecProber{}, EndpointsProber{}} {
		r := p.Probe(context.Background(), tg)
		if r.Outcome != Skipped || r.Reason != ReasonScaledToZero || !strings.Contains(r.Detail, "Deployment/hostnames (replicas 0)") {
			t.Errorf("%s: %v %s %q, want skipped scaled_to_zero naming the Deployment", p.Stage(), r.Outcome, r.Reason, r.Detail)
		}
	}
	tg.Workloads[0].Replicas = 3
	if r := (SpecProber{}).Probe(context.Background(), tg); r.Outcome != OK || !strings.Contains(r.Detail, "no Pod yet") {
		t.Errorf("spec with a workload wanting 3: %v %s %q, want ok", r.Outcome, r.Reason, r.Detail)
	}
	if r := (EndpointsProber{}).Probe(context.Background(), tg); r.Outcome != Failed || r.Reason != ReasonNoEndpoints || !strings.Contains(r.Hint, "kubectl describe deployment hostnames") {
		t.Errorf("endpoints with a workload wanting 3: %v %s %q, want no_endpoints naming it", r.Outcome, r.Reason, r.Hint)
	}
	// No workload at all: the typo.
	tg.Workloads = nil
	if r := (SpecProber{}).Probe(context.Background(), tg); r.Reason != ReasonSelectorMatchesNoPods {
		t.Errorf("no workload: %s, want selector_matches_no_pods", r.Reason)
	}
}

package probe

import (
	"context"
	"fmt"
	"strings"

	"github.com/svcprobe/svcprobe/discovery"
)

// EndpointsProber checks the Service's EndpointSlices (runbook step 5): there must be endpoints,
// and some of them ready. Terminating and not-ready endpoints are counted, never blamed: a rollout
// must not look like an outage while ready endpoints remain.
type EndpointsProber struct{}

func (EndpointsProber) Stage() Stage { return StageEndpoints }

func (EndpointsProber) Probe(_ context.Context, t *discovery.Target) Result {
	if t.Kind == discovery.KindExternalName {
		return skipped(StageEndpoints, "ExternalName Service: no endpoints")
	}
	c := t.Counts()
	if which, idle := t.ScaledToZero(); idle && c.Ready == 0 {
		r := skipped(StageEndpoints, "no ready endpoint: scaled to zero on purpose ("+which+")")
		r.Reason = ReasonScaledToZero
		return r
	}
	detail := fmt.Sprintf("%d ready, %d not ready, %d terminating", c.Ready, c.NotReady, c.Terminating)
	r := Result{Stage: StageEndpoints, Outcome: OK, Reason: ReasonSuccess, Detail: detail, Total: 1}
	switch {
	case len(t.Endpoints) == 0:
		r.Outcome, r.Reason, r.Failing = Failed, ReasonNoEndpoints, 1
		switch {
		case t.Selector == nil:
			r.Hint = "The Service has no selector: its EndpointSlices must be created by hand or by the controller that owns it."
		case t.PodsOnNode != "":
			r.Hint = "No EndpointSlice lists an endpoint: the central exporter's spec stage says whether the selector matches Pods (this node agent watches its own node's Pods only)."
		case len(t.Pods) == 0 && len(t.Workloads) > 0:
			r.Hint = "The selector matches the Pod template of " + t.Workloads[0].String() + ", which has no Pod: " +
				"check why its Pods are not created (kubectl describe " + strings.ToLower(t.Workloads[0].Kind) + " " + t.Workloads[0].Name +
				"; a quota, a missing ServiceAccount or PodSecurity admission) or not scheduled (kubectl get events)."
		case len(t.Pods) == 0:
			r.Hint = "The selector matches no Pod, so there is nothing to put in the EndpointSlices (see the spec stage)."
		default:
			r.Hint = fmt.Sprintf("%d Pod(s) match the selector but no EndpointSlice lists them: check that kube-controller-manager (endpointslice controller) runs.", len(t.Pods))
		}
	case c.Ready == 0:
		r.Outcome, r.Reason, r.Failing = Failed, ReasonNoReadyEndpoints, 1
		r.Hint = "Endpoints exist but none is ready: check the Pods' readiness probes and why they fail (kubectl describe pod)."
	}
	r.Checks = []Check{{Subject: "EndpointSlices", Reason: r.Reason, Detail: detail}}
	return r
}

package probe

import (
	"context"
	"fmt"
	"sort"
	"strings"

	"github.com/svcprobe/svcprobe/discovery"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/intstr"
)

// SpecProber checks the Service definition against the Pods it selects (runbook step 4): the
// selector must match Pods, a named targetPort must be a port the Pods declare, and the protocol
// must agree with the container port. It opens no socket.
type SpecProber struct{}

func (SpecProber) Stage() Stage { return StageSpec }

func (SpecProber) Probe(_ context.Context, t *discovery.Target) Result {
	if t.Kind == discovery.KindExternalName {
		return skipped(StageSpec, "ExternalName Service: no selector to check")
	}
	if t.Selector == nil {
		return skipped(StageSpec, "Service without selector: its endpoints are managed by hand")
	}
	sel := formatLabels(t.Selector)
	if which, idle := t.ScaledToZero(); idle {
		r := skipped(StageSpec, fmt.Sprintf("selector %s matches no Pod: scaled to zero on purpose (%s)", sel, which))
		r.Reason = ReasonScaledToZero
		return r
	}
	if t.PodsOnNode != "" {
		// A node agent sees its node's Pods only: whether the selector matches Pods and the Pods
		// declare the named ports is the central exporter's to say (the definition is the same
		// from every node).
		return skipped(StageSpec, fmt.Sprintf("selector %s: checked by the central exporter (this node agent watches the Pods of node %s only)", sel, t.PodsOnNode))
	}
	if len(t.Pods) == 0 && len(t.Workloads) > 0 {
		// The selector is right: it matches a workload's Pods, which do not exist yet (a quota, a
		// scheduling or image problem). The endpoints stage says so.
		names := make([]string, len(t.Workloads))
		for i, w := range t.Workloads {
			names[i] = w.String()
		}
		detail := fmt.Sprintf("matches the Pod template of %s, which has no Pod yet", strings.Join(names, ", "))
		return Result{Stage: StageSpec, Outcome: OK, Reason: ReasonSuccess, Total: 1, Detail: detail,
			Checks: []Check{{Subject: "selector " + sel, Reason: ReasonSuccess, Detail: detail}}}
	}
	if len(t.Pods) == 0 {
		r := Result{Stage: StageSpec, Outcome: Failed, Reason: ReasonSelectorMatchesNoPods, Total: 1, Failing: 1,
			Detail: fmt.Sprintf("selector %s matches no Pod in namespace %s", sel, t.Namespace)}
		r.Hint = "Compare the Service's selector with the labels of the Pods that should back it (kubectl get pods --show-labels)."
		if p := t.NearestPod; p != nil {
			r.Hint = fmt.Sprintf("The closest Pod, %s, has %s where the selector wants %s: %s",
				p.Name, formatLabels(p.Labels), sel, mismatch(t.Selector, p.Labels))
		}
		r.Checks = []Check{{Subject: "selector " + sel, Reason: r.Reason, Detail: r.Detail}}
		return r
	}
	checks := []Check{{Subject: "selector " + sel, Reason: ReasonSuccess, Detail: fmt.Sprintf("matches %d Pod(s)", len(t.Pods))}}
	var hints []string
	for _, p := range t.ProbedPorts() {
		c, hint := checkPort(t, p)
		checks = append(checks, c)
		if hint != "" {
			hints = append(hints, hint)
		}
	}
	r := fromChecks(StageSpec, checks, "")
	r.Hint = strings.Join(hints, " ")
	return r
}

// checkPort checks one Service port against the container ports of the selected Pods. Container
// ports are informational in Kubernetes, so a numeric targetPort nobody declares is not an error
// here: the pod stage finds out whether something listens.
func checkPort(t *discovery.Target, p discovery.Port) (Check, string) {
	subject := fmt.Sprintf("port %s -> targetPort %s/%s", portLabel(p), p.TargetPort.String(), p.Protocol)
	byName := p.TargetPort.Type == intstr.String
	var sameProto, otherProto []string
	for _, pod := range t.Pods {
		for _, cp := range pod.Ports {
			hit := (byName && cp.Name == p.TargetPort.StrVal) || (!byName && cp.Port == p.TargetPort.IntVal)
			if !hit {
				continue
			}
			if proto(cp.Protocol) == proto(p.Protocol) {
				sameProto = append(sameProto, pod.Name)
			} else {
				otherProto = append(otherProto, fmt.Sprintf("%s declares %d/%s", pod.Name, cp.Port, proto(cp.Protocol)))
			}
		}
	}
	switch {
	case len(sameProto) > 0:
		return Check{Subject: subject, Reason: ReasonSuccess, Detail: fmt.Sprintf("declared by %d Pod(s)", len(sameProto))}, ""
	case len(otherProto) > 0:
		return Check{Subject: subject, Reason: ReasonProtocolMismatch, Detail: otherProto[0]},
			fmt.Sprintf("Port %s is %s but the container port it targets is not (%s): make the Service's protocol match the container's.", portLabel(p), proto(p.Protocol), otherProto[0])
	case byName:
		return Check{Subject: subject, Reason: ReasonTargetPortUnresolved, Detail: fmt.Sprintf("no selected Pod has a container port named %q", p.TargetPort.StrVal)},
			fmt.Sprintf("targetPort %q names a port no selected Pod defines; the Pods declare %s.", p.TargetPort.StrVal, declaredPorts(t.Pods))
	}
	return Check{Subject: subject, Reason: ReasonSuccess, Detail: "numeric targetPort (not declared by the Pods; the pod stage checks that it answers)"}, ""
}

func proto(p discovery.Protocol) discovery.Protocol {
	if p == "" {
		return "TCP"
	}
	return p
}

func portLabel(p discovery.Port) string {
	if p.Name != "" {
		return fmt.Sprintf("%s(%d)", p.Name, p.Port)
	}
	return fmt.Sprint(p.Port)
}

func declaredPorts(pods []discovery.Pod) string {
	seen := map[string]bool{}
	var out []string
	for _, pod := range pods {
		for _, cp := range pod.Ports {
			s := fmt.Sprintf("%d/%s", cp.Port, proto(cp.Protocol))
			if cp.Name != "" {
				s = cp.Name + "=" + s
			}
			if !seen[s] {
				seen[s] = true
				out = append(out, s)
			}
		}
	}
	if len(out) == 0 {
		return "no ports"
	}
	sort.Strings(out)
	return strings.Join(out, ", ")
}

// formatLabels prints labels as a selector would be written, sorted: app=hostnames,tier=web.
func formatLabels(m map[string]string) string {
	if len(m) == 0 {
		return "{}"
	}
	return labels.Set(m).String()
}

// mismatch names the selector pairs a Pod's labels do not satisfy.
func mismatch(sel, labels map[string]string) string {
	keys := make([]string, 0, len(sel))
	for k := range sel {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var out []string
	for _, k := range keys {
		v, ok := labels[k]
		switch {
		case !ok:
			out = append(out, fmt.Sprintf("label %q is missing", k))
		case v != sel[k]:
			out = append(out, fmt.Sprintf("label %q is %q, not %q", k, v, sel[k]))
		}
	}
	return strings.Join(out, "; ")
}

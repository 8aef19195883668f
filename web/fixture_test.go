package web

import (
	"errors"
	"fmt"
	"net/netip"
	"time"

	"github.com/svcprobe/svcprobe/discovery"
	"github.com/svcprobe/svcprobe/metrics"
	"github.com/svcprobe/svcprobe/probe"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/intstr"
)

// fixtureNow is the clock of every fixture: results are a few seconds older.
var fixtureNow = time.Date(2026, 11, 25, 3, 12, 0, 0, time.UTC)

// target builds a ClusterIP Service with n ready endpoints at 10.244.0.x.
func target(ns, name, ip string, ready int, sel map[string]string) *discovery.Target {
	t := &discovery.Target{
		UID: types.UID(ns + "/" + name), Namespace: ns, Name: name, Kind: discovery.KindClusterIP,
		Selector: sel,
		Ports:    []discovery.Port{{Name: "http", Port: 80, TargetPort: intstr.FromInt32(9376), Protocol: "TCP"}},
	}
	if ip != "" {
		t.ClusterIPs = []netip.Addr{netip.MustParseAddr(ip)}
	}
	for i := range ready {
		t.Endpoints = append(t.Endpoints, discovery.Endpoint{
			Addresses: []netip.Addr{netip.AddrFrom4([4]byte{10, 244, 0, byte(10 + i)})}, Ready: true, Serving: true,
			PodName: fmt.Sprintf("%s-%d", name, i),
		})
	}
	return t
}

func ok(st probe.Stage, at time.Time, checks ...probe.Check) probe.Result {
	r := probe.Result{Stage: st, Outcome: probe.OK, Reason: probe.ReasonSuccess, Checks: checks, Total: max(1, len(checks)), At: at}
	for _, c := range checks {
		r.Duration += c.Duration
	}
	return r
}

func failed(st probe.Stage, at time.Time, reason probe.Reason, detail, hint string, checks ...probe.Check) probe.Result {
	r := probe.Result{Stage: st, Outcome: probe.Failed, Reason: reason, Detail: detail, Hint: hint, Checks: checks, At: at}
	for _, c := range checks {
		r.Total++
		r.Duration += c.Duration
		if !c.OK() {
			r.Failing++
		}
	}
	if r.Total == 0 {
		r.Total, r.Failing = 1, 1
	}
	return r
}

func skip(st probe.Stage, why string) probe.Result {
	return probe.Result{Stage: st, Outcome: probe.Skipped, Reason: probe.ReasonNotProbed, Detail: why}
}

func chk(subject string, reason probe.Reason, detail string, ms float64) probe.Check {
	return probe.Check{Subject: subject, Reason: reason, Detail: detail, Duration: time.Duration(ms * float64(time.Millisecond))}
}

// healthyResults is a Service whose every stage passed.
func healthyResults(t *discovery.Target, at time.Time) []probe.Result {
	fqdn := t.Name + "." + t.Namespace + ".svc.cluster.local."
	var podChecks []probe.Check
	for _, e := range t.Endpoints {
		podChecks = append(podChecks, chk(fmt.Sprintf("%s:9376 (pod %s)", e.Addresses[0], e.PodName), probe.ReasonSuccess, "connected", 0.4))
	}
	ip := t.ClusterIPs[0].String()
	return []probe.Result{
		ok(probe.StageSpec, at, chk("selector "+formatLabels(t.Selector), probe.ReasonSuccess, fmt.Sprintf("matches %d Pod(s)", len(t.Endpoints)), 0)),
		ok(probe.StageEndpoints, at, chk("EndpointSlices", probe.ReasonSuccess, fmt.Sprintf("%d ready, 0 not ready, 0 terminating", len(t.Endpoints)), 0)),
		ok(probe.StageDNS, at, chk("A "+fqdn, probe.ReasonSuccess, "["+ip+"] from 10.96.0.10:53", 1.2),
			chk("A "+t.Name+" via search path", probe.ReasonSuccess, "["+ip+"] as "+fqdn, 1.1)),
		ok(probe.StagePod, at, podChecks...),
		ok(probe.StageProxy, at, chk(ip+":80 (service "+t.Key()+")", probe.ReasonSuccess, "connected", 0.6)),
		skip(probe.StageHairpin, "not the hairpin Service"),
	}
}

// demoStore is the demo's Services: hostnames healthy, hostnames-typo with a selector typo, web
// degraded (one Pod of three refuses), api with a wrong targetPort, cart whose VIP is not
// forwarded, a headless database, kube-dns, and a Service with a malformed annotation.
func demoStore() *metrics.Store {
	s := metrics.NewStore()
	at := fixtureNow.Add(-4 * time.Second)

	hostnames := target("default", "hostnames", "10.96.12.34", 3, map[string]string{"app": "hostnames"})
	s.Record(hostnames, healthyResults(hostnames, at))

	typo := target("default", "hostnames-typo", "10.96.40.2", 0, map[string]string{"app": "hostname"})
	typo.NearestPod = &discovery.Pod{Name: "hostnames-7c9d4b8f6-x2k4q", Labels: map[string]string{"app": "hostnames"}}
	s.Record(typo, []probe.Result{
		failed(probe.StageSpec, at, probe.ReasonSelectorMatchesNoPods, "selector app=hostname matches no Pod in namespace default",
			`The closest Pod, hostnames-7c9d4b8f6-x2k4q, has app=hostnames where the selector wants app=hostname: label "app" is "hostnames", not "hostname"`,
			chk("selector app=hostname", probe.ReasonSelectorMatchesNoPods, "selector app=hostname matches no Pod in namespace default", 0)),
		failed(probe.StageEndpoints, at, probe.ReasonNoEndpoints, "0 ready, 0 not ready, 0 terminating",
			"The selector matches no Pod, so there is nothing to put in the EndpointSlices (see the spec stage).",
			chk("EndpointSlices", probe.ReasonNoEndpoints, "0 ready, 0 not ready, 0 terminating", 0)),
		ok(probe.StageDNS, at, chk("A hostnames-typo.default.svc.cluster.local.", probe.ReasonSuccess, "[10.96.40.2] from 10.96.0.10:53", 1.3)),
		skip(probe.StagePod, "no ready endpoints (see the endpoints stage)"),
		skip(probe.StageProxy, "no ready endpoints to proxy to (see the endpoints stage)"),
		skip(probe.StageHairpin, "not the hairpin Service"),
	})

	web := target("default", "web", "10.96.7.7", 3, map[string]string{"app": "web"})
	wr := healthyResults(web, at)
	wr[3] = failed(probe.StagePod, at, probe.ReasonRefused, "10.244.0.12:9376 (pod web-2): connection refused",
		"Check the failing Pods (web-2): their logs (kubectl logs), restarts and readiness probe, and whether the process listens on the port (kubectl exec <pod> -- ss -lnt).",
		chk("10.244.0.10:9376 (pod web-0)", probe.ReasonSuccess, "connected", 0.3),
		chk("10.244.0.11:9376 (pod web-1)", probe.ReasonSuccess, "connected", 0.4),
		chk("10.244.0.12:9376 (pod web-2)", probe.ReasonRefused, "connection refused", 0.2))
	s.Record(web, wr)

	api := target("shop", "api", "10.96.3.3", 2, map[string]string{"app": "api"})
	ar := healthyResults(api, at)
	ar[3] = failed(probe.StagePod, at, probe.ReasonRefused, "10.244.0.10:9376 (pod api-0): connection refused",
		`Every ready endpoint refuses port "http" (80 -> targetPort 9376) on Pod port 9376: the Service's targetPort is the likely cause. Compare it with the containerPort the process listens on (kubectl get pod -o yaml; kubectl exec <pod> -- ss -lnt).`,
		chk("10.244.0.10:9376 (pod api-0)", probe.ReasonRefused, "connection refused", 0.2),
		chk("10.244.0.11:9376 (pod api-1)", probe.ReasonRefused, "connection refused", 0.2))
	ar[4] = failed(probe.StageProxy, at, probe.ReasonRefused, "10.96.3.3:80 (service shop/api): connection refused", "",
		chk("10.96.3.3:80 (service shop/api)", probe.ReasonRefused, "connection refused", 0.3))
	s.Record(api, ar)

	cart := target("shop", "cart", "10.96.3.9", 2, map[string]string{"app": "cart"})
	cr := healthyResults(cart, at)
	cr[4] = failed(probe.StageProxy, at, probe.ReasonTimeout, "10.96.3.9:80 (service shop/cart): no answer within 2s",
		"The Service's virtual IP does not answer; if the pod stage passes, the Pods do, so the translation VIP -> Pod is broken on this node. Check that kube-proxy runs here.",
		chk("10.96.3.9:80 (service shop/cart)", probe.ReasonTimeout, "no answer within 2s", 2000))
	s.Record(cart, cr)

	db := target("shop", "db", "", 1, map[string]string{"app": "db"})
	db.Kind = discovery.KindHeadless
	dr := []probe.Result{
		ok(probe.StageSpec, at, chk("selector app=db", probe.ReasonSuccess, "matches 1 Pod(s)", 0)),
		ok(probe.StageEndpoints, at, chk("EndpointSlices", probe.ReasonSuccess, "1 ready, 0 not ready, 0 terminating", 0)),
		ok(probe.StageDNS, at, chk("A db.shop.svc.cluster.local.", probe.ReasonSuccess, "[10.244.0.10]", 1.0)),
		ok(probe.StagePod, at, chk("10.244.0.10:9376 (pod db-0)", probe.ReasonSuccess, "connected", 0.3)),
		skip(probe.StageProxy, "headless Service: no virtual IP"),
		skip(probe.StageHairpin, "not the hairpin Service"),
	}
	s.Record(db, dr)

	dnsSvc := target("kube-system", "kube-dns", "10.96.0.10", 2, map[string]string{"k8s-app": "kube-dns"})
	s.Record(dnsSvc, healthyResults(dnsSvc, at))

	prom := target("monitoring", "prometheus", "10.96.9.90", 1, map[string]string{"app": "prometheus"})
	prom.AnnotationErrors = []error{errors.New(`svcprobe.io/ports: "http,9x": not a port name or number`)}
	s.Record(prom, healthyResults(prom, at))

	s.RecordClusterDNS(probe.ClusterDNSResult{
		At:     at,
		Canary: chk("A kubernetes.default via search path", probe.ReasonSuccess, "[10.96.0.1] as kubernetes.default.svc.cluster.local.", 0.9),
		VIP:    []probe.Check{chk("A kubernetes.default.svc.cluster.local. @10.96.0.10:53", probe.ReasonSuccess, "[10.96.0.1]", 0.8)},
		Pods: []probe.PodDNSCheck{
			{Name: "coredns-5d78c9869d-4xkqp", Check: chk("A kubernetes.default.svc.cluster.local. @10.244.0.2:53 (pod coredns-5d78c9869d-4xkqp)", probe.ReasonSuccess, "[10.96.0.1]", 0.5)},
			{Name: "coredns-5d78c9869d-9wz7m", Check: chk("A kubernetes.default.svc.cluster.local. @10.244.0.3:53 (pod coredns-5d78c9869d-9wz7m)", probe.ReasonSuccess, "[10.96.0.1]", 0.6)},
		},
	})
	return s
}

package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/svcprobe/svcprobe/discovery"
	"github.com/svcprobe/svcprobe/metrics"
	"github.com/svcprobe/svcprobe/pipeline"
	"github.com/svcprobe/svcprobe/probe"
	"github.com/svcprobe/svcprobe/web"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	networkingv1 "k8s.io/api/networking/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
)

// Exit codes of `svcprobe diagnose`.
const (
	diagnoseHealthy = 0 // every step passed
	diagnoseError   = 1 // the diagnosis could not run (API error)
	diagnoseUsage   = 2 // bad arguments or configuration
	diagnoseBroken  = 3 // the Service is broken (or missing); the output names the layer
)

// diagnoseMain is `svcprobe diagnose`: it prints the walk to stdout, errors to stderr, and returns
// the process's exit code.
func diagnoseMain(ctx context.Context, client kubernetes.Interface, cfg *config, key, format string) int {
	code, err := diagnose(ctx, client, cfg, key, os.Stdout, format)
	if err != nil {
		fmt.Fprintln(os.Stderr, "svcprobe diagnose:", err)
		if code == diagnoseHealthy {
			code = diagnoseError
		}
	}
	return code
}

// diagnose runs every stage once against the Service key ("namespace/name"), plus one cluster DNS
// round, and writes the runbook walk to out as text or as the JSON document of
// /api/v1/services/{namespace}/{name}. It builds the target with the same code as the watcher
// (discovery.BuildTarget), probes with the exporter's stages (pipeline.NewProbers) and blames a layer with
// the exporter's verdict: there is no second implementation of any check.
func diagnose(ctx context.Context, client kubernetes.Interface, cfg *config, key string, out io.Writer, format string) (int, error) {
	ns, name, ok := strings.Cut(key, "/")
	if !ok || ns == "" || name == "" || strings.Contains(name, "/") {
		return diagnoseUsage, fmt.Errorf("%q: want NAMESPACE/SERVICE", key)
	}
	switch format {
	case "", "text", "json":
	default:
		return diagnoseUsage, fmt.Errorf("-o %q: want text or json", format)
	}
	rc, err := readResolvConf(cfg.ResolvConf)
	if err != nil {
		return diagnoseUsage, err
	}
	return diagnoseService(ctx, client, cfg, rc, ns, name, out, format)
}

// diagnoseService is diagnose with the resolv.conf already read (tests point it at a DNS server on
// a loopback port, which a resolv.conf cannot name).
func diagnoseService(ctx context.Context, client kubernetes.Interface, cfg *config, rc probe.ResolvConf, ns, name string, out io.Writer, format string) (int, error) {
	budget, err := probe.NewBudget(probe.BudgetConfig{Concurrency: cfg.Concurrency, DNSQPS: cfg.DNSQPS, NewConnsPerSecond: cfg.NewConnsPerSecond})
	if err != nil {
		return diagnoseUsage, err
	}
	t, err := fetchTarget(ctx, client, cfg, ns, name)
	if err != nil {
		return diagnoseError, err
	}
	if t == nil {
		doc := web.MissingService(ns, name)
		return diagnoseBroken, writeDiagnosis(out, format, doc, nil)
	}

	var notes []string
	if cfg.NetworkPolicies {
		if err := markDenied(ctx, client, cfg, t); err != nil {
			notes = append(notes, err.Error())
		}
	}
	if t.Options.Skip {
		notes = append(notes, "the Service opts out of probing (svcprobe.io annotation); diagnosing it anyway")
	}
	dnsEps, err := dnsServiceEndpoints(ctx, client, cfg.DNSService)
	if err != nil {
		notes = append(notes, fmt.Sprintf("cluster DNS Pods not asked directly: %v", err))
	}

	// The DNS Service's ClusterIPs tell its VIP from a node-local cache or another resolver.
	dnsIPs := dnsServiceIPs(ctx, client, cfg.DNSService)
	resolvers := probe.ResolverClassifier{NodeLocal: cfg.NodeLocalDNS, ServiceIPs: func() []netip.Addr { return dnsIPs }}
	// The exporter's stages (pipeline.NewProbers), behind a guard that knows no informers: it trusts
	// the target's own ClusterIPs and selected Pods, the flags' ranges and node addresses.
	pcfg := cfg.pipelineConfig(rc)
	probers := pipeline.NewProbers(pcfg, budget, pcfg.AddressGuard(nil, nil), resolvers)
	results := make([]probe.Result, len(probers))
	var cluster probe.ClusterDNSResult
	start := time.Now()
	var wg sync.WaitGroup
	for i, p := range probers {
		wg.Go(func() { results[i] = probe.Run(ctx, p, t, cfg.Timeout, start) })
	}
	wg.Go(func() {
		cctx, cancel := context.WithTimeout(ctx, cfg.Timeout)
		defer cancel()
		clusterDNS := &probe.ClusterDNSProber{Budget: budget, Conf: rc, ClusterDomain: cfg.ClusterDomain, Resolvers: resolvers}
		cluster = clusterDNS.Probe(cctx, probe.DNSServersFrom(dnsEps))
	})
	wg.Wait()
	if err := ctx.Err(); err != nil {
		return diagnoseError, fmt.Errorf("diagnose %s/%s: %w", ns, name, err)
	}

	// A change made within the ceiling (a Service just created, endpoints that just changed) is
	// followed as the exporter follows it: its proxy/dns stage again at the cadence until it shows
	// the change, and its programming latency reported.
	programmed := measureProgramming(ctx, cfg, t, probers, results)

	// The store computes the verdict exactly as the exporter does, cluster DNS included.
	store := metrics.NewStore()
	store.Record(t, results)
	store.RecordClusterDNS(cluster)
	for _, p := range programmed {
		store.Programmed(t, p)
	}
	snap, cr := store.Snapshot()
	doc := web.NewService(snap[0], cr, true)
	code := diagnoseHealthy
	if !doc.Healthy {
		code = diagnoseBroken
	}
	if len(snap[0].Inconclusive) > 0 && code == diagnoseHealthy {
		// A stage could not run on this process's own limits: nothing proves the Service
		// healthy, nor broken.
		notes = append(notes, "a stage could not run on this process's own limits (see inconclusive): the diagnosis is incomplete")
		code = diagnoseError
	}
	return code, writeDiagnosis(out, format, doc, notes)
}

// measureProgramming re-runs, for the stages following a recent change (probe.RecentChanges),
// a failed result at --probe.programming.cadence until it passes or the change is older than
// --probe.programming.ceiling (then not_programmed), replacing it in results, and returns the
// measurements. A proxy failure while the Pods fail directly is theirs: not waited for.
func measureProgramming(ctx context.Context, cfg *config, t *discovery.Target, probers []probe.Prober, results []probe.Result) []probe.Programmed {
	ceiling := cfg.ProgCeiling
	var out []probe.Programmed
	podFailed := slices.ContainsFunc(results, func(r probe.Result) bool { return r.Stage == probe.StagePod && r.Outcome == probe.Failed })
	for st, since := range probe.RecentChanges(t, time.Now(), ceiling) {
		i := slices.IndexFunc(probers, func(p probe.Prober) bool { return p.Stage() == st })
		if i < 0 || results[i].Outcome == probe.Skipped || (st == probe.StageProxy && podFailed) {
			continue
		}
		for results[i].Outcome == probe.Failed && time.Since(since) < ceiling && ctx.Err() == nil {
			select {
			case <-ctx.Done():
			case <-time.After(cfg.ProgCadence):
			}
			results[i] = probe.Run(ctx, probers[i], t, min(cfg.Timeout, probe.ProgrammingAttempt), time.Now())
		}
		r := results[i]
		switch {
		case ctx.Err() != nil:
		case r.Outcome == probe.OK:
			at := r.At.Add(r.Duration)
			out = append(out, probe.Programmed{Stage: st, Since: since, At: at, Latency: max(0, at.Sub(since)), Done: true})
		case r.Outcome == probe.Failed:
			results[i] = probe.NotProgrammed(r, since, ceiling)
			out = append(out, probe.Programmed{Stage: st, Since: since, At: time.Now(), Latency: time.Since(since)})
		}
	}
	return out
}

// fetchTarget reads the Service, its EndpointSlices and the Pods of its namespace once and builds
// the target the watcher would. A Service that does not exist is (nil, nil).
func fetchTarget(ctx context.Context, client kubernetes.Interface, cfg *config, ns, name string) (*discovery.Target, error) {
	svc, err := client.CoreV1().Services(ns).Get(ctx, name, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("get Service %s/%s: %w", ns, name, err)
	}
	epSlices, err := serviceSlices(ctx, client, ns, name)
	if err != nil {
		return nil, err
	}
	var pods []*corev1.Pod
	if len(svc.Spec.Selector) > 0 {
		// All Pods of the namespace, not only the selected ones: the spec stage names the
		// nearest Pod when the selector matches none.
		list, err := client.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{})
		if err != nil {
			return nil, fmt.Errorf("list Pods in %s: %w", ns, err)
		}
		for i := range list.Items {
			pods = append(pods, &list.Items[i])
		}
	}
	t := discovery.BuildTarget(svc, epSlices, pods)
	if cfg.Workloads && len(t.Selector) > 0 && len(t.Pods) == 0 {
		// As the watcher does: the workloads whose Pod template the selector matches tell
		// scaled to zero from a typo. Without the permission the spec stage says what it can.
		if objs, err := namespaceWorkloads(ctx, client, ns); err == nil {
			t.Workloads = discovery.MatchWorkloads(objs, t.Selector)
		}
	}
	return t, nil
}

// markDenied evaluates the NetworkPolicies of t's namespace for the exporter's own Pod, found by
// --pod.ip, as the watcher does (discovery.MarkDenied): an endpoint they deny is not dialed, and a
// Service whose every endpoint is denied is layer policy. The error says why they were not
// evaluated (no --pod.ip, no Pod with that address, no permission): diagnose notes it and dials.
func markDenied(ctx context.Context, client kubernetes.Interface, cfg *config, t *discovery.Target) error {
	if len(t.Endpoints) == 0 {
		return nil
	}
	list, err := client.NetworkingV1().NetworkPolicies(t.Namespace).List(ctx, metav1.ListOptions{})
	if err != nil {
		return fmt.Errorf("NetworkPolicies not evaluated: list in %s: %w", t.Namespace, err)
	}
	if len(list.Items) == 0 {
		return nil
	}
	if len(cfg.PodIPs) == 0 {
		return errors.New("NetworkPolicies not evaluated: no --pod.ip (this Pod's address) to evaluate them for")
	}
	pols := make([]*networkingv1.NetworkPolicy, len(list.Items))
	for i := range list.Items {
		pols[i] = &list.Items[i]
	}
	for _, ip := range cfg.PodIPs {
		pods, err := client.CoreV1().Pods("").List(ctx, metav1.ListOptions{FieldSelector: "status.podIP=" + ip.String()})
		if err != nil {
			return fmt.Errorf("NetworkPolicies not evaluated: finding the Pod of %s: %w", ip, err)
		}
		for i := range pods.Items {
			p := &pods.Items[i]
			if p.Status.PodIP != ip.String() || p.Status.Phase == corev1.PodSucceeded || p.Status.Phase == corev1.PodFailed {
				continue
			}
			var nsLabels map[string]string
			if n, err := client.CoreV1().Namespaces().Get(ctx, p.Namespace, metav1.GetOptions{}); err == nil {
				nsLabels = n.Labels
			}
			discovery.MarkDenied(t, pols, discovery.PolicyPeer(p, ip, nsLabels))
			return nil
		}
	}
	return fmt.Errorf("NetworkPolicies not evaluated: no Pod has the address %v (--pod.ip)", cfg.PodIPs)
}

// namespaceWorkloads lists the workloads of ns (see discovery.MatchWorkloads).
func namespaceWorkloads(ctx context.Context, client kubernetes.Interface, ns string) ([]any, error) {
	var objs []any
	o := metav1.ListOptions{}
	deps, err := client.AppsV1().Deployments(ns).List(ctx, o)
	if err != nil {
		return nil, err
	}
	for i := range deps.Items {
		objs = append(objs, &deps.Items[i])
	}
	sts, err := client.AppsV1().StatefulSets(ns).List(ctx, o)
	if err != nil {
		return nil, err
	}
	for i := range sts.Items {
		objs = append(objs, &sts.Items[i])
	}
	rss, err := client.AppsV1().ReplicaSets(ns).List(ctx, o)
	if err != nil {
		return nil, err
	}
	for i := range rss.Items {
		objs = append(objs, &rss.Items[i])
	}
	dss, err := client.AppsV1().DaemonSets(ns).List(ctx, o)
	if err != nil {
		return nil, err
	}
	for i := range dss.Items {
		objs = append(objs, &dss.Items[i])
	}
	rcs, err := client.CoreV1().ReplicationControllers(ns).List(ctx, o)
	if err != nil {
		return nil, err
	}
	for i := range rcs.Items {
		objs = append(objs, &rcs.Items[i])
	}
	return objs, nil
}

func serviceSlices(ctx context.Context, client kubernetes.Interface, ns, name string) ([]*discoveryv1.EndpointSlice, error) {
	list, err := client.DiscoveryV1().EndpointSlices(ns).List(ctx, metav1.ListOptions{LabelSelector: discoveryv1.LabelServiceName + "=" + name})
	if err != nil {
		return nil, fmt.Errorf("list EndpointSlices of %s/%s: %w", ns, name, err)
	}
	out := make([]*discoveryv1.EndpointSlice, 0, len(list.Items))
	for i := range list.Items {
		out = append(out, &list.Items[i])
	}
	return out, nil
}

// dnsServiceEndpoints returns the endpoints of the cluster DNS Service (--dns.service), each a DNS
// Pod to ask directly.
func dnsServiceEndpoints(ctx context.Context, client kubernetes.Interface, key string) ([]discovery.Endpoint, error) {
	if key == "" {
		return nil, nil
	}
	ns, name, ok := strings.Cut(key, "/")
	if !ok {
		return nil, fmt.Errorf("--dns.service %q: want namespace/name", key)
	}
	epSlices, err := serviceSlices(ctx, client, ns, name)
	if err != nil {
		return nil, err
	}
	// BuildTarget only needs the Service's identity to turn slices into endpoints.
	stub := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name}}
	return discovery.BuildTarget(stub, epSlices, nil).Endpoints, nil
}

// dnsServiceIPs returns the ClusterIPs of the cluster DNS Service (--dns.service), nil when it
// cannot be read (its nameserver is then not taken for the DNS Service's VIP).
func dnsServiceIPs(ctx context.Context, client kubernetes.Interface, key string) []netip.Addr {
	ns, name, ok := strings.Cut(key, "/")
	if !ok {
		return nil
	}
	svc, err := client.CoreV1().Services(ns).Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		return nil
	}
	return discovery.ClusterIPsOf(svc)
}

func writeDiagnosis(out io.Writer, format string, doc web.Service, notes []string) error {
	if format == "json" {
		enc := json.NewEncoder(out)
		enc.SetIndent("", "  ")
		return enc.Encode(doc)
	}
	var b strings.Builder
	writeWalk(&b, doc, notes)
	_, err := io.WriteString(out, b.String())
	return err
}

// writeWalk prints the runbook walk for a terminal.
func writeWalk(b *strings.Builder, s web.Service, notes []string) {
	fmt.Fprintf(b, "svcprobe diagnose %s/%s\n", s.Namespace, s.Name)
	if s.Kind != "" {
		facts := []string{s.Kind}
		if len(s.ClusterIPs) > 0 {
			facts = append(facts, "cluster IPs "+strings.Join(s.ClusterIPs, ", "))
		}
		if len(s.Selector) > 0 {
			facts = append(facts, "selector "+formatSelector(s.Selector))
		}
		facts = append(facts, fmt.Sprintf("endpoints %d ready, %d not ready, %d terminating", s.Endpoints.Ready, s.Endpoints.NotReady, s.Endpoints.Terminating))
		fmt.Fprintf(b, "  %s\n", strings.Join(facts, " · "))
	}
	for _, e := range s.AnnotationErrors {
		fmt.Fprintf(b, "  ! malformed annotation (probed with defaults): %s\n", e)
	}
	for _, n := range notes {
		fmt.Fprintf(b, "  ! %s\n", n)
	}
	b.WriteString("\n")
	var blamed *web.Step
	for i, st := range s.Runbook {
		mark := "✔"
		switch st.Status {
		case web.StatusFailed, web.StatusDegraded:
			mark = "✘"
		case web.StatusSkipped, web.StatusNotProbed:
			mark = "–"
		}
		line := fmt.Sprintf("%d. %s %s", st.Step, mark, st.Question)
		if st.Status != web.StatusOK {
			line += fmt.Sprintf("  [%s", st.Status)
			if st.Status == web.StatusFailed || st.Status == web.StatusDegraded {
				line += ": " + st.Reason
				if st.Family != "" {
					line += ", " + st.Family + " only"
				}
			}
			line += "]"
		}
		if st.Blamed {
			line += "  <- the broken layer"
			blamed = &s.Runbook[i]
		}
		fmt.Fprintln(b, line)
		if st.Detail != "" && !repeatsCheck(st) {
			fmt.Fprintf(b, "     %s\n", st.Detail)
		}
		for _, c := range st.Checks {
			m := "✔"
			if !c.OK {
				m = "✘"
			}
			fmt.Fprintf(b, "     %s %s: %s", m, c.Subject, c.Reason)
			if c.Detail != "" && c.Detail != c.Reason {
				fmt.Fprintf(b, " — %s", c.Detail)
			}
			if c.DurationSeconds > 0 {
				fmt.Fprintf(b, " (%s)", time.Duration(c.DurationSeconds*float64(time.Second)).Round(10*time.Microsecond))
			}
			b.WriteString("\n")
		}
		if st.Hint != "" {
			fmt.Fprintf(b, "     next: %s\n", st.Hint)
		}
		if st.Inconclusive != "" {
			fmt.Fprintf(b, "     inconclusive: %s\n", st.Inconclusive)
		}
		if st.Programming != "" {
			fmt.Fprintf(b, "     network programming: %s\n", st.Programming)
		}
	}
	b.WriteString("\n")
	switch s.Verdict {
	case string(metrics.LayerIdle):
		fmt.Fprintf(b, "IDLE: %s/%s is scaled to zero on purpose (%s): nothing to probe, nothing broken.\n", s.Namespace, s.Name, s.Reason)
		return
	case string(metrics.LayerPolicy):
		fmt.Fprintf(b, "POLICY: NetworkPolicy does not let svcprobe reach the Pods of %s/%s (%s): it cannot say whether they answer; "+
			"see the pod step for the policies, and allow svcprobe in if it should look.\n", s.Namespace, s.Name, s.Reason)
		return
	}
	if s.Healthy {
		fmt.Fprintf(b, "HEALTHY: %s/%s passed every step.\n", s.Namespace, s.Name)
		return
	}
	fmt.Fprintf(b, "BROKEN: layer %s (%s", s.Verdict, s.Reason)
	if s.Family != "" {
		fmt.Fprintf(b, ", %s only", s.Family)
	}
	b.WriteString(")")
	if blamed != nil {
		fmt.Fprintf(b, " at step %d, %q", blamed.Step, blamed.Question)
		if blamed.Hint != "" {
			fmt.Fprintf(b, "\nNext: %s", blamed.Hint)
		}
	}
	b.WriteString("\n")
}

func formatSelector(m map[string]string) string {
	parts := make([]string, 0, len(m))
	for k, v := range m {
		parts = append(parts, k+"="+v)
	}
	slices.Sort(parts)
	return strings.Join(parts, ",")
}

// repeatsCheck reports whether a step's detail is only its first failing check, printed below.
func repeatsCheck(st web.Step) bool {
	for _, c := range st.Checks {
		if st.Detail == c.Subject+": "+c.Detail {
			return true
		}
	}
	return false
}

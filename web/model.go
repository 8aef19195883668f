package web

import (
	"fmt"
	"net/netip"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/svcprobe/svcprobe/discovery"
	"github.com/svcprobe/svcprobe/metrics"
	"github.com/svcprobe/svcprobe/probe"
)

// The JSON documents of /api/v1/services. Field names are part of the API: add fields, never
// rename or remove them. Durations are float seconds, times RFC 3339.

// Status is the state of a stage, a runbook step or the cluster DNS as shown to a human.
type Status string

const (
	StatusOK        Status = "ok"         // every check passed
	StatusDegraded  Status = "degraded"   // some checks failed, not all (e.g. 1 of 3 endpoints)
	StatusFailed    Status = "failed"     // every check failed
	StatusSkipped   Status = "skipped"    // the stage does not apply to this Service
	StatusNotProbed Status = "not_probed" // the stage has not run yet
)

// ServiceList is the document of GET /api/v1/services.
type ServiceList struct {
	GeneratedAt time.Time   `json:"generated_at"`
	Ready       bool        `json:"ready"`
	ReadyDetail string      `json:"ready_detail,omitempty"`
	ClusterDNS  *ClusterDNS `json:"cluster_dns"`
	Total       int         `json:"total"`  // Services matching the filters, on all pages
	Broken      int         `json:"broken"` // of those, Services whose verdict is not ok
	Page        int         `json:"page"`   // 1-based
	PageSize    int         `json:"page_size"`
	Pages       int         `json:"pages"`
	Services    []Service   `json:"services"`
}

// Service is one Service: its verdict, its stages and, in the per-Service document, the runbook
// walk with every check.
type Service struct {
	Namespace  string            `json:"namespace"`
	Name       string            `json:"name"`
	UID        string            `json:"uid,omitempty"`
	Kind       string            `json:"kind,omitempty"`
	ClusterIPs []string          `json:"cluster_ips"`
	Selector   map[string]string `json:"selector,omitempty"`
	Verdict    string            `json:"verdict"` // the broken layer, or "ok"
	Reason     string            `json:"reason"`  // why the layer is blamed
	// Family is the IP family the blamed failure is confined to (ipv4, ipv6), as the verdict
	// series' family label; absent otherwise.
	Family    string         `json:"family,omitempty"`
	Healthy   bool           `json:"healthy"`
	Endpoints EndpointCounts `json:"endpoints"`
	LastProbe *time.Time     `json:"last_probe"` // last network probe, null before the first
	// VerdictSince is when the verdict's layer became the current one (null while it is being
	// decided anew); VerdictChanges are its last layer changes, oldest first.
	VerdictSince     *time.Time      `json:"verdict_since"`
	VerdictChanges   []VerdictChange `json:"verdict_changes,omitempty"`
	LatencySeconds   float64         `json:"latency_seconds"`
	AnnotationErrors []string        `json:"annotation_errors,omitempty"`
	Stages           []Stage         `json:"stages"`            // in probe.Stages order
	Runbook          []Step          `json:"runbook,omitempty"` // only in the per-Service document
}

// VerdictChange is one change of a Service's verdict layer.
type VerdictChange struct {
	At      time.Time `json:"at"`
	Verdict string    `json:"verdict"`
	Reason  string    `json:"reason"`
}

// EndpointCounts counts a Service's endpoints by state.
type EndpointCounts struct {
	Ready       int `json:"ready"`
	NotReady    int `json:"not_ready"`
	Terminating int `json:"terminating"`
}

// Stage is the latest result of one stage.
type Stage struct {
	Stage  string `json:"stage"`
	Status Status `json:"status"`
	Reason string `json:"reason"`
	Detail string `json:"detail,omitempty"`
	Hint   string `json:"hint,omitempty"`
	// Family is set when a dual-stack Service's stage fails on one IP family only (ipv4, ipv6).
	Family          string     `json:"family,omitempty"`
	Failing         int        `json:"failing"`
	Total           int        `json:"total"`
	DurationSeconds float64    `json:"duration_seconds"`
	At              *time.Time `json:"at,omitempty"`
	Checks          []Check    `json:"checks,omitempty"` // only in the per-Service document
	// Window is the stage's recent rounds, which the verdict follows (network stages only).
	Window *Window `json:"window,omitempty"`
	// Programming is the stage's network programming measurement (proxy and dns): a change
	// being programmed now, or the last one.
	Programming *Programming `json:"programming,omitempty"`
}

// Programming is a stage's network programming latency (issue 21): a change the data plane has
// to follow being programmed now (in_progress, since since), or the last one's latency (null
// when it did not arrive within the ceiling: arrived false).
type Programming struct {
	InProgress     bool       `json:"in_progress"`
	Since          time.Time  `json:"since"`
	Arrived        bool       `json:"arrived"`
	LatencySeconds *float64   `json:"latency_seconds"`
	At             *time.Time `json:"at,omitempty"`
}

// newProgramming is st's measurement in ss, nil when it has none.
func newProgramming(ss metrics.ServiceStatus, st probe.Stage) *Programming {
	if since, ok := ss.Programming[st]; ok {
		return &Programming{InProgress: true, Since: since.UTC()}
	}
	p, ok := ss.Programmed[st]
	if !ok {
		return nil
	}
	at := p.At.UTC()
	out := &Programming{Since: p.Since.UTC(), Arrived: p.Done, At: &at}
	if p.Done {
		l := p.Latency.Seconds()
		out.LatencySeconds = &l
	}
	return out
}

// programmingText says a stage's measurement in words, for the runbook step.
func programmingText(p *Programming) string {
	switch {
	case p == nil:
		return ""
	case p.InProgress:
		return fmt.Sprintf("programming: a change made at %s is not in the data plane yet (probed again at the cadence until it is; not a failure before the ceiling)", p.Since.Format(time.RFC3339))
	case p.Arrived:
		return fmt.Sprintf("last change programmed in %s (at %s)", formatSeconds(*p.LatencySeconds), p.At.Format(time.RFC3339))
	}
	return fmt.Sprintf("last change (made at %s) never reached the data plane within the ceiling", p.Since.Format(time.RFC3339))
}

// Check is one piece of evidence: what was asked, what was seen.
type Check struct {
	Subject         string  `json:"subject"`
	OK              bool    `json:"ok"`
	Reason          string  `json:"reason"`
	Detail          string  `json:"detail,omitempty"`
	DurationSeconds float64 `json:"duration_seconds"`
	Pod             string  `json:"pod,omitempty"`
	Addr            string  `json:"addr,omitempty"`
	// Class is a nameserver's class (cluster DNS only): service (the DNS Service's ClusterIP),
	// node_local (a node-local cache), resolver (another), unknown (the DNS Service's IP unknown).
	Class string `json:"class,omitempty"`
}

// Step is one step of the Debug Services runbook, in the runbook's order.
type Step struct {
	Step     int    `json:"step"`
	ID       string `json:"id"`              // exists, dns, cluster_dns, proxy, spec, endpoints, pod, hairpin
	Question string `json:"question"`        // the runbook's question
	Stage    string `json:"stage,omitempty"` // the probe stage answering it, if any
	Status   Status `json:"status"`
	Reason   string `json:"reason"`
	Detail   string `json:"detail,omitempty"`
	Hint     string `json:"hint,omitempty"`
	Blamed   bool   `json:"blamed"` // this step is the layer the verdict names
	// Family: the failing step fails on one IP family only (ipv4, ipv6) of a dual-stack Service.
	Family string  `json:"family,omitempty"`
	Checks []Check `json:"checks,omitempty"`
	// Inconclusive says that the stage's latest run failed on the exporter's own limits
	// (budget_exhausted, port_exhausted): what the step shows is its last conclusive run.
	Inconclusive string `json:"inconclusive,omitempty"`
	// Programming says the stage's network programming measurement in words (proxy, dns).
	Programming string `json:"programming,omitempty"`
}

// Window is a stage's window of recent rounds: its state (ok, degraded: failing in a share of
// rounds, failed: failing in the last two) and the failing share of its attempts.
type Window struct {
	State        string  `json:"state"`
	Rounds       int     `json:"rounds"`
	FailedRounds int     `json:"failed_rounds"`
	Failing      int     `json:"failing"`
	Total        int     `json:"total"`
	FailureRatio float64 `json:"failure_ratio"`
}

// ClusterDNS is the latest round of cluster DNS checks.
type ClusterDNS struct {
	At           time.Time `json:"at"`
	Status       Status    `json:"status"`
	ProxySuspect bool      `json:"proxy_suspect"` // DNS Pods answer, the DNS Service IP does not
	PodsUp       int       `json:"pods_up"`
	PodsTotal    int       `json:"pods_total"`
	Canary       Check     `json:"canary"`
	Nameservers  []Check   `json:"nameservers"` // each resolv.conf nameserver, with its class
	Pods         []Check   `json:"pods"`        // each DNS Pod asked directly
}

// NewService converts a store snapshot entry. With detail it also carries every check and the
// runbook walk (the per-Service document); cluster is the cluster DNS round the walk quotes.
func NewService(ss metrics.ServiceStatus, cluster *probe.ClusterDNSResult, detail bool) Service {
	t := ss.Target
	c := t.Counts()
	s := Service{
		Namespace: t.Namespace, Name: t.Name, UID: string(t.UID), Kind: string(t.Kind),
		ClusterIPs: addrStrings(t.ClusterIPs), Selector: t.Selector,
		Verdict: string(ss.Verdict), Reason: string(ss.Reason), Family: string(ss.Family), Healthy: ss.Verdict == metrics.LayerOK || ss.Verdict.Intended(),
		Endpoints: EndpointCounts{Ready: c.Ready, NotReady: c.NotReady, Terminating: c.Terminating},
	}
	if !ss.LastProbe.IsZero() {
		lp := ss.LastProbe.UTC()
		s.LastProbe = &lp
	}
	if !ss.Since.IsZero() {
		since := ss.Since.UTC()
		s.VerdictSince = &since
	}
	for _, c := range ss.Changes {
		s.VerdictChanges = append(s.VerdictChanges, VerdictChange{At: c.At.UTC(), Verdict: string(c.Layer), Reason: string(c.Reason)})
	}
	for _, err := range t.AnnotationErrors {
		s.AnnotationErrors = append(s.AnnotationErrors, err.Error())
	}
	for _, st := range probe.Stages {
		r, ok := ss.Results[st]
		stage := newStage(st, r, ok, detail)
		if w, has := ss.Windows[st]; has && w.Rounds > 0 && ok && r.Outcome != probe.Skipped {
			stage.Window = &Window{State: string(w.State), Rounds: w.Rounds, FailedRounds: w.FailedRounds,
				Failing: w.Failing, Total: w.Total, FailureRatio: w.FailureRatio()}
		}
		stage.Programming = newProgramming(ss, st)
		s.Stages = append(s.Stages, stage)
		if ok && r.Outcome != probe.Skipped {
			s.LatencySeconds += r.Duration.Seconds()
		}
	}
	if detail {
		s.Runbook = walk(ss, cluster)
	}
	return s
}

// inconclusive describes a stage run that failed on the exporter's own limits.
func inconclusive(r probe.Result) string {
	out := string(r.Reason)
	if r.Detail != "" {
		out += ": " + r.Detail
	}
	if !r.At.IsZero() {
		out += " (at " + r.At.UTC().Format(time.RFC3339) + ")"
	}
	return out + "; the exporter's limits, not the Service's: shown is the last conclusive run"
}

// MissingService is the document of a Service that is expected but does not exist.
func MissingService(namespace, name string) Service {
	return Service{
		Namespace: namespace, Name: name, ClusterIPs: []string{},
		Verdict: string(metrics.LayerMissing), Reason: string(metrics.LayerMissing),
		Runbook: []Step{{
			Step: 1, ID: "exists", Question: questions["exists"], Status: StatusFailed, Reason: "missing",
			Detail: "no Service " + namespace + "/" + name + " in the API",
			Hint:   "Create the Service, or check the name and namespace (kubectl get svc -n " + namespace + "): the runbook stops here.",
			Blamed: true,
		}},
	}
}

// StatusOf classifies a result: ok, degraded (Failing < Total), failed, skipped or not_probed.
func StatusOf(r probe.Result, probed bool) Status {
	switch {
	case !probed:
		return StatusNotProbed
	case r.Outcome == probe.Skipped:
		return StatusSkipped
	case r.Outcome == probe.OK:
		return StatusOK
	case r.Failing > 0 && r.Failing < r.Total:
		return StatusDegraded
	}
	return StatusFailed
}

func newStage(st probe.Stage, r probe.Result, probed, detail bool) Stage {
	s := Stage{Stage: string(st), Status: StatusOf(r, probed), Reason: string(r.Reason), Detail: r.Detail,
		Hint: r.Hint, Family: string(r.Family), Failing: r.Failing, Total: r.Total, DurationSeconds: r.Duration.Seconds()}
	if !probed {
		s.Reason = string(probe.ReasonNotProbed)
	}
	if !r.At.IsZero() {
		at := r.At.UTC()
		s.At = &at
	}
	if detail {
		s.Checks = newChecks(r.Checks)
	}
	return s
}

func newCheck(c probe.Check) Check {
	return Check{Subject: c.Subject, OK: c.OK(), Reason: string(c.Reason), Detail: c.Detail,
		DurationSeconds: c.Duration.Seconds(), Pod: c.Pod, Addr: c.Addr}
}

func newChecks(cs []probe.Check) []Check {
	if len(cs) == 0 {
		return nil
	}
	out := make([]Check, len(cs))
	for i, c := range cs {
		out[i] = newCheck(c)
	}
	return out
}

// NewClusterDNS converts a cluster DNS round; nil before the first round.
func NewClusterDNS(r *probe.ClusterDNSResult) *ClusterDNS {
	if r == nil {
		return nil
	}
	up, total := r.PodsUp()
	c := &ClusterDNS{At: r.At.UTC(), ProxySuspect: r.ProxySuspect(), PodsUp: up, PodsTotal: total,
		Canary: newCheck(r.Canary), Nameservers: newChecks(r.VIP), Pods: []Check{}}
	if c.Nameservers == nil {
		c.Nameservers = []Check{}
	}
	for i := range c.Nameservers {
		c.Nameservers[i].Class = string(r.ClassOf(i))
	}
	for _, p := range r.Pods {
		pc := newCheck(p.Check)
		if pc.Pod == "" {
			pc.Pod = p.Name
		}
		c.Pods = append(c.Pods, pc)
	}
	switch {
	case r.Canary.OK() && r.VIPUp() && up == total:
		c.Status = StatusOK
	case r.Canary.OK() || r.VIPUp() || up > 0:
		c.Status = StatusDegraded
	default:
		c.Status = StatusFailed
	}
	return c
}

// questions are the runbook's questions, by step id.
var questions = map[string]string{
	"exists":       "Does the Service exist?",
	"dns":          "Does the Service work by DNS name?",
	"cluster_dns":  "Does any Service work by DNS name?",
	"proxy":        "Does the Service work by IP?",
	"nodeport":     "Does the Service work on its NodePort (this node's address)?",
	"loadbalancer": "Does the Service work on its load balancer's ingress IP (from this Pod)?",
	"spec":         "Is the Service defined correctly?",
	"endpoints":    "Does the Service have any Endpoints?",
	"pod":          "Are the Pods working?",
	"hairpin":      "Is kube-proxy working? Can a Pod reach itself via its Service IP?",
}

// runbookOrder maps the runbook's steps onto the stages. The runbook asks DNS and the VIP before
// looking at the spec, while the verdict blames the lowest broken layer: the walk shows every
// failed step and marks the one the verdict names.
var runbookOrder = []struct {
	id    string
	stage probe.Stage
}{
	{"exists", ""}, {"dns", probe.StageDNS}, {"cluster_dns", ""}, {"proxy", probe.StageProxy},
	{"spec", probe.StageSpec}, {"endpoints", probe.StageEndpoints}, {"pod", probe.StagePod},
	{"hairpin", probe.StageHairpin},
	// Not a question of the runbook: its NodePort path, asked last so the runbook keeps its numbers.
	{"nodeport", probe.StageNodePort},
	// Nor its load-balancer path from inside the cluster.
	{"loadbalancer", probe.StageLoadBalancer},
}

// layerStep is the step the verdict's layer points at.
var layerStep = map[metrics.Layer]string{
	metrics.LayerMissing: "exists", metrics.LayerSpec: "spec", metrics.LayerEndpoints: "endpoints",
	metrics.LayerPod: "pod", metrics.LayerProxy: "proxy", metrics.LayerDNS: "dns", metrics.LayerHairpin: "hairpin",
}

func walk(ss metrics.ServiceStatus, cluster *probe.ClusterDNSResult) []Step {
	blamed := layerStep[ss.Verdict]
	// A DNS failure blamed on the proxy (DNS Pods answer, the DNS Service IP does not) is a
	// broken VIP for kube-dns, not for this Service: mark the cluster DNS step.
	if ss.Verdict == metrics.LayerProxy {
		if r, ok := ss.Results[probe.StageProxy]; (!ok || r.Outcome != probe.Failed) && !windowBad(ss, probe.StageProxy) {
			blamed = "cluster_dns"
			// The ClusterIP is fine but the NodePort is not: kube-proxy's NodePort path.
			if n, ok := ss.Results[probe.StageNodePort]; ok && (n.Outcome == probe.Failed || windowBad(ss, probe.StageNodePort)) {
				blamed = "nodeport"
			} else if l, ok := ss.Results[probe.StageLoadBalancer]; ok && (l.Outcome == probe.Failed || windowBad(ss, probe.StageLoadBalancer)) {
				blamed = "loadbalancer"
			}
		}
	}
	var steps []Step
	for i, o := range runbookOrder {
		s := Step{Step: i + 1, ID: o.id, Question: questions[o.id], Stage: string(o.stage), Blamed: o.id == blamed}
		switch o.id {
		case "exists":
			s.Status, s.Reason = StatusOK, string(probe.ReasonSuccess)
			s.Detail = "Service " + ss.Target.Key() + " (" + string(ss.Target.Kind) + ")"
			if ips := addrStrings(ss.Target.ClusterIPs); len(ips) > 0 {
				s.Detail += ", cluster IPs " + strings.Join(ips, ", ")
			}
		case "cluster_dns":
			clusterStep(&s, cluster)
		default:
			r, ok := ss.Results[o.stage]
			s.Status, s.Reason, s.Detail, s.Checks = StatusOf(r, ok), string(r.Reason), r.Detail, newChecks(r.Checks)
			if !ok {
				s.Reason = string(probe.ReasonNotProbed)
				s.Detail = "no result: not probed yet"
				if o.stage == probe.StageHairpin {
					s.Detail = "no result: the hairpin stage runs only when --hairpin.service is set, against that Service"
				}
			}
			if s.Status == StatusFailed || s.Status == StatusDegraded {
				s.Hint, s.Family = r.Hint, string(r.Family)
			}
			if w, has := ss.Windows[o.stage]; has && ok && r.Outcome != probe.Skipped && w.State == metrics.StateDegraded {
				// Failing in a share of the recent rounds: what the verdict calls partial, even
				// when the last round happened to pass.
				s.Status, s.Reason = StatusDegraded, string(probe.ReasonPartial)
				s.Detail = fmt.Sprintf("failed in %d of the last %d rounds (%d of %d attempts); last round: %s",
					w.FailedRounds, w.Rounds, w.Failing, w.Total, r.Reason)
				s.Hint = partialHint(o.stage, ss.Target)
			}
			if s.Status == StatusOK && s.Detail == "" {
				s.Detail = summary(r)
			}
			if r, has := ss.Inconclusive[o.stage]; has {
				s.Inconclusive = inconclusive(r)
			}
			s.Programming = programmingText(newProgramming(ss, o.stage))
		}
		steps = append(steps, s)
	}
	return steps
}

// windowBad reports whether a stage's window is failed or degraded.
func windowBad(ss metrics.ServiceStatus, st probe.Stage) bool {
	w, ok := ss.Windows[st]
	return ok && w.Rounds > 0 && w.State != metrics.StateOK
}

// partialHint is what to check when a stage fails in a share of its rounds.
func partialHint(st probe.Stage, t *discovery.Target) string {
	key := t.Namespace + "/" + t.Name
	switch {
	case st.ThroughProxy():
		return "Some connections through the Service's virtual IP fail while the Pods answer directly: a stale rule " +
			"for a backend that moved or went away (kube-proxy on this node not syncing: its logs, " +
			"kubeproxy_sync_proxy_rules_last_timestamp_seconds), or one backend unreachable only through the proxy. " +
			"Compare the endpoints in `iptables-save | grep " + key + "` (or `nft list table ip kube-proxy`) with " +
			"`kubectl get endpointslices -l kubernetes.io/service-name=" + t.Name + " -n " + t.Namespace + "`."
	case st == probe.StagePod:
		return "A backend answers some connections and not others: an overloaded Pod (accept queue full, CPU " +
			"throttling), a flaky network path to its node, or a firewall dropping a share of SYNs. Check " +
			"svcprobe_endpoint_up (--metrics.per-endpoint) or the status page's checks for which endpoint fails."
	case st == probe.StageDNS:
		return "The name resolves in some rounds and not in others: one DNS replica or one nameserver failing, " +
			"or DNS overloaded (its Pods' CPU throttling, i/o timeouts in their logs). Compare svcprobe_cluster_dns_up per Pod."
	}
	return "The stage fails in a share of its recent rounds: see the checks of the failing rounds."
}

func clusterStep(s *Step, r *probe.ClusterDNSResult) {
	c := NewClusterDNS(r)
	if c == nil {
		s.Status, s.Reason, s.Detail = StatusNotProbed, string(probe.ReasonNotProbed), "no cluster DNS round yet"
		return
	}
	s.Status, s.Reason = c.Status, c.Canary.Reason
	s.Checks = append(append([]Check{c.Canary}, c.Nameservers...), c.Pods...)
	s.Detail = summaryDNS(c)
	switch {
	case c.ProxySuspect:
		s.Hint = "The DNS Pods answer when asked directly but the DNS Service IP does not: the service proxy " +
			"(kube-proxy or the CNI's service routing) does not forward the DNS Service on this node. Check kube-proxy here " +
			"(if other Services' VIPs answer, only the DNS Service's rules are missing)."
	case deadClass(r) == probe.ResolverNodeLocal:
		s.Hint = "The nameserver is a node-local DNS cache and it does not answer on this node (not the cluster DNS Service): " +
			"check its DaemonSet's Pod here (kubectl -n kube-system get pods -l k8s-app=node-local-dns -o wide; its logs), " +
			"its health endpoint (curl http://<cache address>:8080/health on the node) and its nodelocaldns interface."
	case deadClass(r) == probe.ResolverOther:
		s.Hint = "The nameserver is not the cluster DNS Service's IP, and it does not answer: check the Pods' dnsPolicy and " +
			"dnsConfig (dnsPolicy: Default uses the node's resolv.conf) and that resolver itself."
	case c.Status != StatusOK:
		s.Hint = "Cluster DNS itself is unwell: check the DNS Pods (kubectl -n kube-system get pods -l k8s-app=kube-dns; their logs) " +
			"and that the nameserver in the Pods' /etc/resolv.conf is the DNS Service IP."
	}
}

// deadClass is the class of the dead nameservers ("" when some answer).
func deadClass(r *probe.ClusterDNSResult) probe.ResolverClass {
	class, dead := r.DeadResolver()
	if !dead {
		return ""
	}
	return class
}

func summaryDNS(c *ClusterDNS) string {
	nsUp := 0
	for _, n := range c.Nameservers {
		if n.OK {
			nsUp++
		}
	}
	return "canary " + c.Canary.Reason + "; " + strconv.Itoa(nsUp) + " of " + strconv.Itoa(len(c.Nameservers)) +
		" nameservers answer; " + strconv.Itoa(c.PodsUp) + " of " + strconv.Itoa(c.PodsTotal) + " DNS Pods answer"
}

func summary(r probe.Result) string {
	if r.Total == 0 {
		return ""
	}
	return strconv.Itoa(r.Total-r.Failing) + " of " + strconv.Itoa(r.Total) + " checks passed"
}

func addrStrings(as []netip.Addr) []string {
	out := make([]string, 0, len(as))
	for _, a := range as {
		out = append(out, a.String())
	}
	return out
}

// sortBrokenFirst orders rows by namespace (namespaces with a broken Service first), then missing
// Services, then broken before healthy, then by name.
func sortBrokenFirst(rows []row) {
	brokenNS := map[string]bool{}
	for _, r := range rows {
		if r.broken {
			brokenNS[r.ns] = true
		}
	}
	rank := func(r row) int {
		switch {
		case r.missing:
			return 0 // missing: nothing further down the runbook can work
		case r.broken:
			return 1
		}
		return 2
	}
	sort.SliceStable(rows, func(i, j int) bool {
		a, b := rows[i], rows[j]
		if a.ns != b.ns {
			if brokenNS[a.ns] != brokenNS[b.ns] {
				return brokenNS[a.ns]
			}
			return a.ns < b.ns
		}
		if ra, rb := rank(a), rank(b); ra != rb {
			return ra < rb
		}
		return a.name < b.name
	})
}

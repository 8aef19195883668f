package lab

// Network programming latency (issue 21) end to end: the data plane is held back on purpose
// while a change it has to follow is made, and the exporter's measurement must match the delay
// injected.
//
//   - kube-proxy-paused: node-1's kube-proxy (the node of the central exporter) is stopped with
//     SIGSTOP, a new Service is created, SIGCONT 10 s later: its proxy latency is about 10 s, its
//     verdict is never proxy.
//   - coredns-paused: both CoreDNS processes stopped for 8 s (their readiness frozen meanwhile, as
//     a kubelet's failureThreshold would, so kube-dns keeps its endpoints) while a new Service is
//     created: its dns latency is about 8 s, its verdict is never dns. The other Services' names
//     do fail for those 8 s (four rounds at the lab's 2 s interval): they may say dns (and
//     nothing else) meanwhile; only the new Service is held to "never dns".
//   - never-programmed: kube-proxy stopped beyond the 60 s ceiling: the new Service's verdict
//     turns proxy/not_programmed (not before the ceiling), the histogram observes nothing, and
//     it recovers after SIGCONT.
//   - min-sync-period: kube-proxy restarted with --iptables-min-sync-period=10s; right after one
//     of its syncs the only backend of a Service turns ready: kube-proxy programs it at its next
//     sync, at least 10 s after the previous one, and the latency measured is that wait.
//   - node2-kube-proxy-paused: node-2 and the node agents up, node-2's kube-proxy stopped for 8 s
//     while a Service is created: node-2's agent measures about 8 s, node-1's agent and the
//     central exporter what an unhindered kube-proxy takes.
//
// The cases run in that order and share the lab, one namespace (programming-lab, two ready
// backend Pods) and its cleanup; every stopped process gets SIGCONT in a t.Cleanup too.
//
// Each case reads the Service's JSON API (stages[].programming) and /metrics
// (svcprobe_programming_latency_seconds, svcprobe_programming_in_progress) and samples the
// verdicts every 500 ms while the data plane is held back.
//
// The bound. The exporter times a change from the EndpointSlice's last-change-trigger-time (a
// new Service's creationTimestamp, a Pod's Ready transition), which has a resolution of one
// second (RFC 3339 seconds, truncated): the start it uses is up to 1 s before the real change.
// It ends a measurement at the end of the first attempt that shows the change. Attempts follow
// each other at the cadence (250 ms), each bounded by 1 s: while nothing answers, an attempt
// may be a timeout (a VIP without rules: the node's ICMP errors are rate-limited; a stopped
// CoreDNS never answers), so the attempt in flight when the component comes back may take up to
// 1 s before the next one starts. With D the delay injected (from the moment the create returned
// to the moment the component was let go; nothing can be programmed before that), the latency L
// the exporter reports is at least D, and at most
//
//	D + 1 s (trigger time resolution) + 1 s (an attempt in flight) + 250 ms (cadence) + catch-up
//
// where catch-up is the component's time to read its watch and write its rules or cache:
// 1.5 s for kube-proxy, resumed or never stopped (its default --iptables-min-sync-period of 1 s
// may split the Service and its EndpointSlice into two syncs: after SIGCONT its last sync ended
// 1.07 to 1.08 s later in three runs, 42 ms in one; the test logs it), 750 ms for CoreDNS
// resumed. For CoreDNS add its negative cache: when it resumes it answers the
// queries queued in its socket (the exporter's, made while it was stopped) at once, some before
// its informer has the new Service: NXDOMAIN, which `cache 30` then keeps for the SOA minimum
// (5 s) and every later query gets until it expires. Runs measured 13.2 s and 13.15 s for an 8 s
// stop (both replicas held the denial: asked directly after SIGCONT, each answered NXDOMAIN with
// the SOA's TTL counting down 5, 4, ... 1 and the address 5.02 s after SIGCONT), others 8.5 to
// 9.0 s (the exporter's queries, which reach either replica, found one without it). That is what
// a client that asked early sees, so the exporter reports it; the test logs each CoreDNS Pod's
// answers after SIGCONT. The cases assert D - (1 s + 250 ms) <= L (the issue's tolerance,
// although L >= D holds) and L <= that upper bound, and log L - D.

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"net"
	"os"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/miekg/dns"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/kubernetes"
)

const (
	// progNS is the namespace the test creates (and deletes) for its Services and Pods.
	progNS = "programming-lab"
	// progBackend labels the two ready Pods the new Services select.
	progBackend = "prog-backend"
	// The exporter's defaults (probe.DefaultProgramming): the lab deploys it without the flags.
	progCadence = 250 * time.Millisecond
	progCeiling = 60 * time.Second
	// progResolution is the trigger time's: RFC 3339 seconds.
	progResolution = time.Second
	// progTolerance is the issue's "±1 s plus one cadence" around the injected delay.
	progTolerance = time.Second + progCadence
	// progAttempt bounds one attempt at a stage being programmed (probe.programmingAttempt).
	progAttempt = time.Second
	// The components' catch-up (see the bound above): kube-proxy (resumed or not), CoreDNS
	// resumed (plus its negative cache).
	catchUpKubeProxy = 1500 * time.Millisecond
	catchUpCoreDNS   = 750 * time.Millisecond
	// coreDNSNegativeTTL is how long the lab's CoreDNS keeps a name it answered NXDOMAIN for:
	// the Corefile's `cache 30` keeps a denial for its SOA's minimum, the kubernetes plugin's ttl
	// (default 5 s).
	coreDNSNegativeTTL = 5 * time.Second
	// kubeProxyMinSync is the --iptables-min-sync-period of the min-sync-period case.
	kubeProxyMinSync = 10 * time.Second
)

func TestProgrammingLatency(t *testing.T) {
	cfg, cl := sharedLab(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	start := time.Now()
	defer func() { t.Logf("TestProgrammingLatency took %s", time.Since(start).Round(100*time.Millisecond)) }()

	// The central exporter runs on node-1: node-1's kube-proxy is the one its VIP connections go
	// through.
	pod, err := cfg.ExporterPod(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if pod.Spec.NodeName != NodeName {
		t.Fatalf("the exporter Pod runs on %q, want %s (whose kube-proxy the cases stop)", pod.Spec.NodeName, NodeName)
	}
	settle(t, ctx, cl)
	// The cases time the data plane from a Service's change; the control plane must follow
	// changes at once (kube-controller-manager's slices), whatever ran before.
	waitSliceController(t, ctx, cl)
	progSetup(t, ctx, cl)

	t.Run("kube-proxy-paused", func(t *testing.T) {
		progPausedCase(t, ctx, cl, "prog-proxy", "proxy", 10*time.Second, func(t *testing.T) []int {
			return []int{kubeProxyPid(t, cfg)}
		}, nil)
	})
	t.Run("coredns-paused", func(t *testing.T) {
		progPausedCase(t, ctx, cl, "prog-dns", "dns", 8*time.Second, func(t *testing.T) []int {
			return coreDNSPids(t, ctx, cl)
		}, func(key, verdict string) bool {
			// Every name fails while CoreDNS is stopped: the other Services may say dns (four
			// rounds at the 2 s interval), never another layer; kube-dns itself, whose Pods are
			// the ones stopped, is not judged here.
			return key != "kube-system/kube-dns" && !strings.HasPrefix(verdict, "ok/") && !strings.HasPrefix(verdict, "dns/")
		})
	})
	t.Run("never-programmed", func(t *testing.T) {
		progNeverCase(t, ctx, cfg, cl)
	})
	t.Run("min-sync-period", func(t *testing.T) {
		progMinSyncCase(t, ctx, cfg, cl)
	})
	t.Run("node2-kube-proxy-paused", func(t *testing.T) {
		progNode2Case(t, ctx, cfg, cl)
	})
}

// --- setup ---------------------------------------------------------------

// progSetup creates progNS with two ready serve_hostname Pods (app=prog-backend) and deletes it
// when the test ends, waiting until the namespace is gone and the exporter fully healthy.
func progSetup(t *testing.T, ctx context.Context, cl kubernetes.Interface) {
	t.Helper()
	t.Cleanup(func() {
		cctx, ccancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer ccancel()
		err := cl.CoreV1().Namespaces().Delete(cctx, progNS, metav1.DeleteOptions{})
		if err != nil && !apierrors.IsNotFound(err) {
			t.Errorf("delete namespace %s: %v", progNS, err)
			return
		}
		if err := waitFor(cctx, 90*time.Second, "namespace "+progNS+" gone", func() error {
			if _, err := cl.CoreV1().Namespaces().Get(cctx, progNS, metav1.GetOptions{}); !apierrors.IsNotFound(err) {
				return fmt.Errorf("still there (err %v)", err)
			}
			return nil
		}); err != nil {
			t.Error(err)
		}
		waitMetrics(t, "healthy after namespace "+progNS+" went", 60*time.Second, fullyHealthy(cctx, cl))
	})
	_, err := cl.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: progNS}}, metav1.CreateOptions{})
	if err != nil && !apierrors.IsAlreadyExists(err) {
		t.Fatal(err)
	}
	// Pods are admitted only once the namespace has its default ServiceAccount, which
	// kube-controller-manager's serviceaccount controller creates when its namespace informer
	// sees the namespace. Right after the outage tests each of its reflectors may still be in its
	// own relist backoff (client-go: 30 s cap, jittered up to 60 s, kept while the API went away
	// again within 2 minutes, as TestRelistWatchExpired makes it): a clean-clone CI run saw no
	// default ServiceAccount here for 30 s right after the API's return, while the endpointslice
	// controller already followed (its informers were back). The Pods need the object, not the
	// controller: create it (the controller leaves an existing one alone).
	sa := &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: "default", Namespace: progNS}}
	if _, err := cl.CoreV1().ServiceAccounts(progNS).Create(ctx, sa, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		t.Fatal(err)
	}
	for i := range 2 {
		if err := createProgPod(ctx, cl, fmt.Sprintf("%s-%d", progBackend, i), progBackend, false); err != nil {
			t.Fatal(err)
		}
	}
	if err := waitFor(ctx, 60*time.Second, "Pods "+progBackend+" ready", func() error {
		return podsReady(ctx, cl, progNS, "app="+progBackend, 2)
	}); err != nil {
		t.Fatal(err)
	}
}

// createProgPod creates a serve_hostname Pod (9376) labelled app=label in progNS; notReady makes
// the kubelet report it NotReady (AnnReady "false") until the annotation goes. The create is
// retried (30 s) while the namespace's default ServiceAccount is not there yet.
func createProgPod(ctx context.Context, cl kubernetes.Interface, name, label string, notReady bool) error {
	p := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: progNS, Labels: map[string]string{"app": label}},
		Spec: corev1.PodSpec{
			AutomountServiceAccountToken: ptr(false),
			Containers: []corev1.Container{{
				Name: "serve", Image: "registry.k8s.io/serve_hostname",
				Ports: []corev1.ContainerPort{{Name: "http", ContainerPort: 9376, Protocol: corev1.ProtocolTCP}},
			}},
		},
	}
	if notReady {
		p.Annotations = map[string]string{AnnReady: "false"}
	}
	return waitFor(ctx, 30*time.Second, "Pod "+progNS+"/"+name+" created", func() error {
		_, err := cl.CoreV1().Pods(progNS).Create(ctx, p, metav1.CreateOptions{})
		if apierrors.IsAlreadyExists(err) {
			return nil
		}
		return err
	})
}

// podsReady checks that want Pods match selector and all are Ready.
func podsReady(ctx context.Context, cl kubernetes.Interface, ns, selector string, want int) error {
	pods, err := cl.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{LabelSelector: selector})
	if err != nil {
		return err
	}
	n := 0
	for _, p := range pods.Items {
		if podReady(&p) {
			n++
		}
	}
	if n != want {
		return fmt.Errorf("%d of %d Pods %s ready, want %d", n, len(pods.Items), selector, want)
	}
	return nil
}

func podReady(p *corev1.Pod) bool {
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

// createProgService creates Service progNS/name (ClusterIP, 80 -> 9376) selecting app=label and
// returns it as created (its creationTimestamp).
func createProgService(t *testing.T, ctx context.Context, cl kubernetes.Interface, name, label string) *corev1.Service {
	t.Helper()
	svc := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: progNS},
		Spec: corev1.ServiceSpec{
			Selector: map[string]string{"app": label},
			Ports:    []corev1.ServicePort{{Name: "http", Port: 80, Protocol: corev1.ProtocolTCP, TargetPort: intstr.FromInt32(9376)}},
		},
	}
	s, err := cl.CoreV1().Services(progNS).Create(ctx, svc, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("create Service %s/%s: %v", progNS, name, err)
	}
	t.Cleanup(func() { deleteProgService(t, cl, name) })
	return s
}

// deleteProgService deletes Service progNS/name (nothing if it is gone) and waits until the
// exporter has no verdict for it.
func deleteProgService(t *testing.T, cl kubernetes.Interface, name string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	err := cl.CoreV1().Services(progNS).Delete(ctx, name, metav1.DeleteOptions{})
	if apierrors.IsNotFound(err) {
		return
	}
	if err != nil {
		t.Errorf("delete Service %s/%s: %v", progNS, name, err)
		return
	}
	key := progNS + "/" + name
	waitMetrics(t, key+" gone from the exporter", 20*time.Second, func(_ snapshot, v map[string]string) error {
		if got, ok := v[key]; ok {
			return fmt.Errorf("%s still has verdict %s", key, got)
		}
		return nil
	})
}

// --- the components held back ---------------------------------------------

// kubeProxyPid is the pid of node-1's kube-proxy (its pid file; the process must be alive).
func kubeProxyPid(t *testing.T, cfg *Config) int {
	t.Helper()
	pid, marker, err := readPidFile(cfg.pidPath(node1.Proxy))
	if err != nil {
		t.Fatalf("kube-proxy of node-1: %v", err)
	}
	if !alive(pid, marker) {
		t.Fatalf("kube-proxy of node-1 (pid %d) is not running", pid)
	}
	return pid
}

// coreDNSPids are the processes of both CoreDNS Pods (the kubelet runs them in the Pods' network
// namespaces), each checked to be coredns. Their readiness is frozen first (AnnReady "keep", as a
// kubelet does until failureThreshold): stopped, they would fail the readiness probe and kube-dns
// would lose its endpoints, which is another change for kube-proxy to program. The annotation
// goes when the test ends.
func coreDNSPids(t *testing.T, ctx context.Context, cl kubernetes.Interface) []int {
	t.Helper()
	t.Cleanup(func() {
		cctx, ccancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer ccancel()
		if err := annotatePods(cctx, cl, "kube-system", "k8s-app=kube-dns", 0, map[string]*string{AnnReady: nil}); err != nil {
			t.Errorf("CoreDNS readiness back to probing: %v", err)
		}
	})
	if err := annotatePods(ctx, cl, "kube-system", "k8s-app=kube-dns", 0, map[string]*string{AnnReady: ptr("keep")}); err != nil {
		t.Fatal(err)
	}
	// The kubelet takes the annotation from its informer at once; give it a moment.
	time.Sleep(time.Second)
	var pids []int
	for _, name := range []string{"coredns-0", "coredns-1"} {
		var found []int
		for _, p := range netnsPids(PodNetns("kube-system", name)) {
			if strings.Contains(cmdline(p), "coredns") {
				found = append(found, p)
			}
		}
		if len(found) != 1 {
			t.Fatalf("%d coredns processes in the namespace of kube-system/%s, want 1: %v", len(found), name, found)
		}
		pids = append(pids, found...)
	}
	return pids
}

// procState is the state letter of a process (/proc/PID/stat; 'T' when stopped), 0 if gone.
func procState(pid int) byte {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 || i+2 >= len(s) {
		return 0
	}
	return s[i+2]
}

// pause stops pids with SIGSTOP (each must then be stopped) and returns the resume: SIGCONT to
// each, once, returning when it was sent. The resume also runs when the test ends: nothing stays
// stopped.
func pause(t *testing.T, what string, pids []int) func() time.Time {
	t.Helper()
	resumed := false
	var at time.Time
	resume := func() time.Time {
		if !resumed {
			resumed = true
			at = time.Now()
			for _, p := range pids {
				if err := syscall.Kill(p, syscall.SIGCONT); err != nil {
					t.Errorf("SIGCONT %s (pid %d): %v", what, p, err)
				}
			}
		}
		return at
	}
	t.Cleanup(func() { resume() })
	for _, p := range pids {
		if err := syscall.Kill(p, syscall.SIGSTOP); err != nil {
			t.Fatalf("SIGSTOP %s (pid %d): %v", what, p, err)
		}
	}
	if err := waitFor(context.Background(), 2*time.Second, what+" stopped", func() error {
		for _, p := range pids {
			if st := procState(p); st != 'T' {
				return fmt.Errorf("pid %d in state %q", p, st)
			}
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	return resume
}

// --- reading the exporter ------------------------------------------------------

// progStage is a stage's stages[].programming in the JSON API.
type progStage struct {
	InProgress     bool       `json:"in_progress"`
	Since          time.Time  `json:"since"`
	Arrived        bool       `json:"arrived"`
	LatencySeconds *float64   `json:"latency_seconds"`
	At             *time.Time `json:"at"`
}

func (p *progStage) String() string {
	if p == nil {
		return "none"
	}
	l := "null"
	if p.LatencySeconds != nil {
		l = strconv.FormatFloat(*p.LatencySeconds, 'f', 3, 64)
	}
	return fmt.Sprintf("in_progress=%v since=%s arrived=%v latency_seconds=%s", p.InProgress, p.Since.Format(time.RFC3339Nano), p.Arrived, l)
}

// progDoc is what the cases read of /api/v1/services/{ns}/{name}.
type progDoc struct {
	Verdict string `json:"verdict"`
	Reason  string `json:"reason"`
	Stages  []struct {
		Stage       string     `json:"stage"`
		Status      string     `json:"status"`
		Reason      string     `json:"reason"`
		Detail      string     `json:"detail"`
		Programming *progStage `json:"programming"`
	} `json:"stages"`
	raw string
}

// stage returns the status, reason and programming of one stage.
func (d *progDoc) stage(name string) (status, reason string, p *progStage) {
	for _, s := range d.Stages {
		if s.Stage == name {
			return s.Status, s.Reason, s.Programming
		}
	}
	return "", "", nil
}

// readProgDoc reads a Service's JSON document from an exporter (src as scrapeAll names it:
// "central" or a node agent's node); nil without error while it does not know the Service (404).
func readProgDoc(ctx context.Context, cl kubernetes.Interface, src, ns, name string) (*progDoc, error) {
	sctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	body, err := scrapeSource(sctx, cl, src, "/api/v1/services/"+ns+"/"+name)
	if err != nil {
		if strings.Contains(err.Error(), "404") {
			return nil, nil
		}
		return nil, err
	}
	d := &progDoc{raw: body}
	if err := json.Unmarshal([]byte(body), d); err != nil {
		return nil, fmt.Errorf("/api/v1/services/%s/%s: %w", ns, name, err)
	}
	return d, nil
}

// progSample is one look at the exporter: /metrics, its verdicts and the Service's document.
type progSample struct {
	at  time.Time
	m   snapshot
	v   map[string]string
	doc *progDoc // nil while the exporter does not know the Service
}

func takeProgSample(ctx context.Context, name string) (progSample, error) {
	// The document first, then /metrics: a measurement the document shows started or ended is
	// in the gauge and the histogram scraped after it.
	s := progSample{at: time.Now()}
	var err error
	if s.doc, err = readProgDoc(ctx, nil, "central", progNS, name); err != nil {
		return s, err
	}
	sctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	m, err := scrape(sctx)
	cancel()
	if err != nil {
		return s, err
	}
	if s.v, err = m.verdicts(); err != nil {
		return s, err
	}
	s.m = m
	return s, nil
}

// progWatch samples every `every` until done passes (and returns that sample); every sample must
// pass during (it fails the test otherwise), and done must pass within.
func progWatch(t *testing.T, ctx context.Context, name, what string, every, within time.Duration,
	during func(progSample) error, done func(progSample) error) progSample {
	t.Helper()
	start := time.Now()
	var last error
	var lastS progSample
	for {
		s, err := takeProgSample(ctx, name)
		if err == nil {
			lastS = s
			if during != nil {
				if err := during(s); err != nil {
					t.Fatalf("%s: after %s: %v\nverdicts:%s\n%s", what, time.Since(start).Round(time.Millisecond), err, formatVerdicts(s.v), docText(s.doc))
				}
			}
			if err = done(s); err == nil {
				return s
			}
		}
		last = err
		if time.Since(start) > within {
			t.Fatalf("%s: not seen within %s: %v\nverdicts:%s\n%s\n%s", what, within, last, formatVerdicts(lastS.v), docText(lastS.doc), exporterDiagnostics())
		}
		time.Sleep(every)
	}
}

func docText(d *progDoc) string {
	if d == nil {
		return "(no document of the Service)"
	}
	return fmt.Sprintf("%.4000s", d.raw)
}

// histogram reads svcprobe_programming_latency_seconds' count and sum for a stage.
func histogram(m snapshot, stage string) (count, sum float64, err error) {
	count, ok := m.value("svcprobe_programming_latency_seconds_count", "stage", stage)
	sum, ok2 := m.value("svcprobe_programming_latency_seconds_sum", "stage", stage)
	if !ok || !ok2 {
		return 0, 0, fmt.Errorf("no svcprobe_programming_latency_seconds{stage=%q} count or sum", stage)
	}
	return count, sum, nil
}

func inProgress(m snapshot, stage string) (float64, error) {
	v, ok := m.value("svcprobe_programming_in_progress", "stage", stage)
	if !ok {
		return 0, fmt.Errorf("no svcprobe_programming_in_progress{stage=%q}", stage)
	}
	return v, nil
}

// notLayer rejects a verdict of the given layer.
func notLayer(key, layer string, v map[string]string) error {
	if got := v[key]; strings.HasPrefix(got, layer+"/") {
		return fmt.Errorf("%s has verdict %s while its %s change is being programmed", key, got, layer)
	}
	return nil
}

// othersNot fails when a Service other than key has a verdict bad rejects.
func othersNot(key string, bad func(key, verdict string) bool, v map[string]string) error {
	var errs []error
	for k, got := range v {
		if k != key && bad(k, got) {
			errs = append(errs, fmt.Errorf("%s has verdict %s", k, got))
		}
	}
	return errors.Join(errs...)
}

// checkLatency checks a latency L against the injected delay d and the component's catch-up
// allowance (see the file's comment).
func checkLatency(t *testing.T, what string, l, d, catchUp time.Duration) {
	t.Helper()
	lo, hi := d-progTolerance, d+progResolution+progAttempt+progCadence+catchUp
	t.Logf("%s: latency %s for an injected delay of %s (L-D %+dms; bound [%s, %s])", what,
		l.Round(time.Millisecond), d.Round(time.Millisecond), (l - d).Milliseconds(), lo.Round(time.Millisecond), hi.Round(time.Millisecond))
	if l < lo || l > hi {
		t.Errorf("%s: latency %s not within [%s, %s] (injected delay %s)", what, l, lo, hi, d)
	}
}

func seconds(f float64) time.Duration { return time.Duration(f * float64(time.Second)) }

// --- the cases -----------------------------------------------------------

// progPausedCase: the processes pids() returns are stopped, Service name (selecting the ready
// backends) is created, and they run again delay after the create returned. The stage's
// latency must be about that delay; the Service's verdict must never name the stage meanwhile
// nor after; othersBad, if set, names what the other Services must never show (default: any
// verdict of the stage's layer).
func progPausedCase(t *testing.T, ctx context.Context, cl kubernetes.Interface, name, stage string, delay time.Duration,
	pids func(*testing.T) []int, othersBad func(key, verdict string) bool) {
	key := progNS + "/" + name
	if othersBad == nil {
		othersBad = func(_, v string) bool { return strings.HasPrefix(v, stage+"/") }
	}
	waitMetrics(t, "healthy before "+name, 60*time.Second, fullyHealthy(ctx, cl))
	s0, err := takeProgSample(ctx, name)
	if err != nil {
		t.Fatal(err)
	}
	count0, sum0, err := histogram(s0.m, stage)
	if err != nil {
		t.Fatal(err)
	}
	other := map[string]string{"proxy": "dns", "dns": "proxy"}[stage]
	ocount0, _, err := histogram(s0.m, other)
	if err != nil {
		t.Fatal(err)
	}

	resume := pause(t, stage+" component", pids(t))
	created := time.Now()
	svc := createProgService(t, ctx, cl, name, progBackend)
	createdEnd := time.Now()
	t.Logf("%s: created at %s (creationTimestamp %s), the %s component stopped", key,
		created.UTC().Format("15:04:05.000"), svc.CreationTimestamp.UTC().Format(time.RFC3339), stage)

	during := func(s progSample) error {
		if err := notLayer(key, stage, s.v); err != nil {
			return err
		}
		return othersNot(key, othersBad, s.v)
	}
	// Held back: the stage is being programmed (JSON and gauge), never failed.
	sawInProgress := false
	resumeAt := createdEnd.Add(delay)
	samples := 0
	othersSeen := map[string]bool{}
	for time.Now().Before(resumeAt) {
		s, err := takeProgSample(ctx, name)
		if err != nil {
			t.Logf("sample while %s is stopped: %v", stage, err)
			time.Sleep(200 * time.Millisecond)
			continue
		}
		samples++
		for k, got := range s.v {
			if k != key && got != "ok/success" && !othersSeen[k+" "+got] {
				othersSeen[k+" "+got] = true
				t.Logf("while stopped (+%s): %s has verdict %s", time.Since(created).Round(100*time.Millisecond), k, got)
			}
		}
		if err := during(s); err != nil {
			t.Fatalf("%s stopped, after %s: %v\nverdicts:%s\n%s", stage, time.Since(created).Round(time.Millisecond), err, formatVerdicts(s.v), docText(s.doc))
		}
		if s.doc != nil {
			if _, _, p := s.doc.stage(stage); p != nil && p.InProgress {
				if g, err := inProgress(s.m, stage); err != nil || g < 1 {
					t.Fatalf("%s's %s stage is in progress in the JSON API but svcprobe_programming_in_progress{stage=%q} = %v (%v)", key, stage, stage, g, err)
				}
				sawInProgress = true
			}
		}
		time.Sleep(min(500*time.Millisecond, time.Until(resumeAt)))
	}
	resumed := resume()
	injected := resumed.Sub(createdEnd)
	var diag func() string
	if stage == "dns" {
		diag = watchCoreDNS(ctx, name+"."+progNS+".svc."+ClusterDomain, resumed)
		defer diag() // the watch ends on a failure too
	}
	if !sawInProgress {
		t.Errorf("%s: the JSON API never showed the %s stage in progress in %d samples over %s", key, stage, samples, injected.Round(time.Millisecond))
	}
	t.Logf("%s: %d samples while stopped, never %s; resumed after %s", key, samples, stage, injected.Round(time.Millisecond))

	// Arrived: the latency, once, in the JSON API and the histogram.
	s := progWatch(t, ctx, name, key+": "+stage+" programmed", 200*time.Millisecond, 10*time.Second, during, func(s progSample) error {
		if s.doc == nil {
			return errors.New("no document")
		}
		if _, _, p := s.doc.stage(stage); p == nil || !p.Arrived || p.LatencySeconds == nil {
			return fmt.Errorf("%s programming: %s", stage, p)
		}
		return nil
	})
	_, _, p := s.doc.stage(stage)
	l := seconds(*p.LatencySeconds)
	catchUp := catchUpKubeProxy
	if stage == "dns" {
		catchUp = catchUpCoreDNS + coreDNSNegativeTTL
	} else if last, _, _, err := kubeProxySync(ctx); err == nil {
		t.Logf("%s: kube-proxy's last sync ended %s after SIGCONT", key, last.Sub(resumed).Round(time.Millisecond))
	}
	checkLatency(t, key+" "+stage, l, injected, catchUp)
	if p.InProgress || p.At == nil {
		t.Errorf("%s programming after it arrived: %s at %v", stage, p, p.At)
	} else if d := p.At.Sub(p.Since) - l; d < -time.Millisecond || d > time.Millisecond {
		t.Errorf("%s programming: at - since = %s, latency_seconds %s", stage, p.At.Sub(p.Since), l)
	}
	// The start: a new Service's slices carry its creationTimestamp as the trigger time; the dns
	// stage may start at the event (the Service before its slices), a moment later.
	ct := svc.CreationTimestamp.Time
	switch {
	case stage == "proxy" && !p.Since.Equal(ct):
		t.Errorf("proxy programming since %s, want the Service's creationTimestamp %s (the slice's trigger time)", p.Since, ct)
	case p.Since.Before(ct) || p.Since.After(createdEnd.Add(2*time.Second)):
		t.Errorf("%s programming since %s, want between the creationTimestamp %s and 2 s after the create returned", stage, p.Since, ct)
	}
	// The other stage showed its change at once.
	if _, _, op := s.doc.stage(other); op == nil || !op.Arrived || op.LatencySeconds == nil {
		t.Errorf("%s's %s stage (not held back): programming %s, want arrived", key, other, op)
	} else {
		t.Logf("%s: %s (not held back) latency %.3fs", key, other, *op.LatencySeconds)
	}
	// /metrics: observed once in the histogram, nothing left in progress.
	count, sum, err := histogram(s.m, stage)
	if err != nil {
		t.Fatal(err)
	}
	if count != count0+1 || math.Abs((sum-sum0)-*p.LatencySeconds) > 1e-3 {
		t.Errorf("svcprobe_programming_latency_seconds{stage=%q}: count %v -> %v, sum +%.4f; want one observation of %.4f", stage, count0, count, sum-sum0, *p.LatencySeconds)
	}
	if ocount, _, err := histogram(s.m, other); err != nil || ocount != ocount0+1 {
		t.Errorf("svcprobe_programming_latency_seconds{stage=%q}: count %v -> %v (%v), want one observation", other, ocount0, ocount, err)
	}
	for _, st := range []string{"proxy", "dns"} {
		if g, err := inProgress(s.m, st); err != nil || g != 0 {
			t.Errorf("svcprobe_programming_in_progress{stage=%q} = %v (%v) after the change arrived, want 0", st, g, err)
		}
	}
	// Two more intervals: the Service stays clear of the stage's layer and turns ok.
	progWatch(t, ctx, name, key+" ok after", 500*time.Millisecond, 3*e2eInterval+2*time.Second, during, func(s progSample) error {
		return wantVerdict(s.v, key, "ok/success")
	})
	if diag != nil {
		// Before the Service goes (CoreDNS then answers NXDOMAIN again).
		t.Logf("%s: CoreDNS asked directly after SIGCONT:%s", key, diag())
	}
	deleteProgService(t, cl, name)
}

// progNeverCase: kube-proxy stays stopped beyond the ceiling after a Service is created. The
// proxy stage is programming (the verdict ok, never proxy) until the ceiling, then fails
// not_programmed: the verdict says proxy/not_programmed (the only round of its window so far
// failed), the JSON API says the change did not arrive and the histogram observes nothing. Its
// next rounds fail with the connection's own reason (the measurement is over); after SIGCONT the
// Service turns ok.
func progNeverCase(t *testing.T, ctx context.Context, cfg *Config, cl kubernetes.Interface) {
	const name = "prog-never"
	key := progNS + "/" + name
	waitMetrics(t, "healthy before "+name, 60*time.Second, fullyHealthy(ctx, cl))
	s0, err := takeProgSample(ctx, name)
	if err != nil {
		t.Fatal(err)
	}
	count0, _, err := histogram(s0.m, "proxy")
	if err != nil {
		t.Fatal(err)
	}
	resume := pause(t, "kube-proxy", []int{kubeProxyPid(t, cfg)})
	svc := createProgService(t, ctx, cl, name, progBackend)
	createdEnd := time.Now()
	// The measurement starts at the trigger time (the creationTimestamp, truncated to the
	// second) and the stage fails at the first attempt after since + ceiling: one cadence plus
	// one attempt (1 s) later at most.
	since := svc.CreationTimestamp.Time
	limit := time.Until(since.Add(progCeiling + progCadence + time.Second + 2*time.Second))
	t.Logf("%s: created (creationTimestamp %s) with kube-proxy stopped; waiting for the ceiling (%s)", key, since.UTC().Format(time.RFC3339), progCeiling)
	var firstSeen time.Time
	s := progWatch(t, ctx, name, key+": proxy/not_programmed", 200*time.Millisecond, limit, func(s progSample) error {
		if got := s.v[key]; strings.HasPrefix(got, "proxy/") && got != "proxy/not_programmed" {
			return fmt.Errorf("%s: verdict %s before not_programmed", key, got)
		}
		if got := s.v[key]; got == "proxy/not_programmed" && firstSeen.IsZero() {
			firstSeen = s.at
		}
		return othersNot(key, func(_, v string) bool { return strings.HasPrefix(v, "proxy/") }, s.v)
	}, func(s progSample) error { return wantVerdict(s.v, key, "proxy/not_programmed") })
	if firstSeen.Before(since.Add(progCeiling)) {
		t.Errorf("%s: proxy/not_programmed at %s, before the ceiling (since %s + %s)", key, firstSeen.UTC().Format(time.RFC3339Nano), since.UTC().Format(time.RFC3339), progCeiling)
	}
	t.Logf("%s: proxy/not_programmed seen %s after the creationTimestamp (ceiling %s), %s after the create returned",
		key, firstSeen.Sub(since).Round(time.Millisecond), progCeiling, firstSeen.Sub(createdEnd).Round(time.Millisecond))
	// A fresh look: the sample that showed the verdict read the document before /metrics.
	s, err = takeProgSample(ctx, name)
	if err != nil || s.doc == nil {
		t.Fatalf("%s after not_programmed: document %v (%v)", key, s.doc != nil, err)
	}
	_, reason, p := s.doc.stage("proxy")
	if p == nil || p.InProgress || p.Arrived || p.LatencySeconds != nil || !p.Since.Equal(since) {
		t.Errorf("%s: proxy programming %s, want ended, not arrived, latency null, since the creationTimestamp %s\n%s", key, p, since, docText(s.doc))
	}
	t.Logf("%s: JSON proxy stage reason %s, programming %s", key, reason, p)
	if count, _, err := histogram(s.m, "proxy"); err != nil || count != count0 {
		t.Errorf("svcprobe_programming_latency_seconds{stage=\"proxy\"} count %v -> %v (%v): a change that never arrived must not be observed", count0, count, err)
	}
	if g, err := inProgress(s.m, "proxy"); err != nil || g != 0 {
		t.Errorf("svcprobe_programming_in_progress{stage=\"proxy\"} = %v (%v) after the ceiling, want 0", g, err)
	}
	// The measurement is over: the next round (one interval on) fails with the connection's own
	// reason. Logged, not asserted: what the verdict says after not_programmed is the window's.
	for end := time.Now().Add(2*e2eInterval + time.Second); time.Now().Before(end); time.Sleep(200 * time.Millisecond) {
		sctx, cancel := context.WithTimeout(ctx, 3*time.Second)
		m, err := scrape(sctx)
		cancel()
		if err != nil {
			continue
		}
		if v, err := m.verdicts(); err == nil && v[key] != "proxy/not_programmed" {
			t.Logf("%s: %s after not_programmed first showed, the verdict is %s", key, time.Since(firstSeen).Round(10*time.Millisecond), v[key])
			break
		}
	}

	resumed := resume()
	progWatch(t, ctx, name, key+" recovery after SIGCONT", 200*time.Millisecond, 3*e2eInterval+2*time.Second, nil, func(s progSample) error {
		return wantVerdict(s.v, key, "ok/success")
	})
	t.Logf("%s: ok %s after SIGCONT", key, time.Since(resumed).Round(10*time.Millisecond))
	deleteProgService(t, cl, name)
}

// kubeProxySync reads node-1's kube-proxy's last sync time and its own network programming
// latency histogram (count, sum) of its IPv4 proxier from its metrics (127.0.0.1:10249 in the
// node's namespace).
func kubeProxySync(ctx context.Context) (last time.Time, count, sum float64, err error) {
	sctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	body, err := httpGet(sctx, "http://127.0.0.1:10249/metrics")
	if err != nil {
		return time.Time{}, 0, 0, err
	}
	found := false
	for _, line := range strings.Split(body, "\n") {
		f := strings.Fields(line)
		if len(f) != 2 || strings.HasPrefix(line, "#") {
			continue
		}
		name, labels, _ := strings.Cut(f[0], "{")
		v, perr := strconv.ParseFloat(f[1], 64)
		if perr != nil || !strings.Contains(labels, `ip_family="IPv4"`) {
			continue // kube-proxy runs an IPv6 proxier too, which IPv4 Services do not make sync
		}
		switch name {
		case "kubeproxy_sync_proxy_rules_last_timestamp_seconds":
			last, found = time.Unix(0, int64(v*1e9)), true
		case "kubeproxy_network_programming_duration_seconds_count":
			count += v
		case "kubeproxy_network_programming_duration_seconds_sum":
			sum += v
		}
	}
	if !found || last.Unix() <= 0 {
		return time.Time{}, 0, 0, errors.New("kube-proxy has not synced yet")
	}
	return last, count, sum, nil
}

// restartKubeProxy stops node-1's kube-proxy (by its pid file) and starts it with extra flags,
// and waits until it has synced.
func restartKubeProxy(ctx context.Context, cfg *Config, extra ...string) error {
	if pid, marker, err := readPidFile(cfg.pidPath(node1.Proxy)); err == nil && alive(pid, marker) {
		_ = syscall.Kill(pid, syscall.SIGCONT) // never leave it stopped
		killPids([]int{pid}, 5*time.Second)
	}
	started := time.Now()
	if err := cfg.startKubeProxyOn(node1, extra...); err != nil {
		return err
	}
	return waitFor(ctx, 30*time.Second, "kube-proxy synced after its restart", func() error {
		if err := cfg.componentAlive(node1.Proxy); err != nil {
			return backoff.Permanent(cfg.withLog(node1.Proxy, err))
		}
		last, _, _, err := kubeProxySync(ctx)
		if err != nil {
			return err
		}
		if last.Before(started) {
			return fmt.Errorf("last sync %s is before the restart", last)
		}
		return nil
	})
}

// progMinSyncCase: kube-proxy runs with --iptables-min-sync-period=10s. A Service whose only
// backend is NotReady is created and programmed (its REJECT rule); right after kube-proxy's next
// sync the backend turns ready. kube-proxy may sync again only 10 s after that sync, so the
// proxy latency measured from the Pod's Ready transition is that wait (the bounds are below).
func progMinSyncCase(t *testing.T, ctx context.Context, cfg *Config, cl kubernetes.Interface) {
	const name, backend = "prog-minsync", "prog-late"
	key := progNS + "/" + name
	waitMetrics(t, "healthy before "+name, 60*time.Second, fullyHealthy(ctx, cl))
	t.Cleanup(func() {
		// Back to the lab's kube-proxy (no min sync period), and the lab healthy.
		cctx, ccancel := context.WithTimeout(context.Background(), time.Minute)
		defer ccancel()
		if err := restartKubeProxy(cctx, cfg); err != nil {
			t.Errorf("restart kube-proxy without --iptables-min-sync-period: %v", err)
		}
		_ = cl.CoreV1().Pods(progNS).Delete(cctx, backend, metav1.DeleteOptions{})
		deleteProgService(t, cl, name)
		waitMetrics(t, "healthy after "+name, 60*time.Second, fullyHealthy(cctx, cl))
	})
	flag := "--iptables-min-sync-period=" + kubeProxyMinSync.String()
	if err := restartKubeProxy(ctx, cfg, flag); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(cmdline(kubeProxyPid(t, cfg)), flag) {
		t.Fatalf("kube-proxy runs without %s", flag)
	}
	if err := createProgPod(ctx, cl, backend, backend, true); err != nil {
		t.Fatal(err)
	}
	createProgService(t, ctx, cl, name, backend)
	// The exporter knows the Service with its one endpoint not ready.
	progWatch(t, ctx, name, key+" without a ready endpoint", 200*time.Millisecond, 30*time.Second, nil, func(s progSample) error {
		if err := wantVerdict(s.v, key, "endpoints/no_ready_endpoints"); err != nil {
			return err
		}
		n, ok := s.m.value("svcprobe_endpoints", "namespace", progNS, "service", name, "state", "not_ready")
		if !ok || n != 1 {
			return fmt.Errorf("svcprobe_endpoints{state=not_ready} %v (present %v), want 1", n, ok)
		}
		return nil
	})
	// Make kube-proxy sync once more now (a new port name: its rules change, the exporter's
	// measurement does not, see probe.samePorts) and wait for that sync, within one min sync
	// period; then at once turn the backend ready: kube-proxy's next sync comes 10 s after that
	// one. (The create's own sync may have come before the exporter saw the Service; without
	// a change kube-proxy would not sync for an hour.)
	kicked := time.Now()
	if _, err := cl.CoreV1().Services(progNS).Patch(ctx, name, types.JSONPatchType,
		[]byte(`[{"op":"replace","path":"/spec/ports/0/name","value":"web"}]`), metav1.PatchOptions{}); err != nil {
		t.Fatal(err)
	}
	var lastSync time.Time
	var kpCount0, kpSum0 float64
	if err := waitFor(ctx, kubeProxyMinSync+5*time.Second, "a kube-proxy sync", func() error {
		last, c, s, err := kubeProxySync(ctx)
		if err != nil {
			return err
		}
		if !last.After(kicked) {
			return fmt.Errorf("last sync %s", last.Format("15:04:05.000"))
		}
		lastSync, kpCount0, kpSum0 = last, c, s
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	patched := time.Now()
	if err := annotatePod(ctx, cl, progNS, backend, map[string]*string{AnnReady: nil}); err != nil {
		t.Fatal(err)
	}
	t.Logf("%s: kube-proxy synced at %s; backend ready asked %s later", key, lastSync.UTC().Format("15:04:05.000"), patched.Sub(lastSync).Round(time.Millisecond))
	var sliceReady time.Time
	during := func(s progSample) error {
		if sliceReady.IsZero() {
			if ok, err := sliceEndpointReady(ctx, cl, name); err != nil {
				return err
			} else if ok {
				sliceReady = time.Now()
			}
		}
		return notLayer(key, "proxy", s.v)
	}
	s := progWatch(t, ctx, name, key+": proxy programmed", 200*time.Millisecond, kubeProxyMinSync+10*time.Second, during, func(s progSample) error {
		if s.doc == nil {
			return errors.New("no document")
		}
		if _, _, p := s.doc.stage("proxy"); p == nil || !p.Arrived || p.LatencySeconds == nil || p.Since.Before(patched.Add(-progResolution)) {
			return fmt.Errorf("proxy programming: %s", p)
		}
		return nil
	})
	if sliceReady.IsZero() {
		t.Fatalf("the EndpointSlice of %s never showed its endpoint ready", key)
	}
	_, _, p := s.doc.stage("proxy")
	l := seconds(*p.LatencySeconds)
	// The start is the Pod's Ready transition (the slice's trigger time).
	pod, err := cl.CoreV1().Pods(progNS).Get(ctx, backend, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	var readyAt time.Time
	for _, c := range pod.Status.Conditions {
		if c.Type == corev1.PodReady && c.Status == corev1.ConditionTrue {
			readyAt = c.LastTransitionTime.Time
		}
	}
	if !p.Since.Equal(readyAt) {
		t.Errorf("proxy programming since %s, want the Pod's Ready transition %s (the slice's trigger time)", p.Since, readyAt)
	}
	// kube-proxy's sync that programmed it: the first after lastSync (none other comes within
	// 10 s of it), ended at last.
	last, kpCount, kpSum, err := kubeProxySync(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if last.Sub(lastSync) < kubeProxyMinSync {
		t.Errorf("kube-proxy synced %s after %s: its min sync period (%s) did not hold", last.Sub(lastSync), lastSync, kubeProxyMinSync)
	}
	kp := "none"
	if kpCount > kpCount0 {
		kp = fmt.Sprintf("%.3fs (mean of %v)", (kpSum-kpSum0)/(kpCount-kpCount0), kpCount-kpCount0)
	}
	// At least: the rules came no sooner than lastSync + 10 s, the start no later than the slice
	// showed the endpoint ready. At most: the end of that sync, plus an attempt in flight and the
	// cadence, from the start the exporter took (since). And the issue's bound, 10 s + 1 s
	// (resolution) + cadence, plus the attempt in flight and the sync's own duration (750 ms).
	lo := lastSync.Add(kubeProxyMinSync).Sub(sliceReady) - 50*time.Millisecond
	hi := last.Sub(p.Since) + progAttempt + progCadence + 500*time.Millisecond // + the passing attempt, scheduling
	issue := kubeProxyMinSync + progResolution + progCadence + progAttempt + 750*time.Millisecond
	t.Logf("%s: proxy latency %s (bound [%s, %s], at most %s); the slice showed the endpoint ready %s after kube-proxy's sync, its next sync ended %s after it; kube-proxy's own network programming latency %s",
		key, l.Round(time.Millisecond), lo.Round(time.Millisecond), hi.Round(time.Millisecond), issue,
		sliceReady.Sub(lastSync).Round(time.Millisecond), last.Sub(lastSync).Round(time.Millisecond), kp)
	if l < lo || l > hi || l > issue {
		t.Errorf("%s: proxy latency %s not within [%s, %s] or above %s", key, l, lo, hi, issue)
	}
}

// sliceEndpointReady reports whether Service progNS/name's EndpointSlice has a ready endpoint.
func sliceEndpointReady(ctx context.Context, cl kubernetes.Interface, name string) (bool, error) {
	slices, err := cl.DiscoveryV1().EndpointSlices(progNS).List(ctx, metav1.ListOptions{LabelSelector: discoveryv1.LabelServiceName + "=" + name})
	if err != nil {
		return false, err
	}
	for _, s := range slices.Items {
		for _, e := range s.Endpoints {
			if e.Conditions.Ready != nil && *e.Conditions.Ready {
				return true, nil
			}
		}
	}
	return false, nil
}

// progNode2Case: node-2 and the node agents up (as TestNodeAgents brings them), node-2's
// kube-proxy stopped for 8 s while a Service is created (its backends on node-1): node-2's agent
// measures about 8 s, node-1's agent and the central exporter (node-1's kube-proxy, not held
// back) measure what an unhindered kube-proxy takes. No exporter's verdict for it is proxy
// meanwhile.
func progNode2Case(t *testing.T, ctx context.Context, cfg *Config, cl kubernetes.Interface) {
	const name = "prog-node2"
	const delay = 8 * time.Second
	key := progNS + "/" + name
	waitMetrics(t, "healthy before "+name, 60*time.Second, fullyHealthy(ctx, cl))
	t.Cleanup(func() {
		cctx, ccancel := context.WithTimeout(context.Background(), 3*time.Minute)
		defer ccancel()
		deleteProgService(t, cl, name)
		removeNode2(t, cctx, cfg, cl)
	})
	start := time.Now()
	if err := UpNode2(ctx, *cfg); err != nil {
		t.Fatalf("node-2: %v", err)
	}
	if err := DeployNodeAgents(ctx, *cfg, ExporterOptions{Interval: e2eInterval, Timeout: e2eTimeout}); err != nil {
		t.Fatalf("node agents: %v", err)
	}
	took := settleAgents(t, "both agents ok", 60*time.Second, agentsHealthy(ctx, cl))
	t.Logf("node-2 and the node agents up, both ok, after %s", (time.Since(start)).Round(10*time.Millisecond))
	_ = took

	sources := []string{"central", NodeName, Node2Name}
	count0 := map[string]float64{}
	av, err := scrapeAll(ctx, cl)
	if err != nil {
		t.Fatal(err)
	}
	for _, src := range sources {
		if count0[src], _, err = histogram(av.m[src], "proxy"); err != nil {
			t.Fatalf("%s: %v", src, err)
		}
	}
	pid, marker, err := readPidFile(cfg.pidPath(node2.Proxy))
	if err != nil || !alive(pid, marker) {
		t.Fatalf("kube-proxy of node-2: pid %d alive %v (%v)", pid, err == nil && alive(pid, marker), err)
	}
	resume := pause(t, "node-2's kube-proxy", []int{pid})
	svc := createProgService(t, ctx, cl, name, progBackend)
	createdEnd := time.Now()
	t.Logf("%s: created (creationTimestamp %s) with node-2's kube-proxy stopped", key, svc.CreationTimestamp.UTC().Format(time.RFC3339))
	noProxy := func(av agentView) error {
		for _, src := range sources {
			if got := av.v[src][key]; strings.HasPrefix(got, "proxy/") {
				return fmt.Errorf("%s: %s has verdict %s", src, key, got)
			}
		}
		return nil
	}
	samples := 0
	for resumeAt := createdEnd.Add(delay); time.Now().Before(resumeAt); time.Sleep(min(500*time.Millisecond, time.Until(resumeAt))) {
		av, err := scrapeAll(ctx, cl)
		if err != nil {
			t.Logf("scrape: %v", err)
			continue
		}
		samples++
		if err := noProxy(av); err != nil {
			t.Fatalf("node-2's kube-proxy stopped, after %s: %v\n%s", time.Since(createdEnd).Round(time.Millisecond), err, formatAgentVerdicts(av))
		}
	}
	resumed := resume()
	injected := resumed.Sub(createdEnd)
	t.Logf("%s: %d samples of the three exporters while node-2's kube-proxy was stopped, never proxy; resumed after %s", key, samples, injected.Round(time.Millisecond))

	// Every exporter has the measurement, node-2's agent last.
	lat := map[string]time.Duration{}
	waitAgents(t, key+": proxy programmed on every exporter", 10*time.Second, func(av agentView) error {
		var errs []error
		for _, src := range sources {
			d, err := readProgDoc(ctx, cl, src, progNS, name)
			if err != nil {
				errs = append(errs, fmt.Errorf("%s: %w", src, err))
				continue
			}
			if d == nil {
				errs = append(errs, fmt.Errorf("%s: no document", src))
				continue
			}
			_, _, p := d.stage("proxy")
			if p == nil || !p.Arrived || p.LatencySeconds == nil {
				errs = append(errs, fmt.Errorf("%s: proxy programming %s", src, p))
				continue
			}
			lat[src] = seconds(*p.LatencySeconds)
		}
		return errors.Join(errs...)
	}, noProxy)
	checkLatency(t, key+" node-2's agent", lat[Node2Name], injected, catchUpKubeProxy)
	for _, src := range []string{"central", NodeName} {
		// Not held back: the injected delay is 0.
		checkLatency(t, key+" "+src, lat[src], 0, catchUpKubeProxy)
	}
	av, err = scrapeAll(ctx, cl)
	if err != nil {
		t.Fatal(err)
	}
	for _, src := range sources {
		if c, _, err := histogram(av.m[src], "proxy"); err != nil || c != count0[src]+1 {
			t.Errorf("%s: svcprobe_programming_latency_seconds{stage=\"proxy\"} count %v -> %v (%v), want one observation", src, count0[src], c, err)
		}
	}
}

// watchCoreDNS asks each CoreDNS Pod directly (from the node's namespace) for the A record of
// fqdn every 100 ms from now, until both answer it or the negative TTL and 2 s have passed
// since since, and returns the report (it waits for that end): each change of a Pod's answer
// (rcode, answers, the TTL of the SOA a denial carries) and when, after since. A denial from the
// cache shows its TTL counting down.
func watchCoreDNS(ctx context.Context, fqdn string, since time.Time) func() string {
	ctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	var b strings.Builder
	done := make(chan struct{})
	go func() {
		defer close(done)
		prev := map[string]string{}
		for ctx.Err() == nil && time.Since(since) < coreDNSNegativeTTL+2*time.Second {
			answered := 0
			for _, srv := range []string{CoreDNSIP1, CoreDNSIP2} {
				st := queryA(ctx, srv, fqdn)
				if strings.HasPrefix(st, "NOERROR an=1") {
					answered++
				}
				if prev[srv] != st {
					prev[srv] = st
					fmt.Fprintf(&b, "\n  +%s %s: %s", time.Since(since).Round(10*time.Millisecond), srv, st)
				}
			}
			if answered == 2 {
				return
			}
			time.Sleep(100 * time.Millisecond)
		}
	}()
	return func() string {
		<-done
		cancel()
		return b.String() // read after the watch ended
	}
}

// queryA asks server for the A record of fqdn over UDP from the node's namespace and says what
// came back: the rcode, the number of answers and the TTL of each authority record.
func queryA(ctx context.Context, server, fqdn string) string {
	m := new(dns.Msg)
	m.SetQuestion(dns.Fqdn(fqdn), dns.TypeA)
	c, err := dialInNetns(ctx, NodeNetns, "udp", net.JoinHostPort(server, "53"))
	if err != nil {
		return "dial: " + err.Error()
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(500 * time.Millisecond))
	co := &dns.Conn{Conn: c}
	if err := co.WriteMsg(m); err != nil {
		return "write: " + err.Error()
	}
	r, err := co.ReadMsg()
	if err != nil {
		return "read: " + err.Error()
	}
	st := fmt.Sprintf("%s an=%d", dns.RcodeToString[r.Rcode], len(r.Answer))
	for _, rr := range r.Ns {
		st += fmt.Sprintf(" soa-ttl=%d", rr.Header().Ttl)
	}
	return st
}

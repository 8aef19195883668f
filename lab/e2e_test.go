package lab

// The fault catalogue, end to end: svcprobe runs as a Pod of the lab (RBAC
// of deploy/base, a bound ServiceAccount token, kubeconfig on the kubernetes
// Service VIP) and every fault of lab.Faults is injected into the real
// components; the verdict is read from the exporter's /metrics.
//
// One lab serves the whole test binary (sharedLab; torn down by TestMain).
// The tests run under CI=true or SVCPROBE_E2E=1 (they need root and take the
// machine's one lab); SVCPROBE_SOAK=1 makes the steady run 5 minutes instead
// of 60 s; SVCPROBE_E2E_EXPORTER=path runs that exporter binary instead of
// building ./cmd/exporter.

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	authnv1 "k8s.io/api/authentication/v1"
	authzv1 "k8s.io/api/authorization/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	utilnet "k8s.io/apimachinery/pkg/util/net"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
)

// Probe interval and timeout of the exporter in the tests.
const (
	e2eInterval = 2 * time.Second
	e2eTimeout  = time.Second
)

var shared struct {
	mu     sync.Mutex
	cfg    Config
	cl     kubernetes.Interface
	tmp    string
	up     bool
	broken error // a failed Up: every later test fails fast with it
}

func TestMain(m *testing.M) {
	code := m.Run()
	shared.mu.Lock()
	if shared.up {
		// Not the Log of a test that has ended (a failed Up leaves it there): logging through
		// it would panic and leave the lab running.
		shared.cfg.Log = func(string, ...any) {}
		if err := Down(shared.cfg); err != nil {
			fmt.Fprintf(os.Stderr, "lab down: %v\n", err)
			if code == 0 {
				code = 1
			}
		}
	}
	if shared.tmp != "" {
		_ = os.RemoveAll(shared.tmp)
	}
	shared.mu.Unlock()
	os.Exit(code)
}

// requireE2E skips unless the lab tests were asked for (CI=true or
// SVCPROBE_E2E=1), then checks the prerequisites (fail under CI, skip
// otherwise).
func requireE2E(t *testing.T, cfg *Config) {
	t.Helper()
	if os.Getenv("CI") != "true" && os.Getenv("SVCPROBE_E2E") != "1" {
		t.Skip("lab end-to-end test: set SVCPROBE_E2E=1 (CI=true does too); it needs root and replaces any running lab (make lab-e2e)")
	}
	requireLab(t, cfg)
}

// sharedLab brings the lab up with svcprobe deployed, once per test binary
// (again if another test tore it down).
func sharedLab(t *testing.T) (*Config, kubernetes.Interface) {
	t.Helper()
	cfg := DefaultConfig()
	requireE2E(t, &cfg)
	shared.mu.Lock()
	defer shared.mu.Unlock()
	if shared.broken != nil {
		t.Fatalf("the shared lab failed to come up: %v", shared.broken)
	}
	if shared.up && shared.cfg.componentAlive("kubelet") == nil {
		if _, err := ScrapeExporter(context.Background(), "/-/healthy"); err == nil {
			return &shared.cfg, shared.cl
		}
	}
	if shared.tmp == "" {
		dir, err := os.MkdirTemp("", "svcprobe-e2e-")
		if err != nil {
			t.Fatal(err)
		}
		shared.tmp = dir
		goBin := filepath.Join(runtime.GOROOT(), "bin", "go")
		for _, b := range []struct{ out, pkg string }{
			{"svcprobe-lab", "./lab/cmd/svcprobe-lab"}, {"svcprobe", "./cmd/exporter"},
		} {
			cmd := exec.Command(goBin, "build", "-trimpath", "-o", filepath.Join(dir, b.out), b.pkg)
			cmd.Dir = ".."
			cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
			if out, err := cmd.CombinedOutput(); err != nil {
				shared.broken = fmt.Errorf("building %s: %v\n%s", b.pkg, err, out)
				t.Fatal(shared.broken)
			}
		}
	}
	cfg.Exe = filepath.Join(shared.tmp, "svcprobe-lab")
	cfg.Exporter = filepath.Join(shared.tmp, "svcprobe")
	if e := os.Getenv("SVCPROBE_E2E_EXPORTER"); e != "" {
		cfg.Exporter = e // a prebuilt exporter instead of ./cmd/exporter
	}
	cfg.DeployDir = filepath.Join("..", "deploy", "base")
	cfg.Log = func(format string, args ...any) { t.Logf(format, args...) }

	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	start := time.Now()
	shared.up = true // from here on, TestMain tears down whatever is left
	shared.cfg = cfg
	if _, err := Up(ctx, cfg); err != nil {
		shared.broken = err
		t.Fatalf("up: %v", err)
	}
	if err := DeployExporter(ctx, cfg, ExporterOptions{Interval: e2eInterval, Timeout: e2eTimeout}); err != nil {
		shared.broken = fmt.Errorf("deploy svcprobe: %w", err)
		t.Fatal(shared.broken)
	}
	cl, err := cfg.Client()
	if err != nil {
		t.Fatal(err)
	}
	shared.cl = cl
	cfg.Log = func(string, ...any) {} // t of the first test must not be used later
	shared.cfg = cfg
	t.Logf("lab up with svcprobe in %s", time.Since(start).Round(time.Millisecond))
	return &shared.cfg, cl
}

// --- /metrics ------------------------------------------------------------

type sample struct {
	name   string
	labels map[string]string
	value  float64
}

type snapshot []sample

func scrape(ctx context.Context) (snapshot, error) {
	body, err := ScrapeExporter(ctx, "/metrics")
	if err != nil {
		return nil, err
	}
	return parseMetrics(body)
}

// parseMetrics reads the Prometheus text format (enough of it for svcprobe).
func parseMetrics(body string) (snapshot, error) {
	var out snapshot
	for _, line := range strings.Split(body, "\n") {
		if line == "" || line[0] == '#' {
			continue
		}
		s := sample{labels: map[string]string{}}
		i := strings.IndexAny(line, "{ ")
		if i < 0 {
			return nil, fmt.Errorf("bad line %q", line)
		}
		s.name = line[:i]
		rest := line[i:]
		if rest[0] == '{' {
			rest = rest[1:]
			for {
				rest = strings.TrimLeft(rest, ",")
				if strings.HasPrefix(rest, "}") {
					rest = rest[1:]
					break
				}
				eq := strings.Index(rest, `="`)
				if eq < 0 {
					return nil, fmt.Errorf("bad labels in %q", line)
				}
				key := rest[:eq]
				rest = rest[eq+2:]
				var val strings.Builder
				for {
					if rest == "" {
						return nil, fmt.Errorf("unterminated label in %q", line)
					}
					c := rest[0]
					rest = rest[1:]
					if c == '\\' && rest != "" {
						switch rest[0] {
						case 'n':
							val.WriteByte('\n')
						default:
							val.WriteByte(rest[0])
						}
						rest = rest[1:]
						continue
					}
					if c == '"' {
						break
					}
					val.WriteByte(c)
				}
				s.labels[key] = val.String()
			}
		}
		f := strings.Fields(rest)
		if len(f) == 0 {
			return nil, fmt.Errorf("no value in %q", line)
		}
		v, err := strconv.ParseFloat(f[0], 64)
		if err != nil {
			return nil, fmt.Errorf("bad value in %q", line)
		}
		s.value = v
		out = append(out, s)
	}
	return out, nil
}

// verdicts maps namespace/service to "layer/reason".
func (m snapshot) verdicts() (map[string]string, error) {
	out := map[string]string{}
	for _, s := range m {
		if s.name != "svcprobe_service_verdict" || s.value != 1 {
			continue
		}
		key := s.labels["namespace"] + "/" + s.labels["service"]
		if old, dup := out[key]; dup {
			return nil, fmt.Errorf("two verdicts for %s: %s and %s/%s", key, old, s.labels["layer"], s.labels["reason"])
		}
		out[key] = s.labels["layer"] + "/" + s.labels["reason"]
		if f := s.labels["family"]; f != "" {
			out[key] += "/" + f // the failure is confined to one IP family (dual-stack, IPv6)
		}
	}
	return out, nil
}

// value returns the value of the one series of name with the given labels.
// successes is how many runs of a Service's stage succeeded so far (svcprobe_stage_runs_total
// less svcprobe_stage_failures_total); ok is false when the Service has no runs of it.
func (m snapshot) successes(ns, svc, stage string) (float64, bool) {
	runs, ok := m.value("svcprobe_stage_runs_total", "namespace", ns, "service", svc, "stage", stage)
	fails, ok2 := m.value("svcprobe_stage_failures_total", "namespace", ns, "service", svc, "stage", stage)
	return runs - fails, ok && ok2
}

func (m snapshot) value(name string, kv ...string) (float64, bool) {
	for _, s := range m {
		if s.name != name {
			continue
		}
		match := true
		for i := 0; i+1 < len(kv); i += 2 {
			if s.labels[kv[i]] != kv[i+1] {
				match = false
			}
		}
		if match {
			return s.value, true
		}
	}
	return 0, false
}

func (m snapshot) seriesOf(ns, svc string) []string {
	var out []string
	for _, s := range m {
		if s.labels["namespace"] == ns && s.labels["service"] == svc {
			out = append(out, fmt.Sprintf("%s%v", s.name, s.labels))
		}
	}
	return out
}

func formatVerdicts(v map[string]string) string {
	var keys []string
	for k := range v {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var b strings.Builder
	for _, k := range keys {
		fmt.Fprintf(&b, "\n  %-36s %s", k, v[k])
	}
	return b.String()
}

// --- polling -------------------------------------------------------------

// exporterDiagnostics says what the exporter knew when a wait failed: its discovery and
// scheduler counters, its view of hostnames (the status API), the API's view of hostnames'
// EndpointSlices, and the end of its log. A flake in CI is then a finding, not a guess.
func exporterDiagnostics() string {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	var b strings.Builder
	b.WriteString("exporter diagnostics:")
	if m, err := scrape(ctx); err != nil {
		fmt.Fprintf(&b, "\n  scrape: %v", err)
	} else {
		for _, s := range m {
			if strings.HasPrefix(s.name, "svcprobe_discovery_") || strings.HasPrefix(s.name, "svcprobe_scheduler_") ||
				s.name == "svcprobe_cluster_dns_up" || s.name == "svcprobe_stage_failure_ratio" {
				fmt.Fprintf(&b, "\n  %s%v %v", s.name, s.labels, s.value)
			}
		}
	}
	if body, err := ScrapeExporter(ctx, "/api/v1/services/default/hostnames"); err != nil {
		fmt.Fprintf(&b, "\n  status API: %v", err)
	} else {
		fmt.Fprintf(&b, "\n  status API default/hostnames: %.3000s", body)
	}
	shared.mu.Lock()
	cfg, cl := shared.cfg, shared.cl
	shared.mu.Unlock()
	if cl != nil {
		slices, err := cl.DiscoveryV1().EndpointSlices("default").List(ctx, metav1.ListOptions{LabelSelector: "kubernetes.io/service-name=hostnames"})
		if err != nil {
			fmt.Fprintf(&b, "\n  EndpointSlices: %v", err)
		} else {
			for _, s := range slices.Items {
				fmt.Fprintf(&b, "\n  EndpointSlice %s rv=%s:", s.Name, s.ResourceVersion)
				for _, e := range s.Endpoints {
					fmt.Fprintf(&b, " %v ready=%v", e.Addresses, e.Conditions.Ready != nil && *e.Conditions.Ready)
				}
			}
		}
	}
	if cfg.StateDir != "" {
		logs, _ := filepath.Glob(cfg.path("logs", "pod-"+ExporterNamespace+"-svcprobe-*.log"))
		var newest string
		var mod time.Time
		for _, l := range logs {
			if fi, err := os.Stat(l); err == nil && fi.ModTime().After(mod) {
				newest, mod = l, fi.ModTime()
			}
		}
		if newest != "" {
			if data, err := os.ReadFile(newest); err == nil {
				lines := strings.Split(strings.TrimSpace(string(data)), "\n")
				fmt.Fprintf(&b, "\n  last lines of %s:", filepath.Base(newest))
				for _, l := range lines[max(0, len(lines)-25):] {
					b.WriteString("\n    " + l)
				}
			}
		}
	}
	return b.String()
}

// waitMetrics polls /metrics every 200ms until check passes; it fails the
// test after within. It returns how long it took.
func waitMetrics(t *testing.T, what string, within time.Duration, check func(snapshot, map[string]string) error) time.Duration {
	t.Helper()
	start := time.Now()
	var last error
	var lastV map[string]string
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
		m, err := scrape(ctx)
		cancel()
		if err == nil {
			var v map[string]string
			if v, err = m.verdicts(); err == nil {
				lastV = v
				if err = check(m, v); err == nil {
					return time.Since(start)
				}
			}
		}
		last = err
		if time.Since(start) > within {
			t.Fatalf("%s: not seen within %s: %v\nverdicts:%s\n%s", what, within, last, formatVerdicts(lastV), exporterDiagnostics())
		}
		time.Sleep(200 * time.Millisecond)
	}
}

func wantVerdict(v map[string]string, key, want string) error {
	got, ok := v[key]
	if !ok {
		return fmt.Errorf("no verdict for %s", key)
	}
	for _, w := range strings.Split(want, "|") {
		if got == w || (strings.HasSuffix(w, "/*") && strings.HasPrefix(got, strings.TrimSuffix(w, "*"))) {
			return nil
		}
	}
	return fmt.Errorf("%s: verdict %s, want %s", key, got, want)
}

// allOK checks that every Service of the cluster has verdict ok.
func allOK(ctx context.Context, cl kubernetes.Interface) func(snapshot, map[string]string) error {
	return func(m snapshot, v map[string]string) error {
		svcs, err := cl.CoreV1().Services("").List(ctx, metav1.ListOptions{})
		if err != nil {
			return err
		}
		var errs []error
		for _, s := range svcs.Items {
			if err := wantVerdict(v, s.Namespace+"/"+s.Name, "ok/success"); err != nil {
				errs = append(errs, err)
			}
		}
		if n, _ := m.value("svcprobe_cluster_dns_up", "kind", "canary"); n != 1 {
			errs = append(errs, errors.New("svcprobe_cluster_dns_up{kind=canary} is not 1"))
		}
		return errors.Join(errs...)
	}
}

// fullyHealthy is allOK plus every backend back (all hostnames and CoreDNS
// Pods ready and answering): a fault that freezes readiness must not freeze
// a Pod still NotReady from the previous one.
func fullyHealthy(ctx context.Context, cl kubernetes.Interface) func(snapshot, map[string]string) error {
	return func(m snapshot, v map[string]string) error {
		var errs []error
		if err := allOK(ctx, cl)(m, v); err != nil {
			errs = append(errs, err)
		}
		for _, c := range []struct {
			ns, svc, state string
			want           float64
		}{
			{"default", "hostnames", "ready", 3}, {"default", "hostnames", "not_ready", 0},
			{"default", "hostnames", "terminating", 0}, {"default", "hostnames", "unreachable", 0},
			{"kube-system", "kube-dns", "ready", 2}, {"kube-system", "kube-dns", "not_ready", 0},
			{"kube-system", "kube-dns", "unreachable", 0},
		} {
			if err := metricIs("svcprobe_endpoints", c.want, "namespace", c.ns, "service", c.svc, "state", c.state)(m, v); err != nil {
				errs = append(errs, err)
			}
		}
		for _, srv := range []string{"coredns-0", "coredns-1"} {
			if err := metricIs("svcprobe_cluster_dns_up", 1, "kind", "pod", "server", srv)(m, v); err != nil {
				errs = append(errs, err)
			}
		}
		return errors.Join(errs...)
	}
}

// forEveryService checks want for every Service but those in except.
func forEveryService(ctx context.Context, cl kubernetes.Interface, want string, except ...string) func(snapshot, map[string]string) error {
	return func(m snapshot, v map[string]string) error {
		svcs, err := cl.CoreV1().Services("").List(ctx, metav1.ListOptions{})
		if err != nil {
			return err
		}
		var errs []error
	next:
		for _, s := range svcs.Items {
			key := s.Namespace + "/" + s.Name
			for _, e := range except {
				if e == key {
					continue next
				}
			}
			if err := wantVerdict(v, key, want); err != nil {
				errs = append(errs, err)
			}
		}
		return errors.Join(errs...)
	}
}

func both(fs ...func(snapshot, map[string]string) error) func(snapshot, map[string]string) error {
	return func(m snapshot, v map[string]string) error {
		for _, f := range fs {
			if err := f(m, v); err != nil {
				return err
			}
		}
		return nil
	}
}

func metricIs(name string, want float64, kv ...string) func(snapshot, map[string]string) error {
	return func(m snapshot, _ map[string]string) error {
		got, ok := m.value(name, kv...)
		if !ok {
			return fmt.Errorf("no series %s%v", name, kv)
		}
		if got != want {
			return fmt.Errorf("%s%v = %v, want %v", name, kv, got, want)
		}
		return nil
	}
}

// --- the catalogue -------------------------------------------------------

const hostnames = "default/hostnames"

type faultCase struct {
	// allowance is added to three probe intervals (a verdict needs two failed rounds in a
	// row) for the control plane to carry the fault (kubelet readiness, EndpointSlices, a
	// container restart) before the exporter can see it; for a partial fault, for enough
	// rounds to fail.
	allowance time.Duration
	check     func(ctx context.Context, cl kubernetes.Interface) func(snapshot, map[string]string) error
	// during, if set, must hold at every sample until check passes.
	during func(snapshot, map[string]string) error
	// prepare, if set, runs before the fault is injected, and prepared must then pass within
	// preparedWithin (node-local-dns-down: the exporter on the node-local cache, all ok).
	prepare        func(ctx context.Context, c *Config, cl kubernetes.Interface) error
	prepared       func(ctx context.Context, cl kubernetes.Interface) func(snapshot, map[string]string) error
	preparedWithin time.Duration
	// partial: the fault fails a share of the rounds. Its failures stay in the verdict's window
	// (windowRounds) after the undo, so recovery may take that long, and the lab is then left
	// healthy for a whole window so that the next case starts with clean windows.
	partial bool
	// diagnose, if set, is what `svcprobe diagnose default/hostnames`, run once in the
	// exporter's Pod while the fault is in, must print (and it must exit 3).
	diagnose string
	// diagnoseOK: diagnose exits 0 (nothing broken: an intended state), not 3.
	diagnoseOK bool
}

var faultCases = map[string]faultCase{
	// NetworkPolicy, enforced for real (kube-network-policies on node-1): intended, not broken.
	// Deny: svcprobe says policy and names it, diagnose says POLICY and exits 0, and the exporter's
	// own connection to a hostnames Pod really is dropped (svcprobe's evaluation matches what the
	// implementation does).
	"netpol-default-deny": {allowance: 4 * time.Second, check: func(ctx context.Context, cl kubernetes.Interface) func(snapshot, map[string]string) error {
		return both(hostnamesIs("policy/denied_by_network_policy")(ctx, cl), func(snapshot, map[string]string) error {
			body, err := ScrapeExporter(ctx, "/api/v1/services/default/hostnames")
			if err != nil {
				return err
			}
			if !strings.Contains(body, "default/"+labDenyPolicy) || !strings.Contains(body, `"healthy": true`) {
				return fmt.Errorf("the status API does not name policy %s or says unhealthy:\n%s", labDenyPolicy, body)
			}
			return hostnamesReach(ctx, cl, exporterNetns(ctx), false)
		})
	}, diagnoseOK: true, diagnose: "POLICY: NetworkPolicy does not let svcprobe reach the Pods of default/hostnames"},
	// Allow: the shipped allow-svcprobe.yaml admits the exporter, so hostnames is ok, probed
	// through the enforcement (the pod stage's successes keep counting after the policies are in,
	// and the exporter's own connection is accepted), while a client outside svcprobe's namespace
	// is dropped (the enforcement is on).
	"netpol-allow-svcprobe": {allowance: 4 * time.Second, check: func(ctx context.Context, cl kubernetes.Interface) func(snapshot, map[string]string) error {
		first := -1.0
		return both(hostnamesIs("ok/success")(ctx, cl), func(m snapshot, _ map[string]string) error {
			if err := hostnamesReach(ctx, cl, ClientNetns, false); err != nil {
				return err
			}
			if err := hostnamesReach(ctx, cl, exporterNetns(ctx), true); err != nil {
				return err
			}
			n, _ := m.successes("default", "hostnames", "pod")
			if first < 0 {
				first = n
			}
			if n < first+2 {
				return fmt.Errorf("pod stage successes %v, want two more than %v (rounds through the enforcement)", n, first)
			}
			return nil
		})
	}},
	// Recovery recreates the Service: a new VIP that kube-proxy must sync
	// (its min sync period is 1 s) before the proxy stage passes.
	"missing-service": {allowance: 2 * time.Second, check: func(context.Context, kubernetes.Interface) func(snapshot, map[string]string) error {
		return func(m snapshot, v map[string]string) error {
			if err := wantVerdict(v, hostnames, "missing/not_found"); err != nil {
				return err
			}
			if s := m.seriesOf("default", "hostnames"); len(s) != 1 {
				return fmt.Errorf("default/hostnames has %d series, want only the verdict: %v", len(s), s)
			}
			return nil
		}
	}},
	// Intended, not broken: idle, and the Service's spec and endpoints stages count no run (no SLO).
	// Scaling back needs new Pods to start and turn ready.
	"scaled-to-zero": {allowance: 4 * time.Second, check: func(ctx context.Context, cl kubernetes.Interface) func(snapshot, map[string]string) error {
		return both(hostnamesIs("idle/scaled_to_zero")(ctx, cl), func(m snapshot, _ map[string]string) error {
			body, err := ScrapeExporter(ctx, "/api/v1/services/default/hostnames")
			if err != nil {
				return err
			}
			if !strings.Contains(body, "Deployment/hostnames (replicas 0)") || !strings.Contains(body, `"healthy": true`) {
				return fmt.Errorf("the status API does not name the scaled Deployment or says unhealthy:\n%s", body)
			}
			return nil
		})
	}, diagnoseOK: true, diagnose: "IDLE: default/hostnames is scaled to zero on purpose"},
	"selector-typo-beside-idle": {allowance: time.Second, check: hostnamesIs("spec/selector_matches_no_pods")},
	"selector-typo": {allowance: time.Second, check: hostnamesIs("spec/selector_matches_no_pods"),
		diagnose: "BROKEN: layer spec (selector_matches_no_pods)"},
	// All endpoints refuse: the status API's hint names the targetPort.
	"wrong-targetport": {allowance: time.Second, check: func(ctx context.Context, cl kubernetes.Interface) func(snapshot, map[string]string) error {
		return both(hostnamesIs("pod/refused")(ctx, cl), func(snapshot, map[string]string) error {
			body, err := ScrapeExporter(ctx, "/api/v1/services/default/hostnames")
			if err != nil {
				return err
			}
			if !strings.Contains(body, "targetPort is the likely cause") {
				return fmt.Errorf("no targetPort hint in /api/v1/services/default/hostnames:\n%s", body)
			}
			return nil
		})
	}},
	"named-targetport":  {allowance: time.Second, check: hostnamesIs("spec/target_port_unresolved")},
	"protocol-mismatch": {allowance: time.Second, check: hostnamesIs("spec/protocol_mismatch")},
	"pods-not-ready":    {allowance: 2 * time.Second, check: hostnamesIs("endpoints/no_ready_endpoints")},
	"backend-killed": {allowance: 2 * time.Second, check: func(ctx context.Context, cl kubernetes.Interface) func(snapshot, map[string]string) error {
		return both(hostnamesIs("pod/refused")(ctx, cl),
			metricIs("svcprobe_endpoints", 1, "namespace", "default", "service", "hostnames", "state", "unreachable"),
			metricIs("svcprobe_endpoints", 3, "namespace", "default", "service", "hostnames", "state", "ready"))
	}},
	// Both CoreDNS Pods dead (and so NotReady): kube-dns itself has no
	// ready endpoints; every other Service fails in DNS and nothing else.
	// The reason is timeout or refused: the kernel rate-limits the ICMP
	// errors kube-proxy's REJECT rule sends.
	"dns-down": {allowance: 2 * time.Second, check: func(ctx context.Context, cl kubernetes.Interface) func(snapshot, map[string]string) error {
		return both(
			forEveryService(ctx, cl, "dns/timeout|dns/refused", "kube-system/kube-dns"),
			func(_ snapshot, v map[string]string) error {
				return wantVerdict(v, "kube-system/kube-dns", "endpoints/no_ready_endpoints")
			},
			// NotReady DNS Pods are not asked directly (their
			// kind="pod" series go): the canary and the Service IP say it.
			metricIs("svcprobe_cluster_dns_up", 0, "kind", "canary"),
			func(m snapshot, _ map[string]string) error {
				for _, s := range m {
					if s.name == "svcprobe_cluster_dns_up" && s.value != 0 {
						return fmt.Errorf("svcprobe_cluster_dns_up%v = %v, want 0", s.labels, s.value)
					}
				}
				return nil
			})
	}},
	// One replica dead but still Ready: the direct query names it; the
	// Service verdicts may say dns (queries kube-proxy sends to it fail)
	// but nothing else.
	// Queries through the VIP that land on the dead replica fail: the dns stages fail in a share
	// of rounds, which the verdict holds (dns/partial) until those rounds leave the window.
	"dns-replica-down": {allowance: 2 * time.Second, partial: true,
		check: func(ctx context.Context, cl kubernetes.Interface) func(snapshot, map[string]string) error {
			return both(
				metricIs("svcprobe_cluster_dns_up", 0, "kind", "pod", "server", "coredns-1"),
				metricIs("svcprobe_cluster_dns_up", 1, "kind", "pod", "server", "coredns-0"))
		},
	},
	// The exporter's search path is wrong, the FQDN through the same
	// nameserver still resolves. The name's last candidate is tried
	// absolute ("hostnames.default."), which the lab's CoreDNS (no forward
	// plugin) answers SERVFAIL. The exporter container restarts to read
	// the file, so this one gets a few seconds more.
	"resolv-search": {allowance: 6 * time.Second, check: func(ctx context.Context, cl kubernetes.Interface) func(snapshot, map[string]string) error {
		return both(hostnamesIs("dns/servfail|dns/nxdomain")(ctx, cl),
			func(m snapshot, _ map[string]string) error {
				for _, s := range m {
					if s.name == "svcprobe_cluster_dns_up" && s.labels["kind"] == "service" && s.value != 1 {
						return fmt.Errorf("the FQDN check through %s failed", s.labels["server"])
					}
				}
				return nil
			},
			metricIs("svcprobe_cluster_dns_up", 0, "kind", "canary"))
	}},
	// Every VIP fails: connects to a VIP hit the node's unreachable route
	// (EHOSTUNREACH, or a timeout once the kernel rate-limits the ICMP
	// errors); DNS fails through its VIP while the CoreDNS Pods answer
	// directly, so headless and ExternalName Services say proxy too.
	"kube-proxy-down": {allowance: time.Second, check: func(ctx context.Context, cl kubernetes.Interface) func(snapshot, map[string]string) error {
		return forEveryService(ctx, cl, "proxy/unreachable|proxy/timeout|proxy/refused")
	}, diagnose: "BROKEN: layer proxy ("},
	"hairpin-off": {allowance: time.Second, check: func(ctx context.Context, cl kubernetes.Interface) func(snapshot, map[string]string) error {
		return func(m snapshot, v map[string]string) error {
			if err := wantVerdict(v, hostnames, "ok/success"); err != nil {
				return err
			}
			return wantVerdict(v, "svcprobe/svcprobe-hairpin", "hairpin/*")
		}
	}},
	// About one new connection in three to hostnames' VIP goes to an address where nothing
	// answers; the proxy stage dials the VIP 3 times a round (one per ready endpoint), so about
	// 71% of its rounds fail. The verdict needs two failed rounds in a row (proxy with the
	// connection's reason) or two runs of failed rounds in the window (proxy/partial): 14 rounds
	// miss that with a probability below 1e-5 (simulated with the window's rules).
	"vip-partial": {allowance: 11*e2eInterval + time.Second, partial: true,
		check: hostnamesIs("proxy/partial|proxy/timeout|proxy/unreachable")},
	// One of three endpoints drops half of the SYNs: about half of the pod stage's rounds fail
	// (each endpoint is dialed once a round). 25 rounds miss the verdict with a probability of
	// about 2e-5 (simulated); the median is 4 rounds.
	"pod-flaky": {allowance: 22*e2eInterval + time.Second, partial: true,
		check: hostnamesIs("pod/partial|pod/timeout"),
		// It said proxy in 4 of 7 runs before the proxy stage's closer look (the VIP's connections
		// that land on the flaky Pod failing in rounds where the pod stage's one connection passed).
	},
	// The exporter on the node-local cache first (its container restarts): everything ok and
	// the cache up, which proves the mode works; then the cache stops.
	// Every Service must show it, each after two failed rounds whose DNS queries time out
	// (1 s), and the undo restarts the exporter: 6 s as for the other restarts.
	"node-local-dns-down": {allowance: 6 * time.Second,
		prepare: func(ctx context.Context, c *Config, _ kubernetes.Interface) error {
			return ExporterUseNodeLocalDNS(ctx, c, true)
		},
		prepared: func(ctx context.Context, cl kubernetes.Interface) func(snapshot, map[string]string) error {
			return both(allOK(ctx, cl), metricIs("svcprobe_cluster_dns_up", 1, "kind", "node_local"))
		},
		preparedWithin: 3*e2eInterval + 6*time.Second,
		check: func(ctx context.Context, cl kubernetes.Interface) func(snapshot, map[string]string) error {
			return both(
				forEveryService(ctx, cl, "dns/node_local_dns_unreachable", "kube-system/kube-dns"),
				func(_ snapshot, v map[string]string) error {
					return wantVerdict(v, "kube-system/kube-dns", "ok/success|dns/node_local_dns_unreachable")
				},
				metricIs("svcprobe_cluster_dns_up", 0, "kind", "node_local"))
		}},
	// The nameserver is neither the DNS Service nor node-local, and does not answer. The
	// exporter container restarts to read its resolv.conf.
	"resolver-down": {allowance: 6 * time.Second, check: func(ctx context.Context, cl kubernetes.Interface) func(snapshot, map[string]string) error {
		return both(
			forEveryService(ctx, cl, "dns/resolver_unreachable"),
			metricIs("svcprobe_cluster_dns_up", 0, "kind", "resolver"))
	}},
	// Only the DNS Service's VIP is not DNATed (its packets meet the node's unreachable route):
	// kube-dns' own ClusterIP fails while its Pods answer (proxy); every other Service's VIP
	// answers, so their failing names are dns, not proxy.
	// The DNS queries through the VIP time out (1 s) and every Service must show it.
	"dns-vip-rules-gone": {allowance: 3 * time.Second, check: func(ctx context.Context, cl kubernetes.Interface) func(snapshot, map[string]string) error {
		return both(
			forEveryService(ctx, cl, "dns/*", "kube-system/kube-dns"),
			func(_ snapshot, v map[string]string) error {
				return wantVerdict(v, "kube-system/kube-dns", "proxy/*")
			},
			metricIs("svcprobe_cluster_dns_up", 0, "kind", "service"),
			metricIs("svcprobe_cluster_dns_up", 1, "kind", "pod", "server", "coredns-0"),
			metricIs("svcprobe_cluster_dns_up", 1, "kind", "pod", "server", "coredns-1"))
	}},
}

// windowRounds is the exporter's verdict window (--verdict.window, default 8 rounds).
const windowRounds = 8

// The verdicts a fault may show at any time while it is in (none other may
// show), by Service ("*": every Service not named).
var faultAllowedDuring = map[string]map[string]string{
	// coredns-1 is Ready but dead: kube-dns itself has a backend that
	// refuses (pod); everything else may only see DNS trouble.
	"dns-replica-down": {"*": "ok/*|dns/*", "kube-system/kube-dns": "ok/*|dns/*|pod/*"},
	// The partial faults: ok until enough rounds failed (and in rounds that pass), then only
	// their own layer.
	"vip-partial": {"*": "ok/*", hostnames: "ok/*|proxy/*"},
	"pod-flaky":   {"*": "ok/*", hostnames: "ok/*|pod/*"},
	// Name resolution only: never proxy (every VIP answers).
	"node-local-dns-down": {"*": "ok/*|dns/*"},
	// The exporter restarts: its own Services have no ready endpoint until it is ready again.
	"resolver-down": {"*": "ok/*|dns/*", "svcprobe/svcprobe": "ok/*|dns/*|endpoints/*", "svcprobe/svcprobe-hairpin": "ok/*|dns/*|endpoints/*"},
	// kube-dns' own name fails too (through its VIP) until its proxy stage shows.
	"dns-vip-rules-gone": {"*": "ok/*|dns/*", "kube-system/kube-dns": "ok/*|proxy/*|dns/*"},
}

func checkAllowed(t *testing.T, fault string, allowed map[string]string, v map[string]string) {
	t.Helper()
	for k, got := range v {
		want, ok := allowed[k]
		if !ok {
			want = allowed["*"]
		}
		if err := wantVerdict(map[string]string{k: got}, k, want); err != nil {
			t.Fatalf("%s: verdict %s for %s is not allowed during this fault (only %s)\nverdicts:%s\n%s", fault, got, k, want, formatVerdicts(v), exporterDiagnostics())
		}
	}
}

func hostnamesIs(want string) func(context.Context, kubernetes.Interface) func(snapshot, map[string]string) error {
	return func(context.Context, kubernetes.Interface) func(snapshot, map[string]string) error {
		return func(_ snapshot, v map[string]string) error { return wantVerdict(v, hostnames, want) }
	}
}

func TestFaultCatalogue(t *testing.T) { faultCatalogue(t) }

// faultCatalogue runs in the lab's current proxy mode (TestNftablesMode runs it in nftables mode).
func faultCatalogue(t *testing.T) {
	for _, f := range Faults {
		if _, ok := faultCases[f.Name]; !ok {
			t.Errorf("fault %s has no test case", f.Name)
		}
	}
	for _, f := range Faults {
		fc, ok := faultCases[f.Name]
		if !ok {
			continue
		}
		t.Run(f.Name, func(t *testing.T) {
			cfg, cl := sharedLab(t)
			ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
			defer cancel()
			// Three intervals: a verdict needs two failed rounds in a row (one failed round
			// among good ones makes none), and the round in flight when the fault lands may
			// still pass.
			within := 3*e2eInterval + fc.allowance
			recovery := within
			if fc.partial {
				// The failed rounds leave the window one by one after the undo.
				recovery = (windowRounds+3)*e2eInterval + time.Second
			}

			settle(t, ctx, cl)

			undone := false
			undoOnCleanup(t, cfg, cl, &f, &undone)

			if fc.prepare != nil {
				if err := fc.prepare(ctx, cfg, cl); err != nil {
					t.Fatalf("prepare %s: %v", f.Name, err)
				}
				took := waitMetrics(t, f.Name+": prepared", fc.preparedWithin, fc.prepared(ctx, cl))
				t.Logf("%s: prepared after %s (limit %s)", f.Name, took.Round(10*time.Millisecond), fc.preparedWithin)
			}
			if err := f.Inject(ctx, cfg, cl); err != nil {
				t.Fatalf("inject %s: %v", f.Name, err)
			}
			check := fc.check(ctx, cl)
			allowed := faultAllowedDuring[f.Name]
			took := waitMetrics(t, f.Name+": "+f.Expect, within, func(m snapshot, v map[string]string) error {
				if allowed != nil {
					checkAllowed(t, f.Name, allowed, v)
				}
				return check(m, v)
			})
			t.Logf("%s: seen after %s (limit %s)", f.Name, took.Round(10*time.Millisecond), within)
			if fc.diagnose != "" {
				out, code := runDiagnose(t, ctx, cfg, "default/hostnames")
				want := 3
				if fc.diagnoseOK {
					want = 0
				}
				if code != want || !strings.Contains(out, fc.diagnose) {
					t.Fatalf("%s: svcprobe diagnose exited %d, want %d and %q in:\n%s", f.Name, code, want, fc.diagnose, out)
				}
			}
			if allowed != nil {
				// Keep watching for two more intervals: still nothing but allowed.
				end := time.Now().Add(2 * e2eInterval)
				for time.Now().Before(end) {
					waitMetrics(t, f.Name+" steady", 5*time.Second, func(_ snapshot, v map[string]string) error {
						checkAllowed(t, f.Name, allowed, v)
						return nil
					})
					time.Sleep(200 * time.Millisecond)
				}
			}

			if err := f.Undo(ctx, cfg, cl); err != nil {
				t.Fatalf("undo %s: %v", f.Name, err)
			}
			undone = true
			took = waitMetrics(t, "recovery from "+f.Name, recovery, allOK(ctx, cl))
			t.Logf("%s: recovered after %s (limit %s)", f.Name, took.Round(10*time.Millisecond), recovery)
			if fc.partial {
				settleFor(t, ctx, cl, windowRounds*e2eInterval)
			}
		})
	}
}

// exporterNetns is the network namespace of the exporter's Pod ("" when it cannot be found: the
// dial then fails with that).
func exporterNetns(ctx context.Context) string {
	cfg := DefaultConfig()
	pod, err := cfg.ExporterPod(ctx)
	if err != nil {
		return ""
	}
	return PodNetns(pod.Namespace, pod.Name)
}

// hostnamesReach checks that a TCP connection from netns to every hostnames Pod on 9376 is
// accepted (want true) or not (want false) within a second: what the NetworkPolicy enforcement
// really does.
func hostnamesReach(ctx context.Context, cl kubernetes.Interface, netns string, want bool) error {
	if netns == "" {
		return errors.New("no exporter Pod")
	}
	pods, err := cl.CoreV1().Pods("default").List(ctx, metav1.ListOptions{LabelSelector: "app=hostnames"})
	if err != nil {
		return err
	}
	if len(pods.Items) == 0 {
		return errors.New("no hostnames Pods")
	}
	for _, p := range pods.Items {
		if p.Status.PodIP == "" || p.DeletionTimestamp != nil {
			continue
		}
		err := DialPod(ctx, netns, net.JoinHostPort(p.Status.PodIP, "9376"), time.Second)
		if (err == nil) != want {
			return fmt.Errorf("from %s to pod %s (%s:9376): connected=%v, want %v (%v)", netns, p.Name, p.Status.PodIP, err == nil, want, err)
		}
	}
	return nil
}

// runDiagnose runs `svcprobe diagnose` once inside the exporter's Pod network (its netns and
// resolv.conf) with an operator's kubeconfig that reaches the apiserver directly, not through the
// kubernetes Service VIP: with kube-proxy down that VIP is gone too, and an on-call engineer's
// kubeconfig points at the apiserver itself.
func runDiagnose(t *testing.T, ctx context.Context, cfg *Config, key string, flags ...string) (string, int) {
	t.Helper()
	pod, err := cfg.ExporterPod(ctx)
	if err != nil {
		t.Fatal(err)
	}
	args := append([]string{"netns", "exec", PodNetns(pod.Namespace, pod.Name),
		cfg.Exporter, "diagnose", "--kubeconfig=" + cfg.ClusterKubeconfig(), "--probe.timeout=1s", "--pod.ip=" + ExporterIP}, flags...)
	cmd := exec.CommandContext(ctx, "ip", append(args, key)...)
	out, err := cmd.CombinedOutput()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatalf("svcprobe diagnose: %v", err)
	}
	return string(out), code
}

// --- no false alarms -----------------------------------------------------

// settle waits until the lab has been fully healthy for three probe intervals in a row, so that a
// no-false-alarm run measures steady state, not the after-effects of the fault tested before it
// (one run saw a single hairpin timeout on the exporter's own VIP a second after hairpin mode came
// back on).
func settle(t *testing.T, ctx context.Context, cl kubernetes.Interface) {
	t.Helper()
	settleFor(t, ctx, cl, 3*e2eInterval)
}

// settleFor waits until the lab has been fully healthy for d in a row.
func settleFor(t *testing.T, ctx context.Context, cl kubernetes.Interface, d time.Duration) {
	t.Helper()
	start := time.Now()
	deadline := start.Add(2 * time.Minute)
	healthy := fullyHealthy(ctx, cl)
	var since time.Time
	var seen []string // what kept the lab from settling: each distinct error once, with when it was first seen
	known := map[string]bool{}
	for {
		sctx, cancel := context.WithTimeout(ctx, 3*time.Second)
		m, err := scrape(sctx)
		cancel()
		if err == nil {
			var v map[string]string
			if v, err = m.verdicts(); err == nil {
				err = healthy(m, v)
			}
		}
		switch {
		case err != nil:
			since = time.Time{} // not yet steady: start counting again
			if msg := err.Error(); !known[msg] && len(seen) < 20 {
				known[msg] = true
				seen = append(seen, fmt.Sprintf("+%s %s", time.Since(start).Round(100*time.Millisecond), msg))
			}
		case since.IsZero():
			since = time.Now()
		case time.Since(since) >= d:
			if len(seen) > 0 {
				t.Logf("settled after %s; on the way:\n  %s", time.Since(start).Round(10*time.Millisecond), strings.Join(seen, "\n  "))
			}
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("the lab did not stay healthy for %s within 2 minutes: %v\nseen:\n  %s\n%s", d, err, strings.Join(seen, "\n  "), exporterDiagnostics())
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// sampleVerdicts scrapes every `every` until done() and fails on any verdict
// that bad() rejects (and on a failed scrape).
func sampleVerdicts(t *testing.T, every, persist time.Duration, done func() bool, bad func(key, verdict string) bool) int {
	t.Helper()
	n := 0
	since := map[string]time.Time{} // when a Service's current wrong verdict was first seen
	for !done() {
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
		m, err := scrape(ctx)
		cancel()
		if err != nil {
			t.Fatalf("scrape: %v", err)
		}
		v, err := m.verdicts()
		if err != nil {
			t.Fatal(err)
		}
		now := time.Now()
		for k, got := range v {
			if !bad(k, got) {
				delete(since, k)
				continue
			}
			first, seen := since[k]
			if !seen {
				first, since[k] = now, now
			}
			if now.Sub(first) >= persist {
				// What the exporter saw, for the cause: its stages' results and windows.
				ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
				body, err := ScrapeExporter(ctx, "/api/v1/services/"+k)
				cancel()
				if err != nil {
					body = err.Error()
				}
				t.Fatalf("false alarm at sample %d: %s has verdict %s (for %s)\nverdicts:%s\n/api/v1/services/%s:\n%s",
					n, k, got, now.Sub(first).Round(time.Millisecond), formatVerdicts(v), k, body)
			}
			t.Logf("sample %d: %s shows %s (transient so far)", n, k, got)
		}
		n++
		time.Sleep(every)
	}
	return n
}

func TestNoFalseAlarmSteady(t *testing.T) {
	// The five minutes in CI (and with SVCPROBE_SOAK=1); a minute by hand.
	noFalseAlarmSteady(t, soakOr(5*time.Minute, time.Minute))
}

// soakOr is long in CI and with SVCPROBE_SOAK=1, short by hand.
func soakOr(long, short time.Duration) time.Duration {
	if os.Getenv("SVCPROBE_SOAK") == "1" || os.Getenv("CI") == "true" {
		return long
	}
	return short
}

// noFalseAlarmSteady samples every verdict twice a second for d in a settled lab: each must be ok.
func noFalseAlarmSteady(t *testing.T, d time.Duration) {
	_, cl := sharedLab(t)
	ctx := context.Background()
	settle(t, ctx, cl)
	end := time.Now().Add(d)
	n := sampleVerdicts(t, 500*time.Millisecond, 0, func() bool { return time.Now().After(end) },
		func(_, v string) bool { return v != "ok/success" })
	t.Logf("%d samples over %s: every verdict ok", n, d)
}

func TestNoFalseAlarmRollingUpdate(t *testing.T) { noFalseAlarmRollingUpdate(t) }

// noFalseAlarmRollingUpdate runs in the lab's current proxy mode (TestNftablesMode runs it in nftables mode).
func noFalseAlarmRollingUpdate(t *testing.T) {
	_, cl := sharedLab(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	settle(t, ctx, cl)
	before, err := cl.CoreV1().Pods("default").List(ctx, metav1.ListOptions{LabelSelector: "app=hostnames"})
	if err != nil {
		t.Fatal(err)
	}
	patch := fmt.Sprintf(`{"spec":{"strategy":{"type":"RollingUpdate","rollingUpdate":{"maxUnavailable":0,"maxSurge":1}},`+
		`"template":{"metadata":{"annotations":{"lab.svcprobe.io/restartedAt":%q}}}}}`, time.Now().Format(time.RFC3339Nano))
	d, err := cl.AppsV1().Deployments("default").Patch(ctx, "hostnames", types.StrategicMergePatchType, []byte(patch), metav1.PatchOptions{})
	if err != nil {
		t.Fatal(err)
	}
	gen := d.Generation
	var doneAt time.Time
	start := time.Now()
	n := sampleVerdicts(t, 200*time.Millisecond, 0, func() bool {
		if !doneAt.IsZero() {
			return time.Since(doneAt) > 2*e2eInterval
		}
		if time.Since(start) > 2*time.Minute {
			t.Fatalf("rollout of hostnames not complete after 2 minutes")
		}
		d, err := cl.AppsV1().Deployments("default").Get(ctx, "hostnames", metav1.GetOptions{})
		if err == nil && rolledOut(d, gen) {
			pods, err := cl.CoreV1().Pods("default").List(ctx, metav1.ListOptions{LabelSelector: "app=hostnames"})
			if err == nil && len(pods.Items) == 3 {
				doneAt = time.Now()
			}
		}
		return false
	}, func(k, v string) bool { return k == hostnames && v != "ok/success" })
	after, err := cl.CoreV1().Pods("default").List(ctx, metav1.ListOptions{LabelSelector: "app=hostnames"})
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range after.Items {
		for _, b := range before.Items {
			if p.UID == b.UID {
				t.Fatalf("pod %s was not replaced by the rollout", p.Name)
			}
		}
	}
	t.Logf("rollout done in %s; %d samples every 200ms, hostnames always ok", doneAt.Sub(start).Round(10*time.Millisecond), n)
}

func rolledOut(d *appsv1.Deployment, gen int64) bool {
	want := int32(1)
	if d.Spec.Replicas != nil {
		want = *d.Spec.Replicas
	}
	return d.Status.ObservedGeneration >= gen && d.Status.UpdatedReplicas == want &&
		d.Status.Replicas == want && d.Status.AvailableReplicas == want
}

func TestNoFalseAlarmCoreDNSRestart(t *testing.T) { noFalseAlarmCoreDNSRestart(t) }

// noFalseAlarmCoreDNSRestart runs in the lab's current proxy mode (TestNftablesMode runs it in nftables mode).
func noFalseAlarmCoreDNSRestart(t *testing.T) {
	_, cl := sharedLab(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	settle(t, ctx, cl)
	if err := RestartPodProcesses("kube-system", "coredns-1"); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	sawDown := false
	var upAgain time.Time
	// An alarm here is a wrong verdict that holds for a whole probe interval. Once in several
	// runs one round saw every VIP but the DNS and apiserver ones fail (proxy/timeout and
	// proxy/refused) right after the CoreDNS restart; the cause is not understood yet. It is
	// logged, and an alert with a for: longer than one interval would not page on it.
	n := sampleVerdicts(t, 200*time.Millisecond, e2eInterval, func() bool {
		if time.Since(start) > time.Minute {
			t.Fatalf("coredns-1 not back after a minute")
		}
		m, err := scrape(ctx)
		if err != nil {
			return false
		}
		if v, _ := m.value("svcprobe_cluster_dns_up", "kind", "pod", "server", "coredns-1"); v == 0 {
			sawDown = true
			upAgain = time.Time{}
		} else if upAgain.IsZero() {
			upAgain = time.Now()
		}
		// Done once it has been up for three intervals.
		return !upAgain.IsZero() && time.Since(upAgain) > 3*e2eInterval
	}, func(k, v string) bool {
		// kube-dns itself may see its dead backend (pod) until the
		// kubelet marks coredns-1 NotReady.
		if k == "kube-system/kube-dns" && strings.HasPrefix(v, "pod/") {
			return false
		}
		return !strings.HasPrefix(v, "ok/") && !strings.HasPrefix(v, "dns/")
	})
	// A dns stage that failed in two separate rounds during the restart is held as partial until
	// those rounds leave the verdict's window.
	waitMetrics(t, "healthy after the restart", (windowRounds+3)*e2eInterval+time.Second, allOK(ctx, cl))
	t.Logf("%d samples; coredns-1 seen down by svcprobe: %v; verdicts never worse than dns", n, sawDown)
}

// TestExporterLeastPrivilege checks that the exporter runs with a token of
// the svcprobe ServiceAccount bound to its Pod, through the kubernetes
// Service VIP, and that this identity can do what deploy/base grants and
// nothing more.
func TestExporterLeastPrivilege(t *testing.T) {
	cfg, cl := sharedLab(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	pod, err := cfg.ExporterPod(ctx)
	if err != nil {
		t.Fatal(err)
	}
	kcPath := filepath.Join(cfg.podDir(pod.Namespace+"/"+pod.Name), "kubeconfig")
	rc, err := clientcmd.BuildConfigFromFlags("", kcPath)
	if err != nil {
		t.Fatal(err)
	}
	svc, err := cl.CoreV1().Services("default").Get(ctx, "kubernetes", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if want := "https://" + svc.Spec.ClusterIP + ":443"; rc.Host != want {
		t.Errorf("exporter kubeconfig server %s, want the kubernetes Service VIP %s", rc.Host, want)
	}
	// Talk as the exporter, from its own network namespace (through the VIP).
	as := clientInPod(t, rc, pod)
	who, err := as.AuthenticationV1().SelfSubjectReviews().Create(ctx, &authnv1.SelfSubjectReview{}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	u := who.Status.UserInfo
	if u.Username != "system:serviceaccount:svcprobe:svcprobe" {
		t.Errorf("exporter authenticates as %q", u.Username)
	}
	if got := u.Extra["authentication.kubernetes.io/pod-name"]; len(got) != 1 || got[0] != pod.Name {
		t.Errorf("token not bound to the Pod %s: extra %v", pod.Name, u.Extra)
	}
	assertExporterAccess(t, ctx, cfg, pod, as)
}

// assertExporterAccess checks, as the exporter (as: a client with its own token), that it may
// list/watch Services, Pods, EndpointSlices and the workloads and nothing else (SelfSubjectAccessReviews), and
// that its log never mentions a refusal. The exporter from deploy/base and from the chart share it.
// clientInPod returns a client that talks as rc from inside pod's network namespace and closes
// its connections when the test ends: a socket left open inside a Pod's namespace keeps that
// namespace alive after the Pod is gone (see podRuntime.deleteNetwork).
func clientInPod(t *testing.T, rc *rest.Config, pod *corev1.Pod) kubernetes.Interface {
	t.Helper()
	rc = rest.CopyConfig(rc)
	rc.Dial = NetnsDialer(PodNetns(pod.Namespace, pod.Name))
	hc, err := rest.HTTPClientFor(rc)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { utilnet.CloseIdleConnectionsFor(hc.Transport) })
	as, err := kubernetes.NewForConfigAndClient(rc, hc)
	if err != nil {
		t.Fatal(err)
	}
	return as
}

func assertExporterAccess(t *testing.T, ctx context.Context, cfg *Config, pod *corev1.Pod, as kubernetes.Interface) {
	t.Helper()
	for _, c := range []struct {
		verb, group, resource string
		allowed               bool
	}{
		{"list", "", "services", true}, {"watch", "", "services", true}, {"list", "", "pods", true},
		{"watch", "discovery.k8s.io", "endpointslices", true},
		// The workloads, read only: scaled to zero or a typo.
		{"list", "apps", "deployments", true}, {"watch", "apps", "statefulsets", true}, {"watch", "apps", "replicasets", true},
		{"watch", "apps", "daemonsets", true}, {"watch", "", "replicationcontrollers", true},
		{"update", "apps", "deployments", false}, {"patch", "apps", "deployments", false}, {"create", "apps", "daemonsets", false},
		{"update", "", "replicationcontrollers", false},
		{"get", "", "secrets", false}, {"list", "", "configmaps", false}, {"list", "", "endpoints", false},
		{"update", "", "services", false}, {"delete", "", "pods", false}, {"create", "", "pods", false},
		{"patch", "discovery.k8s.io", "endpointslices", false}, {"list", "", "nodes", false},
	} {
		r, err := as.AuthorizationV1().SelfSubjectAccessReviews().Create(ctx, &authzv1.SelfSubjectAccessReview{
			Spec: authzv1.SelfSubjectAccessReviewSpec{ResourceAttributes: &authzv1.ResourceAttributes{
				Verb: c.verb, Group: c.group, Resource: c.resource}}}, metav1.CreateOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if r.Status.Allowed != c.allowed {
			t.Errorf("%s %s.%s: allowed=%v, want %v", c.verb, c.resource, c.group, r.Status.Allowed, c.allowed)
		}
	}
	// And the exporter itself never hit a refusal.
	logs, _ := filepath.Glob(cfg.path("logs", "pod-svcprobe-"+pod.Name+"-*.log"))
	if len(logs) == 0 {
		t.Fatalf("no log of the exporter Pod in %s", cfg.path("logs"))
	}
	for _, l := range logs {
		b, err := os.ReadFile(l)
		if err != nil {
			t.Fatal(err)
		}
		if strings.Contains(strings.ToLower(string(b)), "forbidden") {
			t.Errorf("%s mentions forbidden:\n%s", l, b)
		}
	}
}

// TestPodNetworkGoneWithOpenSocket: a Pod's address leaves the bridge when the Pod goes, even
// while a socket opened inside its namespace keeps that namespace alive. Before the kubelet
// deleted the veth by name, the exporter's pinned address stayed on the bridge in the namespace
// of the Pod deleted before it (a test's client still had a connection open there), and the
// fault catalogue flaked: two ARP answers for one IP, the live exporter's API connection stalled.
func TestPodNetworkGoneWithOpenSocket(t *testing.T) {
	_, cl := sharedLab(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	pods, err := cl.CoreV1().Pods("default").List(ctx, metav1.ListOptions{LabelSelector: "app=hostnames"})
	if err != nil {
		t.Fatal(err)
	}
	if len(pods.Items) < 2 {
		t.Fatalf("want at least 2 hostnames Pods, have %d", len(pods.Items))
	}
	victim, peer := pods.Items[0], pods.Items[1]
	// A connection from inside the victim's namespace to another Pod, held open past its deletion.
	conn, err := dialInNetns(ctx, PodNetns(victim.Namespace, victim.Name), "tcp", net.JoinHostPort(peer.Status.PodIP, "9376"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	veth := vethName(victim.UID)
	if err := ip("-n", NodeNetns, "link", "show", veth); err != nil {
		t.Fatalf("the victim's veth %s is not on the node before the test: %v", veth, err)
	}
	if err := cl.CoreV1().Pods("default").Delete(ctx, victim.Name, metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	err = waitFor(ctx, time.Minute, "Pod "+victim.Name+" gone", func() error {
		if _, err := cl.CoreV1().Pods("default").Get(ctx, victim.Name, metav1.GetOptions{}); !apierrors.IsNotFound(err) {
			return fmt.Errorf("still there (err %v)", err)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := ip("-n", NodeNetns, "link", "show", veth); err == nil {
		t.Fatalf("veth %s of the deleted Pod %s is still on the bridge (its namespace is held open by a socket)", veth, victim.Name)
	}
	// The replacement comes up and the lab is whole again for the tests after this one.
	settle(t, ctx, cl)
}

// undoOnCleanup undoes the fault when the test ends before it did (*undone false), and waits for
// the lab to be healthy again for the next test.
func undoOnCleanup(t *testing.T, cfg *Config, cl kubernetes.Interface, f *Fault, undone *bool) {
	t.Helper()
	t.Cleanup(func() {
		if *undone {
			return
		}
		if err := f.Undo(context.Background(), cfg, cl); err != nil {
			t.Errorf("undo %s: %v", f.Name, err)
		}
		waitMetrics(t, "healthy after cleanup of "+f.Name, 60*time.Second, fullyHealthy(context.Background(), cl))
	})
}

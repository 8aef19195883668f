package lab

// What svcprobe ships, against the lab's real kube-apiserver: every object of deploy/base and of
// the Helm chart's rendering is applied server-side with dry-run (admission, validation, defaulting
// run; nothing is stored), an invalid object is refused the same way, and svcprobe runs once from
// the chart's rendered Deployment and RBAC. helm is the binary `make helm-tools` builds
// ($HELM, else <cache>/bin/helm-v3.22.0).

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	policyv1 "k8s.io/api/policy/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/serializer"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/tools/clientcmd"
	"sigs.k8s.io/yaml"
)

const (
	helmVersion = "v3.22.0"
	helmChart   = "../deploy/helm/svcprobe"
	// The chart's dry-run goes to a namespace of its own: its Deployment's selector carries the
	// release label, and a Deployment's selector is immutable, so it cannot be applied over
	// deploy/base's in namespace svcprobe (nor should anyone: install one or the other).
	chartDryRunNamespace = "svcprobe-chart-dryrun"
)

// manifest is one object as shipped: its JSON (what is applied) and its strict decoding.
type manifest struct {
	obj  runtime.Object
	json []byte
	what string // kind/name
}

// decodeManifests splits a YAML stream at "---" lines and decodes each object strictly with
// client-go's scheme. Kinds the lab has no API for (prometheus-operator's) are left out and
// returned by name.
func decodeManifests(b []byte) (ms []manifest, skipped []string, err error) {
	codecs := serializer.NewCodecFactory(scheme.Scheme, serializer.EnableStrict)
	for _, doc := range regexp.MustCompile(`(?m)^---\s*$`).Split(string(b), -1) {
		if strings.TrimSpace(stripComments(doc)) == "" {
			continue
		}
		j, err := yaml.YAMLToJSON([]byte(doc))
		if err != nil {
			return nil, nil, err
		}
		var tm struct {
			APIVersion string `json:"apiVersion"`
			Kind       string `json:"kind"`
			Metadata   struct {
				Name string `json:"name"`
			} `json:"metadata"`
		}
		if err := json.Unmarshal(j, &tm); err != nil {
			return nil, nil, err
		}
		what := tm.Kind + "/" + tm.Metadata.Name
		if strings.HasPrefix(tm.APIVersion, "monitoring.coreos.com/") {
			skipped = append(skipped, what)
			continue
		}
		obj, _, err := codecs.UniversalDeserializer().Decode([]byte(doc), nil, nil)
		if err != nil {
			return nil, nil, fmt.Errorf("%s: %w", what, err)
		}
		ms = append(ms, manifest{obj: obj, json: j, what: what})
	}
	return ms, skipped, nil
}

// baseManifests reads deploy/base (the files kustomization.yaml lists, which is all of them:
// deploy/deploy_test.go checks that).
func baseManifests(t *testing.T) []manifest {
	t.Helper()
	files, err := filepath.Glob("../deploy/base/*.yaml")
	if err != nil || len(files) == 0 {
		t.Fatalf("no deploy/base manifests: %v", err)
	}
	var all []manifest
	for _, f := range files {
		if filepath.Base(f) == "kustomization.yaml" {
			continue
		}
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		ms, skipped, err := decodeManifests(b)
		if err != nil || len(skipped) > 0 {
			t.Fatalf("%s: %v %v", f, err, skipped)
		}
		all = append(all, ms...)
	}
	return all
}

// helmTemplate renders the chart (release svcprobe) in namespace ns.
func helmTemplate(t *testing.T, cfg *Config, ns string, args ...string) []byte {
	t.Helper()
	return runHelm(t, cfg, append([]string{"template", "svcprobe", helmChart, "--namespace", ns, "--kube-version", KubernetesVersion}, args...)...)
}

// runHelm runs the helm binary with an empty home of its own (no repositories) and returns stdout.
func runHelm(t *testing.T, cfg *Config, args ...string) []byte {
	t.Helper()
	bin := os.Getenv("HELM")
	if bin == "" {
		bin = filepath.Join(cfg.BinDir, "helm-"+helmVersion)
	}
	if _, err := os.Stat(bin); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("helm: %v (make helm-tools)", err)
		}
		t.Skipf("helm not built (%v): make helm-tools", err)
	}
	home := t.TempDir()
	var stdout, stderr bytes.Buffer
	cmd := exec.Command(bin, args...)
	cmd.Env = append(os.Environ(), "HELM_CACHE_HOME="+home+"/cache", "HELM_CONFIG_HOME="+home+"/config", "HELM_DATA_HOME="+home+"/data")
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("helm %s: %v\n%s", args[0], err, stderr.String())
	}
	return stdout.Bytes()
}

func chartManifests(t *testing.T, cfg *Config, ns string, args ...string) ([]manifest, []string) {
	t.Helper()
	ms, skipped, err := decodeManifests(helmTemplate(t, cfg, ns, args...))
	if err != nil {
		t.Fatalf("chart rendering: %v", err)
	}
	return ms, skipped
}

// applyDryRun is `kubectl apply --server-side --dry-run=server --force-conflicts` for one object:
// the apiserver admits, validates and defaults it and returns what it would store.
func applyDryRun(ctx context.Context, cl kubernetes.Interface, m manifest) (runtime.Object, error) {
	opts := metav1.PatchOptions{DryRun: []string{metav1.DryRunAll}, FieldManager: "svcprobe-test", Force: ptr(true)}
	pt := types.ApplyPatchType
	switch v := m.obj.(type) {
	case *corev1.Namespace:
		return cl.CoreV1().Namespaces().Patch(ctx, v.Name, pt, m.json, opts)
	case *corev1.ServiceAccount:
		return cl.CoreV1().ServiceAccounts(v.Namespace).Patch(ctx, v.Name, pt, m.json, opts)
	case *corev1.Service:
		return cl.CoreV1().Services(v.Namespace).Patch(ctx, v.Name, pt, m.json, opts)
	case *rbacv1.ClusterRole:
		return cl.RbacV1().ClusterRoles().Patch(ctx, v.Name, pt, m.json, opts)
	case *rbacv1.ClusterRoleBinding:
		return cl.RbacV1().ClusterRoleBindings().Patch(ctx, v.Name, pt, m.json, opts)
	case *appsv1.Deployment:
		return cl.AppsV1().Deployments(v.Namespace).Patch(ctx, v.Name, pt, m.json, opts)
	case *appsv1.StatefulSet:
		return cl.AppsV1().StatefulSets(v.Namespace).Patch(ctx, v.Name, pt, m.json, opts)
	case *appsv1.DaemonSet:
		return cl.AppsV1().DaemonSets(v.Namespace).Patch(ctx, v.Name, pt, m.json, opts)
	case *corev1.ConfigMap:
		return cl.CoreV1().ConfigMaps(v.Namespace).Patch(ctx, v.Name, pt, m.json, opts)
	case *networkingv1.NetworkPolicy:
		return cl.NetworkingV1().NetworkPolicies(v.Namespace).Patch(ctx, v.Name, pt, m.json, opts)
	case *policyv1.PodDisruptionBudget:
		return cl.PolicyV1().PodDisruptionBudgets(v.Namespace).Patch(ctx, v.Name, pt, m.json, opts)
	}
	return nil, fmt.Errorf("%s: no dry-run apply for %T", m.what, m.obj)
}

// TestDryRunDeployBase applies every object of deploy/base to the lab's apiserver (where the lab
// created them already, adapted): each is accepted, and nothing changes.
func TestDryRunDeployBase(t *testing.T) {
	_, cl := sharedLab(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	ms := baseManifests(t)
	if len(ms) != 7 {
		t.Fatalf("%d objects in deploy/base, want 7", len(ms))
	}
	before, err := cl.AppsV1().Deployments(ExporterNamespace).Get(ctx, "svcprobe", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range ms {
		got, err := applyDryRun(ctx, cl, m)
		if err != nil {
			t.Errorf("%s: %v", m.what, err)
			continue
		}
		// What the apiserver would store is deploy/base's, not the lab's adaptation.
		if d, ok := got.(*appsv1.Deployment); ok {
			want := m.obj.(*appsv1.Deployment).Spec.Template.Spec.Containers[0].Args
			if args := d.Spec.Template.Spec.Containers[0].Args; strings.Join(args, " ") != strings.Join(want, " ") {
				t.Errorf("dry-run Deployment args %v, want deploy/base's %v", args, want)
			}
		}
	}
	after, err := cl.AppsV1().Deployments(ExporterNamespace).Get(ctx, "svcprobe", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if after.ResourceVersion != before.ResourceVersion {
		t.Errorf("a dry-run changed the Deployment (resourceVersion %s -> %s)", before.ResourceVersion, after.ResourceVersion)
	}
}

// TestDryRunNetworkPolicies applies deploy/network-policy's NetworkPolicies (the exporter's own, in
// its namespace; the allow rule for target namespaces, in default) to the lab's apiserver: the API
// accepts them as written (validation of selectors, ports, policyTypes).
func TestDryRunNetworkPolicies(t *testing.T) {
	_, cl := sharedLab(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	for _, c := range []struct{ file, ns string }{
		{"../deploy/network-policy/svcprobe-networkpolicy.yaml", ExporterNamespace},
		{"../deploy/network-policy/target-namespace/allow-svcprobe.yaml", "default"},
	} {
		b, err := os.ReadFile(c.file)
		if err != nil {
			t.Fatal(err)
		}
		ms, skipped, err := decodeManifests(b)
		if err != nil || len(skipped) > 0 || len(ms) != 1 {
			t.Fatalf("%s: %d objects, %v %v", c.file, len(ms), err, skipped)
		}
		np := ms[0].obj.(*networkingv1.NetworkPolicy)
		np.Namespace = c.ns
		np.APIVersion, np.Kind = "networking.k8s.io/v1", "NetworkPolicy"
		if ms[0].json, err = json.Marshal(np); err != nil {
			t.Fatal(err)
		}
		got, err := applyDryRun(ctx, cl, ms[0])
		if err != nil {
			t.Errorf("%s: %v", c.file, err)
			continue
		}
		if g := got.(*networkingv1.NetworkPolicy); len(g.Spec.PolicyTypes) == 0 || g.Namespace != c.ns {
			t.Errorf("%s: the apiserver would store %+v", c.file, g)
		}
		if _, err := cl.NetworkingV1().NetworkPolicies(c.ns).Get(ctx, np.Name, metav1.GetOptions{}); err == nil {
			t.Errorf("%s: a dry-run created %s/%s", c.file, c.ns, np.Name)
		}
	}
}

// TestDryRunHelmChart applies the chart's default rendering, and the core objects of its all-on
// rendering (StatefulSet of 3 shards, TLS web config volume, ...), to a fresh namespace.
func TestDryRunHelmChart(t *testing.T) {
	cfg, cl := sharedLab(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	// The namespace must exist for namespaced objects, even in a dry-run.
	if _, err := cl.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: chartDryRunNamespace}}, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cl.CoreV1().Namespaces().Delete(context.Background(), chartDryRunNamespace, metav1.DeleteOptions{})
	})
	for _, tc := range []struct {
		name string
		args []string
		min  int
	}{
		{"defaults", []string{"--set", "namespace.create=true"}, 7},
		{"all-on", []string{"-f", "../deploy/helm/ci/all-on-values.yaml"}, 9},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ms, skipped := chartManifests(t, cfg, chartDryRunNamespace, tc.args...)
			if len(ms) < tc.min {
				t.Fatalf("%d objects rendered, want at least %d", len(ms), tc.min)
			}
			if len(skipped) > 0 {
				t.Logf("not applied (no prometheus-operator CRDs in the lab): %v", skipped)
			}
			for _, m := range ms {
				if _, err := applyDryRun(ctx, cl, m); err != nil {
					t.Errorf("%s: %v", m.what, err)
				}
			}
			// Dry-run: nothing of the chart was stored.
			for _, m := range ms {
				if d, ok := m.obj.(*appsv1.Deployment); ok {
					if _, err := cl.AppsV1().Deployments(d.Namespace).Get(ctx, d.Name, metav1.GetOptions{}); !apierrors.IsNotFound(err) {
						t.Errorf("Deployment %s/%s after a dry-run: %v", d.Namespace, d.Name, err)
					}
				}
			}
		})
	}
	// And helm's own install path against the apiserver (discovery, release checks, NOTES.txt),
	// still a dry-run. Another release name than "svcprobe": helm refuses to adopt deploy/base's
	// cluster-scoped objects of the same name (the README says to install one or the other).
	t.Run("helm install --dry-run=server", func(t *testing.T) {
		out := string(runHelm(t, cfg, "install", "svcprobe-helm", helmChart, "--namespace", chartDryRunNamespace,
			"--dry-run=server", "--kubeconfig", cfg.AdminKubeconfig()))
		for _, want := range []string{"STATUS: pending-install", "kind: Deployment", "name: svcprobe-helm", "NOTES:",
			"metrics:      http://svcprobe-helm." + chartDryRunNamespace + ".svc:9817/metrics", "status page:"} {
			if !strings.Contains(out, want) {
				t.Errorf("helm install --dry-run=server output lacks %q:\n%s", want, out)
			}
		}
		// No release was recorded.
		rel, err := cl.CoreV1().Secrets(chartDryRunNamespace).List(ctx, metav1.ListOptions{LabelSelector: "owner=helm"})
		if err != nil {
			t.Fatal(err)
		}
		if len(rel.Items) != 0 {
			t.Errorf("helm stored a release in a dry-run: %s", rel.Items[0].Name)
		}
	})
}

// TestDryRunRejectsInvalid: the same dry-run refuses what the apiserver would refuse, so the tests
// above can fail.
func TestDryRunRejectsInvalid(t *testing.T) {
	cfg, cl := sharedLab(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	ms, _ := chartManifests(t, cfg, ExporterNamespace)
	var n int
	for _, m := range ms {
		var bad map[string]any
		if err := json.Unmarshal(m.json, &bad); err != nil {
			t.Fatal(err)
		}
		switch m.obj.(type) {
		case *appsv1.Deployment:
			bad["spec"].(map[string]any)["replicas"] = -1
		case *corev1.Service:
			bad["spec"].(map[string]any)["ports"].([]any)[0].(map[string]any)["port"] = 70000
		case *rbacv1.ClusterRoleBinding:
			bad["roleRef"].(map[string]any)["kind"] = "Role " // not a kind
		default:
			continue
		}
		b, err := json.Marshal(bad)
		if err != nil {
			t.Fatal(err)
		}
		_, err = applyDryRun(ctx, cl, manifest{obj: m.obj, json: b, what: m.what})
		if !apierrors.IsInvalid(err) {
			t.Errorf("%s with an invalid field: %v, want Invalid", m.what, err)
		}
		n++
	}
	if n < 3 {
		t.Fatalf("only %d invalid objects tried", n)
	}
}

// TestChartExporter runs svcprobe in the lab from the chart's default rendering: its Deployment
// (args, env, probes; adapted to the lab like deploy/base's) and its ClusterRole and
// ClusterRoleBinding replace deploy/base's; the ServiceAccount, Services and Namespace are
// deploy/base's (same names and ports; the Services select the chart's Pod). Then deploy/base is
// restored for the other tests.
func TestChartExporter(t *testing.T) {
	cfg, cl := sharedLab(t)
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	ms, _ := chartManifests(t, cfg, ExporterNamespace)
	var objs []runtime.Object
	var role *rbacv1.ClusterRole
	for _, m := range ms {
		objs = append(objs, m.obj)
		if r, ok := m.obj.(*rbacv1.ClusterRole); ok {
			role = r
		}
	}
	if role == nil || role.Labels["helm.sh/chart"] == "" {
		t.Fatalf("no ClusterRole with the chart's labels rendered: %+v", role)
	}
	if err := removeExporter(ctx, cl); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
		defer cancel()
		err := removeExporter(ctx, cl)
		if err == nil {
			err = DeployExporter(ctx, *cfg, ExporterOptions{Interval: e2eInterval, Timeout: e2eTimeout})
		}
		if err == nil { // the tests after this one scrape it: it must answer, not only be Available
			err = waitFor(ctx, time.Minute, "restored exporter answers /metrics", func() error {
				_, err := ScrapeExporter(ctx, "/metrics")
				return err
			})
		}
		if err != nil {
			t.Errorf("restoring deploy/base's exporter: %v (the next test brings the lab up again)", err)
		}
	})
	start := time.Now()
	if err := DeployExporter(ctx, *cfg, ExporterOptions{Interval: e2eInterval, Timeout: e2eTimeout, Objects: objs}); err != nil {
		t.Fatal(err)
	}
	t.Logf("svcprobe from the chart ready in %s", time.Since(start).Round(time.Millisecond))

	live, err := cl.RbacV1().ClusterRoles().Get(ctx, "svcprobe", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if live.Labels["helm.sh/chart"] != role.Labels["helm.sh/chart"] {
		t.Fatalf("the live ClusterRole is not the chart's: labels %v", live.Labels)
	}
	pod, err := cfg.ExporterPod(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if pod.Labels["app.kubernetes.io/instance"] != "svcprobe" {
		t.Fatalf("the exporter Pod %s is not the chart's: labels %v", pod.Name, pod.Labels)
	}
	// It probes: hostnames is ok, and the hairpin Service (reaching the chart's Pod) too.
	deadline := time.Now().Add(4*e2eInterval + 5*time.Second)
	var last string
	for {
		m, err := scrape(ctx)
		if err == nil {
			h, _ := m.value("svcprobe_service_verdict", "namespace", "default", "service", "hostnames", "layer", "ok")
			hp, _ := m.value("svcprobe_service_verdict", "namespace", ExporterNamespace, "service", "svcprobe-hairpin", "layer", "ok")
			if h == 1 && hp == 1 {
				break
			}
			last = fmt.Sprintf("hostnames ok=%v, svcprobe-hairpin ok=%v", h, hp)
		} else {
			last = err.Error()
		}
		if time.Now().After(deadline) {
			t.Fatalf("svcprobe from the chart: no ok verdicts: %s", last)
		}
		time.Sleep(200 * time.Millisecond)
	}
	// As the exporter: what the chart's role grants, and no more.
	rc, err := clientcmd.BuildConfigFromFlags("", filepath.Join(cfg.podDir(pod.Namespace+"/"+pod.Name), "kubeconfig"))
	if err != nil {
		t.Fatal(err)
	}
	assertExporterAccess(t, ctx, cfg, pod, clientInPod(t, rc, pod))
}

// removeExporter deletes the exporter's Deployment (and waits until its Pods are gone, so the
// pinned address is free) and its ClusterRole and ClusterRoleBinding.
func removeExporter(ctx context.Context, cl kubernetes.Interface) error {
	// Foreground: the Deployment goes only after its ReplicaSets and Pods. With background
	// deletion the old ReplicaSet lives on until the garbage collector gets to it and can start a
	// new Pod meanwhile, with the pinned exporter address, next to the one deployed next (seen in a
	// CI run: the restored exporter stopped answering).
	fg := metav1.DeletePropagationForeground
	if err := cl.AppsV1().Deployments(ExporterNamespace).Delete(ctx, "svcprobe", metav1.DeleteOptions{PropagationPolicy: &fg}); err != nil && !apierrors.IsNotFound(err) {
		return err
	}
	err := waitFor(ctx, 90*time.Second, "svcprobe Deployment, ReplicaSets and Pods gone", func() error {
		if _, err := cl.AppsV1().Deployments(ExporterNamespace).Get(ctx, "svcprobe", metav1.GetOptions{}); err == nil {
			return fmt.Errorf("svcprobe Deployment still there")
		} else if !apierrors.IsNotFound(err) {
			return err
		}
		rss, err := cl.AppsV1().ReplicaSets(ExporterNamespace).List(ctx, metav1.ListOptions{LabelSelector: ExporterLabel})
		if err != nil {
			return err
		}
		if n := len(rss.Items); n > 0 {
			return fmt.Errorf("%d svcprobe ReplicaSets left", n)
		}
		pods, err := cl.CoreV1().Pods(ExporterNamespace).List(ctx, metav1.ListOptions{LabelSelector: ExporterLabel})
		if err != nil {
			return err
		}
		if n := len(pods.Items); n > 0 {
			return fmt.Errorf("%d svcprobe Pods left", n)
		}
		return nil
	})
	if err != nil {
		return err
	}
	if err := cl.RbacV1().ClusterRoleBindings().Delete(ctx, "svcprobe", metav1.DeleteOptions{}); err != nil && !apierrors.IsNotFound(err) {
		return err
	}
	if err := cl.RbacV1().ClusterRoles().Delete(ctx, "svcprobe", metav1.DeleteOptions{}); err != nil && !apierrors.IsNotFound(err) {
		return err
	}
	return nil
}

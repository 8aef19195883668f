package deploy

// The Helm chart (helm/svcprobe) against deploy/base: with default values it must render the same
// objects (same RBAC rules, args, securityContext, probes, ports, selectors), with every option on
// it must render and decode, its args must be flags the exporter accepts, and values the schema
// forbids must fail. With nodeAgent.enabled (and nodeAgent.windows.enabled) it must render the
// objects of deploy/node-agent (and deploy/windows), compared the same way. helm is the binary `make helm-tools` builds from deploy/helm/tools (env HELM,
// else $SVCPROBE_CACHE/bin/helm-v3.22.0); without it the tests skip, or fail under CI=true.

import (
	"bytes"
	"cmp"
	"errors"
	"fmt"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"regexp"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	"k8s.io/apimachinery/pkg/api/resource"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/labels"
	kruntime "k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/serializer"
	"k8s.io/client-go/kubernetes/scheme"
	"sigs.k8s.io/yaml"
)

const (
	helmVersion = "v3.22.0"
	// helmKubeVersion is the Kubernetes version every helm template and lint of these tests assumes
	// (--kube-version, as helm.mk's HELM_KUBE_VERSION): without it this helm, built with plain
	// `go build`, assumes 1.20, which the chart's kubeVersion (>=1.21.0-0) refuses.
	helmKubeVersion = "1.37.0"
	helmChart       = "helm/svcprobe"
	helmAllOn       = "helm/ci/all-on-values.yaml"
	// The README installs with `helm install svcprobe ... -n svcprobe`: the names of deploy/base.
	helmRelease   = "svcprobe"
	helmNamespace = "svcprobe"
)

// helmBinary finds helm: $HELM, else the cached build of `make helm-tools`.
func helmBinary(t *testing.T) string {
	t.Helper()
	path := os.Getenv("HELM")
	if path == "" {
		cache := os.Getenv("SVCPROBE_CACHE")
		if cache == "" {
			home, _ := os.UserHomeDir()
			cache = filepath.Join(home, ".cache", "svcprobe")
		}
		path = filepath.Join(cache, "bin", "helm-"+helmVersion)
	}
	if _, err := os.Stat(path); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("helm %s: %v (make helm-tools builds it)", helmVersion, err)
		}
		t.Skipf("helm %s not built (%v): make helm-tools", helmVersion, err)
	}
	return path
}

// helm runs the helm binary and returns stdout; the error carries stderr. helm template and helm
// lint get --kube-version helmKubeVersion unless args give one.
func helm(t *testing.T, args ...string) ([]byte, error) {
	t.Helper()
	if len(args) > 0 && (args[0] == "template" || args[0] == "lint") && !slices.Contains(args, "--kube-version") {
		args = append(slices.Clone(args), "--kube-version", helmKubeVersion)
	}
	return helmExact(t, args...)
}

// helmExact runs helm with exactly these args.
func helmExact(t *testing.T, args ...string) ([]byte, error) {
	t.Helper()
	var stdout, stderr bytes.Buffer
	cmd := exec.Command(helmBinary(t), args...)
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	// No repositories, no network: a private, empty helm home.
	home := t.TempDir()
	cmd.Env = append(os.Environ(), "HELM_CACHE_HOME="+home+"/cache", "HELM_CONFIG_HOME="+home+"/config",
		"HELM_DATA_HOME="+home+"/data")
	if err := cmd.Run(); err != nil {
		return stdout.Bytes(), fmt.Errorf("helm %s: %w\n%s", strings.Join(args, " "), err, stderr.String())
	}
	return stdout.Bytes(), nil
}

// helmTemplate renders the chart as release svcprobe in namespace svcprobe.
func helmTemplate(t *testing.T, args ...string) ([]byte, error) {
	t.Helper()
	return helm(t, append([]string{"template", helmRelease, helmChart, "--namespace", helmNamespace}, args...)...)
}

// helmTemplateRelease is helmTemplate with a release name of the test's.
func helmTemplateRelease(t *testing.T, release string, args ...string) ([]byte, error) {
	t.Helper()
	return helm(t, append([]string{"template", release, helmChart, "--namespace", helmNamespace}, args...)...)
}

// rendered is the chart's output: the Kubernetes objects decoded strictly with client-go's scheme,
// and the prometheus-operator ones (not in that scheme) as unstructured.
type rendered struct {
	objs     map[string]kruntime.Object // kind/name
	monitors map[string]*unstructured.Unstructured
}

// decodeRendered splits helm's output into documents and decodes each strictly (unknown or
// duplicate fields fail).
func decodeRendered(t *testing.T, out []byte) rendered {
	t.Helper()
	codecs := serializer.NewCodecFactory(scheme.Scheme, serializer.EnableStrict)
	r := rendered{objs: map[string]kruntime.Object{}, monitors: map[string]*unstructured.Unstructured{}}
	for _, doc := range splitYAML(out) {
		var meta struct {
			APIVersion string `json:"apiVersion"`
			Kind       string `json:"kind"`
			Metadata   struct {
				Name string `json:"name"`
			} `json:"metadata"`
		}
		if err := yaml.Unmarshal(doc, &meta); err != nil {
			t.Fatalf("%v in:\n%s", err, doc)
		}
		key := meta.Kind + "/" + meta.Metadata.Name
		if _, dup := r.objs[key]; dup {
			t.Fatalf("%s rendered twice", key)
		}
		if strings.HasPrefix(meta.APIVersion, "monitoring.coreos.com/") {
			u := &unstructured.Unstructured{}
			if err := yaml.UnmarshalStrict(doc, &u.Object); err != nil {
				t.Fatalf("%s: %v", key, err)
			}
			r.monitors[key] = u
			continue
		}
		obj, _, err := codecs.UniversalDeserializer().Decode(doc, nil, nil)
		if err != nil {
			t.Fatalf("%s: %v\n%s", key, err, doc)
		}
		r.objs[key] = obj
	}
	return r
}

// splitYAML cuts a multi-document stream at "---" lines and drops documents with only comments.
func splitYAML(b []byte) [][]byte {
	var docs [][]byte
	for _, d := range regexp.MustCompile(`(?m)^---\s*$`).Split(string(b), -1) {
		empty := true
		for _, l := range strings.Split(d, "\n") {
			if l = strings.TrimSpace(l); l != "" && !strings.HasPrefix(l, "#") {
				empty = false
				break
			}
		}
		if !empty {
			docs = append(docs, []byte(d))
		}
	}
	return docs
}

func get[T kruntime.Object](t *testing.T, objs map[string]kruntime.Object, kind, name string) T {
	t.Helper()
	o, ok := objs[kind+"/"+name]
	if !ok {
		t.Fatalf("no %s/%s rendered (have %v)", kind, name, slices.Sorted(maps.Keys(objs)))
	}
	v, ok := o.(T)
	if !ok {
		t.Fatalf("%s/%s is a %T", kind, name, o)
	}
	return v
}

// kindNames lists objects as kind/name, whatever the file they came from.
func kindNames(objs map[string]kruntime.Object) []string {
	var out []string
	for _, o := range objs {
		m, err := metaOf(o)
		if err != nil {
			out = append(out, err.Error())
			continue
		}
		out = append(out, o.GetObjectKind().GroupVersionKind().Kind+"/"+m)
	}
	slices.Sort(out)
	return out
}

func metaOf(o kruntime.Object) (string, error) {
	type named interface{ GetName() string }
	if n, ok := o.(named); ok {
		return n.GetName(), nil
	}
	return "", fmt.Errorf("%T has no name", o)
}

// TestHelmKubeVersion: Chart.yaml's kubeVersion refuses Kubernetes 1.20 (policy/v1
// PodDisruptionBudget needs 1.21) and admits 1.21 with every option on; helm.mk renders for the
// tests' version; and without --kube-version helm either renders (a release binary: its client-go's
// version) or says why not (this helm, built with plain `go build`, assumes 1.20), as Chart.yaml
// and the chart's README say.
func TestHelmKubeVersion(t *testing.T) {
	b, err := os.ReadFile(filepath.Join(helmChart, "Chart.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var chart struct {
		KubeVersion string `json:"kubeVersion"`
	}
	if err := yaml.Unmarshal(b, &chart); err != nil {
		t.Fatal(err)
	}
	if chart.KubeVersion != ">=1.21.0-0" {
		t.Errorf("Chart.yaml kubeVersion %q, want >=1.21.0-0", chart.KubeVersion)
	}
	refused := "chart requires kubeVersion: >=1.21.0-0 which is incompatible with Kubernetes v1.20.0"
	for _, args := range [][]string{nil, {"-f", helmAllOn}} {
		if out, err := helmTemplate(t, append([]string{"--kube-version", "1.20.0"}, args...)...); err == nil || !strings.Contains(err.Error(), refused) {
			t.Errorf("%v --kube-version 1.20.0: want the error %q, got %v\n%s", args, refused, err, out)
		}
		if _, err := helmTemplate(t, append([]string{"--kube-version", "1.21.0"}, args...)...); err != nil {
			t.Errorf("%v --kube-version 1.21.0: %v", args, err)
		}
	}
	if _, err := helmExact(t, "template", helmRelease, helmChart, "--namespace", helmNamespace); err != nil && !strings.Contains(err.Error(), "chart requires kubeVersion: >=1.21.0-0 which is incompatible with Kubernetes v1.") {
		t.Errorf("helm template without --kube-version fails without saying why: %v", err)
	}
	mk, err := os.ReadFile("helm/helm.mk")
	if err != nil {
		t.Fatal(err)
	}
	if !regexp.MustCompile(`(?m)^HELM_KUBE_VERSION \?= ` + regexp.QuoteMeta(helmKubeVersion) + `$`).Match(mk) {
		t.Errorf("helm/helm.mk's HELM_KUBE_VERSION is not the tests' %s", helmKubeVersion)
	}
}

func TestHelmLint(t *testing.T) {
	for _, args := range [][]string{nil, {"-f", helmAllOn}} {
		out, err := helm(t, append([]string{"lint", "--strict", helmChart, "--namespace", helmNamespace}, args...)...)
		if err != nil {
			t.Errorf("%v\n%s", err, out)
		}
	}
}

// TestHelmDefaultsMatchBase: `helm template` with default values renders deploy/base.
func TestHelmDefaultsMatchBase(t *testing.T) {
	base := decodeBase(t)
	out, err := helmTemplate(t, "--set", "namespace.create=true")
	if err != nil {
		t.Fatal(err)
	}
	chart := decodeRendered(t, out)
	if len(chart.monitors) != 0 {
		t.Errorf("prometheus-operator objects rendered by default: %v", slices.Sorted(maps.Keys(chart.monitors)))
	}
	if got, want := kindNames(chart.objs), kindNames(base); !slices.Equal(got, want) {
		t.Fatalf("chart renders %v, deploy/base has %v", got, want)
	}
	// Without namespace.create (the default) the same minus the Namespace.
	out, err = helmTemplate(t)
	if err != nil {
		t.Fatal(err)
	}
	if n := len(decodeRendered(t, out).objs); n != len(base)-1 {
		t.Errorf("default rendering has %d objects, want deploy/base's %d minus the Namespace", n, len(base))
	}

	ns := get[*corev1.Namespace](t, chart.objs, "Namespace", "svcprobe")
	if bns := find[*corev1.Namespace](t, base); ns.Labels["pod-security.kubernetes.io/enforce"] != bns.Labels["pod-security.kubernetes.io/enforce"] {
		t.Errorf("Namespace pod-security label %q, deploy/base %q", ns.Labels["pod-security.kubernetes.io/enforce"], bns.Labels["pod-security.kubernetes.io/enforce"])
	}

	role := get[*rbacv1.ClusterRole](t, chart.objs, "ClusterRole", "svcprobe")
	if brole := find[*rbacv1.ClusterRole](t, base); !reflect.DeepEqual(role.Rules, brole.Rules) {
		t.Errorf("ClusterRole rules differ:\nchart %+v\nbase  %+v", role.Rules, brole.Rules)
	}
	crb := get[*rbacv1.ClusterRoleBinding](t, chart.objs, "ClusterRoleBinding", "svcprobe")
	if bcrb := find[*rbacv1.ClusterRoleBinding](t, base); !reflect.DeepEqual(crb.RoleRef, bcrb.RoleRef) || !reflect.DeepEqual(crb.Subjects, bcrb.Subjects) {
		t.Errorf("ClusterRoleBinding differs:\nchart %+v %+v\nbase  %+v %+v", crb.RoleRef, crb.Subjects, bcrb.RoleRef, bcrb.Subjects)
	}
	sa := get[*corev1.ServiceAccount](t, chart.objs, "ServiceAccount", "svcprobe")
	if bsa := find[*corev1.ServiceAccount](t, base); sa.Name != bsa.Name || sa.Namespace != bsa.Namespace {
		t.Errorf("ServiceAccount %s/%s, deploy/base %s/%s", sa.Namespace, sa.Name, bsa.Namespace, bsa.Name)
	}

	d := get[*appsv1.Deployment](t, chart.objs, "Deployment", "svcprobe")
	bd := find[*appsv1.Deployment](t, base)
	if *d.Spec.Replicas != *bd.Spec.Replicas {
		t.Errorf("replicas %d, deploy/base %d", *d.Spec.Replicas, *bd.Spec.Replicas)
	}
	ps, bps := d.Spec.Template.Spec, bd.Spec.Template.Spec
	if ps.ServiceAccountName != bps.ServiceAccountName || !reflect.DeepEqual(ps.AutomountServiceAccountToken, bps.AutomountServiceAccountToken) {
		t.Errorf("serviceAccountName %q automount %v, deploy/base %q %v", ps.ServiceAccountName, ps.AutomountServiceAccountToken, bps.ServiceAccountName, bps.AutomountServiceAccountToken)
	}
	if !reflect.DeepEqual(ps.SecurityContext, bps.SecurityContext) {
		t.Errorf("pod securityContext differs:\nchart %+v\nbase  %+v", ps.SecurityContext, bps.SecurityContext)
	}
	if len(ps.Containers) != 1 || len(bps.Containers) != 1 {
		t.Fatalf("containers: chart %d, deploy/base %d, want 1", len(ps.Containers), len(bps.Containers))
	}
	c, bc := ps.Containers[0], bps.Containers[0]
	for _, f := range []struct {
		name        string
		chart, base any
	}{
		{"name", c.Name, bc.Name},
		{"image", c.Image, bc.Image},
		{"imagePullPolicy", c.ImagePullPolicy, bc.ImagePullPolicy},
		{"securityContext", c.SecurityContext, bc.SecurityContext},
		{"readinessProbe", c.ReadinessProbe, bc.ReadinessProbe},
		{"livenessProbe", c.LivenessProbe, bc.LivenessProbe},
		{"ports", c.Ports, bc.Ports},
		{"env", c.Env, bc.Env},
		{"volumeMounts", c.VolumeMounts, bc.VolumeMounts},
		{"volumes", ps.Volumes, bps.Volumes},
	} {
		if !reflect.DeepEqual(f.chart, f.base) {
			t.Errorf("container %s differs:\nchart %+v\nbase  %+v", f.name, f.chart, f.base)
		}
	}
	for _, r := range []corev1.ResourceName{corev1.ResourceCPU, corev1.ResourceMemory} {
		if q, bq := c.Resources.Requests[r], bc.Resources.Requests[r]; q.Cmp(bq) != 0 {
			t.Errorf("requests.%s %s, deploy/base %s", r, q.String(), bq.String())
		}
		if q, bq := c.Resources.Limits[r], bc.Resources.Limits[r]; q.Cmp(bq) != 0 {
			t.Errorf("limits.%s %s, deploy/base %s", r, q.String(), bq.String())
		}
	}
	defaults := exporterDefaults(t)
	if got, want := withoutDefaults(c.Args, defaults), withoutDefaults(bc.Args, defaults); !slices.Equal(got, want) {
		t.Errorf("args (without the exporter's defaults) differ:\nchart %v\nbase  %v", got, want)
	}
	// The pod selector picks the Pod template; the Services select (at least) what deploy/base's do.
	podLabels := d.Spec.Template.Labels
	if !subset(d.Spec.Selector.MatchLabels, podLabels) || len(d.Spec.Selector.MatchExpressions) != 0 {
		t.Errorf("Deployment selector %v does not select its Pod template %v", d.Spec.Selector, podLabels)
	}
	for _, name := range []string{"svcprobe", "svcprobe-hairpin"} {
		s := get[*corev1.Service](t, chart.objs, "Service", name)
		var bs *corev1.Service
		for _, o := range base {
			if v, ok := o.(*corev1.Service); ok && v.Name == name {
				bs = v
			}
		}
		if bs == nil {
			t.Fatalf("deploy/base has no Service %s", name)
		}
		if !reflect.DeepEqual(s.Spec.Ports, bs.Spec.Ports) || s.Spec.Type != bs.Spec.Type && !(s.Spec.Type == corev1.ServiceTypeClusterIP && bs.Spec.Type == "") {
			t.Errorf("Service %s ports/type differ:\nchart %s %+v\nbase  %s %+v", name, s.Spec.Type, s.Spec.Ports, bs.Spec.Type, bs.Spec.Ports)
		}
		if !subset(bs.Spec.Selector, s.Spec.Selector) || !subset(s.Spec.Selector, podLabels) {
			t.Errorf("Service %s selector %v: must contain deploy/base's %v and select the Pod %v", name, s.Spec.Selector, bs.Spec.Selector, podLabels)
		}
		if !reflect.DeepEqual(s.Annotations, bs.Annotations) {
			t.Errorf("Service %s annotations %v, deploy/base %v", name, s.Annotations, bs.Annotations)
		}
	}
}

func subset(small, big map[string]string) bool {
	for k, v := range small {
		if bv, ok := big[k]; !ok || bv != v {
			return false
		}
	}
	return len(small) > 0
}

// withoutDefaults returns the args, sorted, without those that set a flag to its default.
func withoutDefaults(args []string, defaults map[string]string) []string {
	var out []string
	for _, a := range args {
		name, val, ok := strings.Cut(a, "=")
		if d, known := defaults[name]; ok && known && d == val {
			continue
		}
		out = append(out, a)
	}
	slices.Sort(out)
	return out
}

// TestHelmAllOn renders every option (helm/ci/all-on-values.yaml) and checks that each shows up
// where it should.
func TestHelmAllOn(t *testing.T) {
	out, err := helmTemplate(t, "-f", helmAllOn)
	if err != nil {
		t.Fatal(err)
	}
	r := decodeRendered(t, out)
	const name = "svcprobe-all-on"
	for _, k := range []string{"Namespace/svcprobe", "ServiceAccount/svcprobe-sa", "ClusterRole/" + name, "ClusterRoleBinding/" + name,
		"StatefulSet/" + name, "Service/" + name, "Service/" + name + "-hairpin-0", "Service/" + name + "-hairpin-1", "Service/" + name + "-hairpin-2"} {
		if _, ok := r.objs[k]; !ok {
			t.Errorf("all-on renders no %s (have %v)", k, slices.Sorted(maps.Keys(r.objs)))
		}
	}
	if _, ok := r.objs["Deployment/"+name]; ok {
		t.Error("shards: 3 renders a Deployment too")
	}
	ss := get[*appsv1.StatefulSet](t, r.objs, "StatefulSet", name)
	if *ss.Spec.Replicas != 3 {
		t.Errorf("StatefulSet replicas %d, want 3", *ss.Spec.Replicas)
	}
	ps := ss.Spec.Template.Spec
	c := ps.Containers[0]
	for _, want := range []string{
		"--shard=$(SVCPROBE_SHARD)", "--total-shards=3", "--hairpin.service=svcprobe/svcprobe-all-on-hairpin-$(SVCPROBE_SHARD)",
		"--namespaces=default,kube-system,shop", "--namespaces-exclude=kube-public", "--selector=svcprobe.io/probe!=off,tier in (frontend,backend)",
		"--expect=default/kubernetes", "--expect=kube-system/kube-dns", "--expect=shop/checkout",
		"--probe.interval=30s", "--probe.timeout=3s", "--probe.concurrency=128", "--probe.max-new-conns-per-second=2500.5", "--dns.max-qps=800",
		"--dns.cluster-domain=cluster.example", "--dns.service=kube-system/coredns", "--metrics.max-series-per-service=32",
		"--metrics.per-endpoint", "--metrics.per-endpoint-limit=25", "--web.listen-address=:9443",
		"--web.config.file=/etc/svcprobe/web/web-config.yml", "--log.level=debug", "--log.format=json", "--dns.resolv-conf=/etc/resolv.conf",
		"--cluster.cidr=10.0.0.0/8", "--cluster.cidr=fd00:10::/56", "--probe.allow-external=192.0.2.0/24",
		"--probe.vip-connections=2", "--verdict.window=12", "--dns.node-local=10.255.20.10",
	} {
		if !slices.Contains(c.Args, want) {
			t.Errorf("all-on args lack %q: %v", want, c.Args)
		}
	}
	if c.Image != "registry.example.com/svcprobe/svcprobe:v0.1.0" || c.ImagePullPolicy != corev1.PullIfNotPresent {
		t.Errorf("image %s %s", c.Image, c.ImagePullPolicy)
	}
	if len(ps.Volumes) != 1 || ps.Volumes[0].Secret == nil || ps.Volumes[0].Secret.SecretName != "svcprobe-web-tls" ||
		len(c.VolumeMounts) != 1 || c.VolumeMounts[0].MountPath != "/etc/svcprobe/web" || !c.VolumeMounts[0].ReadOnly {
		t.Errorf("web config volume %+v mounts %+v", ps.Volumes, c.VolumeMounts)
	}
	if c.ReadinessProbe.HTTPGet.Scheme != corev1.URISchemeHTTPS || c.LivenessProbe.HTTPGet.Scheme != corev1.URISchemeHTTPS {
		t.Error("probes do not use HTTPS with web.scheme HTTPS")
	}
	var shardEnv bool
	for _, e := range c.Env {
		if e.Name == "SVCPROBE_SHARD" && e.ValueFrom != nil && e.ValueFrom.FieldRef != nil &&
			e.ValueFrom.FieldRef.FieldPath == "metadata.labels['apps.kubernetes.io/pod-index']" {
			shardEnv = true
		}
	}
	if !shardEnv {
		t.Errorf("no SVCPROBE_SHARD from the pod-index label: %+v", c.Env)
	}
	if ps.NodeSelector["kubernetes.io/os"] != "linux" || len(ps.Tolerations) != 1 || ps.Affinity == nil || ps.Affinity.PodAntiAffinity == nil ||
		len(ps.TopologySpreadConstraints) != 1 || ps.PriorityClassName != "system-cluster-critical" || len(ps.ImagePullSecrets) != 1 ||
		ss.Spec.Template.Labels["team"] != "platform" || ss.Spec.Template.Annotations["example.com/scrape"] != "false" {
		t.Errorf("scheduling/pod options not rendered: %+v", ps)
	}
	if c.Resources.Limits.Cpu().String() != "2" {
		t.Errorf("resources %+v", c.Resources)
	}
	for i := range 3 {
		s := get[*corev1.Service](t, r.objs, "Service", fmt.Sprintf("%s-hairpin-%d", name, i))
		if s.Spec.Selector["statefulset.kubernetes.io/pod-name"] != fmt.Sprintf("%s-%d", name, i) || !subset(s.Spec.Selector, withPodName(ss.Spec.Template.Labels, s.Spec.Selector)) {
			t.Errorf("hairpin Service %d selector %v", i, s.Spec.Selector)
		}
	}

	sm := r.monitors["ServiceMonitor/"+name]
	if sm == nil {
		t.Fatalf("no ServiceMonitor (have %v)", slices.Sorted(maps.Keys(r.monitors)))
	}
	eps, _, _ := unstructured.NestedSlice(sm.Object, "spec", "endpoints")
	if sm.GetNamespace() != "monitoring" || len(eps) != 1 || eps[0].(map[string]any)["port"] != "metrics" || eps[0].(map[string]any)["scheme"] != "https" ||
		eps[0].(map[string]any)["honorLabels"] != true {
		t.Errorf("ServiceMonitor %s/%s endpoints %v", sm.GetNamespace(), sm.GetName(), eps)
	}
	pr := r.monitors["PrometheusRule/"+name]
	if pr == nil {
		t.Fatal("no PrometheusRule")
	}
	// Its rules carry all-on's prometheusRule values: TestHelmPrometheusRuleAllOn checks them.
	groups, _, _ := unstructured.NestedSlice(pr.Object, "spec", "groups")
	if pr.GetNamespace() != "monitoring" || len(groups) == 0 {
		t.Errorf("PrometheusRule %s/%s with %d groups", pr.GetNamespace(), pr.GetName(), len(groups))
	}
}

// withPodName is the labels of StatefulSet Pod N: the template's plus its pod-name label.
func withPodName(labels, sel map[string]string) map[string]string {
	m := maps.Clone(labels)
	m["statefulset.kubernetes.io/pod-name"] = sel["statefulset.kubernetes.io/pod-name"]
	return m
}

// TestHelmRejectsBadValues: each helm/testdata/bad-*.yaml must fail `helm template` (and
// therefore install), with an error naming what is wrong (its "# want:" line).
func TestHelmRejectsBadValues(t *testing.T) {
	files, _ := filepath.Glob("helm/testdata/bad-*.yaml")
	if len(files) < 5 {
		t.Fatalf("%d bad values files in helm/testdata", len(files))
	}
	for _, f := range files {
		t.Run(filepath.Base(f), func(t *testing.T) {
			b, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			first, _, _ := strings.Cut(string(b), "\n")
			want, ok := strings.CutPrefix(first, "# want: ")
			if !ok {
				t.Fatalf("%s: first line must be `# want: <text of the error>`", f)
			}
			out, err := helmTemplate(t, "-f", f)
			if err == nil {
				t.Fatalf("helm template accepted %s:\n%s", f, out)
			}
			if !strings.Contains(err.Error(), want) {
				t.Errorf("error does not mention %q: %v", want, err)
			}
		})
	}
}

// chartRuleGroups reads the rule groups the chart's PrometheusRule carries.
func chartRuleGroups(t *testing.T) []any {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(helmChart, "files", "rules.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var f struct {
		Groups []any `json:"groups"`
	}
	if err := yaml.UnmarshalStrict(b, &f); err != nil {
		t.Fatalf("files/rules.yaml: %v", err)
	}
	if f.Groups == nil {
		f.Groups = []any{}
	}
	return f.Groups
}

// TestHelmRulesMatchDeployRules keeps the chart's copy of the rules (files/rules.yaml) equal to the
// groups of deploy/rules/*.yaml, in file order. UPDATE_HELM_RULES=1 rewrites the copy.
func TestHelmRulesMatchDeployRules(t *testing.T) {
	files, _ := filepath.Glob("rules/*.yaml")
	if len(files) == 0 {
		t.Fatal("no deploy/rules/*.yaml: the chart's PrometheusRule would ship no rules")
	}
	want := []any{}
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		var rf struct {
			Groups []any `json:"groups"`
		}
		if err := yaml.Unmarshal(b, &rf); err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		want = append(want, rf.Groups...)
	}
	if len(want) == 0 {
		t.Fatal("deploy/rules/*.yaml hold no groups")
	}
	if os.Getenv("UPDATE_HELM_RULES") == "1" {
		b, err := yaml.Marshal(map[string]any{"groups": want})
		if err != nil {
			t.Fatal(err)
		}
		head := "# The rule groups of deploy/rules/*.yaml, in file order, for the PrometheusRule of this chart.\n" +
			"# Do not edit: `UPDATE_HELM_RULES=1 go test ./deploy -run TestHelmRulesMatchDeployRules` rewrites it,\n" +
			"# and that test fails when it drifts from deploy/rules.\n"
		if err := os.WriteFile(filepath.Join(helmChart, "files", "rules.yaml"), append([]byte(head), b...), 0o644); err != nil {
			t.Fatal(err)
		}
		t.Logf("wrote %d groups", len(want))
	}
	if got := chartRuleGroups(t); !reflect.DeepEqual(got, want) {
		t.Fatalf("helm/svcprobe/files/rules.yaml differs from deploy/rules/*.yaml (%d groups vs %d): UPDATE_HELM_RULES=1 go test ./deploy -run TestHelmRulesMatchDeployRules", len(got), len(want))
	}
}

// --- the exporter's flags -------------------------------------------------------------------------

var exporterBuild struct {
	once sync.Once
	dir  string
	path string
	err  error
}

// TestMain removes the exporter binary the flag tests build.
func TestMain(m *testing.M) {
	code := m.Run()
	if exporterBuild.dir != "" {
		_ = os.RemoveAll(exporterBuild.dir)
	}
	os.Exit(code)
}

// exporterBinary builds ./cmd/exporter once per test binary.
func exporterBinary(t *testing.T) string {
	t.Helper()
	exporterBuild.once.Do(func() {
		exporterBuild.dir, exporterBuild.err = os.MkdirTemp("", "svcprobe-deploy-test-")
		if exporterBuild.err != nil {
			return
		}
		goBin, err := exec.LookPath("go")
		if err != nil {
			goBin = filepath.Join(runtime.GOROOT(), "bin", "go")
		}
		exporterBuild.path = filepath.Join(exporterBuild.dir, "svcprobe")
		cmd := exec.Command(goBin, "build", "-o", exporterBuild.path, "./cmd/exporter")
		cmd.Dir = ".."
		if out, err := cmd.CombinedOutput(); err != nil {
			exporterBuild.err = fmt.Errorf("go build ./cmd/exporter: %v\n%s", err, out)
		}
	})
	if exporterBuild.err != nil {
		t.Fatal(exporterBuild.err)
	}
	return exporterBuild.path
}

// exporterDefaults reads each flag's default from the exporter's own --help ("--name=default").
func exporterDefaults(t *testing.T) map[string]string {
	t.Helper()
	out, err := exec.Command(exporterBinary(t), "--help").CombinedOutput()
	if err != nil {
		t.Fatalf("svcprobe --help: %v\n%s", err, out)
	}
	defaults := map[string]string{}
	for _, m := range regexp.MustCompile(`(?m)^\s+(?:-\w, )?(--[a-z][a-z0-9.-]*)=(\S+)`).FindAllStringSubmatch(string(out), -1) {
		defaults[m[1]] = strings.Trim(m[2], `"`)
	}
	// A few the chart always renders; if --help stops showing them, the comparison above is wrong.
	for _, f := range []string{"--probe.interval", "--probe.timeout", "--probe.concurrency", "--dns.max-qps", "--log.level"} {
		if _, ok := defaults[f]; !ok {
			t.Fatalf("no default for %s in svcprobe --help:\n%s", f, out)
		}
	}
	return defaults
}

// runExporterArgs runs the exporter with a container's args and env as the kubelet would pass
// them ($(VAR) expanded, downward-API values faked), outside a cluster: it must get past flag
// parsing and validation and stop only at building the Kubernetes client.
func runExporterArgs(t *testing.T, c corev1.Container) error {
	t.Helper()
	fake := map[string]string{"metadata.name": "svcprobe-1", "status.podIP": "10.0.0.7", "metadata.labels['apps.kubernetes.io/pod-index']": "1"}
	env := map[string]string{}
	for _, e := range c.Env {
		switch {
		case e.ValueFrom != nil && e.ValueFrom.FieldRef != nil:
			v, ok := fake[e.ValueFrom.FieldRef.FieldPath]
			if !ok {
				return fmt.Errorf("env %s: no fake value for %s", e.Name, e.ValueFrom.FieldRef.FieldPath)
			}
			env[e.Name] = v
		case e.ValueFrom == nil:
			env[e.Name] = e.Value
		}
	}
	var args []string
	for _, a := range c.Args {
		args = append(args, regexp.MustCompile(`\$\(([A-Za-z_][A-Za-z0-9_]*)\)`).ReplaceAllStringFunc(a, func(ref string) string {
			if v, ok := env[ref[2:len(ref)-1]]; ok {
				return v
			}
			return ref
		}))
	}
	args = append(args, "--kubeconfig="+filepath.Join(t.TempDir(), "no-such-kubeconfig"))
	cmd := exec.Command(exporterBinary(t), args...)
	cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "HOME=" + t.TempDir()}
	for k, v := range env {
		cmd.Env = append(cmd.Env, k+"="+v)
	}
	out, err := cmd.CombinedOutput()
	var exit *exec.ExitError
	if !errors.As(err, &exit) {
		return fmt.Errorf("svcprobe %v: want it to exit at the Kubernetes client, got %v\n%s", args, err, out)
	}
	if !strings.Contains(string(out), "cannot build a Kubernetes client") {
		return fmt.Errorf("svcprobe %v: flags refused:\n%s", args, out)
	}
	return nil
}

// TestHelmArgsAreExporterFlags: the args the chart renders (defaults and all-on) are flags the
// exporter accepts and its validation passes.
func TestHelmArgsAreExporterFlags(t *testing.T) {
	for _, tc := range []struct {
		name string
		args []string
		kind string
	}{
		{"defaults", nil, "Deployment"},
		{"all-on", []string{"-f", helmAllOn}, "StatefulSet"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out, err := helmTemplate(t, tc.args...)
			if err != nil {
				t.Fatal(err)
			}
			var spec corev1.PodSpec
			for _, o := range decodeRendered(t, out).objs {
				switch v := o.(type) {
				case *appsv1.Deployment:
					spec = v.Spec.Template.Spec
				case *appsv1.StatefulSet:
					spec = v.Spec.Template.Spec
				}
			}
			if len(spec.Containers) != 1 {
				t.Fatalf("no %s with one container rendered", tc.kind)
			}
			if err := runExporterArgs(t, spec.Containers[0]); err != nil {
				t.Fatal(err)
			}
		})
	}
	// And the check can fail: a misspelt flag is refused.
	bad := corev1.Container{Args: []string{"--probe.intervall=15s"}}
	if err := runExporterArgs(t, bad); err == nil || !strings.Contains(err.Error(), "flags refused") {
		t.Fatalf("a misspelt flag was not refused: %v", err)
	}
}

// TestHelmNotes renders templates/NOTES.txt (helm template does not; install needs a cluster) by
// wrapping it in a template of a copy of the chart, and checks it says where /metrics and the
// status page are.
func TestHelmNotes(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "svcprobe")
	if err := os.CopyFS(dir, os.DirFS(helmChart)); err != nil {
		t.Fatal(err)
	}
	notes, err := os.ReadFile(filepath.Join(dir, "templates", "NOTES.txt"))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(filepath.Join(dir, "templates", "NOTES.txt")); err != nil {
		t.Fatal(err)
	}
	wrapped := "{{- define \"svcprobe.notesCheck\" -}}\n" + string(notes) + "\n{{- end }}\n"
	if err := os.WriteFile(filepath.Join(dir, "templates", "_notescheck.tpl"), []byte(wrapped), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "templates", "notescheck.yaml"), []byte(`notes: {{ include "svcprobe.notesCheck" . | toJson }}`+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		args []string
		want []string
	}{
		{"defaults", nil, []string{
			"http://svcprobe.svcprobe.svc:9817/metrics", "status page:  http://svcprobe.svcprobe.svc:9817/\n",
			"kubectl -n svcprobe port-forward svc/svcprobe 9817:9817", "http://127.0.0.1:9817/metrics"}},
		{"all-on", []string{"-f", helmAllOn}, []string{
			"https://svcprobe-all-on.svcprobe.svc:9443/metrics", "3 shards", "port-forward pod/svcprobe-all-on-N",
			"ServiceMonitor svcprobe-all-on (namespace monitoring)",
			"DaemonSet svcprobe-all-on-node\n", "DaemonSet svcprobe-all-on-node-windows (resolv.conf from ConfigMap svcprobe-all-on-node-windows-resolv, nameserver 10.96.0.10)",
			"https://<agent Pod IP>:9443/metrics", "headless Service svcprobe-all-on-node",
			"ServiceMonitor svcprobe-all-on-node (namespace monitoring; job svcprobe-all-on-node, honorLabels: true)"}},
		{"node-agent", helmNodeAgentArgs, []string{
			"Node agents (--mode=node), each probing 50 Services per interval", "through svcprobe-node-hairpin (internalTrafficPolicy: Local)",
			"DaemonSet svcprobe-node\n", "http://<agent Pod IP>:9817/metrics", "headless Service svcprobe-node;",
			"-l app.kubernetes.io/instance=svcprobe,app.kubernetes.io/name=svcprobe-node\n",
			"a job of their own whose name starts with svcprobe (e.g. svcprobe-node), with honor_labels: true"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out, err := helm(t, append([]string{"template", helmRelease, dir, "--namespace", helmNamespace, "--show-only", "templates/notescheck.yaml"}, tc.args...)...)
			if err != nil {
				t.Fatal(err)
			}
			var n struct {
				Notes string `json:"notes"`
			}
			if err := yaml.UnmarshalStrict(out, &n); err != nil {
				t.Fatalf("%v\n%s", err, out)
			}
			for _, w := range tc.want {
				if !strings.Contains(n.Notes, w) {
					t.Errorf("NOTES.txt lacks %q:\n%s", w, n.Notes)
				}
			}
			if agents := slices.Contains(tc.args, "nodeAgent.enabled=true") || len(tc.args) == 2 && tc.args[1] == helmAllOn; agents != strings.Contains(n.Notes, "Node agents") {
				t.Errorf("NOTES.txt speaks of node agents: %v, want %v:\n%s", !agents, agents, n.Notes)
			}
		})
	}
}

// --- the node agents (nodeAgent.*) against deploy/node-agent and deploy/windows ---------------------

// helmInstance is the label the chart adds to every selector (deploy/node-agent's have no release).
const helmInstance = "app.kubernetes.io/instance"

var (
	helmNodeAgentArgs = []string{"--set", "nodeAgent.enabled=true"}
	// deploy/windows's ConfigMap has kubeadm's kube-dns ClusterIP.
	helmWindowsArgs = []string{"--set", "nodeAgent.enabled=true", "--set", "nodeAgent.windows.enabled=true",
		"--set", "nodeAgent.windows.nameserver=10.96.0.10"}
)

// withInstance is an overlay's selector or labels as the chart renders them: plus the release.
func withInstance(m map[string]string) map[string]string {
	out := maps.Clone(m)
	if out == nil {
		out = map[string]string{}
	}
	out[helmInstance] = helmRelease
	return out
}

// nodeAgentDiffs lists how the chart's node-agent objects differ from an overlay's: the same
// DaemonSets (args set-wise without the exporter's defaults, env, securityContexts, selectors and
// labels plus the release's instance label, scheduling, probes, resources, volumes), the same
// agents' Services (selectors, ports, internalTrafficPolicy, clusterIP, annotations) and the same
// ConfigMaps. Objects deploy/base also has are TestHelmDefaultsMatchBase's.
func nodeAgentDiffs(chart, overlay map[string]kruntime.Object, defaults map[string]string) []string {
	var out []string
	bad := func(key, format string, args ...any) { out = append(out, key+": "+fmt.Sprintf(format, args...)) }
	for _, key := range sortedKeys(overlay) {
		switch o := overlay[key].(type) {
		case *appsv1.DaemonSet:
			c, ok := chart[key].(*appsv1.DaemonSet)
			if !ok {
				bad(key, "not rendered")
				continue
			}
			for _, d := range daemonSetDiffs(c, o, defaults) {
				bad(key, "%s", d)
			}
		case *corev1.Service:
			if !strings.HasPrefix(o.Name, "svcprobe-node") {
				continue // deploy/base's
			}
			c, ok := chart[key].(*corev1.Service)
			if !ok {
				bad(key, "not rendered")
				continue
			}
			if !reflect.DeepEqual(c.Spec.Selector, withInstance(o.Spec.Selector)) {
				bad(key, "selector %v, want the overlay's %v plus %s", c.Spec.Selector, o.Spec.Selector, helmInstance)
			}
			if !reflect.DeepEqual(c.Spec.Ports, o.Spec.Ports) {
				bad(key, "ports %+v, overlay %+v", c.Spec.Ports, o.Spec.Ports)
			}
			if !reflect.DeepEqual(c.Spec.InternalTrafficPolicy, o.Spec.InternalTrafficPolicy) {
				bad(key, "internalTrafficPolicy %v, overlay %v", ptrString(c.Spec.InternalTrafficPolicy), ptrString(o.Spec.InternalTrafficPolicy))
			}
			if c.Spec.ClusterIP != o.Spec.ClusterIP {
				bad(key, "clusterIP %q, overlay %q", c.Spec.ClusterIP, o.Spec.ClusterIP)
			}
			if ct, ot := cmp.Or(c.Spec.Type, corev1.ServiceTypeClusterIP), cmp.Or(o.Spec.Type, corev1.ServiceTypeClusterIP); ct != ot {
				bad(key, "type %s, overlay %s", ct, ot)
			}
			if !reflect.DeepEqual(c.Annotations, o.Annotations) {
				bad(key, "annotations %v, overlay %v", c.Annotations, o.Annotations)
			}
			if !subset(o.Labels, c.Labels) {
				bad(key, "labels %v lack the overlay's %v", c.Labels, o.Labels)
			}
		case *corev1.ConfigMap:
			c, ok := chart[key].(*corev1.ConfigMap)
			if !ok {
				bad(key, "not rendered")
				continue
			}
			if !reflect.DeepEqual(c.Data, o.Data) || len(c.BinaryData)+len(o.BinaryData) != 0 {
				bad(key, "data %q, overlay %q", c.Data, o.Data)
			}
		}
	}
	return out
}

func ptrString[T any](p *T) string {
	if p == nil {
		return "<nil>"
	}
	return fmt.Sprint(*p)
}

// daemonSetDiffs compares a chart DaemonSet with the overlay's field by field.
func daemonSetDiffs(c, o *appsv1.DaemonSet, defaults map[string]string) []string {
	var out []string
	diff := func(field string, chart, overlay any) {
		if !equality.Semantic.DeepEqual(chart, overlay) {
			out = append(out, fmt.Sprintf("%s differs:\n\tchart   %+v\n\toverlay %+v", field, chart, overlay))
		}
	}
	if o.Spec.Selector == nil || c.Spec.Selector == nil {
		return append(out, "no selector")
	}
	diff("selector", c.Spec.Selector.MatchLabels, withInstance(o.Spec.Selector.MatchLabels))
	diff("selector matchExpressions", c.Spec.Selector.MatchExpressions, o.Spec.Selector.MatchExpressions)
	diff("template labels", c.Spec.Template.Labels, withInstance(o.Spec.Template.Labels))
	diff("template annotations", c.Spec.Template.Annotations, o.Spec.Template.Annotations)
	diff("updateStrategy", c.Spec.UpdateStrategy, o.Spec.UpdateStrategy)
	if !subset(o.Labels, c.Labels) {
		out = append(out, fmt.Sprintf("labels %v lack the overlay's %v", c.Labels, o.Labels))
	}
	ps, ops := c.Spec.Template.Spec, o.Spec.Template.Spec
	diff("serviceAccountName", ps.ServiceAccountName, ops.ServiceAccountName)
	diff("automountServiceAccountToken", ps.AutomountServiceAccountToken, ops.AutomountServiceAccountToken)
	diff("os", ps.OS, ops.OS)
	diff("nodeSelector", ps.NodeSelector, ops.NodeSelector)
	diff("tolerations", ps.Tolerations, ops.Tolerations)
	diff("pod securityContext", ps.SecurityContext, ops.SecurityContext)
	diff("hostNetwork/hostPID", [2]bool{ps.HostNetwork, ps.HostPID}, [2]bool{ops.HostNetwork, ops.HostPID})
	diff("priorityClassName", ps.PriorityClassName, ops.PriorityClassName)
	diff("affinity", ps.Affinity, ops.Affinity)
	diff("volumes", ps.Volumes, ops.Volumes)
	if len(ps.Containers) != 1 || len(ops.Containers) != 1 || len(ps.InitContainers)+len(ops.InitContainers) != 0 {
		return append(out, fmt.Sprintf("containers: chart %d, overlay %d, want 1 and no init containers", len(ps.Containers), len(ops.Containers)))
	}
	cc, oc := ps.Containers[0], ops.Containers[0]
	diff("container name", cc.Name, oc.Name)
	diff("image", cc.Image, oc.Image)
	diff("imagePullPolicy", cc.ImagePullPolicy, oc.ImagePullPolicy)
	diff("args (without the exporter's defaults)", withoutDefaults(cc.Args, defaults), withoutDefaults(oc.Args, defaults))
	diff("command", cc.Command, oc.Command)
	diff("env", cc.Env, oc.Env)
	diff("ports", cc.Ports, oc.Ports)
	diff("readinessProbe", cc.ReadinessProbe, oc.ReadinessProbe)
	diff("livenessProbe", cc.LivenessProbe, oc.LivenessProbe)
	diff("resources", cc.Resources, oc.Resources)
	diff("container securityContext", cc.SecurityContext, oc.SecurityContext)
	diff("volumeMounts", cc.VolumeMounts, oc.VolumeMounts)
	return out
}

// renderNodeAgent renders the chart with namespace.create (deploy/node-agent has the Namespace)
// and the given values.
func renderNodeAgent(t *testing.T, args []string) rendered {
	t.Helper()
	out, err := helmTemplate(t, append([]string{"--set", "namespace.create=true"}, args...)...)
	if err != nil {
		t.Fatal(err)
	}
	return decodeRendered(t, out)
}

// TestHelmNodeAgentMatchesOverlays: nodeAgent.enabled renders exactly deploy/node-agent's objects,
// nodeAgent.windows.enabled exactly deploy/windows's, the agents pass the overlays' own checks
// (agentProblems) and their args pass the exporter's flag parsing.
func TestHelmNodeAgentMatchesOverlays(t *testing.T) {
	defaults := exporterDefaults(t)
	for _, tc := range []struct {
		overlay string
		args    []string
		agents  []string
	}{
		{"node-agent", helmNodeAgentArgs, []string{"svcprobe-node"}},
		{"windows", helmWindowsArgs, []string{"svcprobe-node", "svcprobe-node-windows"}},
	} {
		t.Run(tc.overlay, func(t *testing.T) {
			chart := renderNodeAgent(t, tc.args)
			overlay := decodeOverlay(t, tc.overlay)
			if got, want := sortedKeys(chart.objs), sortedKeys(overlay); !slices.Equal(got, want) {
				t.Errorf("chart renders %v, deploy/%s has %v", got, tc.overlay, want)
			}
			for _, d := range nodeAgentDiffs(chart.objs, overlay, defaults) {
				t.Errorf("chart vs deploy/%s: %s", tc.overlay, d)
			}
			for _, name := range tc.agents {
				checkAgent(t, chart.objs, get[*appsv1.DaemonSet](t, chart.objs, "DaemonSet", name))
			}
			if len(chart.monitors) != 0 {
				t.Errorf("prometheus-operator objects without serviceMonitor.enabled: %v", slices.Sorted(maps.Keys(chart.monitors)))
			}
		})
	}
}

// TestHelmNodeAgentHostNetwork: nodeAgent.hostNetwork puts the Linux agents (only them) on the
// node's network with cluster DNS kept (ClusterFirstWithHostNet), so the nodeport stage dials from
// the node itself; off (the default) nothing of it is rendered.
func TestHelmNodeAgentHostNetwork(t *testing.T) {
	// The restricted namespace the chart renders by default cannot run them: a clear error.
	if _, err := helmTemplate(t, append(slices.Clone(helmNodeAgentArgs), "--set", "namespace.create=true", "--set", "nodeAgent.hostNetwork=true")...); err == nil ||
		!strings.Contains(err.Error(), "nodeAgent.hostNetwork needs the privileged Pod Security level") {
		t.Errorf("hostNetwork in a restricted namespace: err %v, want the Pod Security error", err)
	}
	for _, on := range []bool{false, true} {
		args := append(slices.Clone(helmWindowsArgs), "--set", fmt.Sprintf("nodeAgent.hostNetwork=%v", on))
		if on {
			args = append(args, "--set", `namespace.labels.pod-security\.kubernetes\.io/enforce=privileged`)
		}
		objs := renderNodeAgent(t, args).objs
		linux := get[*appsv1.DaemonSet](t, objs, "DaemonSet", "svcprobe-node").Spec.Template.Spec
		win := get[*appsv1.DaemonSet](t, objs, "DaemonSet", "svcprobe-node-windows").Spec.Template.Spec
		wantDNS := corev1.DNSPolicy("")
		if on {
			wantDNS = corev1.DNSClusterFirstWithHostNet
		}
		if linux.HostNetwork != on || linux.DNSPolicy != wantDNS {
			t.Errorf("hostNetwork=%v: Linux agents hostNetwork %v dnsPolicy %q, want %v %q", on, linux.HostNetwork, linux.DNSPolicy, on, wantDNS)
		}
		if win.HostNetwork || win.DNSPolicy != "" {
			t.Errorf("hostNetwork=%v: Windows agents hostNetwork %v dnsPolicy %q, want neither (HostProcess is not required)", on, win.HostNetwork, win.DNSPolicy)
		}
		ds := get[*appsv1.DaemonSet](t, objs, "DaemonSet", "svcprobe-node")
		if !on {
			checkAgent(t, objs, ds)
			continue
		}
		// On the host network the overlays' checks hold but for that one, on purpose.
		if got := agentProblems(objs, ds); !slices.Equal(got, []string{"svcprobe-node: host namespaces"}) {
			t.Errorf("hostNetwork=true: agent problems %q, want only the host network", got)
		}
		if err := runExporterArgs(t, agentContainer(t, ds)); err != nil {
			t.Errorf("hostNetwork=true: %v", err)
		}
	}
}

// TestHelmNodeAgentChecksCatchMistakes: each comparison above can fail. The chart's rendering,
// changed one field at a time, must be reported on that field.
func TestHelmNodeAgentChecksCatchMistakes(t *testing.T) {
	defaults := exporterDefaults(t)
	overlay := decodeOverlay(t, "windows")
	chart := renderNodeAgent(t, helmWindowsArgs).objs
	if d := nodeAgentDiffs(chart, overlay, defaults); len(d) != 0 {
		t.Fatalf("the chart differs from deploy/windows already: %v", d)
	}
	linux := func(f func(ps *corev1.PodSpec, c *corev1.Container, ds *appsv1.DaemonSet)) func(map[string]kruntime.Object) {
		return func(objs map[string]kruntime.Object) {
			ds := objs["DaemonSet/svcprobe-node"].(*appsv1.DaemonSet).DeepCopy()
			f(&ds.Spec.Template.Spec, &ds.Spec.Template.Spec.Containers[0], ds)
			objs["DaemonSet/svcprobe-node"] = ds
		}
	}
	windows := func(f func(ps *corev1.PodSpec, c *corev1.Container)) func(map[string]kruntime.Object) {
		return func(objs map[string]kruntime.Object) {
			ds := objs["DaemonSet/svcprobe-node-windows"].(*appsv1.DaemonSet).DeepCopy()
			f(&ds.Spec.Template.Spec, &ds.Spec.Template.Spec.Containers[0])
			objs["DaemonSet/svcprobe-node-windows"] = ds
		}
	}
	service := func(name string, f func(s *corev1.Service)) func(map[string]kruntime.Object) {
		return func(objs map[string]kruntime.Object) {
			s := objs["Service/"+name].(*corev1.Service).DeepCopy()
			f(s)
			objs["Service/"+name] = s
		}
	}
	setArg := func(c *corev1.Container, flag, arg string) {
		c.Args = slices.DeleteFunc(c.Args, func(a string) bool { return strings.HasPrefix(a, flag+"=") })
		if arg != "" {
			c.Args = append(c.Args, arg)
		}
	}
	for _, tc := range []struct {
		name, want string
		mutate     func(map[string]kruntime.Object)
	}{
		// The exporter's default budget instead of the agents' smaller one.
		{"central budget", "DaemonSet/svcprobe-node: args", linux(func(_ *corev1.PodSpec, c *corev1.Container, _ *appsv1.DaemonSet) {
			setArg(c, "--probe.concurrency", "")
		})},
		{"no max-series", "DaemonSet/svcprobe-node: args", linux(func(_ *corev1.PodSpec, c *corev1.Container, _ *appsv1.DaemonSet) {
			setArg(c, "--metrics.max-series-per-service", "--metrics.max-series-per-service=20")
		})},
		{"central mode", "DaemonSet/svcprobe-node: args", linux(func(_ *corev1.PodSpec, c *corev1.Container, _ *appsv1.DaemonSet) {
			setArg(c, "--mode", "")
		})},
		{"no HOST_IP", "DaemonSet/svcprobe-node: env", linux(func(_ *corev1.PodSpec, c *corev1.Container, _ *appsv1.DaemonSet) {
			c.Env = slices.DeleteFunc(c.Env, func(e corev1.EnvVar) bool { return e.Name == "HOST_IP" })
		})},
		{"pod securityContext", "DaemonSet/svcprobe-node: pod securityContext", linux(func(ps *corev1.PodSpec, _ *corev1.Container, _ *appsv1.DaemonSet) {
			ps.SecurityContext.SeccompProfile = nil
		})},
		{"container securityContext", "DaemonSet/svcprobe-node: container securityContext", linux(func(_ *corev1.PodSpec, c *corev1.Container, _ *appsv1.DaemonSet) {
			c.SecurityContext.ReadOnlyRootFilesystem = ptrTo(false)
		})},
		// The central exporter's name label: its Services would select the agents.
		{"central labels", "DaemonSet/svcprobe-node: template labels", linux(func(_ *corev1.PodSpec, _ *corev1.Container, ds *appsv1.DaemonSet) {
			ds.Spec.Template.Labels["app.kubernetes.io/name"] = "svcprobe"
		})},
		{"selector", "DaemonSet/svcprobe-node: selector", linux(func(_ *corev1.PodSpec, _ *corev1.Container, ds *appsv1.DaemonSet) {
			delete(ds.Spec.Selector.MatchLabels, "app.kubernetes.io/component")
		})},
		{"tolerations", "DaemonSet/svcprobe-node: tolerations", linux(func(ps *corev1.PodSpec, _ *corev1.Container, _ *appsv1.DaemonSet) {
			ps.Tolerations = nil
		})},
		{"resources", "DaemonSet/svcprobe-node: resources", linux(func(_ *corev1.PodSpec, c *corev1.Container, _ *appsv1.DaemonSet) {
			c.Resources.Requests[corev1.ResourceMemory] = resource.MustParse("128Mi")
		})},
		{"windows resolv mount", "DaemonSet/svcprobe-node-windows: volumeMounts", windows(func(_ *corev1.PodSpec, c *corev1.Container) {
			c.VolumeMounts[0].MountPath = `C:\etc\resolv`
		})},
		{"windows os", "DaemonSet/svcprobe-node-windows: os", windows(func(ps *corev1.PodSpec, _ *corev1.Container) {
			ps.OS = nil
		})},
		{"windows resolv-conf", "DaemonSet/svcprobe-node-windows: args", windows(func(_ *corev1.PodSpec, c *corev1.Container) {
			setArg(c, "--dns.resolv-conf", "")
		})},
		{"hairpin Cluster policy", "Service/svcprobe-node-hairpin: internalTrafficPolicy", service("svcprobe-node-hairpin", func(s *corev1.Service) {
			s.Spec.InternalTrafficPolicy = ptrTo(corev1.ServiceInternalTrafficPolicyCluster)
		})},
		{"hairpin selector", "Service/svcprobe-node-hairpin: selector", service("svcprobe-node-hairpin", func(s *corev1.Service) {
			s.Spec.Selector["app.kubernetes.io/component"] = "node-agent-linux"
		})},
		{"hairpin ports", "Service/svcprobe-node-hairpin: ports", service("svcprobe-node-hairpin", func(s *corev1.Service) {
			s.Spec.Ports[0].Port = 80
		})},
		{"metrics Service not headless", "Service/svcprobe-node: clusterIP", service("svcprobe-node", func(s *corev1.Service) {
			s.Spec.ClusterIP = ""
		})},
		{"nameserver", "ConfigMap/svcprobe-node-windows-resolv: data", func(objs map[string]kruntime.Object) {
			cm := objs["ConfigMap/svcprobe-node-windows-resolv"].(*corev1.ConfigMap).DeepCopy()
			cm.Data["resolv.conf"] = strings.Replace(cm.Data["resolv.conf"], "10.96.0.10", "10.96.0.11", 1)
			objs["ConfigMap/svcprobe-node-windows-resolv"] = cm
		}},
		{"missing Service", "Service/svcprobe-node-hairpin: not rendered", func(objs map[string]kruntime.Object) {
			delete(objs, "Service/svcprobe-node-hairpin")
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			objs := maps.Clone(chart)
			tc.mutate(objs)
			got := nodeAgentDiffs(objs, overlay, defaults)
			if !slices.ContainsFunc(got, func(d string) bool { return strings.HasPrefix(d, tc.want) }) {
				t.Errorf("%s not caught (want %q); found %q", tc.name, tc.want, got)
			}
		})
	}
}

func ptrTo[T any](v T) *T { return &v }

// TestHelmNodeAgentOffByDefault: the default rendering (and serviceMonitor.enabled alone) has no
// node agent: no DaemonSet, ConfigMap, agents' Service or ServiceMonitor.
func TestHelmNodeAgentOffByDefault(t *testing.T) {
	for _, args := range [][]string{nil, {"--set", "serviceMonitor.enabled=true", "--set", "shards=2"}} {
		out, err := helmTemplate(t, args...)
		if err != nil {
			t.Fatal(err)
		}
		r := decodeRendered(t, out)
		for key, o := range r.objs {
			switch o.(type) {
			case *appsv1.DaemonSet, *corev1.ConfigMap:
				t.Errorf("%v renders %s", args, key)
			}
			if strings.Contains(key, "-node") {
				t.Errorf("%v renders %s", args, key)
			}
		}
		for key := range r.monitors {
			if strings.Contains(key, "-node") {
				t.Errorf("%v renders %s", args, key)
			}
		}
	}
}

// TestHelmNodeAgentAllOn: every nodeAgent value (helm/ci/all-on-values.yaml) shows up where it
// should, the agents' args pass the exporter's flag parsing, the central and the agents' Services
// do not select each other's Pods, and the agents' ServiceMonitor scrapes the headless Service in a
// job whose name starts with svcprobe, with honorLabels: true.
func TestHelmNodeAgentAllOn(t *testing.T) {
	out, err := helmTemplate(t, "-f", helmAllOn)
	if err != nil {
		t.Fatal(err)
	}
	r := decodeRendered(t, out)
	const name = "svcprobe-all-on-node"
	ds := get[*appsv1.DaemonSet](t, r.objs, "DaemonSet", name)
	wds := get[*appsv1.DaemonSet](t, r.objs, "DaemonSet", name+"-windows")
	cm := get[*corev1.ConfigMap](t, r.objs, "ConfigMap", name+"-windows-resolv")
	hairpin := get[*corev1.Service](t, r.objs, "Service", name+"-hairpin")
	metricsSvc := get[*corev1.Service](t, r.objs, "Service", name)
	central := get[*appsv1.StatefulSet](t, r.objs, "StatefulSet", "svcprobe-all-on")

	shared := []string{"--mode=node", "--web.listen-address=:9443", "--probe.interval=20s", "--probe.timeout=2500ms",
		"--node.sample-size=80", "--node.pods=all", "--probe.concurrency=8", "--probe.max-new-conns-per-second=50.5", "--dns.max-qps=25",
		"--metrics.max-series-per-service=30", "--hairpin.service=svcprobe/" + name + "-hairpin",
		"--namespaces=default,kube-system,shop", "--namespaces-exclude=kube-public", "--selector=svcprobe.io/probe!=off,tier in (frontend,backend)",
		"--cluster.cidr=10.0.0.0/8", "--cluster.cidr=fd00:10::/56", "--probe.allow-external=192.0.2.0/24",
		"--dns.cluster-domain=cluster.example", "--dns.service=kube-system/coredns", "--log.level=debug", "--log.format=json",
		"--metrics.per-endpoint-limit=5", "--probe.vip-connections=2", "--verdict.window=12", "--dns.node-local=10.255.20.10"}
	for _, tc := range []struct {
		ds   *appsv1.DaemonSet
		args []string
	}{
		{ds, append(slices.Clone(shared), "--web.config.file=/etc/svcprobe/web/web-config.yml")},
		{wds, append(slices.Clone(shared), `--web.config.file=C:\etc\svcprobe-web\web-config.yml`, `--dns.resolv-conf=C:\etc\svcprobe\resolv.conf`)},
	} {
		c := tc.ds.Spec.Template.Spec.Containers[0]
		if got, want := slices.Sorted(slices.Values(c.Args)), slices.Sorted(slices.Values(tc.args)); !slices.Equal(got, want) {
			t.Errorf("%s args:\n\tgot  %v\n\twant %v", tc.ds.Name, got, want)
		}
		for _, f := range []string{"--expect", "--shard", "--total-shards", "--metrics.per-endpoint", "--dns.resolv-conf=/etc/resolv.conf"} {
			if slices.ContainsFunc(c.Args, func(a string) bool { return a == f || strings.HasPrefix(a, f+"=") }) {
				t.Errorf("%s: the central exporter's %s leaked into the agent's args %v", tc.ds.Name, f, c.Args)
			}
		}
		if err := runExporterArgs(t, agentContainer(t, tc.ds)); err != nil {
			t.Errorf("%s: %v", tc.ds.Name, err)
		}
		// Each flag's file is a mounted volume.
		for _, a := range c.Args {
			for _, flag := range []string{"--web.config.file=", "--dns.resolv-conf="} {
				if p, ok := strings.CutPrefix(a, flag); ok && !mountedFile(tc.ds.Spec.Template.Spec, p) {
					t.Errorf("%s: %s%s is not in a mounted volume (%+v)", tc.ds.Name, flag, p, c.VolumeMounts)
				}
			}
		}
		ps := tc.ds.Spec.Template.Spec
		if ps.PriorityClassName != "system-node-critical" || tc.ds.Spec.Template.Annotations["example.com/agent"] != "true" ||
			tc.ds.Spec.Template.Labels["team"] != "platform" || tc.ds.Spec.UpdateStrategy.RollingUpdate.MaxUnavailable.String() != "2" ||
			len(ps.ImagePullSecrets) != 1 || c.ImagePullPolicy != corev1.PullIfNotPresent {
			t.Errorf("%s: pod options not rendered: %+v", tc.ds.Name, tc.ds.Spec)
		}
		if c.ReadinessProbe.HTTPGet.Scheme != corev1.URISchemeHTTPS || c.LivenessProbe.HTTPGet.Scheme != corev1.URISchemeHTTPS {
			t.Errorf("%s: probes do not use HTTPS with web.scheme HTTPS", tc.ds.Name)
		}
		// Selected by the agents' Services, not by the central exporter's; and the reverse.
		pod := labels.Set(tc.ds.Spec.Template.Labels)
		if !labels.SelectorFromSet(hairpin.Spec.Selector).Matches(pod) || !labels.SelectorFromSet(metricsSvc.Spec.Selector).Matches(pod) {
			t.Errorf("%s's Pods %v not selected by the agents' Services", tc.ds.Name, pod)
		}
		for key, o := range r.objs {
			if s, ok := o.(*corev1.Service); ok && !strings.HasPrefix(s.Name, name) && labels.SelectorFromSet(s.Spec.Selector).Matches(pod) {
				t.Errorf("%s selects %s's Pods: the central exporter's hairpin would see an agent answer", key, tc.ds.Name)
			}
		}
	}
	c, wc := ds.Spec.Template.Spec.Containers[0], wds.Spec.Template.Spec.Containers[0]
	if c.Image != "registry.example.com/svcprobe/svcprobe:v0.1.0" || wc.Image != "registry.example.com/svcprobe/svcprobe-windows:v0.1.0-windows-ltsc2019" {
		t.Errorf("images %s, %s", c.Image, wc.Image)
	}
	if c.Resources.Limits.Cpu().String() != "500m" || wc.Resources.Limits.Memory().String() != "384Mi" {
		t.Errorf("resources %+v, %+v", c.Resources, wc.Resources)
	}
	if ps := ds.Spec.Template.Spec; ps.NodeSelector["example.com/pool"] != "general" || len(ps.Tolerations) != 1 || ps.Tolerations[0].Operator != corev1.TolerationOpExists || ps.Tolerations[0].Key != "" || ps.Tolerations[0].Effect != "" {
		t.Errorf("Linux agent scheduling: nodeSelector %v tolerations %+v", ps.NodeSelector, ps.Tolerations)
	}
	if ps := wds.Spec.Template.Spec; ps.NodeSelector["node.kubernetes.io/windows-build"] != "10.0.17763" || len(ps.Tolerations) != 2 ||
		ps.OS == nil || ps.OS.Name != corev1.Windows || wc.SecurityContext != nil || ps.SecurityContext.SeccompProfile != nil {
		t.Errorf("Windows agent: nodeSelector %v tolerations %+v os %v securityContexts %+v %+v", ps.NodeSelector, ps.Tolerations, ps.OS, ps.SecurityContext, wc.SecurityContext)
	}
	if want := "nameserver 10.96.0.10\nsearch svcprobe.svc.cluster.example svc.cluster.example cluster.example corp.example\noptions ndots:5 timeout:2\n"; cm.Data["resolv.conf"] != want {
		t.Errorf("resolv.conf %q, want %q", cm.Data["resolv.conf"], want)
	}
	podLabels := labels.Set(central.Spec.Template.Labels)
	if labels.SelectorFromSet(hairpin.Spec.Selector).Matches(podLabels) || labels.SelectorFromSet(metricsSvc.Spec.Selector).Matches(podLabels) {
		t.Errorf("the agents' Services select the central exporter's Pods %v", podLabels)
	}

	// The agents' ServiceMonitor: the headless Service's port metrics, job svcprobe*, honorLabels.
	sm := r.monitors["ServiceMonitor/"+name]
	if sm == nil {
		t.Fatalf("no ServiceMonitor %s (have %v)", name, slices.Sorted(maps.Keys(r.monitors)))
	}
	sel, _, _ := unstructured.NestedStringMap(sm.Object, "spec", "selector", "matchLabels")
	if !labels.SelectorFromSet(sel).Matches(labels.Set(metricsSvc.Labels)) || sm.GetNamespace() != "monitoring" {
		t.Errorf("ServiceMonitor %s/%s selector %v does not select the metrics Service %v", sm.GetNamespace(), name, sel, metricsSvc.Labels)
	}
	centralSel, _, _ := unstructured.NestedStringMap(r.monitors["ServiceMonitor/svcprobe-all-on"].Object, "spec", "selector", "matchLabels")
	if labels.SelectorFromSet(centralSel).Matches(labels.Set(metricsSvc.Labels)) {
		t.Errorf("the central ServiceMonitor %v also scrapes the agents' Service %v: their series would be in the central job", centralSel, metricsSvc.Labels)
	}
	if len(metricsSvc.Spec.Ports) != 1 || metricsSvc.Spec.Ports[0].Name != "metrics" || metricsSvc.Spec.ClusterIP != corev1.ClusterIPNone {
		t.Errorf("metrics Service %+v", metricsSvc.Spec)
	}
	eps, _, _ := unstructured.NestedSlice(sm.Object, "spec", "endpoints")
	if len(eps) != 1 {
		t.Fatalf("ServiceMonitor endpoints %v", eps)
	}
	ep := eps[0].(map[string]any)
	if ep["port"] != "metrics" || ep["honorLabels"] != true || ep["scheme"] != "https" {
		t.Errorf("ServiceMonitor endpoint %v: want port metrics, honorLabels true, scheme https", ep)
	}
	if job := monitorJob(ep); !strings.HasPrefix(job, "svcprobe") {
		t.Errorf("agents' job %q: must start with svcprobe (deploy/rules' job matchers)", job)
	}
}

// mountedFile reports whether path (a Linux or Windows one) lies in a volume mounted in the Pod's
// only container.
func mountedFile(ps corev1.PodSpec, path string) bool {
	for _, m := range ps.Containers[0].VolumeMounts {
		if strings.HasPrefix(path, m.MountPath+"/") || strings.HasPrefix(path, m.MountPath+`\`) {
			for _, v := range ps.Volumes {
				if v.Name == m.Name {
					return true
				}
			}
		}
	}
	return false
}

// monitorJob is the job a ServiceMonitor endpoint's relabelings give its targets ("" if none
// sets it: then prometheus-operator uses the Service's name).
func monitorJob(ep map[string]any) string {
	var job string
	rs, _ := ep["relabelings"].([]any)
	for _, r := range rs {
		m, _ := r.(map[string]any)
		if m["targetLabel"] == "job" && cmp.Or(m["action"], any("replace")) == "replace" && m["sourceLabels"] == nil {
			job, _ = m["replacement"].(string)
		}
	}
	return job
}

// TestHelmNodeAgentNames: with any release name the agents' objects have valid names and labels,
// the job still starts with svcprobe, and --hairpin.service names the rendered hairpin Service.
func TestHelmNodeAgentNames(t *testing.T) {
	for _, release := range []string{"mon", strings.Repeat("long-release-", 4) + "x"} { // helm allows 53 characters
		out, err := helm(t, append([]string{"template", release, helmChart, "--namespace", "observability",
			"--set", "serviceMonitor.enabled=true"}, helmWindowsArgs...)...)
		if err != nil {
			t.Fatal(err)
		}
		r := decodeRendered(t, out)
		var agents int
		for key, o := range r.objs {
			m, err := metaOfObject(o)
			if err != nil {
				t.Fatal(err)
			}
			// A Service's name is a DNS label; the others' are DNS subdomains.
			if _, svc := o.(*corev1.Service); svc && len(m.GetName()) > 63 || len(m.GetName()) > 253 {
				t.Errorf("%s: %s is too long (%d characters)", release, key, len(m.GetName()))
			}
			for k, v := range m.GetLabels() {
				if len(v) > 63 {
					t.Errorf("%s: %s label %s=%s is longer than 63 characters", release, key, k, v)
				}
			}
			ds, ok := o.(*appsv1.DaemonSet)
			if !ok {
				continue
			}
			agents++
			for _, a := range ds.Spec.Template.Spec.Containers[0].Args {
				if v, ok := strings.CutPrefix(a, "--hairpin.service="); ok {
					ns, svc, _ := strings.Cut(v, "/")
					if s, ok := r.objs["Service/"+svc].(*corev1.Service); ns != "observability" || !ok ||
						!labels.SelectorFromSet(s.Spec.Selector).Matches(labels.Set(ds.Spec.Template.Labels)) {
						t.Errorf("%s: %s --hairpin.service=%s is not a rendered Service selecting it", release, ds.Name, v)
					}
				}
			}
			if err := runExporterArgs(t, agentContainer(t, ds)); err != nil {
				t.Errorf("%s: %v", ds.Name, err)
			}
		}
		if agents != 2 {
			t.Errorf("%s: %d DaemonSets, want 2", release, agents)
		}
		var job string
		for key, sm := range r.monitors {
			eps, _, _ := unstructured.NestedSlice(sm.Object, "spec", "endpoints")
			if strings.HasSuffix(key, "-node") && len(eps) == 1 {
				job = monitorJob(eps[0].(map[string]any))
			}
		}
		if !strings.HasPrefix(job, "svcprobe") {
			t.Errorf("%s: agents' job %q does not start with svcprobe", release, job)
		}
	}
}

// TestHelmNodeAgentHairpinOff: hairpin.enabled=false turns the agents' hairpin off too (no Service,
// no --hairpin.service), and the agents still start.
func TestHelmNodeAgentHairpinOff(t *testing.T) {
	r := renderNodeAgent(t, append(slices.Clone(helmWindowsArgs), "--set", "hairpin.enabled=false"))
	for key := range r.objs {
		if strings.Contains(key, "hairpin") {
			t.Errorf("hairpin.enabled=false renders %s", key)
		}
	}
	for _, name := range []string{"svcprobe-node", "svcprobe-node-windows"} {
		ds := get[*appsv1.DaemonSet](t, r.objs, "DaemonSet", name)
		c := ds.Spec.Template.Spec.Containers[0]
		if slices.ContainsFunc(c.Args, func(a string) bool { return strings.HasPrefix(a, "--hairpin.service=") }) {
			t.Errorf("%s: --hairpin.service without its Service: %v", name, c.Args)
		}
		if err := runExporterArgs(t, agentContainer(t, ds)); err != nil {
			t.Errorf("%s: %v", name, err)
		}
	}
}

// TestHelmNodeAgentTemplateChecks: what the schema refuses, templates/validate.yaml refuses too
// (helm install --skip-schema-validation).
func TestHelmNodeAgentTemplateChecks(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--set", "nodeAgent.enabled=true", "--set", "nodeAgent.windows.enabled=true"}, "nodeAgent.windows.nameserver: set it"},
		{[]string{"--set", "nodeAgent.windows.enabled=true", "--set", "nodeAgent.windows.nameserver=10.96.0.10"}, "nodeAgent.windows.enabled needs nodeAgent.enabled"},
	} {
		out, err := helmTemplate(t, append([]string{"--skip-schema-validation"}, tc.args...)...)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%v: want an error with %q, got %v\n%s", tc.args, tc.want, err, out)
		}
	}
}

// discovery.workloads=false: the exporter is told not to watch the workloads (a flag it takes),
// and the ClusterRole no longer grants them; the default grants them read-only.
func TestHelmWorkloadsOff(t *testing.T) {
	grants := func(r rendered, name string) []string {
		role := get[*rbacv1.ClusterRole](t, r.objs, "ClusterRole", name)
		var out []string
		for _, rule := range role.Rules {
			for _, g := range rule.APIGroups {
				for _, res := range rule.Resources {
					out = append(out, g+"/"+res)
				}
			}
		}
		return out
	}
	out, err := helmTemplate(t)
	if err != nil {
		t.Fatal(err)
	}
	def := decodeRendered(t, out)
	if g := grants(def, "svcprobe"); !slices.Contains(g, "apps/deployments") || !slices.Contains(g, "/replicationcontrollers") {
		t.Errorf("default ClusterRole grants %v, want the workloads", g)
	}
	out, err = helmTemplate(t, "--set", "discovery.workloads=false")
	if err != nil {
		t.Fatal(err)
	}
	off := decodeRendered(t, out)
	if g := grants(off, "svcprobe"); slices.ContainsFunc(g, func(s string) bool {
		return strings.HasPrefix(s, "apps/") || s == "/replicationcontrollers"
	}) {
		t.Errorf("discovery.workloads=false still grants %v", g)
	}
	c := get[*appsv1.Deployment](t, off.objs, "Deployment", "svcprobe").Spec.Template.Spec.Containers[0]
	if !slices.Contains(c.Args, "--no-discovery.workloads") {
		t.Errorf("args %v lack --no-discovery.workloads", c.Args)
	}
	if err := runExporterArgs(t, c); err != nil {
		t.Error(err)
	}
	// The default evaluates NetworkPolicies: read-only rules for policies and namespaces, no flag
	// (the exporter's default). discovery.networkPolicies=false: the flag off, the rules gone.
	if g := grants(def, "svcprobe"); !slices.Contains(g, "networking.k8s.io/networkpolicies") || !slices.Contains(g, "/namespaces") {
		t.Errorf("the default grants %v, want networkpolicies and namespaces", g)
	}
	out, err = helmTemplate(t, "--set", "discovery.networkPolicies=false")
	if err != nil {
		t.Fatal(err)
	}
	np := decodeRendered(t, out)
	if g := grants(np, "svcprobe"); slices.Contains(g, "networking.k8s.io/networkpolicies") || slices.Contains(g, "/namespaces") {
		t.Errorf("discovery.networkPolicies=false still grants %v", g)
	}
	c = get[*appsv1.Deployment](t, np.objs, "Deployment", "svcprobe").Spec.Template.Spec.Containers[0]
	if !slices.Contains(c.Args, "--no-discovery.network-policies") {
		t.Errorf("args %v lack --no-discovery.network-policies", c.Args)
	}
	if err := runExporterArgs(t, c); err != nil {
		t.Error(err)
	}
}

// networkPolicy.create renders the exporter's own NetworkPolicy as deploy/network-policy has it
// (the spec equal, the selector the chart's Pods' labels); off by default.
func TestHelmNetworkPolicy(t *testing.T) {
	out, err := helmTemplate(t)
	if err != nil {
		t.Fatal(err)
	}
	for k := range decodeRendered(t, out).objs {
		if strings.HasPrefix(k, "NetworkPolicy/") {
			t.Errorf("default renders %s", k)
		}
	}
	out, err = helmTemplate(t, "--set", "networkPolicy.create=true")
	if err != nil {
		t.Fatal(err)
	}
	r := decodeRendered(t, out)
	got := get[*networkingv1.NetworkPolicy](t, r.objs, "NetworkPolicy", "svcprobe")
	want := getObj[*networkingv1.NetworkPolicy](t, decodeOverlay(t, "network-policy"), "NetworkPolicy/svcprobe")
	// The same rules; the selector is the chart's (its Pods also carry the release's instance label).
	g, w := got.Spec, want.Spec
	g.PodSelector, w.PodSelector = metav1.LabelSelector{}, metav1.LabelSelector{}
	if !reflect.DeepEqual(g, w) {
		t.Errorf("chart's NetworkPolicy spec %+v, deploy/network-policy's %+v", got.Spec, want.Spec)
	}
	pod := get[*appsv1.Deployment](t, r.objs, "Deployment", "svcprobe").Spec.Template.Labels
	sel, err := metav1.LabelSelectorAsSelector(&got.Spec.PodSelector)
	if err != nil || !sel.Matches(labels.Set(pod)) {
		t.Errorf("podSelector %v does not select the chart's Pods %v (%v)", got.Spec.PodSelector, pod, err)
	}
}

// TestHelmJobSelection: the central ServiceMonitor names its job serviceMonitor.jobName (not the
// Service's <release>-svcprobe), and the rules' job matcher is prometheusRule.jobSelector, for any
// release name; bad-job-selector*.yaml show a mismatch refused.
func TestHelmJobSelection(t *testing.T) {
	for _, tc := range []struct {
		release string
		args    []string
		job     string
		matcher string
	}{
		{"prod-probes", nil, "svcprobe", `job=~"svcprobe.*"`},
		{"x", []string{"--set", "serviceMonitor.jobName=platform-probe", "--set", "prometheusRule.jobSelector=platform-probe|svcprobe.*"},
			"platform-probe", `job=~"platform-probe|svcprobe.*"`},
	} {
		out, err := helmTemplateRelease(t, tc.release, append([]string{"--set", "serviceMonitor.enabled=true", "--set", "prometheusRule.enabled=true"}, tc.args...)...)
		if err != nil {
			t.Fatal(err)
		}
		r := decodeRendered(t, out)
		var sm, pr *unstructured.Unstructured
		for k, u := range r.monitors {
			switch {
			case strings.HasPrefix(k, "ServiceMonitor/") && !strings.HasSuffix(k, "-node"):
				sm = u
			case strings.HasPrefix(k, "PrometheusRule/"):
				pr = u
			}
		}
		if sm == nil || pr == nil {
			t.Fatalf("%s: no ServiceMonitor or PrometheusRule in %v", tc.release, slices.Sorted(maps.Keys(r.monitors)))
		}
		eps, _, _ := unstructured.NestedSlice(sm.Object, "spec", "endpoints")
		rl, _ := eps[0].(map[string]any)["relabelings"].([]any)
		if len(rl) == 0 || rl[0].(map[string]any)["targetLabel"] != "job" || rl[0].(map[string]any)["replacement"] != tc.job {
			t.Errorf("%s: ServiceMonitor relabelings %v, want job replaced by %s", tc.release, rl, tc.job)
		}
		groups, _, _ := unstructured.NestedSlice(pr.Object, "spec", "groups")
		text := fmt.Sprint(groups)
		if strings.Count(text, tc.matcher) != 2 || strings.Count(text, "job=~") != 2 {
			t.Errorf("%s: the rules' job matchers are not %s (twice):\n%s", tc.release, tc.matcher, text)
		}
	}
}

// TestHelmImageGlobalPDBDashboards: image.digest pins the image, global.imageRegistry prefixes it
// and global.imagePullSecrets join imagePullSecrets (as a subchart); podDisruptionBudget selects
// the exporter's Pods; dashboards renders one ConfigMap per dashboard of dashboards/, labelled for
// Grafana's sidecar, with the file's exact content.
func TestHelmImageGlobalPDBDashboards(t *testing.T) {
	digest := "sha256:" + strings.Repeat("ab", 32)
	out, err := helmTemplate(t, append(slices.Clone(helmWindowsArgs),
		"--set", "image.digest="+digest, "--set", "global.imageRegistry=mirror.example.com",
		"--set", "image.repository=svcprobe/svcprobe", "--set", "global.imagePullSecrets[0]=regcred",
		"--set", "imagePullSecrets[0].name=own", "--set", "nodeAgent.windows.image.digest="+digest,
		"--set", "podDisruptionBudget.enabled=true", "--set", "dashboards.enabled=true")...)
	if err != nil {
		t.Fatal(err)
	}
	r := decodeRendered(t, out)
	d := get[*appsv1.Deployment](t, r.objs, "Deployment", "svcprobe")
	ps := d.Spec.Template.Spec
	if img := ps.Containers[0].Image; img != "mirror.example.com/svcprobe/svcprobe@"+digest {
		t.Errorf("central image %q", img)
	}
	if got := ps.ImagePullSecrets; len(got) != 2 || got[0].Name != "regcred" || got[1].Name != "own" {
		t.Errorf("imagePullSecrets %v, want regcred (global) then own", got)
	}
	for _, name := range []string{"svcprobe-node", "svcprobe-node-windows"} {
		ds := get[*appsv1.DaemonSet](t, r.objs, "DaemonSet", name)
		if img := ds.Spec.Template.Spec.Containers[0].Image; img != "mirror.example.com/svcprobe/svcprobe@"+digest {
			t.Errorf("%s image %q", name, img)
		}
		if len(ds.Spec.Template.Spec.ImagePullSecrets) != 2 {
			t.Errorf("%s imagePullSecrets %v", name, ds.Spec.Template.Spec.ImagePullSecrets)
		}
	}
	pdb := get[*policyv1.PodDisruptionBudget](t, r.objs, "PodDisruptionBudget", "svcprobe")
	if pdb.Namespace != helmNamespace {
		t.Errorf("PodDisruptionBudget namespace %q, want the release's %q", pdb.Namespace, helmNamespace)
	}
	if pdb.Spec.MaxUnavailable == nil || pdb.Spec.MaxUnavailable.IntValue() != 1 || !subset(pdb.Spec.Selector.MatchLabels, d.Spec.Template.Labels) ||
		subset(pdb.Spec.Selector.MatchLabels, get[*appsv1.DaemonSet](t, r.objs, "DaemonSet", "svcprobe-node").Spec.Template.Labels) {
		t.Errorf("PodDisruptionBudget %+v: want maxUnavailable 1 selecting the central exporter's Pods only", pdb.Spec)
	}
	files, _ := filepath.Glob("../dashboards/*.json")
	if len(files) == 0 {
		t.Fatal("no dashboards/*.json")
	}
	for _, f := range files {
		want, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		name := "svcprobe-dashboard-" + strings.TrimPrefix(strings.TrimSuffix(filepath.Base(f), ".json"), "svcprobe-")
		cm := get[*corev1.ConfigMap](t, r.objs, "ConfigMap", name)
		if cm.Labels["grafana_dashboard"] != "1" || strings.TrimSpace(cm.Data[filepath.Base(f)]) != strings.TrimSpace(string(want)) {
			t.Errorf("ConfigMap %s: labels %v, content equal to %s: %v", name, cm.Labels, f, strings.TrimSpace(cm.Data[filepath.Base(f)]) == strings.TrimSpace(string(want)))
		}
	}
	// The default renders none of them, and the plain image.
	defOut, err := helmTemplate(t)
	if err != nil {
		t.Fatal(err)
	}
	def := decodeRendered(t, defOut)
	if img := get[*appsv1.Deployment](t, def.objs, "Deployment", "svcprobe").Spec.Template.Spec.Containers[0].Image; img != "ghcr.io/svcprobe/svcprobe:latest" {
		t.Errorf("default image %q", img)
	}
	for k := range def.objs {
		if strings.HasPrefix(k, "PodDisruptionBudget/") || strings.Contains(k, "-dashboard-") {
			t.Errorf("rendered by default: %s", k)
		}
	}
}

// The chart's copy of the dashboards (files/dashboards) equals dashboards/. UPDATE_HELM_DASHBOARDS=1
// copies them.
func TestHelmDashboardsMatchDashboards(t *testing.T) {
	files, _ := filepath.Glob("../dashboards/*.json")
	copies, _ := filepath.Glob("helm/svcprobe/files/dashboards/*.json")
	if len(files) == 0 {
		t.Fatal("no dashboards/*.json")
	}
	if len(copies) != len(files) && os.Getenv("UPDATE_HELM_DASHBOARDS") == "" {
		t.Errorf("helm/svcprobe/files/dashboards has %d files, dashboards/ %d", len(copies), len(files))
	}
	for _, f := range files {
		want, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		dst := filepath.Join("helm/svcprobe/files/dashboards", filepath.Base(f))
		if os.Getenv("UPDATE_HELM_DASHBOARDS") != "" {
			if err := os.WriteFile(dst, want, 0o644); err != nil {
				t.Fatal(err)
			}
			continue
		}
		got, err := os.ReadFile(dst)
		if err != nil || !bytes.Equal(got, want) {
			t.Errorf("%s differs from %s (err %v); regenerate: UPDATE_HELM_DASHBOARDS=1 go test ./deploy -run TestHelmDashboardsMatchDashboards", dst, f, err)
		}
	}
}

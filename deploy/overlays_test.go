package deploy

// The node-agent and Windows overlays (deploy/node-agent, deploy/windows): every object decodes
// strictly, the overlay composes (resources only: base objects are not patched), the agents' args
// are flags the exporter accepts, the hairpin Service is internalTrafficPolicy: Local and selects
// only the agents, and the agents run as restricted as the central exporter.

import (
	"fmt"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/serializer"
	"k8s.io/client-go/kubernetes/scheme"
	"sigs.k8s.io/yaml"
)

// decodeOverlay composes a kustomize directory the way kustomize does for resource lists (a
// resource is a file or another kustomization's directory), decoding every file strictly. Objects
// are keyed "Kind/name"; a name defined twice fails, as kustomize would.
func decodeOverlay(t *testing.T, dir string) map[string]runtime.Object {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(dir, "kustomization.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var k kustomization
	if err := yaml.UnmarshalStrict(b, &k); err != nil {
		t.Fatalf("%s/kustomization.yaml: %v", dir, err)
	}
	if k.APIVersion != "kustomize.config.k8s.io/v1beta1" || k.Kind != "Kustomization" || k.Namespace != "svcprobe" {
		t.Fatalf("%s/kustomization.yaml: %s %s namespace %q", dir, k.APIVersion, k.Kind, k.Namespace)
	}
	files, _ := filepath.Glob(filepath.Join(dir, "*.yaml"))
	for _, f := range files {
		if base := filepath.Base(f); base != "kustomization.yaml" && !slices.Contains(k.Resources, base) {
			t.Errorf("%s is not listed in kustomization.yaml", f)
		}
	}
	codecs := serializer.NewCodecFactory(scheme.Scheme, serializer.EnableStrict)
	objs := map[string]runtime.Object{}
	add := func(key string, o runtime.Object) {
		if _, dup := objs[key]; dup {
			t.Fatalf("%s: %s defined twice", dir, key)
		}
		objs[key] = o
	}
	for _, r := range k.Resources {
		p := filepath.Join(dir, r)
		if st, err := os.Stat(p); err == nil && st.IsDir() {
			for key, o := range decodeOverlay(t, p) {
				add(key, o)
			}
			continue
		}
		data, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		obj, gvk, err := codecs.UniversalDeserializer().Decode(data, nil, nil)
		if err != nil {
			t.Fatalf("%s: %v", p, err)
		}
		m, err := metaOfObject(obj)
		if err != nil {
			t.Fatalf("%s: %v", p, err)
		}
		if m.GetNamespace() != "" && m.GetNamespace() != k.Namespace {
			t.Errorf("%s: namespace %q, the kustomization's is %q", p, m.GetNamespace(), k.Namespace)
		}
		add(gvk.Kind+"/"+m.GetName(), obj)
	}
	return objs
}

func metaOfObject(o runtime.Object) (metav1.Object, error) {
	type metaObject interface{ GetObjectMeta() metav1.Object }
	if m, ok := o.(metaObject); ok {
		return m.GetObjectMeta(), nil
	}
	return nil, os.ErrInvalid
}

func getObj[T runtime.Object](t *testing.T, objs map[string]runtime.Object, key string) T {
	t.Helper()
	v, ok := objs[key].(T)
	if !ok {
		t.Fatalf("no %s (have %v)", key, slices.Sorted(func(yield func(string) bool) {
			for k := range objs {
				if !yield(k) {
					return
				}
			}
		}))
	}
	return v
}

// kubectlKustomize renders dir with kubectl's kustomize when a kubectl is at hand (PATH, or the
// lab's cached one) and returns the Kind/name of what it renders; nil without kubectl.
func kubectlKustomize(t *testing.T, dir string) []string {
	t.Helper()
	bin, err := exec.LookPath("kubectl")
	if err != nil {
		home, _ := os.UserHomeDir()
		cache := os.Getenv("SVCPROBE_CACHE")
		if cache == "" {
			cache = filepath.Join(home, ".cache", "svcprobe")
		}
		matches, _ := filepath.Glob(filepath.Join(cache, "bin", "kubectl-*"))
		if len(matches) == 0 {
			return nil
		}
		bin = matches[0]
	}
	out, err := exec.Command(bin, "kustomize", dir).CombinedOutput()
	if err != nil {
		t.Fatalf("kubectl kustomize %s: %v\n%s", dir, err, out)
	}
	var names []string
	for _, doc := range strings.Split(string(out), "\n---\n") {
		var m struct {
			Kind     string `json:"kind"`
			Metadata struct {
				Name string `json:"name"`
			} `json:"metadata"`
		}
		if err := yaml.Unmarshal([]byte(doc), &m); err != nil {
			t.Fatalf("kubectl kustomize %s: %v", dir, err)
		}
		names = append(names, m.Kind+"/"+m.Metadata.Name)
	}
	slices.Sort(names)
	return names
}

func sortedKeys(objs map[string]runtime.Object) []string {
	var out []string
	for k := range objs {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}

// agentContainer returns a DaemonSet's only container, with the downward-API values the agents
// use (node name, host IP) made literal: runExporterArgs fakes only the Pod's own fields.
func agentContainer(t *testing.T, ds *appsv1.DaemonSet) corev1.Container {
	t.Helper()
	if n := len(ds.Spec.Template.Spec.Containers); n != 1 {
		t.Fatalf("%s: %d containers, want 1", ds.Name, n)
	}
	c := *ds.Spec.Template.Spec.Containers[0].DeepCopy()
	literal := map[string]string{"spec.nodeName": "node-1", "status.hostIP": "10.0.0.1"}
	for i, e := range c.Env {
		if e.ValueFrom != nil && e.ValueFrom.FieldRef != nil {
			if v, ok := literal[e.ValueFrom.FieldRef.FieldPath]; ok {
				c.Env[i] = corev1.EnvVar{Name: e.Name, Value: v}
			}
		}
	}
	return c
}

// agentProblems lists what is wrong with a node agent DaemonSet: the downward API env the node
// mode needs, --mode=node, the hairpin Service with internalTrafficPolicy: Local selecting the
// agent (and not selected by the central exporter's Services, nor selecting it).
func agentProblems(objs map[string]runtime.Object, ds *appsv1.DaemonSet) []string {
	var out []string
	bad := func(format string, args ...any) { out = append(out, fmt.Sprintf(ds.Name+": "+format, args...)) }
	ps := ds.Spec.Template.Spec
	if len(ps.Containers) != 1 {
		return append(out, ds.Name+": want one container")
	}
	c := ps.Containers[0]
	env := map[string]string{}
	for _, e := range c.Env {
		if e.ValueFrom != nil && e.ValueFrom.FieldRef != nil {
			env[e.Name] = e.ValueFrom.FieldRef.FieldPath
		}
	}
	for _, name := range slices.Sorted(maps.Keys(agentEnv)) {
		if env[name] != agentEnv[name] {
			bad("env %s from %q, want the downward API's %s", name, env[name], agentEnv[name])
		}
	}
	if !slices.Contains(c.Args, "--mode=node") {
		bad("args %v lack --mode=node", c.Args)
	}
	if sel, err := metav1.LabelSelectorAsSelector(ds.Spec.Selector); err != nil || !sel.Matches(labels.Set(ds.Spec.Template.Labels)) {
		bad("selector %v does not select its template %v (%v)", ds.Spec.Selector, ds.Spec.Template.Labels, err)
	}
	if ps.HostNetwork || ps.HostPID {
		bad("host namespaces")
	}
	var hairpin string
	for _, a := range c.Args {
		if v, ok := strings.CutPrefix(a, "--hairpin.service="); ok {
			hairpin = v
		}
	}
	ns, name, _ := strings.Cut(hairpin, "/")
	hs, _ := objs["Service/"+name].(*corev1.Service)
	if ns != "svcprobe" || hs == nil {
		return append(out, fmt.Sprintf("%s: --hairpin.service %q is not a Service of the overlay", ds.Name, hairpin))
	}
	if hs.Spec.InternalTrafficPolicy == nil || *hs.Spec.InternalTrafficPolicy != corev1.ServiceInternalTrafficPolicyLocal {
		bad("hairpin Service %s: internalTrafficPolicy %v, want Local (the VIP must lead only to this node's agent)", name, hs.Spec.InternalTrafficPolicy)
	}
	if !labels.SelectorFromSet(hs.Spec.Selector).Matches(labels.Set(ds.Spec.Template.Labels)) {
		bad("hairpin Service %s selector %v does not select the Pods %v", name, hs.Spec.Selector, ds.Spec.Template.Labels)
	}
	if hs.Annotations["svcprobe.io/http-path"] != "/-/identity" {
		bad("hairpin Service %s: annotations %v", name, hs.Annotations)
	}
	for _, s := range []string{"Service/svcprobe", "Service/svcprobe-hairpin"} {
		if cs, ok := objs[s].(*corev1.Service); !ok || labels.SelectorFromSet(cs.Spec.Selector).Matches(labels.Set(ds.Spec.Template.Labels)) {
			bad("%s missing or selecting the agents: the central exporter's hairpin would see another Pod answer", s)
		}
	}
	if d, ok := objs["Deployment/svcprobe"].(*appsv1.Deployment); !ok || labels.SelectorFromSet(hs.Spec.Selector).Matches(labels.Set(d.Spec.Template.Labels)) {
		bad("the agents' hairpin Service %s selects the central exporter (or it is missing)", name)
	}
	return out
}

// agentEnv is the downward API env of node mode: the Pod's name and IPs (identity, hairpin), the
// node's name (the node label) and address (NodePorts).
var agentEnv = map[string]string{"NODE_NAME": "spec.nodeName", "HOST_IP": "status.hostIP", "POD_IP": "status.podIP", "POD_NAME": "metadata.name"}

// checkAgent fails the test for every agentProblems and when the exporter refuses the agent's args.
func checkAgent(t *testing.T, objs map[string]runtime.Object, ds *appsv1.DaemonSet) {
	t.Helper()
	for _, p := range agentProblems(objs, ds) {
		t.Error(p)
	}
	if err := runExporterArgs(t, agentContainer(t, ds)); err != nil {
		t.Errorf("%s: %v", ds.Name, err)
	}
}

func TestNodeAgentOverlay(t *testing.T) {
	objs := decodeOverlay(t, "node-agent")
	base := decodeOverlay(t, "base")
	if len(objs) != len(base)+3 {
		t.Fatalf("%d objects (%v), want deploy/base's %d plus the DaemonSet and two Services", len(objs), sortedKeys(objs), len(base))
	}
	if rendered := kubectlKustomize(t, "node-agent"); rendered != nil && !slices.Equal(rendered, sortedKeys(objs)) {
		t.Errorf("kubectl kustomize renders %v, the test composes %v", rendered, sortedKeys(objs))
	}
	ds := getObj[*appsv1.DaemonSet](t, objs, "DaemonSet/svcprobe-node")
	ps := ds.Spec.Template.Spec
	if ps.NodeSelector["kubernetes.io/os"] != "linux" {
		t.Errorf("nodeSelector %v, want kubernetes.io/os: linux (deploy/windows has the Windows agent)", ps.NodeSelector)
	}
	// As restricted as the central exporter: the same Pod and container securityContext.
	central := getObj[*appsv1.Deployment](t, objs, "Deployment/svcprobe").Spec.Template.Spec
	if !reflect.DeepEqual(ps.SecurityContext, central.SecurityContext) {
		t.Errorf("pod securityContext %+v, deploy/base's %+v", ps.SecurityContext, central.SecurityContext)
	}
	if !reflect.DeepEqual(ps.Containers[0].SecurityContext, central.Containers[0].SecurityContext) {
		t.Errorf("container securityContext %+v, deploy/base's %+v", ps.Containers[0].SecurityContext, central.Containers[0].SecurityContext)
	}
	if ps.ServiceAccountName != "svcprobe" {
		t.Errorf("serviceAccountName %q", ps.ServiceAccountName)
	}
	checkAgent(t, objs, ds)
	if s := getObj[*corev1.Service](t, objs, "Service/svcprobe-node"); s.Spec.ClusterIP != corev1.ClusterIPNone ||
		!labels.SelectorFromSet(s.Spec.Selector).Matches(labels.Set(ds.Spec.Template.Labels)) {
		t.Errorf("metrics Service svcprobe-node: clusterIP %q selector %v, want headless selecting the agents", s.Spec.ClusterIP, s.Spec.Selector)
	}
}

func TestWindowsOverlay(t *testing.T) {
	objs := decodeOverlay(t, "windows")
	if rendered := kubectlKustomize(t, "windows"); rendered != nil && !slices.Equal(rendered, sortedKeys(objs)) {
		t.Errorf("kubectl kustomize renders %v, the test composes %v", rendered, sortedKeys(objs))
	}
	ds := getObj[*appsv1.DaemonSet](t, objs, "DaemonSet/svcprobe-node-windows")
	ps := ds.Spec.Template.Spec
	if ps.NodeSelector["kubernetes.io/os"] != "windows" || ps.OS == nil || ps.OS.Name != corev1.Windows {
		t.Errorf("nodeSelector %v os %v, want kubernetes.io/os: windows and os.name windows", ps.NodeSelector, ps.OS)
	}
	// No HostProcess, non-root; and none of the Linux-only fields the API refuses for Windows Pods.
	c := ps.Containers[0]
	if ps.SecurityContext == nil || ps.SecurityContext.RunAsNonRoot == nil || !*ps.SecurityContext.RunAsNonRoot {
		t.Errorf("pod securityContext %+v, want runAsNonRoot", ps.SecurityContext)
	}
	for _, wo := range []*corev1.WindowsSecurityContextOptions{ps.SecurityContext.WindowsOptions, func() *corev1.WindowsSecurityContextOptions {
		if c.SecurityContext == nil {
			return nil
		}
		return c.SecurityContext.WindowsOptions
	}()} {
		if wo != nil && wo.HostProcess != nil && *wo.HostProcess {
			t.Error("HostProcess container: the agent must run as an ordinary Pod")
		}
	}
	if sc := ps.SecurityContext; sc.SeccompProfile != nil || sc.RunAsUser != nil || sc.SELinuxOptions != nil {
		t.Errorf("Linux-only pod securityContext fields on a Windows Pod: %+v", sc)
	}
	if sc := c.SecurityContext; sc != nil && (sc.Capabilities != nil || sc.ReadOnlyRootFilesystem != nil || sc.AllowPrivilegeEscalation != nil) {
		t.Errorf("Linux-only container securityContext fields on a Windows Pod: %+v", sc)
	}
	if !strings.Contains(c.Image, "windows") {
		t.Errorf("image %q: the FROM scratch Linux image does not run on Windows; want a Windows tag", c.Image)
	}
	// The Linux agent and the Windows agent do not claim each other's Pods.
	linux := getObj[*appsv1.DaemonSet](t, objs, "DaemonSet/svcprobe-node")
	for _, pair := range [][2]*appsv1.DaemonSet{{linux, ds}, {ds, linux}} {
		sel, _ := metav1.LabelSelectorAsSelector(pair[0].Spec.Selector)
		if sel.Matches(labels.Set(pair[1].Spec.Template.Labels)) {
			t.Errorf("DaemonSet %s's selector matches %s's Pods", pair[0].Name, pair[1].Name)
		}
	}
	// The resolv.conf the DNS stage reads is mounted from the ConfigMap.
	var resolv string
	for _, a := range c.Args {
		if v, ok := strings.CutPrefix(a, "--dns.resolv-conf="); ok {
			resolv = v
		}
	}
	cm := getObj[*corev1.ConfigMap](t, objs, "ConfigMap/svcprobe-node-windows-resolv")
	mounted := false
	for _, m := range c.VolumeMounts {
		for _, v := range ps.Volumes {
			if v.Name == m.Name && v.ConfigMap != nil && v.ConfigMap.Name == cm.Name && strings.HasPrefix(resolv, m.MountPath+`\`) {
				_, mounted = cm.Data[strings.TrimPrefix(resolv, m.MountPath+`\`)]
			}
		}
	}
	if !mounted || !strings.Contains(cm.Data["resolv.conf"], "nameserver ") {
		t.Errorf("--dns.resolv-conf=%s is not the ConfigMap's resolv.conf mounted (%v)", resolv, c.VolumeMounts)
	}
	checkAgent(t, objs, ds)
}

// The checks above can fail: an agent without --mode=node or NODE_NAME, or a hairpin Service
// without internalTrafficPolicy: Local, is caught; an unknown flag is refused.
func TestAgentChecksCatchMistakes(t *testing.T) {
	objs := decodeOverlay(t, "node-agent")
	ds := getObj[*appsv1.DaemonSet](t, objs, "DaemonSet/svcprobe-node").DeepCopy()
	if p := agentProblems(objs, ds); len(p) != 0 {
		t.Fatalf("the shipped agent has problems: %v", p)
	}
	c := &ds.Spec.Template.Spec.Containers[0]
	c.Args = slices.DeleteFunc(c.Args, func(a string) bool { return a == "--mode=node" })
	c.Env = slices.DeleteFunc(c.Env, func(e corev1.EnvVar) bool { return e.Name == "NODE_NAME" })
	hs := getObj[*corev1.Service](t, objs, "Service/svcprobe-node-hairpin").DeepCopy()
	hs.Spec.InternalTrafficPolicy = nil
	objs["Service/svcprobe-node-hairpin"] = hs
	got := strings.Join(agentProblems(objs, ds), "\n")
	for _, want := range []string{"--mode=node", "env NODE_NAME", "internalTrafficPolicy"} {
		if !strings.Contains(got, want) {
			t.Errorf("problem %q not caught; found:\n%s", want, got)
		}
	}
	c.Args = append(c.Args, "--node.sample-sise=5")
	if err := runExporterArgs(t, agentContainer(t, ds)); err == nil || !strings.Contains(err.Error(), "flags refused") {
		t.Fatalf("a misspelt flag was not refused: %v", err)
	}
}

package lab

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/scheme"
)

// ExporterNamespace and ExporterLabel are those of deploy/base.
const (
	ExporterNamespace = "svcprobe"
	ExporterLabel     = "app.kubernetes.io/name=svcprobe"
)

// ExporterOptions says how DeployExporter runs svcprobe.
type ExporterOptions struct {
	Interval time.Duration // --probe.interval (default 2s)
	Timeout  time.Duration // --probe.timeout (default 1s)
	Expect   []string      // --expect (default default/hostnames)
	Args     []string      // more flags
	// Objects, when set, are created instead of the manifests of Config.DeployDir (the
	// Helm chart's rendering, in lab/dryrun_test.go); the Deployment among them is adapted to the
	// lab the same way.
	Objects []runtime.Object
}

// DeployExporter creates the objects of deploy/base (decoded with client-go's
// scheme, so the shipped YAML is what runs): Namespace, ServiceAccount,
// ClusterRole, ClusterRoleBinding, the metrics and hairpin Services and the
// Deployment. The Deployment's container runs Config.Exporter (the lab has
// no images) with deploy/base's args plus short intervals, --expect and
// --kubeconfig=$(LAB_KUBECONFIG): the kubelet writes that kubeconfig with a
// TokenRequest token of the svcprobe ServiceAccount, so RBAC from
// deploy/base is all it has. The Pod's address is pinned to ExporterIP and
// the strategy is Recreate (two Pods cannot share the address). It waits
// until the Pod is Ready (/-/ready: informers synced, every Service probed).
func DeployExporter(ctx context.Context, c Config, o ExporterOptions) error {
	c.fill()
	if o.Interval == 0 {
		o.Interval = 2 * time.Second
	}
	if o.Timeout == 0 {
		o.Timeout = time.Second
	}
	if o.Expect == nil {
		o.Expect = []string{"default/hostnames"}
	}
	if c.Exporter == "" {
		return fmt.Errorf("no exporter binary (Config.Exporter; `make build` writes bin/svcprobe)")
	}
	if _, err := os.Stat(c.Exporter); err != nil {
		return fmt.Errorf("exporter binary: %w (run `make build`)", err)
	}
	exe := c.path("bin", "svcprobe")
	if err := copyFile(c.Exporter, exe); err != nil {
		return err
	}
	objs, from := o.Objects, "the given objects"
	if objs == nil {
		var err error
		if objs, err = decodeDir(c.DeployDir); err != nil {
			return err
		}
		from = c.DeployDir
	}
	cl, err := c.Client()
	if err != nil {
		return err
	}
	c.Log("deploying svcprobe from %s (%d objects)", from, len(objs))
	for _, obj := range objs {
		if err := createObject(ctx, cl, obj, exe, o); err != nil {
			return err
		}
	}
	return waitFor(ctx, 90*time.Second, "svcprobe Pod ready", func() error {
		if err := c.componentAlive("kubelet"); err != nil {
			return backoff.Permanent(err)
		}
		d, err := cl.AppsV1().Deployments(ExporterNamespace).Get(ctx, "svcprobe", metav1.GetOptions{})
		if err != nil {
			return err
		}
		if d.Status.AvailableReplicas < 1 {
			return fmt.Errorf("svcprobe not available (see %s)", c.path("logs"))
		}
		return nil
	})
}

func copyFile(src, dst string) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
		return err
	}
	out, err := os.OpenFile(dst+".tmp", os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o755)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	if err := out.Close(); err != nil {
		return err
	}
	return os.Rename(dst+".tmp", dst)
}

// decodeDir decodes every Kubernetes object of the YAML files in dir
// (kustomization.yaml aside), namespace first.
func decodeDir(dir string) ([]runtime.Object, error) {
	files, err := filepath.Glob(filepath.Join(dir, "*.yaml"))
	if err != nil {
		return nil, err
	}
	if len(files) == 0 {
		return nil, fmt.Errorf("no YAML files in %q (Config.DeployDir)", dir)
	}
	sort.Strings(files)
	var objs []runtime.Object
	for _, f := range files {
		if filepath.Base(f) == "kustomization.yaml" {
			continue
		}
		b, err := os.ReadFile(f)
		if err != nil {
			return nil, err
		}
		for _, doc := range strings.Split(string(b), "\n---") {
			if strings.TrimSpace(stripComments(doc)) == "" {
				continue
			}
			obj, _, err := scheme.Codecs.UniversalDeserializer().Decode([]byte(doc), nil, nil)
			if err != nil {
				return nil, fmt.Errorf("%s: %w", f, err)
			}
			objs = append(objs, obj)
		}
	}
	sort.SliceStable(objs, func(i, j int) bool {
		_, ni := objs[i].(*corev1.Namespace)
		_, nj := objs[j].(*corev1.Namespace)
		return ni && !nj
	})
	return objs, nil
}

func stripComments(s string) string {
	var b strings.Builder
	for _, l := range strings.Split(s, "\n") {
		if !strings.HasPrefix(strings.TrimSpace(l), "#") {
			b.WriteString(l + "\n")
		}
	}
	return b.String()
}

func createObject(ctx context.Context, cl kubernetes.Interface, obj runtime.Object, exe string, o ExporterOptions) error {
	var err error
	var what string
	switch v := obj.(type) {
	case *corev1.Namespace:
		what = "namespace " + v.Name
		_, err = cl.CoreV1().Namespaces().Create(ctx, v, metav1.CreateOptions{})
	case *corev1.ServiceAccount:
		what = "serviceaccount " + v.Name
		_, err = cl.CoreV1().ServiceAccounts(nsOr(v.Namespace)).Create(ctx, v, metav1.CreateOptions{})
	case *rbacv1.ClusterRole:
		what = "clusterrole " + v.Name
		_, err = cl.RbacV1().ClusterRoles().Create(ctx, v, metav1.CreateOptions{})
	case *rbacv1.ClusterRoleBinding:
		what = "clusterrolebinding " + v.Name
		_, err = cl.RbacV1().ClusterRoleBindings().Create(ctx, v, metav1.CreateOptions{})
	case *rbacv1.Role:
		what = "role " + v.Name
		_, err = cl.RbacV1().Roles(nsOr(v.Namespace)).Create(ctx, v, metav1.CreateOptions{})
	case *rbacv1.RoleBinding:
		what = "rolebinding " + v.Name
		_, err = cl.RbacV1().RoleBindings(nsOr(v.Namespace)).Create(ctx, v, metav1.CreateOptions{})
	case *corev1.Service:
		what = "service " + v.Name
		_, err = cl.CoreV1().Services(nsOr(v.Namespace)).Create(ctx, v, metav1.CreateOptions{})
	case *appsv1.Deployment:
		what = "deployment " + v.Name
		labDeployment(v, exe, o)
		_, err = cl.AppsV1().Deployments(nsOr(v.Namespace)).Create(ctx, v, metav1.CreateOptions{})
	default:
		return fmt.Errorf("deploy: unsupported object %T", obj)
	}
	if apierrors.IsAlreadyExists(err) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	return nil
}

func nsOr(ns string) string {
	if ns == "" {
		return ExporterNamespace
	}
	return ns
}

// labDeployment adapts deploy/base's Deployment to the lab: the binary
// instead of the image, short intervals, --expect, the kubeconfig the
// kubelet writes, a pinned address and the Recreate strategy.
func labDeployment(d *appsv1.Deployment, exe string, o ExporterOptions) {
	d.Spec.Strategy = appsv1.DeploymentStrategy{Type: appsv1.RecreateDeploymentStrategyType}
	if d.Spec.Template.Annotations == nil {
		d.Spec.Template.Annotations = map[string]string{}
	}
	d.Spec.Template.Annotations[IPAnnotation] = ExporterIP
	labContainer(&d.Spec.Template.Spec.Containers[0], exe, o)
}

// labContainer runs the exporter binary exe instead of the image, with short
// intervals, --expect and the kubelet's kubeconfig.
func labContainer(c *corev1.Container, exe string, o ExporterOptions) {
	c.Command = []string{exe}
	set := map[string]string{
		"--probe.interval": o.Interval.String(),
		"--probe.timeout":  o.Timeout.String(),
		"--kubeconfig":     "$(" + PodKubeconfigEnv + ")",
	}
	var args []string
	for _, a := range c.Args {
		name, _, _ := strings.Cut(a, "=")
		if v, ok := set[name]; ok {
			args = append(args, name+"="+v)
			delete(set, name)
			continue
		}
		args = append(args, a)
	}
	for _, name := range []string{"--probe.interval", "--probe.timeout", "--kubeconfig"} {
		if v, ok := set[name]; ok {
			args = append(args, name+"="+v)
		}
	}
	for _, e := range o.Expect {
		args = append(args, "--expect="+e)
	}
	c.Args = append(args, o.Args...)
	// Readiness every second in the lab (the kubelet ignores periods anyway).
	if c.ReadinessProbe != nil {
		c.ReadinessProbe.PeriodSeconds = 1
	}
}

// ExporterPod returns the running svcprobe Pod.
func (c *Config) ExporterPod(ctx context.Context) (*corev1.Pod, error) {
	cl, err := c.Client()
	if err != nil {
		return nil, err
	}
	pods, err := cl.CoreV1().Pods(ExporterNamespace).List(ctx, metav1.ListOptions{LabelSelector: ExporterLabel})
	if err != nil {
		return nil, err
	}
	for i := range pods.Items {
		if pods.Items[i].DeletionTimestamp == nil {
			return &pods.Items[i], nil
		}
	}
	return nil, fmt.Errorf("no svcprobe Pod in namespace %s", ExporterNamespace)
}

// ExporterURL is the exporter's address on the pod network.
func ExporterURL(path string) string {
	return "http://" + ExporterIP + ":" + strconv.Itoa(ExporterPort) + path
}

var exporterHTTP = &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{
	DialContext: NetnsDialer(NodeNetns), DisableKeepAlives: true}}

// ScrapeExporter GETs path (e.g. /metrics) from the svcprobe Pod, from the
// host: the connection is made inside the node namespace, over cbr0 to the
// Pod's address (no Service VIP, so it works while kube-proxy is broken).
func ScrapeExporter(ctx context.Context, path string) (string, error) {
	return httpGet(ctx, ExporterURL(path))
}

// httpGet GETs u from the first node's namespace and wants 200.
func httpGet(ctx context.Context, u string) (string, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return "", err
	}
	resp, err := exporterHTTP.Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 32<<20))
	if err != nil {
		return "", err
	}
	if resp.StatusCode != http.StatusOK {
		return string(b), fmt.Errorf("GET %s: %s", u, resp.Status)
	}
	return string(b), nil
}

// StartExporterProxy forwards Config.ExporterProxyAddr on the host's
// loopback to the exporter Pod (for `demo`: http://127.0.0.1:9817/metrics).
func StartExporterProxy(c Config) error {
	c.fill()
	return c.startHostComponent("exporterproxy", c.LabExe(), "apiproxy",
		"--listen="+c.ExporterProxyAddr,
		"--netns="+NodeNetns,
		"--target="+ExporterIP+":"+strconv.Itoa(ExporterPort),
	)
}

// CreateDemoServices adds Services of other kinds next to hostnames: a
// headless one, one with a named targetPort, a NodePort and an ExternalName
// pointing inside the cluster.
func CreateDemoServices(ctx context.Context, c Config) error {
	cl, err := c.Client()
	if err != nil {
		return err
	}
	sel := map[string]string{"app": "hostnames"}
	port := func(name string, tp intstr.IntOrString) []corev1.ServicePort {
		return []corev1.ServicePort{{Name: name, Port: 80, Protocol: corev1.ProtocolTCP, TargetPort: tp}}
	}
	svcs := []*corev1.Service{
		{ObjectMeta: metav1.ObjectMeta{Name: "hostnames-headless"}, Spec: corev1.ServiceSpec{
			ClusterIP: corev1.ClusterIPNone, Selector: sel, Ports: port("http", intstr.FromInt32(9376))}},
		{ObjectMeta: metav1.ObjectMeta{Name: "hostnames-named"}, Spec: corev1.ServiceSpec{
			Selector: sel, Ports: port("http", intstr.FromString("http"))}},
		{ObjectMeta: metav1.ObjectMeta{Name: "hostnames-nodeport"}, Spec: corev1.ServiceSpec{
			Type: corev1.ServiceTypeNodePort, Selector: sel, Ports: port("http", intstr.FromInt32(9376))}},
		{ObjectMeta: metav1.ObjectMeta{Name: "hostnames-external"}, Spec: corev1.ServiceSpec{
			Type: corev1.ServiceTypeExternalName, ExternalName: "hostnames.default.svc." + ClusterDomain}},
	}
	for _, s := range svcs {
		if _, err := cl.CoreV1().Services("default").Create(ctx, s, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
			return fmt.Errorf("service %s: %w", s.Name, err)
		}
	}
	return nil
}

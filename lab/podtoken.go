package lab

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// A Pod of the lab has no volumes, so no mounted ServiceAccount token. For a
// Pod with a ServiceAccount whose container runs a command (not
// serve_hostname), the kubelet instead asks the TokenRequest API for a token
// of that ServiceAccount bound to the Pod (it dies with the Pod), and writes
// a kubeconfig that points at the `kubernetes` Service VIP with the lab's CA
// into the Pod's state dir. The container gets its path as $LAB_KUBECONFIG,
// and `$(LAB_KUBECONFIG)` in command and args is expanded as Kubernetes
// expands `$(VAR)`. The token carries exactly the ServiceAccount's RBAC.

// PodKubeconfigEnv names the variable holding the Pod's kubeconfig path.
const PodKubeconfigEnv = "LAB_KUBECONFIG"

// podDir is where a Pod's token and kubeconfig live (key namespace/name).
func (c *Config) podDir(key string) string {
	return c.path("pods", strings.ReplaceAll(key, "/", "_"))
}

func needsToken(pod *corev1.Pod) bool {
	if pod.Spec.ServiceAccountName == "" {
		return false
	}
	if a := pod.Spec.AutomountServiceAccountToken; a != nil && !*a {
		return false
	}
	for _, c := range pod.Spec.Containers {
		if len(c.Command) > 0 && c.Command[0] != "coredns" && c.Command[0] != "svcprobe-lab" {
			return true
		}
	}
	return false
}

func (k *kubelet) writePodKubeconfig(ctx context.Context, pod *corev1.Pod) (string, error) {
	exp := int64(24 * 3600)
	tr, err := k.client.CoreV1().ServiceAccounts(pod.Namespace).CreateToken(ctx, pod.Spec.ServiceAccountName,
		&authenticationv1.TokenRequest{Spec: authenticationv1.TokenRequestSpec{
			ExpirationSeconds: &exp,
			BoundObjectRef:    &authenticationv1.BoundObjectReference{Kind: "Pod", APIVersion: "v1", Name: pod.Name, UID: pod.UID},
		}}, metav1.CreateOptions{})
	if err != nil {
		return "", err
	}
	svc, err := k.client.CoreV1().Services("default").Get(ctx, "kubernetes", metav1.GetOptions{})
	if err != nil {
		return "", err
	}
	port := int32(443)
	if len(svc.Spec.Ports) > 0 {
		port = svc.Spec.Ports[0].Port
	}
	ca, err := os.ReadFile(k.cfg.path("ca.crt"))
	if err != nil {
		return "", err
	}
	dir := k.cfg.podDir(pod.Namespace + "/" + pod.Name)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return "", err
	}
	if err := os.WriteFile(filepath.Join(dir, "token"), []byte(tr.Status.Token), 0o600); err != nil {
		return "", err
	}
	kc := fmt.Sprintf(`apiVersion: v1
kind: Config
clusters:
- name: in-cluster
  cluster:
    server: https://%s:%d
    certificate-authority-data: %s
users:
- name: %s
  user:
    tokenFile: %s
contexts:
- name: in-cluster
  context:
    cluster: in-cluster
    user: %s
    namespace: %s
current-context: in-cluster
`, svc.Spec.ClusterIP, port, b64(ca), pod.Spec.ServiceAccountName, filepath.Join(dir, "token"),
		pod.Spec.ServiceAccountName, pod.Namespace)
	path := filepath.Join(dir, "kubeconfig")
	return path, os.WriteFile(path, []byte(kc), 0o600)
}

// containerEnv is the container's environment: the kubelet's own variables,
// then env with values and the fieldRefs a kubelet resolves.
func containerEnv(pod *corev1.Pod, c corev1.Container, rt *podRuntime) []string {
	env := append([]string{}, rt.env...)
	for _, e := range c.Env {
		switch {
		case e.ValueFrom == nil:
			env = append(env, e.Name+"="+expandVars([]string{e.Value}, env)[0])
		case e.ValueFrom.FieldRef != nil:
			v := ""
			switch e.ValueFrom.FieldRef.FieldPath {
			case "metadata.name":
				v = pod.Name
			case "metadata.namespace":
				v = pod.Namespace
			case "status.podIP":
				v = rt.ip
			case "spec.nodeName":
				v = pod.Spec.NodeName
			case "status.hostIP":
				v = rt.hostIP
			case "spec.serviceAccountName":
				v = pod.Spec.ServiceAccountName
			}
			env = append(env, e.Name+"="+v)
		}
	}
	return env
}

// expandVars replaces $(NAME) by the value of NAME in env (last one wins).
func expandVars(args []string, env []string) []string {
	vals := map[string]string{}
	for _, kv := range env {
		if i := strings.IndexByte(kv, '='); i > 0 {
			vals[kv[:i]] = kv[i+1:]
		}
	}
	out := make([]string, len(args))
	for i, a := range args {
		for n, v := range vals {
			a = strings.ReplaceAll(a, "$("+n+")", v)
		}
		out[i] = a
	}
	return out
}

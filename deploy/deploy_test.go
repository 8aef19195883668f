package deploy

import (
	"os"
	"path/filepath"
	"slices"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/serializer"
	"k8s.io/client-go/kubernetes/scheme"
	"sigs.k8s.io/yaml"
)

type kustomization struct {
	APIVersion string   `json:"apiVersion"`
	Kind       string   `json:"kind"`
	Namespace  string   `json:"namespace"`
	Resources  []string `json:"resources"`
}

// decodeBase decodes every resource of deploy/base strictly (unknown or duplicate fields fail).
func decodeBase(t *testing.T) map[string]runtime.Object {
	t.Helper()
	b, err := os.ReadFile("base/kustomization.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var k kustomization
	if err := yaml.UnmarshalStrict(b, &k); err != nil {
		t.Fatalf("kustomization.yaml: %v", err)
	}
	files, _ := filepath.Glob("base/*.yaml")
	for _, f := range files {
		if base := filepath.Base(f); base != "kustomization.yaml" && !slices.Contains(k.Resources, base) {
			t.Errorf("%s is not listed in kustomization.yaml", f)
		}
	}
	codecs := serializer.NewCodecFactory(scheme.Scheme, serializer.EnableStrict)
	objs := map[string]runtime.Object{}
	for _, r := range k.Resources {
		data, err := os.ReadFile(filepath.Join("base", r))
		if err != nil {
			t.Fatal(err)
		}
		obj, gvk, err := codecs.UniversalDeserializer().Decode(data, nil, nil)
		if err != nil {
			t.Fatalf("%s: %v", r, err)
		}
		objs[gvk.Kind+"/"+r] = obj
	}
	return objs
}

func find[T runtime.Object](t *testing.T, objs map[string]runtime.Object) T {
	t.Helper()
	for _, o := range objs {
		if v, ok := o.(T); ok {
			return v
		}
	}
	var zero T
	t.Fatalf("no %T in deploy/base", zero)
	return zero
}

func TestBaseDecodesStrictly(t *testing.T) {
	if n := len(decodeBase(t)); n != 7 {
		t.Fatalf("%d objects, want 7", n)
	}
}

// The ClusterRole is the least that works: get/list/watch on services, pods, endpointslices, the
// workloads, NetworkPolicies and namespaces.
func TestClusterRoleIsLeastPrivilege(t *testing.T) {
	role := find[*rbacv1.ClusterRole](t, decodeBase(t))
	allowed := map[string]bool{"/services": true, "/pods": true, "discovery.k8s.io/endpointslices": true,
		// The workloads, read only: a Service scaled to zero is idle, not a typo (issue 17).
		"/replicationcontrollers": true, "apps/deployments": true, "apps/statefulsets": true, "apps/replicasets": true, "apps/daemonsets": true,
		// NetworkPolicies and the namespaces' labels: may svcprobe reach a Pod at all (issue 17).
		"networking.k8s.io/networkpolicies": true, "/namespaces": true}
	seen := map[string]bool{}
	for _, r := range role.Rules {
		if len(r.NonResourceURLs) > 0 || len(r.ResourceNames) > 0 {
			t.Errorf("unexpected rule %+v", r)
		}
		if !slices.Equal(r.Verbs, []string{"get", "list", "watch"}) {
			t.Errorf("verbs %v, want only get, list, watch", r.Verbs)
		}
		for _, g := range r.APIGroups {
			for _, res := range r.Resources {
				key := g + "/" + res
				if !allowed[key] {
					t.Errorf("role grants %s", key)
				}
				seen[key] = true
			}
		}
	}
	for k := range allowed {
		if !seen[k] {
			t.Errorf("role lacks %s", k)
		}
	}
}

func TestDeploymentIsRestricted(t *testing.T) {
	d := find[*appsv1.Deployment](t, decodeBase(t))
	ps := d.Spec.Template.Spec
	if ps.SecurityContext == nil || ps.SecurityContext.RunAsNonRoot == nil || !*ps.SecurityContext.RunAsNonRoot ||
		ps.SecurityContext.SeccompProfile == nil || ps.SecurityContext.SeccompProfile.Type != corev1.SeccompProfileTypeRuntimeDefault {
		t.Fatalf("pod securityContext %+v", ps.SecurityContext)
	}
	c := ps.Containers[0]
	sc := c.SecurityContext
	if sc == nil || sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation || sc.ReadOnlyRootFilesystem == nil ||
		!*sc.ReadOnlyRootFilesystem || sc.Capabilities == nil || !slices.Equal(sc.Capabilities.Drop, []corev1.Capability{"ALL"}) {
		t.Fatalf("container securityContext %+v", sc)
	}
	if c.ReadinessProbe == nil || c.ReadinessProbe.HTTPGet.Path != "/-/ready" || c.LivenessProbe == nil || c.LivenessProbe.HTTPGet.Path != "/-/healthy" {
		t.Fatal("probes must use /-/ready and /-/healthy")
	}
	if c.Resources.Requests.Cpu().IsZero() || c.Resources.Limits.Memory().IsZero() {
		t.Fatal("resources not set")
	}
	if ps.ServiceAccountName != find[*corev1.ServiceAccount](t, decodeBase(t)).Name {
		t.Fatal("Deployment does not use the ServiceAccount bound to the ClusterRole")
	}
}

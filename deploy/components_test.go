package deploy

// The kustomize components (deploy/components): dashboards/ renders the Grafana dashboards of
// dashboards/*.json as one ConfigMap each, labelled for Grafana's dashboard sidecar, as the chart's
// dashboards.enabled does. kustomize loads no file outside a kustomization's directory, so the
// component holds copies of the dashboards; TestKustomizeDashboardsMatchDashboards keeps them
// (and the generator list) equal to dashboards/, and TestKustomizeDashboardsComponent builds a
// kustomization using the component with kustomize's own code (sigs.k8s.io/kustomize/api, as
// `kubectl kustomize` does).

import (
	"bytes"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/runtime/serializer"
	"k8s.io/client-go/kubernetes/scheme"
	"sigs.k8s.io/kustomize/api/krusty"
	"sigs.k8s.io/kustomize/kyaml/filesys"
)

const dashboardsComponent = "components/dashboards"

// dashboardConfigMapName is the ConfigMap of dashboards/<file>: the name the chart gives it with
// release svcprobe (svcprobe-overview.json: svcprobe-dashboard-overview).
func dashboardConfigMapName(file string) string {
	return "svcprobe-dashboard-" + strings.TrimPrefix(strings.TrimSuffix(filepath.Base(file), ".json"), "svcprobe-")
}

// dashboardsKustomization is the component's kustomization.yaml for these dashboard files: one
// configMapGenerator entry per dashboard.
func dashboardsKustomization(files []string) []byte {
	var b bytes.Buffer
	b.WriteString(`# Grafana dashboards as ConfigMaps for Grafana's dashboard sidecar (kube-prometheus-stack's
# grafana.sidecar.dashboards: label grafana_dashboard="1"), one per dashboard of dashboards/, named
# as the chart's dashboards.enabled names them. Use it from a kustomization of yours:
#
#   components:
#     - <path to svcprobe>/deploy/components/dashboards
#
# The ConfigMaps get that kustomization's namespace: the sidecar must search it (its
# searchNamespace, e.g. ALL). No name suffix hash: nothing mounts them by name, and a new name per
# change would leave the old ConfigMap behind for the sidecar to load beside the new one.
#
# The *.json files are copies of dashboards/*.json (kustomize loads no file outside this
# directory). Do not edit this directory:
# UPDATE_KUSTOMIZE_DASHBOARDS=1 go test ./deploy -run TestKustomizeDashboardsMatchDashboards
# rewrites it from dashboards/, and that test fails when it drifts.
apiVersion: kustomize.config.k8s.io/v1alpha1
kind: Component
configMapGenerator:
`)
	for _, f := range files {
		fmt.Fprintf(&b, "  - name: %s\n    files:\n      - %s\n    options:\n      disableNameSuffixHash: true\n      labels:\n        grafana_dashboard: \"1\"\n",
			dashboardConfigMapName(f), filepath.Base(f))
	}
	return b.Bytes()
}

// TestKustomizeDashboardsMatchDashboards: the component's copies equal dashboards/*.json, no other
// JSON is there, and its kustomization generates one ConfigMap per dashboard.
// UPDATE_KUSTOMIZE_DASHBOARDS=1 rewrites the copies and the kustomization.
func TestKustomizeDashboardsMatchDashboards(t *testing.T) {
	files, _ := filepath.Glob("../dashboards/*.json")
	if len(files) == 0 {
		t.Fatal("no dashboards/*.json")
	}
	update := os.Getenv("UPDATE_KUSTOMIZE_DASHBOARDS") != ""
	regen := "regenerate: UPDATE_KUSTOMIZE_DASHBOARDS=1 go test ./deploy -run TestKustomizeDashboardsMatchDashboards"
	copies, _ := filepath.Glob(filepath.Join(dashboardsComponent, "*.json"))
	for _, c := range copies {
		if !slices.ContainsFunc(files, func(f string) bool { return filepath.Base(f) == filepath.Base(c) }) {
			if update {
				if err := os.Remove(c); err != nil {
					t.Fatal(err)
				}
				continue
			}
			t.Errorf("%s is not in dashboards/ (%s)", c, regen)
		}
	}
	for _, f := range files {
		want, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		dst := filepath.Join(dashboardsComponent, filepath.Base(f))
		if update {
			if err := os.WriteFile(dst, want, 0o644); err != nil {
				t.Fatal(err)
			}
			continue
		}
		if got, err := os.ReadFile(dst); err != nil || !bytes.Equal(got, want) {
			t.Errorf("%s differs from %s (err %v); %s", dst, f, err, regen)
		}
	}
	want := dashboardsKustomization(files)
	dst := filepath.Join(dashboardsComponent, "kustomization.yaml")
	if update {
		if err := os.WriteFile(dst, want, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if got, err := os.ReadFile(dst); err != nil || !bytes.Equal(got, want) {
		t.Errorf("%s does not generate one ConfigMap per dashboards/*.json (err %v); %s", dst, err, regen)
	}
}

// TestKustomizeDashboardsComponent builds deploy/base plus the dashboards component (namespace
// svcprobe, as an overlay of deploy/base would) with kustomize: one ConfigMap per dashboard,
// labelled grafana_dashboard="1", named without a hash suffix, in the kustomization's namespace,
// holding the dashboard's exact JSON, and deploy/base's objects beside them.
func TestKustomizeDashboardsComponent(t *testing.T) {
	dir := t.TempDir()
	// kustomize takes relative paths only.
	rel := func(p string) string {
		a, err := filepath.Abs(p)
		if err != nil {
			t.Fatal(err)
		}
		r, err := filepath.Rel(dir, a)
		if err != nil {
			t.Fatal(err)
		}
		return r
	}
	k := fmt.Sprintf("apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\nnamespace: svcprobe\nresources:\n  - %s\ncomponents:\n  - %s\n",
		rel("base"), rel(dashboardsComponent))
	if err := os.WriteFile(filepath.Join(dir, "kustomization.yaml"), []byte(k), 0o644); err != nil {
		t.Fatal(err)
	}
	resMap, err := krusty.MakeKustomizer(krusty.MakeDefaultOptions()).Run(filesys.MakeFsOnDisk(), dir)
	if err != nil {
		t.Fatalf("kustomize build of deploy/base + %s: %v", dashboardsComponent, err)
	}
	out, err := resMap.AsYaml()
	if err != nil {
		t.Fatal(err)
	}
	codecs := serializer.NewCodecFactory(scheme.Scheme, serializer.EnableStrict)
	cms := map[string]*corev1.ConfigMap{}
	var others []string
	for _, doc := range splitYAML(out) {
		obj, gvk, err := codecs.UniversalDeserializer().Decode(doc, nil, nil)
		if err != nil {
			t.Fatalf("%v\n%s", err, doc)
		}
		if cm, ok := obj.(*corev1.ConfigMap); ok {
			cms[cm.Name] = cm
			continue
		}
		m, err := metaOfObject(obj)
		if err != nil {
			t.Fatal(err)
		}
		others = append(others, gvk.Kind+"/"+m.GetName())
	}
	slices.Sort(others)
	if base := sortedKeys(decodeOverlay(t, "base")); !slices.Equal(others, base) {
		t.Errorf("besides the ConfigMaps the build has %v, deploy/base %v", others, base)
	}
	files, _ := filepath.Glob("../dashboards/*.json")
	if len(files) == 0 {
		t.Fatal("no dashboards/*.json")
	}
	if len(cms) != len(files) {
		t.Errorf("%d ConfigMaps (%v), want one per dashboards/*.json (%d)", len(cms), slices.Sorted(maps.Keys(cms)), len(files))
	}
	for _, f := range files {
		want, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		name := dashboardConfigMapName(f)
		cm, ok := cms[name]
		if !ok {
			t.Errorf("no ConfigMap %s for %s", name, f)
			continue
		}
		if cm.Labels["grafana_dashboard"] != "1" {
			t.Errorf("ConfigMap %s labels %v, want grafana_dashboard=1 (the sidecar's)", name, cm.Labels)
		}
		if cm.Namespace != "svcprobe" {
			t.Errorf("ConfigMap %s in namespace %q, want the kustomization's svcprobe", name, cm.Namespace)
		}
		if len(cm.Data) != 1 || cm.Data[filepath.Base(f)] != string(want) {
			t.Errorf("ConfigMap %s data keys %v: want only %s, equal to %s", name, slices.Sorted(maps.Keys(cm.Data)), filepath.Base(f), f)
		}
	}
}

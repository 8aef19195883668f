package discovery

import (
	"context"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/ptr"
)

func deployment(ns, name string, replicas int32, tmpl map[string]string) *appsv1.Deployment {
	return &appsv1.Deployment{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, UID: types.UID("uid-" + name)},
		Spec: appsv1.DeploymentSpec{Replicas: ptr.To(replicas), Template: corev1.PodTemplateSpec{
			ObjectMeta: metav1.ObjectMeta{Labels: tmpl},
			Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "app", Image: "registry.example/app:1", Args: []string{"--big"}}}}}}}
}

// Workloads decide between scaled to zero, a typo and a workload that wants Pods it has not got.
func TestMatchWorkloads(t *testing.T) {
	sel := map[string]string{"app": "hostnames"}
	owned := &appsv1.ReplicaSet{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "hostnames-abc",
		OwnerReferences: []metav1.OwnerReference{{Kind: "Deployment", Name: "hostnames", Controller: ptr.To(true)}}},
		Spec: appsv1.ReplicaSetSpec{Replicas: ptr.To[int32](0), Template: corev1.PodTemplateSpec{ObjectMeta: metav1.ObjectMeta{Labels: map[string]string{"app": "hostnames", "pod-template-hash": "abc"}}}}}
	ds := &appsv1.DaemonSet{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "agent"},
		Spec:   appsv1.DaemonSetSpec{Template: corev1.PodTemplateSpec{ObjectMeta: metav1.ObjectMeta{Labels: map[string]string{"app": "agent"}}}},
		Status: appsv1.DaemonSetStatus{DesiredNumberScheduled: 0}}
	unset := deployment("default", "defaulted", 0, map[string]string{"app": "defaulted"})
	unset.Spec.Replicas = nil
	for _, c := range []struct {
		name string
		objs []any
		sel  map[string]string
		want string // Workload.String()s joined, "" for none
		idle bool
	}{
		{"scaled to zero", []any{deployment("default", "hostnames", 0, map[string]string{"app": "hostnames", "tier": "web"}), owned}, sel, "Deployment/hostnames (replicas 0)", true},
		{"wants replicas", []any{deployment("default", "hostnames", 3, map[string]string{"app": "hostnames"}), owned}, sel, "Deployment/hostnames (replicas 3)", false},
		// The owned ReplicaSet alone (an old one at 0) says nothing: its Deployment decides.
		{"only an owned ReplicaSet", []any{owned}, sel, "", false},
		{"typo: no template matches", []any{deployment("default", "hostnames", 0, map[string]string{"app": "hostname"})}, sel, "", false},
		{"one at zero, one wanting: not idle", []any{deployment("default", "a", 0, sel), deployment("default", "b", 2, sel)}, sel, "Deployment/a (replicas 0), Deployment/b (replicas 2)", false},
		{"DaemonSet with no node", []any{ds}, map[string]string{"app": "agent"}, "DaemonSet/agent (replicas 0)", true},
		{"replicas unset is 1", []any{unset}, map[string]string{"app": "defaulted"}, "Deployment/defaulted (replicas 1)", false},
		{"empty selector matches nothing", []any{deployment("default", "hostnames", 0, sel)}, nil, "", false},
	} {
		t.Run(c.name, func(t *testing.T) {
			got := MatchWorkloads(c.objs, c.sel)
			names := make([]string, len(got))
			for i, w := range got {
				names[i] = w.String()
			}
			if s := strings.Join(names, ", "); s != c.want {
				t.Fatalf("matched %q, want %q", s, c.want)
			}
			tg := &Target{Selector: c.sel, Workloads: got}
			if _, idle := tg.ScaledToZero(); idle != c.idle {
				t.Fatalf("ScaledToZero %v, want %v", idle, c.idle)
			}
			// With a Pod selected, never idle.
			tg.Pods = []Pod{{Name: "p"}}
			if _, idle := tg.ScaledToZero(); idle {
				t.Fatal("ScaledToZero with a selected Pod")
			}
		})
	}
}

// The transform keeps replicas, template labels and the controller; the Pod spec goes.
func TestTrimWorkload(t *testing.T) {
	d := deployment("default", "hostnames", 0, map[string]string{"app": "hostnames"})
	d.ManagedFields = []metav1.ManagedFieldsEntry{{Manager: "kubectl"}}
	d.Annotations = map[string]string{"deployment.kubernetes.io/revision": "3"}
	out, err := TrimWorkload(d)
	if err != nil {
		t.Fatal(err)
	}
	td := out.(*appsv1.Deployment)
	if *td.Spec.Replicas != 0 || td.Spec.Template.Labels["app"] != "hostnames" || td.Name != "hostnames" || td.UID == "" {
		t.Fatalf("lost what the check needs: %+v", td)
	}
	if len(td.Spec.Template.Spec.Containers) != 0 || td.ManagedFields != nil || td.Annotations != nil {
		t.Fatalf("kept what the check does not need: %+v", td)
	}
	rc := &corev1.ReplicationController{ObjectMeta: metav1.ObjectMeta{Name: "legacy"}, Spec: corev1.ReplicationControllerSpec{Replicas: ptr.To[int32](0),
		Template: &corev1.PodTemplateSpec{ObjectMeta: metav1.ObjectMeta{Labels: map[string]string{"app": "legacy"}}, Spec: corev1.PodSpec{Hostname: "x"}}}}
	out, _ = TrimWorkload(rc)
	if w, l, counts := workloadOf(out); !counts || w.Kind != "ReplicationController" || w.Replicas != 0 || l["app"] != "legacy" || out.(*corev1.ReplicationController).Spec.Template.Spec.Hostname != "" {
		t.Fatalf("replication controller trimmed to %+v (%v %v)", w, l, counts)
	}
}

// End to end through the informers: scaling the workload to zero makes the Service idle (its
// version changes), scaling back makes it wait for Pods; a Service whose selector matches no
// template stays without workloads. Without Config.Workloads nothing is watched.
func TestWatcherScaledToZero(t *testing.T) {
	sel := map[string]string{"app": "hostnames"}
	hostnames := service("default", "hostnames", sel, svcPort("", 80, intstr.FromInt32(9376)))
	typo := service("default", "typo", map[string]string{"app": "hostname"}, svcPort("", 80, intstr.FromInt32(9376)))
	client, sink, _ := startWatcher(t, Config{Workloads: true}, hostnames, typo)
	ctx := context.Background()
	if _, err := client.AppsV1().Deployments("default").Create(ctx, deployment("default", "hostnames", 0, sel), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	eventually(t, "hostnames idle", func() bool {
		tg := sink.get("default/hostnames")
		if tg == nil {
			return false
		}
		_, idle := tg.ScaledToZero()
		return idle
	})
	before := sink.get("default/hostnames").Version
	if tg := sink.get("default/typo"); tg == nil || len(tg.Workloads) != 0 {
		t.Fatalf("typo Service: %+v, want no workload", tg)
	}
	d := deployment("default", "hostnames", 2, sel)
	d.ResourceVersion = "2"
	if _, err := client.AppsV1().Deployments("default").Update(ctx, d, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	eventually(t, "hostnames wants replicas", func() bool {
		tg := sink.get("default/hostnames")
		if tg == nil {
			return false
		}
		_, idle := tg.ScaledToZero()
		return !idle && len(tg.Workloads) == 1 && tg.Workloads[0].Replicas == 2
	})
	if sink.get("default/hostnames").Version == before {
		t.Fatal("version unchanged by the workload's replicas")
	}

	_, sink2, _ := startWatcher(t, Config{}, hostnames)
	eventually(t, "hostnames without workloads", func() bool { return sink2.get("default/hostnames") != nil })
	if tg := sink2.get("default/hostnames"); len(tg.Workloads) != 0 {
		t.Fatalf("workloads watched without Config.Workloads: %+v", tg.Workloads)
	}
}

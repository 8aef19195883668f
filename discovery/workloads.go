package discovery

import (
	"sort"
	"strconv"
	"strings"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/tools/cache"
)

// Workload is a controller of Pods whose Pod template a Service's selector matches: what tells a
// Service scaled to zero on purpose (its workload wants no replica) from a selector typo (no
// workload would ever create a Pod it matches).
type Workload struct {
	// Kind is Deployment, StatefulSet, ReplicaSet, ReplicationController or DaemonSet.
	Kind string
	Name string
	// Replicas is how many Pods the workload wants: spec.replicas (1 when unset), or for a
	// DaemonSet the nodes it should run on (status.desiredNumberScheduled).
	Replicas int32
}

// String is "Deployment/hostnames (replicas 0)".
func (w Workload) String() string {
	return w.Kind + "/" + w.Name + " (replicas " + strconv.Itoa(int(w.Replicas)) + ")"
}

// ScaledToZero reports whether the Service is idle on purpose: its selector matches no Pod, it
// matches the Pod template of at least one workload, and every such workload wants no replica
// (scaled to zero; a DaemonSet with no node to run on). It returns those workloads, for humans.
// A selector matching no workload stays a spec failure, and one matching a workload that wants
// replicas stays an endpoints failure.
func (t *Target) ScaledToZero() (string, bool) {
	if len(t.Pods) > 0 || len(t.Workloads) == 0 {
		return "", false
	}
	names := make([]string, 0, len(t.Workloads))
	for _, w := range t.Workloads {
		if w.Replicas > 0 {
			return "", false
		}
		names = append(names, w.String())
	}
	return strings.Join(names, ", "), true
}

// workloadKinds are the workload informers, by the resource name their watch errors carry.
func workloadInformers(f informers.SharedInformerFactory) map[string]cache.SharedIndexInformer {
	return map[string]cache.SharedIndexInformer{
		"deployments":            f.Apps().V1().Deployments().Informer(),
		"statefulsets":           f.Apps().V1().StatefulSets().Informer(),
		"replicasets":            f.Apps().V1().ReplicaSets().Informer(),
		"daemonsets":             f.Apps().V1().DaemonSets().Informer(),
		"replicationcontrollers": f.Core().V1().ReplicationControllers().Informer(),
	}
}

// TrimWorkload keeps what ScaledToZero needs of a workload: its name, its controller (a
// ReplicaSet a Deployment owns is the Deployment's business), the replicas it wants and its Pod
// template's labels. Everything else (the Pod spec, which is most of the object) goes.
func TrimWorkload(obj any) (any, error) {
	meta := func(m metav1.ObjectMeta) metav1.ObjectMeta {
		out := metav1.ObjectMeta{Name: m.Name, Namespace: m.Namespace, UID: m.UID, ResourceVersion: m.ResourceVersion}
		if c := metav1.GetControllerOfNoCopy(&m); c != nil {
			out.OwnerReferences = []metav1.OwnerReference{{APIVersion: c.APIVersion, Kind: c.Kind, Name: c.Name, UID: c.UID, Controller: c.Controller}}
		}
		return out
	}
	tmpl := func(t corev1.PodTemplateSpec) corev1.PodTemplateSpec {
		return corev1.PodTemplateSpec{ObjectMeta: metav1.ObjectMeta{Labels: t.Labels}}
	}
	switch w := obj.(type) {
	case *appsv1.Deployment:
		return &appsv1.Deployment{ObjectMeta: meta(w.ObjectMeta), Spec: appsv1.DeploymentSpec{Replicas: w.Spec.Replicas, Template: tmpl(w.Spec.Template)}}, nil
	case *appsv1.StatefulSet:
		return &appsv1.StatefulSet{ObjectMeta: meta(w.ObjectMeta), Spec: appsv1.StatefulSetSpec{Replicas: w.Spec.Replicas, Template: tmpl(w.Spec.Template)}}, nil
	case *appsv1.ReplicaSet:
		return &appsv1.ReplicaSet{ObjectMeta: meta(w.ObjectMeta), Spec: appsv1.ReplicaSetSpec{Replicas: w.Spec.Replicas, Template: tmpl(w.Spec.Template)}}, nil
	case *appsv1.DaemonSet:
		return &appsv1.DaemonSet{ObjectMeta: meta(w.ObjectMeta), Spec: appsv1.DaemonSetSpec{Template: tmpl(w.Spec.Template)},
			Status: appsv1.DaemonSetStatus{DesiredNumberScheduled: w.Status.DesiredNumberScheduled}}, nil
	case *corev1.ReplicationController:
		out := &corev1.ReplicationController{ObjectMeta: meta(w.ObjectMeta), Spec: corev1.ReplicationControllerSpec{Replicas: w.Spec.Replicas}}
		if w.Spec.Template != nil {
			t := tmpl(*w.Spec.Template)
			out.Spec.Template = &t
		}
		return out, nil
	}
	return obj, nil
}

// workloadOf reads a (trimmed) workload: what it is, the labels of the Pods it creates, and
// whether it counts on its own (false for a ReplicaSet or ReplicationController with a controller:
// its Deployment, or whatever owns it, is the workload).
func workloadOf(obj any) (Workload, map[string]string, bool) {
	if d, ok := obj.(cache.DeletedFinalStateUnknown); ok {
		obj = d.Obj
	}
	replicas := func(p *int32) int32 {
		if p == nil {
			return 1 // the API's default
		}
		return *p
	}
	switch w := obj.(type) {
	case *appsv1.Deployment:
		return Workload{"Deployment", w.Name, replicas(w.Spec.Replicas)}, w.Spec.Template.Labels, true
	case *appsv1.StatefulSet:
		return Workload{"StatefulSet", w.Name, replicas(w.Spec.Replicas)}, w.Spec.Template.Labels, true
	case *appsv1.ReplicaSet:
		return Workload{"ReplicaSet", w.Name, replicas(w.Spec.Replicas)}, w.Spec.Template.Labels, metav1.GetControllerOfNoCopy(w) == nil
	case *appsv1.DaemonSet:
		return Workload{"DaemonSet", w.Name, w.Status.DesiredNumberScheduled}, w.Spec.Template.Labels, true
	case *corev1.ReplicationController:
		if w.Spec.Template == nil {
			return Workload{}, nil, false
		}
		return Workload{"ReplicationController", w.Name, replicas(w.Spec.Replicas)}, w.Spec.Template.Labels, metav1.GetControllerOfNoCopy(w) == nil
	}
	return Workload{}, nil, false
}

// namespaceOf is the namespace of a workload event's object.
func namespaceOf(obj any) string {
	if d, ok := obj.(cache.DeletedFinalStateUnknown); ok {
		obj = d.Obj
	}
	if m, ok := obj.(metav1.Object); ok {
		return m.GetNamespace()
	}
	return ""
}

// workloadsFor lists the workloads of ns whose Pod template sel matches. Only asked for a Service
// whose selector matches no Pod.
func (w *Watcher) workloadsFor(ns string, sel map[string]string) []Workload {
	var objs []any
	for _, idx := range w.workloads {
		o, _ := idx.ByIndex(cache.NamespaceIndex, ns)
		objs = append(objs, o...)
	}
	return MatchWorkloads(objs, sel)
}

// MatchWorkloads returns the workloads among objs (Deployments, StatefulSets, ReplicaSets,
// DaemonSets, ReplicationControllers; others are ignored) whose Pod template sel matches, sorted
// by kind and name. A ReplicaSet or ReplicationController with a controller is left to it.
func MatchWorkloads(objs []any, sel map[string]string) []Workload {
	if len(sel) == 0 {
		return nil
	}
	s := labels.SelectorFromSet(sel)
	var out []Workload
	for _, o := range objs {
		wl, tl, counts := workloadOf(o)
		if counts && len(tl) > 0 && s.Matches(labels.Set(tl)) {
			out = append(out, wl)
		}
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Kind != out[j].Kind {
			return out[i].Kind < out[j].Kind
		}
		return out[i].Name < out[j].Name
	})
	return out
}

// workloadHandler enqueues, on a workload's change, the Services of its namespace that select no
// Pod and whose selector matches its Pod template before or after: the only ones whose verdict a
// workload can change (scaled to zero or not).
func (w *Watcher) workloadHandler() cache.ResourceEventHandler {
	enqueue := func(objs ...any) {
		w.touched()
		ns := ""
		var sets []labels.Set
		for _, o := range objs {
			_, tl, _ := workloadOf(o)
			ns = namespaceOf(o)
			if len(tl) > 0 {
				sets = append(sets, labels.Set(tl))
			}
		}
		if len(sets) == 0 || !w.cfg.InScope(ns) {
			return
		}
		w.enqueueSelecting(ns, sets, func(hit bool, known *Target) bool {
			return hit && (known == nil || len(known.Pods) == 0)
		})
	}
	return beforeAndAfter(enqueue)
}

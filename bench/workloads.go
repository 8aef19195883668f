package main

import (
	"context"
	"fmt"
	"runtime"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes/fake"
	"k8s.io/client-go/tools/cache"
	"k8s.io/utils/ptr"

	"github.com/svcprobe/svcprobe/discovery"
)

// benchDeployment is a Deployment as clusters hold them: two containers with images, ports, env,
// resources and probes, labels and annotations. The informer keeps what discovery.TrimWorkload
// leaves of it.
func benchDeployment(i int) *appsv1.Deployment {
	labels := map[string]string{"app": fmt.Sprintf("app-%05d", i), "team": "bench", "app.kubernetes.io/part-of": "svcprobe-bench"}
	probe := &corev1.Probe{ProbeHandler: corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{Path: "/healthz", Port: intstr.FromInt32(8080)}}, PeriodSeconds: 10}
	c := func(name string) corev1.Container {
		return corev1.Container{Name: name, Image: "registry.example.com/team/" + name + ":v1.2.3",
			Args:  []string{"--listen=:8080", "--log.level=info", "--config=/etc/app/config.yaml"},
			Ports: []corev1.ContainerPort{{Name: "http", ContainerPort: 8080}, {Name: "metrics", ContainerPort: 9090}},
			Env: []corev1.EnvVar{{Name: "POD_NAME", ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{FieldPath: "metadata.name"}}},
				{Name: "LOG_FORMAT", Value: "json"}, {Name: "REGION", Value: "eu-west-1"}},
			Resources: corev1.ResourceRequirements{Requests: corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("100m"), corev1.ResourceMemory: resource.MustParse("128Mi")},
				Limits: corev1.ResourceList{corev1.ResourceMemory: resource.MustParse("256Mi")}},
			ReadinessProbe: probe, LivenessProbe: probe,
			VolumeMounts: []corev1.VolumeMount{{Name: "config", MountPath: "/etc/app"}}}
	}
	return &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("app-%05d", i), Namespace: serviceNamespace(i), UID: types.UID(fmt.Sprintf("00000000-bench-dep-%08d", i)),
			ResourceVersion: "1", Labels: labels, Annotations: map[string]string{"deployment.kubernetes.io/revision": "7", "team.example.com/owner": "platform"}},
		Spec: appsv1.DeploymentSpec{Replicas: ptr.To[int32](int32(i % 3)), Selector: &metav1.LabelSelector{MatchLabels: labels},
			Template: corev1.PodTemplateSpec{ObjectMeta: metav1.ObjectMeta{Labels: labels, Annotations: map[string]string{"prometheus.io/scrape": "true"}},
				Spec: corev1.PodSpec{Containers: []corev1.Container{c("app"), c("sidecar")},
					Volumes: []corev1.Volume{{Name: "config", VolumeSource: corev1.VolumeSource{ConfigMap: &corev1.ConfigMapVolumeSource{LocalObjectReference: corev1.LocalObjectReference{Name: "app-config"}}}}}}}},
	}
}

// workloadMemory measures the heap a Deployment informer holds per object, with the exporter's
// transform (discovery.TrimWorkload, what --discovery.workloads costs) and without it (the
// baseline: the cache untrimmed), over n Deployments in a fake clientset. Each is the heap after
// the informer synced minus the heap before it started, both after GC.
func workloadMemory(n int) (trimmed, untrimmed float64, err error) {
	client := fake.NewClientset()
	for i := range n {
		if _, err := client.AppsV1().Deployments(serviceNamespace(i)).Create(context.Background(), benchDeployment(i), metav1.CreateOptions{}); err != nil {
			return 0, 0, err
		}
	}
	measure := func(trim bool) (float64, error) {
		before := heapAfterGC()
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		f := informers.NewSharedInformerFactory(client, 0)
		inf := f.Apps().V1().Deployments().Informer()
		if trim {
			if err := inf.SetTransform(discovery.TrimWorkload); err != nil {
				return 0, err
			}
		}
		f.Start(ctx.Done())
		sctx, scancel := context.WithTimeout(ctx, 2*time.Minute)
		defer scancel()
		if !cache.WaitForCacheSync(sctx.Done(), inf.HasSynced) {
			return 0, fmt.Errorf("deployment informer did not sync")
		}
		if got := len(inf.GetStore().List()); got != n {
			return 0, fmt.Errorf("informer holds %d Deployments, want %d", got, n)
		}
		after := heapAfterGC()
		runtime.KeepAlive(inf)
		cancel()
		f.Shutdown()
		return float64(after-before) / float64(n), nil
	}
	if untrimmed, err = measure(false); err != nil {
		return 0, 0, err
	}
	if trimmed, err = measure(true); err != nil {
		return 0, 0, err
	}
	return trimmed, untrimmed, nil
}

func heapAfterGC() int64 {
	runtime.GC()
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return int64(m.HeapAlloc)
}

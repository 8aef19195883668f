package main

// Issue 19: what a node agent (--mode=node, one per node) costs. This file is the first half: one
// agent's series and memory at 10k Services over client-go's fake clientset, against a bare
// informer set over the same objects (the `agents` child). agents_apiserver.go is the second half:
// N agents against a real kube-apiserver. agents_report.go runs both and writes their section.

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"log/slog"
	"net/http/httptest"
	"os"
	"runtime/debug"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	kruntime "k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/fake"
	"k8s.io/client-go/tools/cache"
	"k8s.io/utils/ptr"

	"github.com/svcprobe/svcprobe/pipeline"
	"github.com/svcprobe/svcprobe/probe"
)

// agentNode is the node the simulated agent runs on (the bench's slices spread their endpoints
// over node-000..node-099).
const agentNode = "node-000"

// newBenchNodePipeline is a node agent's pipeline as cmd/exporter builds it for --mode=node
// --node-name=node: the bench's settings (benchConfig.pipelineConfig) and the two node-mode
// flags, nothing else; --node.sample-size and --node.max-failing-services keep their defaults.
func newBenchNodePipeline(cfg benchConfig, rc probe.ResolvConf, client kubernetes.Interface, node, nodePods string, log *slog.Logger) (*pipeline.Pipeline, error) {
	c := cfg.pipelineConfig(rc)
	c.Mode, c.NodeName, c.NodePods = pipeline.ModeNode, node, nodePods
	return pipeline.New(c, client, log)
}

// selectorLabel is the label a bench Service selects its Pods by.
const selectorLabel = "app.kubernetes.io/name"

// selectingService is Service i with a selector (its Pods carry selectorLabel=svc-NNNNN).
func selectingService(i int, p Ports) *corev1.Service {
	s := benchService(i, p)
	s.Spec.Selector = map[string]string{selectorLabel: serviceName(i)}
	return s
}

// podName is the name of Pod j of Service i (what benchSlice's targetRefs name).
func podName(i, j int) string { return fmt.Sprintf("%s-pod-%d", serviceName(i), j) }

// benchNode is the node of endpoint j of Service i, as benchSlice says.
func benchNode(i, j int) string { return fmt.Sprintf("node-%03d", (i+j)%100) }

// benchPod is Pod j of Service i as a cluster holds it once its kubelet reported it: a
// Deployment's Pod (owner, pod-template-hash) of two containers with images, ports, env,
// resources, probes and the service-account token volume, scheduled, Running and Ready, with the
// managedFields of its three writers. ip is its Pod IP (the endpoint benchSlice names for it).
// What the API server returns for a Pod is about this size; an informer without transform holds
// all of it, discovery.TrimPod keeps its name, labels, node, IPs, ports, phase and readiness.
func benchPod(i, j int, ip string) *corev1.Pod {
	ns, name := serviceNamespace(i), podName(i, j)
	hash := fmt.Sprintf("%08x", uint32(i)*2654435761)[:8]
	labels := map[string]string{selectorLabel: serviceName(i), "app.kubernetes.io/part-of": "svcprobe-bench", "pod-template-hash": hash, "team": "bench"}
	hc := &corev1.Probe{ProbeHandler: corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{Path: "/healthz", Port: intstr.FromString("http"), Scheme: corev1.URISchemeHTTP}},
		PeriodSeconds: 10, TimeoutSeconds: 1, SuccessThreshold: 1, FailureThreshold: 3}
	container := func(cname, portName string, port int32) corev1.Container {
		return corev1.Container{Name: cname, Image: "registry.example.com/team/" + cname + ":v1.2.3",
			Args:  []string{"--listen=:8080", "--log.level=info", "--config=/etc/app/config.yaml"},
			Ports: []corev1.ContainerPort{{Name: portName, ContainerPort: port, Protocol: corev1.ProtocolTCP}, {Name: cname[:3] + "-metrics", ContainerPort: port + 1000, Protocol: corev1.ProtocolTCP}},
			Env: []corev1.EnvVar{{Name: "POD_NAME", ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{APIVersion: "v1", FieldPath: "metadata.name"}}},
				{Name: "LOG_FORMAT", Value: "json"}, {Name: "REGION", Value: "eu-west-1"}},
			Resources: corev1.ResourceRequirements{Requests: corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("100m"), corev1.ResourceMemory: resource.MustParse("128Mi")},
				Limits: corev1.ResourceList{corev1.ResourceMemory: resource.MustParse("256Mi")}},
			ReadinessProbe: hc, LivenessProbe: hc,
			VolumeMounts: []corev1.VolumeMount{{Name: "config", MountPath: "/etc/app"},
				{Name: "kube-api-access-" + hash[:5], ReadOnly: true, MountPath: "/var/run/secrets/kubernetes.io/serviceaccount"}},
			TerminationMessagePath: "/dev/termination-log", TerminationMessagePolicy: corev1.TerminationMessageReadFile, ImagePullPolicy: corev1.PullIfNotPresent}
	}
	t0 := metav1.NewTime(time.Date(2026, 11, 1, 12, 0, 0, 0, time.UTC))
	cond := func(t corev1.PodConditionType) corev1.PodCondition {
		return corev1.PodCondition{Type: t, Status: corev1.ConditionTrue, LastTransitionTime: t0}
	}
	cstatus := func(cname string) corev1.ContainerStatus {
		return corev1.ContainerStatus{Name: cname, Ready: true, Started: ptr.To(true), RestartCount: 0,
			Image: "registry.example.com/team/" + cname + ":v1.2.3", ImageID: "registry.example.com/team/" + cname + "@sha256:" + strings.Repeat("ab", 32),
			ContainerID: "containerd://" + strings.Repeat(hash, 8), State: corev1.ContainerState{Running: &corev1.ContainerStateRunning{StartedAt: t0}}}
	}
	managed := func(manager string, op metav1.ManagedFieldsOperationType, sub string, fields string) metav1.ManagedFieldsEntry {
		return metav1.ManagedFieldsEntry{Manager: manager, Operation: op, APIVersion: "v1", Time: &t0, FieldsType: "FieldsV1", Subresource: sub,
			FieldsV1: &metav1.FieldsV1{Raw: []byte(fields)}}
	}
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns, UID: types.UID(fmt.Sprintf("00000000-bench-pod-%08d-%02d", i, j)), ResourceVersion: "1",
			GenerateName: serviceName(i) + "-" + hash + "-", Labels: labels, CreationTimestamp: t0,
			Annotations:     map[string]string{"prometheus.io/scrape": "true", "kubectl.kubernetes.io/restartedAt": "2026-11-01T12:00:00Z"},
			OwnerReferences: []metav1.OwnerReference{{APIVersion: "apps/v1", Kind: "ReplicaSet", Name: serviceName(i) + "-" + hash, UID: types.UID("00000000-bench-rs-" + hash), Controller: ptr.To(true), BlockOwnerDeletion: ptr.To(true)}},
			ManagedFields: []metav1.ManagedFieldsEntry{
				managed("kube-controller-manager", metav1.ManagedFieldsOperationUpdate, "", `{"f:metadata":{"f:annotations":{".":{},"f:kubectl.kubernetes.io/restartedAt":{},"f:prometheus.io/scrape":{}},"f:generateName":{},"f:labels":{".":{},"f:app.kubernetes.io/name":{},"f:app.kubernetes.io/part-of":{},"f:pod-template-hash":{},"f:team":{}},"f:ownerReferences":{".":{},"k:{\"uid\":\"00000000\"}":{}}},"f:spec":{"f:containers":{"k:{\"name\":\"app\"}":{".":{},"f:args":{},"f:env":{".":{},"k:{\"name\":\"LOG_FORMAT\"}":{".":{},"f:name":{},"f:value":{}},"k:{\"name\":\"POD_NAME\"}":{".":{},"f:name":{},"f:valueFrom":{".":{},"f:fieldRef":{}}},"k:{\"name\":\"REGION\"}":{".":{},"f:name":{},"f:value":{}}},"f:image":{},"f:imagePullPolicy":{},"f:livenessProbe":{".":{},"f:failureThreshold":{},"f:httpGet":{".":{},"f:path":{},"f:port":{},"f:scheme":{}},"f:periodSeconds":{},"f:successThreshold":{},"f:timeoutSeconds":{}},"f:name":{},"f:ports":{".":{},"k:{\"containerPort\":8080,\"protocol\":\"TCP\"}":{".":{},"f:containerPort":{},"f:name":{},"f:protocol":{}}},"f:readinessProbe":{".":{},"f:failureThreshold":{},"f:httpGet":{".":{},"f:path":{},"f:port":{},"f:scheme":{}},"f:periodSeconds":{},"f:successThreshold":{},"f:timeoutSeconds":{}},"f:resources":{".":{},"f:limits":{".":{},"f:memory":{}},"f:requests":{".":{},"f:cpu":{},"f:memory":{}}},"f:terminationMessagePath":{},"f:terminationMessagePolicy":{},"f:volumeMounts":{".":{},"k:{\"mountPath\":\"/etc/app\"}":{".":{},"f:mountPath":{},"f:name":{}}}}},"f:dnsPolicy":{},"f:enableServiceLinks":{},"f:restartPolicy":{},"f:schedulerName":{},"f:securityContext":{},"f:terminationGracePeriodSeconds":{},"f:volumes":{".":{},"k:{\"name\":\"config\"}":{".":{},"f:configMap":{".":{},"f:defaultMode":{},"f:name":{}},"f:name":{}}}}}`),
				managed("kube-scheduler", metav1.ManagedFieldsOperationUpdate, "binding", `{"f:spec":{"f:nodeName":{}}}`),
				managed("kubelet", metav1.ManagedFieldsOperationUpdate, "status", `{"f:status":{"f:conditions":{"k:{\"type\":\"ContainersReady\"}":{".":{},"f:lastProbeTime":{},"f:lastTransitionTime":{},"f:status":{},"f:type":{}},"k:{\"type\":\"Initialized\"}":{".":{},"f:lastProbeTime":{},"f:lastTransitionTime":{},"f:status":{},"f:type":{}},"k:{\"type\":\"PodReadyToStartContainers\"}":{".":{},"f:lastProbeTime":{},"f:lastTransitionTime":{},"f:status":{},"f:type":{}},"k:{\"type\":\"Ready\"}":{".":{},"f:lastProbeTime":{},"f:lastTransitionTime":{},"f:status":{},"f:type":{}}},"f:containerStatuses":{},"f:hostIP":{},"f:hostIPs":{},"f:phase":{},"f:podIP":{},"f:podIPs":{".":{},"k:{\"ip\":\"10.0.0.1\"}":{".":{},"f:ip":{}}},"f:startTime":{}}}`),
			}},
		Spec: corev1.PodSpec{
			Containers: []corev1.Container{container("app", "http", 8080), container("sidecar", "sc-http", 8081)},
			Volumes: []corev1.Volume{
				{Name: "config", VolumeSource: corev1.VolumeSource{ConfigMap: &corev1.ConfigMapVolumeSource{LocalObjectReference: corev1.LocalObjectReference{Name: "app-config"}, DefaultMode: ptr.To[int32](0o644)}}},
				{Name: "kube-api-access-" + hash[:5], VolumeSource: corev1.VolumeSource{Projected: &corev1.ProjectedVolumeSource{DefaultMode: ptr.To[int32](0o644), Sources: []corev1.VolumeProjection{
					{ServiceAccountToken: &corev1.ServiceAccountTokenProjection{ExpirationSeconds: ptr.To[int64](3607), Path: "token"}},
					{ConfigMap: &corev1.ConfigMapProjection{LocalObjectReference: corev1.LocalObjectReference{Name: "kube-root-ca.crt"}, Items: []corev1.KeyToPath{{Key: "ca.crt", Path: "ca.crt"}}}},
					{DownwardAPI: &corev1.DownwardAPIProjection{Items: []corev1.DownwardAPIVolumeFile{{Path: "namespace", FieldRef: &corev1.ObjectFieldSelector{APIVersion: "v1", FieldPath: "metadata.namespace"}}}}},
				}}}},
			},
			RestartPolicy: corev1.RestartPolicyAlways, TerminationGracePeriodSeconds: ptr.To[int64](30), DNSPolicy: corev1.DNSClusterFirst,
			ServiceAccountName: "default", DeprecatedServiceAccount: "default", NodeName: benchNode(i, j), SecurityContext: &corev1.PodSecurityContext{},
			SchedulerName: corev1.DefaultSchedulerName, Priority: ptr.To[int32](0), EnableServiceLinks: ptr.To(true), PreemptionPolicy: ptr.To(corev1.PreemptLowerPriority),
			Tolerations: []corev1.Toleration{
				{Key: "node.kubernetes.io/not-ready", Operator: corev1.TolerationOpExists, Effect: corev1.TaintEffectNoExecute, TolerationSeconds: ptr.To[int64](300)},
				{Key: "node.kubernetes.io/unreachable", Operator: corev1.TolerationOpExists, Effect: corev1.TaintEffectNoExecute, TolerationSeconds: ptr.To[int64](300)}},
		},
		Status: corev1.PodStatus{
			Phase: corev1.PodRunning, QOSClass: corev1.PodQOSBurstable, StartTime: &t0,
			HostIP: "192.0.2.1", HostIPs: []corev1.HostIP{{IP: "192.0.2.1"}}, PodIP: ip, PodIPs: []corev1.PodIP{{IP: ip}},
			Conditions:        []corev1.PodCondition{cond("PodReadyToStartContainers"), cond(corev1.PodInitialized), cond(corev1.PodReady), cond(corev1.ContainersReady), cond(corev1.PodScheduled)},
			ContainerStatuses: []corev1.ContainerStatus{cstatus("app"), cstatus("sidecar")},
		},
	}
}

// agentObjects is the node agents' object set over the fake clientset: n selecting Services, each
// with one EndpointSlice of eps ready endpoints and their eps Pods (Pod IP = the endpoint), the
// namespaces, kube-dns.
func agentObjects(n, eps int, p Ports) []kruntime.Object {
	objs := make([]kruntime.Object, 0, n*(2+eps)+namespaces+3)
	for k := range namespaces {
		objs = append(objs, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: serviceNamespace(k), ResourceVersion: "1"}})
	}
	objs = append(objs, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "kube-system", ResourceVersion: "1"}})
	for i := range n {
		objs = append(objs, selectingService(i, p), benchSlice(i, eps, p))
		for j := range eps {
			objs = append(objs, benchPod(i, j, endpointIP(i, j, eps).String()))
		}
	}
	dsvc, dsl := dnsObjects()
	return append(objs, dsvc, dsl)
}

// bareInformers are plain client-go informers, no transform, no index, no handler, for the
// resources given (informerSets), in one SharedInformerFactory per list/watch option set as
// discovery.NewWatcher opens them. They stand for "what watching those resources costs at least".
type bareInformers struct {
	factories []informers.SharedInformerFactory
	synced    []cache.InformerSynced
	stores    map[string]cache.Store
}

// The resource sets of a bare informer set.
const (
	setServicesSlices     = "services+endpointslices"
	setServicesSlicesPods = "services+endpointslices+pods"
	// setWatcher is every informer discovery.NewWatcher opens with the exporter's defaults (central
	// and node mode alike): Services, EndpointSlices, Pods, the five workload kinds
	// (--discovery.workloads), NetworkPolicies and Namespaces (--discovery.network-policies), and
	// kube-system's EndpointSlices of kube-dns (--dns.service). TestBareSetOpensWhatTheWatcherOpens
	// keeps it equal to what the watcher lists and watches.
	setWatcher = "watcher"
)

func newBareInformers(client kubernetes.Interface, set string) *bareInformers {
	b := &bareInformers{stores: map[string]cache.Store{}}
	f := informers.NewSharedInformerFactory(client, 0)
	b.factories = append(b.factories, f)
	add := func(name string, inf cache.SharedIndexInformer) {
		b.synced = append(b.synced, inf.HasSynced)
		b.stores[name] = inf.GetStore()
	}
	add("services", f.Core().V1().Services().Informer())
	add("endpointslices", f.Discovery().V1().EndpointSlices().Informer())
	if set == setServicesSlices {
		return b
	}
	add("pods", f.Core().V1().Pods().Informer())
	if set == setServicesSlicesPods {
		return b
	}
	add("deployments", f.Apps().V1().Deployments().Informer())
	add("statefulsets", f.Apps().V1().StatefulSets().Informer())
	add("replicasets", f.Apps().V1().ReplicaSets().Informer())
	add("daemonsets", f.Apps().V1().DaemonSets().Informer())
	add("replicationcontrollers", f.Core().V1().ReplicationControllers().Informer())
	add("networkpolicies", f.Networking().V1().NetworkPolicies().Informer())
	add("namespaces", f.Core().V1().Namespaces().Informer())
	ns, name, _ := strings.Cut(pipeline.Defaults().DNSService, "/")
	dns := informers.NewSharedInformerFactoryWithOptions(client, 0, informers.WithNamespace(ns),
		informers.WithTweakListOptions(func(o *metav1.ListOptions) { o.LabelSelector = discoveryv1.LabelServiceName + "=" + name }))
	b.factories = append(b.factories, dns)
	inf := dns.Discovery().V1().EndpointSlices().Informer()
	b.synced = append(b.synced, inf.HasSynced)
	b.stores["dns-endpointslices"] = inf.GetStore()
	return b
}

func (b *bareInformers) start(ctx context.Context) {
	for _, f := range b.factories {
		f.Start(ctx.Done())
	}
}

// wait waits for every informer's first list, bounded by ctx.
func (b *bareInformers) wait(ctx context.Context) bool {
	return cache.WaitForCacheSync(ctx.Done(), b.synced...)
}

func (b *bareInformers) stop() {
	for _, f := range b.factories {
		f.Shutdown()
	}
}

// counts is how many objects each informer holds.
func (b *bareInformers) counts() map[string]int {
	out := map[string]int{}
	for k, s := range b.stores {
		out[k] = len(s.List())
	}
	return out
}

// AgentResult is what one `agents` child reports.
type AgentResult struct {
	Set                 string // "node" (the agent's pipeline) or setWatcher (the bare informers)
	Services, Pods      int
	EndpointsPerService int
	BuildSeconds        float64 // objects built and loaded into the fake clientset
	SyncSeconds         float64

	RSSBaseline, RSS, RSSDelta    int64 // after GC: fake clientset only; with the set; difference
	HeapBaseline, Heap, HeapDelta int64
	HWM                           int64
	Held                          map[string]int // bare: objects per informer

	// Node agent only.
	Interval      time.Duration
	Probed        uint64 // Service probes completed before the scrape
	Series        int    // sample lines on /metrics
	ServiceSeries int    // of which with a bench Service's labels
	ByVerdict     map[string]float64
	Families      map[string]int // sample lines per family
	Verdicts      map[string]int // exported per-Service verdicts by layer/reason (failing Services only in node mode)
	Notes         []string
}

func runAgents(args []string) error {
	fs := flag.NewFlagSet("agents", flag.ContinueOnError)
	set := fs.String("set", "node", `"node" (the agent's pipeline) or "watcher" (bare informers for what the watcher opens)`)
	n := fs.Int("n", 10000, "Services")
	eps := fs.Int("eps", 10, "endpoints (and Pods) per Service")
	podPort := fs.Int("pod-port", 0, "")
	svcPort := fs.Int("svc-port", 0, "")
	interval := fs.Duration("interval", 15*time.Second, "--probe.interval")
	rounds := fs.Int("rounds", 1, "node: intervals of probing before the scrape")
	if err := fs.Parse(args); err != nil {
		return err
	}
	ports := Ports{Pod: *podPort, Service: *svcPort}
	res := AgentResult{Set: *set, Services: *n, Pods: *n * *eps, EndpointsPerService: *eps, Interval: *interval}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))

	t0 := time.Now()
	client := fake.NewSimpleClientset(agentObjects(*n, *eps, ports)...)
	res.BuildSeconds = time.Since(t0).Seconds()
	res.RSSBaseline, res.HeapBaseline = memAfterFree()

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	switch *set {
	case setWatcher:
		b := newBareInformers(client, setWatcher)
		t1 := time.Now()
		b.start(ctx)
		if !b.wait(ctx) {
			return fmt.Errorf("bare informers did not sync")
		}
		res.SyncSeconds = time.Since(t1).Seconds()
		res.Held = b.counts()
		res.RSS, res.Heap = memAfterFree()
		cancel()
		b.stop()
	case "node":
		cfg := benchConfig{Interval: *interval, Timeout: 2 * time.Second, Concurrency: 64, NewConnsPerSecond: 1000, DNSQPS: 400, PodSpread: 1, VIPConnections: probe.DefaultConnections}
		// --node.pods=all: the fake clientset does not filter by field selector, so the agent holds
		// every Pod here, as one watching all of them would (an upper bound of --node.pods=node).
		p, err := newBenchNodePipeline(cfg, mustResolvConf(), client, agentNode, pipeline.NodePodsAll, log)
		if err != nil {
			return err
		}
		srv := httptest.NewServer(p.Handler) // 127.0.0.1
		defer srv.Close()
		rctx, rcancel := context.WithCancel(ctx)
		done := make(chan struct{})
		go func() { _ = p.Run(rctx); close(done) }()
		defer func() { rcancel(); <-done }()
		t1 := time.Now()
		for !p.Watcher.Synced() && ctx.Err() == nil {
			time.Sleep(20 * time.Millisecond)
		}
		res.SyncSeconds = time.Since(t1).Seconds()
		// A few intervals of sampling (--node.sample-size Services each), every Service known.
		time.Sleep(time.Duration(*rounds)**interval + p.Config.Settle)
		res.Probed = p.Scheduler.Stats().Rounds.Load()
		res.RSS, res.Heap = memAfterFree()
		body, err := scrape(srv.URL + "/metrics")
		if err != nil {
			return err
		}
		res.Series, res.ServiceSeries = countSeries(body)
		res.ByVerdict, res.Families, res.Verdicts = byVerdict(body), familyCounts(body), countVerdicts(body)
		if targets := p.Watcher.Targets(); targets < *n {
			res.Notes = append(res.Notes, fmt.Sprintf("the watcher holds %d of %d Services", targets, *n))
		}
	default:
		return fmt.Errorf("-set=%q: want node or %s", *set, setWatcher)
	}
	res.RSSDelta, res.HeapDelta = res.RSS-res.RSSBaseline, res.Heap-res.HeapBaseline
	res.HWM = procStatusKB("VmHWM") << 10
	out, _ := json.Marshal(res)
	fmt.Printf("RESULT %s\n", out)
	return nil
}

// memAfterFree is RSS and HeapInuse after a GC that also returns the freed pages to the OS
// (debug.FreeOSMemory): RSS then follows the live heap instead of the process's peak.
func memAfterFree() (rss, heap int64) {
	debug.FreeOSMemory()
	return memAfterGC()
}

// byVerdict reads svcprobe_services_by_verdict's samples, by layer.
func byVerdict(body string) map[string]float64 {
	out := map[string]float64{}
	for line := range strings.Lines(body) {
		if !strings.HasPrefix(line, "svcprobe_services_by_verdict{") {
			continue
		}
		var v float64
		if _, rest, ok := strings.Cut(line, "} "); ok {
			fmt.Sscan(rest, &v)
		}
		out[labelValue(line, "layer")] += v
	}
	return out
}

// familyCounts counts sample lines by metric name (suffixes such as _bucket kept).
func familyCounts(body string) map[string]int {
	out := map[string]int{}
	for line := range strings.Lines(body) {
		if line == "" || line[0] == '#' || strings.TrimSpace(line) == "" {
			continue
		}
		name := line
		if k := strings.IndexAny(line, "{ "); k >= 0 {
			name = line[:k]
		}
		out[name]++
	}
	return out
}

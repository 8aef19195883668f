package main

import (
	"context"
	"fmt"
	"runtime"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	kruntime "k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/fake"
)

// namespaceInterval is the namespace shape's --probe.interval: after the first round the probers
// are nearly idle (a Service every 0.1 s at 5k), so the process CPU over the events is the
// watcher's and the fake clientset's, not the probes'.
const namespaceInterval = 10 * time.Minute

// nsPod is Pod j of Service i in the namespace shape's variant.
type nsLayout struct {
	variant string
	n, per  int
}

func (l nsLayout) namespace(i int) string {
	if l.variant == "spread" {
		return serviceNamespace(i)
	}
	return oneNamespace
}

func (l nsLayout) selector(i int) map[string]string {
	if l.variant == "shared" {
		return map[string]string{"tier": "backend", "app": serviceName(i)}
	}
	return map[string]string{"app": serviceName(i)}
}

func (l nsLayout) labels(i int) map[string]string {
	m := podLabels(i)
	if l.variant == "shared" {
		m["tier"] = "backend"
	}
	return m
}

// pod is the Pod of the k-th update: consecutive updates go to different Services, as status
// changes across a namespace do.
func (l nsLayout) pod(k int, ports Ports, rv int) *corev1.Pod {
	m := k % (l.n * l.per)
	i, j := m%l.n, m/l.n
	p := shapePod(l.namespace(i), podEndpoint(i, j, l.per, true), l.labels(i), ports, rv)
	p.Status.ContainerStatuses = []corev1.ContainerStatus{{Name: "app", Ready: true, Started: ptrTrue(), RestartCount: int32(rv)}}
	return p
}

func ptrTrue() *bool { t := true; return &t }

// shapeNamespace: N Services with podsPer Pods each in one namespace ("one"), the same with every
// selector also sharing tier=backend ("shared"), or spread over 50 namespaces ("spread", the
// baseline). Each Service selects its own Pods. Measured: the process CPU per Pod event the
// watcher absorbs (label- and readiness-preserving status updates: a container's restart count),
// and events per second, from the first update to the watcher's queue drained.
func shapeNamespace(o shapeOptions) (ShapesResult, error) {
	l := nsLayout{variant: o.variant, n: o.services, per: o.podsPer}
	switch o.variant {
	case "spread", "one", "shared":
	default:
		return ShapesResult{}, fmt.Errorf("namespace: -variant=%q: want spread, one or shared", o.variant)
	}
	o.cfg.Interval = namespaceInterval
	res := ShapesResult{Services: l.n, Namespaces: 1}
	if o.variant == "spread" {
		res.Namespaces = namespaces
	}
	objs := make([]kruntime.Object, 0, l.n*(2+l.per)+2)
	for i := range l.n {
		ns := l.namespace(i)
		var eps []shapeEndpoint
		for j := range l.per {
			e := podEndpoint(i, j, l.per, true)
			eps = append(eps, e)
			objs = append(objs, shapePod(ns, e, l.labels(i), o.ports, 1))
			res.Pods++
		}
		objs = append(objs, shapeService(i, ns, serviceName(i), l.selector(i), o.ports), shapeSlice(ns, serviceName(i), serviceName(i)+"-x", eps, o.ports, 1))
	}
	dsvc, dsl := dnsObjects()
	objs = append(objs, dsvc, dsl)
	client := fake.NewSimpleClientset(objs...)
	objs = nil
	ctx := context.Background()
	rv := 100

	// The fake clientset alone: the same updates with no informer watching.
	c0 := cpuTime()
	fakeN := 0
	for k, end := 0, time.Now().Add(o.maxTime/3); k < o.events && time.Now().Before(end); k++ {
		rv++
		if err := updatePod(ctx, client, l.pod(k, o.ports, rv)); err != nil {
			return res, err
		}
		fakeN++
	}
	if fakeN > 0 {
		res.FakeMicros = float64((cpuTime() - c0).Microseconds()) / float64(fakeN)
	}

	sp, err := startShapePipeline(o, client)
	if err != nil {
		return res, err
	}
	defer sp.close()
	res.SyncSeconds, res.TargetsSeconds, res.FirstRoundSeconds = sp.waitReady(l.n+1, 5*time.Minute)
	if res.FirstRoundSeconds < 0 {
		res.Notes = append(res.Notes, "not every Service probed once within the bound")
	}
	waitDrained(30 * time.Second)
	time.Sleep(time.Second)
	runtime.GC()
	res.IdleCores = idleCores(3 * time.Second)
	runtime.GC()

	events := sp.p.Watcher.Stats().Events.Load
	e0, g0 := events(), serviceQueue.gets.Load()
	f := newFlow(events)
	t0, c1 := time.Now(), cpuTime()
	end := t0.Add(o.maxTime)
	for k := 0; k < o.events; k++ {
		if time.Now().After(end) {
			res.TimedOut = true
			break
		}
		rv++
		if err := updatePod(ctx, client, l.pod(k, o.ports, rv)); err != nil {
			return res, err
		}
		f.wrote()
	}
	absorbed(events, e0, f.writes, 60*time.Second)
	res.EventSeconds = time.Since(t0).Seconds()
	res.CPUSeconds = (cpuTime() - c1).Seconds()
	res.Writes, res.Events, res.Syncs, res.FlowWaitsTimedOut = f.writes, events()-e0, serviceQueue.gets.Load()-g0, f.timeouts
	res.eventFigures()
	res.Verdicts = verdictsOf(sp.p.Store)
	return res, nil
}

func updatePod(ctx context.Context, c kubernetes.Interface, p *corev1.Pod) error {
	_, err := c.CoreV1().Pods(p.Namespace).Update(ctx, p, metav1.UpdateOptions{})
	return err
}

// idleCores is the process CPU rate over d with nothing written.
func idleCores(d time.Duration) float64 {
	c0, t0 := cpuTime(), time.Now()
	time.Sleep(d)
	return (cpuTime() - c0).Seconds() / time.Since(t0).Seconds()
}

// absorbed waits, bounded, until the watcher handled an event for each of writes since e0 and
// its queue drained.
func absorbed(events func() uint64, e0 uint64, writes int, limit time.Duration) bool {
	end := time.Now().Add(limit)
	for events()-e0 < uint64(writes) && time.Now().Before(end) {
		time.Sleep(2 * time.Millisecond)
	}
	return waitDrained(time.Until(end))
}

// eventFigures derives the per-event figures from the counts.
func (r *ShapesResult) eventFigures() {
	if r.EventSeconds > 0 {
		r.EventsPerSecond = float64(r.Events) / r.EventSeconds
	}
	if r.Events > 0 {
		r.GrossMicros = 1e6 * (r.CPUSeconds - r.IdleCores*r.EventSeconds) / float64(r.Events)
		r.NetMicros = r.GrossMicros - r.FakeMicros*float64(r.Writes)/float64(r.Events)
	}
}

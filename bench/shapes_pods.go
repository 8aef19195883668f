package main

import (
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"time"

	kruntime "k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes/fake"
)

// shapePods: N Services each selecting its podsPer Pods (variant "pods": real Pod objects with
// labels, IPs equal to the slice's addresses, the Ready condition and a container port), or, as
// the baseline, the same Services without a selector and no Pod objects (variant "none", the
// scale runs' shape). Both: one EndpointSlice of podsPer ready endpoints per Service. Measured:
// the pipeline's memory after GC (minus the process with the fake clientset loaded) once every
// Service was probed, and the time to sync and to push every Target.
func shapePods(o shapeOptions) (ShapesResult, error) {
	n, eps := o.services, o.podsPer
	res := ShapesResult{Services: n, Namespaces: namespaces}
	objs := make([]kruntime.Object, 0, n*(2+eps)+2)
	for i := range n {
		svc := benchService(i, o.ports)
		if o.variant == "pods" {
			svc.Spec.Selector = map[string]string{"app": serviceName(i)}
			for j := range eps {
				objs = append(objs, shapePod(serviceNamespace(i), podEndpoint(i, j, eps, true), podLabels(i), o.ports, 1))
				res.Pods++
			}
		}
		objs = append(objs, svc, benchSlice(i, eps, o.ports))
	}
	dsvc, dsl := dnsObjects()
	objs = append(objs, dsvc, dsl)
	client := fake.NewSimpleClientset(objs...)
	objs = nil
	var err error
	res.RSSBaseline, res.HeapBaseline = memAfterGC()

	// A CPU profile of the sync and a heap profile after it, in -out.
	var prof *os.File
	if o.out != "" {
		if prof, err = os.Create(filepath.Join(o.out, fmt.Sprintf("shape-pods-%s-sync.pprof", o.variant))); err == nil {
			_ = pprof.StartCPUProfile(prof)
		}
	}
	sp, err := startShapePipeline(o, client)
	if err != nil {
		return res, err
	}
	defer sp.close()
	res.SyncSeconds, res.TargetsSeconds, res.FirstRoundSeconds = sp.waitReady(n+1, 5*time.Minute)
	if prof != nil {
		pprof.StopCPUProfile()
		prof.Close()
	}
	res.SyncCPUSeconds = sp.targetsCPU.Seconds()
	if res.FirstRoundSeconds < 0 {
		res.Notes = append(res.Notes, fmt.Sprintf("not every Service probed within the bound (%d pending, %d targets)", sp.p.Scheduler.Pending(), sp.p.Watcher.Targets()))
	}
	time.Sleep(time.Second)
	res.RSS, res.HeapDelta = memAfterGC()
	res.RSSDelta, res.HeapDelta = res.RSS-res.RSSBaseline, res.HeapDelta-res.HeapBaseline
	res.Verdicts = verdictsOf(sp.p.Store)
	if o.out != "" {
		if hf, err := os.Create(filepath.Join(o.out, fmt.Sprintf("shape-pods-%s-heap.pprof", o.variant))); err == nil {
			runtime.GC()
			_ = pprof.WriteHeapProfile(hf)
			hf.Close()
		}
	}
	return res, nil
}

// podEndpoint is endpoint j of bench Service i (benchSlice's) as a Pod: same name, address and node.
func podEndpoint(i, j, eps int, ready bool) shapeEndpoint {
	return shapeEndpoint{ip: endpointIP(i, j, eps).String(), pod: fmt.Sprintf("%s-pod-%d", serviceName(i), j), node: fmt.Sprintf("node-%03d", (i+j)%100), ready: ready}
}

// podLabels are the labels of bench Service i's Pods: its app, a Deployment's pod-template-hash
// and a label every bench Pod carries.
func podLabels(i int) map[string]string {
	return map[string]string{"app": serviceName(i), "pod-template-hash": fmt.Sprintf("%08x", uint32(i)*2654435761), "app.kubernetes.io/part-of": "svcprobe-bench"}
}

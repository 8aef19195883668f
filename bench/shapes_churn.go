package main

import (
	"context"
	"fmt"
	"github.com/svcprobe/svcprobe/pipeline"
	"sort"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	kruntime "k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/fake"

	"github.com/svcprobe/svcprobe/metrics"
)

// churnSeconds paces the rolling updates: their steps are spread over about this long, so the
// churn spans a few probe intervals (each step still writes its objects as fast as the watcher
// absorbs them).
const churnSeconds = 45

// slicePerEndpoints is how many endpoints the endpointslice controller puts in a slice (its
// --max-endpoints-per-slice default).
const slicePerEndpoints = 100

// churnPod is one Pod of a rolled Deployment.
type churnPod struct {
	e      shapeEndpoint
	labels map[string]string
	slice  int // index into the Deployment's slices
}

// churnSlice is one EndpointSlice of a rolled Deployment's Service: its Pods, in order.
type churnSlice struct {
	name string
	pods []string
	gone bool
}

// deployment is a Deployment being rolled, as its controllers hold it: Pods by name, the
// Service's slices.
type deployment struct {
	d      int
	gen    int
	pods   map[string]*churnPod
	slices []*churnSlice
	seq    int
}

func (dp *deployment) name() string { return deployName(dp.d) }

func (dp *deployment) hash(gen int) string { return fmt.Sprintf("%04x%04x", dp.d, gen) }

// churner writes what the Deployment, ReplicaSet, kubelet and endpointslice controllers would.
type churner struct {
	ctx    context.Context
	client kubernetes.Interface
	ports  Ports
	flow   *flow
	rv     int
	ips    int // next Pod address (127.12.x.y upwards)
	res    *ShapesResult
}

func (c *churner) nextRV() int { c.rv++; return c.rv }

func (c *churner) newPod(dp *deployment, k int, ready bool) *churnPod {
	hash := dp.hash(dp.gen)
	p := &churnPod{
		e:      shapeEndpoint{ip: addr127(12, c.ips).String(), pod: fmt.Sprintf("%s-%s-%04d", dp.name(), hash, k), node: fmt.Sprintf("node-%03d", c.ips%100), ready: ready},
		labels: map[string]string{"app": dp.name(), "pod-template-hash": hash, "app.kubernetes.io/part-of": "svcprobe-bench"},
		slice:  -1,
	}
	c.ips++
	return p
}

func (c *churner) podObject(p *churnPod) *corev1.Pod {
	o := shapePod(churnNamespace, p.e, p.labels, c.ports, c.nextRV())
	if p.e.terminating {
		now := metav1.Now()
		o.DeletionTimestamp, o.DeletionGracePeriodSeconds = &now, ptrInt64(30)
	}
	return o
}

func ptrInt64(v int64) *int64 { return &v }

func (c *churner) writePod(p *churnPod, create bool) error {
	var err error
	if create {
		_, err = c.client.CoreV1().Pods(churnNamespace).Create(c.ctx, c.podObject(p), metav1.CreateOptions{})
		c.res.PodsCreated++
	} else {
		_, err = c.client.CoreV1().Pods(churnNamespace).Update(c.ctx, c.podObject(p), metav1.UpdateOptions{})
	}
	c.flow.wrote()
	return err
}

func (c *churner) deletePod(p *churnPod) error {
	err := c.client.CoreV1().Pods(churnNamespace).Delete(c.ctx, p.e.pod, metav1.DeleteOptions{})
	c.res.PodsDeleted++
	c.flow.wrote()
	return err
}

func (c *churner) sliceObject(dp *deployment, s *churnSlice) *discoveryv1.EndpointSlice {
	eps := make([]shapeEndpoint, 0, len(s.pods))
	for _, n := range s.pods {
		eps = append(eps, dp.pods[n].e)
	}
	return shapeSlice(churnNamespace, dp.name(), s.name, eps, c.ports, c.nextRV())
}

// writeSlices writes the slices at idx (created when create[idx], deleted when empty).
func (c *churner) writeSlices(dp *deployment, idx map[int]bool, created map[int]bool) error {
	keys := make([]int, 0, len(idx))
	for k := range idx {
		keys = append(keys, k)
	}
	sort.Ints(keys)
	for _, k := range keys {
		s := dp.slices[k]
		var err error
		switch {
		case len(s.pods) == 0 && !created[k]:
			err = c.client.DiscoveryV1().EndpointSlices(churnNamespace).Delete(c.ctx, s.name, metav1.DeleteOptions{})
			s.gone = true
		case created[k]:
			_, err = c.client.DiscoveryV1().EndpointSlices(churnNamespace).Create(c.ctx, c.sliceObject(dp, s), metav1.CreateOptions{})
		default:
			_, err = c.client.DiscoveryV1().EndpointSlices(churnNamespace).Update(c.ctx, c.sliceObject(dp, s), metav1.UpdateOptions{})
		}
		c.res.SliceWrites++
		c.flow.wrote()
		if err != nil {
			return fmt.Errorf("slice %s: %w", s.name, err)
		}
	}
	return nil
}

// place puts new Pods' endpoints into new slices of up to slicePerEndpoints; returns their indexes.
func (dp *deployment) place(pods []*churnPod) map[int]bool {
	created := map[int]bool{}
	for i := 0; i < len(pods); i += slicePerEndpoints {
		s := &churnSlice{name: fmt.Sprintf("%s-%05d", dp.name(), dp.seq)}
		dp.seq++
		dp.slices = append(dp.slices, s)
		k := len(dp.slices) - 1
		for _, p := range pods[i:min(i+slicePerEndpoints, len(pods))] {
			p.slice = k
			s.pods = append(s.pods, p.e.pod)
		}
		created[k] = true
	}
	return created
}

// initial is the Deployment's first generation, all ready, and its objects.
func (c *churner) initial(dp *deployment, replicas int) []kruntime.Object {
	var pods []*churnPod
	for k := range replicas {
		p := c.newPod(dp, k, true)
		dp.pods[p.e.pod] = p
		pods = append(pods, p)
	}
	created := dp.place(pods)
	var objs []kruntime.Object
	for _, p := range pods {
		objs = append(objs, c.podObject(p))
	}
	for k := range created {
		objs = append(objs, c.sliceObject(dp, dp.slices[k]))
	}
	return objs
}

// shapeChurn: background Services (10 Pods each, probed) and D Deployments of deployPods Pods,
// each behind a Service, rolled at the same time with maxSurge 25 % and maxUnavailable 0: per
// batch of a quarter of the replicas, new Pods are created not ready and listed in new slices,
// become ready (Pod and slice), then as many old Pods terminate (Pod deletionTimestamp, slice
// endpoint terminating), are deleted and leave their slices. Halfway, one background Service's
// slice loses its last ready endpoint. Measured: events per second and CPU per event (the whole
// process, re-probes of the changed Services included, minus its rate before the churn), the
// time until the broken Service's verdict is layer=endpoints in the store, and every other
// Service's verdict during and after the churn (anything but ok is a false verdict).
func shapeChurn(o shapeOptions) (ShapesResult, error) {
	res := ShapesResult{Deployments: o.deployments, PodsPerDeployment: o.deployPods, Background: o.background, DetectSeconds: -1}
	client := fake.NewSimpleClientset()
	c := &churner{ctx: context.Background(), client: client, ports: o.ports, rv: 10, res: &res}
	objs := []kruntime.Object{}
	for i := range o.background {
		ns := serviceNamespace(i)
		var eps []shapeEndpoint
		for j := range 10 {
			e := podEndpoint(i, j, 10, true)
			eps = append(eps, e)
			objs = append(objs, shapePod(ns, e, podLabels(i), o.ports, 1))
		}
		objs = append(objs, shapeService(i, ns, serviceName(i), map[string]string{"app": serviceName(i)}, o.ports), shapeSlice(ns, serviceName(i), serviceName(i)+"-x", eps, o.ports, 1))
	}
	deps := make([]*deployment, o.deployments)
	for d := range deps {
		dp := &deployment{d: d, pods: map[string]*churnPod{}}
		deps[d] = dp
		objs = append(objs, shapeService(churnIdxBase+d, churnNamespace, dp.name(), map[string]string{"app": dp.name()}, o.ports))
		objs = append(objs, c.initial(dp, o.deployPods)...)
	}
	dsvc, dsl := dnsObjects()
	objs = append(objs, dsvc, dsl)
	client = fake.NewSimpleClientset(objs...)
	c.client = client
	res.Services = o.background + o.deployments
	res.Pods = o.background*10 + o.deployments*o.deployPods
	objs = nil

	sp, err := startShapePipeline(o, client)
	if err != nil {
		return res, err
	}
	defer sp.close()
	store := sp.p.Store
	res.SyncSeconds, res.TargetsSeconds, res.FirstRoundSeconds = sp.waitReady(res.Services+1, 5*time.Minute)
	if res.FirstRoundSeconds < 0 {
		res.Notes = append(res.Notes, "not every Service probed once within the bound")
	}
	waitDrained(30 * time.Second)
	time.Sleep(2 * time.Second)
	if v := verdictsOf(store); v["ok/success"] != res.Services+1 {
		res.Notes = append(res.Notes, fmt.Sprintf("before the churn, verdicts were %v", v))
	}
	res.IdleCores = idleCores(5 * time.Second)

	broken := o.background / 2
	brokenNS, brokenName := serviceNamespace(broken), serviceName(broken)
	res.DetectService = brokenNS + "/" + brokenName

	// Every other Service's verdict, polled during and after the churn.
	var mu sync.Mutex
	falseSeen := map[string]string{}
	stopPoll := make(chan struct{})
	pollDone := make(chan struct{})
	go func() {
		defer close(pollDone)
		for {
			sts, _ := store.Snapshot()
			mu.Lock()
			res.VerdictPolls++
			for _, st := range sts {
				key := st.Target.Namespace + "/" + st.Target.Name
				if key != res.DetectService && st.Verdict != metrics.LayerOK && falseSeen[key] == "" {
					falseSeen[key] = string(st.Verdict) + "/" + string(st.Reason)
				}
			}
			mu.Unlock()
			select {
			case <-stopPoll:
				return
			case <-time.After(500 * time.Millisecond):
			}
		}
	}()

	events := sp.p.Watcher.Stats().Events.Load
	e0 := events()
	c.flow = newFlow(events)
	stats := sp.p.Scheduler.Stats()
	r0, h0 := stats.Rounds.Load(), stats.ProgrammingHeld.Load()
	m0 := programmingObserved(sp.p)
	churnStart, cpu0 := time.Now(), cpuTime()
	end := churnStart.Add(o.maxTime)
	batch := max(1, o.deployPods/4) // maxSurge 25 %
	steps := 4 * ((o.deployPods + batch - 1) / batch)
	stepPace := time.Duration(churnSeconds) * time.Second / time.Duration(steps)
	var detectDone chan struct{}
	var olds = make([][]*churnPod, len(deps))
	for d, dp := range deps {
		for _, p := range dp.pods {
			olds[d] = append(olds[d], p)
		}
		sort.Slice(olds[d], func(a, b int) bool { return olds[d][a].e.pod < olds[d][b].e.pod })
		dp.gen++
	}
	step := 0
	runStep := func(f func(d int, dp *deployment) error) error {
		t0 := time.Now()
		for d, dp := range deps {
			if err := f(d, dp); err != nil {
				return err
			}
		}
		absorbed(events, e0, c.flow.writes, 30*time.Second)
		res.BusySeconds += time.Since(t0).Seconds()
		step++
		if wait := time.Until(t0.Add(stepPace)); wait > 0 {
			time.Sleep(wait)
		}
		return nil
	}
	news := make([][]*churnPod, len(deps))
	for b := 0; len(olds[0]) > 0; b++ {
		if time.Now().After(end) {
			res.TimedOut = true
			break
		}
		res.Batches++
		// 1. The ReplicaSet controller creates a batch of new Pods, not ready yet; the
		// endpointslice controller lists them (not ready) in new slices.
		if err := runStep(func(d int, dp *deployment) error {
			news[d] = news[d][:0]
			for k := range batch {
				p := c.newPod(dp, b*batch+k, false)
				dp.pods[p.e.pod] = p
				news[d] = append(news[d], p)
				if err := c.writePod(p, true); err != nil {
					return err
				}
			}
			created := dp.place(news[d])
			return c.writeSlices(dp, created, created)
		}); err != nil {
			return res, err
		}
		// 2. The kubelet reports them ready; the slices follow.
		if err := runStep(func(d int, dp *deployment) error {
			touched := map[int]bool{}
			for _, p := range news[d] {
				p.e.ready = true
				touched[p.slice] = true
				if err := c.writePod(p, false); err != nil {
					return err
				}
			}
			return c.writeSlices(dp, touched, nil)
		}); err != nil {
			return res, err
		}
		if b == 1 && detectDone == nil {
			// Halfway: one background Service's slice loses its last ready endpoint.
			detectDone = make(chan struct{})
			var eps []shapeEndpoint
			for j := range 10 {
				eps = append(eps, podEndpoint(broken, j, 10, false))
			}
			sl := shapeSlice(brokenNS, brokenName, brokenName+"-x", eps, o.ports, c.nextRV())
			t0 := time.Now()
			if _, err := client.DiscoveryV1().EndpointSlices(brokenNS).Update(c.ctx, sl, metav1.UpdateOptions{}); err != nil {
				return res, err
			}
			c.flow.wrote()
			go func() {
				defer close(detectDone)
				for time.Since(t0) < 30*time.Second {
					if st, _, ok := store.Lookup(brokenNS, brokenName); ok && st.Verdict == metrics.LayerEndpoints {
						res.DetectSeconds = time.Since(t0).Seconds()
						return
					}
					time.Sleep(5 * time.Millisecond)
				}
			}()
		}
		// 3. As many old Pods terminate: deletionTimestamp set, endpoints terminating.
		if err := runStep(func(d int, dp *deployment) error {
			touched := map[int]bool{}
			for _, p := range olds[d][:min(batch, len(olds[d]))] {
				p.e.ready, p.e.terminating = false, true
				touched[p.slice] = true
				if err := c.writePod(p, false); err != nil {
					return err
				}
			}
			return c.writeSlices(dp, touched, nil)
		}); err != nil {
			return res, err
		}
		// 4. They are gone: deleted, and out of their slices.
		if err := runStep(func(d int, dp *deployment) error {
			touched := map[int]bool{}
			gone := olds[d][:min(batch, len(olds[d]))]
			olds[d] = olds[d][len(gone):]
			for _, p := range gone {
				if err := c.deletePod(p); err != nil {
					return err
				}
				s := dp.slices[p.slice]
				for i, n := range s.pods {
					if n == p.e.pod {
						s.pods = append(s.pods[:i], s.pods[i+1:]...)
						break
					}
				}
				delete(dp.pods, p.e.pod)
				touched[p.slice] = true
			}
			return c.writeSlices(dp, touched, nil)
		}); err != nil {
			return res, err
		}
	}
	res.EventSeconds = time.Since(churnStart).Seconds()
	res.CPUSeconds = (cpuTime() - cpu0).Seconds()
	res.Writes, res.Events, res.FlowWaitsTimedOut = c.flow.writes, events()-e0, c.flow.timeouts
	res.ChurnedProbes = stats.Rounds.Load() - r0
	res.ProgrammingHeld, res.ProgrammingMeasured = stats.ProgrammingHeld.Load()-h0, programmingObserved(sp.p)-m0
	res.eventFigures()
	res.NetMicros = 0 // not separated here: the fake clientset's share is in GrossMicros
	if res.BusySeconds > 0 {
		res.BusyEventsPerSecond = float64(res.Events) / res.BusySeconds
	}
	if detectDone != nil {
		<-detectDone
	}
	// After the churn: one more interval, so every changed Service is probed with its final
	// Pods, still watched for false verdicts.
	time.Sleep(o.cfg.Interval + 3*time.Second)
	close(stopPoll)
	<-pollDone
	sts, _ := store.Snapshot()
	for _, st := range sts {
		key := st.Target.Namespace + "/" + st.Target.Name
		if key == res.DetectService {
			continue
		}
		for _, ch := range st.Changes {
			if ch.At.After(churnStart) && ch.Layer != metrics.LayerOK && falseSeen[key] == "" {
				falseSeen[key] = string(ch.Layer) + "/" + string(ch.Reason)
			}
		}
	}
	res.FalseVerdicts = len(falseSeen)
	res.FalseDetail = map[string]int{}
	for _, v := range falseSeen {
		res.FalseDetail[v]++
	}
	res.Verdicts = verdictsOf(store)
	return res, nil
}

// programmingObserved is how many changes the pipeline's programming latency histogram observed,
// over its stages (read from its registry, as a scrape would).
func programmingObserved(p *pipeline.Pipeline) uint64 {
	mfs, err := p.Registry.Gather()
	if err != nil {
		return 0
	}
	var n uint64
	for _, mf := range mfs {
		if mf.GetName() == "svcprobe_programming_latency_seconds" {
			for _, m := range mf.GetMetric() {
				n += m.GetHistogram().GetSampleCount()
			}
		}
	}
	return n
}

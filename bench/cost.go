package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/miekg/dns"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"

	"github.com/svcprobe/svcprobe/discovery"
	"github.com/svcprobe/svcprobe/pipeline"
	"github.com/svcprobe/svcprobe/probe"
)

// CostResult compares the CPU of one probe through svcprobe's code with a bare loop doing only
// the socket work, same targets, same concurrency, alternating A/B passes in one process.
type CostResult struct {
	Concurrency, Workers int
	TCPProbesPerPass     int
	DNSQueriesPerPass    int
	Passes               int

	TCPBareMicros, TCPPodMicros float64 // median CPU per TCP probe
	TCPRatio                    float64 // median of per-pass ratios
	TCPFailures                 int64   // failed checks over every pod-stage pass (want 0)

	DNSBareMicros, DNSProbeMicros float64 // median CPU per DNS query
	DNSRatio                      float64
	DNSFailures                   int64

	// Workloads Deployments held by an informer: heap per object with discovery.TrimWorkload
	// (what --discovery.workloads adds) and without (the cache untrimmed, the baseline).
	Workloads                               int
	WorkloadTrimmedBytes, WorkloadFullBytes float64
	LoadAvg                                 string
}

func runCost(args []string) error {
	fs := flag.NewFlagSet("cost", flag.ContinueOnError)
	podPort := fs.Int("pod-port", 0, "")
	svcPort := fs.Int("svc-port", 0, "")
	services := fs.Int("services", 500, "Services per pass (10 endpoints each)")
	passes := fs.Int("passes", 7, "A/B passes")
	conc := fs.Int("concurrency", 64, "--probe.concurrency")
	if err := fs.Parse(args); err != nil {
		return err
	}
	ports := Ports{Pod: *podPort, Service: *svcPort}
	const eps = 10
	workers := pipeline.Workers(*conc) // the scheduler's workers
	res := CostResult{Concurrency: *conc, Workers: workers, Passes: *passes}

	targets := make([]*discovery.Target, *services)
	for i := range targets {
		sl, _ := discovery.TrimEndpointSlice(benchSlice(i, eps, ports))
		targets[i] = discovery.BuildTarget(benchService(i, ports), []*discoveryv1.EndpointSlice{sl.(*discoveryv1.EndpointSlice)}, []*corev1.Pod(nil))
	}
	// The stages as the exporter builds them (pipeline.NewProbers, from the scale runs' config):
	// the address guard (no informers here: the bench's --cluster.cidr ranges and the targets' own
	// ClusterIPs) and the resolver classification included. The budget never throttles the rate
	// here: this compares the work per probe, not pacing.
	rc := mustResolvConf()
	pcfg := benchConfig{Timeout: 2 * time.Second, Concurrency: *conc, NewConnsPerSecond: 1e9, DNSQPS: 1e9, PodSpread: 1,
		VIPConnections: probe.DefaultConnections}.pipelineConfig(rc)
	budget, err := pcfg.NewBudget(slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn})))
	if err != nil {
		return err
	}
	dnsVIPs := []netip.Addr{netip.MustParseAddr(dnsVIP)}
	stages := pipeline.NewProbers(pcfg, budget, pcfg.AddressGuard(nil, nil), pcfg.Resolvers(func() []netip.Addr { return dnsVIPs }))
	pod, dnsp := stageOf(stages, probe.StagePod), stageOf(stages, probe.StageDNS)
	if pod == nil || dnsp == nil {
		return fmt.Errorf("pipeline.NewProbers has no pod or dns stage")
	}

	var addrs []string
	for _, t := range targets {
		for _, ep := range t.ReadyEndpoints() {
			addrs = append(addrs, fmt.Sprintf("%s:%d", ep.Addresses[0], ports.Pod))
		}
	}
	res.TCPProbesPerPass = len(addrs)

	// The questions DNSProber asks for each target, for the bare loop.
	type question struct {
		name  string
		qtype uint16
	}
	var questions [][]question
	for _, t := range targets {
		fqdn := t.Name + "." + t.Namespace + ".svc." + clusterDomain + "."
		qs := []question{{fqdn, dns.TypeA}}
		for _, c := range rc.Candidates(t.Name + "." + t.Namespace) {
			qs = append(qs, question{c, dns.TypeA})
			if c == fqdn {
				break
			}
		}
		qs = append(qs, question{"_http._tcp." + fqdn, dns.TypeSRV})
		questions = append(questions, qs)
		res.DNSQueriesPerPass += len(qs)
	}

	var tcpFail, dnsFail atomic.Int64
	overTargets := func(n int, f func(i int)) {
		var next atomic.Int64
		var wg sync.WaitGroup
		for range n {
			wg.Go(func() {
				for i := int(next.Add(1) - 1); i < len(targets); i = int(next.Add(1) - 1) {
					f(i)
				}
			})
		}
		wg.Wait()
	}
	stageCtx := func() (context.Context, context.CancelFunc) { // as Scheduler.run
		return context.WithTimeout(context.Background(), 2*time.Second)
	}
	podPass := func() {
		overTargets(workers, func(i int) {
			ctx, cancel := stageCtx()
			r := pod.Probe(ctx, targets[i])
			cancel()
			tcpFail.Add(int64(r.Failing))
		})
	}
	barePass := func() {
		var next atomic.Int64
		var wg sync.WaitGroup
		d := net.Dialer{Timeout: 2 * time.Second}
		for range *conc {
			wg.Go(func() {
				for i := int(next.Add(1) - 1); i < len(addrs); i = int(next.Add(1) - 1) {
					c, err := d.Dial("tcp", addrs[i])
					if err != nil {
						continue
					}
					_ = c.(*net.TCPConn).SetLinger(0)
					_ = c.Close()
				}
			})
		}
		wg.Wait()
	}
	dnsPass := func() {
		overTargets(workers, func(i int) {
			ctx, cancel := stageCtx()
			r := dnsp.Probe(ctx, targets[i])
			cancel()
			dnsFail.Add(int64(r.Failing))
		})
	}
	server := rc.Servers[0].String()
	bareDNSPass := func() {
		overTargets(workers, func(i int) {
			for _, q := range questions[i] {
				m := new(dns.Msg)
				m.SetQuestion(q.name, q.qtype)
				m.SetEdns0(1232, false)
				c := dns.Client{Net: "udp", Timeout: 2 * time.Second}
				_, _, _ = c.Exchange(m, server)
			}
		})
	}
	measure := func(f func()) time.Duration {
		c0 := cpuTime()
		f()
		return cpuTime() - c0
	}
	// Warm up both paths once (connection tables, goroutine stacks, first allocations).
	barePass()
	podPass()
	bareDNSPass()
	dnsPass()
	tcpFail.Store(0)
	dnsFail.Store(0)
	var tb, tp, tr, db, dp, dr []float64
	for range *passes {
		b := measure(barePass)
		p := measure(podPass)
		tb, tp, tr = append(tb, perOp(b, res.TCPProbesPerPass)), append(tp, perOp(p, res.TCPProbesPerPass)), append(tr, float64(p)/float64(b))
		b = measure(bareDNSPass)
		p = measure(dnsPass)
		db, dp, dr = append(db, perOp(b, res.DNSQueriesPerPass)), append(dp, perOp(p, res.DNSQueriesPerPass)), append(dr, float64(p)/float64(b))
	}
	res.TCPBareMicros, res.TCPPodMicros, res.TCPRatio = median(tb), median(tp), median(tr)
	res.DNSBareMicros, res.DNSProbeMicros, res.DNSRatio = median(db), median(dp), median(dr)
	res.TCPFailures, res.DNSFailures = tcpFail.Load(), dnsFail.Load()
	res.LoadAvg = loadAvg()
	res.Workloads = 10000
	if res.WorkloadTrimmedBytes, res.WorkloadFullBytes, err = workloadMemory(res.Workloads); err != nil {
		return fmt.Errorf("workload memory: %w", err)
	}
	out, _ := json.Marshal(res)
	fmt.Printf("RESULT %s\n", out)
	return nil
}

// stageOf is the prober of stage s among ps, or nil.
func stageOf(ps []probe.Prober, s probe.Stage) probe.Prober {
	for _, p := range ps {
		if p.Stage() == s {
			return p
		}
	}
	return nil
}

func perOp(d time.Duration, n int) float64 { return float64(d.Microseconds()) / float64(n) }

func mustResolvConf() probe.ResolvConf {
	rc, err := probe.ParseResolvConf(strings.NewReader(resolvConf()))
	if err != nil {
		panic(err)
	}
	return rc
}

package main

// The orchestrator's side of issue 19's node-agent cost (agents.go, agents_apiserver.go): its
// flags, its children, and its section of results.md.

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"
)

// agentOptions are the flags of the node-agent runs.
type agentOptions struct {
	agents, onlyAgents bool
	services           int // Services of the fake-clientset run (10 Pods each)
	apiAgents          int // informer sets of each kind against the API server (0: skip)
	apiServices        int
	apiPods            int // per Service
	apiWindow          time.Duration
	apiRate            float64
}

func (a *agentOptions) flags(fs *flag.FlagSet) {
	fs.BoolVar(&a.agents, "agents", true, "issue 19: a node agent's series and memory at -agents-services, and -apiserver-agents agents against a real kube-apiserver")
	fs.BoolVar(&a.onlyAgents, "only-agents", false, "run the node-agent measurements alone (no cost or scale runs); their section goes to <out>/agents.md")
	fs.IntVar(&a.services, "agents-services", 10000, "Services of the one-agent run (10 endpoints and 10 Pods each)")
	fs.IntVar(&a.apiAgents, "apiserver-agents", 200, "informer sets of each kind against the bench's kube-apiserver (0: skip)")
	fs.IntVar(&a.apiServices, "apiserver-services", 1000, "Services loaded into the bench's kube-apiserver")
	fs.IntVar(&a.apiPods, "apiserver-pods", 1, "Pods per Service in the kube-apiserver runs (every bare set holds each untrimmed)")
	fs.DurationVar(&a.apiWindow, "apiserver-window", 45*time.Second, "kube-apiserver CPU window per informer set kind")
	fs.Float64Var(&a.apiRate, "apiserver-rate", 20, "Pod updates per second during each window")
}

// short shrinks the runs for -short.
func (a *agentOptions) short() {
	a.services, a.apiAgents, a.apiWindow = 2000, 50, 20*time.Second
}

// agentsMaxServices is what the serve child must answer for (DNS records, listeners).
func agentsMaxServices(o options) int {
	if !o.agent.agents && !o.agent.onlyAgents {
		return 0
	}
	return o.agent.services
}

// agentRuns is what the node-agent children reported.
type agentRuns struct {
	node, bare *AgentResult
	api        *APIResult
	errs       []string
	took       time.Duration
}

// runAgentChildren runs the one-agent children (node, then the bare informers) and the apiserver
// child, each in a process of its own; a failing one is reported in the section, not fatal.
func runAgentChildren(ctx context.Context, self string, o options, portArgs []string) agentRuns {
	t0 := time.Now()
	var r agentRuns
	a := o.agent
	fmt.Printf("agents: one node agent at %d Services x 10 Pods, then bare informers over the same objects ...\n", a.services)
	for _, set := range []string{"node", setWatcher} {
		var res AgentResult
		args := append([]string{"agents", "-set=" + set, fmt.Sprintf("-n=%d", a.services), fmt.Sprintf("-interval=%s", o.interval)}, portArgs...)
		if err := child(ctx, self, filepath.Join(o.out, "agents-"+set+".log"), &res, args...); err != nil {
			r.errs = append(r.errs, err.Error())
			continue
		}
		fmt.Printf("  %s: RSS +%s, heap +%s, %d series\n", set, mib(res.RSSDelta), mib(res.HeapDelta), res.Series)
		if set == "node" {
			r.node = &res
		} else {
			r.bare = &res
		}
	}
	if a.apiAgents > 0 {
		fmt.Printf("agents: %d informer sets of each kind against kube-apiserver (%d Services, %d Pods) ...\n", a.apiAgents, a.apiServices, a.apiServices*a.apiPods)
		var res APIResult
		args := []string{"apiserver", fmt.Sprintf("-agents=%d", a.apiAgents), fmt.Sprintf("-services=%d", a.apiServices), fmt.Sprintf("-pods=%d", a.apiPods),
			fmt.Sprintf("-window=%s", a.apiWindow), fmt.Sprintf("-rate=%g", a.apiRate), "-log-dir=" + o.out}
		if err := child(ctx, self, filepath.Join(o.out, "agents-apiserver.log"), &res, args...); err != nil {
			r.errs = append(r.errs, err.Error())
		} else {
			r.api = &res
			for _, ph := range res.Phases {
				fmt.Printf("  %s x %d: kube-apiserver %.3f cores, RSS %s, %.0f watches; %s per agent here\n", ph.Set, ph.Agents, ph.APICores, mib(ph.APIRSS), ph.Watches, mib(ph.BenchHeapPerAgent))
			}
			if res.NotRun != "" {
				fmt.Println("  " + res.NotRun)
			}
		}
	}
	r.took = time.Since(t0)
	if b, err := json.MarshalIndent(r.export(), "", "  "); err == nil {
		_ = os.WriteFile(filepath.Join(o.out, "agents.json"), b, 0o644)
	}
	return r
}

// agentRunsJSON is agentRuns as written to <out>/agents.json (`bench agents-report <file>`
// renders the section again from it).
type agentRunsJSON struct {
	Node, Bare *AgentResult
	API        *APIResult
	Errs       []string
	Took       time.Duration
}

func (r agentRuns) export() agentRunsJSON {
	return agentRunsJSON{r.node, r.bare, r.api, r.errs, r.took}
}

// runAgentsReport prints the section rendered from an agents.json.
func runAgentsReport(args []string) error {
	if len(args) != 1 {
		return fmt.Errorf("usage: bench agents-report <out>/agents.json")
	}
	b, err := os.ReadFile(args[0])
	if err != nil {
		return err
	}
	var j agentRunsJSON
	if err := json.Unmarshal(b, &j); err != nil {
		return err
	}
	fmt.Print(agentsSection(agentRuns{node: j.Node, bare: j.Bare, api: j.API, errs: j.Errs, took: j.Took}))
	return nil
}

// agentsSection is the node-agent section of results.md.
func agentsSection(r agentRuns) string {
	var b strings.Builder
	w := func(format string, a ...any) { fmt.Fprintf(&b, format, a...) }
	w("\n## Node agents (issue 19)\n\n")
	w("Generated %s; took %s. ", time.Now().UTC().Format("2006-01-02 15:04 MST"), r.took.Round(time.Second))
	w("One agent: `pipeline.New` with `--mode=node --node-name=%s` (the defaults otherwise: --node.sample-size=50, the workload and NetworkPolicy informers) over client-go's fake clientset, probing the serve child on loopback; ", agentNode)
	w("baseline: plain client-go informers, no transform, for exactly what its watcher opens (Services, EndpointSlices, Pods, Deployments, StatefulSets, ReplicaSets, DaemonSets, ReplicationControllers, NetworkPolicies, Namespaces, kube-system's kube-dns EndpointSlices; `TestBareSetOpensWhatTheWatcherOpens`), each in a process of its own, memory after GC and FreeOSMemory minus the same process with the fake clientset loaded.\n\n")
	var rows []row
	if n, bare := r.node, r.bare; n != nil {
		failing := 0.0
		for layer, v := range n.ByVerdict {
			if layer != "ok" && layer != "idle" {
				failing += v
			}
		}
		rows = append(rows, row{fmt.Sprintf("Series on one agent's /metrics, %dk Services × %d Pods, nothing failing", n.Services/1000, n.EndpointsPerService), "≤ 500",
			fmt.Sprintf("%d (%d per-Service; %d Service probes before the scrape, --probe.interval=%s; svcprobe_services_by_verdict: ok %.0f, failing %.0f)", n.Series, n.ServiceSeries, n.Probed, n.Interval, n.ByVerdict["ok"], failing),
			"", "", passFail(n.Series <= 500 && failing == 0)})
		if bare != nil {
			rows = append(rows,
				row{fmt.Sprintf("Memory of one agent, %dk Services, %dk Pods, %dk endpoints (RSS after GC, fake clientset's excluded)", n.Services/1000, n.Pods/1000, n.Pods/1000), "≤ 2× bare",
					fmt.Sprintf("%s RSS (heap %s)", mib(n.RSSDelta), mib(n.HeapDelta)), fmt.Sprintf("%s RSS (heap %s): bare informers, %d objects", mib(bare.RSSDelta), mib(bare.HeapDelta), sumCounts(bare.Held)),
					ratio(float64(n.RSSDelta), float64(bare.RSSDelta)), passFail(n.RSSDelta <= 2*bare.RSSDelta)},
				row{"… heap only", "≤ 2× bare", mib(n.HeapDelta), mib(bare.HeapDelta), ratio(float64(n.HeapDelta), float64(bare.HeapDelta)), passFail(n.HeapDelta <= 2*bare.HeapDelta)})
		}
	}
	if a := r.api; a != nil && a.NotRun == "" {
		byset := map[string]APIPhase{}
		for _, ph := range a.Phases {
			byset[ph.Set] = ph
		}
		none, se, sep, node, nodeAll := byset[phaseNone], byset[setServicesSlices], byset[setServicesSlicesPods], byset[phaseNode], byset[phaseNodeAllPods]
		if node.Agents > 0 && se.Agents > 0 && sep.Agents > 0 {
			n := float64(node.Agents)
			perAgentMilli := func(ph APIPhase) string {
				return fmt.Sprintf("%.2f", 1000*(ph.APICores-none.APICores)/n)
			}
			rows = append(rows,
				row{fmt.Sprintf("kube-apiserver CPU, %d node agents, %.0f Pod updates/s (cores; per agent above no agent, millicores)", node.Agents, a.Rate), "(cost, no target)",
					fmt.Sprintf("%.3f (%s m/agent)", node.APICores, perAgentMilli(node)),
					fmt.Sprintf("%.3f Services+EndpointSlices (%s m/agent); %.3f +Pods (%s m/agent); %.3f no agent", se.APICores, perAgentMilli(se), sep.APICores, perAgentMilli(sep), none.APICores),
					ratio(node.APICores, se.APICores) + " vs S+E, " + ratio(node.APICores, sep.APICores) + " vs S+E+P", "info"},
				row{"… of which the Pod watches (S+E+P − S+E, per agent; per Pod event sent to one watcher)", "(cost, no target)",
					fmt.Sprintf("%.2f millicores per agent at %.1f updates/s; %.0f µs of kube-apiserver CPU per Pod event per watcher (%.1f KiB each)", 1000*(sep.APICores-se.APICores)/n, float64(sep.Updates)/max(sep.WindowSeconds, 1e-9),
						1e6*(sep.APICPUSeconds-se.APICores*sep.WindowSeconds)/max(sep.WatchEvents-se.WatchEvents*sep.WindowSeconds/max(se.WindowSeconds, 1e-9), 1), sep.WatchEventBytes/max(sep.WatchEvents, 1)/1024), "", "", "info"},
			)
			if nodeAll.Agents > 0 {
				podEvents := func(ph APIPhase) float64 {
					return ph.WatchEvents - se.WatchEvents*ph.WindowSeconds/max(se.WindowSeconds, 1e-9)
				}
				rows = append(rows, row{"… the agents' own Pods only (--node.pods=node) against every Pod (--node.pods=all), same agents (cores; per agent above no agent; watch events sent beyond S+E's)", "(cost, no target)",
					fmt.Sprintf("%.3f (%s m/agent; %.0f events)", node.APICores, perAgentMilli(node), podEvents(node)),
					fmt.Sprintf("%.3f --node.pods=all (%s m/agent; %.0f events); %.3f Services+EndpointSlices", nodeAll.APICores, perAgentMilli(nodeAll), podEvents(nodeAll), se.APICores),
					ratio(node.APICores-none.APICores, nodeAll.APICores-none.APICores) + " above no agent", "info"},
					row{"… sync of the agents (all sets opened, each batch synced)", "(cost, no target)",
						fmt.Sprintf("%.1f s --node.pods=node", node.SyncSeconds), fmt.Sprintf("%.1f s --node.pods=all, %.1f s S+E", nodeAll.SyncSeconds, se.SyncSeconds),
						ratio(node.SyncSeconds, nodeAll.SyncSeconds), "info"})
			}
			rows = append(rows,
				row{fmt.Sprintf("kube-apiserver RSS with %d agents open", node.Agents), "(cost, no target)",
					fmt.Sprintf("%s (%s before opening)", mib(node.APIRSS), mib(node.APIRSSBefore)),
					fmt.Sprintf("%s S+E, %s S+E+P; %s loaded, no agent", mib(se.APIRSS), mib(sep.APIRSS), mib(a.APIRSSLoaded)), ratio(float64(node.APIRSS), float64(se.APIRSS)) + " vs S+E", "info"},
				row{"Watches open on kube-apiserver (apiserver_longrunning_requests{verb=\"WATCH\"}, its own excluded)", "(cost, no target)",
					fmt.Sprintf("%.0f (%.1f per agent: %s)", node.Watches, node.Watches/n, watchList(node.WatchesByResource)),
					fmt.Sprintf("%.0f S+E, %.0f S+E+P", se.Watches, sep.Watches), ratio(node.Watches, sep.Watches) + " vs S+E+P", "info"},
				row{fmt.Sprintf("Memory per agent in the bench process (%d Services, %d Pods; heap after GC)", a.Services, a.Pods), "(cost, no target)",
					fmt.Sprintf("%s heap, %s RSS", kib(node.BenchHeapPerAgent), kib(node.BenchRSSPerAgent)),
					fmt.Sprintf("%s S+E, %s S+E+P (heap)", kib(se.BenchHeapPerAgent), kib(sep.BenchHeapPerAgent)), ratio(float64(node.BenchHeapPerAgent), float64(sep.BenchHeapPerAgent)) + " vs S+E+P", "info"},
				row{"… Pods' share per agent per Pod (bare: S+E+P − S+E)", "(cost, no target)",
					fmt.Sprintf("%.1f KiB untrimmed per Pod per agent", float64(sep.BenchHeapPerAgent-se.BenchHeapPerAgent)/float64(max(1, a.Pods))/1024), "", "", "info"},
			)
		}
	}
	if len(rows) > 0 {
		w("| figure | target | measured | baseline (same run) | ratio | result |\n|---|---|---|---|---|---|\n")
		for _, rw := range rows {
			w("| %s | %s | %s | %s | %s | %s |\n", rw.figure, rw.target, rw.measured, rw.baseline, rw.ratio, rw.verdict)
		}
	}
	if a := r.api; a != nil {
		if a.NotRun != "" {
			w("\nkube-apiserver runs: %s.\n", a.NotRun)
		} else {
			w("\nkube-apiserver runs (%s, started by the bench on 127.0.0.1 in %.1f s, its objects loaded in %.1f s: %d Services, %d EndpointSlices, %d Pods of two containers written as the kubelet would, status included, in 50 namespaces): ",
				a.Versions, a.StartSeconds, a.LoadSeconds, a.Services, a.Slices, a.Pods)
			w("each kind of informer set opened N times in this process (batches of 20, each synced before the next), then %.0f Pod updates/s (an annotation patch, one event to every Pod watcher) for the window while kube-apiserver's utime+stime is read from /proc/<pid>/stat (the window stretches when this process, decoding every event of every set, falls behind the pace: cores are per second of window); then closed. The bare sets ask for JSON (client-go's default); the node agents for protobuf, as the exporter does (pipeline.TuneRESTConfig); the watch events' sizes are as kube-apiserver reports them (apiserver_watch_events_sizes). ", a.Rate)
			w("The node agent's set is `pipeline.New --mode=node` with its watcher run and its scheduler never started (nothing is dialed: the objects' addresses are data only). The Pod count is bounded by the bare sets: each holds every Pod untrimmed (this process's memory limit %s, peak RSS %s).\n\n", mib(a.MemoryLimit), mib(a.PeakRSS))
			w("| set | agents | synced in | watches (its own excluded) | apiserver cores | etcd cores | updates (failed), per s | watch events sent (MiB) | apiserver RSS before / open | heap per agent here | RSS per agent here |\n|---|---|---|---|---|---|---|---|---|---|---|\n")
			for _, ph := range a.Phases {
				w("| %s | %d | %.1f s | %.0f | %.3f | %.3f | %d (%d), %.1f/s | %.0f (%.1f) | %s / %s | %s | %s |\n", ph.Set, ph.Agents, ph.SyncSeconds, ph.Watches, ph.APICores, ph.EtcdCores, ph.Updates, ph.Errors, float64(ph.Updates)/max(ph.WindowSeconds, 1e-9),
					ph.WatchEvents, ph.WatchEventBytes/(1<<20), mib(ph.APIRSSBefore), mib(ph.APIRSS), kib(ph.BenchHeapPerAgent), kib(ph.BenchRSSPerAgent))
				for _, note := range ph.Notes {
					w("\nNote (%s): %s\n", ph.Set, note)
				}
			}
			for _, note := range a.Notes {
				w("\nNote: %s\n", note)
			}
		}
	} else if len(r.errs) == 0 {
		w("\nkube-apiserver runs: not run (-apiserver-agents=0).\n")
	}
	for _, e := range r.errs {
		w("\nNot measured: %s\n", e)
	}
	return b.String()
}

func kib(b int64) string { return fmt.Sprintf("%.0f KiB", float64(b)/1024) }

func sumCounts(m map[string]int) int {
	s := 0
	for _, v := range m {
		s += v
	}
	return s
}

// watchList is "resource n, ..." sorted by resource.
func watchList(m map[string]float64) string {
	var parts []string
	for k, v := range m {
		parts = append(parts, fmt.Sprintf("%s %.0f", k, v))
	}
	slices.Sort(parts)
	return strings.Join(parts, ", ")
}

// writeAgentsOnly writes the section alone, for -only-agents.
func writeAgentsOnly(o options, md string) error {
	fmt.Print(md)
	return os.WriteFile(filepath.Join(o.out, "agents.md"), []byte(md), 0o644)
}

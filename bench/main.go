// Command bench measures svcprobe against Kubernetes' scalability thresholds (issue 7): the
// exporter's pipeline (pipeline.New, what cmd/exporter serves) over client-go's fake clientset,
// probing real sockets on loopback. See bench/README.md.
//
// Modes (the orchestrator re-executes itself for the others, so each has a process of its own and
// its CPU and memory are its own):
//
//	bench [flags]      orchestrator: runs everything, prints the table, writes bench/results.md
//	bench serve ...    the TCP listeners and the DNS server, counting per 1 s window
//	bench scale ...    one exporter pipeline at one scale
//	bench cost ...     CPU per probe against bare loops
package main

import (
	"bufio"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"github.com/svcprobe/svcprobe/probe"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

func main() {
	var err error
	if len(os.Args) > 1 {
		switch os.Args[1] {
		case "serve":
			err = runServe(os.Args[2:])
		case "scale":
			err = runScale(os.Args[2:])
		case "cost":
			err = runCost(os.Args[2:])
		case "shapes":
			err = runShapes(os.Args[2:])
		default:
			err = orchestrate(os.Args[1:])
		}
	} else {
		err = orchestrate(nil)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

type options struct {
	short     bool
	scales    []int
	interval  time.Duration
	intervals int
	soak      time.Duration
	out       string
	results   string
	conc      int
	conns     float64
	dnsQPS    float64
	epsPoint  int  // endpoints per Service of the extra 1k point (per-endpoint memory); 0: none
	spread    int  // --probe.pod.spread of an extra run at the largest scale; 1: none
	vipBase   bool // an extra run at the largest scale with --probe.vip-connections=1, the baseline of the vip row

	// The shapes of issue 19 (shapes.go); onlyShapes: them alone, their section in <out>/shapes.md.
	shapes, onlyShapes bool
}

func orchestrate(args []string) error {
	fs := flag.NewFlagSet("bench", flag.ContinueOnError)
	o := options{}
	scales := fs.String("scales", "1000,2000,5000,10000", "Services per run (10 ready endpoints each)")
	fs.BoolVar(&o.short, "short", false, "quick run: 1k and 10k only, one interval, no soak, no per-endpoint point")
	fs.DurationVar(&o.interval, "interval", 15*time.Second, "--probe.interval")
	fs.IntVar(&o.intervals, "intervals", 2, "intervals in each CPU window")
	fs.DurationVar(&o.soak, "soak", 60*time.Second, "extra run time at the largest scale watching ports and budgets (10m for the issue's soak)")
	fs.StringVar(&o.out, "out", "bench/out", "profiles and logs (gitignored)")
	fs.StringVar(&o.results, "results", "bench/results.md", "the table, in Markdown")
	fs.IntVar(&o.conc, "concurrency", 64, "--probe.concurrency (the flag's default)")
	fs.Float64Var(&o.conns, "conns", 11000, "--probe.max-new-conns-per-second (10k Services x 14 TCP probes (10 Pods + 4 to the ClusterIP) / 15 s = 9.3k/s)")
	fs.Float64Var(&o.dnsQPS, "dns-qps", 3000, "--dns.max-qps (10k Services x 3 queries / 15 s = 2k/s)")
	fs.IntVar(&o.spread, "spread", 5, "--probe.pod.spread of an extra run at the largest scale (1: skip)")
	fs.BoolVar(&o.vipBase, "vip-base", true, "an extra run at the largest scale with --probe.vip-connections=1: the baseline of the cost of 4 connections per VIP")
	fs.IntVar(&o.epsPoint, "eps-point", 50, "endpoints per Service of an extra 1k-Service run, for memory per endpoint (0: skip)")
	fs.BoolVar(&o.shapes, "shapes", true, "the shapes of issue 19: Pods, one big namespace, churn, web (-short: smaller)")
	fs.BoolVar(&o.onlyShapes, "only-shapes", false, "run the shapes alone (no cost or scale runs); their section goes to <out>/shapes.md, not -results")
	if err := fs.Parse(args); err != nil {
		return err
	}
	for _, s := range strings.Split(*scales, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(s))
		if err != nil || n <= 0 {
			return fmt.Errorf("-scales: bad %q", s)
		}
		o.scales = append(o.scales, n)
	}
	if o.short {
		o.scales, o.intervals, o.soak, o.epsPoint = []int{1000, 10000}, 1, 0, 0
	}
	if err := os.MkdirAll(o.out, 0o755); err != nil {
		return err
	}
	self, err := os.Executable()
	if err != nil {
		return err
	}
	started := time.Now()
	loadStart := loadAvg()
	maxN := 0
	for _, n := range o.scales {
		maxN = max(maxN, n)
	}

	// The servers, in a child of their own.
	ctx, cancel := context.WithTimeout(context.Background(), 40*time.Minute)
	defer cancel()
	serve := exec.CommandContext(ctx, self, "serve", fmt.Sprintf("-n=%d", max(maxN, 1000, shapesMaxServices(o.short))), "-max=40m")
	serveIn, _ := serve.StdinPipe()
	serveOut, _ := serve.StdoutPipe()
	serve.Stderr = os.Stderr
	if err := serve.Start(); err != nil {
		return err
	}
	defer func() { serveIn.Close(); _ = serve.Wait() }()
	var info ServeInfo
	sc := bufio.NewScanner(serveOut)
	for sc.Scan() {
		if j, ok := strings.CutPrefix(sc.Text(), "READY "); ok {
			if err := json.Unmarshal([]byte(j), &info); err != nil {
				return err
			}
			break
		}
	}
	if info.Control == "" {
		return fmt.Errorf("serve child did not start (port 53 on %s taken?)", dnsVIP)
	}
	go io.Copy(io.Discard, serveOut)
	fmt.Printf("servers: TCP 0.0.0.0:%d (endpoints) and 0.0.0.0:%d (ClusterIPs), DNS %s:53 and %s:53\n",
		info.Ports.Pod, info.Ports.Service, dnsVIP, dnsPodIP)

	portArgs := []string{fmt.Sprintf("-pod-port=%d", info.Ports.Pod), fmt.Sprintf("-svc-port=%d", info.Ports.Service)}
	if o.onlyShapes {
		md := shapesSection(runShapeChildren(ctx, self, o, portArgs, info.Control))
		fmt.Print(md)
		return os.WriteFile(filepath.Join(o.out, "shapes.md"), []byte(md), 0o644)
	}
	var cost CostResult
	fmt.Println("cost per probe: pod stage and DNS stage against bare loops ...")
	if err := child(ctx, self, filepath.Join(o.out, "cost.log"), &cost, append([]string{"cost", fmt.Sprintf("-concurrency=%d", o.conc)}, portArgs...)...); err != nil {
		return err
	}
	fmt.Printf("  TCP %.1f vs %.1f µs CPU/probe (x%.2f), DNS %.1f vs %.1f µs CPU/query (x%.2f)\n",
		cost.TCPPodMicros, cost.TCPBareMicros, cost.TCPRatio, cost.DNSProbeMicros, cost.DNSBareMicros, cost.DNSRatio)

	type run struct{ n, eps, spread, vip int }
	var runs []run
	for _, n := range o.scales {
		runs = append(runs, run{n, 10, 1, probe.DefaultConnections})
	}
	if o.vipBase {
		runs = append(runs, run{maxN, 10, 1, 1})
	}
	if o.spread > 1 {
		runs = append(runs, run{maxN, 10, o.spread, probe.DefaultConnections})
	}
	if o.epsPoint > 0 {
		runs = append(runs, run{1000, o.epsPoint, 1, probe.DefaultConnections})
	}
	var results []ScaleResult
	for _, r := range runs {
		args := append([]string{"scale", fmt.Sprintf("-n=%d", r.n), fmt.Sprintf("-eps=%d", r.eps), "-control=" + info.Control,
			fmt.Sprintf("-interval=%s", o.interval), fmt.Sprintf("-intervals=%d", o.intervals), fmt.Sprintf("-concurrency=%d", o.conc),
			fmt.Sprintf("-conns=%g", o.conns), fmt.Sprintf("-dns-qps=%g", o.dnsQPS), fmt.Sprintf("-spread=%d", r.spread), fmt.Sprintf("-vip-connections=%d", r.vip), "-out=" + o.out}, portArgs...)
		if r.n == maxN && r.eps == 10 && r.spread == 1 && r.vip == probe.DefaultConnections {
			args = append(args, "-profile="+filepath.Join(o.out, fmt.Sprintf("cpu-%d.pprof", r.n)), "-detect", fmt.Sprintf("-soak=%s", o.soak))
		}
		fmt.Printf("scale: %d Services x %d endpoints, --probe.pod.spread=%d --probe.vip-connections=%d ...\n", r.n, r.eps, r.spread, r.vip)
		var res ScaleResult
		if err := child(ctx, self, filepath.Join(o.out, fmt.Sprintf("scale-%d-%d-%d-%d.log", r.n, r.eps, r.spread, r.vip)), &res, args...); err != nil {
			return err
		}
		fmt.Printf("  %.3f cores, RSS +%s, scrape %.3fs, %.1f series/Service, rounds %d/%.0f, max lag %.2fs\n",
			res.Cores, mib(res.RSSDelta), res.ScrapeSeconds, res.SeriesPerService, res.Rounds, res.RoundsExpected, res.MaxLagSeconds)
		results = append(results, res)
	}
	var shapesMD string
	if o.shapes {
		shapesMD = shapesSection(runShapeChildren(ctx, self, o, portArgs, info.Control))
	}
	md := report(o, cost, results, loadStart, loadAvg(), time.Since(started)) + shapesMD
	fmt.Println()
	fmt.Print(md)
	return os.WriteFile(o.results, []byte(md), 0o644)
}

// child runs one mode of this binary, its stderr to logPath, and decodes its RESULT line.
func child(ctx context.Context, self, logPath string, v any, args ...string) error {
	ctx, cancel := context.WithTimeout(ctx, 20*time.Minute)
	defer cancel()
	logf, err := os.Create(logPath)
	if err != nil {
		return err
	}
	defer logf.Close()
	cmd := exec.CommandContext(ctx, self, args...)
	cmd.Stderr = logf
	out, err := cmd.Output()
	for line := range strings.Lines(string(out)) {
		if j, ok := strings.CutPrefix(strings.TrimSpace(line), "RESULT "); ok {
			return json.Unmarshal([]byte(j), v)
		}
	}
	return fmt.Errorf("%s %s: no result (%v); see %s", filepath.Base(self), args[0], err, logPath)
}

func mib(b int64) string { return fmt.Sprintf("%.1f MiB", float64(b)/(1<<20)) }

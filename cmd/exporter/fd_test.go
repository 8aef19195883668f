package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/exporter-toolkit/web"
	"golang.org/x/sys/unix"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/kubernetes/fake"
	"k8s.io/utils/ptr"
)

// The fd child's knobs, set by the parent test.
const (
	envFDAddr     = "SVCPROBE_TEST_FD_ADDR"     // where the child serves
	envFDSeconds  = "SVCPROBE_TEST_FD_SECONDS"  // how long it runs
	envFDServices = "SVCPROBE_TEST_FD_SERVICES" // how many Services it probes
	envFDHeadroom = "SVCPROBE_TEST_FD_HEADROOM" // descriptors above what it holds at start
)

// fdChildReport is the child's last line on stdout.
type fdChildReport struct {
	Limit      uint64  `json:"limit"`
	FDsAtStart int     `json:"fds_at_start"`
	Sockets    int     `json:"sockets_per_round"`
	CPUSeconds float64 `json:"cpu_seconds"`
	Wall       float64 `json:"wall_seconds"`
	Err        string  `json:"err,omitempty"`
}

func openFDs() int {
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		return -1
	}
	return len(ents)
}

// fdChild runs the exporter wiring on a fake cluster with many more sockets per round than its
// RLIMIT_NOFILE allows, for the parent to scrape. It runs in a child process because the limit
// cannot be undone and would starve the other tests.
func fdChild() int {
	report := fdChildReport{}
	defer func() {
		b, _ := json.Marshal(report)
		fmt.Println(string(b))
	}()
	fail := func(err error) int { report.Err = err.Error(); return 1 }
	seconds, _ := strconv.Atoi(os.Getenv(envFDSeconds))
	services, _ := strconv.Atoi(os.Getenv(envFDServices))
	headroom, _ := strconv.Atoi(os.Getenv(envFDHeadroom))
	addr := os.Getenv(envFDAddr)

	// A few loopback backends that accept and close; every Service points at them.
	var backends []net.Listener
	for range 4 {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return fail(err)
		}
		defer l.Close()
		backends = append(backends, l)
		go func() {
			for {
				c, err := l.Accept()
				if err != nil {
					if ne, ok := err.(net.Error); ok && !strings.Contains(ne.Error(), "closed") {
						time.Sleep(5 * time.Millisecond) // EMFILE on accept: try again
						continue
					}
					return
				}
				_ = c.Close()
			}
		}()
	}
	var objs []runtime.Object
	const endpoints = 3
	for i := range services {
		l := backends[i%len(backends)]
		port := int32(l.Addr().(*net.TCPAddr).Port)
		name := fmt.Sprintf("svc-%04d", i)
		objs = append(objs, &corev1.Service{
			ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: name, UID: types.UID("uid-" + name)},
			Spec: corev1.ServiceSpec{ClusterIP: "127.0.0.1", ClusterIPs: []string{"127.0.0.1"}, Type: corev1.ServiceTypeClusterIP,
				Ports: []corev1.ServicePort{{Port: port, TargetPort: intstr.FromInt32(port), Protocol: corev1.ProtocolTCP}}},
		})
		sl := &discoveryv1.EndpointSlice{
			ObjectMeta:  metav1.ObjectMeta{Namespace: "default", Name: name + "-1", Labels: map[string]string{discoveryv1.LabelServiceName: name}},
			AddressType: discoveryv1.AddressTypeIPv4,
			Ports:       []discoveryv1.EndpointPort{{Port: ptr.To(port), Protocol: ptr.To(corev1.ProtocolTCP), Name: ptr.To("")}},
		}
		for e := range endpoints {
			sl.Endpoints = append(sl.Endpoints, discoveryv1.Endpoint{Addresses: []string{"127.0.0.1"},
				Conditions: discoveryv1.EndpointConditions{Ready: ptr.To(true)}, TargetRef: &corev1.ObjectReference{Kind: "Pod", Name: fmt.Sprintf("%s-%d", name, e)}})
		}
		objs = append(objs, sl)
	}
	report.Sockets = services * (endpoints + 1)

	dir, err := os.MkdirTemp("", "svcprobe-fd")
	if err != nil {
		return fail(err)
	}
	defer os.RemoveAll(dir)
	rc := filepath.Join(dir, "resolv.conf")
	if err := os.WriteFile(rc, []byte("nameserver 127.0.0.1\nsearch default.svc.cluster.local svc.cluster.local cluster.local\noptions ndots:5\n"), 0o644); err != nil {
		return fail(err)
	}
	cfg := &config{
		TotalShards: 1, Interval: time.Second, Timeout: 500 * time.Millisecond,
		// The budget allows far more sockets than descriptors exist: the limit is the kernel's.
		Concurrency: 512, PodSpread: 1, VIPConnections: 4, Window: 8, NewConnsPerSecond: 100000, DNSQPS: 100000,
		ResolvConf: rc, ClusterDomain: "cluster.local", DNSService: "kube-system/kube-dns",
		SeriesPerService: 20, PerEndpointLimit: 10,
	}
	if err := cfg.load(); err != nil {
		return fail(err)
	}

	report.FDsAtStart = openFDs()
	report.Limit = uint64(report.FDsAtStart + headroom)
	if err := unix.Setrlimit(unix.RLIMIT_NOFILE, &unix.Rlimit{Cur: report.Limit, Max: report.Limit}); err != nil {
		return fail(fmt.Errorf("setrlimit: %w", err))
	}
	var before unix.Rusage
	_ = unix.Getrusage(unix.RUSAGE_SELF, &before)
	start := time.Now()

	ctx, cancel := context.WithTimeout(context.Background(), time.Duration(seconds)*time.Second)
	defer cancel()
	flags := &web.FlagConfig{WebListenAddresses: &[]string{addr}, WebSystemdSocket: ptr.To(false), WebConfigFile: ptr.To("")}
	err = run(ctx, cfg, fake.NewClientset(objs...), flags, slog.New(slog.NewTextHandler(io.Discard, nil)))

	var after unix.Rusage
	_ = unix.Getrusage(unix.RUSAGE_SELF, &after)
	cpu := func(r unix.Rusage) float64 {
		return float64(r.Utime.Sec+r.Stime.Sec) + float64(r.Utime.Usec+r.Stime.Usec)/1e6
	}
	report.CPUSeconds, report.Wall = cpu(after)-cpu(before), time.Since(start).Seconds()
	if err != nil {
		return fail(err)
	}
	return 0
}

// sumSeries adds up the values of every series of a family whose labels include want.
func sumSeries(text, family, want string) float64 {
	var sum float64
	for _, line := range strings.Split(text, "\n") {
		if !(strings.HasPrefix(line, family+"{") || strings.HasPrefix(line, family+" ")) || !strings.Contains(line, want) {
			continue
		}
		if f := strings.Fields(line); len(f) >= 2 {
			v, _ := strconv.ParseFloat(f[len(f)-1], 64)
			sum += v
		}
	}
	return sum
}

// With RLIMIT_NOFILE far below what a round needs, the exporter degrades: probes fail with
// port_exhausted (EMFILE) instead of crashing the process, it keeps completing probes, and
// /metrics keeps answering.
func TestLowFileDescriptorLimitDegrades(t *testing.T) {
	addr := freeAddr(t)
	const seconds = 12
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), envFDChild+"=1", envFDAddr+"="+addr, envFDSeconds+"="+strconv.Itoa(seconds),
		envFDServices+"=300", envFDHeadroom+"=40")
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()

	client := &http.Client{Timeout: 3 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	var ok, failed int
	var firstProbes, lastProbes float64 = -1, -1
	var lastText string
	running := true
	for running {
		select {
		case <-exited:
			running = false
			continue
		case <-time.After(500 * time.Millisecond):
		}
		mfs, text, err := scrape(client, "http://"+addr+"/metrics")
		if err != nil {
			failed++
			continue
		}
		ok++
		if p := metricValue(mfs, "svcprobe_scheduler_probes_total"); p >= 0 {
			if firstProbes < 0 {
				firstProbes = p
			}
			lastProbes = p
		}
		lastText = text
	}
	select {
	case <-exited:
	case <-time.After(30 * time.Second):
		_ = cmd.Process.Signal(syscall.SIGKILL)
		t.Fatalf("the child did not stop %ds after its run ended", 30)
	default:
	}
	lines := strings.Split(strings.TrimSpace(stdout.String()), "\n")
	var report fdChildReport
	if err := json.Unmarshal([]byte(lines[len(lines)-1]), &report); err != nil {
		t.Fatalf("child exit %d, no report (%v); stderr:\n%s", cmd.ProcessState.ExitCode(), err, tail(stderr.String(), 3000))
	}
	t.Logf("child: limit %d fds (%d open at start), %d sockets a round wanted; %.1fs CPU over %.1fs; scrapes %d ok, %d failed; probes_total %v -> %v",
		report.Limit, report.FDsAtStart, report.Sockets, report.CPUSeconds, report.Wall, ok, failed, firstProbes, lastProbes)
	if code := cmd.ProcessState.ExitCode(); code != 0 || report.Err != "" {
		t.Fatalf("the child exited %d (%s); stderr:\n%s", code, report.Err, tail(stderr.String(), 3000))
	}
	if strings.Contains(stderr.String(), "panic:") || strings.Contains(stderr.String(), "fatal error:") {
		t.Fatalf("the child crashed:\n%s", tail(stderr.String(), 3000))
	}
	if ok < 3 {
		t.Fatalf("/metrics answered %d times (%d failures) in %ds", ok, failed, seconds)
	}
	if !(lastProbes > firstProbes && firstProbes >= 0) {
		t.Fatalf("svcprobe_scheduler_probes_total did not increase between scrapes: %v -> %v", firstProbes, lastProbes)
	}
	// The socket cap was fitted to the descriptors (512 asked for, far more than exist), so the
	// probes wait for slots instead of failing with EMFILE and taking /metrics' descriptors.
	if c := sumSeries(lastText, "svcprobe_budget_concurrency", ""); c <= 0 || c >= 512 {
		t.Fatalf("svcprobe_budget_concurrency %v: not lowered to fit %d descriptors", c, report.Limit)
	}
	if w := sumSeries(lastText, "svcprobe_budget_waits_total", `budget="concurrency"`); w == 0 {
		t.Fatal("no probe waited for a socket slot although a round needs far more sockets than the cap")
	}
	t.Logf("at the last scrape: port_exhausted %v, success %v, concurrency waits %v",
		sumSeries(lastText, "svcprobe_probes_inconclusive_total", `reason="port_exhausted"`), sumSeries(lastText, "svcprobe_probes_total", `result="success"`),
		sumSeries(lastText, "svcprobe_budget_waits_total", `budget="concurrency"`))
}

func tail(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return "..." + s[len(s)-n:]
}

package main

// Issue 19, second half: N simulated node agents against a real kube-apiserver (the `apiserver`
// child). The child starts etcd and kube-apiserver from the lab's cached binaries on loopback
// (ports the kernel picks, a temp dir, a self-signed certificate, token auth), loads an object set,
// then opens N informer sets of one kind at a time: the node agent's own (pipeline.New with
// --mode=node, its watcher run, its scheduler never started, so nothing is probed), and as the
// baselines bare client-go informers over Services+EndpointSlices and over
// Services+EndpointSlices+Pods. With each open it measures the API server's CPU while a bounded
// stream of Pod updates fans out to the watchers, its RSS and open watches, and the informer sets'
// memory in this process.

import (
	"bufio"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"flag"
	"fmt"
	"log/slog"
	"math/big"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime/debug"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"github.com/svcprobe/svcprobe/lab"
	"github.com/svcprobe/svcprobe/pipeline"
	"github.com/svcprobe/svcprobe/probe"
)

// The phases of the apiserver child, in run order.
const (
	phaseNone = "none" // no agent: the update stream alone
	phaseNode = "node" // the node agent's watcher (pipeline.New, --mode=node): its node's Pods only (--node.pods=node)
	// phaseNodeAllPods is the node agent's watcher with --node.pods=all: every Pod, as before
	// agents watched their node's only; the baseline of what --node.pods=node saves.
	phaseNodeAllPods = "node-all-pods"
)

// apiServiceCIDR is kube-apiserver's --service-cluster-ip-range: the ClusterIPs it allocates. They
// are only data here: nothing dials them (no agent's scheduler runs).
const apiServiceCIDR = "198.19.0.0/16"

// apiEndpointIP is the address of endpoint k in the apiserver runs (EndpointSlice validation
// refuses loopback addresses): 198.18.0.0/15, room for 128k, never dialed either.
func apiEndpointIP(k int) string {
	return fmt.Sprintf("198.%d.%d.%d", 18+(k/250/256)%2, (k/250)%256, k%250+1)
}

// APIPhase is one informer set kind opened N times.
type APIPhase struct {
	Set          string
	Agents       int
	SyncSeconds  float64 // every set synced, from the first start
	SyncFailures int     // sets not synced within the bound

	Watches           float64            // apiserver_longrunning_requests{verb="WATCH"} with the sets open, minus the API server's own
	WatchesByResource map[string]float64 // the same by resource
	WindowSeconds     float64
	APICPUSeconds     float64 // kube-apiserver utime+stime over the window (/proc/<pid>/stat)
	APICores          float64
	EtcdCores         float64
	Updates, Errors   int     // Pod updates made in the window, failed
	WatchEvents       float64 // apiserver_watch_events_total, delta over the window
	WatchEventBytes   float64 // apiserver_watch_events_sizes_sum, delta over the window
	APIRSS            int64   // kube-apiserver VmRSS at the end of the window
	APIRSSBefore      int64   // before the sets were opened
	BenchRSSPerAgent  int64   // this process: (after GC with the sets synced - before) / N
	BenchHeapPerAgent int64
	AgentServices     int // node: Services the first agent's watcher holds
	Notes             []string
}

// APIResult is what the apiserver child reports.
type APIResult struct {
	NotRun               string // why the runs did not happen (binaries missing, start failed)
	Versions             string
	Services, Slices     int
	Pods                 int
	LoadSeconds          float64 // objects created (and Pod statuses written)
	StartSeconds         float64 // etcd and kube-apiserver up and ready
	Rate                 float64 // Pod updates per second in each window
	Phases               []APIPhase
	MemoryLimit          int64 // debug.SetMemoryLimit of the child
	PeakRSS              int64 // this process's VmHWM at the end
	APIRSSLoaded         int64 // kube-apiserver VmRSS with the objects loaded, no agent
	WatchMetric, SizeMet string
	Notes                []string
}

func runAPIServer(args []string) error {
	fs := flag.NewFlagSet("apiserver", flag.ContinueOnError)
	agents := fs.Int("agents", 200, "informer sets of each kind")
	services := fs.Int("services", 1000, "Services (one EndpointSlice each)")
	podsPer := fs.Int("pods", 1, "Pods (endpoints) per Service (200 bare sets hold every Pod untrimmed: ~20 KiB each per set)")
	rate := fs.Float64("rate", 20, "Pod updates per second in each window")
	window := fs.Duration("window", 45*time.Second, "CPU window per phase")
	sets := fs.String("sets", strings.Join([]string{phaseNone, setServicesSlices, setServicesSlicesPods, phaseNodeAllPods, phaseNode}, ","), "phases, in order")
	memLimit := fs.Int64("mem-limit", 7<<30, "debug.SetMemoryLimit of this process (bytes)")
	logDir := fs.String("log-dir", "bench/out", "etcd and kube-apiserver logs")
	if err := fs.Parse(args); err != nil {
		return err
	}
	res := APIResult{Services: *services, Slices: *services, Pods: *services * *podsPer, Rate: *rate, MemoryLimit: *memLimit,
		Versions: fmt.Sprintf("kube-apiserver %s, etcd %s", lab.KubernetesVersion, lab.EtcdVersion)}
	emit := func() error {
		res.PeakRSS = procStatusKB("VmHWM") << 10
		out, _ := json.Marshal(res)
		fmt.Printf("RESULT %s\n", out)
		return nil
	}
	lc := lab.DefaultConfig()
	etcdBin, apiBin := lc.Binary("etcd"), lc.Binary("kube-apiserver")
	for _, b := range []string{etcdBin, apiBin} {
		if _, err := os.Stat(b); err != nil {
			res.NotRun = fmt.Sprintf("not run: %s missing (run `make lab-tools`)", b)
			return emit()
		}
	}
	debug.SetMemoryLimit(*memLimit)

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	ctx, cancel := context.WithTimeout(ctx, 20*time.Minute)
	defer cancel()

	t0 := time.Now()
	c, err := startControlPlane(ctx, etcdBin, apiBin, *logDir)
	if c != nil {
		defer c.stop()
	}
	if err != nil {
		res.NotRun = "not run: " + err.Error()
		return emit()
	}
	res.StartSeconds = time.Since(t0).Seconds()

	t1 := time.Now()
	pods, err := loadObjects(ctx, c.admin, *services, *podsPer)
	if err != nil {
		res.NotRun = "not run: loading objects: " + err.Error()
		return emit()
	}
	res.LoadSeconds = time.Since(t1).Seconds()
	res.APIRSSLoaded = procRSS(c.api.Process.Pid)
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))

	for _, set := range strings.Split(*sets, ",") {
		ph, err := runPhase(ctx, c, set, *agents, pods, *rate, *window, log)
		if err != nil {
			res.Notes = append(res.Notes, fmt.Sprintf("%s: %v", set, err))
			if ctx.Err() != nil {
				break
			}
		}
		res.Phases = append(res.Phases, ph)
		fmt.Fprintf(os.Stderr, "phase %s: %+v\n", set, ph)
	}
	return emit()
}

// controlPlane is the etcd and kube-apiserver this child started, and their temp dir.
type controlPlane struct {
	dir       string
	etcd, api *exec.Cmd
	host      string // https://127.0.0.1:port
	caPEM     []byte
	token     string
	admin     kubernetes.Interface
}

// stop kills both processes by their own pids (the API server first) and removes the temp dir.
func (c *controlPlane) stop() {
	for _, cmd := range []*exec.Cmd{c.api, c.etcd} {
		if cmd != nil && cmd.Process != nil {
			_ = cmd.Process.Kill()
			_ = cmd.Wait()
		}
	}
	if c.dir != "" {
		_ = os.RemoveAll(c.dir)
	}
}

// freePort asks the kernel for a free port on 127.0.0.1 (an ephemeral one, never the lab's).
func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

func startControlPlane(ctx context.Context, etcdBin, apiBin, logDir string) (*controlPlane, error) {
	dir, err := os.MkdirTemp("", "svcprobe-bench-apiserver-")
	if err != nil {
		return nil, err
	}
	c := &controlPlane{dir: dir}
	if err := c.writePKI(); err != nil {
		return c, err
	}
	var ports [3]int
	for i := range ports {
		if ports[i], err = freePort(); err != nil {
			return c, err
		}
	}
	_ = os.MkdirAll(logDir, 0o755)
	start := func(name, bin string, args ...string) (*exec.Cmd, error) {
		logf, err := os.Create(filepath.Join(logDir, "agents-"+name+".log"))
		if err != nil {
			return nil, err
		}
		cmd := exec.Command(bin, args...)
		cmd.Stdout, cmd.Stderr = logf, logf
		// Its own process group (a terminal's ^C is ours to handle) and killed with this child.
		cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
		if err := cmd.Start(); err != nil {
			logf.Close()
			return nil, err
		}
		go func() { _ = cmd.Wait(); logf.Close() }()
		return cmd, nil
	}
	etcdURL := fmt.Sprintf("http://127.0.0.1:%d", ports[0])
	peerURL := fmt.Sprintf("http://127.0.0.1:%d", ports[1])
	if c.etcd, err = start("etcd", etcdBin, "--name", "bench", "--data-dir", filepath.Join(dir, "etcd"),
		"--listen-client-urls", etcdURL, "--advertise-client-urls", etcdURL,
		"--listen-peer-urls", peerURL, "--initial-advertise-peer-urls", peerURL, "--initial-cluster", "bench="+peerURL,
		"--log-level", "warn", "--unsafe-no-fsync"); err != nil {
		return c, fmt.Errorf("etcd: %w", err)
	}
	c.host = fmt.Sprintf("https://127.0.0.1:%d", ports[2])
	if c.api, err = start("kube-apiserver", apiBin,
		"--etcd-servers="+etcdURL,
		"--service-cluster-ip-range="+apiServiceCIDR,
		"--bind-address=127.0.0.1", "--advertise-address=127.0.0.1", "--secure-port="+strconv.Itoa(ports[2]),
		"--endpoint-reconciler-type=none", // it would publish 127.0.0.1, which Endpoints validation refuses
		"--cert-dir="+filepath.Join(dir, "certs"),
		"--tls-cert-file="+filepath.Join(dir, "apiserver.crt"), "--tls-private-key-file="+filepath.Join(dir, "apiserver.key"),
		"--token-auth-file="+filepath.Join(dir, "tokens.csv"),
		"--authorization-mode=RBAC",
		"--service-account-issuer=https://kubernetes.default.svc."+clusterDomain,
		"--service-account-key-file="+filepath.Join(dir, "sa.pub"), "--service-account-signing-key-file="+filepath.Join(dir, "sa.key"),
	); err != nil {
		return c, fmt.Errorf("kube-apiserver: %w", err)
	}
	c.admin, err = kubernetes.NewForConfig(c.restConfig(500, 1000))
	if err != nil {
		return c, err
	}
	deadline := time.Now().Add(90 * time.Second)
	for {
		if !alive(c.etcd) || !alive(c.api) {
			return c, fmt.Errorf("etcd or kube-apiserver exited; see %s", filepath.Join(logDir, "agents-*.log"))
		}
		rctx, rcancel := context.WithTimeout(ctx, 2*time.Second)
		_, err := c.admin.Discovery().RESTClient().Get().AbsPath("/readyz").DoRaw(rctx)
		rcancel()
		if err == nil {
			return c, nil
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return c, fmt.Errorf("kube-apiserver not ready after 90 s: %v", err)
		}
		time.Sleep(250 * time.Millisecond)
	}
}

func alive(cmd *exec.Cmd) bool {
	return cmd.Process != nil && syscall.Kill(cmd.Process.Pid, 0) == nil && procState(cmd.Process.Pid) != "Z"
}

// procState is the state letter of /proc/<pid>/stat ("" when gone).
func procState(pid int) string {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return ""
	}
	f := statFields(string(b))
	if len(f) < 1 {
		return ""
	}
	return f[0]
}

// restConfig is a client of the bench's API server as the exporter builds one (kubernetes.NewForConfig
// of a kubeconfig; client-go's default QPS and burst when qps is 0). Proxy is set so that no
// environment proxy is used and the client gets a connection of its own, as each agent has.
func (c *controlPlane) restConfig(qps float32, burst int) *rest.Config {
	return &rest.Config{Host: c.host, BearerToken: c.token, TLSClientConfig: rest.TLSClientConfig{CAData: c.caPEM},
		UserAgent: "svcprobe-bench", QPS: qps, Burst: burst, Timeout: 0,
		Proxy: func(*http.Request) (*url.URL, error) { return nil, nil }}
}

func (c *controlPlane) writePKI() error {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return err
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "svcprobe-bench-apiserver"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true, IsCA: true, IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)}, DNSNames: []string{"localhost"}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return err
	}
	keyDER, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return err
	}
	saKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return err
	}
	saDER, err := x509.MarshalECPrivateKey(saKey)
	if err != nil {
		return err
	}
	saPub, err := x509.MarshalPKIXPublicKey(&saKey.PublicKey)
	if err != nil {
		return err
	}
	tok := make([]byte, 16)
	if _, err := rand.Read(tok); err != nil {
		return err
	}
	c.token = hex.EncodeToString(tok)
	c.caPEM = pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	for name, data := range map[string][]byte{
		"apiserver.crt": c.caPEM,
		"apiserver.key": pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER}),
		"sa.key":        pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: saDER}),
		"sa.pub":        pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: saPub}),
		"tokens.csv":    []byte(c.token + ",admin,admin,system:masters\n"),
	} {
		if err := os.WriteFile(filepath.Join(c.dir, name), data, 0o600); err != nil {
			return err
		}
	}
	return nil
}

// apiPodRef names a loaded Pod for the update stream.
type apiPodRef struct{ ns, name string }

// loadObjects creates the namespaces (with their default ServiceAccount, which Pod admission
// wants), n selecting Services (ClusterIPs allocated by the API server), one EndpointSlice each
// with podsPer ready endpoints, and their Pods (benchPod, written as the kubelet would: created,
// then their status). Bounded by ctx and 5 minutes.
func loadObjects(ctx context.Context, client kubernetes.Interface, n, podsPer int) ([]apiPodRef, error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Minute)
	defer cancel()
	for k := range namespaces {
		ns := serviceNamespace(k)
		if _, err := client.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{}); err != nil {
			return nil, err
		}
		if _, err := client.CoreV1().ServiceAccounts(ns).Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: "default"}}, metav1.CreateOptions{}); err != nil {
			return nil, err
		}
	}
	var refs []apiPodRef
	jobs := make(chan int)
	var mu sync.Mutex
	var firstErr error
	var wg sync.WaitGroup
	for range 16 {
		wg.Go(func() {
			for i := range jobs {
				if err := loadService(ctx, client, i, podsPer); err != nil {
					mu.Lock()
					if firstErr == nil {
						firstErr = fmt.Errorf("Service %d: %w", i, err)
					}
					mu.Unlock()
					cancel()
				}
			}
		})
	}
	for i := range n {
		select {
		case jobs <- i:
		case <-ctx.Done():
		}
		for j := range podsPer {
			refs = append(refs, apiPodRef{serviceNamespace(i), podName(i, j)})
		}
	}
	close(jobs)
	wg.Wait()
	if firstErr != nil {
		return nil, firstErr
	}
	return refs, ctx.Err()
}

func loadService(ctx context.Context, client kubernetes.Interface, i, podsPer int) error {
	svc := selectingService(i, Ports{Pod: 8080, Service: 80})
	svc.ResourceVersion, svc.UID = "", ""
	svc.Spec.ClusterIP, svc.Spec.ClusterIPs = "", nil // the API server allocates it
	svc.Spec.Ports[0].TargetPort = intstr.FromString("http")
	if _, err := client.CoreV1().Services(svc.Namespace).Create(ctx, svc, metav1.CreateOptions{}); err != nil {
		return err
	}
	sl := benchSlice(i, podsPer, Ports{Pod: 8080, Service: 80})
	sl.ResourceVersion, sl.UID = "", ""
	for j := range sl.Endpoints {
		sl.Endpoints[j].Addresses = []string{apiEndpointIP(i*podsPer + j)}
	}
	if _, err := client.DiscoveryV1().EndpointSlices(sl.Namespace).Create(ctx, sl, metav1.CreateOptions{}); err != nil {
		return err
	}
	for j := range podsPer {
		p := benchPod(i, j, apiEndpointIP(i*podsPer+j))
		status := p.Status
		p.ResourceVersion, p.UID, p.ManagedFields, p.CreationTimestamp, p.GenerateName = "", "", nil, metav1.Time{}, ""
		p.OwnerReferences = nil // no ReplicaSet object (no garbage collector runs either)
		p.Status = corev1.PodStatus{}
		created, err := client.CoreV1().Pods(p.Namespace).Create(ctx, p, metav1.CreateOptions{FieldManager: "kube-controller-manager"})
		if err != nil {
			return err
		}
		created.Status = status
		if _, err := client.CoreV1().Pods(p.Namespace).UpdateStatus(ctx, created, metav1.UpdateOptions{FieldManager: "kubelet"}); err != nil {
			return err
		}
	}
	return nil
}

// informerSet is one simulated agent: its informers (bare) or its pipeline's watcher (node).
type informerSet struct {
	bare   *bareInformers
	node   *pipeline.Pipeline
	done   chan struct{}
	synced func() bool
}

func openSet(ctx context.Context, c *controlPlane, set string, i int, log *slog.Logger) (*informerSet, error) {
	rc := c.restConfig(0, 0) // client-go's default QPS and burst, as the exporter
	if set == phaseNode || set == phaseNodeAllPods {
		pipeline.TuneRESTConfig(rc) // protobuf, as the exporter's client; the bare sets ask JSON (client-go's default)
	}
	client, err := kubernetes.NewForConfig(rc)
	if err != nil {
		return nil, err
	}
	s := &informerSet{done: make(chan struct{})}
	switch set {
	case phaseNode, phaseNodeAllPods:
		cfg := benchConfig{Interval: 15 * time.Second, Timeout: 2 * time.Second, Concurrency: 64, NewConnsPerSecond: 1000, DNSQPS: 400, PodSpread: 1, VIPConnections: probe.DefaultConnections}
		nodePods := pipeline.NodePodsNode
		if set == phaseNodeAllPods {
			nodePods = pipeline.NodePodsAll
		}
		p, err := newBenchNodePipeline(cfg, mustResolvConf(), client, benchNode(i, 0), nodePods, log)
		if err != nil {
			return nil, err
		}
		s.node = p
		// The watcher alone: the scheduler is never started, so nothing is dialed (the objects'
		// addresses are not the bench's); Upsert still runs the spec and endpoints stages and
		// records them, as in an agent.
		go func() { _ = p.Watcher.Run(ctx); close(s.done) }()
		s.synced = p.Watcher.Synced
	default:
		s.bare = newBareInformers(client, set)
		s.bare.start(ctx)
		close(s.done)
		s.synced = func() bool {
			for _, f := range s.bare.synced {
				if !f() {
					return false
				}
			}
			return true
		}
	}
	return s, nil
}

func runPhase(ctx context.Context, c *controlPlane, set string, n int, pods []apiPodRef, rate float64, window time.Duration, log *slog.Logger) (APIPhase, error) {
	ph := APIPhase{Set: set, Agents: n}
	if set == phaseNone {
		ph.Agents = 0
	}
	apiPid := c.api.Process.Pid
	ph.APIRSSBefore = procRSS(apiPid)
	before, err := apiMetrics(ctx, c.admin) // the API server's own watches
	if err != nil {
		return ph, err
	}
	rss0, heap0 := memAfterFree()
	pctx, pcancel := context.WithCancel(ctx)
	var opened []*informerSet
	defer func() {
		pcancel()
		for _, s := range opened {
			<-s.done
			if s.bare != nil {
				s.bare.stop()
			}
		}
	}()
	t0 := time.Now()
	const batch = 20 // sets started together, each batch synced before the next (a DaemonSet rolls out in steps too)
	for start := 0; start < ph.Agents; start += batch {
		var cur []*informerSet
		for i := start; i < min(start+batch, ph.Agents); i++ {
			s, err := openSet(pctx, c, set, i, log)
			if err != nil {
				return ph, err
			}
			opened = append(opened, s)
			cur = append(cur, s)
		}
		limit := time.Now().Add(3 * time.Minute)
		for _, s := range cur {
			for !s.synced() && time.Now().Before(limit) && ctx.Err() == nil {
				time.Sleep(20 * time.Millisecond)
			}
			if !s.synced() {
				ph.SyncFailures++
			}
		}
	}
	ph.SyncSeconds = time.Since(t0).Seconds()
	if ph.Agents > 0 {
		rss1, heap1 := memAfterFree()
		ph.BenchRSSPerAgent, ph.BenchHeapPerAgent = (rss1-rss0)/int64(ph.Agents), (heap1-heap0)/int64(ph.Agents)
		if opened[0].node != nil {
			ph.AgentServices = opened[0].node.Watcher.Targets()
		}
	}
	time.Sleep(3 * time.Second) // the last watches registered
	m0, err := apiMetrics(ctx, c.admin)
	if err != nil {
		return ph, err
	}
	ph.Watches, ph.WatchesByResource = m0.watches-before.watches, m0.watchesByResource
	for r, v := range before.watchesByResource {
		if ph.WatchesByResource[r] -= v; ph.WatchesByResource[r] == 0 {
			delete(ph.WatchesByResource, r)
		}
	}
	cpu0, etcd0, w0 := procCPU(apiPid), procCPU(c.etcd.Process.Pid), time.Now()
	ph.Updates, ph.Errors = podUpdates(ctx, c.admin, pods, set, rate, window)
	cpu1, etcd1, w1 := procCPU(apiPid), procCPU(c.etcd.Process.Pid), time.Now()
	time.Sleep(time.Second) // the last events delivered
	m1, err := apiMetrics(ctx, c.admin)
	if err != nil {
		return ph, err
	}
	ph.WindowSeconds = w1.Sub(w0).Seconds()
	ph.APICPUSeconds = (cpu1 - cpu0).Seconds()
	ph.APICores = ph.APICPUSeconds / ph.WindowSeconds
	ph.EtcdCores = (etcd1 - etcd0).Seconds() / ph.WindowSeconds
	ph.WatchEvents, ph.WatchEventBytes = m1.events-m0.events, m1.eventBytes-m0.eventBytes
	ph.APIRSS = procRSS(apiPid)
	// Closed: wait (bounded) until the API server has let the watches go, so the next phase
	// starts from the same state.
	pcancel()
	for _, s := range opened {
		<-s.done
		if s.bare != nil {
			s.bare.stop()
		}
	}
	opened = nil
	for end := time.Now().Add(30 * time.Second); time.Now().Before(end); time.Sleep(500 * time.Millisecond) {
		if m, err := apiMetrics(ctx, c.admin); err == nil && m.watches <= before.watches {
			break
		}
	}
	if ph.SyncFailures > 0 {
		ph.Notes = append(ph.Notes, fmt.Sprintf("%d sets not synced within 3 minutes", ph.SyncFailures))
	}
	return ph, nil
}

// podUpdates patches one annotation of the loaded Pods in turn, rate per second for window: each
// update is one event to every Pod watcher. The value names the phase, so that no patch repeats
// a value a Pod already holds (the API server drops a no-op update: no event).
func podUpdates(ctx context.Context, client kubernetes.Interface, pods []apiPodRef, phase string, rate float64, window time.Duration) (done, failed int) {
	if len(pods) == 0 || rate <= 0 {
		time.Sleep(window)
		return 0, 0
	}
	total := int(rate * window.Seconds())
	tick := time.NewTicker(time.Duration(float64(time.Second) / rate))
	defer tick.Stop()
	var fails atomic.Int64
	var wg sync.WaitGroup
	sem := make(chan struct{}, 8)
	for k := 0; k < total && ctx.Err() == nil; k++ {
		<-tick.C
		p := pods[k%len(pods)]
		patch := []byte(fmt.Sprintf(`{"metadata":{"annotations":{"bench.svcprobe.io/tick":"%s-%d"}}}`, phase, k))
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			uctx, cancel := context.WithTimeout(ctx, 10*time.Second)
			defer cancel()
			if _, err := client.CoreV1().Pods(p.ns).Patch(uctx, p.name, types.MergePatchType, patch, metav1.PatchOptions{}); err != nil {
				fails.Add(1)
			}
		})
		done++
	}
	wg.Wait()
	return done, int(fails.Load())
}

// apiMetricsSample is what the bench reads of kube-apiserver's /metrics.
type apiMetricsSample struct {
	watches           float64
	watchesByResource map[string]float64
	events            float64 // apiserver_watch_events_total
	eventBytes        float64 // apiserver_watch_events_sizes_sum
}

func apiMetrics(ctx context.Context, client kubernetes.Interface) (apiMetricsSample, error) {
	mctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	b, err := client.Discovery().RESTClient().Get().AbsPath("/metrics").DoRaw(mctx)
	if err != nil {
		return apiMetricsSample{}, err
	}
	return parseAPIMetrics(string(b)), nil
}

// parseAPIMetrics sums the samples the bench reads from a text exposition.
func parseAPIMetrics(body string) apiMetricsSample {
	m := apiMetricsSample{watchesByResource: map[string]float64{}}
	sc := bufio.NewScanner(strings.NewReader(body))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || line[0] == '#' {
			continue
		}
		name, _, _ := strings.Cut(line, "{")
		k := strings.LastIndexByte(line, ' ')
		if k < 0 {
			continue
		}
		v, err := strconv.ParseFloat(line[k+1:], 64)
		if err != nil {
			continue
		}
		switch name {
		case "apiserver_longrunning_requests":
			if labelValue(line, "verb") == "WATCH" {
				m.watches += v
				m.watchesByResource[labelValue(line, "resource")] += v
			}
		case "apiserver_watch_events_total":
			m.events += v
		case "apiserver_watch_events_sizes_sum":
			m.eventBytes += v
		}
	}
	return m
}

// statFields are the fields of /proc/<pid>/stat after the command name (field 3, the state,
// first), which may contain spaces and parentheses.
func statFields(stat string) []string {
	k := strings.LastIndexByte(stat, ')')
	if k < 0 {
		return nil
	}
	return strings.Fields(stat[k+1:])
}

// clockTick is USER_HZ, the unit of /proc/<pid>/stat's times (100 on Linux everywhere).
const clockTick = 100

// procCPU is utime+stime of a process from /proc/<pid>/stat (fields 14 and 15).
func procCPU(pid int) time.Duration {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	return statCPU(string(b))
}

func statCPU(stat string) time.Duration {
	f := statFields(stat)
	if len(f) < 13 {
		return 0
	}
	u, err1 := strconv.ParseUint(f[11], 10, 64)
	s, err2 := strconv.ParseUint(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		return 0
	}
	return time.Duration(u+s) * time.Second / clockTick
}

// procRSS is VmRSS of a process.
func procRSS(pid int) int64 {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	defer f.Close()
	kb, _ := statusKB(f, "VmRSS")
	return kb << 10
}

package lab

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
)

// Components started by Up, in start order. Down stops them in reverse, the
// kubelet first so it does not restart what is being stopped.
var components = []string{"etcd", "kube-apiserver", "kube-controller-manager", "kube-proxy", "kubelet", "apiproxy"}

// Result tells what Up brought up.
type Result struct {
	AdminKubeconfig   string // for the host (API proxy on loopback)
	ClusterKubeconfig string // for the node and pod namespaces
	HostnamesIP       string // ClusterIP of default/hostnames
	LabExe            string // the installed svcprobe-lab (exec, http-get, resolve)
	Kubectl           string // cached kubectl, or "kubectl" when not built
	Elapsed           time.Duration
}

// Up cleans any previous run, then starts the one-node cluster, CoreDNS,
// the hostnames example and a client namespace, and waits until the client
// gets an answer from http://hostnames/.
func Up(ctx context.Context, c Config) (*Result, error) {
	start := time.Now()
	c.fill()
	if os.Geteuid() != 0 {
		return nil, errors.New("the lab needs root (network namespaces, iptables)")
	}
	if m := c.MissingBinaries(); len(m) > 0 {
		return nil, fmt.Errorf("missing binaries (run `make lab-tools`): %s", strings.Join(m, ", "))
	}
	for _, t := range []string{"ip", "iptables"} {
		if _, err := lookPath(t); err != nil {
			return nil, fmt.Errorf("%s not found (run `make lab-deps`)", t)
		}
	}
	if err := Down(c); err != nil {
		return nil, fmt.Errorf("cleaning a previous run: %w", err)
	}
	if err := os.MkdirAll(c.path("bin"), 0o755); err != nil {
		return nil, err
	}
	_ = os.RemoveAll(c.path("logs"))
	for _, d := range []string{"logs", "pids", "etcd"} {
		if err := os.MkdirAll(c.path(d), 0o700); err != nil {
			return nil, err
		}
	}
	if err := installExe(&c); err != nil {
		return nil, err
	}
	if _, err := writePKI(&c); err != nil {
		return nil, fmt.Errorf("certificates: %w", err)
	}
	if err := os.WriteFile(c.path("Corefile"), []byte(corefile(&c)), 0o644); err != nil {
		return nil, err
	}

	c.Log("node namespace %s: bridge %s %s", NodeNetns, Bridge, BridgeCIDR)
	if err := nodeNetwork(); err != nil {
		return nil, fmt.Errorf("node network: %w", err)
	}

	client, _, err := c.nodeClient()
	if err != nil {
		return nil, err
	}

	if err := c.startComponent("etcd", c.Binary("etcd"),
		"--name", "lab",
		"--data-dir", c.path("etcd"),
		"--listen-client-urls", "http://127.0.0.1:2379",
		"--advertise-client-urls", "http://127.0.0.1:2379",
		"--listen-peer-urls", "http://127.0.0.1:2380",
		"--initial-advertise-peer-urls", "http://127.0.0.1:2380",
		"--initial-cluster", "lab=http://127.0.0.1:2380",
		"--log-level", "warn",
	); err != nil {
		return nil, err
	}
	if err := c.startComponent("kube-apiserver", c.Binary("kube-apiserver"),
		"--etcd-servers=http://127.0.0.1:2379",
		"--service-cluster-ip-range="+ServiceCIDR+","+ServiceCIDR6,
		"--bind-address=0.0.0.0",
		"--advertise-address="+NodeIP,
		"--secure-port="+strconv.Itoa(APIServerPort),
		"--cert-dir="+c.path("certs"),
		"--tls-cert-file="+c.path("apiserver.crt"),
		"--tls-private-key-file="+c.path("apiserver.key"),
		"--token-auth-file="+c.path("tokens.csv"),
		"--authorization-mode=RBAC",
		"--service-account-issuer=https://kubernetes.default.svc."+ClusterDomain,
		"--service-account-key-file="+c.path("sa.pub"),
		"--service-account-signing-key-file="+c.path("sa.key"),
		"--allow-privileged=true",
	); err != nil {
		return nil, err
	}
	c.Log("waiting for kube-apiserver /readyz")
	if err := waitFor(ctx, 60*time.Second, "kube-apiserver /readyz", func() error {
		if err := c.componentAlive("kube-apiserver"); err != nil {
			return backoff.Permanent(c.withLog("kube-apiserver", err))
		}
		_, err := client.Discovery().RESTClient().Get().AbsPath("/readyz").DoRaw(ctx)
		return err
	}); err != nil {
		return nil, err
	}
	c.Log("kube-apiserver ready after %s", time.Since(start).Round(time.Millisecond))

	if err := createNode(ctx, client); err != nil {
		return nil, fmt.Errorf("node %s: %w", NodeName, err)
	}
	if err := c.startComponent("kube-controller-manager", c.Binary("kube-controller-manager"),
		"--kubeconfig="+c.ClusterKubeconfig(),
		"--controllers=endpointslice-controller,endpoints-controller,deployment-controller,replicaset-controller,daemonset-controller,serviceaccount-controller,garbage-collector-controller,namespace-controller",
		"--use-service-account-credentials=false",
		"--bind-address=127.0.0.1",
		"--secure-port=10257",
		"--leader-elect=false",
	); err != nil {
		return nil, err
	}
	mode, err := initialProxyMode()
	if err != nil {
		return nil, err
	}
	if err := c.recordProxyMode(mode); err != nil {
		return nil, err
	}
	if err := c.StartKubeProxy(); err != nil {
		return nil, err
	}
	// The kubelet stays in the host's mount and network namespaces: the
	// pod namespaces it adds must be visible to `down`, and `ip netns exec`
	// would give it a private mount namespace. It dials inside the node
	// namespace instead.
	if err := c.startHostComponent("kubelet", c.LabExe(), "kubelet",
		"--kubeconfig="+c.ClusterKubeconfig(),
		"--state-dir="+c.StateDir,
		"--bin-dir="+c.BinDir,
	); err != nil {
		return nil, err
	}
	if err := c.startHostComponent("apiproxy", c.LabExe(), "apiproxy",
		"--listen="+c.ProxyAddr,
		"--netns="+NodeNetns,
		"--target=127.0.0.1:"+strconv.Itoa(APIServerPort),
	); err != nil {
		return nil, err
	}

	for _, ns := range []string{"kube-system", "default"} {
		if err := waitFor(ctx, 60*time.Second, "ServiceAccount "+ns+"/default", func() error {
			if err := c.componentAlive("kube-controller-manager"); err != nil {
				return backoff.Permanent(c.withLog("kube-controller-manager", err))
			}
			_, err := client.CoreV1().ServiceAccounts(ns).Get(ctx, "default", metav1.GetOptions{})
			return err
		}); err != nil {
			return nil, err
		}
	}

	c.Log("creating CoreDNS pods, kube-dns service, hostnames deployment and service")
	if err := createCoreDNS(ctx, client, &c); err != nil {
		return nil, fmt.Errorf("coredns: %w", err)
	}
	svcIP, err := createHostnames(ctx, client)
	if err != nil {
		return nil, fmt.Errorf("hostnames: %w", err)
	}
	if err := podNetwork(ClientNetns, "lvclient", ClientIP); err != nil {
		return nil, fmt.Errorf("client namespace: %w", err)
	}
	if err := writeResolvConf(ClientNetns, "default"); err != nil {
		return nil, err
	}

	c.Log("waiting for CoreDNS and hostnames to be ready")
	if err := waitFor(ctx, 90*time.Second, "deployment hostnames available and DNS answering", func() error {
		for _, comp := range components {
			if err := c.componentAlive(comp); err != nil {
				return backoff.Permanent(c.withLog(comp, err))
			}
		}
		d, err := client.AppsV1().Deployments("default").Get(ctx, "hostnames", metav1.GetOptions{})
		if err != nil {
			return err
		}
		if d.Status.AvailableReplicas < 3 {
			return fmt.Errorf("hostnames: %d/3 available", d.Status.AvailableReplicas)
		}
		out, err := c.ClientExec(ctx, "http-get", "--timeout=2s", "http://hostnames/")
		if err != nil {
			return err
		}
		if !strings.HasPrefix(strings.TrimSpace(out), "hostnames-") {
			return fmt.Errorf("unexpected answer %q", out)
		}
		return nil
	}); err != nil {
		return nil, err
	}
	// NodeLocal DNSCache on the node (nodelocal.go): Pods use it when their resolv.conf names it.
	c.Log("starting the node-local DNS cache on %s", NodeLocalDNSIP)
	if err := StartNodeLocalDNS(ctx, &c); err != nil {
		return nil, err
	}
	r := &Result{
		AdminKubeconfig:   c.AdminKubeconfig(),
		ClusterKubeconfig: c.ClusterKubeconfig(),
		HostnamesIP:       svcIP,
		LabExe:            c.LabExe(),
		Kubectl:           "kubectl",
		Elapsed:           time.Since(start),
	}
	if _, err := os.Stat(c.Binary("kubectl")); err == nil {
		r.Kubectl = c.Binary("kubectl")
	}
	return r, nil
}

// StartKubeProxy starts kube-proxy in the node namespace, in the lab's proxy mode (ProxyMode).
func (c *Config) StartKubeProxy() error {
	return c.startKubeProxyOn(node1)
}

// startKubeProxyOn starts the kube-proxy of a lab node in its namespace; extra flags go after
// the lab's (the programming latency test adds --iptables-min-sync-period).
func (c *Config) startKubeProxyOn(n labNode, extra ...string) error {
	c.fill()
	return c.startComponentIn(n.Netns, n.Proxy, c.Binary("kube-proxy"), append([]string{
		"--kubeconfig=" + c.ClusterKubeconfig(),
		"--hostname-override=" + n.Name,
		"--proxy-mode=" + c.ProxyMode(),
		"--cluster-cidr=" + PodCIDR + "," + PodCIDR6,
		"--bind-address=127.0.0.1",
		"--healthz-bind-address=127.0.0.1:10256",
		"--metrics-bind-address=127.0.0.1:10249",
		// Leave the host-wide conntrack sysctls alone.
		"--conntrack-max-per-core=0",
		"--conntrack-tcp-timeout-established=0",
		"--conntrack-tcp-timeout-close-wait=0",
	}, extra...)...)
}

// ClientExec runs `svcprobe-lab ARGS` inside the client namespace (resolv.conf
// of namespace default) and returns its output.
func (c *Config) ClientExec(ctx context.Context, args ...string) (string, error) {
	c.fill()
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	argv := inNetns(ClientNetns, append([]string{c.LabExe()}, args...)...)
	cmd := execCommandContext(ctx, argv)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("%s: %v: %s", strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return string(out), nil
}

// Client returns a clientset that reaches the apiserver by dialing inside the
// node namespace (no proxy needed), for code running on the host.
func (c *Config) Client() (kubernetes.Interface, error) {
	c.fill()
	cl, _, err := c.nodeClient()
	return cl, err
}

func (c *Config) nodeClient() (kubernetes.Interface, *rest.Config, error) {
	rc, err := clientcmd.BuildConfigFromFlags("", c.ClusterKubeconfig())
	if err != nil {
		return nil, nil, err
	}
	rc.Dial = NetnsDialer(NodeNetns)
	rc.Timeout = 10 * time.Second
	rc.QPS, rc.Burst = 100, 200
	cl, err := kubernetes.NewForConfig(rc)
	return cl, rc, err
}

func installExe(c *Config) error {
	src := c.Exe
	if src == "" {
		var err error
		if src, err = os.Executable(); err != nil {
			return err
		}
	}
	return copyFile(src, c.LabExe())
}

func nodeNetwork() error {
	if err := ip("netns", "add", NodeNetns); err != nil {
		return err
	}
	for _, s := range [][]string{
		{"-n", NodeNetns, "link", "set", "lo", "up"},
		{"-n", NodeNetns, "link", "add", Bridge, "type", "bridge"},
		{"-n", NodeNetns, "addr", "add", BridgeCIDR, "dev", Bridge},
		{"-n", NodeNetns, "addr", "add", IPv6Of(NodeIP) + "/64", "dev", Bridge, "nodad"},
		{"-n", NodeNetns, "link", "set", Bridge, "up"},
		// A VIP without rules is refused at once instead of timing out.
		{"-n", NodeNetns, "route", "add", "unreachable", ServiceCIDR},
		{"-n", NodeNetns, "route", "add", "unreachable", ServiceCIDR6},
	} {
		if err := ip(s...); err != nil {
			return err
		}
	}
	for _, kv := range nodeSysctls {
		if _, err := run("ip", "netns", "exec", NodeNetns, "sysctl", "-q", "-w", kv); err != nil {
			return fmt.Errorf("%w (is br_netfilter available?)", err)
		}
	}
	return nil
}

// nodeSysctls are set in each node namespace: forwarding of both families, and bridged traffic
// through ip(6)tables (kube-proxy's hairpin masquerade needs it).
var nodeSysctls = []string{"net.ipv4.ip_forward=1", "net.ipv6.conf.all.forwarding=1",
	"net.bridge.bridge-nf-call-iptables=1", "net.bridge.bridge-nf-call-ip6tables=1"}

func (c *Config) pidPath(name string) string { return c.path("pids", name+".pid") }
func (c *Config) logPath(name string) string { return c.path("logs", name+".log") }

// startComponent starts a program inside the node namespace.
func (c *Config) startComponent(name, bin string, args ...string) error {
	return c.startComponentIn(NodeNetns, name, bin, args...)
}

// startComponentIn starts a program inside a network namespace.
func (c *Config) startComponentIn(netns, name, bin string, args ...string) error {
	c.Log("starting %s", name)
	cmd, err := startDetached(inNetns(netns, append([]string{bin}, args...)...), c.logPath(name), nil)
	if err != nil {
		return err
	}
	go func() { _ = cmd.Wait() }() // reap if it dies while we run
	return writePidFile(c.pidPath(name), cmd.Process.Pid, filepath.Base(bin))
}

// startHostComponent starts a program in the host namespace.
func (c *Config) startHostComponent(name, bin string, args ...string) error {
	c.Log("starting %s", name)
	cmd, err := startDetached(append([]string{bin}, args...), c.logPath(name), nil)
	if err != nil {
		return err
	}
	go func() { _ = cmd.Wait() }()
	return writePidFile(c.pidPath(name), cmd.Process.Pid, filepath.Base(bin))
}

func (c *Config) componentAlive(name string) error {
	pid, marker, err := readPidFile(c.pidPath(name))
	if err != nil {
		return fmt.Errorf("%s: no pid file: %w", name, err)
	}
	if !alive(pid, marker) {
		return fmt.Errorf("%s (pid %d) exited", name, pid)
	}
	return nil
}

// withLog appends the tail of a component's log to err.
func (c *Config) withLog(name string, err error) error {
	b, rerr := os.ReadFile(c.logPath(name))
	if rerr != nil {
		return err
	}
	if len(b) > 3000 {
		b = b[len(b)-3000:]
	}
	return fmt.Errorf("%w\n--- tail of %s ---\n%s", err, c.logPath(name), b)
}

type permanentError struct{ error }

type backoffT struct{}

var backoff backoffT

// Permanent marks an error that ends waitFor at once.
func (backoffT) Permanent(err error) error { return permanentError{err} }

func waitFor(ctx context.Context, timeout time.Duration, what string, f func() error) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	var last error
	for {
		err := f()
		if err == nil {
			return nil
		}
		var p permanentError
		if errors.As(err, &p) {
			return p.error
		}
		last = err
		select {
		case <-ctx.Done():
			return fmt.Errorf("timed out after %s waiting for %s: %v", timeout, what, last)
		case <-time.After(150 * time.Millisecond):
		}
	}
}

func corefile(c *Config) string { return corefileHiding(c, "") }

// corefileHiding is the lab's Corefile; with hideAAAA (a Service's FQDN) CoreDNS answers AAAA
// questions for that name with no record (the dual-stack fault aaaa-missing), everything else as
// before. reload picks a rewritten Corefile up within about 3 s (graceful: the sockets stay).
func corefileHiding(c *Config, hideAAAA string) string {
	template := ""
	if hideAAAA != "" {
		template = fmt.Sprintf(`
    template IN AAAA %s {
        match "^%s[.]$"
        rcode NOERROR
        fallthrough
    }`, ClusterDomain, strings.ReplaceAll(hideAAAA, ".", "[.]"))
	}
	return fmt.Sprintf(`.:53 {
    errors
    reload 2s 1s
    health :8080
    ready :8181
    kubernetes %s in-addr.arpa ip6.arpa {
        kubeconfig %s %s
        pods insecure
        fallthrough in-addr.arpa ip6.arpa
    }
    prometheus :9153
    cache 30%s
}
`, ClusterDomain, c.ClusterKubeconfig(), KubeconfigContext, template)
}

func createNode(ctx context.Context, cl kubernetes.Interface) error {
	return createLabNode(ctx, cl, node1)
}

// createLabNode creates the Node object of a lab node, Ready.
func createLabNode(ctx context.Context, cl kubernetes.Interface, ln labNode) error {
	n := &corev1.Node{
		ObjectMeta: metav1.ObjectMeta{Name: ln.Name, Labels: map[string]string{
			"kubernetes.io/hostname": ln.Name, "kubernetes.io/os": "linux", "kubernetes.io/arch": "amd64",
		}},
		Spec: corev1.NodeSpec{PodCIDR: ln.PodCIDR, PodCIDRs: []string{ln.PodCIDR, ln.podCIDR6()}},
	}
	n, err := cl.CoreV1().Nodes().Create(ctx, n, metav1.CreateOptions{})
	if err != nil {
		return err
	}
	now := metav1.Now()
	n.Status = corev1.NodeStatus{
		Capacity: corev1.ResourceList{
			corev1.ResourceCPU: resource.MustParse("2"), corev1.ResourceMemory: resource.MustParse("24Gi"),
			corev1.ResourcePods: resource.MustParse("110"),
		},
		Addresses: []corev1.NodeAddress{{Type: corev1.NodeInternalIP, Address: ln.IP}, {Type: corev1.NodeHostName, Address: ln.Name}},
		Conditions: []corev1.NodeCondition{{Type: corev1.NodeReady, Status: corev1.ConditionTrue, Reason: "KubeletReady",
			Message: "svcprobe-lab mini kubelet", LastHeartbeatTime: now, LastTransitionTime: now}},
		NodeInfo: corev1.NodeSystemInfo{KubeletVersion: KubernetesVersion, OperatingSystem: "linux", Architecture: "amd64"},
	}
	n.Status.Allocatable = n.Status.Capacity
	_, err = cl.CoreV1().Nodes().UpdateStatus(ctx, n, metav1.UpdateOptions{})
	return err
}

func createCoreDNS(ctx context.Context, cl kubernetes.Interface, c *Config) error {
	labels := map[string]string{"k8s-app": "kube-dns"}
	for i, ipAddr := range []string{CoreDNSIP1, CoreDNSIP2} {
		p := &corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{
				Name: fmt.Sprintf("coredns-%d", i), Namespace: "kube-system", Labels: labels,
				Annotations: map[string]string{IPAnnotation: ipAddr},
			},
			Spec: corev1.PodSpec{
				Containers: []corev1.Container{{
					Name:    "coredns",
					Image:   "registry.k8s.io/coredns/coredns:" + CoreDNSVersion,
					Command: []string{"coredns", "-conf", c.path("Corefile")},
					Ports: []corev1.ContainerPort{
						{Name: "dns", ContainerPort: 53, Protocol: corev1.ProtocolUDP},
						{Name: "dns-tcp", ContainerPort: 53, Protocol: corev1.ProtocolTCP},
						{Name: "metrics", ContainerPort: 9153, Protocol: corev1.ProtocolTCP},
					},
					ReadinessProbe: &corev1.Probe{ProbeHandler: corev1.ProbeHandler{
						HTTPGet: &corev1.HTTPGetAction{Path: "/ready", Port: intstr.FromInt32(8181)}}},
				}},
			},
		}
		if _, err := cl.CoreV1().Pods("kube-system").Create(ctx, p, metav1.CreateOptions{}); err != nil {
			return err
		}
	}
	svc := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: "kube-dns", Namespace: "kube-system", Labels: labels},
		Spec: corev1.ServiceSpec{
			Selector:  labels,
			ClusterIP: DNSServiceIP,
			Ports: []corev1.ServicePort{
				{Name: "dns", Port: 53, Protocol: corev1.ProtocolUDP, TargetPort: intstr.FromInt32(53)},
				{Name: "dns-tcp", Port: 53, Protocol: corev1.ProtocolTCP, TargetPort: intstr.FromInt32(53)},
				{Name: "metrics", Port: 9153, Protocol: corev1.ProtocolTCP, TargetPort: intstr.FromInt32(9153)},
			},
		},
	}
	_, err := cl.CoreV1().Services("kube-system").Create(ctx, svc, metav1.CreateOptions{})
	return err
}

// createHostnames creates the runbook's example: Deployment hostnames (3
// replicas of serve_hostname on 9376) and Service hostnames 80 -> 9376.
func createHostnames(ctx context.Context, cl kubernetes.Interface) (string, error) {
	labels := map[string]string{"app": "hostnames"}
	replicas := int32(3)
	d := &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Name: "hostnames", Namespace: "default", Labels: labels},
		Spec: appsv1.DeploymentSpec{
			Replicas: &replicas,
			Selector: &metav1.LabelSelector{MatchLabels: labels},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: labels},
				Spec: corev1.PodSpec{Containers: []corev1.Container{{
					Name:  "hostnames",
					Image: "registry.k8s.io/serve_hostname",
					Ports: []corev1.ContainerPort{{Name: "http", ContainerPort: 9376, Protocol: corev1.ProtocolTCP}},
				}}},
			},
		},
	}
	if _, err := cl.AppsV1().Deployments("default").Create(ctx, d, metav1.CreateOptions{}); err != nil {
		return "", err
	}
	svc := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: "hostnames", Namespace: "default", Labels: labels},
		Spec: corev1.ServiceSpec{
			Selector: labels,
			Ports:    []corev1.ServicePort{{Port: 80, Protocol: corev1.ProtocolTCP, TargetPort: intstr.FromInt32(9376)}},
		},
	}
	s, err := cl.CoreV1().Services("default").Create(ctx, svc, metav1.CreateOptions{})
	if err != nil {
		return "", err
	}
	return s.Spec.ClusterIP, nil
}

// Down stops everything the lab started and removes its namespaces, by
// recorded pid and by name. It is safe to run at any time.
func Down(c Config) error {
	c.fill()
	var errs []error
	// 1. Recorded components, kubelet first.
	order := append([]string{"kubelet", "exporterproxy"}, reverseExcept(components, "kubelet")...)
	for _, name := range order {
		pid, marker, err := readPidFile(c.pidPath(name))
		if err != nil {
			continue
		}
		if alive(pid, marker) {
			c.Log("stopping %s (pid %d)", name, pid)
			killPids([]int{pid}, 5*time.Second)
		}
		_ = os.Remove(c.pidPath(name))
	}
	// NetworkPolicy enforcement and its nftables table, by name.
	if err := StopNetworkPolicies(&c); err != nil {
		errs = append(errs, err)
	}
	// The node-local DNS cache, its interface and policy route, by name.
	if err := RemoveNodeLocalDNS(&c); err != nil {
		errs = append(errs, err)
	}
	// 2. Any leftover of ours on the host, found by the executable path.
	killPids(findProcsByExe(c.LabExe()), 3*time.Second)
	// 3. Namespaces by name: pods and client first, the node last.
	nss, err := listNetns()
	if err != nil {
		errs = append(errs, err)
	}
	for _, pass := range []bool{false, true} {
		for _, ns := range nss {
			if (ns == NodeNetns) != pass {
				continue
			}
			c.Log("deleting netns %s", ns)
			if err := deleteNetns(ns); err != nil {
				errs = append(errs, err)
			}
		}
	}
	// 4. /etc/netns folders whose namespace is already gone.
	if ents, err := os.ReadDir("/etc/netns"); err == nil {
		for _, e := range ents {
			if hasPrefix(e.Name()) {
				_ = os.RemoveAll(filepath.Join("/etc/netns", e.Name()))
			}
		}
	}
	// 5. State, except the logs (kept for post-mortems until the next up).
	if ents, err := os.ReadDir(c.StateDir); err == nil {
		for _, e := range ents {
			if e.Name() != "logs" {
				_ = os.RemoveAll(c.path(e.Name()))
			}
		}
	}
	return errors.Join(errs...)
}

func reverseExcept(s []string, skip string) []string {
	var out []string
	for i := len(s) - 1; i >= 0; i-- {
		if s[i] != skip {
			out = append(out, s[i])
		}
	}
	return out
}

// findProcsByExe lists processes whose argv[0] is exe.
func findProcsByExe(exe string) []int {
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return nil
	}
	var pids []int
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == os.Getpid() {
			continue
		}
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err != nil || len(b) == 0 {
			continue
		}
		argv0 := strings.SplitN(string(b), "\x00", 2)[0]
		if argv0 == exe {
			pids = append(pids, pid)
		}
	}
	return pids
}

// Status writes a human summary of the lab to w.
func Status(ctx context.Context, c Config, w io.Writer) error {
	c.fill()
	nss, _ := listNetns()
	fmt.Fprintf(w, "state dir: %s\nnetns: %d with prefix %s\n", c.StateDir, len(nss), Prefix)
	for _, ns := range nss {
		fmt.Fprintf(w, "  %s (%d processes)\n", ns, len(netnsPids(ns)))
	}
	fmt.Fprintln(w, "components:")
	up := true
	for _, name := range components {
		state := "running"
		if err := c.componentAlive(name); err != nil {
			state = "not running"
			up = false
		}
		pid, _, _ := readPidFile(c.pidPath(name))
		fmt.Fprintf(w, "  %-24s %-12s pid %d\n", name, state, pid)
	}
	if !up {
		return nil
	}
	cl, err := c.Client()
	if err != nil {
		return err
	}
	pods, err := cl.CoreV1().Pods("").List(ctx, metav1.ListOptions{})
	if err != nil {
		return err
	}
	fmt.Fprintln(w, "pods:")
	for _, p := range pods.Items {
		ready := "false"
		for _, cd := range p.Status.Conditions {
			if cd.Type == corev1.PodReady && cd.Status == corev1.ConditionTrue {
				ready = "true"
			}
		}
		fmt.Fprintf(w, "  %-12s %-36s %-8s ready=%-5s %s\n", p.Namespace, p.Name, p.Status.Phase, ready, p.Status.PodIP)
	}
	svcs, err := cl.CoreV1().Services("").List(ctx, metav1.ListOptions{})
	if err != nil {
		return err
	}
	fmt.Fprintln(w, "services:")
	for _, s := range svcs.Items {
		fmt.Fprintf(w, "  %-12s %-36s %s\n", s.Namespace, s.Name, s.Spec.ClusterIP)
	}
	fmt.Fprintf(w, "admin kubeconfig: %s\n", c.AdminKubeconfig())
	return nil
}

package lab

import (
	"context"
	"fmt"
	"hash/fnv"
	"log"
	"maps"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	corelisters "k8s.io/client-go/listers/core/v1"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/client-go/util/workqueue"
)

// KubeletConfig configures the mini kubelet.
type KubeletConfig struct {
	Kubeconfig string
	Config     Config
}

// The mini kubelet: it binds unscheduled Pods to node-1 (there is no
// scheduler; a Pod whose node affinity names a lab node, like a DaemonSet's,
// goes there), gives each Pod of a lab node (node-1, and node-2 when UpNode2
// added it) a network namespace on that node's cbr0 and runs
// its containers as processes in it, probes readiness, writes pods/status
// and, when a Pod is being deleted, stops it and removes it for good.
//
// A container runs `command`+`args` when it has a command ("coredns" and
// "svcprobe-lab" name the lab's binaries; anything else is a path on this
// machine). Without a command it is the serve_hostname program: an HTTP
// server answering the Pod's name on each TCP containerPort (9376 if none).
type kubelet struct {
	cfg    Config
	client kubernetes.Interface
	lister corelisters.PodLister
	queue  workqueue.TypedRateLimitingInterface[string]

	mu   sync.Mutex
	pods map[string]*podRuntime // by namespace/name
	ips  map[string]bool
}

type podRuntime struct {
	uid      types.UID
	key      string
	netns    string
	veth     string
	nodeNS   string // the network namespace of the Pod's node, where the veth's bridge end is
	hostNet  bool   // hostNetwork: the Pod runs in its node's namespace with the node's address
	ip       string
	hostIP   string // the address of the Pod's node
	started  metav1.Time
	stopped  bool
	ready    bool
	restarts map[string]int32
	procs    map[string]*exec.Cmd // by container name
	cancel   context.CancelFunc
	env      []string // extra environment: fieldRefs, LAB_KUBECONFIG

	// Fault switches from the Pod's annotations (see AnnReady, AnnStopped).
	readyMode   string // "", "false" or "keep"
	hold        bool   // containers stopped and not restarted
	terminating time.Time
}

// Annotations the mini kubelet obeys; the fault catalogue sets them.
const (
	// AnnReady "false" reports the Pod not ready while its processes keep
	// running; "keep" freezes readiness at its current value (the kubelet
	// stops probing, like a readinessProbe whose failureThreshold has not
	// been reached yet).
	AnnReady = "lab.svcprobe.io/ready"
	// AnnStopped "true" kills the Pod's container processes (SIGKILL) and
	// keeps them from being restarted until the annotation goes.
	AnnStopped = "lab.svcprobe.io/stopped"
	// terminationDrain is how long a deleted Pod keeps serving before its
	// processes are killed, like a preStop sleep: Endpoints drop it first.
	terminationDrain = 2 * time.Second
)

// RunKubelet runs the mini kubelet until ctx ends.
func RunKubelet(ctx context.Context, kc KubeletConfig) error {
	kc.Config.fill()
	rc, err := clientcmd.BuildConfigFromFlags("", kc.Kubeconfig)
	if err != nil {
		return err
	}
	rc.QPS, rc.Burst = 50, 100
	rc.Dial = NetnsDialer(NodeNetns) // the kubelet runs in the host namespace
	cl, err := kubernetes.NewForConfig(rc)
	if err != nil {
		return err
	}
	f := informers.NewSharedInformerFactory(cl, 0)
	inf := f.Core().V1().Pods()
	k := &kubelet{
		cfg:    kc.Config,
		client: cl,
		lister: inf.Lister(),
		queue: workqueue.NewTypedRateLimitingQueue(workqueue.NewTypedItemExponentialFailureRateLimiter[string](
			100*time.Millisecond, 5*time.Second)),
		pods: map[string]*podRuntime{},
		ips:  maps.Clone(reservedIPs),
	}
	enqueue := func(obj any) {
		if key, err := cache.DeletionHandlingMetaNamespaceKeyFunc(obj); err == nil {
			k.queue.Add(key)
		}
	}
	if _, err := inf.Informer().AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    enqueue,
		UpdateFunc: func(_, n any) { enqueue(n) },
		DeleteFunc: enqueue,
	}); err != nil {
		return err
	}
	f.Start(ctx.Done())
	if !cache.WaitForCacheSync(ctx.Done(), inf.Informer().HasSynced) {
		return ctx.Err()
	}
	log.Printf("kubelet: pod cache synced, serving node %s", NodeName)
	var wg sync.WaitGroup
	for i := 0; i < 4; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for k.next(ctx) {
			}
		}()
	}
	<-ctx.Done()
	k.queue.ShutDown()
	wg.Wait()
	k.mu.Lock()
	rts := make([]*podRuntime, 0, len(k.pods))
	for _, rt := range k.pods {
		rts = append(rts, rt)
	}
	k.mu.Unlock()
	for _, rt := range rts {
		k.teardown(rt)
	}
	return nil
}

func (k *kubelet) next(ctx context.Context) bool {
	key, quit := k.queue.Get()
	if quit {
		return false
	}
	defer k.queue.Done(key)
	if err := k.sync(ctx, key); err != nil {
		log.Printf("kubelet: sync %s: %v", key, err)
		k.queue.AddRateLimited(key)
		return true
	}
	k.queue.Forget(key)
	return true
}

func (k *kubelet) sync(ctx context.Context, key string) error {
	ns, name, err := cache.SplitMetaNamespaceKey(key)
	if err != nil {
		return nil
	}
	pod, err := k.lister.Pods(ns).Get(name)
	k.mu.Lock()
	rt := k.pods[key]
	k.mu.Unlock()
	if apierrors.IsNotFound(err) {
		if rt != nil {
			k.teardown(rt)
		}
		return nil
	}
	if err != nil {
		return err
	}
	if pod.Spec.NodeName == "" {
		if pod.Spec.SchedulerName != "" && pod.Spec.SchedulerName != corev1.DefaultSchedulerName {
			return nil
		}
		target := bindTarget(pod)
		if target == "" {
			return nil // pinned by affinity to a node the lab does not run
		}
		log.Printf("kubelet: binding %s to %s", key, target)
		err := k.client.CoreV1().Pods(ns).Bind(ctx, &corev1.Binding{
			ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns, UID: pod.UID},
			Target:     corev1.ObjectReference{Kind: "Node", Name: target},
		}, metav1.CreateOptions{})
		if apierrors.IsConflict(err) || apierrors.IsNotFound(err) {
			return nil
		}
		return err
	}
	node, ok := labNodeByName(pod.Spec.NodeName)
	if !ok {
		return nil
	}
	if rt != nil && rt.uid != pod.UID {
		k.teardown(rt)
		rt = nil
	}
	if pod.DeletionTimestamp != nil {
		if rt != nil {
			k.mu.Lock()
			if rt.terminating.IsZero() {
				rt.terminating = time.Now()
			}
			wait := terminationDrain - time.Since(rt.terminating)
			k.mu.Unlock()
			if wait > 0 && pod.DeletionGracePeriodSeconds != nil && *pod.DeletionGracePeriodSeconds > 0 {
				k.queue.AddAfter(key, wait)
				return nil
			}
			k.teardown(rt)
		}
		log.Printf("kubelet: removing %s", key)
		err := k.client.CoreV1().Pods(ns).Delete(ctx, name, metav1.DeleteOptions{
			GracePeriodSeconds: ptr(int64(0)),
			Preconditions:      &metav1.Preconditions{UID: &pod.UID},
		})
		if apierrors.IsNotFound(err) || apierrors.IsConflict(err) {
			return nil
		}
		return err
	}
	if pod.Status.Phase == corev1.PodSucceeded || pod.Status.Phase == corev1.PodFailed {
		return nil
	}
	if rt == nil {
		rt, err = k.setup(ctx, pod, node)
		if err != nil {
			return err
		}
	}
	k.applyAnnotations(pod, rt)
	return k.writeStatus(ctx, pod, rt)
}

func ptr[T any](v T) *T { return &v }

func (k *kubelet) allocIP(pod *corev1.Pod, node labNode) (string, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if want := pod.Annotations[IPAnnotation]; want != "" {
		// A pinned address (the exporter's) is one Pod's at a time: its replacement waits
		// (the sync is retried) until the terminating one is torn down, as a real CNI would
		// refuse a duplicate; two namespaces answering ARP for one address stall both.
		for key, rt := range k.pods {
			if rt.ip == want && rt.uid != pod.UID && !rt.stopped {
				return "", fmt.Errorf("pinned address %s still held by %s", want, key)
			}
		}
		k.ips[want] = true
		return want, nil
	}
	for i := 10; i < 250; i++ {
		a := fmt.Sprintf("%s.%d", node.Net3, i)
		if !k.ips[a] {
			k.ips[a] = true
			return a, nil
		}
	}
	return "", fmt.Errorf("no free pod address in %s.0/24", node.Net3)
}

func vethName(uid types.UID) string {
	h := fnv.New32a()
	h.Write([]byte(uid))
	return fmt.Sprintf("lv%08x", h.Sum32())
}

// applyAnnotations takes the fault switches of the Pod's annotations.
func (k *kubelet) applyAnnotations(pod *corev1.Pod, rt *podRuntime) {
	k.mu.Lock()
	rt.readyMode = pod.Annotations[AnnReady]
	if rt.readyMode == "false" {
		rt.ready = false
	}
	hold := pod.Annotations[AnnStopped] == "true"
	stop := hold && !rt.hold
	rt.hold = hold
	var pids []int
	if stop {
		for _, cmd := range rt.procs {
			if cmd.Process != nil {
				pids = append(pids, cmd.Process.Pid)
			}
		}
	}
	k.mu.Unlock()
	if stop {
		log.Printf("kubelet: %s: %s: killing its containers", rt.key, AnnStopped)
		for _, p := range pids {
			signalTree(p, syscall.SIGKILL)
		}
	}
}

func (k *kubelet) setup(ctx context.Context, pod *corev1.Pod, node labNode) (*podRuntime, error) {
	key := pod.Namespace + "/" + pod.Name
	if pod.Spec.HostNetwork {
		return k.setupHostNetwork(ctx, pod, node)
	}
	addr, err := k.allocIP(pod, node)
	if err != nil {
		return nil, err
	}
	rt := &podRuntime{
		uid: pod.UID, key: key, netns: PodNetns(pod.Namespace, pod.Name), veth: vethName(pod.UID), nodeNS: node.Netns,
		ip: addr, hostIP: node.IP, started: metav1.Now(), restarts: map[string]int32{}, procs: map[string]*exec.Cmd{},
	}
	_ = rt.deleteNetwork() // a leftover of a Pod with the same name
	if err := podNetworkOn(node, rt.netns, rt.veth, addr); err != nil {
		_ = rt.deleteNetwork()
		k.freeIP(addr)
		return nil, err
	}
	return k.start(ctx, pod, rt)
}

// setupHostNetwork runs a hostNetwork Pod in its node's namespace with the node's address, as a
// kubelet does: no veth, no address of its own. With dnsPolicy ClusterFirstWithHostNet it gets the
// cluster resolv.conf, which in the lab is the node namespace's (/etc/netns/<node>/resolv.conf;
// nothing else there resolves names). One such Pod per namespace and node, which is all the lab
// runs (the host-network node agents).
func (k *kubelet) setupHostNetwork(ctx context.Context, pod *corev1.Pod, node labNode) (*podRuntime, error) {
	rt := &podRuntime{
		uid: pod.UID, key: pod.Namespace + "/" + pod.Name, netns: node.Netns, hostNet: true,
		ip: node.IP, hostIP: node.IP, started: metav1.Now(), restarts: map[string]int32{}, procs: map[string]*exec.Cmd{},
	}
	return k.start(ctx, pod, rt)
}

// start writes the Pod's resolv.conf and credentials and starts its containers and readiness
// probe in rt's namespace.
func (k *kubelet) start(ctx context.Context, pod *corev1.Pod, rt *podRuntime) (*podRuntime, error) {
	key, addr := rt.key, rt.ip
	// A hostNetwork Pod keeps its node's resolver unless it asks for the cluster's.
	if !rt.hostNet || pod.Spec.DNSPolicy == corev1.DNSClusterFirstWithHostNet {
		if err := writeResolvConf(rt.netns, pod.Namespace); err != nil {
			_ = rt.deleteNetwork()
			k.freeIP(addr)
			return nil, err
		}
	}
	rt.env = []string{"HOSTNAME=" + pod.Name, "POD_NAME=" + pod.Name, "POD_NAMESPACE=" + pod.Namespace, "POD_IP=" + addr}
	if needsToken(pod) {
		kc, err := k.writePodKubeconfig(ctx, pod)
		if err != nil {
			_ = rt.deleteNetwork()
			k.freeIP(addr)
			return nil, fmt.Errorf("service account token: %w", err)
		}
		rt.env = append(rt.env, "LAB_KUBECONFIG="+kc)
	}
	rt.readyMode = pod.Annotations[AnnReady]
	rt.hold = pod.Annotations[AnnStopped] == "true"
	cctx, cancel := context.WithCancel(context.Background())
	ctx = cctx
	rt.cancel = cancel
	k.mu.Lock()
	k.pods[key] = rt
	k.mu.Unlock()
	log.Printf("kubelet: %s: netns %s ip %s veth %s", key, rt.netns, addr, rt.veth)
	for i := range pod.Spec.Containers {
		c := pod.Spec.Containers[i]
		go k.runContainer(ctx, rt, pod, c)
	}
	go k.probe(ctx, rt, pod.DeepCopy())
	return rt, nil
}

// reservedIPs are never handed out nor freed: the nodes' addresses (a hostNetwork Pod's own),
// the CoreDNS Pods' pinned ones and the client namespace's.
var reservedIPs = map[string]bool{NodeIP: true, Node2IP: true, CoreDNSIP1: true, CoreDNSIP2: true, ClientIP: true}

func (k *kubelet) freeIP(a string) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if !reservedIPs[a] {
		delete(k.ips, a)
	}
}

// argv returns the command line of a container.
func (k *kubelet) argv(pod *corev1.Pod, c corev1.Container) []string {
	if len(c.Command) == 0 {
		args := []string{k.cfg.LabExe(), "serve-hostname", "--name", pod.Name}
		n := 0
		for _, p := range c.Ports {
			if p.Protocol == "" || p.Protocol == corev1.ProtocolTCP {
				args = append(args, "--port", strconv.Itoa(int(p.ContainerPort)))
				n++
			}
		}
		if n == 0 {
			args = append(args, "--port", "9376")
		}
		return append(args, c.Args...) // e.g. --ipv4-only
	}
	argv := append(append([]string{}, c.Command...), c.Args...)
	switch argv[0] {
	case "coredns":
		argv[0] = k.cfg.Binary("coredns")
	case "svcprobe-lab":
		argv[0] = k.cfg.LabExe()
	}
	return argv
}

func (k *kubelet) runContainer(ctx context.Context, rt *podRuntime, pod *corev1.Pod, c corev1.Container) {
	env := containerEnv(pod, c, rt)
	argv := inNetns(rt.netns, expandVars(k.argv(pod, c), env)...)
	logFile := k.cfg.path("logs", "pod-"+pod.Namespace+"-"+pod.Name+"-"+c.Name+".log")
	for ctx.Err() == nil {
		for {
			k.mu.Lock()
			hold := rt.hold
			k.mu.Unlock()
			if !hold || ctx.Err() != nil {
				break
			}
			select {
			case <-ctx.Done():
			case <-time.After(200 * time.Millisecond):
			}
		}
		if ctx.Err() != nil {
			return
		}
		cmd, err := startDetached(argv, logFile, env)
		if err != nil {
			log.Printf("kubelet: %s/%s: %v", rt.key, c.Name, err)
		} else {
			k.mu.Lock()
			rt.procs[c.Name] = cmd
			stopped := rt.stopped
			k.mu.Unlock()
			if stopped {
				signalTree(cmd.Process.Pid, syscall.SIGKILL)
			}
			err = cmd.Wait()
			log.Printf("kubelet: %s/%s exited: %v", rt.key, c.Name, err)
		}
		if ctx.Err() != nil || pod.Spec.RestartPolicy == corev1.RestartPolicyNever {
			return
		}
		k.mu.Lock()
		rt.restarts[c.Name]++
		k.mu.Unlock()
		select {
		case <-ctx.Done():
			return
		case <-time.After(time.Second):
		}
	}
}

// probe checks readiness every second: the container's readinessProbe
// (httpGet or tcpSocket) or else a TCP connect to its first TCP port.
func (k *kubelet) probe(ctx context.Context, rt *podRuntime, pod *corev1.Pod) {
	t := time.NewTicker(250 * time.Millisecond)
	defer t.Stop()
	for {
		k.mu.Lock()
		mode, was := rt.readyMode, rt.ready
		k.mu.Unlock()
		ok := true
		switch mode {
		case "false":
			ok = false
		case "keep":
			ok = was
		default:
			for _, c := range pod.Spec.Containers {
				if !probeOnce(ctx, rt.ip, c) {
					ok = false
				}
			}
		}
		k.mu.Lock()
		changed := rt.ready != ok
		rt.ready = ok
		k.mu.Unlock()
		if changed {
			k.queue.Add(rt.key)
			if ok {
				t.Reset(time.Second)
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

func probeOnce(ctx context.Context, podIP string, c corev1.Container) bool {
	ctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	port := func(p intstr.IntOrString) string {
		if p.Type == intstr.Int {
			return strconv.Itoa(p.IntValue())
		}
		for _, cp := range c.Ports {
			if cp.Name == p.StrVal {
				return strconv.Itoa(int(cp.ContainerPort))
			}
		}
		return p.StrVal
	}
	if rp := c.ReadinessProbe; rp != nil {
		switch {
		case rp.HTTPGet != nil:
			u := fmt.Sprintf("http://%s%s", net.JoinHostPort(podIP, port(rp.HTTPGet.Port)), rp.HTTPGet.Path)
			req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
			if err != nil {
				return false
			}
			resp, err := probeClient.Do(req)
			if err != nil {
				return false
			}
			resp.Body.Close()
			return resp.StatusCode >= 200 && resp.StatusCode < 400
		case rp.TCPSocket != nil:
			return tcpOK(ctx, net.JoinHostPort(podIP, port(rp.TCPSocket.Port)))
		}
		return true
	}
	if len(c.Command) == 0 && len(c.Ports) == 0 {
		return tcpOK(ctx, net.JoinHostPort(podIP, "9376"))
	}
	for _, p := range c.Ports {
		if p.Protocol == "" || p.Protocol == corev1.ProtocolTCP {
			return tcpOK(ctx, net.JoinHostPort(podIP, strconv.Itoa(int(p.ContainerPort))))
		}
	}
	return true
}

// Probes reach pod addresses from the node namespace, over cbr0.
var probeClient = &http.Client{Transport: &http.Transport{
	DialContext: NetnsDialer(NodeNetns), DisableKeepAlives: true}}

func tcpOK(ctx context.Context, addr string) bool {
	c, err := dialInNetns(ctx, NodeNetns, "tcp", addr)
	if err != nil {
		return false
	}
	c.Close()
	return true
}

func (k *kubelet) teardown(rt *podRuntime) {
	k.mu.Lock()
	if k.pods[rt.key] == rt {
		delete(k.pods, rt.key)
	}
	rt.stopped = true
	var pids []int
	for _, cmd := range rt.procs {
		if cmd.Process != nil {
			pids = append(pids, cmd.Process.Pid)
		}
	}
	k.mu.Unlock()
	if rt.cancel != nil {
		rt.cancel()
	}
	log.Printf("kubelet: %s: stopping", rt.key)
	killPids(pids, 2*time.Second)
	if err := rt.deleteNetwork(); err != nil {
		log.Printf("kubelet: %s: %v", rt.key, err)
	}
	_ = os.RemoveAll(k.cfg.podDir(rt.key))
	k.freeIP(rt.ip)
}

// deleteNetwork takes the Pod off its node's bridge, then deletes its namespace. The veth goes
// first and by name: `ip netns del` only unlinks the name, and the namespace (with eth0 and the
// Pod's address) lives on while anything still holds it, such as a socket a test opened inside
// it. The next Pod given the same pinned address (the exporter's) then shared it on the bridge
// with the dead one: two ARP answers for one IP, and the live exporter's API connection stalled
// without an error while kube-proxy saw every change (a fault catalogue flake, found in the lab).
func (rt *podRuntime) deleteNetwork() error {
	if rt.hostNet {
		return nil // the node's namespace: never the Pod's to delete
	}
	if rt.nodeNS != "" && rt.veth != "" {
		if _, err := os.Stat(filepath.Join("/run/netns", rt.nodeNS)); err == nil {
			if err := ip("-n", rt.nodeNS, "link", "del", rt.veth); err != nil && !strings.Contains(err.Error(), "Cannot find device") {
				return fmt.Errorf("deleting veth %s: %w", rt.veth, err)
			}
		}
	}
	return deleteNetns(rt.netns)
}

func (k *kubelet) writeStatus(ctx context.Context, pod *corev1.Pod, rt *podRuntime) error {
	k.mu.Lock()
	ready := rt.ready
	restarts := map[string]int32{}
	for n, r := range rt.restarts {
		restarts[n] = r
	}
	k.mu.Unlock()

	cond := func(t corev1.PodConditionType, ok bool) corev1.PodCondition {
		s := corev1.ConditionFalse
		if ok {
			s = corev1.ConditionTrue
		}
		c := corev1.PodCondition{Type: t, Status: s, LastTransitionTime: metav1.Now()}
		for _, old := range pod.Status.Conditions {
			if old.Type == t && old.Status == s {
				c.LastTransitionTime = old.LastTransitionTime
			}
		}
		return c
	}
	st := pod.Status.DeepCopy()
	st.Phase = corev1.PodRunning
	st.HostIP = rt.hostIP
	st.HostIPs = []corev1.HostIP{{IP: rt.hostIP}}
	st.PodIP = rt.ip
	st.PodIPs = []corev1.PodIP{{IP: rt.ip}}
	if !rt.hostNet {
		// Dual-stack: the Pod's IPv6 twin too (podNetworkOn put it on eth0), IPv4 first as the
		// cluster's primary family.
		st.PodIPs = append(st.PodIPs, corev1.PodIP{IP: IPv6Of(rt.ip)})
	}
	st.StartTime = &rt.started
	st.Conditions = []corev1.PodCondition{
		cond(corev1.PodScheduled, true),
		cond(corev1.PodInitialized, true),
		cond(corev1.ContainersReady, ready),
		cond(corev1.PodReady, ready),
	}
	st.ContainerStatuses = nil
	for _, c := range pod.Spec.Containers {
		st.ContainerStatuses = append(st.ContainerStatuses, corev1.ContainerStatus{
			Name:         c.Name,
			Image:        c.Image,
			ImageID:      c.Image,
			ContainerID:  "svcprobe-lab://" + string(pod.UID) + "/" + c.Name,
			Ready:        ready,
			Started:      ptr(true),
			RestartCount: restarts[c.Name],
			State:        corev1.ContainerState{Running: &corev1.ContainerStateRunning{StartedAt: rt.started}},
		})
	}
	if statusEqual(&pod.Status, st) {
		return nil
	}
	np := pod.DeepCopy()
	np.Status = *st
	_, err := k.client.CoreV1().Pods(pod.Namespace).UpdateStatus(ctx, np, metav1.UpdateOptions{})
	if apierrors.IsConflict(err) || apierrors.IsNotFound(err) {
		// A newer version is on its way through the informer.
		return nil
	}
	if err == nil {
		log.Printf("kubelet: %s: status Running ip %s ready %v", rt.key, rt.ip, ready)
	}
	return err
}

func statusEqual(a, b *corev1.PodStatus) bool {
	if a.Phase != b.Phase || a.PodIP != b.PodIP || a.HostIP != b.HostIP || len(a.Conditions) != len(b.Conditions) ||
		len(a.ContainerStatuses) != len(b.ContainerStatuses) {
		return false
	}
	for i := range a.Conditions {
		if a.Conditions[i].Type != b.Conditions[i].Type || a.Conditions[i].Status != b.Conditions[i].Status {
			return false
		}
	}
	for i := range a.ContainerStatuses {
		if a.ContainerStatuses[i].Ready != b.ContainerStatuses[i].Ready ||
			a.ContainerStatuses[i].RestartCount != b.ContainerStatuses[i].RestartCount {
			return false
		}
	}
	return true
}

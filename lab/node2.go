package lab

// A second node: its own node namespace (svcprobe-lab-node2) with its own
// bridge cbr0 (198.18.1.1/24, Pod CIDR 198.18.1.0/24), its own kube-proxy
// (the lab's proxy mode, --hostname-override=node-2) and a Node object; a veth pair
// (ln-node2 in the first node, ln-node1 in the second) with one onlink route
// each way joins the two Pod networks. The mini kubelet runs the Pods bound to
// node-2 there. Nothing gets an address outside 198.18.0.0/16.
//
// DeployNodeAgents runs deploy/node-agent's DaemonSet (svcprobe --mode=node)
// on both nodes; NodeFaults break one node only.

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/kubernetes"
)

// The second node.
const (
	Node2Name    = "node-2"
	Node2Netns   = Prefix + "node2"
	Node2IP      = "198.18.1.1"
	Node2PodCIDR = "198.18.1.0/24"

	// The two ends of the link between the nodes.
	node1Link = "ln-node2" // in NodeNetns
	node2Link = "ln-node1" // in Node2Netns

	// NodeAgentName and NodeAgentLabel are those of deploy/node-agent.
	NodeAgentName    = "svcprobe-node"
	NodeAgentLabel   = "app.kubernetes.io/name=svcprobe-node"
	NodeAgentHairpin = "svcprobe-node-hairpin"
)

// labNode is a node of the lab: its network namespace, its address (on its
// cbr0), its Pod /24 and the component name of its kube-proxy.
type labNode struct {
	Name, Netns, IP string
	Net3            string // the first three octets of its Pod /24
	PodCIDR         string
	Proxy           string
}

var (
	node1 = labNode{Name: NodeName, Netns: NodeNetns, IP: NodeIP, Net3: "198.18.0", PodCIDR: "198.18.0.0/24", Proxy: "kube-proxy"}
	node2 = labNode{Name: Node2Name, Netns: Node2Netns, IP: Node2IP, Net3: "198.18.1", PodCIDR: Node2PodCIDR, Proxy: "kube-proxy-node2"}
)

// podCIDR6 is the node's IPv6 Pod range, fd98:18:0:N::/64 (its bridge has ::1 of it).
func (n labNode) podCIDR6() string { return IPv6Of(n.Net3+".0") + "/64" }

func labNodeByName(name string) (labNode, bool) {
	for _, n := range []labNode{node1, node2} {
		if n.Name == name {
			return n, true
		}
	}
	return labNode{}, false
}

// bindTarget is the node the kubelet binds an unscheduled Pod to: the one its
// required node affinity names by metadata.name (a DaemonSet's Pods), "" if
// that is not a lab node, else the first node.
func bindTarget(pod *corev1.Pod) string {
	a := pod.Spec.Affinity
	if a == nil || a.NodeAffinity == nil || a.NodeAffinity.RequiredDuringSchedulingIgnoredDuringExecution == nil {
		return NodeName
	}
	for _, term := range a.NodeAffinity.RequiredDuringSchedulingIgnoredDuringExecution.NodeSelectorTerms {
		for _, f := range term.MatchFields {
			if f.Key != "metadata.name" || f.Operator != corev1.NodeSelectorOpIn {
				continue
			}
			for _, v := range f.Values {
				if _, ok := labNodeByName(v); ok {
					return v
				}
			}
			return ""
		}
	}
	return NodeName
}

// UpNode2 adds the second node to a running lab: namespace, bridge, link and
// routes, the Node object and its kube-proxy. It waits until node-2's
// kube-proxy has programmed the kubernetes Service.
func UpNode2(ctx context.Context, c Config) error {
	c.fill()
	if err := c.componentAlive("kubelet"); err != nil {
		return fmt.Errorf("the lab is not up: %w", err)
	}
	_ = DownNode2(ctx, c) // a leftover of a crashed run
	c.Log("node namespace %s: bridge %s %s/24, routed to %s", Node2Netns, Bridge, Node2IP, NodeNetns)
	if err := ip("netns", "add", Node2Netns); err != nil {
		return err
	}
	for _, s := range [][]string{
		{"-n", Node2Netns, "link", "set", "lo", "up"},
		{"-n", Node2Netns, "link", "add", Bridge, "type", "bridge"},
		{"-n", Node2Netns, "addr", "add", Node2IP + "/24", "dev", Bridge},
		{"-n", Node2Netns, "addr", "add", IPv6Of(Node2IP) + "/64", "dev", Bridge, "nodad"},
		{"-n", Node2Netns, "link", "set", Bridge, "up"},
		// Unlike node-1 (an "unreachable" route: a VIP without rules fails at once), node-2
		// has a real route for the Service range, as a real node has its default route: a
		// process on node-2 itself (a hostNetwork Pod) dialing a VIP needs one before
		// kube-proxy's nat OUTPUT rules rewrite the destination, or connect fails with "no
		// route to host" (seen with the host-network agent). It points at the bridge (this
		// kernel has no dummy devices): a packet no rule DNATs asks ARP for the VIP there, gets
		// no answer and times out (or meets kube-proxy's REJECT for a Service without endpoints).
		{"-n", Node2Netns, "route", "add", ServiceCIDR, "dev", Bridge},
		{"-n", Node2Netns, "route", "add", ServiceCIDR6, "dev", Bridge},
		{"-n", NodeNetns, "link", "add", node1Link, "type", "veth", "peer", "name", node2Link, "netns", Node2Netns},
		{"-n", NodeNetns, "link", "set", node1Link, "up"},
		{"-n", Node2Netns, "link", "set", node2Link, "up"},
		// No addresses on the link: each node reaches the other's bridge
		// address (and so its Pod /24) directly over it.
		{"-n", NodeNetns, "route", "add", Node2PodCIDR, "via", Node2IP, "dev", node1Link, "onlink"},
		{"-n", Node2Netns, "route", "add", node1.PodCIDR, "via", NodeIP, "dev", node2Link, "onlink"},
		// IPv6 needs the next hop on the link itself (neighbour discovery answers only for an
		// address of the interface asked): a ULA /64 for the link alone.
		{"-n", NodeNetns, "addr", "add", linkIPv6(1) + "/64", "dev", node1Link, "nodad"},
		{"-n", Node2Netns, "addr", "add", linkIPv6(2) + "/64", "dev", node2Link, "nodad"},
		{"-n", NodeNetns, "route", "add", node2.podCIDR6(), "via", linkIPv6(2), "dev", node1Link},
		{"-n", Node2Netns, "route", "add", node1.podCIDR6(), "via", linkIPv6(1), "dev", node2Link},
	} {
		if err := ip(s...); err != nil {
			return errors.Join(err, DownNode2(ctx, c))
		}
	}
	for _, kv := range nodeSysctls {
		if _, err := run("ip", "netns", "exec", Node2Netns, "sysctl", "-q", "-w", kv); err != nil {
			return errors.Join(err, DownNode2(ctx, c))
		}
	}
	cl, err := c.Client()
	if err != nil {
		return err
	}
	if err := createLabNode(ctx, cl, node2); err != nil && !apierrors.IsAlreadyExists(err) {
		return errors.Join(fmt.Errorf("node %s: %w", Node2Name, err), DownNode2(ctx, c))
	}
	if err := c.startKubeProxyOn(node2); err != nil {
		return errors.Join(err, DownNode2(ctx, c))
	}
	svc, err := cl.CoreV1().Services("default").Get(ctx, "kubernetes", metav1.GetOptions{})
	if err != nil {
		return err
	}
	return waitFor(ctx, 60*time.Second, "kube-proxy of "+Node2Name+" serving the kubernetes VIP", func() error {
		if err := c.componentAlive(node2.Proxy); err != nil {
			return backoff.Permanent(c.withLog(node2.Proxy, err))
		}
		out, err := run("ip", "netns", "exec", Node2Netns, "iptables", "-w", "-t", "nat", "-S", "KUBE-SERVICES")
		if err != nil {
			return err
		}
		if !containsField(out, svc.Spec.ClusterIP+"/32") {
			return fmt.Errorf("no rule for %s yet", svc.Spec.ClusterIP)
		}
		return nil
	})
}

func containsField(s, f string) bool { return slices.Contains(strings.Fields(s), f) }

// DownNode2 removes the second node: its Pods (deleted at once; the kubelet
// tears their namespaces down), its Node object, its kube-proxy and its
// namespace (with the bridge, the link and its iptables state). Safe when
// node-2 is not there.
func DownNode2(ctx context.Context, c Config) error {
	c.fill()
	var errs []error
	if cl, err := c.Client(); err == nil {
		pods, err := cl.CoreV1().Pods("").List(ctx, metav1.ListOptions{FieldSelector: "spec.nodeName=" + Node2Name})
		if err == nil {
			for _, p := range pods.Items {
				err := cl.CoreV1().Pods(p.Namespace).Delete(ctx, p.Name, metav1.DeleteOptions{GracePeriodSeconds: ptr(int64(0))})
				if err != nil && !apierrors.IsNotFound(err) {
					errs = append(errs, err)
				}
			}
		}
		if err := cl.CoreV1().Nodes().Delete(ctx, Node2Name, metav1.DeleteOptions{}); err != nil && !apierrors.IsNotFound(err) {
			errs = append(errs, err)
		}
	}
	if pid, marker, err := readPidFile(c.pidPath(node2.Proxy)); err == nil {
		if alive(pid, marker) {
			c.Log("stopping %s (pid %d)", node2.Proxy, pid)
			killPids([]int{pid}, 5*time.Second)
		}
		_ = os.Remove(c.pidPath(node2.Proxy))
	}
	// The Pods' veths are ports of node-2's bridge; the kubelet removes them
	// with the Pods' namespaces. Give it a moment before the node goes.
	if _, err := os.Stat(filepath.Join("/run/netns", Node2Netns)); err == nil {
		_ = waitFor(ctx, 15*time.Second, "node-2's Pods gone", func() error {
			out, err := run("ip", "-n", Node2Netns, "-o", "link", "show", "master", Bridge)
			if err != nil {
				return err
			}
			if strings.TrimSpace(out) != "" {
				return fmt.Errorf("ports left on node-2's bridge: %s", out)
			}
			return nil
		})
	}
	if err := deleteNetns(Node2Netns); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// DeployNodeAgents creates deploy/node-agent's own objects (the DaemonSet,
// the svcprobe-node-hairpin and svcprobe-node Services; deploy/base must be
// deployed already) next to Config.DeployDir. The DaemonSet's container runs
// the exporter binary DeployExporter installed, with o's intervals and
// --kubeconfig=$(LAB_KUBECONFIG), as DeployExporter adapts the Deployment.
// It waits until an agent is ready on every node.
func DeployNodeAgents(ctx context.Context, c Config, o ExporterOptions) error {
	c.fill()
	if o.Interval == 0 {
		o.Interval = 2 * time.Second
	}
	if o.Timeout == 0 {
		o.Timeout = time.Second
	}
	dir := filepath.Join(filepath.Dir(c.DeployDir), "node-agent")
	objs, err := decodeDir(dir)
	if err != nil {
		return err
	}
	cl, err := c.Client()
	if err != nil {
		return err
	}
	exe := c.path("bin", "svcprobe")
	c.Log("deploying the node agents from %s (%d objects)", dir, len(objs))
	for _, obj := range objs {
		if ds, ok := obj.(*appsv1.DaemonSet); ok {
			labContainer(&ds.Spec.Template.Spec.Containers[0], exe, o)
			if ds.Spec.Template.Spec.Containers[0].ReadinessProbe != nil {
				ds.Spec.Template.Spec.Containers[0].ReadinessProbe.PeriodSeconds = 1
			}
			if _, err := cl.AppsV1().DaemonSets(nsOr(ds.Namespace)).Create(ctx, ds, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
				return fmt.Errorf("daemonset %s: %w", ds.Name, err)
			}
			continue
		}
		if err := createObject(ctx, cl, obj, exe, o); err != nil {
			return err
		}
	}
	nodes, err := cl.CoreV1().Nodes().List(ctx, metav1.ListOptions{})
	if err != nil {
		return err
	}
	want := int32(len(nodes.Items))
	return waitFor(ctx, 90*time.Second, "svcprobe-node ready on every node", func() error {
		if err := c.componentAlive("kubelet"); err != nil {
			return backoff.Permanent(err)
		}
		ds, err := cl.AppsV1().DaemonSets(ExporterNamespace).Get(ctx, NodeAgentName, metav1.GetOptions{})
		if err != nil {
			return err
		}
		if s := ds.Status; s.DesiredNumberScheduled != want || s.NumberReady != want {
			return fmt.Errorf("svcprobe-node: %d desired, %d ready, want %d (see %s)", s.DesiredNumberScheduled, s.NumberReady, want, c.path("logs"))
		}
		return nil
	})
}

// DeleteNodeAgents removes what DeployNodeAgents created and waits until
// the agents' Pods are gone.
func DeleteNodeAgents(ctx context.Context, c Config) error {
	c.fill()
	cl, err := c.Client()
	if err != nil {
		return err
	}
	var errs []error
	bg := metav1.DeletePropagationBackground
	if err := cl.AppsV1().DaemonSets(ExporterNamespace).Delete(ctx, NodeAgentName, metav1.DeleteOptions{PropagationPolicy: &bg}); err != nil && !apierrors.IsNotFound(err) {
		errs = append(errs, err)
	}
	for _, s := range []string{NodeAgentHairpin, NodeAgentName} {
		if err := cl.CoreV1().Services(ExporterNamespace).Delete(ctx, s, metav1.DeleteOptions{}); err != nil && !apierrors.IsNotFound(err) {
			errs = append(errs, err)
		}
	}
	errs = append(errs, waitFor(ctx, 60*time.Second, "svcprobe-node Pods gone", func() error {
		pods, err := cl.CoreV1().Pods(ExporterNamespace).List(ctx, metav1.ListOptions{LabelSelector: NodeAgentLabel})
		if err != nil {
			return err
		}
		if n := len(pods.Items); n > 0 {
			return fmt.Errorf("%d left", n)
		}
		return nil
	}))
	return errors.Join(errs...)
}

// NodeAgentPod returns the running node agent Pod of a node.
func NodeAgentPod(ctx context.Context, cl kubernetes.Interface, node string) (*corev1.Pod, error) {
	pods, err := cl.CoreV1().Pods(ExporterNamespace).List(ctx, metav1.ListOptions{
		LabelSelector: NodeAgentLabel, FieldSelector: "spec.nodeName=" + node})
	if err != nil {
		return nil, err
	}
	for i := range pods.Items {
		if p := &pods.Items[i]; p.DeletionTimestamp == nil && p.Status.PodIP != "" {
			return p, nil
		}
	}
	return nil, fmt.Errorf("no running svcprobe-node Pod on %s", node)
}

// ScrapeNodeAgent GETs path from the node agent of a node, on the Pod
// network (dialed in the first node's namespace, routed to node-2: no VIP).
func ScrapeNodeAgent(ctx context.Context, cl kubernetes.Interface, node, path string) (string, error) {
	pod, err := NodeAgentPod(ctx, cl, node)
	if err != nil {
		return "", err
	}
	return httpGet(ctx, "http://"+pod.Status.PodIP+":"+strconv.Itoa(ExporterPort)+path)
}

// HostAgentPort is where a host-network agent serves /metrics: on its node's own address, so a
// port nothing else of the lab's nodes listens on.
const HostAgentPort = 19817

// HostAgentName is the name of the host-network agent Pod of a node.
func HostAgentName(node string) string { return NodeAgentName + "-host-" + node }

// HostAgentNamespace holds the host-network agents: hostNetwork is allowed by the privileged Pod
// Security level only, and the exporter's own namespace enforces restricted.
const HostAgentNamespace = "svcprobe-host"

// hostAgentRBAC are the privileged namespace, a ServiceAccount in it and its binding to the
// exporter's ClusterRole (deploy/base's "svcprobe", which the agents use too).
func hostAgentRBAC() []runtime.Object {
	return []runtime.Object{
		&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: HostAgentNamespace,
			Labels: map[string]string{"pod-security.kubernetes.io/enforce": "privileged"}}},
		&corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: "svcprobe", Namespace: HostAgentNamespace}},
		&rbacv1.ClusterRoleBinding{ObjectMeta: metav1.ObjectMeta{Name: HostAgentNamespace},
			RoleRef:  rbacv1.RoleRef{APIGroup: "rbac.authorization.k8s.io", Kind: "ClusterRole", Name: "svcprobe"},
			Subjects: []rbacv1.Subject{{Kind: "ServiceAccount", Name: "svcprobe", Namespace: HostAgentNamespace}}},
	}
}

// DeployHostNetworkAgent runs one node agent with hostNetwork on node, next to the Pod-network
// agents of DeployNodeAgents (it uses their ServiceAccount): deploy/node-agent's Pod template as
// the chart's nodeAgent.hostNetwork renders it (hostNetwork, dnsPolicy ClusterFirstWithHostNet),
// as a bare Pod bound to node, labelled apart so that no agent Service selects it, without a
// hairpin Service (on the host network the hairpin path is the node's, not the bridge's), and
// serving on HostAgentPort. Its POD_IP is its node's address, so its nodeport stage knows it
// dials from the node itself.
func DeployHostNetworkAgent(ctx context.Context, c Config, o ExporterOptions, node string) error {
	c.fill()
	if o.Interval == 0 {
		o.Interval = 2 * time.Second
	}
	if o.Timeout == 0 {
		o.Timeout = time.Second
	}
	objs, err := decodeDir(filepath.Join(filepath.Dir(c.DeployDir), "node-agent"))
	if err != nil {
		return err
	}
	var ds *appsv1.DaemonSet
	for _, obj := range objs {
		if d, ok := obj.(*appsv1.DaemonSet); ok {
			ds = d
		}
	}
	if ds == nil {
		return fmt.Errorf("no DaemonSet in deploy/node-agent")
	}
	spec := *ds.Spec.Template.Spec.DeepCopy()
	spec.ServiceAccountName = "svcprobe"
	spec.NodeName = node
	spec.HostNetwork = true
	spec.DNSPolicy = corev1.DNSClusterFirstWithHostNet
	ctr := &spec.Containers[0]
	labContainer(ctr, c.path("bin", "svcprobe"), o)
	var args []string
	for _, a := range ctr.Args {
		switch name, _, _ := strings.Cut(a, "="); name {
		case "--hairpin.service", "--web.listen-address":
			continue
		}
		args = append(args, a)
	}
	ctr.Args = append(args, "--web.listen-address=:"+strconv.Itoa(HostAgentPort))
	for i := range ctr.Ports {
		ctr.Ports[i].ContainerPort = HostAgentPort
	}
	if rp := ctr.ReadinessProbe; rp != nil && rp.HTTPGet != nil {
		rp.HTTPGet.Port = intstr.FromInt32(HostAgentPort)
	}
	if lp := ctr.LivenessProbe; lp != nil && lp.HTTPGet != nil {
		lp.HTTPGet.Port = intstr.FromInt32(HostAgentPort)
	}
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: HostAgentName(node), Namespace: HostAgentNamespace,
			Labels: map[string]string{"app.kubernetes.io/name": "svcprobe-node-host"}},
		Spec: spec,
	}
	cl, err := c.Client()
	if err != nil {
		return err
	}
	c.Log("deploying a host-network node agent on %s (namespace %s)", node, HostAgentNamespace)
	for _, obj := range hostAgentRBAC() {
		if err := createObject(ctx, cl, obj, "", o); err != nil {
			return err
		}
	}
	if _, err := cl.CoreV1().Pods(HostAgentNamespace).Create(ctx, pod, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		return fmt.Errorf("pod %s: %w", pod.Name, err)
	}
	return waitFor(ctx, 90*time.Second, pod.Name+" ready", func() error {
		if err := c.componentAlive("kubelet"); err != nil {
			return backoff.Permanent(err)
		}
		p, err := cl.CoreV1().Pods(HostAgentNamespace).Get(ctx, pod.Name, metav1.GetOptions{})
		if err != nil {
			return err
		}
		n, _ := labNodeByName(node)
		if p.Status.PodIP != n.IP {
			return fmt.Errorf("%s: podIP %q, want its node's %s (see %s)", pod.Name, p.Status.PodIP, n.IP, c.path("logs"))
		}
		for _, cond := range p.Status.Conditions {
			if cond.Type == corev1.PodReady && cond.Status == corev1.ConditionTrue {
				return nil
			}
		}
		return fmt.Errorf("%s not ready (see %s)", pod.Name, c.path("logs"))
	})
}

// DeleteHostNetworkAgent removes the host-network agent of node and waits until it is gone.
func DeleteHostNetworkAgent(ctx context.Context, c Config, node string) error {
	c.fill()
	cl, err := c.Client()
	if err != nil {
		return err
	}
	name := HostAgentName(node)
	if err := cl.CoreV1().Pods(HostAgentNamespace).Delete(ctx, name, metav1.DeleteOptions{}); err != nil && !apierrors.IsNotFound(err) {
		return err
	}
	err = waitFor(ctx, 60*time.Second, name+" gone", func() error {
		if _, err := cl.CoreV1().Pods(HostAgentNamespace).Get(ctx, name, metav1.GetOptions{}); !apierrors.IsNotFound(err) {
			return fmt.Errorf("%s still there (%v)", name, err)
		}
		return nil
	})
	if err != nil {
		return err
	}
	if err := cl.RbacV1().ClusterRoleBindings().Delete(ctx, HostAgentNamespace, metav1.DeleteOptions{}); err != nil && !apierrors.IsNotFound(err) {
		return err
	}
	// The namespace controller removes the ServiceAccount with it.
	if err := cl.CoreV1().Namespaces().Delete(ctx, HostAgentNamespace, metav1.DeleteOptions{}); err != nil && !apierrors.IsNotFound(err) {
		return err
	}
	return nil
}

// ScrapeHostAgent GETs path from the host-network agent of node, at the node's address.
func ScrapeHostAgent(ctx context.Context, node, path string) (string, error) {
	n, ok := labNodeByName(node)
	if !ok {
		return "", fmt.Errorf("no lab node %q", node)
	}
	return httpGet(ctx, "http://"+n.IP+":"+strconv.Itoa(HostAgentPort)+path)
}

// NodeFaults break one node only (node-2, and healthcheck-stale-node1 node-1's health check port
// of a Service with no endpoint there). They are not in Faults: the central exporter does not see
// them; the node agents do.
var NodeFaults = []Fault{
	{
		Name: "kube-proxy-down-node2", Breaks: "node-2's kube-proxy stopped and node-2's nat chain KUBE-SERVICES flushed",
		Expect: `node="node-2": layer="proxy" for every Service; node="node-1": ok`,
		Inject: func(ctx context.Context, c *Config, cl kubernetes.Interface) error {
			if pid, marker, err := readPidFile(c.pidPath(node2.Proxy)); err == nil && alive(pid, marker) {
				killPids([]int{pid}, 5*time.Second)
			}
			return c.flushServiceDispatch(Node2Netns)
		},
		Undo: func(ctx context.Context, c *Config, cl kubernetes.Interface) error {
			if err := c.componentAlive(node2.Proxy); err == nil {
				return nil
			}
			return c.startKubeProxyOn(node2)
		},
	},
	{
		Name: "nodeport-from-node2", Breaks: "node-2 refuses the connections it opens itself to its own address's NodePort of default/hostnames-nodeport (the Windows limitation, made on Linux with one iptables rule)",
		Expect: `node-2's host-network agent: default/hostnames-nodeport layer="proxy" reason="nodeport_unreachable_from_node"; node-2's Pod-network agent: ok`,
		Inject: func(ctx context.Context, c *Config, cl kubernetes.Interface) error {
			np, err := nodePortOf(ctx, cl)
			if err != nil {
				return err
			}
			_, err = run("ip", append([]string{"netns", "exec", Node2Netns, "iptables", "-w", "-I"}, nodePortFromNodeRule(np)...)...)
			return err
		},
		Undo: func(ctx context.Context, c *Config, cl kubernetes.Interface) error {
			// By the rule's comment, not its port: the Service may be gone already.
			if _, err := os.Stat(filepath.Join("/run/netns", Node2Netns)); err != nil {
				return nil // no node-2, no rule
			}
			return removeTaggedRules(Node2Netns, nodePortFromNodeComment)
		},
	},
	{
		Name: "hairpin-off-node2", Breaks: "hairpin_mode off on the bridge port of node-2's node agent",
		Expect: `node="node-2": layer="hairpin" for svcprobe/svcprobe-node-hairpin; node="node-1": ok`,
		Inject: func(ctx context.Context, c *Config, cl kubernetes.Interface) error {
			return nodeAgentHairpin(ctx, cl, Node2Name, "off")
		},
		Undo: func(ctx context.Context, c *Config, cl kubernetes.Interface) error {
			return nodeAgentHairpin(ctx, cl, Node2Name, "on")
		},
	},
	healthCheckFault,
	healthCheckStaleFault,
}

// NodePortService is the NodePort Service in front of hostnames that the nodeport faults use
// (CreateDemoServices makes the same one for the demo).
const NodePortService = "hostnames-nodeport"

// EnsureNodePortService creates default/hostnames-nodeport (NodePort, port 80 -> 9376 of the
// hostnames Pods) unless it exists, and returns its nodePort.
func EnsureNodePortService(ctx context.Context, cl kubernetes.Interface) (int32, error) {
	svc := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: NodePortService, Namespace: "default"}, Spec: corev1.ServiceSpec{
		Type: corev1.ServiceTypeNodePort, Selector: map[string]string{"app": "hostnames"},
		Ports: []corev1.ServicePort{{Name: "http", Port: 80, Protocol: corev1.ProtocolTCP, TargetPort: intstr.FromInt32(9376)}}}}
	if _, err := cl.CoreV1().Services("default").Create(ctx, svc, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		return 0, err
	}
	return nodePortOf(ctx, cl)
}

func nodePortOf(ctx context.Context, cl kubernetes.Interface) (int32, error) {
	s, err := cl.CoreV1().Services("default").Get(ctx, NodePortService, metav1.GetOptions{})
	if err != nil {
		return 0, err
	}
	if len(s.Spec.Ports) == 0 || s.Spec.Ports[0].NodePort == 0 {
		return 0, fmt.Errorf("service default/%s has no nodePort", NodePortService)
	}
	return s.Spec.Ports[0].NodePort, nil
}

// nodePortFromNodeComment tags nodePortFromNodeRule, which Undo removes by it.
const nodePortFromNodeComment = Prefix + "nodeport-from-node2"

// nodePortFromNodeRule is the iptables rule (filter OUTPUT of node-2) that refuses the
// connections node-2 itself opens to its own address's NodePort np. It matches on conntrack's
// original destination: by the filter table, kube-proxy's nat OUTPUT rules have already DNATed
// the packet to a Pod. Connections from Pods to the same NodePort come in through PREROUTING and
// FORWARD, not OUTPUT, and pass.
func nodePortFromNodeRule(np int32) []string {
	return []string{"OUTPUT", "-p", "tcp", "-m", "conntrack", "--ctorigdst", Node2IP, "--ctorigdstport", strconv.Itoa(int(np)),
		"-m", "comment", "--comment", nodePortFromNodeComment, "-j", "REJECT", "--reject-with", "tcp-reset"}
}

func nodeAgentHairpin(ctx context.Context, cl kubernetes.Interface, node, onOff string) error {
	n, ok := labNodeByName(node)
	if !ok {
		return fmt.Errorf("no lab node %q", node)
	}
	pod, err := NodeAgentPod(ctx, cl, node)
	if err != nil {
		return err
	}
	return ip("-n", n.Netns, "link", "set", vethName(pod.UID), "type", "bridge_slave", "hairpin", onOff)
}

// linkIPv6 is node N's address on the link between the two node namespaces (fd98:18:ff::N).
func linkIPv6(n int) string { return fmt.Sprintf("fd98:18:ff::%d", n) }

package lab

// A second node: its own node namespace (svcprobe-lab-node2) with its own
// bridge cbr0 (198.18.1.1/24, Pod CIDR 198.18.1.0/24), its own kube-proxy
// (iptables mode, --hostname-override=node-2) and a Node object; a veth pair
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
	"io"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
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
		{"-n", Node2Netns, "link", "set", Bridge, "up"},
		{"-n", Node2Netns, "route", "add", "unreachable", ServiceCIDR},
		{"-n", NodeNetns, "link", "add", node1Link, "type", "veth", "peer", "name", node2Link, "netns", Node2Netns},
		{"-n", NodeNetns, "link", "set", node1Link, "up"},
		{"-n", Node2Netns, "link", "set", node2Link, "up"},
		// No addresses on the link: each node reaches the other's bridge
		// address (and so its Pod /24) directly over it.
		{"-n", NodeNetns, "route", "add", Node2PodCIDR, "via", Node2IP, "dev", node1Link, "onlink"},
		{"-n", Node2Netns, "route", "add", node1.PodCIDR, "via", NodeIP, "dev", node2Link, "onlink"},
	} {
		if err := ip(s...); err != nil {
			return errors.Join(err, DownNode2(ctx, c))
		}
	}
	for _, kv := range []string{"net.ipv4.ip_forward=1", "net.bridge.bridge-nf-call-iptables=1"} {
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
	u := "http://" + pod.Status.PodIP + ":" + strconv.Itoa(ExporterPort) + path
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return "", err
	}
	resp, err := exporterHTTP.Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 32<<20))
	if err != nil {
		return "", err
	}
	if resp.StatusCode != http.StatusOK {
		return string(b), fmt.Errorf("GET %s: %s", u, resp.Status)
	}
	return string(b), nil
}

// NodeFaults break one node only (node-2). They are not in Faults: the
// central exporter, on node-1, does not see them; the node agents do.
var NodeFaults = []Fault{
	{
		Name: "kube-proxy-down-node2", Breaks: "node-2's kube-proxy stopped and node-2's nat chain KUBE-SERVICES flushed",
		Expect: `node="node-2": layer="proxy" for every Service; node="node-1": ok`,
		Inject: func(ctx context.Context, c *Config, cl kubernetes.Interface) error {
			if pid, marker, err := readPidFile(c.pidPath(node2.Proxy)); err == nil && alive(pid, marker) {
				killPids([]int{pid}, 5*time.Second)
			}
			_, err := run("ip", "netns", "exec", Node2Netns, "iptables", "-w", "-t", "nat", "-F", "KUBE-SERVICES")
			return err
		},
		Undo: func(ctx context.Context, c *Config, cl kubernetes.Interface) error {
			if err := c.componentAlive(node2.Proxy); err == nil {
				return nil
			}
			return c.startKubeProxyOn(node2)
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

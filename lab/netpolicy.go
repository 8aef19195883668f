package lab

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	networkingv1 "k8s.io/api/networking/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"sigs.k8s.io/yaml"
)

// NetworkPolicy enforcement on node-1: kube-network-policies, the Kubernetes network SIG's
// reference implementation: the first packet of each new connection of a Pod goes to an nfqueue,
// where the controller accepts or drops it by the NetworkPolicy API (see steerToNetworkPolicies
// for why the lab, not the controller, installs the queue rules). It runs in node-1's namespace,
// like a DaemonSet Pod with hostNetwork.
//
// It is off unless started (the policy faults): a lab without it is
// the lab every other test was proven on. Pods land on node-1 unless pinned elsewhere, and only
// node-1 enforces.
//
// kube-network-policies reads its API credentials with rest.InClusterConfig only: a token and
// the CA at /var/run/secrets/kubernetes.io/serviceaccount, and KUBERNETES_SERVICE_HOST/PORT. It
// gets them in a mount namespace of its own, with a tmpfs on /run that holds nothing else, so
// the host's /run is never written.

const (
	networkPoliciesComponent = "network-policies"
	// NetworkPoliciesTable is the nftables table kube-network-policies keeps in node-1's namespace.
	NetworkPoliciesTable = "kube-network-policies"
)

// inClusterRun is the shell that gives kube-network-policies its in-cluster credentials: it
// reads the token and the CA ($1, $2) before it hides /run, writes them where
// rest.InClusterConfig looks, and runs the rest of its arguments.
const inClusterRun = `set -e
token=$(cat "$1"); ca=$(cat "$2"); shift 2
mount -t tmpfs -o size=1m,mode=0755 svcprobe-lab-run /run
d=/run/secrets/kubernetes.io/serviceaccount
mkdir -p "$d"
printf '%s' "$token" > "$d/token"
printf '%s\n' "$ca" > "$d/ca.crt"
exec "$@"`

// StartNetworkPolicies starts NetworkPolicy enforcement on node-1 unless it runs, waits until it
// reads its nfqueue, and steers the Pods' new connections to it. Safe to call again.
func StartNetworkPolicies(ctx context.Context, c *Config) error {
	c.fill()
	if c.componentAlive(networkPoliciesComponent) != nil {
		bin := c.Binary("kube-network-policies")
		if _, err := os.Stat(bin); err != nil {
			return fmt.Errorf("%s missing (run `make lab-tools`)", bin)
		}
		argv := inNetns(NodeNetns, "unshare", "--mount", "--propagation", "private", "--",
			"sh", "-c", inClusterRun, "sh", c.path("admin.token"), c.path("ca.crt"),
			bin,
			"--hostname-override="+NodeName,
			"--metrics-bind-address=127.0.0.1:9080",
			"--disable-nri",
			"--fail-open=false",
			"--v=2",
		)
		c.Log("starting %s", networkPoliciesComponent)
		cmd, err := startDetached(argv, c.logPath(networkPoliciesComponent), []string{
			fmt.Sprintf("KUBERNETES_SERVICE_HOST=%s", NodeIP),
			fmt.Sprintf("KUBERNETES_SERVICE_PORT=%d", APIServerPort),
		})
		if err != nil {
			return err
		}
		go func() { _ = cmd.Wait() }()
		if err := writePidFile(c.pidPath(networkPoliciesComponent), cmd.Process.Pid, "kube-network-policies"); err != nil {
			return err
		}
	}
	if err := waitFor(ctx, 30*time.Second, "kube-network-policies listening on nfqueue "+networkPoliciesQueue+" in "+NodeNetns, func() error {
		if err := c.componentAlive(networkPoliciesComponent); err != nil {
			return backoff.Permanent(c.withLog(networkPoliciesComponent, err))
		}
		out, err := run("ip", "netns", "exec", NodeNetns, "cat", "/proc/net/netfilter/nfnetlink_queue")
		if err != nil {
			return err
		}
		for _, l := range strings.Split(out, "\n") {
			if f := strings.Fields(l); len(f) > 0 && f[0] == networkPoliciesQueue {
				return nil
			}
		}
		return fmt.Errorf("nfqueue %s not bound yet", networkPoliciesQueue)
	}); err != nil {
		return err
	}
	return steerToNetworkPolicies()
}

// networkPoliciesQueue is the nfqueue kube-network-policies reads (its --nfqueue-id default).
const networkPoliciesQueue = "100"

// networkPoliciesChain is the lab's iptables chain (mangle table, node-1) that sends connections
// to kube-network-policies' queue.
const networkPoliciesChain = "SVCPROBE-LAB-NETPOL"

// steerToNetworkPolicies sends the first packet of every new connection to or from a Pod to
// kube-network-policies' nfqueue, which accepts or drops it by the NetworkPolicy API. The
// controller installs these rules itself with nftables' queue expression, which this kernel does
// not have (`nft add rule ... queue num 100`: "No such file or directory"; the controller's
// whole rule batch fails), while the iptables NFQUEUE target works: so the lab installs the same
// rules in iptables, in the same place (POSTROUTING, after DNAT, before SNAT) and with the same
// exceptions (the node's own root-owned connections such as the kubelet's probes, established
// connections, DNS over UDP). It queues every Pod's connections, where the controller queues
// those of Pods a policy selects only; the controller accepts the others. The verdicts are the
// controller's own. Idempotent.
func steerToNetworkPolicies() error {
	if nodeMangle("-S", networkPoliciesChain) != nil {
		if err := nodeMangle("-N", networkPoliciesChain); err != nil {
			return err
		}
	}
	if err := nodeMangle("-F", networkPoliciesChain); err != nil {
		return err
	}
	for _, r := range [][]string{
		{"-m", "owner", "--uid-owner", "0", "-j", "RETURN"},
		{"-m", "conntrack", "--ctstate", "ESTABLISHED,RELATED", "-j", "RETURN"},
		{"-p", "udp", "--dport", "53", "-j", "RETURN"},
		{"-d", PodCIDR, "-j", "NFQUEUE", "--queue-num", networkPoliciesQueue},
		{"-s", PodCIDR, "-j", "NFQUEUE", "--queue-num", networkPoliciesQueue},
	} {
		if err := nodeMangle(append([]string{"-A", networkPoliciesChain}, r...)...); err != nil {
			return err
		}
	}
	if nodeMangle(append([]string{"-C"}, networkPoliciesJump...)...) != nil {
		return nodeMangle(append([]string{"-A"}, networkPoliciesJump...)...)
	}
	return nil
}

// nodeMangle runs iptables on node-1's mangle table.
func nodeMangle(args ...string) error {
	_, err := run("ip", append([]string{"netns", "exec", NodeNetns, "iptables", "-w", "-t", "mangle"}, args...)...)
	return err
}

// networkPoliciesJump is the rule that sends node-1's POSTROUTING through the lab's chain.
var networkPoliciesJump = []string{"POSTROUTING", "-m", "comment", "--comment", "svcprobe-lab netpol", "-j", networkPoliciesChain}

// unsteerNetworkPolicies removes the lab's chain and its jump, by name; safe when absent.
func unsteerNetworkPolicies() error {
	for nodeMangle(append([]string{"-C"}, networkPoliciesJump...)...) == nil {
		if err := nodeMangle(append([]string{"-D"}, networkPoliciesJump...)...); err != nil {
			return err
		}
	}
	if nodeMangle("-S", networkPoliciesChain) == nil {
		if err := nodeMangle("-F", networkPoliciesChain); err != nil {
			return err
		}
		return nodeMangle("-X", networkPoliciesChain)
	}
	return nil
}

// NetworkPoliciesEnforced reports whether enforcement runs on node-1.
func NetworkPoliciesEnforced(c *Config) bool {
	c.fill()
	return c.componentAlive(networkPoliciesComponent) == nil
}

// StopNetworkPolicies removes the steering, stops enforcement and deletes its nftables table by
// name if it made one (on SIGTERM the controller exits without cleaning up). Down does it; safe
// when nothing runs.
func StopNetworkPolicies(c *Config) error {
	c.fill()
	var errs []error
	nodeUp := false
	if _, err := os.Stat("/run/netns/" + NodeNetns); err == nil {
		nodeUp = true
		// The steering first: with no reader on the queue, its packets would be dropped.
		if err := unsteerNetworkPolicies(); err != nil {
			errs = append(errs, err)
		}
	}
	if pid, marker, err := readPidFile(c.pidPath(networkPoliciesComponent)); err == nil {
		if alive(pid, marker) {
			c.Log("stopping %s (pid %d)", networkPoliciesComponent, pid)
			killPids([]int{pid}, 5*time.Second)
		}
		if exists(pid) && alive(pid, marker) {
			errs = append(errs, fmt.Errorf("%s (pid %d) still running", networkPoliciesComponent, pid))
		}
		_ = os.Remove(c.pidPath(networkPoliciesComponent))
	} else if !os.IsNotExist(err) {
		errs = append(errs, err)
	}
	if nodeUp {
		if _, err := run("ip", "netns", "exec", NodeNetns, "nft", "list", "table", "inet", NetworkPoliciesTable); err == nil {
			if _, err := run("ip", "netns", "exec", NodeNetns, "nft", "delete", "table", "inet", NetworkPoliciesTable); err != nil {
				errs = append(errs, err)
			}
		}
	}
	return errors.Join(errs...)
}

// The NetworkPolicies of the policy faults, by name in namespace default.
const (
	labDenyPolicy  = "lab-default-deny"
	labAllowPolicy = "allow-svcprobe" // deploy/network-policy/target-namespace/allow-svcprobe.yaml
)

// defaultDeny is a namespace's default-deny ingress policy: every Pod selected, no rule.
func defaultDeny() *networkingv1.NetworkPolicy {
	return &networkingv1.NetworkPolicy{
		ObjectMeta: metav1.ObjectMeta{Name: labDenyPolicy, Namespace: "default"},
		Spec: networkingv1.NetworkPolicySpec{
			PodSelector: metav1.LabelSelector{},
			PolicyTypes: []networkingv1.PolicyType{networkingv1.PolicyTypeIngress},
		},
	}
}

// shippedAllowPolicy reads the policy svcprobe ships for target namespaces, so the lab proves
// that exact file against a real implementation.
func shippedAllowPolicy(c *Config) (*networkingv1.NetworkPolicy, error) {
	path := filepath.Join(filepath.Dir(c.DeployDir), "network-policy", "target-namespace", "allow-svcprobe.yaml")
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var np networkingv1.NetworkPolicy
	if err := yaml.UnmarshalStrict(b, &np); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	np.Namespace = "default"
	return &np, nil
}

// applyPolicies starts enforcement and creates the policies (replacing any of the same name).
func applyPolicies(ctx context.Context, c *Config, cl kubernetes.Interface, nps ...*networkingv1.NetworkPolicy) error {
	if err := StartNetworkPolicies(ctx, c); err != nil {
		return err
	}
	for _, np := range nps {
		err := cl.NetworkingV1().NetworkPolicies(np.Namespace).Delete(ctx, np.Name, metav1.DeleteOptions{})
		if err != nil && !apierrors.IsNotFound(err) {
			return err
		}
		if _, err := cl.NetworkingV1().NetworkPolicies(np.Namespace).Create(ctx, np, metav1.CreateOptions{}); err != nil {
			return err
		}
	}
	return nil
}

// removePolicies deletes the lab's policies from namespace default and stops enforcement.
func removePolicies(ctx context.Context, c *Config, cl kubernetes.Interface) error {
	var errs []error
	for _, name := range []string{labDenyPolicy, labAllowPolicy} {
		err := cl.NetworkingV1().NetworkPolicies("default").Delete(ctx, name, metav1.DeleteOptions{})
		if err != nil && !apierrors.IsNotFound(err) {
			errs = append(errs, err)
		}
	}
	return errors.Join(append(errs, StopNetworkPolicies(c))...)
}

// networkPolicyFaults are the catalogue's policy entries (in Faults): the owner's intent, which
// svcprobe must report as what it is, never as a broken Pod.
var networkPolicyFaults = []Fault{
	{
		Name:   "netpol-default-deny",
		Breaks: "nothing: NetworkPolicy lab-default-deny denies all ingress to namespace default's Pods (enforced on node-1 by kube-network-policies)",
		Expect: `layer="policy" reason="denied_by_network_policy" for default/hostnames (intended: no alert); its Pods really drop the exporter's connections`,
		Inject: func(ctx context.Context, c *Config, cl kubernetes.Interface) error {
			return applyPolicies(ctx, c, cl, defaultDeny())
		},
		Undo: removePolicies,
	},
	{
		Name:   "netpol-allow-svcprobe",
		Breaks: "nothing: default-deny in namespace default plus deploy/network-policy/target-namespace/allow-svcprobe.yaml (enforced by kube-network-policies)",
		Expect: `ok for default/hostnames, probed through the enforcement, while a client outside svcprobe's namespace is dropped`,
		Inject: func(ctx context.Context, c *Config, cl kubernetes.Interface) error {
			allow, err := shippedAllowPolicy(c)
			if err != nil {
				return err
			}
			return applyPolicies(ctx, c, cl, defaultDeny(), allow)
		},
		Undo: removePolicies,
	},
}

// DialPod reports whether a TCP connection from netns to addr (a Pod's IP:port) is accepted
// within timeout: the lab's view of what a policy lets through.
func DialPod(ctx context.Context, netns, addr string, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	conn, err := dialInNetns(ctx, netns, "tcp", addr)
	if err != nil {
		return err
	}
	return conn.Close()
}

package lab

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/kubernetes"
)

// Fault is one entry of the fault catalogue: a way to break the lab the way
// the "Debug Services" runbook describes, and its undo. `svcprobe-lab break
// NAME` / `fix NAME` and the e2e tests share these.
type Fault struct {
	Name   string
	Breaks string // what it does
	Expect string // the verdict svcprobe should give
	Inject func(ctx context.Context, c *Config, cl kubernetes.Interface) error
	Undo   func(ctx context.Context, c *Config, cl kubernetes.Interface) error
}

// Faults is the catalogue, in the order of the table; the NetworkPolicy entries last.
var Faults = append([]Fault{
	{
		Name: "missing-service", Breaks: "delete Service default/hostnames (it is --expect'ed)",
		Expect: `layer="missing" reason="not_found" for default/hostnames, no other series of it`,
		Inject: func(ctx context.Context, c *Config, cl kubernetes.Interface) error {
			err := cl.CoreV1().Services("default").Delete(ctx, "hostnames", metav1.DeleteOptions{})
			if apierrors.IsNotFound(err) {
				return nil
			}
			return err
		},
		Undo: func(ctx context.Context, c *Config, cl kubernetes.Interface) error {
			_, err := cl.CoreV1().Services("default").Create(ctx, hostnamesService(), metav1.CreateOptions{})
			if apierrors.IsAlreadyExists(err) {
				return resetHostnamesService(ctx, cl)
			}
			return err
		},
	},
	{
		Name: "selector-typo", Breaks: "Service hostnames selects run=hostnames instead of app=hostnames",
		Expect: `layer="spec" reason="selector_matches_no_pods"`,
		Inject: patchHostnames(`{"spec":{"selector":{"app":null,"run":"hostnames"}}}`),
		Undo: func(ctx context.Context, _ *Config, cl kubernetes.Interface) error {
			return resetHostnamesService(ctx, cl)
		},
	},
	{
		Name: "scaled-to-zero", Breaks: "nothing: Deployment hostnames is scaled to 0 replicas on purpose (kubectl scale --replicas=0)",
		Expect: `layer="idle" reason="scaled_to_zero" (intended: no alert, no SLO), ok again once scaled back to 3`,
		Inject: func(ctx context.Context, _ *Config, cl kubernetes.Interface) error {
			return scaleHostnames(ctx, cl, 0)
		},
		Undo: func(ctx context.Context, _ *Config, cl kubernetes.Interface) error {
			return scaleHostnames(ctx, cl, 3)
		},
	},
	{
		Name: "selector-typo-beside-idle", Breaks: "Service hostnames selects run=hostnames, while Deployment idle-elsewhere (app=idle-elsewhere) is scaled to 0 in the same namespace",
		Expect: `layer="spec" reason="selector_matches_no_pods": a workload at zero elsewhere does not make a typo idle`,
		Inject: func(ctx context.Context, c *Config, cl kubernetes.Interface) error {
			if err := createIdleDeployment(ctx, cl); err != nil {
				return err
			}
			return patchHostnames(`{"spec":{"selector":{"app":null,"run":"hostnames"}}}`)(ctx, c, cl)
		},
		Undo: func(ctx context.Context, _ *Config, cl kubernetes.Interface) error {
			if err := resetHostnamesService(ctx, cl); err != nil {
				return err
			}
			err := cl.AppsV1().Deployments("default").Delete(ctx, idleDeployment, metav1.DeleteOptions{})
			if apierrors.IsNotFound(err) {
				return nil
			}
			return err
		},
	},
	{
		Name: "wrong-targetport", Breaks: "Service hostnames targetPort 9377 (the Pods listen on 9376)",
		Expect: `layer="pod" reason="refused"`,
		Inject: patchHostnamesPort(func(p *corev1.ServicePort) { p.TargetPort = intstr.FromInt32(9377) }),
		Undo: func(ctx context.Context, _ *Config, cl kubernetes.Interface) error {
			return resetHostnamesService(ctx, cl)
		},
	},
	{
		Name: "named-targetport", Breaks: "Service hostnames targetPort \"no-such-port\" (no container port has that name)",
		Expect: `layer="spec" reason="target_port_unresolved"`,
		Inject: patchHostnamesPort(func(p *corev1.ServicePort) { p.TargetPort = intstr.FromString("no-such-port") }),
		Undo: func(ctx context.Context, _ *Config, cl kubernetes.Interface) error {
			return resetHostnamesService(ctx, cl)
		},
	},
	{
		Name: "protocol-mismatch", Breaks: "Service hostnames port 80 is UDP in front of the TCP server",
		Expect: `layer="spec" reason="protocol_mismatch"`,
		Inject: patchHostnamesPort(func(p *corev1.ServicePort) { p.Protocol = corev1.ProtocolUDP }),
		Undo: func(ctx context.Context, _ *Config, cl kubernetes.Interface) error {
			return resetHostnamesService(ctx, cl)
		},
	},
	{
		Name: "pods-not-ready", Breaks: "every hostnames Pod reports Ready=False (processes keep running)",
		Expect: `layer="endpoints" reason="no_ready_endpoints"`,
		Inject: func(ctx context.Context, c *Config, cl kubernetes.Interface) error {
			return annotatePods(ctx, cl, "default", "app=hostnames", 0, map[string]*string{AnnReady: ptr("false")})
		},
		Undo: func(ctx context.Context, c *Config, cl kubernetes.Interface) error {
			return annotatePods(ctx, cl, "default", "app=hostnames", 0, map[string]*string{AnnReady: nil})
		},
	},
	{
		Name: "backend-killed", Breaks: "the server process of one of the three hostnames Pods is killed (and not restarted); the Pod stays Ready, as before a real kubelet's readiness failureThreshold",
		Expect: `layer="pod" reason="refused", svcprobe_endpoints{state="unreachable"} 1`,
		Inject: func(ctx context.Context, c *Config, cl kubernetes.Interface) error {
			return annotatePods(ctx, cl, "default", "app=hostnames", 1, map[string]*string{AnnReady: ptr("keep"), AnnStopped: ptr("true")})
		},
		Undo: func(ctx context.Context, c *Config, cl kubernetes.Interface) error {
			return annotatePods(ctx, cl, "default", "app=hostnames", 0, map[string]*string{AnnReady: nil, AnnStopped: nil})
		},
	},
	{
		Name: "dns-down", Breaks: "both CoreDNS Pods' processes killed (not restarted; they turn NotReady)",
		Expect: `layer="dns" for every Service but kube-dns itself`,
		Inject: func(ctx context.Context, c *Config, cl kubernetes.Interface) error {
			return annotatePods(ctx, cl, "kube-system", "k8s-app=kube-dns", 0, map[string]*string{AnnStopped: ptr("true")})
		},
		Undo: func(ctx context.Context, c *Config, cl kubernetes.Interface) error {
			return annotatePods(ctx, cl, "kube-system", "k8s-app=kube-dns", 0, map[string]*string{AnnStopped: nil})
		},
	},
	{
		Name: "dns-replica-down", Breaks: "CoreDNS Pod coredns-1 killed (not restarted) while it stays Ready",
		Expect: `svcprobe_cluster_dns_up{kind="pod",server="coredns-1"} 0; verdicts dns at most`,
		Inject: func(ctx context.Context, c *Config, cl kubernetes.Interface) error {
			return annotatePod(ctx, cl, "kube-system", "coredns-1", map[string]*string{AnnReady: ptr("keep"), AnnStopped: ptr("true")})
		},
		Undo: func(ctx context.Context, c *Config, cl kubernetes.Interface) error {
			return annotatePod(ctx, cl, "kube-system", "coredns-1", map[string]*string{AnnReady: nil, AnnStopped: nil})
		},
	},
	{
		Name: "resolv-search", Breaks: "the exporter Pod's resolv.conf searches nowhere.svc.cluster.local only (rewritten in place, container restarted to read it)",
		Expect: `layer="dns" reason="nxdomain" while the FQDN resolves (svcprobe_cluster_dns_up{kind="service"} 1)`,
		Inject: func(ctx context.Context, c *Config, cl kubernetes.Interface) error {
			return exporterResolvConf(ctx, c, fmt.Sprintf("nameserver %s\nsearch nowhere.svc.%s\noptions ndots:5\n", DNSServiceIP, ClusterDomain))
		},
		Undo: func(ctx context.Context, c *Config, cl kubernetes.Interface) error {
			return exporterResolvConf(ctx, c, ResolvConf(ExporterNamespace))
		},
	},
	{
		Name: "kube-proxy-down", Breaks: "kube-proxy stopped and its Service dispatch emptied: the nat chain KUBE-SERVICES flushed (iptables mode), the chain services of table ip kube-proxy flushed (nftables mode)",
		Expect: `layer="proxy" for every Service with a ClusterIP`,
		Inject: func(ctx context.Context, c *Config, cl kubernetes.Interface) error {
			if pid, marker, err := readPidFile(c.pidPath("kube-proxy")); err == nil && alive(pid, marker) {
				killPids([]int{pid}, 5*time.Second)
			}
			return c.flushServiceDispatch(NodeNetns)
		},
		Undo: func(ctx context.Context, c *Config, cl kubernetes.Interface) error {
			if err := c.componentAlive("kube-proxy"); err == nil {
				return nil
			}
			return c.StartKubeProxy()
		},
	},
	{
		Name: "hairpin-off", Breaks: "hairpin_mode off on the exporter Pod's bridge port",
		Expect: `layer="hairpin" for svcprobe/svcprobe-hairpin`,
		Inject: func(ctx context.Context, c *Config, cl kubernetes.Interface) error {
			return exporterHairpin(ctx, c, "off")
		},
		Undo: func(ctx context.Context, c *Config, cl kubernetes.Interface) error {
			return exporterHairpin(ctx, c, "on")
		},
	},
	{
		Name: "vip-partial", Breaks: "about one connection in three to Service hostnames' ClusterIP:80 is DNATed to " + BlackholeIP + ":9376, where nothing answers (stale rules for one endpoint), while every Pod answers directly (iptables mode: a nat chain jumped to before KUBE-SERVICES; nftables mode: a nat chain of the lab's own table at priority dstnat - 10, before kube-proxy's)",
		Expect: `layer="proxy" for default/hostnames (reason partial, or timeout/unreachable when two rounds in a row failed); never pod`,
		Inject: func(ctx context.Context, c *Config, cl kubernetes.Interface) error {
			return injectVIPFault(ctx, c, cl, 0.34)
		},
		Undo: func(ctx context.Context, c *Config, cl kubernetes.Interface) error {
			return removeVIPFault()
		},
	},
	{
		Name: "pod-flaky", Breaks: "one of the three hostnames Pods drops half of the SYNs to 9376 (iptables INPUT in its namespace; the kubelet's readiness probes from the node's address pass, as a real kubelet's failureThreshold would mostly hide it)",
		Expect: `layer="pod" for default/hostnames (reason partial or timeout); never proxy`,
		Inject: func(ctx context.Context, c *Config, cl kubernetes.Interface) error {
			return injectPodFlaky(ctx, cl)
		},
		Undo: func(ctx context.Context, c *Config, cl kubernetes.Interface) error {
			return removePodFlaky()
		},
	},
	{
		Name: "node-local-dns-down", Breaks: "the exporter Pod's resolv.conf names the node-local cache " + NodeLocalDNSIP + " (container restarted), then the cache is stopped (its interface stays)",
		Expect: `layer="dns" reason="node_local_dns_unreachable" for every Service (kube-dns itself may stay ok), svcprobe_cluster_dns_up{kind="node_local"} 0; never proxy`,
		Inject: func(ctx context.Context, c *Config, cl kubernetes.Interface) error {
			if err := ExporterUseNodeLocalDNS(ctx, c, true); err != nil {
				return err
			}
			return StopNodeLocalDNS(c)
		},
		Undo: func(ctx context.Context, c *Config, cl kubernetes.Interface) error {
			if err := StartNodeLocalDNS(ctx, c); err != nil {
				return err
			}
			return ExporterUseNodeLocalDNS(ctx, c, false)
		},
	},
	{
		Name: "resolver-down", Breaks: "the exporter Pod's resolv.conf names " + BlackholeIP + " (not the DNS Service, nothing answers there; container restarted)",
		Expect: `layer="dns" reason="resolver_unreachable" for every Service, svcprobe_cluster_dns_up{kind="resolver"} 0; never proxy`,
		Inject: func(ctx context.Context, c *Config, cl kubernetes.Interface) error {
			return exporterResolvConf(ctx, c, resolvConfWith(BlackholeIP, ExporterNamespace))
		},
		Undo: func(ctx context.Context, c *Config, cl kubernetes.Interface) error {
			return exporterResolvConf(ctx, c, ResolvConf(ExporterNamespace))
		},
	},
	{
		Name: "dns-vip-rules-gone", Breaks: "only the DNS Service's proxy rules are gone: " + DNSServiceIP + " is not translated (iptables mode: nat chain " + dnsVIPFaultChain + ", jumped to before KUBE-SERVICES from PREROUTING and OUTPUT, ACCEPTs it; nftables mode: the lab's own table marks its packets notrack at priority raw, and untracked packets are never NATed); other VIPs work",
		Expect: `kube-system/kube-dns layer="proxy"; every other Service layer="dns" (never proxy); svcprobe_cluster_dns_up{kind="service"} 0 while kind="pod" 1`,
		Inject: func(ctx context.Context, c *Config, cl kubernetes.Interface) error {
			var err error
			if c.ProxyMode() == ProxyModeNFTables {
				rule := "ip daddr " + DNSServiceIP + ` notrack comment "svcprobe-lab dns-vip-rules-gone"`
				err = ensureNftFaultTable(nftDNSVIPTable, map[string]string{
					"prerouting": "\t\ttype filter hook prerouting priority raw; policy accept;\n\t\t" + rule,
					"output":     "\t\ttype filter hook output priority raw; policy accept;\n\t\t" + rule,
				})
			} else {
				err = ensureNatFaultChain(dnsVIPFaultChain, []string{"-d", DNSServiceIP + "/32", "-m", "comment", "--comment", "svcprobe-lab dns-vip-rules-gone", "-j", "ACCEPT"})
			}
			if err != nil {
				return err
			}
			return forgetConntrack(DNSServiceIP)
		},
		Undo: func(ctx context.Context, c *Config, cl kubernetes.Interface) error {
			if err := errors.Join(removeNatFaultChain(dnsVIPFaultChain), removeNftFaultTable(nftDNSVIPTable)); err != nil {
				return err
			}
			return forgetConntrack(DNSServiceIP)
		},
	},
}, networkPolicyFaults...)

// Fault plumbing of the data plane. Every rule is in a chain or carries a comment of the lab's
// own, and is removed by that name; removal is safe when nothing was injected.
const (
	// BlackholeIP is an address of cbr0's /24 that nothing holds (the kubelet hands out
	// .10-.249, the client namespace has .250): connections to it time out.
	BlackholeIP = "198.18.0.251"
	// vipFaultChain holds vip-partial's DNAT (and the alerts test's hard VIP failure).
	vipFaultChain = "SVCPROBE-FAULT-VIP"
	// dnsVIPFaultChain holds dns-vip-rules-gone's ACCEPT.
	dnsVIPFaultChain = "SVCPROBE-FAULT-DNSVIP"
	// nftVIPTable and nftDNSVIPTable name the lab's own nftables tables (nftFaultTable) of
	// vip-partial and dns-vip-rules-gone in nftables mode.
	nftVIPTable    = "vip"
	nftDNSVIPTable = "dnsvip"
	// podFlakyComment tags pod-flaky's rule in a hostnames Pod's filter INPUT.
	podFlakyComment = "svcprobe-lab-pod-flaky"
)

func nodeIptables(args ...string) (string, error) {
	return run("ip", append([]string{"netns", "exec", NodeNetns, "iptables", "-w", "5"}, args...)...)
}

// injectVIPFault DNATs the given share of new connections to hostnames' ClusterIP:80 to
// BlackholeIP:9376 (probability 1: every one), from the top of nat PREROUTING (Pods) and OUTPUT
// (the node), before kube-proxy's KUBE-SERVICES.
func injectVIPFault(ctx context.Context, c *Config, cl kubernetes.Interface, probability float64) error {
	s, err := cl.CoreV1().Services("default").Get(ctx, "hostnames", metav1.GetOptions{})
	if err != nil {
		return err
	}
	if s.Spec.ClusterIP == "" || s.Spec.ClusterIP == corev1.ClusterIPNone {
		return fmt.Errorf("Service default/hostnames has no ClusterIP")
	}
	if c.ProxyMode() == ProxyModeNFTables {
		// The lab's own nat chains at dstnat - 10: a connection they DNAT is not looked at by
		// kube-proxy's (the kernel runs the nat chains of a hook until one binds the connection).
		rule := "ip daddr " + s.Spec.ClusterIP + " tcp dport 80 "
		if probability < 1 {
			rule += fmt.Sprintf("numgen random mod 100 < %d ", int(probability*100))
		}
		rule += "dnat to " + BlackholeIP + `:9376 comment "svcprobe-lab vip fault"`
		return ensureNftFaultTable(nftVIPTable, map[string]string{
			"prerouting": "\t\ttype nat hook prerouting priority dstnat - 10; policy accept;\n\t\t" + rule,
			"output":     "\t\ttype nat hook output priority -110; policy accept;\n\t\t" + rule,
		})
	}
	rule := []string{"-d", s.Spec.ClusterIP + "/32", "-p", "tcp", "--dport", "80"}
	if probability < 1 {
		rule = append(rule, "-m", "statistic", "--mode", "random", "--probability", strconv.FormatFloat(probability, 'f', 2, 64))
	}
	rule = append(rule, "-m", "comment", "--comment", "svcprobe-lab vip fault", "-j", "DNAT", "--to-destination", BlackholeIP+":9376")
	return ensureNatFaultChain(vipFaultChain, rule)
}

// removeVIPFault removes injectVIPFault's chain, then the node's conntrack entries of the
// connections it sent to BlackholeIP: a new connection from a reused source port would
// otherwise match one (still SYN_SENT) and go there again.
func removeVIPFault() error {
	if err := errors.Join(removeNatFaultChain(vipFaultChain), removeNftFaultTable(nftVIPTable)); err != nil {
		return err
	}
	if _, err := lookPath("conntrack"); err == nil {
		_, _ = run("ip", "netns", "exec", NodeNetns, "conntrack", "-D", "--reply-src", BlackholeIP)
	}
	return nil
}

// ensureNatFaultChain makes chain (in the node's nat table) hold exactly rule, jumped to from
// the top of PREROUTING and OUTPUT.
func ensureNatFaultChain(chain string, rule []string) error {
	if _, err := nodeIptables("-t", "nat", "-S", chain); err != nil {
		if _, err := nodeIptables("-t", "nat", "-N", chain); err != nil {
			return err
		}
	}
	if _, err := nodeIptables("-t", "nat", "-F", chain); err != nil {
		return err
	}
	if _, err := nodeIptables(append([]string{"-t", "nat", "-A", chain}, rule...)...); err != nil {
		return err
	}
	for _, from := range []string{"PREROUTING", "OUTPUT"} {
		if _, err := nodeIptables("-t", "nat", "-C", from, "-j", chain); err == nil {
			continue
		}
		if _, err := nodeIptables("-t", "nat", "-I", from, "1", "-j", chain); err != nil {
			return err
		}
	}
	return nil
}

// removeNatFaultChain deletes the jumps to chain and the chain itself, by name.
func removeNatFaultChain(chain string) error {
	if _, err := os.Stat(filepath.Join("/run/netns", NodeNetns)); err != nil {
		return nil // no lab
	}
	if _, err := nodeIptables("-t", "nat", "-S", chain); err != nil {
		return nil // not injected
	}
	for _, from := range []string{"PREROUTING", "OUTPUT"} {
		for i := 0; i < 10; i++ {
			if _, err := nodeIptables("-t", "nat", "-D", from, "-j", chain); err != nil {
				break
			}
		}
	}
	if _, err := nodeIptables("-t", "nat", "-F", chain); err != nil {
		return err
	}
	_, err := nodeIptables("-t", "nat", "-X", chain)
	return err
}

// forgetConntrack deletes the node's conntrack entries of flows to addr, so that flows of
// reused ports (UDP DNS) take the nat rules as they are now; kube-proxy does the same for UDP
// Services whose endpoints change. Skipped without the conntrack tool.
func forgetConntrack(addr string) error {
	if _, err := lookPath("conntrack"); err != nil {
		return nil
	}
	// Exit status 1 with "0 flow entries have been deleted" is not an error here.
	_, _ = run("ip", "netns", "exec", NodeNetns, "conntrack", "-D", "-d", addr)
	return nil
}

// podFlakyRule is the rule pod-flaky inserts into a hostnames Pod's filter INPUT: half of the
// SYNs to 9376 from anyone but the node (whose address the kubelet's readiness probes come from)
// are dropped.
func podFlakyRule(op string) []string {
	return []string{"iptables", "-w", "5", op, "INPUT", "-p", "tcp", "--syn", "--dport", "9376", "!", "-s", NodeIP + "/32",
		"-m", "statistic", "--mode", "random", "--probability", "0.5", "-m", "comment", "--comment", podFlakyComment, "-j", "DROP"}
}

// injectPodFlaky makes the first (by name) hostnames Pod drop half of its SYNs.
func injectPodFlaky(ctx context.Context, cl kubernetes.Interface) error {
	pods, err := cl.CoreV1().Pods("default").List(ctx, metav1.ListOptions{LabelSelector: "app=hostnames"})
	if err != nil {
		return err
	}
	var names []string
	for _, p := range pods.Items {
		if p.DeletionTimestamp == nil && p.Status.PodIP != "" {
			names = append(names, p.Name)
		}
	}
	if len(names) == 0 {
		return fmt.Errorf("no running hostnames Pod")
	}
	sort.Strings(names)
	netns := PodNetns("default", names[0])
	if _, err := run("ip", append([]string{"netns", "exec", netns}, podFlakyRule("-C")...)...); err == nil {
		return nil
	}
	_, err = run("ip", append([]string{"netns", "exec", netns}, podFlakyRule("-I")...)...)
	return err
}

// removePodFlaky deletes pod-flaky's rule from every hostnames Pod's namespace that has it.
func removePodFlaky() error {
	nss, err := listNetns()
	if err != nil {
		return err
	}
	var errs []error
	for _, ns := range nss {
		if !strings.HasPrefix(ns, PodNetns("default", "hostnames-")) {
			continue
		}
		for i := 0; i < 10; i++ {
			if _, err := run("ip", append([]string{"netns", "exec", ns}, podFlakyRule("-C")...)...); err != nil {
				break
			}
			if _, err := run("ip", append([]string{"netns", "exec", ns}, podFlakyRule("-D")...)...); err != nil {
				errs = append(errs, err)
				break
			}
		}
	}
	return errors.Join(errs...)
}

// FaultByName finds a fault of the catalogue or of the dual-stack faults (which need
// EnsureDualStackServices' Services to show).
func FaultByName(name string) (*Fault, error) {
	var names []string
	for _, fs := range [][]Fault{Faults, DualStackFaults} {
		for i := range fs {
			if fs[i].Name == name {
				return &fs[i], nil
			}
			names = append(names, fs[i].Name)
		}
	}
	return nil, fmt.Errorf("unknown fault %q (one of: %s)", name, strings.Join(names, ", "))
}

// Break injects a fault into the running lab.
func Break(ctx context.Context, c Config, name string) error {
	return applyFault(ctx, c, name, true)
}

// Fix undoes a fault (safe to run when the fault is not there).
func Fix(ctx context.Context, c Config, name string) error {
	return applyFault(ctx, c, name, false)
}

func applyFault(ctx context.Context, c Config, name string, inject bool) error {
	c.fill()
	f, err := FaultByName(name)
	if err != nil {
		return err
	}
	cl, err := c.Client()
	if err != nil {
		return err
	}
	if inject {
		return f.Inject(ctx, &c, cl)
	}
	return f.Undo(ctx, &c, cl)
}

func hostnamesService() *corev1.Service {
	labels := map[string]string{"app": "hostnames"}
	return &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: "hostnames", Namespace: "default", Labels: labels},
		Spec: corev1.ServiceSpec{
			Selector: labels,
			Ports:    []corev1.ServicePort{{Port: 80, Protocol: corev1.ProtocolTCP, TargetPort: intstr.FromInt32(9376)}},
		},
	}
}

// resetHostnamesService puts back the selector and port of Service hostnames.
func resetHostnamesService(ctx context.Context, cl kubernetes.Interface) error {
	want := hostnamesService()
	return retry(ctx, func() error {
		s, err := cl.CoreV1().Services("default").Get(ctx, "hostnames", metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			_, err = cl.CoreV1().Services("default").Create(ctx, want, metav1.CreateOptions{})
			return err
		}
		if err != nil {
			return err
		}
		s.Spec.Selector = want.Spec.Selector
		p := want.Spec.Ports[0]
		if len(s.Spec.Ports) > 0 {
			p.NodePort = s.Spec.Ports[0].NodePort
		}
		s.Spec.Ports = []corev1.ServicePort{p}
		_, err = cl.CoreV1().Services("default").Update(ctx, s, metav1.UpdateOptions{})
		return err
	})
}

// scaleHostnames sets Deployment hostnames' replicas.
func scaleHostnames(ctx context.Context, cl kubernetes.Interface, replicas int32) error {
	patch := fmt.Sprintf(`{"spec":{"replicas":%d}}`, replicas)
	return retry(ctx, func() error {
		_, err := cl.AppsV1().Deployments("default").Patch(ctx, "hostnames", types.MergePatchType, []byte(patch), metav1.PatchOptions{})
		return err
	})
}

// idleDeployment is the name of the Deployment selector-typo-beside-idle creates at 0 replicas.
const idleDeployment = "idle-elsewhere"

func createIdleDeployment(ctx context.Context, cl kubernetes.Interface) error {
	return createServeHostnameDeployment(ctx, cl, idleDeployment, 0)
}

// createServeHostnameDeployment creates Deployment default/name (label app=name) of serve_hostname
// Pods (container "serve", port 9376 "http"); one that exists is left as it is.
func createServeHostnameDeployment(ctx context.Context, cl kubernetes.Interface, name string, replicas int32) error {
	labels := map[string]string{"app": name}
	d := &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "default", Labels: labels},
		Spec: appsv1.DeploymentSpec{
			Replicas: &replicas,
			Selector: &metav1.LabelSelector{MatchLabels: labels},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: labels},
				Spec: corev1.PodSpec{AutomountServiceAccountToken: ptr(false), Containers: []corev1.Container{{
					Name: "serve", Image: "registry.k8s.io/serve_hostname",
					Ports: []corev1.ContainerPort{{Name: "http", ContainerPort: 9376, Protocol: corev1.ProtocolTCP}},
				}}},
			},
		},
	}
	_, err := cl.AppsV1().Deployments("default").Create(ctx, d, metav1.CreateOptions{})
	if apierrors.IsAlreadyExists(err) {
		return nil
	}
	return err
}

func patchHostnames(patch string) func(context.Context, *Config, kubernetes.Interface) error {
	return func(ctx context.Context, _ *Config, cl kubernetes.Interface) error {
		_, err := cl.CoreV1().Services("default").Patch(ctx, "hostnames", types.MergePatchType, []byte(patch), metav1.PatchOptions{})
		return err
	}
}

func patchHostnamesPort(f func(*corev1.ServicePort)) func(context.Context, *Config, kubernetes.Interface) error {
	return func(ctx context.Context, _ *Config, cl kubernetes.Interface) error {
		return retry(ctx, func() error {
			s, err := cl.CoreV1().Services("default").Get(ctx, "hostnames", metav1.GetOptions{})
			if err != nil {
				return err
			}
			f(&s.Spec.Ports[0])
			_, err = cl.CoreV1().Services("default").Update(ctx, s, metav1.UpdateOptions{})
			return err
		})
	}
}

func retry(ctx context.Context, f func() error) error {
	var err error
	for i := 0; i < 5; i++ {
		if err = f(); err == nil || !apierrors.IsConflict(err) {
			return err
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
	return err
}

// annotatePods sets (nil: removes) annotations on the live Pods matching
// selector; n > 0 takes only the first n by name.
func annotatePods(ctx context.Context, cl kubernetes.Interface, ns, selector string, n int, ann map[string]*string) error {
	pods, err := cl.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{LabelSelector: selector})
	if err != nil {
		return err
	}
	var names []string
	for _, p := range pods.Items {
		if p.DeletionTimestamp == nil {
			names = append(names, p.Name)
		}
	}
	sort.Strings(names)
	if n > 0 && len(names) > n {
		names = names[:n]
	}
	if len(names) == 0 {
		return fmt.Errorf("no Pods %s in %s", selector, ns)
	}
	for _, name := range names {
		if err := annotatePod(ctx, cl, ns, name, ann); err != nil {
			return err
		}
	}
	return nil
}

func annotatePod(ctx context.Context, cl kubernetes.Interface, ns, name string, ann map[string]*string) error {
	var parts []string
	for k, v := range ann {
		if v == nil {
			parts = append(parts, fmt.Sprintf("%q:null", k))
		} else {
			parts = append(parts, fmt.Sprintf("%q:%q", k, *v))
		}
	}
	patch := `{"metadata":{"annotations":{` + strings.Join(parts, ",") + `}}}`
	_, err := cl.CoreV1().Pods(ns).Patch(ctx, name, types.MergePatchType, []byte(patch), metav1.PatchOptions{})
	return err
}

// exporterResolvConf rewrites the exporter Pod's resolv.conf in place (the
// bind mount of `ip netns exec` keeps the inode) and restarts its container,
// since a process reads resolv.conf when it starts, as in a real Pod.
func exporterResolvConf(ctx context.Context, c *Config, content string) error {
	pod, err := c.ExporterPod(ctx)
	if err != nil {
		return err
	}
	netns := PodNetns(pod.Namespace, pod.Name)
	path := filepath.Join("/etc/netns", netns, "resolv.conf")
	old, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	if string(old) == content {
		return nil
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_TRUNC, 0)
	if err != nil {
		return err
	}
	if _, err := f.WriteString(content); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	return RestartPodProcesses(pod.Namespace, pod.Name)
}

// RestartPodProcesses kills (SIGTERM) every process in a Pod's namespace;
// the kubelet starts the containers again after a second.
func RestartPodProcesses(namespace, name string) error {
	pids := netnsPids(PodNetns(namespace, name))
	if len(pids) == 0 {
		return fmt.Errorf("no process in the netns of %s/%s", namespace, name)
	}
	for _, p := range pids {
		_ = syscall.Kill(p, syscall.SIGTERM)
	}
	return nil
}

func exporterHairpin(ctx context.Context, c *Config, onOff string) error {
	pod, err := c.ExporterPod(ctx)
	if err != nil {
		return err
	}
	return ip("-n", NodeNetns, "link", "set", vethName(pod.UID), "type", "bridge_slave", "hairpin", onOff)
}

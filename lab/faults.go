package lab

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"time"

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

// Faults is the catalogue, in the order of the table.
var Faults = []Fault{
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
		Name: "kube-proxy-down", Breaks: "kube-proxy stopped and the nat chain KUBE-SERVICES flushed",
		Expect: `layer="proxy" for every Service with a ClusterIP`,
		Inject: func(ctx context.Context, c *Config, cl kubernetes.Interface) error {
			if pid, marker, err := readPidFile(c.pidPath("kube-proxy")); err == nil && alive(pid, marker) {
				killPids([]int{pid}, 5*time.Second)
			}
			_, err := run("ip", "netns", "exec", NodeNetns, "iptables", "-t", "nat", "-F", "KUBE-SERVICES")
			return err
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
}

// FaultByName finds a fault of the catalogue.
func FaultByName(name string) (*Fault, error) {
	var names []string
	for i := range Faults {
		if Faults[i].Name == name {
			return &Faults[i], nil
		}
		names = append(names, Faults[i].Name)
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

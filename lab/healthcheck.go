package lab

// externalTrafficPolicy: Local (issue 18). A serve_hostname Pod bound to node-2 behind
// default/hostnames-local, a LoadBalancer Service with externalTrafficPolicy Local. kube-proxy
// serves the Service's healthCheckNodePort on every node for the external load balancer: 200 on
// node-2 (one local endpoint), 503 on node-1 (none). The fault healthcheck-node2 rejects
// connections to that port on node-2 while the NodePort still answers there: node-2's agents must
// say proxy/health_check_failing for hostnames-local, node-1's agent and the central exporter
// (no local endpoint: nothing of the NodePort path to check) ok. The fault
// healthcheck-stale-node1 is the other way round: node-1's health check port of hostnames-local
// NATed to a Pod that answers 200 (as a kube-proxy with a stale view of the endpoints would):
// node-1's agent must say proxy/health_check_stale, node-2's agents and the central exporter ok.

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/kubernetes"
)

const (
	// LocalLBService is the LoadBalancer Service with externalTrafficPolicy Local.
	LocalLBService = "hostnames-local"
	// localLBPod is its one backend, bound to node-2.
	localLBPod   = "hostnames-node2"
	localLBLabel = "hostnames-local"
	// healthCheckComment tags the fault's rule in node-2's filter INPUT.
	healthCheckComment = Prefix + "healthcheck-node2"
	// healthCheckStaleComment tags healthCheckStaleFault's rules in node-1's nat table.
	healthCheckStaleComment = Prefix + "healthcheck-stale-node1"
)

// EnsureLocalLBService creates the Pod on node-2 and default/hostnames-local, waits until the Pod
// is ready, and returns the Service's healthCheckNodePort.
func EnsureLocalLBService(ctx context.Context, cl kubernetes.Interface) (int32, error) {
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: localLBPod, Namespace: "default", Labels: map[string]string{"app": localLBLabel}},
		Spec: corev1.PodSpec{
			NodeName:                     Node2Name,
			AutomountServiceAccountToken: ptr(false),
			Containers: []corev1.Container{{
				Name: "serve", Image: "registry.k8s.io/serve_hostname",
				Ports: []corev1.ContainerPort{{Name: "http", ContainerPort: 9376, Protocol: corev1.ProtocolTCP}},
			}},
		},
	}
	if _, err := cl.CoreV1().Pods("default").Create(ctx, pod, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		return 0, err
	}
	svc := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: LocalLBService, Namespace: "default"}, Spec: corev1.ServiceSpec{
		Type: corev1.ServiceTypeLoadBalancer, ExternalTrafficPolicy: corev1.ServiceExternalTrafficPolicyLocal,
		Selector: map[string]string{"app": localLBLabel},
		Ports:    []corev1.ServicePort{{Name: "http", Port: 80, Protocol: corev1.ProtocolTCP, TargetPort: intstr.FromInt32(9376)}}}}
	s, err := cl.CoreV1().Services("default").Create(ctx, svc, metav1.CreateOptions{})
	if apierrors.IsAlreadyExists(err) {
		s, err = cl.CoreV1().Services("default").Get(ctx, LocalLBService, metav1.GetOptions{})
	}
	if err != nil {
		return 0, err
	}
	if s.Spec.HealthCheckNodePort == 0 {
		return 0, fmt.Errorf("service default/%s has no healthCheckNodePort", LocalLBService)
	}
	err = waitFor(ctx, 60*time.Second, "Pod default/"+localLBPod+" ready on "+Node2Name, func() error {
		p, err := cl.CoreV1().Pods("default").Get(ctx, localLBPod, metav1.GetOptions{})
		if err != nil {
			return err
		}
		for _, c := range p.Status.Conditions {
			if c.Type == corev1.PodReady && c.Status == corev1.ConditionTrue {
				return nil
			}
		}
		return fmt.Errorf("not ready yet")
	})
	return s.Spec.HealthCheckNodePort, err
}

// DeleteLocalLBService deletes default/hostnames-local and its Pod (nothing when gone).
func DeleteLocalLBService(ctx context.Context, cl kubernetes.Interface) error {
	if err := cl.CoreV1().Services("default").Delete(ctx, LocalLBService, metav1.DeleteOptions{}); err != nil && !apierrors.IsNotFound(err) {
		return err
	}
	if err := cl.CoreV1().Pods("default").Delete(ctx, localLBPod, metav1.DeleteOptions{GracePeriodSeconds: ptr(int64(0))}); err != nil && !apierrors.IsNotFound(err) {
		return err
	}
	return nil
}

// NodeHealthCheck asks kube-proxy's service health server of a lab node for hostnames-local, from
// that node's namespace (the lab's own check, not svcprobe's): the HTTP status.
func NodeHealthCheck(ctx context.Context, node labNode, port int32) (int, error) {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	cl := &http.Client{Transport: &http.Transport{DialContext: NetnsDialer(node.Netns), DisableKeepAlives: true}}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+net.JoinHostPort(node.IP, strconv.Itoa(int(port)))+"/healthz", nil)
	if err != nil {
		return 0, err
	}
	resp, err := cl.Do(req)
	if err != nil {
		return 0, err
	}
	_ = resp.Body.Close()
	return resp.StatusCode, nil
}

// localLBHealthCheckPort is the healthCheckNodePort of default/hostnames-local, as an iptables
// port argument.
func localLBHealthCheckPort(ctx context.Context, cl kubernetes.Interface) (string, error) {
	s, err := cl.CoreV1().Services("default").Get(ctx, LocalLBService, metav1.GetOptions{})
	if err != nil {
		return "", err
	}
	if s.Spec.HealthCheckNodePort == 0 {
		return "", fmt.Errorf("service default/%s has no healthCheckNodePort", LocalLBService)
	}
	return strconv.Itoa(int(s.Spec.HealthCheckNodePort)), nil
}

// healthCheckFault rejects connections to node-2's healthCheckNodePort of hostnames-local (filter
// INPUT of node-2, from anyone): the health server is unreachable, the NodePort is not.
var healthCheckFault = Fault{
	Name:   "healthcheck-node2",
	Breaks: "node-2 rejects connections to its healthCheckNodePort of default/" + LocalLBService + " (externalTrafficPolicy Local, its one endpoint on node-2; filter INPUT); the NodePort and the ClusterIP answer",
	Expect: `node="node-2" agents: default/` + LocalLBService + ` layer="proxy" reason="health_check_failing"; node="node-1" and the central exporter: ok`,
	Inject: func(ctx context.Context, c *Config, cl kubernetes.Interface) error {
		hc, err := localLBHealthCheckPort(ctx, cl)
		if err != nil {
			return err
		}
		_, err = run("ip", "netns", "exec", Node2Netns, "iptables", "-w", "-I", "INPUT", "-p", "tcp", "--dport", hc,
			"-m", "comment", "--comment", healthCheckComment, "-j", "REJECT", "--reject-with", "tcp-reset")
		return err
	},
	Undo: func(ctx context.Context, c *Config, cl kubernetes.Interface) error {
		if _, err := os.Stat(filepath.Join("/run/netns", Node2Netns)); err != nil {
			return nil // no node-2, no rule
		}
		return removeTaggedRules(Node2Netns, healthCheckComment)
	},
}

// healthCheckStaleFault makes node-1's healthCheckNodePort of hostnames-local answer 200 although
// node-1 has no endpoint of it: node-1's nat PREROUTING (what node-1's Pods send to the node's
// address) and OUTPUT (what node-1 sends itself) DNAT that port to the Service's one Pod on
// node-2, whose serve_hostname answers any path with 200. kube-proxy's own health server on
// node-1 still says 503 behind it.
var healthCheckStaleFault = Fault{
	Name:   "healthcheck-stale-node1",
	Breaks: "node-1's healthCheckNodePort of default/" + LocalLBService + " (externalTrafficPolicy Local, no endpoint on node-1) answers 200: nat PREROUTING and OUTPUT of node-1 send it to a Pod that answers every path",
	Expect: `node="node-1" agent: default/` + LocalLBService + ` layer="proxy" reason="health_check_stale"; node="node-2" agents and the central exporter: ok`,
	Inject: func(ctx context.Context, c *Config, cl kubernetes.Interface) error {
		hc, err := localLBHealthCheckPort(ctx, cl)
		if err != nil {
			return err
		}
		p, err := cl.CoreV1().Pods("default").Get(ctx, localLBPod, metav1.GetOptions{})
		if err != nil {
			return err
		}
		if p.Status.PodIP == "" {
			return fmt.Errorf("pod default/%s has no IP", localLBPod)
		}
		for _, chain := range []string{"PREROUTING", "OUTPUT"} {
			if _, err := run("ip", "netns", "exec", NodeNetns, "iptables", "-w", "-t", "nat", "-I", chain, "-p", "tcp", "-d", NodeIP,
				"--dport", hc, "-m", "comment", "--comment", healthCheckStaleComment,
				"-j", "DNAT", "--to-destination", net.JoinHostPort(p.Status.PodIP, "9376")); err != nil {
				return err
			}
		}
		return nil
	},
	Undo: func(ctx context.Context, c *Config, cl kubernetes.Interface) error {
		return removeTaggedRulesIn(NodeNetns, "nat", healthCheckStaleComment)
	},
}

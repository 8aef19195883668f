package lab

import (
	"context"
	"os"
	"path/filepath"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/kubernetes"
)

// A LoadBalancer Service as a cloud controller leaves it: kube-proxy programs its ingress IP for
// in-cluster clients, so a Pod calling it is answered on the node. The lab has no cloud: the
// status is written here.
const (
	LoadBalancerService = "hostnames-lb"
	// LoadBalancerIP is its ingress IP: in the Service range's static band (the API server
	// allocates ClusterIPs there only when the rest of the range is full), so it is never another
	// Service's ClusterIP, and the node's unreachable route for the range keeps any packet kube-proxy
	// does not translate inside the lab.
	LoadBalancerIP = "198.19.0.200"
)

// EnsureLoadBalancerService creates default/hostnames-lb (type LoadBalancer, selecting hostnames'
// Pods, port 80 -> 9376) and writes its status.loadBalancer.ingress, as a cloud controller would.
func EnsureLoadBalancerService(ctx context.Context, cl kubernetes.Interface) error {
	svc := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: LoadBalancerService, Namespace: "default"}, Spec: corev1.ServiceSpec{
		Type: corev1.ServiceTypeLoadBalancer, Selector: map[string]string{"app": "hostnames"},
		Ports: []corev1.ServicePort{{Name: "http", Port: 80, Protocol: corev1.ProtocolTCP, TargetPort: intstr.FromInt32(9376)}}}}
	created, err := cl.CoreV1().Services("default").Create(ctx, svc, metav1.CreateOptions{})
	if apierrors.IsAlreadyExists(err) {
		created, err = cl.CoreV1().Services("default").Get(ctx, LoadBalancerService, metav1.GetOptions{})
	}
	if err != nil {
		return err
	}
	created.Status.LoadBalancer.Ingress = []corev1.LoadBalancerIngress{{IP: LoadBalancerIP}}
	_, err = cl.CoreV1().Services("default").UpdateStatus(ctx, created, metav1.UpdateOptions{FieldManager: "lab-cloud-controller"})
	return err
}

// DeleteLoadBalancerService deletes default/hostnames-lb (nothing when it is gone).
func DeleteLoadBalancerService(ctx context.Context, cl kubernetes.Interface) error {
	err := cl.CoreV1().Services("default").Delete(ctx, LoadBalancerService, metav1.DeleteOptions{})
	if apierrors.IsNotFound(err) {
		return nil
	}
	return err
}

// lbFaultComment names the fault's rule, which Undo finds it by.
const lbFaultComment = Prefix + "lb-ingress-broken"

// lbIngressRule is the iptables rule (filter FORWARD of node-1, first) that rejects connections
// whose original destination is the ingress IP: kube-proxy's translation of it no longer leads
// anywhere on this node, while the ClusterIP (same Pods, same rules but for the IP) works.
func lbIngressRule() []string {
	return []string{"FORWARD", "-p", "tcp", "-m", "conntrack", "--ctorigdst", LoadBalancerIP,
		"-m", "comment", "--comment", lbFaultComment, "-j", "REJECT", "--reject-with", "tcp-reset"}
}

// LoadBalancerFault breaks the ingress IP's path on node-1 only (issue 18).
var LoadBalancerFault = Fault{
	Name:   "lb-ingress-broken",
	Breaks: "connections to default/hostnames-lb's ingress IP " + LoadBalancerIP + " rejected on node-1 after kube-proxy's translation (clients see no answer) (filter FORWARD, by conntrack's original destination); its ClusterIP and Pods untouched",
	Expect: `layer="proxy" reason="load_balancer_unreachable" for default/hostnames-lb; default/hostnames (same Pods, its ClusterIP) ok`,
	Inject: func(ctx context.Context, c *Config, cl kubernetes.Interface) error {
		_, err := run("ip", append([]string{"netns", "exec", NodeNetns, "iptables", "-w", "-I"}, lbIngressRule()...)...)
		return err
	},
	Undo: func(ctx context.Context, c *Config, cl kubernetes.Interface) error {
		if _, err := os.Stat(filepath.Join("/run/netns", NodeNetns)); err != nil {
			return nil // no node, no rule
		}
		return removeTaggedRules(NodeNetns, lbFaultComment)
	},
}

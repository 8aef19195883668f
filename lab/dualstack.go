package lab

// Dual-stack (issue 18). The lab is dual-stack, IPv4 first: kube-apiserver has an IPv6 Service
// range beside the IPv4 one (ServiceCIDR6), kube-proxy both Pod ranges, every Pod its IPv6 twin
// (IPv6Of) on eth0 and in status.podIPs, so the EndpointSlice controller writes an IPv6 slice for
// a Service with an IPv6 family, kube-proxy programs it (ip6tables or table ip6 kube-proxy) and
// CoreDNS answers AAAA for it. The lab's own Services stay IPv4 (SingleStack, the default);
// EnsureDualStackServices adds one of every other ipFamilyPolicy:
//
//	hostnames-dual    RequireDualStack, over the hostnames Pods
//	hostnames-prefer  PreferDualStack (both families here), over the hostnames Pods
//	hostnames-v6      SingleStack IPv6, over its own Deployment hostnames-v6
//
// and DualStackFaults break one family only.

import (
	"context"
	"errors"
	"fmt"
	"os"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/kubernetes"
)

const (
	// DualStackService is RequireDualStack, PreferDualStackService PreferDualStack (both over
	// the hostnames Pods), IPv6Service SingleStack IPv6 over Deployment IPv6Deployment.
	DualStackService       = "hostnames-dual"
	PreferDualStackService = "hostnames-prefer"
	IPv6Service            = "hostnames-v6"
	IPv6Deployment         = "hostnames-v6"
	// nftIPv6ProxyTable is the lab's table ip6 of ipv6-proxy-rules-gone.
	nftIPv6ProxyTable = "ipv6proxy"
)

// DualStackServices are the Services EnsureDualStackServices makes.
var DualStackServices = []string{DualStackService, PreferDualStackService, IPv6Service}

// EnsureDualStackServices creates the dual-stack Services and the IPv6 Service's Deployment and
// waits until every Service has a ready endpoint of each of its families.
func EnsureDualStackServices(ctx context.Context, cl kubernetes.Interface) error {
	if err := createServeHostnameDeployment(ctx, cl, IPv6Deployment, 1); err != nil {
		return err
	}
	for _, s := range []struct {
		name     string
		policy   corev1.IPFamilyPolicy
		families []corev1.IPFamily
		app      string
	}{
		{DualStackService, corev1.IPFamilyPolicyRequireDualStack, nil, "hostnames"},
		{PreferDualStackService, corev1.IPFamilyPolicyPreferDualStack, nil, "hostnames"},
		{IPv6Service, corev1.IPFamilyPolicySingleStack, []corev1.IPFamily{corev1.IPv6Protocol}, IPv6Deployment},
	} {
		svc := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: s.name, Namespace: "default"}, Spec: corev1.ServiceSpec{
			IPFamilyPolicy: ptr(s.policy), IPFamilies: s.families, Selector: map[string]string{"app": s.app},
			Ports: []corev1.ServicePort{{Name: "http", Port: 80, Protocol: corev1.ProtocolTCP, TargetPort: intstr.FromInt32(9376)}}}}
		if _, err := cl.CoreV1().Services("default").Create(ctx, svc, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
			return fmt.Errorf("service default/%s: %w", s.name, err)
		}
	}
	return waitFor(ctx, 90*time.Second, "the dual-stack Services' endpoints of each family", func() error {
		var errs []error
		for _, name := range DualStackServices {
			errs = append(errs, readyFamilies(ctx, cl, name))
		}
		return errors.Join(errs...)
	})
}

// readyFamilies checks that Service default/name has a ready endpoint of each of its families.
func readyFamilies(ctx context.Context, cl kubernetes.Interface, name string) error {
	s, err := cl.CoreV1().Services("default").Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		return err
	}
	slices, err := cl.DiscoveryV1().EndpointSlices("default").List(ctx, metav1.ListOptions{LabelSelector: "kubernetes.io/service-name=" + name})
	if err != nil {
		return err
	}
	for _, f := range s.Spec.IPFamilies {
		ready := false
		for _, sl := range slices.Items {
			if string(sl.AddressType) != string(f) {
				continue
			}
			for _, e := range sl.Endpoints {
				ready = ready || e.Conditions.Ready == nil || *e.Conditions.Ready
			}
		}
		if !ready {
			return fmt.Errorf("default/%s has no ready %s endpoint yet", name, f)
		}
	}
	return nil
}

// DeleteDualStackServices deletes what EnsureDualStackServices made (nothing when it is gone).
func DeleteDualStackServices(ctx context.Context, cl kubernetes.Interface) error {
	var errs []error
	for _, name := range DualStackServices {
		if err := cl.CoreV1().Services("default").Delete(ctx, name, metav1.DeleteOptions{}); err != nil && !apierrors.IsNotFound(err) {
			errs = append(errs, err)
		}
	}
	if err := cl.AppsV1().Deployments("default").Delete(ctx, IPv6Deployment, metav1.DeleteOptions{PropagationPolicy: ptr(metav1.DeletePropagationForeground)}); err != nil && !apierrors.IsNotFound(err) {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// DualStackFaults break one IP family only; each names the Service that shows it and the verdict
// with its family (svcprobe_service_verdict{family=...}).
var DualStackFaults = []Fault{
	{
		Name:   "ipv6-proxy-rules-gone",
		Breaks: "kube-proxy's IPv6 rules are gone on node-1, its IPv4 ones work: the lab's table ip6 marks packets to the IPv6 Service range " + ServiceCIDR6 + " notrack at priority raw (untracked packets are never NATed, whatever the proxy mode): nothing answers them",
		Expect: `hostnames-dual, hostnames-prefer and hostnames-v6 layer="proxy" family="ipv6"; hostnames (IPv4 only) ok`,
		Inject: func(ctx context.Context, c *Config, cl kubernetes.Interface) error {
			rule := "ip6 daddr " + ServiceCIDR6 + ` notrack comment "svcprobe-lab ipv6-proxy-rules-gone"`
			if err := ensureNftFaultTableOf("ip6", nftIPv6ProxyTable, map[string]string{
				"prerouting": "\t\ttype filter hook prerouting priority raw; policy accept;\n\t\t" + rule,
				"output":     "\t\ttype filter hook output priority raw; policy accept;\n\t\t" + rule,
			}); err != nil {
				return err
			}
			return forgetConntrackFamily("ipv6")
		},
		Undo: func(ctx context.Context, c *Config, cl kubernetes.Interface) error {
			if err := removeNftFaultTableOf("ip6", nftIPv6ProxyTable); err != nil {
				return err
			}
			return forgetConntrackFamily("ipv6")
		},
	},
	{
		Name:   "aaaa-missing",
		Breaks: "CoreDNS answers AAAA questions for hostnames-dual.default.svc." + ClusterDomain + " with no record (a template in the Corefile, reloaded); its A records and every other name as before",
		Expect: `hostnames-dual layer="dns" family="ipv6"; hostnames-prefer ok`,
		Inject: func(ctx context.Context, c *Config, cl kubernetes.Interface) error {
			return writeCorefile(c, corefileHiding(c, DualStackService+".default.svc."+ClusterDomain))
		},
		Undo: func(ctx context.Context, c *Config, cl kubernetes.Interface) error {
			return writeCorefile(c, corefile(c))
		},
	},
	{
		Name:   "ipv6-backend-v4-only",
		Breaks: "Deployment hostnames-v6 rolled out with its server listening on IPv4 only (serve-hostname --ipv4-only): its Pods are Ready (the kubelet probes their IPv4 address) and refuse on IPv6, the only family of Service hostnames-v6",
		Expect: `hostnames-v6 layer="pod" reason="refused" family="ipv6"`,
		Inject: func(ctx context.Context, c *Config, cl kubernetes.Interface) error {
			return setIPv6DeploymentArgs(ctx, cl, `["--ipv4-only"]`)
		},
		Undo: func(ctx context.Context, c *Config, cl kubernetes.Interface) error {
			return setIPv6DeploymentArgs(ctx, cl, `null`)
		},
	},
}

// setIPv6DeploymentArgs sets the args of Deployment hostnames-v6's container (a rollout).
func setIPv6DeploymentArgs(ctx context.Context, cl kubernetes.Interface, args string) error {
	patch := `{"spec":{"template":{"spec":{"containers":[{"name":"serve","args":` + args + `}]}}}}`
	_, err := cl.AppsV1().Deployments("default").Patch(ctx, IPv6Deployment, types.StrategicMergePatchType, []byte(patch), metav1.PatchOptions{})
	if apierrors.IsNotFound(err) {
		return nil // nothing to undo
	}
	return err
}

// writeCorefile replaces the CoreDNS Pods' Corefile (renamed into place: reload never reads half).
func writeCorefile(c *Config, content string) error {
	tmp := c.path("Corefile.tmp")
	if err := os.WriteFile(tmp, []byte(content), 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, c.path("Corefile"))
}

// forgetConntrackFamily deletes the node's conntrack entries of one family (ipv4, ipv6), so a
// fault meets fresh connections only.
func forgetConntrackFamily(family string) error {
	if _, err := lookPath("conntrack"); err != nil {
		return nil
	}
	_, _ = run("ip", "netns", "exec", NodeNetns, "conntrack", "-D", "-f", family)
	return nil
}

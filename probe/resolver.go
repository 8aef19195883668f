package probe

import (
	"net/netip"
	"slices"
)

// ResolverClass says what a resolv.conf nameserver is. It becomes the kind label of
// svcprobe_cluster_dns_up and decides which layer a dead nameserver is blamed on.
type ResolverClass string

// The classes.
const (
	// ResolverService: the cluster DNS Service's ClusterIP (as the informers know it). Reaching it
	// takes kube-proxy's rules for that VIP, so its failure may be the proxy's.
	ResolverService ResolverClass = "service"
	// ResolverNodeLocal: a node-local cache (NodeLocal DNSCache listens on a link-local address,
	// 169.254.20.10 by default, or an address named by --dns.node-local). It is reached without
	// kube-proxy: its failure is DNS's, on this node.
	ResolverNodeLocal ResolverClass = "node_local"
	// ResolverOther: any other nameserver (a custom dnsConfig, dnsPolicy: Default, the DNS
	// Service's IP is known and this is not it). Its failure is DNS's.
	ResolverOther ResolverClass = "resolver"
	// ResolverUnknown: the cluster DNS Service's ClusterIPs are not known (no --dns.service, its
	// namespace not watched, the informers not synced yet), so this may or may not be it. Its
	// failure is DNS's, with no claim about which resolver.
	ResolverUnknown ResolverClass = "unknown"
)

// ResolverClassifier classifies nameservers. The zero value calls every link-local address
// node-local and everything else ResolverUnknown.
type ResolverClassifier struct {
	// ServiceIPs returns the cluster DNS Service's ClusterIPs (nil when unknown).
	ServiceIPs func() []netip.Addr
	// NodeLocal are addresses of a node-local cache that are not link-local (--dns.node-local).
	NodeLocal []netip.Addr
}

// Classify returns the class of nameserver a.
func (c ResolverClassifier) Classify(a netip.Addr) ResolverClass {
	a = a.Unmap()
	var service []netip.Addr
	if c.ServiceIPs != nil {
		service = c.ServiceIPs()
	}
	switch {
	case slices.Contains(service, a):
		return ResolverService
	case a.IsLinkLocalUnicast() || slices.Contains(c.NodeLocal, a):
		return ResolverNodeLocal
	case len(service) == 0:
		return ResolverUnknown
	}
	return ResolverOther
}

// nodeLocalHint is what to check when the node-local cache is the nameserver that fails.
const nodeLocalHint = "the nameserver is a node-local DNS cache (%v), and it does not answer on this node: " +
	"check its DaemonSet's Pod on this node (kubectl -n kube-system get pods -l k8s-app=node-local-dns -o wide; its logs and restarts), " +
	"its health endpoint (curl http://<cache address>:8080/health from the node), and that its dummy interface " +
	"(nodelocaldns) still has the address; Pods using it lose all DNS while it is down"

// resolverHint is what to check when a nameserver that is not the cluster DNS Service fails.
const resolverHint = "the nameserver (%v) is not the cluster DNS Service's IP, and it does not answer: " +
	"check the Pod's dnsPolicy and dnsConfig (dnsPolicy: Default uses the node's resolv.conf), and that resolver itself; " +
	"the cluster DNS Service may well be fine"

package probe

import (
	"fmt"
	"log/slog"
	"net/netip"
	"slices"
	"strings"
	"sync"

	"github.com/svcprobe/svcprobe/discovery"
	"k8s.io/apimachinery/pkg/types"
)

// AddressGuard decides which addresses a probe may dial. Addresses taken from Service objects that
// anyone with write access to a namespace controls — an ExternalName, the DNS answer for it, the
// endpoints of a selector-less Service — can point anywhere: at a cloud metadata service, at the
// node's own admin ports, at another tenant's network. The exporter must not become a way to reach
// them (SSRF through a Service object), so every such address is checked here before it is dialed.
//
// An address is in the cluster when it is
//   - in ClusterCIDRs (--cluster.cidr: the cluster's Pod and Service ranges, when the operator
//     names them), or
//   - an address the API server allocated, the cloud controller wrote in the Service's status
//     (its load balancer's ingress IPs, which kube-proxy serves on the node: services/status is
//     not a namespace editor's to write) or the kubelet reported: the target's own ClusterIPs,
//     the IPs of the Pods its selector matches, or any ClusterIP or Pod IP Known reports (the
//     informers' caches). EndpointSlice addresses are deliberately not part of this: a
//     hand-written slice is exactly the object an attacker would write. A node agent that
//     watches its own node's Pods only (--node.pods=node) knows the other nodes' Pod IPs from
//     the slices the endpointslice controller writes (its managed-by label, a Pod targetRef),
//     never from hand-written or mirrored ones; or
//   - one of NodeAddrs: the node addresses the operator gave (--node.address, or HOST_IP from the
//     downward API's status.hostIP), where the nodeport stage dials NodePorts. They come from the
//     kubelet or the operator, never from a Service object.
//
// Anything else is dialed only when AllowExternal (--probe.allow-external) names it.
//
// A nil *AddressGuard allows everything (tests, benchmarks); the exporter always sets one.
type AddressGuard struct {
	ClusterCIDRs  []netip.Prefix
	AllowExternal []netip.Prefix
	NodeAddrs     []netip.Addr
	// Known reports whether the informers know a as a ClusterIP or a Pod IP. nil: nothing learned.
	Known func(a netip.Addr) bool
	// Log gets one line per Service whose addresses are blocked (again only when the set changes).
	Log *slog.Logger

	mu     sync.Mutex
	logged map[types.UID]string // the blocked addresses last logged, per Service
}

// maxGuardLogMemory bounds the per-Service memory of what was logged; past it the memory starts
// over (a Service may then be logged once more), so deleted Services cannot grow it for ever.
const maxGuardLogMemory = 10000

// Allowed reports whether a may be dialed on behalf of t (t may be nil).
func (g *AddressGuard) Allowed(t *discovery.Target, a netip.Addr) bool {
	if g == nil {
		return true
	}
	a = a.Unmap().WithZone("")
	if !a.IsValid() {
		return false
	}
	for _, p := range g.ClusterCIDRs {
		if p.Contains(a) {
			return true
		}
	}
	for _, p := range g.AllowExternal {
		if p.Contains(a) {
			return true
		}
	}
	if slices.ContainsFunc(g.NodeAddrs, func(c netip.Addr) bool { return c.Unmap() == a }) {
		return true
	}
	if t != nil {
		if slices.ContainsFunc(t.ClusterIPs, func(c netip.Addr) bool { return c.Unmap() == a }) ||
			slices.ContainsFunc(t.LoadBalancerIPs, func(c netip.Addr) bool { return c.Unmap() == a }) {
			return true
		}
		for _, p := range t.Pods {
			if slices.ContainsFunc(p.IPs, func(c netip.Addr) bool { return c.Unmap() == a }) {
				return true
			}
		}
	}
	return g.Known != nil && g.Known(a)
}

// blockedCheck is the evidence for an address the guard refused: nothing was dialed.
func blockedCheck(subject string, a netip.Addr) Check {
	return Check{Subject: subject, Reason: ReasonExternalNotAllowed,
		Detail: fmt.Sprintf("not dialed: %s is outside the cluster's Pod and Service addresses; allow it with --probe.allow-external=%s", a, hostPrefix(a))}
}

func hostPrefix(a netip.Addr) netip.Prefix {
	a = a.Unmap()
	return netip.PrefixFrom(a, a.BitLen())
}

// noteBlocked logs the blocked addresses of t once (and again only when they change).
func (g *AddressGuard) noteBlocked(t *discovery.Target, stage Stage, blocked []netip.Addr) {
	if g == nil || len(blocked) == 0 || g.Log == nil {
		return
	}
	blocked = sortedAddrs(slices.Clone(blocked))
	strs := make([]string, len(blocked))
	for i, a := range blocked {
		strs[i] = a.String()
	}
	key := strings.Join(strs, ",")
	g.mu.Lock()
	if g.logged == nil || len(g.logged) >= maxGuardLogMemory {
		g.logged = map[types.UID]string{}
	}
	seen := g.logged[t.UID] == key
	g.logged[t.UID] = key
	g.mu.Unlock()
	if seen {
		return
	}
	g.Log.Warn("not probing addresses outside the cluster; allow them with --probe.allow-external",
		"service", t.Key(), "stage", string(stage), "addresses", key)
}

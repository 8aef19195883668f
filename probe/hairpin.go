package probe

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"net/netip"
	"strconv"
	"sync"

	"github.com/svcprobe/svcprobe/discovery"
)

// DefaultIdentityPath is where the exporter serves its identity (IdentityHandler).
const DefaultIdentityPath = "/-/identity"

// maxIdentityDetail bounds how much of a foreign identity is quoted in a detail.
const maxIdentityDetail = 64

// HairpinProber checks that this Pod can reach itself through its own Service's virtual IP
// (runbook: "Is the Pod able to reach itself via the Service IP?"). That needs hairpin NAT on the
// node: the packet leaves the Pod for the VIP and is sent back into the same veth.
//
// The check is deterministic only if the Service has exactly one backend, this Pod; otherwise a
// "success" may have been another Pod answering. Set it up as either
//   - one Service per exporter Pod selecting it alone, e.g. by the label the StatefulSet
//     controller sets on each of its Pods, statefulset.kubernetes.io/pod-name: <pod>; or
//   - in node mode (a DaemonSet), a Service with internalTrafficPolicy: Local, so that kube-proxy
//     only ever picks the exporter Pod on the same node, i.e. this one.
//
// Every answer is compared with Identity, so a Service that nevertheless reaches another Pod is
// reported as wrong_backend rather than passing by luck.
type HairpinProber struct {
	Dialer   *Dialer
	Service  string // "namespace/name" of the hairpin Service
	Identity string // this Pod's name, as served by IdentityHandler
	Path     string // DefaultIdentityPath when empty
}

func (p *HairpinProber) Stage() Stage { return StageHairpin }

func (p *HairpinProber) Probe(ctx context.Context, t *discovery.Target) Result {
	switch {
	case p.Service == "" || t.Key() != p.Service:
		return skipped(StageHairpin, "not the hairpin Service")
	case p.Identity == "":
		return skipped(StageHairpin, "no identity configured for this Pod")
	case len(t.ClusterIPs) == 0:
		return skipped(StageHairpin, "the hairpin Service has no virtual IP (headless or ExternalName)")
	}
	port, ok := hairpinPort(t.Ports)
	if !ok {
		return skipped(StageHairpin, "the hairpin Service has no TCP port")
	}
	path := p.Path
	if path == "" {
		path = DefaultIdentityPath
	}
	opts := discovery.HTTPOptions{Path: path, StatusMin: 200, StatusMax: 299}
	host := t.Name + "." + t.Namespace + ".svc:" + strconv.Itoa(int(port.Port))
	checks := make([]Check, len(t.ClusterIPs))
	// One probe per family, concurrently: they are independent paths through the node.
	var wg sync.WaitGroup
	for i, ip := range t.ClusterIPs {
		wg.Go(func() {
			addr := netip.AddrPortFrom(ip, uint16(port.Port))
			checks[i] = p.check(ctx, addr, host, opts, addr.String()+" (service "+t.Key()+")")
		})
	}
	wg.Wait()
	r := fromChecks(StageHairpin, checks, "")
	if r.Outcome == Failed {
		if r.Reason == ReasonWrongBackend {
			r.Hint = "Another Pod answered on the hairpin Service: it must select only this Pod " +
				"(statefulset.kubernetes.io/pod-name label) or use internalTrafficPolicy: Local in node mode."
		} else {
			r.Hint = "This Pod cannot reach itself through its Service IP: hairpin NAT is off. Check the kubelet's " +
				"--hairpin-mode (hairpin-veth or promiscuous-bridge) and the CNI plugin's hairpin setting " +
				"(e.g. hairpinMode: true for the bridge plugin)."
		}
	}
	return r
}

// check GETs the identity through addr and compares it with p.Identity.
func (p *HairpinProber) check(ctx context.Context, addr netip.AddrPort, host string, opts discovery.HTTPOptions, subject string) Check {
	c, body := p.Dialer.HTTP(ctx, addr, host, opts, subject)
	if !c.OK() {
		return c
	}
	got := string(bytes.TrimSpace(body))
	switch {
	case got == p.Identity:
		c.Detail = "answered by this Pod (" + p.Identity + ")"
	case got == "":
		c.Reason, c.Detail = ReasonError, fmt.Sprintf("HTTP 200 with an empty body on %s: not an svcprobe identity endpoint", opts.Path)
	default:
		c.Reason, c.Detail = ReasonWrongBackend, fmt.Sprintf("answered by %q, not this Pod (%s)", truncate(got, maxIdentityDetail), p.Identity)
	}
	return c
}

// hairpinPort picks the port named "hairpin", else the first TCP port.
func hairpinPort(ports []discovery.Port) (discovery.Port, bool) {
	for _, p := range ports {
		if p.Name == "hairpin" && protocolOf(p) == "TCP" && p.Port > 0 {
			return p, true
		}
	}
	for _, p := range ports {
		if protocolOf(p) == "TCP" && p.Port > 0 {
			return p, true
		}
	}
	return discovery.Port{}, false
}

// IdentityHandler serves identity as text/plain, for the hairpin stage to recognise its own Pod.
// The exporter mounts it at DefaultIdentityPath.
func IdentityHandler(identity string) http.Handler {
	body := []byte(identity + "\n")
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			w.Header().Set("Allow", "GET, HEAD")
			http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
			return
		}
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		w.Header().Set("Cache-Control", "no-store")
		w.Header().Set("Content-Length", strconv.Itoa(len(body)))
		if r.Method == http.MethodHead {
			return
		}
		_, _ = w.Write(body) // nothing to do if the prober went away
	})
}

package discovery

import (
	"net/netip"
	"strconv"
	"time"

	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/intstr"
)

// Kind is the shape of a Service as far as probing is concerned.
type Kind string

const (
	KindClusterIP    Kind = "ClusterIP"
	KindNodePort     Kind = "NodePort"
	KindLoadBalancer Kind = "LoadBalancer"
	KindExternalName Kind = "ExternalName"
	KindHeadless     Kind = "Headless"
)

// Protocol is a Service or container port protocol (TCP, UDP, SCTP).
type Protocol string

// Port is one port of a Service.
type Port struct {
	Name        string
	Port        int32
	TargetPort  intstr.IntOrString
	Protocol    Protocol
	NodePort    int32
	AppProtocol string
}

// Endpoint is one address of an EndpointSlice with its conditions.
type Endpoint struct {
	Addresses   []netip.Addr
	Ready       bool
	Serving     bool
	Terminating bool
	NodeName    string
	PodName     string // backing Pod in the Service's namespace, "" when not a Pod
	// Ports is the slice's port list: the resolved target port per Service port name.
	Ports []EndpointPort
	// Denied maps a Service port (its name, or its number when unnamed) to the NetworkPolicies
	// ("namespace/name, ...") that deny ingress from the exporter to this endpoint on it
	// (Config.NetworkPolicies); nil when nothing is denied or policies are not evaluated.
	Denied map[string]string
	// PolicyNotEvaluated: the endpoint's Pod runs on another node than a node agent's
	// (Target.PodsOnNode), so the agent does not know its labels, and the namespace's
	// NetworkPolicies depend on them (a podSelector with labels, or a named port): whether they
	// let the exporter in is not known, and the endpoint is not dialed from this node.
	PolicyNotEvaluated bool
}

// PortKey names a Service port in Endpoint.Denied: its name, or its number when unnamed.
func PortKey(p Port) string {
	if p.Name != "" {
		return p.Name
	}
	return strconv.Itoa(int(p.Port))
}

// EndpointPort is a port as published in an EndpointSlice (targetPort already resolved).
type EndpointPort struct {
	Name     string
	Port     int32
	Protocol Protocol
}

// ContainerPort is a port a container of a selected Pod declares.
type ContainerPort struct {
	Name     string
	Port     int32
	Protocol Protocol
}

// Pod is the trimmed view of a Pod selected by a Service.
type Pod struct {
	Name   string
	Labels map[string]string
	IPs    []netip.Addr
	Node   string
	Ready  bool
	Ports  []ContainerPort
}

// Target is everything the stages need to probe one Service.
type Target struct {
	UID        types.UID
	Namespace  string
	Name       string
	Kind       Kind
	ClusterIPs []netip.Addr // empty for headless and ExternalName
	// LoadBalancerIPs are a LoadBalancer Service's status.loadBalancer.ingress IPs that
	// kube-proxy programs for in-cluster clients (ipMode VIP, or unset): a Pod calling its own
	// cluster's load balancer is answered on the node, not by the load balancer. Ingress
	// hostnames and ipMode Proxy (traffic goes through the load balancer) are left out.
	LoadBalancerIPs []netip.Addr
	ExternalName    string
	// Selector is nil for Services without a selector (their endpoints are managed by hand).
	Selector                 map[string]string
	PublishNotReadyAddresses bool
	// InternalTrafficLocal (internalTrafficPolicy: Local): the VIP leads only to endpoints on the
	// client's own node. ExternalTrafficLocal (externalTrafficPolicy: Local): a NodePort answers
	// external clients only on nodes with a local ready endpoint.
	InternalTrafficLocal bool
	ExternalTrafficLocal bool
	// HealthCheckNodePort is spec.healthCheckNodePort (LoadBalancer with externalTrafficPolicy
	// Local): kube-proxy serves /healthz there on every node, 200 with a ready local endpoint, 503
	// without, for the external load balancer to pick nodes by. 0 when none.
	HealthCheckNodePort int32
	Ports               []Port
	Endpoints           []Endpoint
	// Pods are the Pods in the namespace whose labels match Selector (when PodsOnNode is set,
	// only those on that node).
	Pods []Pod
	// PodsOnNode is set by a node agent that watches only the Pods of its own node
	// (Config.PodsOnNode): Pods is partial, so the spec stage leaves the selector and named ports
	// to the central exporter, NearestPod is not looked for, and endpoints on other nodes are
	// checked against the NetworkPolicies only when those do not depend on Pod labels.
	PodsOnNode string
	// NearestPod is, when Pods is empty, the Pod of the namespace whose labels agree with most of
	// the selector: the runbook's "compare the selector with the Pods' labels" step.
	NearestPod *Pod
	// Workloads are, when Pods is empty, the workloads of the namespace whose Pod template the
	// selector matches (Config.Workloads; see ScaledToZero).
	Workloads []Workload
	// Options come from svcprobe.io/ annotations; Errors lists the malformed ones (the Service is
	// still probed, with defaults for what was malformed).
	Options          Options
	AnnotationErrors []error
	// Version changes whenever anything above changes; the scheduler uses it to re-probe promptly.
	Version uint64
	// ChangeTriggered is the latest endpoints.kubernetes.io/last-change-trigger-time of the
	// Service's EndpointSlices (zero when none carries it): when the change the slices show was
	// triggered (a Pod became ready, the Service changed), the start kube-proxy measures its own
	// network programming latency from. Not part of Version: it moves only with the endpoints.
	ChangeTriggered time.Time
	// Created is the Service's creationTimestamp: a Service created moments ago is a change the
	// data plane has to follow (programming latency), one listed at start is not. Not part of
	// Version.
	Created time.Time
}

// Key is "namespace/name".
func (t *Target) Key() string { return t.Namespace + "/" + t.Name }

// ReadyEndpoints returns the endpoints that should answer: ready and not terminating.
func (t *Target) ReadyEndpoints() []Endpoint {
	var out []Endpoint
	for _, e := range t.Endpoints {
		if e.Ready && !e.Terminating {
			out = append(out, e)
		}
	}
	return out
}

// ProbedPorts returns the Service ports selected for probing by the svcprobe.io/ports annotation
// (all ports when it is absent or malformed).
func (t *Target) ProbedPorts() []Port {
	if len(t.Options.Ports) == 0 {
		return t.Ports
	}
	var out []Port
	for _, p := range t.Ports {
		if t.Options.Ports.Has(p) {
			out = append(out, p)
		}
	}
	return out
}

// ReadyEndpointsOn returns the ready endpoints on node (see ReadyEndpoints).
func (t *Target) ReadyEndpointsOn(node string) []Endpoint {
	var out []Endpoint
	for _, e := range t.ReadyEndpoints() {
		if e.NodeName == node {
			out = append(out, e)
		}
	}
	return out
}

// EndpointPort returns the resolved endpoint port for a Service port: EndpointSlices publish
// ports by Service port name, with the targetPort already resolved per Pod.
func (e Endpoint) EndpointPort(p Port) (int32, bool) {
	for _, ep := range e.Ports {
		if ep.Name == p.Name && (ep.Protocol == p.Protocol || ep.Protocol == "") {
			return ep.Port, true
		}
	}
	return 0, false
}

// EndpointCounts counts a Service's endpoints by state.
type EndpointCounts struct {
	Ready       int // ready and not terminating: these must answer
	NotReady    int // neither ready nor terminating (serving or not)
	Terminating int
}

// Counts returns the Service's endpoint counts.
func (t *Target) Counts() EndpointCounts {
	var c EndpointCounts
	for _, e := range t.Endpoints {
		switch {
		case e.Terminating:
			c.Terminating++
		case e.Ready:
			c.Ready++
		default:
			c.NotReady++
		}
	}
	return c
}

package main

import (
	"fmt"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/alecthomas/kingpin/v2"
	"github.com/svcprobe/svcprobe/discovery"
	"github.com/svcprobe/svcprobe/metrics"
	"github.com/svcprobe/svcprobe/pipeline"
	"github.com/svcprobe/svcprobe/probe"
	"sigs.k8s.io/yaml"
)

// config is everything the flags and the config file set. The pipeline's part of it becomes a
// pipeline.Config (config.pipelineConfig), whose Defaults are the flags' defaults.
type config struct {
	Kubeconfig string
	apiErrors  *atomic.Uint64 // failed API requests, counted by kubeClient's transport (nil in tests with a fake client)
	ConfigFile string

	Namespaces        []string
	NamespacesExclude []string
	Selector          string
	Shard             int
	TotalShards       int

	Interval          time.Duration
	Timeout           time.Duration
	Settle            time.Duration // --probe.settle
	ProgCadence       time.Duration // --probe.programming.cadence
	ProgCeiling       time.Duration // --probe.programming.ceiling
	PodSpread         int           // --probe.pod.spread
	VIPConnections    int           // --probe.vip-connections
	Window            int           // --verdict.window
	Concurrency       int
	NewConnsPerSecond float64
	DNSQPS            float64

	ResolvConf    string
	ClusterDomain string
	DNSService    string
	// NodeLocalDNS are --dns.node-local: addresses of a node-local DNS cache that are not
	// link-local (link-local nameservers are taken for one anyway).
	NodeLocalDNS      []netip.Addr
	NodeLocalDNSFlags []string

	// Workloads is --discovery.workloads: watch the workloads to tell scaled to zero from a typo.
	Workloads bool
	// NetworkPolicies is --discovery.network-policies: evaluate NetworkPolicies per endpoint.
	NetworkPolicies bool

	HairpinService  string
	HairpinIdentity string
	PodIPs          []netip.Addr

	// Mode is "central" (one exporter, every Service every interval) or "node" (a DaemonSet
	// agent: a sample of Services per interval, metrics labelled with NodeName).
	Mode       string
	NodeName   string
	NodeAddrs  []netip.Addr // --node.address / HOST_IP: this node's addresses, for NodePorts
	SampleSize int
	// NodeMaxFailing caps the Services a node agent exports per-Service series for.
	NodeMaxFailing int
	// NodePods is what a node agent watches of the Pods: its node's (node) or every one (all).
	NodePods string
	// NodeAddrFlags are the raw --node.address values; the flag action parses them into NodeAddrs.
	NodeAddrFlags []string

	// ClusterCIDRFlags and AllowExternalFlags are the raw --cluster.cidr and --probe.allow-external
	// values; load parses them into ClusterCIDRs and AllowExternal (see probe.AddressGuard).
	ClusterCIDRFlags   []string
	AllowExternalFlags []string
	ClusterCIDRs       []netip.Prefix
	AllowExternal      []netip.Prefix

	ExpectFlags []string
	Expected    []metrics.Expected

	SeriesPerService int
	PerEndpoint      bool
	PerEndpointLimit int
}

// fileConfig is the --config.file format. Unknown keys are an error.
type fileConfig struct {
	Expect []string `json:"expect"`
}

func registerFlags(app *kingpin.Application) *config {
	c := &config{}
	// The defaults of the pipeline's flags are pipeline.Defaults(): the bench starts from the same.
	d := pipeline.Defaults()
	itoa, dur := strconv.Itoa, time.Duration.String
	ftoa := func(f float64) string { return strconv.FormatFloat(f, 'g', -1, 64) }
	app.Flag("kubeconfig", "Kubeconfig to use outside a cluster (in-cluster config when empty).").StringVar(&c.Kubeconfig)
	app.Flag("config.file", "YAML file with the Services that must exist (key: expect, a list of namespace/name).").StringVar(&c.ConfigFile)
	app.Flag("namespaces", "Comma-separated namespaces to watch (all when empty).").StringVar(new(string))
	app.Flag("namespaces-exclude", "Comma-separated namespaces not to watch.").StringVar(new(string))
	app.Flag("selector", "Label selector on Services: only matching Services are probed.").StringVar(&c.Selector)
	app.Flag("discovery.workloads", "Watch Deployments, StatefulSets, ReplicaSets, DaemonSets and ReplicationControllers (get/list/watch, trimmed to replicas and Pod template labels): a Service whose selector matches no Pod because its workload is scaled to zero is idle (reason scaled_to_zero, pages nobody), not spec. --no-discovery.workloads when the exporter may not read them.").Default(strconv.FormatBool(d.Workloads)).BoolVar(&c.Workloads)
	app.Flag("discovery.network-policies", "Watch NetworkPolicies and namespaces (get/list/watch) and evaluate, for each endpoint, whether the policies selecting its Pod allow ingress from this exporter (found by --pod.ip): an endpoint they deny is not dialed, and a Service whose every endpoint is denied is layer policy (reason denied_by_network_policy, pages nobody). Proven in the lab against kube-network-policies; --no-discovery.network-policies turns it off and drops the need for those two RBAC rules.").Default(strconv.FormatBool(d.NetworkPolicies)).BoolVar(&c.NetworkPolicies)
	app.Flag("shard", "This replica's shard, in [0, --total-shards).").Default(itoa(d.Shard)).IntVar(&c.Shard)
	app.Flag("total-shards", "Number of shards; Services are assigned by a hash of their UID.").Default(itoa(d.TotalShards)).IntVar(&c.TotalShards)
	app.Flag("probe.interval", "Each Service is probed once per interval.").Default(dur(d.Interval)).DurationVar(&c.Interval)
	app.Flag("probe.timeout", "Timeout of each stage of a probe.").Default(dur(d.Timeout)).DurationVar(&c.Timeout)
	app.Flag("probe.settle", "After a Service or its endpoints change, hold back dns/proxy/nodeport/hairpin failures for this long (kube-proxy and CoreDNS follow the API a moment later) and probe again then; 0 records them at once.").Default(dur(d.Settle)).DurationVar(&c.Settle)
	app.Flag("probe.programming.ceiling", "Measure network programming latency (svcprobe_programming_latency_seconds): after a change the data plane has to follow (a new Service, its first ready endpoint, new ports or ClusterIPs, a new DNS answer), probe the proxy or dns stage at --probe.programming.cadence until it shows the change, for at most this long; its failures meanwhile are 'programming', not recorded, and past it the stage fails with reason not_programmed. 0 turns the measurement off (--probe.settle alone then holds failures back).").Default(dur(d.Programming.Ceiling)).DurationVar(&c.ProgCeiling)
	app.Flag("probe.programming.cadence", "How often a stage whose change is being programmed is probed again (each attempt bounded by 1s or --probe.timeout): the measurement's resolution.").Default(dur(d.Programming.Cadence)).DurationVar(&c.ProgCadence)
	app.Flag("probe.pod.spread", "Dial each ready endpoint at least once per this many intervals: a round of the pod stage dials new endpoints, those that failed last time and about 1/N of the others (rotating), and all of them when any of those fails; 1 dials every ready endpoint every interval.").Default(itoa(d.PodSpread)).IntVar(&c.PodSpread)
	app.Flag("probe.vip-connections", "Connections per round to each ClusterIP (and NodePort) and port, at most: min(ready endpoints, this), each a new connection, so a VIP that fails one connection in three is caught in most rounds; 1 dials each once.").Default(itoa(d.VIPConnections)).IntVar(&c.VIPConnections)
	app.Flag("verdict.window", "Rounds of each network stage the verdict looks at: a stage failing in its last two rounds is failed, one failing in a share of them (at least two failed rounds, apart) is degraded (reason partial), one failed round among good ones blames nothing.").Default(itoa(d.Window)).IntVar(&c.Window)
	app.Flag("probe.concurrency", "Sockets (TCP, HTTP, DNS) open at once, at most.").Default(itoa(d.Concurrency)).IntVar(&c.Concurrency)
	app.Flag("probe.max-new-conns-per-second", "New TCP connections per second, at most.").Default(ftoa(d.NewConnsPerSecond)).Float64Var(&c.NewConnsPerSecond)
	app.Flag("dns.max-qps", "DNS queries per second, at most.").Default(ftoa(d.DNSQPS)).Float64Var(&c.DNSQPS)
	app.Flag("dns.resolv-conf", "resolv.conf whose nameservers, search list and ndots the DNS stage uses (the exporter Pod's own).").Default("/etc/resolv.conf").StringVar(&c.ResolvConf)
	app.Flag("dns.cluster-domain", "Cluster domain.").Default(d.ClusterDomain).StringVar(&c.ClusterDomain)
	app.Flag("dns.service", "The cluster DNS Service (namespace/name); each of its Pods is asked directly too.").Default(d.DNSService).StringVar(&c.DNSService)
	app.Flag("dns.node-local", "Address of a node-local DNS cache in resolv.conf that is not link-local (repeatable); link-local nameservers (NodeLocal DNSCache's 169.254.20.10) count as one anyway. A dead node-local cache is blamed on dns, never on the proxy.").StringsVar(&c.NodeLocalDNSFlags)
	app.Flag("hairpin.service", "namespace/name of a Service that selects only this Pod; probed through its VIP (empty: no hairpin stage).").StringVar(&c.HairpinService)
	app.Flag("hairpin.identity", "This Pod's name, served on /-/identity and expected back through the hairpin Service.").Envar("POD_NAME").StringVar(&c.HairpinIdentity)
	app.Flag("pod.ip", "This Pod's IP addresses, comma-separated (downward API status.podIPs); a Service leading only to them is reached through the hairpin path.").Envar("POD_IP").StringVar(new(string))
	app.Flag("mode", "central: probe every Service every interval; node: a node agent (DaemonSet) probing from its node a sample of Services per interval, its per-Service series labelled node.").Default(d.Mode).EnumVar(&c.Mode, modeCentral, modeNode)
	app.Flag("node-name", "This Pod's node (downward API spec.nodeName); required with --mode=node, the node label's value.").Envar("NODE_NAME").StringVar(&c.NodeName)
	app.Flag("node.address", "This node's address, for the nodeport stage (downward API status.hostIP); repeatable or comma-separated. Empty: NodePorts are not probed.").Envar("HOST_IP").StringsVar(&c.NodeAddrFlags)
	app.Flag("node.sample-size", "In node mode, Services probed per interval; each is probed once per ceil(Services / sample-size) x --probe.interval.").Default(itoa(d.SampleSize)).IntVar(&c.SampleSize)
	app.Flag("node.max-failing-services", "In node mode, at most this many Services get per-Service series: those failing from this node (the rest are counted in svcprobe_node_services_omitted); every Service counts in svcprobe_services_by_verdict.").Default(itoa(d.NodeMaxFailing)).IntVar(&c.NodeMaxFailing)
	app.Flag("node.pods", "In node mode, which Pods the agent watches: node (its own node's, a field selector on spec.nodeName: the API server sends it its node's Pod events only) or all (every Pod: NetworkPolicies that select Pods by label are evaluated for endpoints on other nodes too, at one cluster-wide Pod watch per agent). With node, the spec stage is left to the central exporter, and an endpoint on another node whose namespace's policies depend on Pod labels is not dialed (policy_not_evaluated).").Default(d.NodePods).EnumVar(&c.NodePods, pipeline.NodePodsNode, pipeline.NodePodsAll)
	app.Flag("cluster.cidr", "A Pod or Service range of the cluster, CIDR (repeatable). Addresses in it may be probed; so may every ClusterIP and Pod IP the informers know.").StringsVar(&c.ClusterCIDRFlags)
	app.Flag("probe.allow-external", "A range outside the cluster that ExternalName Services, their DNS answers and hand-written endpoints may lead the probes to, CIDR (repeatable). Anything else outside the cluster is never dialed.").StringsVar(&c.AllowExternalFlags)
	app.Flag("expect", "A Service that must exist, namespace/name (repeatable); missing ones get the verdict missing.").StringsVar(&c.ExpectFlags)
	app.Flag("metrics.max-series-per-service", "Series budget per Service: the per-endpoint series (--metrics.per-endpoint) are cut to fit; the series every Service has (at most 36: verdict, per stage up, runs, failures and failing share, endpoint counts) are never cut.").Default(itoa(d.SeriesPerService)).IntVar(&c.SeriesPerService)
	app.Flag("metrics.per-endpoint", "Also export svcprobe_endpoint_up per endpoint.").BoolVar(&c.PerEndpoint)
	app.Flag("metrics.per-endpoint-limit", "At most this many svcprobe_endpoint_up series per Service.").Default(itoa(d.PerEndpointLimit)).IntVar(&c.PerEndpointLimit)
	// kingpin's own parse errors ("time: invalid duration \"banana\"") do not say which flag.
	for _, name := range []string{"shard", "total-shards", "probe.interval", "probe.timeout", "probe.settle", "probe.pod.spread", "probe.concurrency",
		"probe.max-new-conns-per-second", "dns.max-qps", "metrics.max-series-per-service", "metrics.per-endpoint-limit", "node.sample-size", "node.max-failing-services", "mode"} {
		f := app.GetFlag(name)
		f.SetValue(namedValue{name: name, Value: f.Model().Value})
	}
	app.Action(func(*kingpin.ParseContext) error {
		c.Namespaces = splitList(app.GetFlag("namespaces").Model().Value.String())
		c.NamespacesExclude = splitList(app.GetFlag("namespaces-exclude").Model().Value.String())
		c.PodIPs = nil
		for _, s := range splitList(app.GetFlag("pod.ip").Model().Value.String()) {
			a, err := netip.ParseAddr(s)
			if err != nil {
				return fmt.Errorf("--pod.ip %q: %w", s, err)
			}
			c.PodIPs = append(c.PodIPs, a)
		}
		c.NodeAddrs = nil
		for _, v := range c.NodeAddrFlags {
			for _, s := range splitList(v) {
				a, err := netip.ParseAddr(s)
				if err != nil || a.Zone() != "" {
					return fmt.Errorf("--node.address %q: want an IP address", s)
				}
				c.NodeAddrs = append(c.NodeAddrs, a.Unmap())
			}
		}
		return nil
	})
	return c
}

// The modes of --mode.
const (
	modeCentral = pipeline.ModeCentral
	modeNode    = pipeline.ModeNode
)

// nodeMode reports whether this exporter is a node agent.
func (c *config) nodeMode() bool { return c.Mode == modeNode }

// namedValue names its flag in parse errors.
type namedValue struct {
	name string
	kingpin.Value
}

func (v namedValue) Set(s string) error {
	if err := v.Value.Set(s); err != nil {
		return fmt.Errorf("--%s=%q: %w", v.name, s, err)
	}
	return nil
}

func splitList(s string) []string {
	var out []string
	for _, f := range strings.Split(s, ",") {
		if f = strings.TrimSpace(f); f != "" {
			out = append(out, f)
		}
	}
	return out
}

// load reads the config file and validates everything that can be checked before start.
func (c *config) load() error {
	expect := c.ExpectFlags
	if c.ConfigFile != "" {
		b, err := os.ReadFile(c.ConfigFile)
		if err != nil {
			return fmt.Errorf("--config.file: %w", err)
		}
		fc, err := parseFileConfig(b)
		if err != nil {
			return fmt.Errorf("--config.file %s: %w", c.ConfigFile, err)
		}
		expect = append(expect, fc.Expect...)
	}
	c.Expected = nil
	for _, e := range expect {
		ns, name, ok := strings.Cut(e, "/")
		if !ok || ns == "" || name == "" || strings.Contains(name, "/") {
			return fmt.Errorf("expected Service %q: want namespace/name", e)
		}
		c.Expected = append(c.Expected, metrics.Expected{Namespace: ns, Name: name})
	}
	var err error
	if c.ClusterCIDRs, err = parsePrefixes("--cluster.cidr", c.ClusterCIDRFlags); err != nil {
		return err
	}
	if c.AllowExternal, err = parsePrefixes("--probe.allow-external", c.AllowExternalFlags); err != nil {
		return err
	}
	c.NodeLocalDNS = nil
	for _, v := range c.NodeLocalDNSFlags {
		for _, f := range strings.Split(v, ",") {
			if f = strings.TrimSpace(f); f == "" {
				continue
			}
			a, err := netip.ParseAddr(f)
			if err != nil || a.Zone() != "" {
				return fmt.Errorf("--dns.node-local %q: want an IP address such as 169.254.20.10", f)
			}
			c.NodeLocalDNS = append(c.NodeLocalDNS, a.Unmap())
		}
	}
	switch {
	case c.Interval <= 0:
		return fmt.Errorf("--probe.interval must be positive, got %s", c.Interval)
	case c.Timeout <= 0:
		return fmt.Errorf("--probe.timeout must be positive, got %s", c.Timeout)
	case c.Timeout > c.Interval:
		return fmt.Errorf("--probe.timeout (%s) must not exceed --probe.interval (%s)", c.Timeout, c.Interval)
	case !(c.NewConnsPerSecond > 0):
		return fmt.Errorf("--probe.max-new-conns-per-second must be positive, got %v", c.NewConnsPerSecond)
	case !(c.DNSQPS > 0):
		return fmt.Errorf("--dns.max-qps must be positive, got %v", c.DNSQPS)
	case c.Concurrency < 1:
		return fmt.Errorf("--probe.concurrency must be at least 1, got %d", c.Concurrency)
	case c.PodSpread < 1:
		return fmt.Errorf("--probe.pod.spread must be at least 1, got %d", c.PodSpread)
	case c.VIPConnections < 1 || c.VIPConnections > 16:
		return fmt.Errorf("--probe.vip-connections must be between 1 and 16, got %d", c.VIPConnections)
	case c.Window < 2 || c.Window > 64:
		return fmt.Errorf("--verdict.window must be between 2 and 64 rounds, got %d", c.Window)
	case c.SeriesPerService < 8:
		return fmt.Errorf("--metrics.max-series-per-service must be at least 8, got %d", c.SeriesPerService)
	case c.PerEndpointLimit < 0:
		return fmt.Errorf("--metrics.per-endpoint-limit must not be negative, got %d", c.PerEndpointLimit)
	case c.nodeMode() && c.SampleSize < 1:
		return fmt.Errorf("--node.sample-size must be at least 1, got %d", c.SampleSize)
	case c.NodeMaxFailing < 0:
		return fmt.Errorf("--node.max-failing-services must not be negative (0 means the default, %d), got %d", metrics.DefaultNodeMaxFailing, c.NodeMaxFailing)
	case c.Mode == modeNode && c.NodeName == "":
		return fmt.Errorf("--mode=node needs --node-name (or NODE_NAME from the downward API's spec.nodeName): it labels every series")
	case c.Mode != "" && c.Mode != modeCentral && c.Mode != modeNode:
		return fmt.Errorf("--mode %q: want central or node", c.Mode)
	case c.HairpinService != "" && c.HairpinIdentity == "":
		return fmt.Errorf("--hairpin.service needs --hairpin.identity (or POD_NAME) to tell this Pod's answer from another's")
	case c.HairpinService != "" && !strings.Contains(c.HairpinService, "/"):
		return fmt.Errorf("--hairpin.service %q: want namespace/name", c.HairpinService)
	}
	return c.discovery().Validate()
}

// parsePrefixes parses CIDRs strictly: a bare address or a range with host bits set is probably a
// typo for something else, and an allow-list must mean exactly what it says.
func parsePrefixes(flag string, values []string) ([]netip.Prefix, error) {
	var out []netip.Prefix
	for _, v := range values {
		p, err := netip.ParsePrefix(strings.TrimSpace(v))
		if err != nil {
			return nil, fmt.Errorf("%s %q: want a CIDR such as 10.0.0.0/8 or 127.0.0.2/32: %w", flag, v, err)
		}
		if p.Addr().Zone() != "" || p != p.Masked() {
			return nil, fmt.Errorf("%s %q: host bits set or a zone; did you mean %s?", flag, v, p.Masked())
		}
		if p.Addr().Is4In6() { // ::ffff:10.0.0.0/104 is 10.0.0.0/8 (a masked one has at least 96 bits)
			p = netip.PrefixFrom(p.Addr().Unmap(), p.Bits()-96)
		}
		out = append(out, p)
	}
	return out, nil
}

func parseFileConfig(b []byte) (fileConfig, error) {
	var fc fileConfig
	if err := yaml.UnmarshalStrict(b, &fc); err != nil {
		return fc, err
	}
	return fc, nil
}

// pipelineConfig is the pipeline's configuration from the flags (after load), with the resolv.conf they
// name already read: what pipeline.New and `svcprobe diagnose` build from.
func (c *config) pipelineConfig(rc probe.ResolvConf) pipeline.Config {
	return pipeline.Config{
		Namespaces: c.Namespaces, NamespacesExclude: c.NamespacesExclude, Selector: c.Selector,
		Shard: c.Shard, TotalShards: c.TotalShards, DNSService: c.DNSService,
		Workloads: c.Workloads, NetworkPolicies: c.NetworkPolicies,

		Interval: c.Interval, Timeout: c.Timeout, Settle: c.Settle, PodSpread: c.PodSpread,
		Programming:    probe.Programming{Cadence: c.ProgCadence, Ceiling: c.ProgCeiling},
		VIPConnections: c.VIPConnections, Window: c.Window, Concurrency: c.Concurrency,
		NewConnsPerSecond: c.NewConnsPerSecond, DNSQPS: c.DNSQPS,

		ResolvConf: rc, ClusterDomain: c.ClusterDomain, NodeLocalDNS: c.NodeLocalDNS,

		HairpinService: c.HairpinService, HairpinIdentity: c.HairpinIdentity, PodIPs: c.PodIPs,
		Mode: c.Mode, NodeName: c.NodeName, NodeAddrs: c.NodeAddrs, SampleSize: c.SampleSize, NodeMaxFailing: c.NodeMaxFailing, NodePods: c.NodePods,

		ClusterCIDRs: c.ClusterCIDRs, AllowExternal: c.AllowExternal,

		Expected: c.Expected, SeriesPerService: c.SeriesPerService, PerEndpoint: c.PerEndpoint,
		PerEndpointLimit: c.PerEndpointLimit, APIErrors: c.apiErrors,
	}
}

// discovery is the watcher's configuration (load validates it).
func (c *config) discovery() discovery.Config {
	return c.pipelineConfig(probe.ResolvConf{}).DiscoveryConfig()
}

package lab

import (
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
)

// Versions of the upstream programs the lab runs. lab.mk builds the same
// versions (TestVersionsMatchMakefile keeps the two in step).
const (
	KubernetesVersion = "v1.37.2"
	EtcdVersion       = "v3.6.16"
	CoreDNSVersion    = "v1.15.0"
	// KubeNetworkPoliciesVersion is sigs.k8s.io/kube-network-policies (netpolicy.go).
	KubeNetworkPoliciesVersion = "v0.8.0"
)

// Fixed topology. Every network namespace the lab creates starts with Prefix,
// so cleanup by name never touches anything else.
const (
	Prefix      = "svcprobe-lab-"
	NodeNetns   = Prefix + "node"
	ClientNetns = Prefix + "client"
	NodeName    = "node-1"

	Bridge      = "cbr0"
	NodeIP      = "198.18.0.1"
	PodCIDR     = "198.18.0.0/16"
	BridgeCIDR  = "198.18.0.1/24"
	ServiceCIDR = "198.19.0.0/16"
	// The lab is dual-stack, IPv4 first: an IPv6 (ULA) Pod range and Service range beside the
	// IPv4 ones. Every lab address 198.18.N.H has its IPv6 twin fd98:18:0:N::H (IPv6Of) on the
	// same interface; node N's Pods are in fd98:18:0:N::/64.
	PodCIDR6     = "fd98:18::/56"
	ServiceCIDR6 = "fd98:19::/112"
	DNSServiceIP = "198.19.0.10"
	CoreDNSIP1   = "198.18.0.53"
	CoreDNSIP2   = "198.18.0.54"
	ClientIP     = "198.18.0.250"
	// ExporterIP is pinned on the svcprobe Pod, so the host can reach it.
	ExporterIP   = "198.18.0.9"
	ExporterPort = 9817

	APIServerPort = 6443
	ClusterDomain = "cluster.local"

	// IPAnnotation pins a Pod's address (the CoreDNS Pods use it).
	IPAnnotation = "lab.svcprobe.io/ip"
)

// Config says where the lab keeps its files and which binaries it runs.
type Config struct {
	// StateDir holds certificates, kubeconfigs, pid files, logs and etcd's
	// data. Default $SVCPROBE_LAB_STATE or /run/svcprobe-lab.
	StateDir string
	// BinDir holds the upstream binaries as <name>-<version>. Default
	// ${SVCPROBE_CACHE:-$HOME/.cache/svcprobe}/bin.
	BinDir string
	// Exe is the svcprobe-lab binary used for the kubelet, the API proxy and
	// the pod "containers". Default: the running executable. Up copies it
	// into StateDir, so `go run` works.
	Exe string
	// ProxyAddr is where the API proxy listens on the host's loopback, for
	// the admin kubeconfig. Default 127.0.0.1:16443.
	ProxyAddr string
	// Exporter is the svcprobe binary DeployExporter runs as a Pod (copied
	// into StateDir first). Default: bin/svcprobe of the module root.
	Exporter string
	// DeployDir holds the exporter's manifests (deploy/base). Default: found
	// from the working directory upwards.
	DeployDir string
	// ExporterProxyAddr is where `demo` forwards the exporter's port on the
	// host's loopback. Default 127.0.0.1:9817.
	ExporterProxyAddr string
	// Log receives progress lines. Default: discard.
	Log func(format string, args ...any)
}

// DefaultConfig fills the defaults described on Config.
func DefaultConfig() Config {
	var c Config
	c.fill()
	return c
}

func (c *Config) fill() {
	if c.StateDir == "" {
		c.StateDir = os.Getenv("SVCPROBE_LAB_STATE")
	}
	if c.StateDir == "" {
		c.StateDir = "/run/svcprobe-lab"
	}
	if c.BinDir == "" {
		cache := os.Getenv("SVCPROBE_CACHE")
		if cache == "" {
			home, err := os.UserHomeDir()
			if err != nil || home == "" {
				home = "/root"
			}
			cache = filepath.Join(home, ".cache", "svcprobe")
		}
		c.BinDir = filepath.Join(cache, "bin")
	}
	if c.ProxyAddr == "" {
		c.ProxyAddr = "127.0.0.1:16443"
	}
	if c.ExporterProxyAddr == "" {
		c.ExporterProxyAddr = "127.0.0.1:9817"
	}
	if root := moduleRoot(); root != "" {
		if c.DeployDir == "" {
			c.DeployDir = filepath.Join(root, "deploy", "base")
		}
		if c.Exporter == "" {
			c.Exporter = filepath.Join(root, "bin", "svcprobe")
		}
	}
	if c.Log == nil {
		c.Log = func(string, ...any) {}
	}
}

// Binary returns the cached path of an upstream program.
func (c *Config) Binary(name string) string {
	v := KubernetesVersion
	switch name {
	case "etcd":
		v = EtcdVersion
	case "coredns":
		v = CoreDNSVersion
	case "kube-network-policies":
		v = KubeNetworkPoliciesVersion
	}
	return filepath.Join(c.BinDir, name+"-"+v)
}

// Binaries lists the upstream programs `up` needs.
var Binaries = []string{"etcd", "kube-apiserver", "kube-controller-manager", "kube-proxy", "coredns"}

// MissingBinaries returns the paths of the upstream programs not yet built.
func (c *Config) MissingBinaries() []string {
	var missing []string
	for _, b := range Binaries {
		if _, err := os.Stat(c.Binary(b)); err != nil {
			missing = append(missing, c.Binary(b))
		}
	}
	return missing
}

func (c *Config) path(elem ...string) string {
	return filepath.Join(append([]string{c.StateDir}, elem...)...)
}

// AdminKubeconfig is for the host: it points at the API proxy on loopback.
func (c *Config) AdminKubeconfig() string { return c.path("admin.kubeconfig") }

// ClusterKubeconfig points at 198.18.0.1:6443 and works inside the node and
// the pod namespaces (CoreDNS, an exporter run in a pod namespace).
func (c *Config) ClusterKubeconfig() string { return c.path("cluster.kubeconfig") }

// LabExe is the copy of the svcprobe-lab binary that Up placed in StateDir.
func (c *Config) LabExe() string { return c.path("bin", "svcprobe-lab") }

// PodNetns is the network namespace name of a Pod.
func PodNetns(namespace, name string) string {
	n := Prefix + "pod-" + namespace + "-" + name
	if len(n) > 200 {
		n = n[:200]
	}
	return n
}

// ResolvConf is what a Pod of the given namespace sees as /etc/resolv.conf.
func ResolvConf(namespace string) string {
	return fmt.Sprintf("nameserver %s\nsearch %s.svc.%s svc.%s %s\noptions ndots:5\n",
		DNSServiceIP, namespace, ClusterDomain, ClusterDomain, ClusterDomain)
}

// writeResolvConf writes /etc/netns/NS/resolv.conf, which `ip netns exec`
// bind-mounts over /etc/resolv.conf. Rewritten in place so running
// processes see the change.
func writeResolvConf(netns, namespace string) error {
	dir := filepath.Join("/etc/netns", netns)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	f, err := os.OpenFile(filepath.Join(dir, "resolv.conf"), os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o644)
	if err != nil {
		return err
	}
	if _, err := f.WriteString(ResolvConf(namespace)); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

func hasPrefix(name string) bool { return strings.HasPrefix(name, Prefix) }

// moduleRoot finds the svcprobe module's root from the working directory up.
func moduleRoot() string {
	dir, err := os.Getwd()
	if err != nil {
		return ""
	}
	for {
		if b, err := os.ReadFile(filepath.Join(dir, "go.mod")); err == nil &&
			strings.Contains(string(b), "module github.com/svcprobe/svcprobe\n") {
			return dir
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return ""
		}
		dir = parent
	}
}

// IPv6Of is the IPv6 twin of a lab IPv4 address 198.18.N.H: fd98:18:0:N::H (the decimal digits
// read as hex, for humans: 198.18.0.53 is fd98:18:0:0::53). "" for an address outside 198.18/16.
func IPv6Of(v4 string) string {
	a, err := netip.ParseAddr(v4)
	if err != nil || !a.Is4() {
		return ""
	}
	b := a.As4()
	if b[0] != 198 || b[1] != 18 {
		return ""
	}
	return netip.MustParseAddr(fmt.Sprintf("fd98:18:0:%d::%d", b[2], b[3])).String()
}

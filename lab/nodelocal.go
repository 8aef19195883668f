package lab

// NodeLocal DNSCache in the lab: a second CoreDNS (the lab's own binary) in the node namespace,
// bound to the link-local 169.254.20.10:53 (UDP and TCP) on an interface `nodelocaldns` (dummy,
// or a bridge without ports where the kernel has no dummy driver),
// forwarding everything over TCP to the cluster DNS Service IP, as upstream's node-local-dns
// DaemonSet does. Pods reach it through their default route to the node. The exporter Pod uses
// it when its resolv.conf names it (ExporterUseNodeLocalDNS).

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"time"
)

const (
	// NodeLocalDNSIP is the link-local address of the node-local cache (upstream's default).
	NodeLocalDNSIP = "169.254.20.10"
	// NodeLocalDNSLink is the interface in the node namespace that holds NodeLocalDNSIP.
	NodeLocalDNSLink = "nodelocaldns"
	// nodeLocalDNSComponent names the cache's pid file and log.
	nodeLocalDNSComponent = "node-local-dns"
	// nodeLocalRouteTable and nodeLocalRulePref: the node namespace has an `unreachable` route
	// for the Service CIDR (a VIP without rules is refused at once), which also stops the
	// node's own processes before kube-proxy's nat OUTPUT rules could DNAT them. One policy
	// rule, for packets the node itself sends to the DNS Service IP only, routes them out of
	// cbr0 instead, as a node's default route would; nat OUTPUT then DNATs them to a CoreDNS
	// Pod. Forwarded Pod traffic keeps the unreachable route.
	nodeLocalRouteTable = "1053"
	nodeLocalRulePref   = "1053"
)

// nodeLocalCorefile is upstream node-local-dns' Corefile reduced to one zone: everything goes
// to the cluster DNS Service over TCP (force_tcp, as upstream does for cluster.local).
func nodeLocalCorefile() string {
	return fmt.Sprintf(`.:53 {
    errors
    bind %s
    cache 30
    forward . %s {
        force_tcp
    }
}
`, NodeLocalDNSIP, DNSServiceIP)
}

// nodeLocalResolvConf is the exporter Pod's resolv.conf with the node-local cache as its
// nameserver (what a kubelet writes with --cluster-dns=169.254.20.10).
func nodeLocalResolvConf(namespace string) string {
	return resolvConfWith(NodeLocalDNSIP, namespace)
}

// resolvConfWith is the resolv.conf of a Pod of namespace with another nameserver.
func resolvConfWith(nameserver, namespace string) string {
	return strings.Replace(ResolvConf(namespace), "nameserver "+DNSServiceIP+"\n", "nameserver "+nameserver+"\n", 1)
}

// StartNodeLocalDNS starts the node-local cache unless it runs, with its interface and route,
// and waits until it answers kubernetes.default through the cluster DNS. Safe to call again.
func StartNodeLocalDNS(ctx context.Context, c *Config) error {
	c.fill()
	if err := nodeLocalNetwork(); err != nil {
		return fmt.Errorf("node-local DNS network: %w", err)
	}
	if c.componentAlive(nodeLocalDNSComponent) != nil {
		conf := c.path("Corefile.nodelocal")
		if err := os.WriteFile(conf, []byte(nodeLocalCorefile()), 0o644); err != nil {
			return err
		}
		if err := c.startComponent(nodeLocalDNSComponent, c.Binary("coredns"), "-conf", conf); err != nil {
			return err
		}
	}
	return waitFor(ctx, 30*time.Second, "node-local DNS answering on "+NodeLocalDNSIP, func() error {
		if err := c.componentAlive(nodeLocalDNSComponent); err != nil {
			return backoff.Permanent(c.withLog(nodeLocalDNSComponent, err))
		}
		_, err := NodeLocalDNSLookup(ctx, "kubernetes.default.svc."+ClusterDomain+".")
		return err
	})
}

// StopNodeLocalDNS stops the cache process only (by its pid file): the interface and its
// address stay, as when a node-local-dns Pod crashes, so the Pods' queries find nothing there.
func StopNodeLocalDNS(c *Config) error {
	c.fill()
	pid, marker, err := readPidFile(c.pidPath(nodeLocalDNSComponent))
	if err != nil {
		if os.IsNotExist(err) {
			return nil
		}
		return err
	}
	if alive(pid, marker) {
		killPids([]int{pid}, 5*time.Second)
	}
	if exists(pid) {
		return fmt.Errorf("node-local DNS (pid %d) still running", pid)
	}
	return nil
}

// RemoveNodeLocalDNS stops the cache and deletes its interface, policy rule and route table by
// name. Down does it; safe when nothing is there.
func RemoveNodeLocalDNS(c *Config) error {
	c.fill()
	errs := []error{StopNodeLocalDNS(c)}
	_ = os.Remove(c.pidPath(nodeLocalDNSComponent))
	if _, err := os.Stat("/run/netns/" + NodeNetns); err != nil {
		return errors.Join(errs...) // the namespace, and everything in it, is gone
	}
	if ip("-n", NodeNetns, "link", "show", NodeLocalDNSLink) == nil {
		errs = append(errs, ip("-n", NodeNetns, "link", "del", NodeLocalDNSLink))
	}
	for ip("-n", NodeNetns, "rule", "del", "pref", nodeLocalRulePref) == nil {
	}
	_ = ip("-n", NodeNetns, "route", "flush", "table", nodeLocalRouteTable)
	return errors.Join(errs...)
}

// nodeLocalNetwork adds the dummy interface with the link-local address and the policy route
// for the node's own queries to the DNS Service IP, each unless already there.
func nodeLocalNetwork() error {
	if ip("-n", NodeNetns, "link", "show", NodeLocalDNSLink) != nil {
		// Upstream uses a dummy interface. Kernels without the dummy driver (this project's
		// machines) get a bridge without ports instead: it holds a local address the same way.
		if err := ip("-n", NodeNetns, "link", "add", NodeLocalDNSLink, "type", "dummy"); err != nil {
			if err2 := ip("-n", NodeNetns, "link", "add", NodeLocalDNSLink, "type", "bridge"); err2 != nil {
				return errors.Join(err, err2)
			}
		}
	}
	out, err := run("ip", "-n", NodeNetns, "-o", "addr", "show", "dev", NodeLocalDNSLink)
	if err != nil {
		return err
	}
	if !strings.Contains(out, " "+NodeLocalDNSIP+"/32") {
		if err := ip("-n", NodeNetns, "addr", "add", NodeLocalDNSIP+"/32", "dev", NodeLocalDNSLink); err != nil {
			return err
		}
	}
	if err := ip("-n", NodeNetns, "link", "set", NodeLocalDNSLink, "up"); err != nil {
		return err
	}
	if err := ip("-n", NodeNetns, "route", "replace", DNSServiceIP+"/32", "dev", Bridge, "src", NodeIP, "table", nodeLocalRouteTable); err != nil {
		return err
	}
	rules, err := run("ip", "-n", NodeNetns, "rule", "show", "pref", nodeLocalRulePref)
	if err != nil {
		return err
	}
	if strings.TrimSpace(rules) == "" {
		return ip("-n", NodeNetns, "rule", "add", "pref", nodeLocalRulePref, "iif", "lo", "to", DNSServiceIP+"/32", "lookup", nodeLocalRouteTable)
	}
	return nil
}

// NodeLocalDNSLookup asks the node-local cache for name's A records from the node namespace
// (over UDP, as a Pod's resolver does first).
func NodeLocalDNSLookup(ctx context.Context, name string) ([]string, error) {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	r := &net.Resolver{PreferGo: true, Dial: func(ctx context.Context, network, _ string) (net.Conn, error) {
		return dialInNetns(ctx, NodeNetns, network, net.JoinHostPort(NodeLocalDNSIP, strconv.Itoa(53)))
	}}
	return r.LookupHost(ctx, name)
}

// ExporterUseNodeLocalDNS points the exporter Pod's resolv.conf at the node-local cache (on:
// starting it first if needed) or back at the cluster DNS Service (off), and restarts its
// container when the file changes (a process reads resolv.conf when it starts).
func ExporterUseNodeLocalDNS(ctx context.Context, c *Config, on bool) error {
	if !on {
		return exporterResolvConf(ctx, c, ResolvConf(ExporterNamespace))
	}
	if err := StartNodeLocalDNS(ctx, c); err != nil {
		return err
	}
	return exporterResolvConf(ctx, c, nodeLocalResolvConf(ExporterNamespace))
}

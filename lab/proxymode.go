package lab

// kube-proxy's two Linux modes in the lab. The lab starts kube-proxy in iptables mode (or the mode
// $SVCPROBE_LAB_PROXY_MODE names) and can switch a running lab to the other one: stop the node's
// kube-proxies, remove their rules with `kube-proxy --cleanup` (which removes the iptables and the
// nftables rules of every mode), record the new mode in the state directory and start them again.
// The faults that write or delete proxy rules read that record: in nftables mode they touch the
// `ip kube-proxy` table (or a table of the lab's own that runs before it), never iptables chains.

import (
	"context"
	"fmt"
	"os"
	"strings"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// The proxy modes of the lab's kube-proxy.
const (
	ProxyModeIPTables = "iptables"
	ProxyModeNFTables = "nftables"
)

// ProxyModeEnv names the mode Up starts kube-proxy in (default iptables).
const ProxyModeEnv = "SVCPROBE_LAB_PROXY_MODE"

// KubeProxyTable is the nftables table kube-proxy's nftables mode keeps (IPv4).
const KubeProxyTable = "kube-proxy"

func validProxyMode(m string) error {
	switch m {
	case ProxyModeIPTables, ProxyModeNFTables:
		return nil
	}
	return fmt.Errorf("unknown kube-proxy mode %q (one of %s, %s)", m, ProxyModeIPTables, ProxyModeNFTables)
}

func (c *Config) proxyModePath() string { return c.path("proxy-mode") }

// ProxyMode is the mode the lab's kube-proxies run in: the one recorded when they were started,
// iptables when nothing was.
func (c *Config) ProxyMode() string {
	b, err := os.ReadFile(c.proxyModePath())
	if err != nil {
		return ProxyModeIPTables
	}
	if m := strings.TrimSpace(string(b)); validProxyMode(m) == nil {
		return m
	}
	return ProxyModeIPTables
}

// initialProxyMode is the mode Up starts with: $SVCPROBE_LAB_PROXY_MODE, else iptables.
func initialProxyMode() (string, error) {
	m := os.Getenv(ProxyModeEnv)
	if m == "" {
		return ProxyModeIPTables, nil
	}
	return m, validProxyMode(m)
}

func (c *Config) recordProxyMode(mode string) error {
	if err := validProxyMode(mode); err != nil {
		return err
	}
	if err := os.MkdirAll(c.path(), 0o755); err != nil {
		return err
	}
	return os.WriteFile(c.proxyModePath(), []byte(mode+"\n"), 0o644)
}

// SetProxyMode switches the running lab's kube-proxies (node-1's, and node-2's when it is up) to
// mode and waits until node-1's has programmed the hostnames VIP again (seen from the client
// namespace). The same mode again restarts nothing.
func (c *Config) SetProxyMode(ctx context.Context, mode string) error {
	c.fill()
	if err := validProxyMode(mode); err != nil {
		return err
	}
	if c.ProxyMode() == mode && c.componentAlive(node1.Proxy) == nil {
		return nil
	}
	var nodes []labNode
	for _, n := range []labNode{node1, node2} {
		if _, err := os.Stat("/run/netns/" + n.Netns); err != nil {
			continue
		}
		nodes = append(nodes, n)
	}
	for _, n := range nodes {
		if pid, marker, err := readPidFile(c.pidPath(n.Proxy)); err == nil && alive(pid, marker) {
			killPids([]int{pid}, 5*time.Second)
		}
		// --cleanup removes kube-proxy's iptables, ipvs and nftables rules, whichever mode wrote them.
		if _, err := run("ip", "netns", "exec", n.Netns, c.Binary("kube-proxy"), "--cleanup"); err != nil {
			return err
		}
	}
	if err := c.recordProxyMode(mode); err != nil {
		return err
	}
	for _, n := range nodes {
		if err := c.startKubeProxyOn(n); err != nil {
			return err
		}
	}
	c.Log("kube-proxy now in %s mode", mode)
	return c.waitHostnamesVIP(ctx)
}

// waitHostnamesVIP waits until a TCP connection from the client namespace to hostnames' ClusterIP
// is accepted: kube-proxy has synced its rules.
func (c *Config) waitHostnamesVIP(ctx context.Context) error {
	cl, err := c.Client()
	if err != nil {
		return err
	}
	return waitFor(ctx, 60*time.Second, "kube-proxy ("+c.ProxyMode()+") serving hostnames' ClusterIP", func() error {
		s, err := cl.CoreV1().Services("default").Get(ctx, "hostnames", metav1.GetOptions{})
		if err != nil {
			return err
		}
		return DialPod(ctx, ClientNetns, s.Spec.ClusterIP+":80", time.Second)
	})
}

// nodeNft runs nft in the node's namespace with script on its standard input.
func nodeNft(script string) (string, error) {
	return runStdin(script, "ip", "netns", "exec", NodeNetns, "nft", "-f", "-")
}

// nftFaultTable is a table of the lab's own in the node's namespace that a fault in nftables mode
// writes its rules to: its chains hook in before kube-proxy's (dstnat - 10 for nat, raw for
// notrack), so the fault decides first; deleting the table by name undoes it.
func nftFaultTable(name string) string { return "svcprobe-lab-" + name }

// ensureNftFaultTable makes table ip svcprobe-lab-NAME hold exactly the given chains (nft syntax
// of the chains' bodies, by chain name).
func ensureNftFaultTable(name string, chains map[string]string) error {
	return ensureNftFaultTableOf("ip", name, chains)
}

// ensureNftFaultTableOf is ensureNftFaultTable in an nftables family (ip, ip6).
func ensureNftFaultTableOf(family, name string, chains map[string]string) error {
	t := nftFaultTable(name)
	var b strings.Builder
	// "add" then "delete" makes the delete safe when the table is not there.
	fmt.Fprintf(&b, "add table %[1]s %[2]s\ndelete table %[1]s %[2]s\ntable %[1]s %[2]s {\n", family, t)
	for chain, body := range chains {
		fmt.Fprintf(&b, "\tchain %s {\n%s\n\t}\n", chain, body)
	}
	b.WriteString("}\n")
	_, err := nodeNft(b.String())
	return err
}

// removeNftFaultTable deletes table ip svcprobe-lab-NAME from the node's namespace (nothing when it
// or the lab is not there).
func removeNftFaultTable(name string) error { return removeNftFaultTableOf("ip", name) }

// removeNftFaultTableOf is removeNftFaultTable in an nftables family (ip, ip6).
func removeNftFaultTableOf(family, name string) error {
	if _, err := os.Stat("/run/netns/" + NodeNetns); err != nil {
		return nil
	}
	if _, err := lookPath("nft"); err != nil {
		return nil
	}
	t := nftFaultTable(name)
	_, err := nodeNft(fmt.Sprintf("add table %[1]s %[2]s\ndelete table %[1]s %[2]s\n", family, t))
	return err
}

// flushServiceDispatch empties the Service dispatch of the kube-proxy in netns, in the lab's mode:
// nftables mode's chain "services" of table ip kube-proxy (ClusterIP, external and load-balancer
// traffic to the Services' chains), iptables mode's nat chain KUBE-SERVICES. With it empty no VIP
// is translated on that node.
func (c *Config) flushServiceDispatch(netns string) error {
	if c.ProxyMode() == ProxyModeNFTables {
		_, err := run("ip", "netns", "exec", netns, "nft", "flush", "chain", "ip", KubeProxyTable, "services")
		return err
	}
	_, err := run("ip", "netns", "exec", netns, "iptables", "-w", "-t", "nat", "-F", "KUBE-SERVICES")
	return err
}

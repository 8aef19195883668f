package lab

import (
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// listNetns returns the names of the lab's network namespaces.
func listNetns() ([]string, error) {
	ents, err := os.ReadDir("/run/netns")
	if err != nil {
		if os.IsNotExist(err) {
			return nil, nil
		}
		return nil, err
	}
	var out []string
	for _, e := range ents {
		if hasPrefix(e.Name()) {
			out = append(out, e.Name())
		}
	}
	return out, nil
}

// netnsPids lists the processes inside a network namespace.
func netnsPids(netns string) []int {
	out, err := run("ip", "netns", "pids", netns)
	if err != nil {
		return nil
	}
	var pids []int
	for _, f := range strings.Fields(out) {
		if p, err := strconv.Atoi(f); err == nil && p != os.Getpid() {
			pids = append(pids, p)
		}
	}
	return pids
}

// deleteNetns kills whatever runs in netns, deletes it and its /etc/netns
// folder. Interfaces inside (veth ends, the bridge) and its iptables state go
// with it.
func deleteNetns(netns string) error {
	if !hasPrefix(netns) {
		return fmt.Errorf("refusing to delete netns %q without prefix %q", netns, Prefix)
	}
	killPids(netnsPids(netns), 3e9)
	var err error
	if _, statErr := os.Stat(filepath.Join("/run/netns", netns)); statErr == nil {
		err = ip("netns", "del", netns)
	}
	_ = os.RemoveAll(filepath.Join("/etc/netns", netns))
	return err
}

// dialInNetns dials addr from inside a network namespace: the socket is made
// on a thread that entered the namespace; that thread is thrown away after.
func dialInNetns(ctx context.Context, netns, network, addr string) (net.Conn, error) {
	type result struct {
		c   net.Conn
		err error
	}
	ch := make(chan result, 1)
	go func() {
		runtime.LockOSThread()
		// No UnlockOSThread: the thread changed namespace, so Go ends it
		// when this goroutine returns.
		f, err := os.Open(filepath.Join("/run/netns", netns))
		if err != nil {
			ch <- result{nil, err}
			return
		}
		defer f.Close()
		if err := unix.Setns(int(f.Fd()), unix.CLONE_NEWNET); err != nil {
			ch <- result{nil, fmt.Errorf("setns %s: %w", netns, err)}
			return
		}
		var d net.Dialer
		c, err := d.DialContext(ctx, network, addr)
		ch <- result{c, err}
	}()
	r := <-ch
	return r.c, r.err
}

// NetnsDialer returns a DialContext func that dials inside netns.
func NetnsDialer(netns string) func(ctx context.Context, network, addr string) (net.Conn, error) {
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		return dialInNetns(ctx, netns, network, addr)
	}
}

// podNetwork wires a namespace to cbr0 of the first node: a veth whose node
// end (vethName) is a hairpin port of the bridge, the pod end eth0 with addr/24 and its IPv6
// twin (IPv6Of) /64, default routes of both families via the node.
func podNetwork(netns, vethName, addr string) error {
	return podNetworkOn(node1, netns, vethName, addr)
}

// podNetworkOn is podNetwork on the bridge of the given lab node.
// podMAC is the Pod's MAC address, derived from its IPv4 address as the CNI bridge plugin and
// kubenet did (0a:58 and the address's four bytes): a Pod given the address of a Pod deleted a
// moment ago answers to the MAC every neighbour still has cached for it. With random MACs, the
// exporter's cached entry for a reused address pointed at the dead Pod for up to a reachable
// time, and its connections to the new, ready Pod timed out (a TestNoFalseAlarmRollingUpdate
// flake: pod/timeout near the end of a rollout, found in CI).
func podMAC(addr string) (string, error) {
	b := net.ParseIP(addr).To4()
	if b == nil {
		return "", fmt.Errorf("pod address %q is not IPv4", addr)
	}
	return fmt.Sprintf("0a:58:%02x:%02x:%02x:%02x", b[0], b[1], b[2], b[3]), nil
}

func podNetworkOn(n labNode, netns, vethName, addr string) error {
	mac, err := podMAC(addr)
	if err != nil {
		return err
	}
	if err := ip("netns", "add", netns); err != nil {
		return err
	}
	steps := [][]string{
		{"-n", netns, "link", "set", "lo", "up"},
		{"-n", n.Netns, "link", "add", vethName, "type", "veth", "peer", "name", "eth0", "address", mac, "netns", netns},
		{"-n", n.Netns, "link", "set", vethName, "master", Bridge},
		{"-n", n.Netns, "link", "set", vethName, "type", "bridge_slave", "hairpin", "on"},
		{"-n", n.Netns, "link", "set", vethName, "up"},
		{"-n", netns, "addr", "add", addr + "/24", "dev", "eth0"},
		// The IPv6 twin, without duplicate address detection (the lab hands out unique
		// addresses; DAD would leave it tentative, unusable, for a second or two).
		{"-n", netns, "addr", "add", IPv6Of(addr) + "/64", "dev", "eth0", "nodad"},
		{"-n", netns, "link", "set", "eth0", "up"},
		{"-n", netns, "route", "add", "default", "via", n.IP},
		{"-n", netns, "-6", "route", "add", "default", "via", IPv6Of(n.IP)},
	}
	for _, s := range steps {
		if err := ip(s...); err != nil {
			return err
		}
	}
	return nil
}

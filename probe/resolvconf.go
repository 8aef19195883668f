package probe

import (
	"errors"
	"fmt"
	"io"
	"net/netip"
	"strconv"
	"strings"

	"github.com/miekg/dns"
)

// maxNameservers is how many nameserver lines glibc honours (MAXNS); the rest are ignored by every
// Pod, so probing them would test something no client uses.
const maxNameservers = 3

// ResolvConf is the part of a resolv.conf that decides which names a Pod's stub resolver asks and
// whom it asks. The prober runs in a Pod, so its own resolv.conf is what kubelet gives every Pod
// with dnsPolicy ClusterFirst.
type ResolvConf struct {
	Servers []netip.AddrPort // nameservers in file order, at most three
	Search  []string         // search domains, without trailing dot
	Ndots   int              // names with at least this many dots are tried as absolute first
}

// ParseResolvConf reads a resolv.conf. Nameservers that are not IP addresses are skipped, as
// glibc does; a file without any usable nameserver is an error because nothing could be probed.
func ParseResolvConf(r io.Reader) (ResolvConf, error) {
	// ClientConfigFromReader drops read errors that end its scan, so remember them here.
	er := &resolvConfReader{r: r}
	cc, err := dns.ClientConfigFromReader(er)
	if err == nil {
		err = er.err
	}
	if err != nil {
		return ResolvConf{}, fmt.Errorf("reading resolv.conf: %w", err)
	}
	port := uint16(53)
	if cc.Port != "" {
		p, err := strconv.ParseUint(cc.Port, 10, 16)
		if err != nil || p == 0 {
			return ResolvConf{}, fmt.Errorf("resolv.conf: bad nameserver port %q", cc.Port)
		}
		port = uint16(p)
	}

	var conf ResolvConf
	var ignored []string
	for _, s := range cc.Servers {
		addr, err := netip.ParseAddr(s)
		if err != nil {
			ignored = append(ignored, s)
			continue
		}
		if len(conf.Servers) < maxNameservers {
			conf.Servers = append(conf.Servers, netip.AddrPortFrom(addr.Unmap(), port))
		}
	}
	if len(conf.Servers) == 0 {
		if len(ignored) > 0 {
			return ResolvConf{}, fmt.Errorf("resolv.conf: no usable nameserver (not IP addresses: %s)", strings.Join(ignored, ", "))
		}
		return ResolvConf{}, errors.New("resolv.conf: no nameserver line")
	}
	for _, s := range cc.Search {
		s = strings.TrimSuffix(s, ".")
		if s != "" {
			conf.Search = append(conf.Search, s)
		}
	}
	conf.Ndots = cc.Ndots
	return conf, nil
}

// Candidates lists the fully qualified names a glibc stub resolver asks, in order, when a program
// looks up name: a name ending in a dot is absolute and asked alone; a name with at least ndots
// dots is asked as is first, then with each search domain; a shorter one goes through the search
// list first and is asked as is last. Kubernetes sets ndots to 5 so that "svc.ns" style names hit
// the cluster search domains before the outside world.
func (c ResolvConf) Candidates(name string) []string {
	if name == "" || name == "." {
		return nil
	}
	if strings.HasSuffix(name, ".") {
		return []string{name}
	}
	out := make([]string, 0, len(c.Search)+1)
	absolute := strings.Count(name, ".") >= c.Ndots
	if absolute {
		out = append(out, name+".")
	}
	for _, s := range c.Search {
		out = append(out, name+"."+s+".")
	}
	if !absolute {
		out = append(out, name+".")
	}
	return out
}

// resolvConfReader passes reads through and keeps the first error other than io.EOF.
type resolvConfReader struct {
	r   io.Reader
	err error
}

func (e *resolvConfReader) Read(p []byte) (int, error) {
	n, err := e.r.Read(p)
	if err != nil && err != io.EOF && e.err == nil {
		e.err = err
	}
	return n, err
}

package main

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"sync/atomic"
	"time"

	"github.com/miekg/dns"
)

// The serve child: every server the exporter talks to, in a process of its own so that their CPU
// is never counted as the exporter's. It counts, per 1 s window since it started, the TCP
// connections accepted on both listeners and the DNS queries received: the budgets are checked
// where they matter, at the servers.

const maxWindows = 2 * 3600 // seconds of per-window counts kept (the run is bounded well below)

type windows struct {
	start time.Time
	n     [maxWindows]atomic.Int64
}

func (w *windows) inc() {
	if i := int(time.Since(w.start) / time.Second); i >= 0 && i < maxWindows {
		w.n[i].Add(1)
	}
}

func (w *windows) snapshot() []int64 {
	k := min(int(time.Since(w.start)/time.Second)+1, maxWindows)
	out := make([]int64, k)
	for i := range out {
		out[i] = w.n[i].Load()
	}
	return out
}

// ServeInfo is what the serve child prints once it is ready.
type ServeInfo struct {
	Ports   Ports  `json:"ports"`
	Control string `json:"control"` // host:port of the stats endpoint
}

// ServeStats is the stats endpoint's answer.
type ServeStats struct {
	Start     time.Time `json:"start"`
	Conns     []int64   `json:"conns"` // accepted TCP connections per 1 s window since Start
	DNS       []int64   `json:"dns"`   // DNS queries per 1 s window since Start
	OpenConns int64     `json:"open_conns"`
}

type servers struct {
	conns, dns windows
	open       atomic.Int64
}

func runServe(args []string) error {
	n, maxDur := 0, 30*time.Minute
	for _, a := range args {
		if v, ok := strings.CutPrefix(a, "-n="); ok {
			fmt.Sscan(v, &n)
		}
		if v, ok := strings.CutPrefix(a, "-max="); ok {
			if d, err := time.ParseDuration(v); err == nil {
				maxDur = d
			}
		}
	}
	if n <= 0 {
		return errors.New("serve: -n=<services> required")
	}
	s := &servers{}
	s.conns.start = time.Now()
	s.dns.start = s.conns.start

	var ports Ports
	for _, p := range []*int{&ports.Pod, &ports.Service} {
		l, err := net.Listen("tcp4", "0.0.0.0:0")
		if err != nil {
			return err
		}
		*p = l.Addr().(*net.TCPAddr).Port
		go s.accept(l)
	}
	zone := buildZone(n, ports)
	for _, addr := range []string{dnsVIP + ":53", dnsPodIP + ":53"} {
		for _, network := range []string{"udp", "tcp"} {
			srv := &dns.Server{Addr: addr, Net: network, Handler: dns.HandlerFunc(func(w dns.ResponseWriter, q *dns.Msg) {
				s.dns.inc()
				_ = w.WriteMsg(zone.answer(q))
			})}
			started := make(chan error, 1)
			srv.NotifyStartedFunc = func() { started <- nil }
			go func() { started <- srv.ListenAndServe() }()
			if err := <-started; err != nil {
				return fmt.Errorf("DNS server on %s/%s: %w", addr, network, err)
			}
		}
	}
	ctl, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		return err
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/stats", func(w http.ResponseWriter, _ *http.Request) {
		_ = json.NewEncoder(w).Encode(ServeStats{Start: s.conns.start, Conns: s.conns.snapshot(), DNS: s.dns.snapshot(), OpenConns: s.open.Load()})
	})
	go http.Serve(ctl, mux)
	info, _ := json.Marshal(ServeInfo{Ports: ports, Control: ctl.Addr().String()})
	fmt.Printf("READY %s\n", info)
	// Live as long as the parent: it holds our stdin. Bounded anyway.
	done := make(chan struct{})
	go func() { _, _ = io.Copy(io.Discard, bufio.NewReader(os.Stdin)); close(done) }()
	select {
	case <-done:
	case <-time.After(maxDur):
	}
	return nil
}

// accept counts connections and closes each only after the client did: the server is the passive
// closer, so a client that closed with a FIN (instead of an RST) would be left in TIME_WAIT, and
// the ephemeral port count shows it.
func (s *servers) accept(l net.Listener) {
	for {
		c, err := l.Accept()
		if err != nil {
			if ne, ok := err.(net.Error); ok && ne.Timeout() {
				continue
			}
			if errors.Is(err, net.ErrClosed) {
				return
			}
			time.Sleep(10 * time.Millisecond) // EMFILE and the like: back off, keep serving
			continue
		}
		s.conns.inc()
		s.open.Add(1)
		go func() {
			defer s.open.Add(-1)
			_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
			var b [64]byte
			for {
				if _, err := c.Read(b[:]); err != nil {
					break
				}
			}
			_ = c.Close()
		}()
	}
}

// zone answers the records cluster DNS would publish for the object set: A for each Service's
// FQDN, SRV for its named port, kubernetes.default, and NXDOMAIN for every other name.
type zone map[string]map[uint16][]dns.RR

func buildZone(n int, p Ports) zone {
	z := zone{}
	add := func(rr dns.RR) {
		name := strings.ToLower(rr.Header().Name)
		if z[name] == nil {
			z[name] = map[uint16][]dns.RR{}
		}
		z[name][rr.Header().Rrtype] = append(z[name][rr.Header().Rrtype], rr)
	}
	addSvc := func(ns, name, ip string, ports []struct {
		name, proto string
		port        int
	}) {
		fqdn := fmt.Sprintf("%s.%s.svc.%s.", name, ns, clusterDomain)
		add(&dns.A{Hdr: dns.RR_Header{Name: fqdn, Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: 30}, A: net.ParseIP(ip).To4()})
		for _, pt := range ports {
			add(&dns.SRV{Hdr: dns.RR_Header{Name: fmt.Sprintf("_%s._%s.%s", pt.name, pt.proto, fqdn), Rrtype: dns.TypeSRV, Class: dns.ClassINET, Ttl: 30},
				Priority: 0, Weight: 100, Port: uint16(pt.port), Target: fqdn})
		}
	}
	type port = struct {
		name, proto string
		port        int
	}
	for i := range n {
		svc := benchService(i, p)
		var ports []port
		for _, sp := range svc.Spec.Ports {
			ports = append(ports, port{sp.Name, strings.ToLower(string(sp.Protocol)), int(sp.Port)})
		}
		addSvc(svc.Namespace, svc.Name, svc.Spec.ClusterIP, ports)
	}
	dsvc, _ := dnsObjects()
	addSvc(dsvc.Namespace, dsvc.Name, dsvc.Spec.ClusterIP, []port{{"dns", "udp", 53}})
	addSvc("default", "kubernetes", kubernetesVIP, []port{{"https", "tcp", 443}})
	for _, s := range shapeZone() { // the shapes' own Services (shapes.go)
		addSvc(s.ns, s.name, s.ip, []port{{"http", "tcp", p.Service}})
	}
	return z
}

func (z zone) answer(q *dns.Msg) *dns.Msg {
	m := new(dns.Msg)
	m.SetReply(q)
	m.Authoritative = true
	if len(q.Question) != 1 {
		m.Rcode = dns.RcodeFormatError
		return m
	}
	qq := q.Question[0]
	recs, ok := z[strings.ToLower(qq.Name)]
	if !ok {
		m.Rcode = dns.RcodeNameError
		return m
	}
	for _, rr := range recs[qq.Qtype] {
		rr = dns.Copy(rr)
		rr.Header().Name = qq.Name
		m.Answer = append(m.Answer, rr)
	}
	if o := q.IsEdns0(); o != nil {
		m.SetEdns0(o.UDPSize(), false)
	}
	return m
}

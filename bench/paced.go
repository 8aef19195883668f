package main

import (
	"context"
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/miekg/dns"
	"golang.org/x/time/rate"
)

// PacedBaseline is a bare loop doing the socket work of the exporter's window at the same pace
// (Services started evenly at the rate the servers saw, each one's connects and DNS questions
// done in a row by one of as many workers as the scheduler has), after the exporter stopped, in
// the same process.
type PacedBaseline struct {
	Seconds          float64
	TCPRate, DNSRate float64 // asked for (what the servers saw during the window)
	TCPDone, DNSDone int64
	Cores            float64
}

func pacedBaseline(n, eps, spread, vipConns int, p Ports, tcpRate, dnsRate float64, conc int, d time.Duration) PacedBaseline {
	res := PacedBaseline{Seconds: d.Seconds(), TCPRate: tcpRate, DNSRate: dnsRate}
	var addrs []string
	for i := range n {
		for j := range eps {
			addrs = append(addrs, fmt.Sprintf("%s:%d", endpointIP(i, j, eps), p.Pod))
		}
		addrs = append(addrs, fmt.Sprintf("%s:%d", clusterIP(i), p.Service))
	}
	rc := mustResolvConf()
	type q struct {
		name  string
		qtype uint16
	}
	var qs []q
	for i := range n {
		fqdn := fmt.Sprintf("%s.%s.svc.%s.", serviceName(i), serviceNamespace(i), clusterDomain)
		qs = append(qs, q{fqdn, dns.TypeA})
		for _, c := range rc.Candidates(serviceName(i) + "." + serviceNamespace(i)) {
			if c == fqdn {
				break // the stage asks the FQDN once a round (probe.dnsMemo)
			}
			qs = append(qs, q{c, dns.TypeA})
		}
		qs = append(qs, q{"_http._tcp." + fqdn, dns.TypeSRV})
	}
	server := rc.Servers[0].String()
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	// The same shape of work as the scheduler's: Services start at an even pace, each one's
	// connects (its share of the eps Pods, all of them without spreading, + vipConns to the
	// ClusterIP) and DNS questions done by one of the workers.
	share := (eps + spread - 1) / spread
	perSvcTCP := share + max(1, vipConns)
	perSvcDNS := max(1, len(qs)/max(n, 1))
	svcRate := max(tcpRate/float64(perSvcTCP), 1)
	lim := rate.NewLimiter(rate.Limit(svcRate), 1)
	var ti, di atomic.Int64
	var next atomic.Int64
	var wg sync.WaitGroup
	c0, t0 := cpuTime(), time.Now()
	nd := net.Dialer{Timeout: 2 * time.Second}
	for range max(1, conc/2) {
		wg.Go(func() {
			for lim.Wait(ctx) == nil {
				v := int(next.Add(1) - 1)
				i := v % n
				for k := range perSvcTCP {
					a := addrs[i*(eps+1)+eps] // the ClusterIP
					if k < share {
						a = addrs[i*(eps+1)+(v/n*share+k)%eps] // this visit's share of the Pods, rotating
					}
					c, err := nd.Dial("tcp", a)
					if err == nil {
						_ = c.(*net.TCPConn).SetLinger(0)
						_ = c.Close()
					}
					ti.Add(1)
				}
				for k := range perSvcDNS {
					x := qs[i*perSvcDNS+k]
					m := new(dns.Msg)
					m.SetQuestion(x.name, x.qtype)
					m.SetEdns0(1232, false)
					c := dns.Client{Net: "udp", Timeout: 2 * time.Second}
					_, _, _ = c.Exchange(m, server)
					di.Add(1)
				}
			}
		})
	}
	wg.Wait()
	cpu, wall := cpuTime()-c0, time.Since(t0)
	res.TCPDone, res.DNSDone = ti.Load(), di.Load()
	res.Cores = cpu.Seconds() / wall.Seconds()
	res.Seconds = wall.Seconds()
	return res
}

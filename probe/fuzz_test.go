package probe

import (
	"bytes"
	"slices"
	"testing"

	"github.com/miekg/dns"
)

// Turning whatever a DNS server sends into a result must never panic, and must stay inside the
// closed set of reasons (they become label values).
func FuzzDNSAnswer(f *testing.F) {
	m := new(dns.Msg)
	m.SetQuestion("hostnames.default.svc.cluster.local.", dns.TypeA)
	m.Answer = append(m.Answer, &dns.A{Hdr: dns.RR_Header{Name: "hostnames.default.svc.cluster.local.", Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: 5}, A: []byte{198, 19, 0, 20}})
	wire, _ := m.Pack()
	f.Add(wire, uint16(dns.TypeA))
	f.Add([]byte{0, 1, 0x81, 0x83, 0, 1, 0, 0, 0, 0, 0, 0}, uint16(dns.TypeSRV))
	f.Fuzz(func(t *testing.T, wire []byte, qtype uint16) {
		var msg dns.Msg
		if err := msg.Unpack(wire); err != nil {
			return
		}
		_ = dnsRecords(&msg, "hostnames.default.svc.cluster.local.", qtype)
		if r := rcodeReason(msg.Rcode); !slices.Contains(Reasons, r) {
			t.Fatalf("rcode %d gives %q, outside the closed set", msg.Rcode, r)
		}
	})
}

func FuzzParseResolvConf(f *testing.F) {
	f.Add([]byte("nameserver 198.19.0.10\nsearch default.svc.cluster.local svc.cluster.local cluster.local\noptions ndots:5\n"))
	f.Add([]byte("nameserver ::1\noptions ndots:-3 timeout:x\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		rc, err := ParseResolvConf(bytes.NewReader(b))
		if err != nil {
			return
		}
		if len(rc.Servers) == 0 {
			t.Fatal("accepted a resolv.conf without a usable nameserver")
		}
		for _, n := range rc.Candidates("hostnames.default") {
			if n == "" || n[len(n)-1] != '.' {
				t.Fatalf("candidate %q is not fully qualified", n)
			}
		}
	})
}

package probe

import (
	"net/netip"
	"testing"
)

func TestOnlyFamily(t *testing.T) {
	ok4 := Check{Addr: "198.18.0.5", Reason: ReasonSuccess}
	ok6 := Check{Addr: "fd00::5", Reason: ReasonSuccess}
	bad4 := Check{Addr: "198.18.0.6", Reason: ReasonTimeout}
	bad6 := Check{Addr: "fd00::6", Reason: ReasonRefused}
	aaaaBad := Check{Subject: "AAAA web.default.svc.cluster.local", Reason: ReasonNoAnswer}
	aOK := Check{Subject: "A web.default.svc.cluster.local", Reason: ReasonSuccess}
	srvBad := Check{Subject: "SRV _http._tcp.web.default.svc.cluster.local", Reason: ReasonNXDomain}
	denied6 := Check{Addr: "fd00::7", Reason: ReasonDeniedByNetworkPolicy}
	for _, c := range []struct {
		name   string
		checks []Check
		want   Family
	}{
		{"IPv6 fails, IPv4 answers", []Check{ok4, bad6}, FamilyIPv6},
		{"IPv4 fails, IPv6 answers", []Check{bad4, ok6, ok4}, FamilyIPv4},
		{"both fail", []Check{bad4, bad6, ok4}, ""},
		{"one family only", []Check{bad4, ok4}, ""},
		{"IPv6-only Service fails", []Check{bad6, denied6}, FamilyIPv6},
		{"IPv6-only Service fails on one Pod", []Check{ok6, bad6}, FamilyIPv6},
		{"IPv4-only Service fails", []Check{bad4}, ""},
		{"IPv6-only Service with a failure of no family", []Check{bad6, srvBad}, ""},
		{"AAAA fails, A answers", []Check{aOK, aaaaBad}, FamilyIPv6},
		{"a failure of no family", []Check{aOK, aaaaBad, srvBad}, ""},
		{"IPv4-mapped counts as IPv4", []Check{{Addr: "::ffff:198.18.0.5", Reason: ReasonSuccess}, bad6}, FamilyIPv6},
		{"nothing fails", []Check{ok4, ok6}, ""},
	} {
		if got := onlyFamily(c.checks); got != c.want {
			t.Errorf("%s: %q, want %q", c.name, got, c.want)
		}
	}
	if FamilyOf(netip.MustParseAddr("::ffff:10.0.0.1")) != FamilyIPv4 || FamilyOf(netip.MustParseAddr("fd00::1")) != FamilyIPv6 {
		t.Error("FamilyOf")
	}
}
